"""Typed, validated configuration.

Config comes from, in order (later wins):

1. the defaults below, which are the embedded local default;
2. each ``--conf FILE`` (a YAML overlay; ``extends: other.yaml`` pulls in a parent
   file first, resolved relative to the overlay);
3. each ``--set dotted.key=value`` (the value is read as a YAML scalar).

``home`` is the data root. Left unset it is ``$RECSYS_HOME`` or ``./data``. Delta
tables live at ``<home>/lake/<table>`` unless ``lake.root`` says otherwise.

Every unknown key or bad value raises :class:`ConfigError` naming the dotted key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsys_lib.core.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _spark_value(value: object) -> object:
    """Spark settings are strings: ``true``/``7`` given as YAML scalars are written as Spark would."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


SparkValue = Annotated[str, BeforeValidator(_spark_value)]

#: Keys below these prefixes are free-form maps: the rest of the dotted key is one key.
_FREE_FORM_PREFIXES = ("spark.conf.", "lake.storage_options.")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SparkConfig(_Strict):
    """How to build the SparkSession."""

    #: None: spark-submit's ``--master`` when launched by spark-submit, else ``local[*]``.
    master: str | None = None
    app_name: str = "recsys"
    driver_memory: str = Field("4g", pattern=r"^\d+[kmgt]?$")
    shuffle_partitions: int | Literal["auto"] = "auto"
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    ui_enabled: bool = False
    #: JVM garbage collector; auto: parallel for batch jobs, G1 for the stream.
    gc: Literal["auto", "parallel", "g1"] = "auto"
    conf: dict[str, SparkValue] = Field(default_factory=dict)


class LakeConfig(_Strict):
    """Where the Delta tables live and how commits behave."""

    engine: Literal["auto", "delta-rs"] = "auto"
    root: str | None = None
    #: Where the published feature tables go (one row per key, any Delta reader); None: <home>/published.
    published_root: str | None = None
    commit_retries: int = Field(6, ge=0, le=100)
    retry_backoff: Duration = 0.05
    retry_backoff_max: Duration = 5.0
    storage_options: dict[str, SparkValue] = Field(default_factory=dict)
    #: How long a reader may keep reading one table version (a training job on its snapshot, a time-travel
    #: query). Vacuum keeps every file at least this long plus the stream's trigger.
    longest_reader: Duration = Field(7 * 86400.0, gt=0)
    #: A writer's lease on a table lives this long unless renewed (every third of it). A killed job's
    #: lease frees at once on its own host; elsewhere after this long.
    lease_ttl: Duration = Field(60.0, ge=1.0)
    #: How long a job waits for another job's lease on a table it writes before it exits, naming the holder.
    lease_wait: Duration = Field(600.0, ge=0)


class IngestConfig(_Strict):
    """Batch ingestion of raw JSON-lines logs."""

    landing_dir: str | None = None
    max_line_bytes: int = Field(65536, ge=256)
    max_future_skew: Duration = 3600.0
    #: Events older than ingest time minus this are quarantined as ``too_late``; null accepts any age.
    allowed_lateness: Duration | None = None


class FeaturesConfig(_Strict):
    """Feature definitions' parameters (see docs/features.md)."""

    half_lives: tuple[Duration, ...] = (3600.0, 86400.0, 604800.0)
    recent_items: int = Field(20, ge=1, le=500)
    affinity_half_life: Duration = 604800.0
    affinity_top_k: int = Field(5, ge=1, le=100)
    #: Weight of each event type in category affinity.
    affinity_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0, "search": 1.0}
    )
    #: Smoothed rates: (successes + mean * strength) / (trials + strength).
    ctr_prior_mean: float = Field(0.05, gt=0, lt=1)
    ctr_prior_strength: float = Field(20.0, gt=0)
    cvr_prior_mean: float = Field(0.1, gt=0, lt=1)
    cvr_prior_strength: float = Field(20.0, gt=0)
    #: Feature tables are partitioned by a hash bucket of the key, so merges touch few files.
    key_buckets: int = Field(16, ge=1, le=4096)
    hll_lg_k: int = Field(12, ge=4, le=21)


class DqConfig(_Strict):
    """The data-quality gate of the full refresh, and the stream's sampled checks (recsys_lib/features/quality.py).

    On by default: the rules are counted in one Spark aggregation per table; pandera (one Spark job
    per check) runs only on a table that broke a rule, to explain it.
    """

    enabled: bool = True
    #: A refreshed table whose row count moved more than this fraction from the version it replaces fails.
    max_row_change: float = Field(0.5, gt=0)
    #: ... once that version held at least this many keys (small tables swing by more as a matter of course).
    min_rows: int = Field(1000, ge=0)
    #: ``as_of`` may be this far ahead of the checking machine's clock (event clocks are not ours).
    max_clock_skew: Duration = 300.0
    #: A state column's share of nulls may be at most this (keys and ``as_of``: never null), checked
    #: once the table holds ``min_rows`` rows.
    max_null_rate: float = Field(0.9, ge=0, le=1)
    #: The stream checks the rules on the pending rows of every this-many-th batch (0: never); a failure
    #: is recorded in dq_results and logged at WARNING (the refresh is the gate).
    stream_every: int = Field(10, ge=0)
    #: Also log each refresh's outcome as an MLflow run (``dq-<job>``) in ``mlflow.experiment``.
    log_to_mlflow: bool = True


class StreamingConfig(_Strict):
    """The Structured Streaming job."""

    #: ``file`` reads the landing folder; ``kafka`` is the production source (not testable here).
    source: Literal["file", "kafka"] = "file"
    query_name: str = Field("features", pattern=r"^[A-Za-z0-9_-]+$")
    #: null: <home>/checkpoints/<query_name>
    checkpoint_dir: str | None = None
    trigger: Duration = 0.25
    max_files_per_trigger: int = Field(1000, ge=1)
    #: A micro-batch rewrites only the pending layer of each feature table (see
    #: recsys_lib/features/layers.py); past this many rows it is compacted into the base
    #: buckets. Larger: cheaper batches, costlier reads. 0: compact after every batch.
    pending_max_rows: int = Field(250_000, ge=0)
    #: A micro-batch with at most this many new events is folded and merged on the driver
    #: (recsys_lib/features/local.py: Arrow and pandas, no Spark job); larger ones by Spark. 0: always Spark.
    local_max_events: int = Field(200_000, ge=0)
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str | None = None


class TrainConfig(_Strict):
    """The two-tower model, its input pipeline and its distribution (see recsys_lib/models)."""

    #: default: one device; mirrored: all local GPUs; multi_worker: TF_CONFIG's cluster.
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    mixed_precision: bool = False
    label_types: tuple[str, ...] = ("purchase", "add_to_cart", "click")
    #: Training rows' features as of: ``event`` (just before each label) or ``day_start`` (its day's midnight).
    feature_time: Literal["event", "day_start"] = "day_start"
    #: Labels on the last ``holdout_days`` days are the temporal holdout.
    holdout_days: int = Field(2, ge=1)
    embedding_dim: int = Field(32, ge=2, le=1024)
    tower_layers: tuple[int, ...] = (64,)
    oov_buckets: int = Field(8, ge=1)
    price_buckets: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
    temperature: float = Field(0.3, gt=0)
    #: False: every user shares the hashed OOV buckets (no per-user embedding).
    user_id_embedding: bool = True
    #: Smoothing of the explicit category-affinity match term (see recsys_lib/models/two_tower.py).
    affinity_smoothing: float = Field(0.05, gt=0)
    learning_rate: float = Field(0.003, gt=0)
    batch_size: int = Field(512, ge=2)
    epochs: int = Field(6, ge=1)
    shuffle_buffer: int = Field(50_000, ge=1)
    #: How rows form batches: ``shuffled`` (rows mixed across the training window; item sampling
    #: probabilities are shares of all training labels) or ``time_local`` (batches of time-adjacent rows
    #: in shuffled order; probabilities are shares of the ``sampling_window`` rows around them). Use
    #: time_local for data spanning eras with shifting popularity (conf/movielens.yaml).
    batching: Literal["shuffled", "time_local"] = "shuffled"
    #: ``time_local`` batching: a row's item sampling probability is its item's share of this many rows
    #: centred on it; rows are read in blocks of half as many (see recsys_lib/models/data.py).
    sampling_window: int = Field(20_000, ge=1)
    #: Featurized batches kept after the first epoch: memory, disk (a temporary folder) or none
    #: (re-read the Parquet files every epoch; for training sets larger than memory and disk).
    input_cache: Literal["memory", "disk", "none"] = "memory"
    #: Compile the train step with XLA (the step is numeric only: lookups run in the input pipeline).
    #: Single-replica training only: XLA has no kernels for the cross-replica collectives. Off by
    #: default: on 2 CPU cores XLA made the step 3x slower (bench/train.py); try it on GPUs.
    jit_compile: bool = False
    #: Train steps per call into the TensorFlow runtime (fewer Python round trips per epoch).
    steps_per_execution: int = Field(16, ge=1)
    seed: int = 42
    #: Warm start trains on the newest ``warm_start_days`` of labels only.
    warm_start_days: int = Field(3, ge=1)
    warm_start_epochs: int = Field(3, ge=1)
    #: ``recsys train --continuous``: a model update (training set, warm start, gate, export) this often.
    update_every: Duration = Field(3600.0, gt=0)


class RankingConfig(_Strict):
    """The ranking stage (recsys_lib/models/ranking.py): DCN-v2 re-scoring the retrieval's top candidates."""

    #: Train a ranker with every `recsys train` and store it in the bundle beside the retrieval model.
    enabled: bool = False
    #: How many retrieval candidates it re-scores (evaluation and serving).
    candidates: int = Field(200, ge=1)
    #: Hard negatives per training label, drawn from the retrieval's top ``candidates``.
    negatives: int = Field(4, ge=1)
    #: Train on the labels of the last this many days before the holdout's cutoff.
    days: int = Field(7, ge=1)
    cross_layers: int = Field(2, ge=1)
    deep_layers: tuple[int, ...] = (64, 32)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(1024, ge=2)
    learning_rate: float = Field(0.001, gt=0)


class EvaluateConfig(_Strict):
    """Offline evaluation and the promotion gate."""

    ks: tuple[int, ...] = (10, 50, 100)
    filter_purchased: bool = True
    #: Drop every item the user had any event with before the cutoff, for data where nobody
    #: interacts with an item twice (MovieLens: one rating per movie). Applies to every model alike.
    filter_seen: bool = False
    #: Promotion compares candidate and champion on this holdout metric.
    promote_metric: str = "recall@50"
    promote_margin: float = Field(0.0, ge=0)
    #: The gate also requires beating the strongest (tuned) baseline on ``promote_metric``. Off by default
    #: until the two-tower beats EASE on every data set (issue 26): on, a demo model that loses is not served.
    gate_baselines: bool = False
    popularity_half_life: Duration = 86400.0
    #: Tune the baselines' settings on an inner time split (the ``tune_days`` before the holdout's
    #: cutoff, scored by ``promote_metric``); off: the first value of each grid (and ``popularity_half_life``).
    tune_baselines: bool = True
    tune_days: int = Field(2, ge=1)
    popularity_half_lives: tuple[Duration, ...] = (6 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0, 30 * 86400.0)
    knn_neighbours: tuple[int, ...] = (20, 100)
    knn_shrinkage: tuple[float, ...] = (0.0, 10.0, 50.0)
    #: EASE's L2 weight λ (grid), and the most items it keeps (it inverts a dense items x items matrix).
    ease_reg: tuple[float, ...] = (10.0, 50.0, 200.0, 500.0, 2000.0)
    ease_max_items: int = Field(20_000, ge=1)
    als_rank: int = Field(32, ge=1)
    als_iterations: int = Field(10, ge=1)
    als_reg: float = Field(0.05, gt=0)
    als_alpha: float = Field(10.0, gt=0)


class SearchRange(_Strict):
    """One setting's search space in ``recsys tune``: ``choices``, or a ``low``..``high`` range."""

    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    #: Sample the range on a log scale (learning rates, temperatures).
    log: bool = False
    #: Sample whole numbers in the range.
    integer: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRange:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty 'choices' list or 'low' and 'high', not both")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("a range needs 'low' < 'high' (or give 'choices')")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs 'low' > 0")
        return self


#: The ``train`` settings ``recsys tune`` may search (each changes the model or how it is fitted).
TUNABLE = ("temperature", "embedding_dim", "learning_rate", "batch_size", "batching", "sampling_window",
           "user_id_embedding", "affinity_smoothing", "oov_buckets")


class TuneConfig(_Strict):
    """``recsys tune``: an Optuna search of ``train`` settings, scored on the inner time split.

    The inner split is the evaluation's (``evaluate.tune_days`` before the holdout's cutoff), so
    nothing from the holdout is seen. Each trial trains up to ``max_epochs`` epochs and stops after
    ``patience`` epochs without improvement (early stopping on the inner split); its best epoch
    count becomes ``train.epochs`` in the written overlay.
    """

    trials: int = Field(12, ge=1)
    #: Start no new trial after this long (null: run every trial).
    timeout: Duration | None = None
    max_epochs: int = Field(10, ge=1)
    patience: int = Field(2, ge=1)
    #: Trials scoring below the median of earlier trials at the same epoch stop early (Optuna's pruner).
    prune: bool = True
    #: Refuse to tune on fewer validation users: the winner would be noise (the Taobao sample's 4 users
    #: picked settings that scored 0.017 against the defaults' 0.333 on the holdout).
    min_validation_users: int = Field(30, ge=1)
    space: dict[str, SearchRange] = Field(default_factory=lambda: {
        "temperature": SearchRange(low=0.05, high=1.0, log=True),
        "embedding_dim": SearchRange(choices=(16, 32, 64)),
        "learning_rate": SearchRange(low=0.0005, high=0.02, log=True),
        "batch_size": SearchRange(choices=(128, 256, 512, 1024)),
    })

    @field_validator("space")
    @classmethod
    def _known(cls, space: dict[str, SearchRange]) -> dict[str, SearchRange]:
        unknown = sorted(set(space) - set(TUNABLE))
        if unknown:
            raise ValueError(f"cannot tune {unknown}: tunable train settings are {list(TUNABLE)}")
        if not space:
            raise ValueError("the search space is empty")
        return space


class MlflowConfig(_Strict):
    """Tracking and registry. null locations: SQLite and an artifact folder under <home>/mlflow."""

    tracking_uri: str | None = None
    artifact_location: str | None = None
    experiment: str = "recsys-two-tower"
    registered_model: str = "recsys-two-tower"


class ServeConfig(_Strict):
    """The ANN index and recommendations."""

    #: auto: ScaNN for catalogues of at least ``scann_min_items``, else exact brute force.
    index: Literal["auto", "brute_force", "scann"] = "auto"
    scann_min_items: int = Field(10_000, ge=1)
    k: int = Field(10, ge=1)
    batch_k: int = Field(50, ge=1)
    #: Users with an event in this window before the watermark get batch recommendations.
    active_window: Duration = 30 * 86400.0
    #: ``recsys serve``: where the HTTP API listens and how many uvicorn worker processes it runs.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    #: Largest ``k`` a request may ask for, and most users in one ``POST /recommendations``.
    max_k: int = Field(1000, ge=1)
    max_batch_users: int = Field(1000, ge=1)
    #: How often the server checks the registry's champion alias (null: only ``POST /admin/reload``).
    reload_poll: Duration | None = None
    #: Requests waiting at most this long are encoded together in one call of the query tower.
    batch_wait: Duration = 0.0
    #: The server process's GIL switch interval (``sys.setswitchinterval``).
    switch_interval: Duration = Field(0.001, gt=0, le=0.1)
    batch_max: int = Field(256, ge=1)


class OnlineConfig(_Strict):
    """The online feature store: a projection of the feature tables for serving."""

    #: The stream and the full refresh write the store; false turns that off.
    enabled: bool = True
    #: sqlite: one file under <home>/online (embedded, no server); redis: a Redis server.
    backend: Literal["sqlite", "redis"] = "sqlite"
    #: null: <home>/online/features.sqlite
    sqlite_path: str | None = None
    #: null: $RECSYS_REDIS_URL, else redis://127.0.0.1:6379/0
    redis_url: str | None = None
    #: true: ``redis_url`` names a node of a Redis Cluster (redis-py ``RedisCluster`` finds the others).
    redis_cluster: bool = False
    #: Prefix of every Redis key, so several deployments can share a server.
    namespace: str = Field("recsys", pattern=r"^[A-Za-z0-9_.-]+$")
    #: Per feature table: a row whose newest event (``as_of``) is older than this reads as absent.
    ttl: dict[Literal["user_features", "item_features", "user_category_features"], Duration] = Field(
        default_factory=dict)
    #: Redis socket and connect timeout: how long a call may wait before the reader falls back.
    timeout: Duration = 1.0
    #: Rows per write round trip (a Redis pipeline, an SQLite transaction).
    write_batch: int = Field(5000, ge=1)
    #: Seconds a replaced generation stays readable (in-flight readers finish on it).
    generation_grace: Duration = 60.0


class PrivacyConfig(_Strict):
    """Pseudonymous user ids (:mod:`recsys_lib.core.privacy`). The key itself is never in config."""

    #: Replace user ids by keyed hashes at ingest and in the API; off only for public data sets.
    pseudonymize: bool = True
    #: Where the key is read from unless ``$RECSYS_ID_KEY`` is set; null: ``<home>/secrets/id.key``.
    key_file: str | None = None


class RecsysConfig(_Strict):
    """The whole suite's configuration."""

    home: str | None = None
    spark: SparkConfig = SparkConfig()
    lake: LakeConfig = LakeConfig()
    ingest: IngestConfig = IngestConfig()
    features: FeaturesConfig = FeaturesConfig()
    dq: DqConfig = DqConfig()
    streaming: StreamingConfig = StreamingConfig()
    train: TrainConfig = TrainConfig()
    ranking: RankingConfig = RankingConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tune: TuneConfig = TuneConfig()
    mlflow: MlflowConfig = MlflowConfig()
    serve: ServeConfig = ServeConfig()
    online: OnlineConfig = OnlineConfig()
    privacy: PrivacyConfig = PrivacyConfig()

    @property
    def home_dir(self) -> str:
        """The resolved data root (absolute for local paths)."""
        home = self.home or os.environ.get("RECSYS_HOME") or "./data"
        return home if "://" in home else str(Path(home).expanduser().resolve())

    @property
    def lake_root(self) -> str:
        """Folder (or URI) holding one sub-folder per Delta table."""
        return self.lake.root or _join(self.home_dir, "lake")

    @property
    def published_root(self) -> str:
        """Folder (or URI) of the published feature tables (:mod:`recsys_lib.features.publish`)."""
        return self.lake.published_root or _join(self.home_dir, "published")

    @property
    def landing_dir(self) -> str:
        """Default raw-log landing folder."""
        return self.ingest.landing_dir or _join(self.home_dir, "landing")

    @property
    def checkpoint_dir(self) -> str:
        """The streaming query's checkpoint folder."""
        return self.streaming.checkpoint_dir or _join(_join(self.home_dir, "checkpoints"), self.streaming.query_name)

    @property
    def mlflow_tracking_uri(self) -> str:
        """MLflow tracking URI (embedded default: SQLite under <home>/mlflow)."""
        return self.mlflow.tracking_uri or f"sqlite:///{_join(_join(self.home_dir, 'mlflow'), 'mlflow.db')}"

    @property
    def mlflow_artifact_location(self) -> str:
        """Where new experiments store artifacts."""
        return self.mlflow.artifact_location or _join(_join(self.home_dir, "mlflow"), "artifacts")

    @property
    def online_sqlite_path(self) -> str:
        """The embedded online store's SQLite file."""
        return self.online.sqlite_path or _join(_join(self.home_dir, "online"), "features.sqlite")

    @property
    def online_redis_url(self) -> str:
        """The Redis URL of the online store: config, else ``$RECSYS_REDIS_URL``, else localhost."""
        return self.online.redis_url or os.environ.get("RECSYS_REDIS_URL") or "redis://127.0.0.1:6379/0"

    def table_uri(self, table: str) -> str:
        """Location of the named Delta table."""
        return _join(self.lake_root, table)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def load_config(
    conf_files: Sequence[str | os.PathLike[str]] = (),
    overrides: Sequence[str] = (),
) -> RecsysConfig:
    """Load, merge and validate config.

    Args:
        conf_files: YAML overlays applied in order.
        overrides: ``dotted.key=value`` strings applied last.

    Raises:
        ConfigError: On unreadable files, unknown keys or bad values.

    """
    merged: dict[str, Any] = {}
    for conf_file in conf_files:
        _deep_merge(merged, _read_yaml_chain(Path(conf_file), seen=()))
    for override in overrides:
        _apply_override(merged, override)
    return _validate(merged)


def _validate(raw: Mapping[str, Any]) -> RecsysConfig:
    try:
        return RecsysConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "<root>"
            if err["type"] == "extra_forbidden":
                lines.append(f"unknown config key '{key}'")
            else:
                lines.append(f"bad value for '{key}': {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("; ".join(lines)) from None


def _read_yaml_chain(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.expanduser().resolve()
    if path in seen:
        raise ConfigError(f"config file {path} extends itself in a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"bad value for 'extends' in {path}: expected a file name")
    merged = _read_yaml_chain(path.parent / parent, seen + (path,))
    _deep_merge(merged, data)
    return merged


def _deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _apply_override(merged: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like dotted.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = _split_key(key)
    node = merged
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _split_key(key: str) -> list[str]:
    for prefix in _FREE_FORM_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return [*prefix.rstrip(".").split("."), key[len(prefix):]]
    return key.split(".")


_SECRET_WORDS = ("secret", "password", "token", "key", "credential", "sas", "signature")
_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")


def redacted(cfg: RecsysConfig) -> dict[str, Any]:
    """The config as a dict, safe to print: storage option secrets and passwords in URLs become ``***``.

    (The pseudonym key is never part of the config; see ``privacy.key_file``.)
    """
    def scrub(value: Any, name: str = "", under_options: bool = False) -> Any:
        if isinstance(value, dict):
            inside = under_options or name == "storage_options"
            return {k: scrub(v, k, inside) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v, name, under_options) for v in value]
        if isinstance(value, str):
            if under_options and any(word in name.lower() for word in _SECRET_WORDS):
                return "***"
            return _URL_PASSWORD.sub(r"\1***@", value)
        return value

    return dict(scrub(cfg.model_dump()))
