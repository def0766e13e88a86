"""The one home of configuration: one typed settings class over the environment, with embedded defaults.

Nothing else in attnrec reads the environment for configuration or hard-codes a path, URI or host. Each field
below names its variable (``ATTNREC_*``, and MLflow's own ``MLFLOW_TRACKING_URI``), its type, its default and
what it does; the defaults are the embedded single-machine setup (Spark ``local[*]``, MLflow on SQLite under
``.mlflow/``, the lake under ``./data``). An unset or empty variable takes the default. A bad value fails
:func:`get_settings` with a ``ValueError`` naming the variable, the value and the fix.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from attnrec.contracts import EVENT_TYPES, EXPOSURE_EVENT_TYPES, NEGATIVE_EVENT_TYPES, SEEN_EVENT_TYPES

#: The checkout this package lives in; embedded defaults are relative to it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

MODEL_NAME = "attention-recommender"

#: The shortest pseudonym key accepted: 32 characters (128 bits of a hex key); ``attnrec`` creates 64 hex characters.
MIN_PSEUDONYM_KEY_CHARS = 32
#: How to make a good key, quoted by every error about one.
NEW_PSEUDONYM_KEY = 'python -c "import secrets; print(secrets.token_hex(32))"'

_MLFLOW_DIR = PROJECT_ROOT / ".mlflow"


def _flag(value: Any) -> Any:
    """true/false the way people write it in an environment: 1/0, true/false, yes/no, on/off (any case)."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("is not a boolean; set it to true or false")


Flag = Annotated[bool, BeforeValidator(_flag)]
#: Read as a comma-separated list (see ``Settings._event_type_list``), not as JSON (pydantic-settings' default).
EventTypes = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Resolved configuration. Build it with :func:`get_settings`, never by hand in pipeline code."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,  # ATTNREC_TOP_K, not attnrec_top_k: the names are part of the contract
        env_ignore_empty=True,  # VAR= (empty) means "use the default", as unset does
        extra="ignore",
        validate_by_name=True,  # get_settings(data_root=...) from a --data-root flag
        validate_by_alias=True,
        hide_input_in_errors=True,  # a ValidationError's text never echoes a value (the pseudonym key is one)
    )

    # -- lake and stores
    data_root: str = Field(
        str(PROJECT_ROOT / "data"),
        validation_alias="ATTNREC_DATA_ROOT",
        description="lake root: a local path (made absolute) or a URI such as s3a://bucket/lake or hdfs://...",
    )
    mlflow_tracking_uri: str = Field(
        f"sqlite:///{_MLFLOW_DIR / 'mlflow.db'}",
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking server, also the model registry (MLflow's own variable, no prefix)",
    )
    mlflow_artifact_root: str = Field(
        (_MLFLOW_DIR / "artifacts").as_uri(),
        validation_alias="ATTNREC_MLFLOW_ARTIFACTS",
        description="where a new MLflow experiment keeps its artifacts",
    )
    mlflow_ui_url: str = Field(
        "",
        validation_alias="ATTNREC_MLFLOW_UI_URL",
        description="the MLflow UI as a browser reaches it, for links from the Airflow view; unset: the tracking "
        "URI when it is http(s), else http://127.0.0.1:5000 (README's `mlflow ui`)",
    )
    experiment_name: str = Field("attnrec", validation_alias="ATTNREC_EXPERIMENT", description="MLflow experiment name")
    checkpoint_dir: str = Field(
        str(PROJECT_ROOT / ".cache" / "checkpoints"),
        validation_alias="ATTNREC_CHECKPOINT_DIR",
        description="resumable training checkpoints (a restarted train task continues from here)",
    )

    # -- Spark
    spark_master: str = Field(
        "local[*]",
        validation_alias="ATTNREC_SPARK_MASTER",
        description="Spark master of a job run directly (python jobs/x.py); under spark-submit, --master wins",
    )
    spark_conn_id: str = Field(
        "attnrec_spark",
        validation_alias="ATTNREC_SPARK_CONN_ID",
        description="the Airflow connection SparkSubmitOperator submits the jobs to",
    )
    spark_python: str = Field(
        default_factory=lambda: sys.executable,
        validation_alias="ATTNREC_SPARK_PYTHON",
        description="the Python that Spark runs the jobs with (driver and executors); default: this interpreter",
    )
    spark_driver_memory: str = Field(
        "4g", validation_alias="ATTNREC_SPARK_DRIVER_MEMORY", description="Spark driver memory of every job, e.g. 4g"
    )
    spark_driver_java_options: str = Field(
        "-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
        validation_alias="ATTNREC_SPARK_DRIVER_JAVA_OPTIONS",
        description="JVM options of every job's driver (spark.driver.extraJavaOptions): by default a quick-starting "
        "JIT and GC for short batch jobs; none: the JVM's defaults",
    )
    spark_large_day_bytes: int = Field(
        8 * 1024 * 1024,
        ge=0,
        validation_alias="ATTNREC_SPARK_LARGE_DAY_BYTES",
        description="a clean job whose raw day holds at least this many bytes (as landed, gzip or not) starts its "
        "driver with ATTNREC_SPARK_LARGE_DAY_JAVA_OPTIONS instead; 0: never",
    )
    spark_large_day_java_options: str = Field(
        "-XX:+UseParallelGC -XX:-DontCompileHugeMethods -XX:Tier4InvocationThreshold=15000 "
        "-XX:Tier4MinInvocationThreshold=1800 -XX:Tier4CompileThreshold=45000 -XX:Tier4BackEdgeThreshold=120000",
        validation_alias="ATTNREC_SPARK_LARGE_DAY_JAVA_OPTIONS",
        description="JVM options of the clean job's driver on a large day (ATTNREC_SPARK_LARGE_DAY_BYTES): the full "
        "JIT and a throughput GC, which pay for their slower start within seconds of work on millions of events, "
        "JIT compilation of Spark's large generated methods (HotSpot leaves methods over 8,000 bytes of bytecode "
        "interpreted; clean's rule chain is one), and C2 (the optimising compiler) only for methods three times as "
        "hot as by default: a day's many short queries each bring new generated code, and compiling all of it took "
        "a third of the day's CPU on two cores",
    )
    spark_executor_java_options: str = Field(
        "-XX:-DontCompileHugeMethods",
        validation_alias="ATTNREC_SPARK_EXECUTOR_JAVA_OPTIONS",
        description="JVM options of the executors on a cluster (spark.executor.extraJavaOptions; in local mode the "
        "driver's options apply): by default JIT compilation of Spark's large generated methods; none: the JVM's "
        "defaults",
    )
    spark_class_archive: str = Field(
        default_factory=lambda: str(Path(sys.prefix) / "share" / "attnrec" / "spark-classes.jsa"),
        validation_alias="ATTNREC_SPARK_CLASS_ARCHIVE",
        description="a class data sharing archive of the Spark driver's classes (`attnrec spark-archive` writes it; "
        "`make test` does): while the file exists every job's driver JVM maps it (-XX:SharedArchiveFile) and starts "
        "seconds sooner; default: in this Python environment (the venv's share/attnrec/); none: never",
    )

    spark_udf_dir: str = Field(
        default_factory=lambda: str(Path(sys.prefix) / "share" / "attnrec"),
        validation_alias="ATTNREC_SPARK_UDF_DIR",
        description="where the clean job's Java parse function (jobs/jvm/) is compiled to a jar at first use, by the "
        "JVM's own compiler, and added to each Spark application; default: in this Python environment (the venv's "
        "share/attnrec/); none: never, the clean job parses with Spark SQL alone (slower, the same outcome)",
    )

    # -- personal data
    pseudonym_key: SecretStr | None = Field(
        None,
        validation_alias="ATTNREC_PSEUDONYM_KEY",
        description="secret HMAC key of the user pseudonyms: 32 or more printable ASCII characters, no spaces; "
        "unset: a random key created once in <data root>/_secrets/pseudonym.key (docs/privacy.md)",
    )

    # -- clean and featurize
    event_time_tolerance_hours: int = Field(
        24,
        validation_alias="ATTNREC_CLOCK_SKEW_HOURS",
        description="hours an event_time may lie past the end of its landing day",
    )
    max_dwell_ms: int = Field(
        6 * 3600 * 1000,
        validation_alias="ATTNREC_MAX_DWELL_MS",
        description="dwell above this is quarantined as absurd",
    )
    max_quarantine_share: float = Field(
        0.05,
        validation_alias="ATTNREC_MAX_QUARANTINE_SHARE",
        description="the clean gate fails when quarantined / raw lines of a day is above this",
    )
    bot_events_per_day: int = Field(
        5000,
        validation_alias="ATTNREC_BOT_EVENTS_PER_DAY",
        description="a user with more clean events in a day is a bot (their events are quarantined)",
    )
    dedupe_lookback_days: int = Field(
        7,
        validation_alias="ATTNREC_DEDUPE_LOOKBACK_DAYS",
        description="earlier clean days checked for re-sent event_ids",
    )
    raw_retention_days: int = Field(
        0,
        ge=0,
        validation_alias="ATTNREC_RAW_RETENTION_DAYS",
        description="raw/events partitions older than this many days before the run's day are deleted; 0: kept forever",
    )
    quarantine_retention_days: int = Field(
        0,
        ge=0,
        validation_alias="ATTNREC_QUARANTINE_RETENTION_DAYS",
        description="quarantine/ partitions older than this many days before the run's day are deleted; 0: kept",
    )
    max_seq_len: int = Field(200, validation_alias="ATTNREC_MAX_SEQ_LEN", description="events kept per user sequence")
    lookback_days: int = Field(
        365,
        validation_alias="ATTNREC_LOOKBACK_DAYS",
        description="clean partitions featurize reads, ending at the day D",
    )
    exposure_event_types: EventTypes = Field(
        EXPOSURE_EVENT_TYPES,
        validation_alias="ATTNREC_EXPOSURE_EVENT_TYPES",
        description="event types that mean shown, not chosen (comma-separated; 'none' for no type)",
    )
    negative_event_types: EventTypes = Field(
        NEGATIVE_EVENT_TYPES,
        validation_alias="ATTNREC_NEGATIVE_EVENT_TYPES",
        description="event types that mean negative interest (comma-separated; 'none' for no type)",
    )
    low_rating_max: float = Field(
        2.0,
        validation_alias="ATTNREC_LOW_RATING_MAX",
        description="a rating at or below this is negative like a dislike: attention strength -1, never a target",
    )
    bounce_dwell_s: float = Field(
        2.0,
        validation_alias="ATTNREC_BOUNCE_DWELL_S",
        description="a dwell under this many seconds is a bounce: attention strength 0, never a target",
    )
    seen_event_types: EventTypes = Field(
        SEEN_EVENT_TYPES,
        validation_alias="ATTNREC_SEEN_EVENT_TYPES",
        description="event types after which an item is seen: in the user's seen_item_ids over the whole look-back "
        "and never served to them again (comma-separated; 'none' for no type); default every type but impression",
    )

    # -- training, registry and candidates
    seed: int = Field(42, validation_alias="ATTNREC_SEED", description="the one seed every random choice derives from")
    train_epochs: int = Field(30, validation_alias="ATTNREC_TRAIN_EPOCHS", description="maximum training epochs")
    train_max_minutes: float = Field(
        120.0,
        validation_alias="ATTNREC_TRAIN_MAX_MINUTES",
        description="wall-clock safety net for training, in minutes: epochs and early stopping decide, this only "
        "stops a run that hangs or crawls (MovieLens-100K: ~3 min idle, up to ~40 min on a busy machine)",
    )
    train_ablation: Flag = Field(
        True,
        validation_alias="ATTNREC_TRAIN_ABLATION",
        description="also train plain SASRec (item ids only) as a baseline",
    )
    item_text: Flag = Field(
        True,
        validation_alias="ATTNREC_ITEM_TEXT",
        description="embed item titles with the pretrained sentence encoder (behavior_etl's item_text task) and "
        "feed them to the model through a projection, so an item with a title and no events has a vector",
    )
    item_text_batch_size: int = Field(
        128, validation_alias="ATTNREC_ITEM_TEXT_BATCH_SIZE", description="titles per sentence-encoder batch", gt=0
    )
    cold_item_max_events: int = Field(
        5,
        validation_alias="ATTNREC_COLD_ITEM_MAX_EVENTS",
        description="the cold-item slice of every training run: holdout targets with at most this many positive "
        "training events",
        ge=0,
    )
    cold_user_max_events: int = Field(
        5,
        validation_alias="ATTNREC_COLD_USER_MAX_EVENTS",
        description="the cold-user slice of every training run: holdout users with at most this many events before "
        "their target",
        ge=0,
    )
    full_softmax_max_items: int = Field(
        200_000,
        validation_alias="ATTNREC_FULL_SOFTMAX_MAX_ITEMS",
        description="catalogue size above which training uses sampled softmax with a logQ correction",
    )
    holdout_max_users: int = Field(
        20_000,
        validation_alias="ATTNREC_HOLDOUT_MAX_USERS",
        description="users evaluated (every epoch, test, the promotion gate); above it a fixed hash sample of "
        "that many, the same in every run; 0: every user with a holdout",
    )
    promotion_margin: float = Field(
        0.0,
        validation_alias="ATTNREC_PROMOTION_MARGIN",
        description="validation NDCG@10 gain a challenger needs to replace the champion",
    )
    backfill_promote: Flag = Field(
        False,
        validation_alias="ATTNREC_BACKFILL_PROMOTE",
        description="let a run for a day before the champion's features day take 'champion' (without a "
        "comparison: that champion has seen the run's holdout); false: such a backfill leaves the champion alone",
    )
    top_k: int = Field(100, validation_alias="ATTNREC_TOP_K", description="candidates per user")
    promotion_rule: Literal["offline", "online"] = Field(
        "offline",
        validation_alias="ATTNREC_PROMOTION_RULE",
        description="offline: train_recommender's gate moves 'champion' on validation NDCG@10; online: it only "
        "aliases 'challenger', and kpi_report moves 'champion' when the treatment's hit-rate lift is significant",
    )

    # -- experiments and online KPIs
    ab_treatment_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        validation_alias="ATTNREC_AB_TREATMENT_SHARE",
        description="share of users served by the 'challenger' version (0..1); 0: no experiment, everyone gets "
        "the champion; with ATTNREC_AB_ALLOCATION=thompson, the share of the first day",
    )
    ab_experiment_id: str = Field(
        "",
        validation_alias="ATTNREC_AB_EXPERIMENT_ID",
        description="the experiment's name; it salts the assignment, so each experiment splits users afresh "
        "(required when the treatment share is above 0)",
    )
    ab_allocation: Literal["fixed", "thompson"] = Field(
        "fixed",
        validation_alias="ATTNREC_AB_ALLOCATION",
        description="fixed: the treatment share above every day; thompson: kpi_report writes the next share (the "
        "posterior probability that treatment beats control) to experiments/dt=D/allocation.json",
    )
    ab_min_share: float = Field(
        0.05,
        ge=0.0,
        le=0.5,
        validation_alias="ATTNREC_AB_MIN_SHARE",
        description="thompson allocation keeps the treatment share within [this, 1 - this]",
    )
    ab_alpha: float = Field(
        0.05,
        gt=0.0,
        lt=1.0,
        validation_alias="ATTNREC_AB_ALPHA",
        description="significance level of the online promotion (one-sided p-value of the hit-rate lift)",
    )
    ab_min_users: int = Field(
        100,
        ge=1,
        validation_alias="ATTNREC_AB_MIN_USERS",
        description="active users each arm needs before online promotion decides",
    )
    kpi_horizon_days: int = Field(
        1,
        ge=1,
        validation_alias="ATTNREC_KPI_HORIZON_DAYS",
        description="kpi_report for day D measures D's served lists against the clean events of D+1 .. D+this",
    )

    # -- Airflow
    task_retries: int = Field(0, validation_alias="ATTNREC_TASK_RETRIES", description="retries of every DAG task")
    wait_timeout_hours: float = Field(
        6.0,
        validation_alias="ATTNREC_WAIT_TIMEOUT_HOURS",
        description="how long a task waits for its input partitions before it fails",
    )
    train_executor: str = Field(
        "",
        validation_alias="ATTNREC_TRAIN_EXECUTOR",
        description="Airflow executor of train_recommender's train task, e.g. EdgeExecutor for the GPU trainer; it "
        "must be one of [core] executor; unset: the default (first configured) executor",
    )
    train_queue: str = Field(
        "",
        validation_alias="ATTNREC_TRAIN_QUEUE",
        description="queue of the train task (the trainer's Edge worker serves it); unset: the default queue",
    )

    @property
    def model_name(self) -> str:
        """The registered model name: a contract (DESIGN.md), not a setting."""
        return MODEL_NAME

    @property
    def mlflow_ui(self) -> str:
        """Where a browser opens MLflow: ATTNREC_MLFLOW_UI_URL, else an http(s) tracking URI, else port 5000 here."""
        if self.mlflow_ui_url:
            return self.mlflow_ui_url.rstrip("/")
        if self.mlflow_tracking_uri.startswith(("http://", "https://")):
            return self.mlflow_tracking_uri.rstrip("/")
        return "http://127.0.0.1:5000"

    @property
    def is_local_lake(self) -> bool:
        return "://" not in self.data_root or self.data_root.startswith("file://")

    @property
    def local_data_root(self) -> Path:
        """The lake root as a local path; only meaningful when :attr:`is_local_lake`."""
        return Path(self.data_root.removeprefix("file://"))

    @field_validator("data_root")
    @classmethod
    def _absolute_local_root(cls, value: str) -> str:
        return value if "://" in value else str(Path(value).expanduser().resolve())

    @field_validator("holdout_max_users")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("is negative; set a number of users such as 20000, or 0 to evaluate every user")
        return value

    @field_validator("wait_timeout_hours")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0; set e.g. 6")
        return value

    @field_validator("pseudonym_key", mode="before")
    @classmethod
    def _usable_key(cls, value: Any) -> Any:
        """Surrounding blanks are dropped; what is left must be a key (the message never contains it)."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        problem = pseudonym_key_problem(value.strip())
        if problem:
            raise ValueError(problem)
        return value.strip()

    @field_validator(
        "spark_driver_java_options", "spark_large_day_java_options", "spark_executor_java_options", mode="before"
    )
    @classmethod
    def _java_options(cls, value: Any) -> Any:
        """JVM options; "none": none at all, the JVM's defaults (blank, as for every variable, is attnrec's default)."""
        if isinstance(value, str) and value.strip().lower() == "none":
            return ""
        return value

    @field_validator("spark_class_archive", "spark_udf_dir", mode="before")
    @classmethod
    def _environment_path(cls, value: Any, info: ValidationInfo) -> Any:
        """A path; blank: the default (this environment's); "none": none (no archive, no compiled function)."""
        if isinstance(value, str) and value.strip() == "":
            return cls.model_fields[info.field_name].default_factory()
        if isinstance(value, str) and value.strip().lower() == "none":
            return ""
        return value.strip() if isinstance(value, str) else value

    @field_validator("exposure_event_types", "negative_event_types", "seen_event_types", mode="before")
    @classmethod
    def _event_type_list(cls, value: Any, info: ValidationInfo) -> Any:
        """A comma-separated list of contract event types; blank: the default; "none": no type."""
        if not isinstance(value, str):
            return value
        if value.strip() == "":
            return cls.model_fields[info.field_name].default
        if value.strip().lower() == "none":
            return ()
        return tuple(v.strip().lower() for v in value.split(",") if v.strip())

    @field_validator("exposure_event_types", "negative_event_types", "seen_event_types")
    @classmethod
    def _known_event_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in EVENT_TYPES]
        if unknown:
            raise ValueError(
                f"names unknown event types {unknown}; use a comma-separated subset of {', '.join(EVENT_TYPES)} "
                "(or 'none')"
            )
        return value

    @field_validator("ab_experiment_id", mode="before")
    @classmethod
    def _experiment_named(cls, value: Any, info: ValidationInfo) -> Any:
        """An experiment needs a name (it salts the assignment); a name is one token, safe in paths and tags."""
        name = value.strip() if isinstance(value, str) else value
        if isinstance(name, str) and not re.fullmatch(r"[A-Za-z0-9._-]*", name):
            raise ValueError("must be letters, digits, '.', '_' or '-' only, such as 'ranker-2026-12'")
        if not name and (info.data.get("ab_treatment_share") or 0) > 0:
            raise ValueError(
                "is empty while ATTNREC_AB_TREATMENT_SHARE is above 0; name the experiment, e.g. "
                "ATTNREC_AB_EXPERIMENT_ID=ranker-2026-12, or set the share to 0"
            )
        return name

    @field_validator("train_executor", "train_queue", mode="before")
    @classmethod
    def _single_name(cls, value: Any, info: ValidationInfo) -> Any:
        """One Airflow name: it must match exactly, so no spaces or commas; blank means unset."""
        if not isinstance(value, str):
            return value
        name = value.strip()
        if any(ch.isspace() or ch == "," for ch in name):
            example = "EdgeExecutor" if info.field_name == "train_executor" else "gpu"
            raise ValueError(
                f"must be a single name without spaces or commas, such as {example!r}; unset it for Airflow's default"
            )
        return name


def pseudonym_key_problem(key: str) -> str | None:
    """What is wrong with ``key`` as a pseudonym key, without quoting it; None when it is usable.

    The rule: at least :data:`MIN_PSEUDONYM_KEY_CHARS` characters, each printable ASCII other than a space (so the
    key reads the same in .env files, shells and Spark, and its bytes are its ASCII text).
    """
    if len(key) < MIN_PSEUDONYM_KEY_CHARS:
        return (
            f"is too short ({len(key)} characters, at least {MIN_PSEUDONYM_KEY_CHARS} needed); "
            f"make one with {NEW_PSEUDONYM_KEY}"
        )
    if not all("!" <= ch <= "~" for ch in key):
        return (
            "holds a character that is not printable ASCII (a space, a control or a non-ASCII character); "
            f"use only A-Z a-z 0-9 and punctuation, e.g. {NEW_PSEUDONYM_KEY}"
        )
    return None


#: Secret fields: an error names them and says what is wrong, never their value.
_SECRETS = {"pseudonym_key", "ATTNREC_PSEUDONYM_KEY"}

#: Per pydantic error type, what to say after ``NAME='value'``; {default} is the field's default.
_FIXES = {
    "int_parsing": "is not an integer; set it to a whole number such as {default}",
    "int_from_float": "is not an integer; set it to a whole number such as {default}",
    "float_parsing": "is not a number; set it to a number such as {default}",
}


def _explain(error: ValidationError) -> str:
    """One line per bad variable: ``NAME='value' <what is wrong>; <the fix>``; a secret's value is never shown."""
    fields = {**Settings.model_fields, **{f.validation_alias: f for f in Settings.model_fields.values()}}
    lines = []
    for item in error.errors(include_url=False):
        key = str(item["loc"][0]) if item["loc"] else "?"
        field = fields.get(key)
        name = field.validation_alias if field is not None else key
        if item["type"] == "value_error":
            problem = str(item["ctx"]["error"])
        else:
            fix = _FIXES.get(item["type"])
            default = field.get_default(call_default_factory=True) if field is not None else None
            problem = fix.format(default=default) if fix else f"is not valid: {item['msg']}"
        shown = " (value hidden)" if key in _SECRETS else f"={item['input']!r}"
        lines.append(f"{name}{shown} {problem}")
    return "\n".join(lines)


def get_settings(**overrides: Any) -> Settings:
    """Read the environment now (cheap, no I/O: call it inside tasks, not at import time).

    ``overrides`` (field names, e.g. ``data_root`` from a ``--data-root`` flag) win over the environment and are
    validated the same way. A bad value raises ``ValueError`` naming the variable, the value and the fix.
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        raise ValueError(_explain(err)) from None
