"""The package's imports point down only: faces -> pipelines -> domain -> lake -> core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import recsys_lib

pytestmark = pytest.mark.unit

PACKAGE = Path(recsys_lib.__file__).parent
#: Rank of each top-level part of the package; a module may import only parts of its own rank or lower.
RANKS = {"core": 0, "lake": 1, "online": 1, "ingest": 2, "features": 2, "streaming": 2, "models": 2, "datagen": 2,
         "serving": 2.5, "pipelines": 3, "cli": 4, "cli_models": 4, "cli_online": 4, "cli_help": 4,
         "api": 4}


def part_of(module: str) -> str:
    """``recsys_lib.features.fold`` -> ``features``."""
    return module.split(".")[1]


def imported_parts(path: Path) -> set[str]:
    """Top-level parts of recsys_lib that a file imports anywhere (module level or inside functions)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        parts |= {part_of(n) for n in names if n.startswith("recsys_lib.")}
    return parts


def upward_imports(package: Path) -> list[str]:
    """``"file -> part"`` for each import of a higher layer."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue  # the package's own docstring-only __init__
        own = RANKS[rel.parts[0].removesuffix(".py")]
        found += [f"{rel} -> {p}" for p in sorted(imported_parts(path)) if RANKS[p] > own]
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name != "__init__.py"
             and not p.name.startswith(("_", ".")) and (p.is_dir() or p.suffix == ".py")}
    assert parts <= set(RANKS), f"give these a layer in RANKS: {sorted(parts - set(RANKS))}"


def test_no_module_imports_a_higher_layer():
    assert upward_imports(PACKAGE) == []


def test_an_upward_import_is_reported(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "bad.py").write_text("def f():\n    from recsys_lib.pipelines.ingest import run_ingest\n")
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "ok.py").write_text("import recsys_lib.core.config\n")
    assert upward_imports(tmp_path) == ["core/bad.py -> pipelines"]


def test_the_readme_picture_shows_every_layer_below_the_faces():
    readme = (PACKAGE.parent / "README.md").read_text()
    diagram = readme.split("```mermaid", 1)[1].split("```", 1)[0]
    below_faces = {p for p, rank in RANKS.items() if rank < 4}
    assert {p for p in below_faces if p not in diagram} == set(), "draw these layers in the README's diagram"
