"""One home for configuration: environment variables with embedded defaults.

Nothing else in attnrec hard-codes a path, URI or host. Every value can be overridden by the
environment variable named beside it; the defaults are the embedded single-machine setup
(Spark ``local[*]``, MLflow on SQLite under ``.mlflow/``, the lake under ``./data``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The checkout this package lives in; embedded defaults are relative to it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

MODEL_NAME = "attention-recommender"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer; set it to a whole number such as {default}") from None


def _holdout_cap() -> int:
    value = _int("ATTNREC_HOLDOUT_MAX_USERS", 20_000)
    if value < 0:
        raise ValueError(f"ATTNREC_HOLDOUT_MAX_USERS={value} is negative; set a number of users such as 20000, "
                         "or 0 to evaluate every user")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set it to a number such as {default}") from None


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; set it to true or false")


def _event_types(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of contract event types ("" or unset: the default; "none": no type)."""
    from attnrec.contracts import EVENT_TYPES

    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() == "none":
        return ()
    values = tuple(v.strip().lower() for v in raw.split(",") if v.strip())
    unknown = [v for v in values if v not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"{name}={raw!r} names unknown event types {unknown}; use a comma-separated subset of "
                         f"{', '.join(EVENT_TYPES)} (or 'none')")
    return values


def _str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else raw


def _name(name: str, example: str) -> str:
    """One Airflow name (an executor, a queue): "" when unset; no spaces or commas, since it must match exactly."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return ""
    value = raw.strip()
    if any(ch.isspace() or ch == "," for ch in value):
        raise ValueError(f"{name}={raw!r} must be a single name without spaces or commas, such as {example!r}; "
                         "unset it for Airflow's default")
    return value


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`get_settings`, never by hand in pipeline code."""

    data_root: str  # ATTNREC_DATA_ROOT: lake root, a local path or a URI (s3a://, hdfs://)
    mlflow_tracking_uri: str  # MLFLOW_TRACKING_URI
    mlflow_artifact_root: str  # ATTNREC_MLFLOW_ARTIFACTS: where a new experiment keeps artifacts
    experiment_name: str  # ATTNREC_EXPERIMENT
    model_name: str  # registered model name (contract: attention-recommender)
    spark_master: str  # ATTNREC_SPARK_MASTER: used when a job is run directly (not via Airflow)
    spark_conn_id: str  # ATTNREC_SPARK_CONN_ID: the Airflow connection SparkSubmitOperator uses
    top_k: int  # ATTNREC_TOP_K: candidates per user
    max_seq_len: int  # ATTNREC_MAX_SEQ_LEN: events kept per user sequence
    lookback_days: int  # ATTNREC_LOOKBACK_DAYS: clean partitions featurize reads, ending at D
    event_time_tolerance_hours: int  # ATTNREC_CLOCK_SKEW_HOURS: event_time allowed past the landing day
    max_dwell_ms: int  # ATTNREC_MAX_DWELL_MS: dwell above this is quarantined as absurd
    max_quarantine_share: float  # ATTNREC_MAX_QUARANTINE_SHARE: gate on quarantined / raw lines
    bot_events_per_day: int  # ATTNREC_BOT_EVENTS_PER_DAY: a user with more clean events in a day is a bot
    dedupe_lookback_days: int  # ATTNREC_DEDUPE_LOOKBACK_DAYS: earlier clean days checked for re-sent event_ids
    seed: int  # ATTNREC_SEED: the one seed every random choice derives from
    train_epochs: int  # ATTNREC_TRAIN_EPOCHS
    train_max_minutes: float  # ATTNREC_TRAIN_MAX_MINUTES: wall-clock budget for training
    promotion_margin: float  # ATTNREC_PROMOTION_MARGIN: NDCG@10 gain needed to replace champion
    train_ablation: bool = True  # ATTNREC_TRAIN_ABLATION: also train plain SASRec (item ids only) as a baseline
    full_softmax_max_items: int = 200_000  # ATTNREC_FULL_SOFTMAX_MAX_ITEMS: above it, sampled softmax + logQ
    checkpoint_dir: str = str(PROJECT_ROOT / ".cache" / "checkpoints")  # ATTNREC_CHECKPOINT_DIR: resumable training
    # ATTNREC_HOLDOUT_MAX_USERS: users evaluated (validation every epoch, test, the promotion gate); above it a
    # fixed hash sample of that many, the same in every run. 0: every user with a holdout.
    holdout_max_users: int = 20_000
    exposure_event_types: tuple[str, ...] = ("impression", "skip")  # ATTNREC_EXPOSURE_EVENT_TYPES: shown, not chosen
    negative_event_types: tuple[str, ...] = ("dislike",)  # ATTNREC_NEGATIVE_EVENT_TYPES: negative interest
    # ATTNREC_TRAIN_EXECUTOR: the Airflow executor of train_recommender's train task, e.g. EdgeExecutor for the
    # GPU trainer; it must be one of [core] executor. "" (unset): the default (first configured) executor.
    train_executor: str = ""
    train_queue: str = ""  # ATTNREC_TRAIN_QUEUE: the queue of the train task (the trainer's edge worker serves it)

    @property
    def is_local_lake(self) -> bool:
        return "://" not in self.data_root or self.data_root.startswith("file://")

    @property
    def local_data_root(self) -> Path:
        """The lake root as a local path; only meaningful when :attr:`is_local_lake`."""
        return Path(self.data_root.removeprefix("file://"))


def get_settings() -> Settings:
    """Read the environment now (cheap; call it inside tasks, not at import time)."""
    from attnrec.contracts import EXPOSURE_EVENT_TYPES, NEGATIVE_EVENT_TYPES

    data_root = _str("ATTNREC_DATA_ROOT", str(PROJECT_ROOT / "data"))
    if "://" not in data_root:
        data_root = str(Path(data_root).expanduser().resolve())
    mlflow_dir = PROJECT_ROOT / ".mlflow"
    return Settings(
        data_root=data_root,
        mlflow_tracking_uri=_str("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}"),
        mlflow_artifact_root=_str("ATTNREC_MLFLOW_ARTIFACTS", (mlflow_dir / "artifacts").as_uri()),
        experiment_name=_str("ATTNREC_EXPERIMENT", "attnrec"),
        model_name=MODEL_NAME,
        spark_master=_str("ATTNREC_SPARK_MASTER", "local[*]"),
        spark_conn_id=_str("ATTNREC_SPARK_CONN_ID", "attnrec_spark"),
        top_k=_int("ATTNREC_TOP_K", 100),
        max_seq_len=_int("ATTNREC_MAX_SEQ_LEN", 200),
        lookback_days=_int("ATTNREC_LOOKBACK_DAYS", 365),
        event_time_tolerance_hours=_int("ATTNREC_CLOCK_SKEW_HOURS", 24),
        max_dwell_ms=_int("ATTNREC_MAX_DWELL_MS", 6 * 3600 * 1000),
        max_quarantine_share=_float("ATTNREC_MAX_QUARANTINE_SHARE", 0.05),
        bot_events_per_day=_int("ATTNREC_BOT_EVENTS_PER_DAY", 5000),
        dedupe_lookback_days=_int("ATTNREC_DEDUPE_LOOKBACK_DAYS", 7),
        seed=_int("ATTNREC_SEED", 42),
        train_epochs=_int("ATTNREC_TRAIN_EPOCHS", 30),
        train_max_minutes=_float("ATTNREC_TRAIN_MAX_MINUTES", 5.0),
        promotion_margin=_float("ATTNREC_PROMOTION_MARGIN", 0.0),
        train_ablation=_bool("ATTNREC_TRAIN_ABLATION", True),
        full_softmax_max_items=_int("ATTNREC_FULL_SOFTMAX_MAX_ITEMS", 200_000),
        checkpoint_dir=_str("ATTNREC_CHECKPOINT_DIR", str(PROJECT_ROOT / ".cache" / "checkpoints")),
        holdout_max_users=_holdout_cap(),
        exposure_event_types=_event_types("ATTNREC_EXPOSURE_EVENT_TYPES", EXPOSURE_EVENT_TYPES),
        negative_event_types=_event_types("ATTNREC_NEGATIVE_EVENT_TYPES", NEGATIVE_EVENT_TYPES),
        train_executor=_name("ATTNREC_TRAIN_EXECUTOR", "EdgeExecutor"),
        train_queue=_name("ATTNREC_TRAIN_QUEUE", "gpu"),
    )
