"""attnrec.settings: the one typed settings class over the environment (names, defaults, parsing, errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from attnrec.settings import Settings, get_settings

#: Every variable the code reads. Renaming one breaks deployments (.env files, docker-compose.yml, Airflow).
VARIABLES = {
    "ATTNREC_DATA_ROOT", "MLFLOW_TRACKING_URI", "ATTNREC_MLFLOW_ARTIFACTS", "ATTNREC_EXPERIMENT",
    "ATTNREC_CHECKPOINT_DIR", "ATTNREC_SPARK_MASTER", "ATTNREC_SPARK_CONN_ID", "ATTNREC_SPARK_PYTHON",
    "ATTNREC_SPARK_DRIVER_MEMORY", "ATTNREC_SPARK_DRIVER_JAVA_OPTIONS", "ATTNREC_SPARK_LARGE_DAY_BYTES",
    "ATTNREC_SPARK_LARGE_DAY_JAVA_OPTIONS", "ATTNREC_SPARK_EXECUTOR_JAVA_OPTIONS", "ATTNREC_SPARK_CLASS_ARCHIVE",
    "ATTNREC_SPARK_UDF_DIR",
    "ATTNREC_CLOCK_SKEW_HOURS", "ATTNREC_MAX_DWELL_MS", "ATTNREC_MAX_QUARANTINE_SHARE",
    "ATTNREC_BOT_EVENTS_PER_DAY", "ATTNREC_DEDUPE_LOOKBACK_DAYS", "ATTNREC_MAX_SEQ_LEN", "ATTNREC_LOOKBACK_DAYS",
    "ATTNREC_EXPOSURE_EVENT_TYPES", "ATTNREC_NEGATIVE_EVENT_TYPES", "ATTNREC_SEEN_EVENT_TYPES", "ATTNREC_SEED",
    "ATTNREC_LOW_RATING_MAX", "ATTNREC_BOUNCE_DWELL_S",
    "ATTNREC_TRAIN_EPOCHS",
    "ATTNREC_TRAIN_MAX_MINUTES", "ATTNREC_TRAIN_ABLATION", "ATTNREC_FULL_SOFTMAX_MAX_ITEMS",
    "ATTNREC_ITEM_TEXT", "ATTNREC_ITEM_TEXT_BATCH_SIZE", "ATTNREC_COLD_ITEM_MAX_EVENTS", "ATTNREC_COLD_USER_MAX_EVENTS",
    "ATTNREC_HOLDOUT_MAX_USERS", "ATTNREC_PROMOTION_MARGIN", "ATTNREC_TOP_K", "ATTNREC_TASK_RETRIES",
    "ATTNREC_WAIT_TIMEOUT_HOURS", "ATTNREC_TRAIN_EXECUTOR", "ATTNREC_TRAIN_QUEUE", "ATTNREC_BACKFILL_PROMOTE",
    "ATTNREC_PROMOTION_RULE", "ATTNREC_AB_TREATMENT_SHARE", "ATTNREC_AB_EXPERIMENT_ID", "ATTNREC_AB_ALLOCATION",
    "ATTNREC_AB_MIN_SHARE", "ATTNREC_AB_ALPHA", "ATTNREC_AB_MIN_USERS", "ATTNREC_KPI_HORIZON_DAYS",
    "ATTNREC_MLFLOW_UI_URL", "ATTNREC_PSEUDONYM_KEY", "ATTNREC_RAW_RETENTION_DAYS", "ATTNREC_QUARANTINE_RETENTION_DAYS",
}  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_every_field_names_its_variable_and_says_what_it_does():
    fields = Settings.model_fields
    assert {f.validation_alias for f in fields.values()} == VARIABLES
    assert [name for name, f in fields.items() if not f.description] == []


def test_settings_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("ATTNREC_TOP_K", "7")
    s = get_settings()
    assert s.data_root == str(tmp_path / "lake") and s.top_k == 7 and s.model_name == "attention-recommender"
    monkeypatch.setenv("ATTNREC_TOP_K", "many")
    with pytest.raises(
        ValueError, match="ATTNREC_TOP_K='many' is not an integer; set it to a whole number such as 100"
    ):
        get_settings()


def test_blank_means_default_and_names_are_case_sensitive(monkeypatch):
    monkeypatch.setenv("ATTNREC_TOP_K", "")
    monkeypatch.setenv("attnrec_seed", "7")
    monkeypatch.setenv("ATTNREC_EXPOSURE_EVENT_TYPES", "  ")
    s = get_settings()
    assert (s.top_k, s.seed, s.exposure_event_types) == (100, 42, ("impression", "skip"))


def test_a_relative_data_root_is_made_absolute_and_an_override_wins(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTNREC_DATA_ROOT", "lake")
    assert get_settings().data_root == str(tmp_path / "lake")
    assert get_settings(data_root="other").data_root == str(tmp_path / "other")  # e.g. a --data-root flag
    assert get_settings(data_root=None).data_root == str(tmp_path / "lake")  # flag not given: the environment
    monkeypatch.setenv("ATTNREC_DATA_ROOT", "s3a://bucket/lake")
    s = get_settings()
    assert s.data_root == "s3a://bucket/lake" and not s.is_local_lake


def test_interest_event_types_from_env(monkeypatch):
    assert get_settings().exposure_event_types == ("impression", "skip")
    assert get_settings().negative_event_types == ("dislike",)
    monkeypatch.setenv("ATTNREC_EXPOSURE_EVENT_TYPES", " Impression ")
    monkeypatch.setenv("ATTNREC_NEGATIVE_EVENT_TYPES", "none")
    s = get_settings()
    assert s.exposure_event_types == ("impression",) and s.negative_event_types == ()
    monkeypatch.setenv("ATTNREC_NEGATIVE_EVENT_TYPES", "dislike,thumbs_down")
    with pytest.raises(
        ValueError,
        match=r"ATTNREC_NEGATIVE_EVENT_TYPES='dislike,thumbs_down' names unknown event types \['thumbs_down'\]",
    ):
        get_settings()


@pytest.mark.parametrize("raw, value", [("1", True), (" Off ", False), ("yes", True), ("FALSE", False)])
def test_booleans(monkeypatch, raw, value):
    monkeypatch.setenv("ATTNREC_TRAIN_ABLATION", raw)
    assert get_settings().train_ablation is value


def test_airflow_and_spark_submit_settings(monkeypatch):
    s = get_settings()
    assert (s.task_retries, s.wait_timeout_hours, s.spark_python, s.spark_driver_memory) == (
        0,
        6.0,
        sys.executable,
        "4g",
    )
    monkeypatch.setenv("ATTNREC_TASK_RETRIES", "3")
    monkeypatch.setenv("ATTNREC_WAIT_TIMEOUT_HOURS", "1.5")
    monkeypatch.setenv("ATTNREC_SPARK_PYTHON", "/opt/python/bin/python3")
    monkeypatch.setenv("ATTNREC_SPARK_DRIVER_MEMORY", "1g")
    s = get_settings()
    assert (s.task_retries, s.wait_timeout_hours, s.spark_python, s.spark_driver_memory) == (
        3, 1.5, "/opt/python/bin/python3", "1g")  # fmt: skip


@pytest.mark.parametrize(
    "name, raw, message",
    [
        ("ATTNREC_WAIT_TIMEOUT_HOURS", "0", "ATTNREC_WAIT_TIMEOUT_HOURS='0' must be > 0; set e.g. 6"),
        ("ATTNREC_HOLDOUT_MAX_USERS", "-1", "ATTNREC_HOLDOUT_MAX_USERS='-1' is negative; set a number of users"),
        ("ATTNREC_TRAIN_ABLATION", "maybe", "ATTNREC_TRAIN_ABLATION='maybe' is not a boolean; set it to true or false"),
        ("ATTNREC_MAX_QUARANTINE_SHARE", "lots", "ATTNREC_MAX_QUARANTINE_SHARE='lots' is not a number; set it to a "
         "number such as 0.05"),
    ],
)  # fmt: skip
def test_a_bad_value_names_the_variable_the_value_and_the_fix(monkeypatch, name, raw, message):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError) as err:
        get_settings()
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value) and "pydantic" not in str(err.value)


def test_every_bad_value_is_reported_at_once(monkeypatch):
    monkeypatch.setenv("ATTNREC_TOP_K", "many")
    monkeypatch.setenv("ATTNREC_SEED", "x")
    with pytest.raises(ValueError) as err:
        get_settings()
    assert [line.split("=")[0] for line in str(err.value).splitlines()] == ["ATTNREC_SEED", "ATTNREC_TOP_K"]


def test_settings_are_frozen():
    s = get_settings()
    with pytest.raises(ValueError):
        s.top_k = 5  # type: ignore[misc]
    assert s.model_copy(update={"top_k": 5}).top_k == 5 and s.top_k == 100


def test_an_experiment_needs_a_name_and_a_share_within_0_and_1(monkeypatch):
    monkeypatch.setenv("ATTNREC_AB_TREATMENT_SHARE", "0.5")
    with pytest.raises(ValueError, match="ATTNREC_AB_EXPERIMENT_ID='' is empty while ATTNREC_AB_TREATMENT_SHARE"):
        get_settings()
    monkeypatch.setenv("ATTNREC_AB_EXPERIMENT_ID", "ranker-2")
    assert get_settings().ab_treatment_share == 0.5
    monkeypatch.setenv("ATTNREC_AB_TREATMENT_SHARE", "1.5")
    with pytest.raises(
        ValueError, match="ATTNREC_AB_TREATMENT_SHARE='1.5' is not valid: Input should be less than or equal to 1"
    ):
        get_settings()
    monkeypatch.setenv("ATTNREC_AB_TREATMENT_SHARE", "0.5")
    monkeypatch.setenv("ATTNREC_AB_EXPERIMENT_ID", "a b")
    with pytest.raises(ValueError, match="ATTNREC_AB_EXPERIMENT_ID='a b' must be letters"):
        get_settings()


def test_a_large_raw_day_gets_the_large_day_jvm_options(monkeypatch, tmp_path):
    from attnrec.spark import driver_java_options
    from dags.wiring import raw_day_java_options

    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("ATTNREC_SPARK_LARGE_DAY_BYTES", "1000")
    monkeypatch.setenv("ATTNREC_SPARK_CLASS_ARCHIVE", "none")  # the options alone (the archive: the test below)
    settings = get_settings()
    quick, large = settings.spark_driver_java_options, settings.spark_large_day_java_options
    assert quick != large
    assert driver_java_options(settings, None) == quick  # not sized: the quick-start options
    assert driver_java_options(settings, 999) == quick and driver_java_options(settings, 1000) == large
    day = tmp_path / "raw" / "events" / "dt=2026-01-01"
    assert raw_day_java_options("2026-01-01") == quick  # no raw partition: 0 bytes
    day.mkdir(parents=True)
    (day / "a.jsonl.gz").write_bytes(b"x" * 600)
    assert raw_day_java_options("2026-01-01") == quick
    (day / "b.jsonl.gz").write_bytes(b"x" * 600)  # 1,200 bytes over both files
    assert raw_day_java_options("2026-01-01") == large
    monkeypatch.setenv("ATTNREC_SPARK_LARGE_DAY_BYTES", "0")
    assert driver_java_options(get_settings(), 10**12) == quick  # 0: never


def test_spark_submit_passes_the_executors_jvm_options_and_large_days_compile_huge_generated_methods(monkeypatch):
    from dags.wiring import _submit_conf

    monkeypatch.setenv("ATTNREC_SPARK_CLASS_ARCHIVE", "none")
    settings = get_settings()
    assert "-XX:-DontCompileHugeMethods" in settings.spark_large_day_java_options.split()
    # the JVM that runs Spark takes every default option (a misspelt -XX flag stops it from starting)
    for options in (settings.spark_large_day_java_options, settings.spark_driver_java_options):
        java = subprocess.run(["java", *options.split(), "-version"], capture_output=True, text=True)
        assert java.returncode == 0, java.stderr
    conf = _submit_conf(settings)
    assert conf["spark.executor.extraJavaOptions"] == "-XX:-DontCompileHugeMethods"
    assert conf["spark.pyspark.python"] == sys.executable
    monkeypatch.setenv("ATTNREC_SPARK_EXECUTOR_JAVA_OPTIONS", "")  # blank: the default, as for every variable
    assert _submit_conf(get_settings())["spark.executor.extraJavaOptions"] == "-XX:-DontCompileHugeMethods"
    monkeypatch.setenv("ATTNREC_SPARK_EXECUTOR_JAVA_OPTIONS", "-Xss4m")
    assert _submit_conf(get_settings())["spark.executor.extraJavaOptions"] == "-Xss4m"
    monkeypatch.setenv("ATTNREC_SPARK_EXECUTOR_JAVA_OPTIONS", "None")
    monkeypatch.setenv("ATTNREC_SPARK_DRIVER_JAVA_OPTIONS", "none")
    conf = _submit_conf(get_settings())  # none: the JVM's defaults, no option passed
    assert "spark.executor.extraJavaOptions" not in conf and "spark.driver.extraJavaOptions" not in conf


def test_every_driver_maps_the_class_archive_while_the_file_exists(monkeypatch, tmp_path):
    from attnrec.spark import driver_java_options
    from dags.wiring import _submit_conf

    monkeypatch.delenv("ATTNREC_SPARK_CLASS_ARCHIVE", raising=False)
    default = Path(sys.prefix) / "share" / "attnrec" / "spark-classes.jsa"
    assert get_settings().spark_class_archive == str(default)  # this environment's (make test writes it)
    archive = tmp_path / "spark classes.jsa"  # a blank in the path: one quoted option for spark's splitting
    monkeypatch.setenv("ATTNREC_SPARK_CLASS_ARCHIVE", str(archive))
    monkeypatch.setenv("ATTNREC_SPARK_LARGE_DAY_BYTES", "1000")
    settings = get_settings()
    quick, large = settings.spark_driver_java_options, settings.spark_large_day_java_options
    assert driver_java_options(settings) == quick  # no file (yet, or on this node): nothing to map
    archive.write_bytes(b"")
    option = f'"-XX:SharedArchiveFile={archive}"'
    assert driver_java_options(settings) == f"{quick} {option}"
    assert driver_java_options(settings, 1000) == f"{large} {option}"  # a large day's options too
    assert _submit_conf(settings)["spark.driver.extraJavaOptions"] == f"{quick} {option}"  # the DAGs' spark-submit
    monkeypatch.setenv("ATTNREC_SPARK_DRIVER_JAVA_OPTIONS", "-XX:SharedArchiveFile=/mine.jsa")
    assert driver_java_options(get_settings()) == "-XX:SharedArchiveFile=/mine.jsa"  # an archive of one's own wins
    monkeypatch.setenv("ATTNREC_SPARK_DRIVER_JAVA_OPTIONS", "none")
    assert driver_java_options(get_settings()) == option  # no other option, still the archive
    monkeypatch.setenv("ATTNREC_SPARK_CLASS_ARCHIVE", "None")
    assert driver_java_options(get_settings()) == ""  # none: never
