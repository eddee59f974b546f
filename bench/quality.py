"""Recommendation quality: the two-tower model against every tuned baseline, over seeds, per data set.

For each data set (``synthetic``: the demo's generator; ``movielens``: ml-latest-small with
``conf/movielens.yaml``; ``taobao``: the UserBehavior sample), builds a home under --work
(raw logs, ingest, full refresh, training set; kept between runs) and runs
``recsys evaluate --seeds N`` (:func:`recsys_lib.pipelines.compare.run_seeds`): mean ± std over
seeds, warm and cold users, and the paired bootstrap 95% interval of the difference to each
baseline, for recall@50 and NDCG@10. Real data sets are read from ../shared/datasets (their
licences stay there); a missing one is reported as skipped.

With ``--tune TRIALS`` each data set first runs ``recsys tune`` (:func:`recsys_lib.pipelines.tune.run_tune`)
on its inner time split, and the comparison trains with the written overlay; the tuning minutes and
the chosen settings are reported with the results.

Writes bench/results/quality.json.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from _common import ROOT, base_parser, write_result

DATASETS = ROOT.parent / "shared" / "datasets"
CONF = {"synthetic": [], "movielens": [str(ROOT / "conf" / "movielens.yaml")], "taobao": []}
#: Per data set overrides: the Taobao sample has a few hundred training rows, fewer than one default batch.
OVERRIDES = {"synthetic": [], "movielens": [], "taobao": ["train.batch_size=64"]}


def build(name: str, home: Path, master: str, events: int) -> dict[str, Any] | None:
    """Raw logs, ingest, refresh and training set into ``home`` (once); None when the data set is absent."""
    from recsys_lib.core.config import load_config
    from recsys_lib.datagen.synthetic import GeneratorSpec
    from recsys_lib.pipelines.context import start
    from recsys_lib.pipelines.data import run_adapt, run_generate
    from recsys_lib.pipelines.features import run_refresh
    from recsys_lib.pipelines.ingest import run_ingest
    from recsys_lib.pipelines.training import run_training_set

    raw = home / "landing" / name
    if name == "synthetic":
        source = None
    elif name == "movielens":
        source = DATASETS / "ml-latest-small"
    else:
        source = DATASETS / "taobao-userbehavior-sample" / "UserBehavior.csv"
    if source is not None and not source.exists():
        return None
    cfg = load_config(CONF[name], [f"home={home}", f"spark.master={master}", *OVERRIDES[name]])
    if (home / "lake" / "training_examples").exists():
        return {"built_seconds": None}
    t0 = time.monotonic()
    if name == "synthetic":
        run_generate(GeneratorSpec(users=max(200, events // 70), items=max(100, events // 140), days=14,
                                   events=events, seed=7), raw)
    elif name == "movielens":
        run_adapt("movielens", raw, ratings=str(source / "ratings.csv"), movies=str(source / "movies.csv"))
    else:
        run_adapt("taobao", raw, taobao_csv=str(source))
    ctx = start(cfg)
    try:
        run_ingest(ctx.spark, ctx.lake, cfg, str(raw))
        run_refresh(ctx.spark, ctx.lake, cfg)
        run_training_set(ctx.spark, ctx.lake, cfg, list(cfg.train.label_types))
    finally:
        ctx.stop()
    return {"built_seconds": round(time.monotonic() - t0, 1)}


def tune(name: str, home: Path, master: str, trials: int) -> dict[str, Any]:
    """``recsys tune`` on the data set's inner split; the overlay lands in ``home``/tuning/train.yaml."""
    from recsys_lib.core.config import load_config
    from recsys_lib.pipelines.context import start
    from recsys_lib.pipelines.tune import run_tune

    cfg = load_config(CONF[name], [f"home={home}", f"spark.master={master}", *OVERRIDES[name]])
    ctx = start(cfg)
    try:
        return run_tune(ctx.spark, ctx.lake, cfg, trials=trials)
    finally:
        ctx.stop()


def compare(name: str, home: Path, master: str, seeds: int, extra_conf: list[str]) -> dict[str, Any]:
    from recsys_lib.core.config import load_config
    from recsys_lib.pipelines.compare import run_seeds
    from recsys_lib.pipelines.context import start

    cfg = load_config(CONF[name] + extra_conf, [f"home={home}", f"spark.master={master}", *OVERRIDES[name]])
    ctx = start(cfg)
    try:
        return run_seeds(ctx.spark, ctx.lake, cfg, seeds)
    finally:
        ctx.stop()


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "quality.json", sizes=False)
    parser.add_argument("--datasets", nargs="+", default=list(CONF), choices=list(CONF))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--events", type=int, default=200_000, help="synthetic events (the demo's default)")
    parser.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                        help="first tune the two-tower on the inner split with this many trials, then compare")
    parser.add_argument("--conf", action="append", default=[], metavar="FILE",
                        help="an overlay stacked on each data set's config for the comparison (e.g. tuned settings)")
    args = parser.parse_args()
    os.environ.setdefault("RECSYS_ID_KEY", "bench-quality-key-0123456789-0123456789")
    results: dict[str, Any] = {}
    for name in args.datasets:
        home = Path(args.work) / f"quality-{name}"
        built = build(name, home, args.master, args.events)
        if built is None:
            results[name] = {"skipped": f"{DATASETS} does not hold it"}
            continue
        t0 = time.monotonic()
        try:
            tuned, skipped = None, None
            if args.tune:
                try:
                    tuned = tune(name, home, args.master, args.tune)
                except ValueError as exc:  # too little data to tune on: the defaults are compared, and it says why
                    skipped = f"{type(exc).__name__}: {exc}"
            compared = compare(name, home, args.master, args.seeds,
                               [*args.conf, tuned["overlay"]] if tuned else list(args.conf))
        except ValueError as exc:  # e.g. too little data for the configured batch: reported, the others go on
            results[name] = built | {"failed": f"{type(exc).__name__}: {exc}"}
            continue
        results[name] = built | compared | {"compare_seconds": round(time.monotonic() - t0, 1),
                                            "overlays": list(args.conf)}
        if skipped:
            results[name]["tuning"] = {"skipped": skipped}
        if tuned:
            results[name]["tuning"] = {k: tuned[k] for k in ("best", "value", "metric", "baselines", "minutes",
                                                              "inner_cutoff", "trials")}
        print(name, {m: results[name]["models"]["two_tower"][m]["mean"] for m in ("recall@50", "ndcg@10")},
              flush=True)
    write_result(args.out, "quality", args.master, seeds=args.seeds, datasets=results)
    print("\n".join(markdown(results)))


def markdown(results: dict[str, Any]) -> list[str]:
    """One markdown table per data set: each model's means (± std over seeds), then the intervals."""
    lines = []
    for name, res in results.items():
        if "skipped" in res or "failed" in res:
            lines += [f"**{name}**: {res.get('skipped') or res.get('failed')}", ""]
            continue
        u = res["users"]
        t = res.get("tuning") if "best" in res.get("tuning", {}) else None
        lines += [f"**{name}** ({len(res['seeds'])} seeds; {u['holdout']:,} holdout users, {u['warm']:,} warm, "
                  f"{u['cold']:,} cold" + (f"; tuned in {t['minutes']:.1f} min, {len(t['trials'])} trials: "
                                           f"{t['best']}" if t else "") + ")", "",
                  "| model | recall@50 | NDCG@10 | two-tower minus it, recall@50 [95% CI] | same, NDCG@10 |",
                  "|---|---|---|---|---|"]
        for model, row in res["models"].items():
            cells = [f"{row[m]['mean']:.4f}" + (f" ± {row[m]['std']:.4f}" if "std" in row[m] else "")
                     for m in ("recall@50", "ndcg@10")]
            diff = res["difference"].get(model)
            deltas = ([f"{diff[m]['mean']:+.4f} [{diff[m]['ci95'][0]:+.4f}, {diff[m]['ci95'][1]:+.4f}]"
                       for m in ("recall@50", "ndcg@10")] if diff else ["", ""])
            lines.append(f"| {model} | " + " | ".join(cells + deltas) + " |")
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
