"""Install size of each role's extra: a scratch venv per extra, pinned by requirements.lock, measured on disk.

For each of ``base`` (no extra), ``core``, ``train``, ``serve``, ``airflow`` and ``dev`` it creates a venv with
uv, installs ``.[extra]`` constrained to ``requirements.lock`` (the same versions ``make install`` pins),
and records the venv's size and its three largest packages. Writes bench/results/install_sizes.json.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, base_parser, write_result

EXTRAS = ("base", "core", "train", "serve", "airflow", "dev")
#: The issue's targets, in GB.
TARGETS = {"serve": 1.2, "core": 1.5}


def size_mb(path: Path) -> float:
    """Disk usage of ``path`` in MB (``du``, so hard links and sparse files count as the filesystem does)."""
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def measure(extra: str, work: Path, uv: str) -> dict[str, Any]:
    """Install one extra into a fresh venv under ``work``; its size and largest packages."""
    venv = work / extra
    shutil.rmtree(venv, ignore_errors=True)
    t0 = time.monotonic()
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    target = "." if extra == "base" else f".[{extra}]"
    done = subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-c",
                           str(ROOT / "requirements.lock"), target], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return {"failed": done.stderr[-2000:]}
    site = next((venv / "lib").glob("python3*/site-packages"))
    biggest = sorted(((p.name, size_mb(p)) for p in site.iterdir() if p.is_dir()), key=lambda x: -x[1])[:3]
    total = size_mb(venv)
    out: dict[str, Any] = {"mb": total, "largest_mb": dict(biggest), "seconds": round(time.monotonic() - t0, 1)}
    if extra in TARGETS:
        out["target_gb"] = TARGETS[extra]
        out["met"] = total / 1024 <= TARGETS[extra]
    return out


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "install_sizes.json", sizes=False)
    parser.add_argument("--extras", nargs="+", default=list(EXTRAS), choices=EXTRAS)
    args = parser.parse_args()
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="recsys-sizes-", dir=args.work if Path(args.work).exists() else None) \
            as tmp:
        for extra in args.extras:
            results[extra] = measure(extra, Path(tmp), uv)
            print(extra, results[extra], flush=True)
            shutil.rmtree(Path(tmp) / extra, ignore_errors=True)
    write_result(args.out, "install_sizes", args.master, extras=results)


if __name__ == "__main__":
    main()
