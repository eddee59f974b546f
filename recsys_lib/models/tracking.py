"""MLflow tracking, registry and the promotion gate.

Each training run logs its params, per-epoch metrics, input Delta versions and the
git commit, the evaluation report (JSON + PNG), and the bundle (query-tower
SavedModel, item embeddings, ANN index) as a pyfunc model registered under
``mlflow.registered_model``. The ``champion`` alias marks the serving version;
:func:`promotion_decision` decides whether a candidate may take it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from recsys_lib.core.config import RecsysConfig

CHAMPION = "champion"


def configure(cfg: RecsysConfig) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists."""
    if cfg.mlflow.tracking_uri is None:
        Path(cfg.home_dir, "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow_tracking_uri)
    if mlflow.get_experiment_by_name(cfg.mlflow.experiment) is None:
        mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=cfg.mlflow_artifact_location)
    mlflow.set_experiment(cfg.mlflow.experiment)
    return MlflowClient()


def git_commit() -> str | None:
    """The source tree's commit, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


class RecommenderModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """pyfunc face of a bundle: rows of raw user features in, top-k item ids out."""

    def load_context(self, context: Any) -> None:
        from recsys_lib.models.bundle import Bundle

        self.bundle = Bundle(Path(context.artifacts["bundle"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import pyarrow as pa

        k = int((params or {}).get("k", 10))
        queries = self.bundle.encode_queries(pa.Table.from_pandas(model_input, preserve_index=False))
        idx, scores = self.bundle.index.search(queries, k)
        ids = self.bundle.items["item_id"].to_numpy()
        return pd.DataFrame({"item_ids": [list(ids[row]) for row in idx], "scores": [list(s) for s in scores]})


#: Distributions a loaded bundle imports (pinned to the versions installed here when it is logged).
SERVING_DISTRIBUTIONS = ("tensorflow", "tf-keras", "tensorflow-recommenders", "numpy", "pandas", "pyarrow",
                         "pyspark", "deltalake", "pydantic", "pyyaml", "mlflow")


def pinned_requirements(index_kind: str) -> list[str]:
    """``name==version`` for every distribution the pyfunc model needs (ScaNN only for a ScaNN index)."""
    from importlib.metadata import PackageNotFoundError, version

    names = [*SERVING_DISTRIBUTIONS, *(["scann"] if index_kind == "scann" else [])]
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)  # not installed here: unpinned, so pip still finds one
    return out


def input_example(spec: Any) -> pd.DataFrame:
    """One made-up query row shaped like the model's input (no real person's data)."""
    row: dict[str, Any] = {"user_id": ["example-user"]}
    row |= {c: [0.0] for c in spec.query_numeric}
    row["u_recent_items"] = [list(spec.items[:2])]
    row["u_top_categories"] = [[{"category_id": c, "weight": 1.0} for c in spec.categories[:2]]]
    return pd.DataFrame(row)


def log_bundle(bundle_dir: Path, registered_model: str) -> str:
    """Log the bundle as a pyfunc model of the active run and register it; returns the new version.

    The model carries this package as ``code_paths`` (it loads without an installed ``recsys``),
    pinned requirements, a signature inferred from a made-up input example, and a ``k`` parameter.
    """
    import recsys_lib
    from recsys_lib.models.bundle import Bundle

    face = RecommenderModel()
    face.bundle = Bundle(bundle_dir)
    example = input_example(face.bundle.spec)
    signature = mlflow.models.infer_signature(example, face.predict(None, example), params={"k": 10})
    info = mlflow.pyfunc.log_model(name="recommender", python_model=RecommenderModel(),
                                   artifacts={"bundle": str(bundle_dir)}, registered_model_name=registered_model,
                                   code_paths=[str(Path(recsys_lib.__file__).parent)],
                                   pip_requirements=pinned_requirements(face.bundle.index.kind),
                                   signature=signature, input_example=example)
    return str(info.registered_model_version)


@dataclass(frozen=True)
class Version:
    """A registered model version and where its bundle is."""

    version: str
    run_id: str | None
    bundle: Path


def model_version(client: MlflowClient, name: str, *, version: str | None = None,
                  alias: str | None = None) -> Version | None:
    """A version by number, alias or (neither) the latest; None if absent. Downloads its bundle."""
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif version:
            mv = client.get_model_version(name, version)
        else:
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                return None
            mv = max(versions, key=lambda v: int(v.version))
    except MlflowException:
        return None
    target = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}"))
    return Version(version=str(mv.version), run_id=mv.run_id, bundle=target / "artifacts" / "bundle")


def promotion_decision(metric: str, candidate: float, champion: float | None, margin: float) -> tuple[bool, str]:
    """Promote only when there is no champion, or the candidate beats it by more than ``margin``."""
    if champion is None:
        return True, f"no champion yet; candidate {metric}={candidate:.4f}"
    if candidate > champion + margin:
        return True, f"candidate {metric}={candidate:.4f} beats champion {champion:.4f} by more than {margin}"
    return False, (f"candidate {metric}={candidate:.4f} does not beat champion {champion:.4f} "
                   f"by more than the margin {margin}")


def baseline_decision(metric: str, candidate: float, baselines: Mapping[str, float]) -> tuple[bool, str]:
    """Pass only a candidate that beats every baseline on ``metric``; the reason names the strongest."""
    if not baselines:
        return True, "no baselines scored"
    best = max(baselines, key=lambda n: baselines[n])
    if candidate > baselines[best]:
        return True, f"beats the strongest baseline, {best} ({baselines[best]:.4f})"
    return False, (f"candidate {metric}={candidate:.4f} does not beat the strongest baseline, "
                   f"{best} ({baselines[best]:.4f})")
