"""DAG files: they import without errors, cheaply, and wire the contract DAG ids and tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys, time
t0 = time.time()
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted({m.split('.')[0] for m in set(sys.modules) - before}
               & {'torch', 'pyspark', 'mlflow', 'great_expectations', 'pandas', 'numpy', 'sklearn'})
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "heavy": heavy, "dags": {},
       "files": sorted(s.file.rsplit("/", 1)[-1] for s in bag.dagbag_stats)}
for dag in bag.dags.values():
    out["dags"][dag.dag_id] = {
        "tasks": {t.task_id: {"type": type(t).__name__, "upstream": sorted(t.upstream_task_ids),
                        "mode": getattr(t, "mode", None), "executor": t.executor, "queue": t.queue,
                        "args": getattr(t, "application_args", None)}
                  for t in dag.tasks},
        "timetable": type(dag.timetable).__name__,
        "max_active_runs": dag.max_active_runs,
        "params": dag.params.dump(),
        "conn_id": next((getattr(t, "_conn_id", None) for t in dag.tasks if getattr(t, "_conn_id", None)), None),
    }
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
out["spark_master"] = SparkSubmitHook(conn_id="attnrec_spark")._connection["master"]
print("RESULT" + json.dumps(out))
"""


def probe_dagbag(home: Path, **extra_env: str) -> dict:
    """Parse dags/ with Airflow's DagBag in a fresh process: only ``extra_env`` of AIRFLOW*/ATTNREC_* is set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_"))}
    env.update(
        AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__UNIT_TEST_MODE="False", **extra_env
    )
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags")], env=env, capture_output=True, text=True, timeout=300
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, f"DagBag probe failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[len("RESULT") :])


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory) -> dict:
    return probe_dagbag(tmp_path_factory.mktemp("airflow_home"))


def test_no_import_errors_and_contract_dag_ids(dagbag):
    assert dagbag["errors"] == {}
    assert set(dagbag["dags"]) == {
        "behavior_etl",
        "train_recommender",
        "nightly_candidates",
        "kpi_report",
        "erase_users",
    }


def test_only_dag_files_are_parsed(dagbag):
    """dags/.airflowignore keeps the package's __init__ and the shared wiring module out of DAG parsing."""
    assert dagbag["files"] == [
        "behavior_etl.py", "erase_users.py", "kpi_report.py", "nightly_candidates.py", "train_recommender.py"
    ]  # fmt: skip


def test_erase_users_runs_on_request_then_tags_and_publishes_the_features_asset(dagbag):
    dag = dagbag["dags"]["erase_users"]
    assert dag["timetable"] == "NullTimetable" and dag["max_active_runs"] == 1
    tasks = dag["tasks"]
    assert {t: v["upstream"] for t, v in tasks.items()} == {
        "erase": [],
        "tag_models": ["erase"],
        "publish_features": ["erase"],
    }


def test_dag_files_do_not_import_heavy_libraries(dagbag):
    assert dagbag["heavy"] == []


def test_behavior_etl_chain_goes_through_spark_submit_and_gates(dagbag):
    etl = dagbag["dags"]["behavior_etl"]
    tasks = etl["tasks"]
    assert set(tasks) == {
        "check_raw",
        "clean",
        "publish_clean",
        "featurize",
        "item_text",
        "publish_features",
        "expire_old_partitions",
    }
    assert tasks["expire_old_partitions"]["upstream"] == []  # retention runs beside the chain, never blocks it
    for spark_task in ("clean", "featurize"):
        assert tasks[spark_task]["type"] == "SparkSubmitOperator"
        # each job runs its dataset's gate on what it staged, in the same Spark application, before any publish
        assert tasks[spark_task]["args"] == ["--dt", "{{ ds }}", "--validate"]
    assert tasks["clean"]["upstream"] == ["check_raw"]
    assert tasks["publish_clean"]["upstream"] == ["clean"]
    assert tasks["featurize"]["upstream"] == ["publish_clean"]
    assert tasks["item_text"]["upstream"] == ["featurize"]  # title vectors of the staged items, then their gate
    assert tasks["publish_features"]["upstream"] == ["item_text"]
    assert etl["conn_id"] == "attnrec_spark"
    assert etl["max_active_runs"] == 1  # one day at a time, in date order (the look-back reads earlier days)


def test_schedules(dagbag):
    assert dagbag["dags"]["behavior_etl"]["timetable"] == "CronDataIntervalTimetable"
    assert dagbag["dags"]["nightly_candidates"]["timetable"] == "CronDataIntervalTimetable"
    assert dagbag["dags"]["train_recommender"]["timetable"] == "AssetTriggeredTimetable"
    assert dagbag["dags"]["kpi_report"]["timetable"] == "CronTriggerTimetable"


def test_embedded_spark_connection_is_local(dagbag):
    assert dagbag["spark_master"] == "local[*]"


def test_nightly_candidates_waits_for_published_features(dagbag):
    tasks = dagbag["dags"]["nightly_candidates"]["tasks"]
    assert tasks["wait_for_features"]["mode"] == "reschedule"  # holds no worker slot while waiting
    assert tasks["wait_for_features"]["upstream"] == ["resolve_version"]  # no champion: fail at once, do not wait
    assert tasks["generate"]["upstream"] == ["resolve_version", "wait_for_features"]  # the serving plan, through XCom
    assert tasks["publish"]["upstream"] == ["validate"]


def test_kpi_report_waits_for_the_outcome_days_then_gates_publishes_and_acts(dagbag):
    dag = dagbag["dags"]["kpi_report"]
    tasks = dag["tasks"]
    assert tasks["wait_for_outcomes"]["mode"] == "reschedule"
    assert tasks["kpis"]["type"] == "SparkSubmitOperator" and tasks["kpis"]["upstream"] == ["wait_for_outcomes"]
    assert tasks["validate"]["upstream"] == ["kpis"]
    assert tasks["publish"]["upstream"] == ["validate"]
    assert tasks["log_to_mlflow"]["upstream"] == ["publish"] and tasks["allocate"]["upstream"] == ["publish"]
    assert tasks["promote"]["upstream"] == ["log_to_mlflow"]
    assert dag["max_active_runs"] == 1


def test_kpi_report_for_day_d_runs_after_the_horizon_has_landed():
    """The run triggered at 06:00 on D+H+1 (after behavior_etl published D+H at 02:00) has logical date D."""
    import pendulum
    from airflow.timetables.base import DataInterval, TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    from dags.kpi_report import HORIZON_DAYS, kpi_report

    timetable = kpi_report().timetable
    last = DataInterval(pendulum.datetime(2026, 5, 9, tz="UTC"), pendulum.datetime(2026, 5, 11, 6, tz="UTC"))
    restriction = TimeRestriction(earliest=None, latest=None, catchup=True)
    core = CronTriggerTimetable(timetable.expression, timezone="UTC", interval=timetable.interval)
    nxt = core.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
    assert HORIZON_DAYS == 1
    assert nxt.logical_date == pendulum.datetime(2026, 5, 10, tz="UTC")  # D
    assert nxt.run_after == pendulum.datetime(2026, 5, 12, 6, tz="UTC")  # D + H + 1, 06:00


def test_nightly_candidates_re_serves_the_recorded_version_unless_told_to_re_resolve(dagbag):
    assert dagbag["dags"]["nightly_candidates"]["params"] == {"re_resolve": False}
    assert dagbag["dags"]["behavior_etl"]["params"] == {}


def test_missing_partitions_names_what_is_not_published(tmp_path, monkeypatch):
    from attnrec import lake
    from dags.wiring import missing_partitions, sensor_timeout

    root = str(tmp_path)
    datasets = (lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS)
    assert missing_partitions(root, datasets, "2026-01-31") == [lake.partition(root, d, "2026-01-31") for d in datasets]
    for d in datasets:
        path = tmp_path / d / "dt=2026-01-31"
        path.mkdir(parents=True)
        (path / "part-0.parquet").write_bytes(b"")
    assert len(missing_partitions(root, datasets, "2026-01-31")) == 2  # written but not marked complete
    (tmp_path / lake.FEATURE_SEQUENCES / "dt=2026-01-31" / lake.SUCCESS_MARKER).write_text("")
    assert missing_partitions(root, datasets, "2026-01-31") == [lake.partition(root, lake.FEATURE_ITEMS, "2026-01-31")]

    monkeypatch.setenv("ATTNREC_WAIT_TIMEOUT_HOURS", "soon")
    with pytest.raises(ValueError, match="ATTNREC_WAIT_TIMEOUT_HOURS='soon'"):
        sensor_timeout()
    monkeypatch.setenv("ATTNREC_WAIT_TIMEOUT_HOURS", "1.5")
    assert sensor_timeout().total_seconds() == 5400


EDGE = "airflow.providers.edge3.executors.EdgeExecutor"


def test_every_task_runs_on_the_default_executor_and_queue_by_default(dagbag):
    routes = {(t["executor"], t["queue"]) for dag in dagbag["dags"].values() for t in dag["tasks"].values()}
    assert routes == {(None, "default")}


def test_train_task_goes_to_the_configured_executor_and_queue(tmp_path):
    bag = probe_dagbag(
        tmp_path,
        AIRFLOW__CORE__EXECUTOR=f"LocalExecutor,{EDGE}",
        ATTNREC_TRAIN_EXECUTOR="EdgeExecutor",
        ATTNREC_TRAIN_QUEUE="gpu",
    )
    assert bag["errors"] == {}
    tasks = bag["dags"]["train_recommender"]["tasks"]
    assert (tasks["train"]["executor"], tasks["train"]["queue"]) == ("EdgeExecutor", "gpu")
    assert (tasks["feature_partition"]["executor"], tasks["feature_partition"]["queue"]) == (None, "default")


def test_an_executor_airflow_does_not_run_fails_the_dag_naming_the_setting(tmp_path):
    """Airflow rejects a DAG whose task names an executor missing from [core] executor (the whole DAG becomes an
    import error); the message names the setting, its value and the fix, and the other DAGs still load."""
    bag = probe_dagbag(tmp_path, ATTNREC_TRAIN_EXECUTOR="EdgeExecutor")  # [core] executor: LocalExecutor only
    [(path, error)] = bag["errors"].items()
    assert path.endswith("train_recommender.py")
    assert (
        "ATTNREC_TRAIN_EXECUTOR='EdgeExecutor' is not one of the executors Airflow runs "
        "([core] executor = 'LocalExecutor')"
    ) in error
    assert f"AIRFLOW__CORE__EXECUTOR='LocalExecutor,{EDGE}'" in error
    assert set(bag["dags"]) == {"behavior_etl", "nightly_candidates", "kpi_report", "erase_users"}


@pytest.mark.parametrize(
    "name, value", [("ATTNREC_TRAIN_EXECUTOR", "LocalExecutor,EdgeExecutor"), ("ATTNREC_TRAIN_QUEUE", "gpu a100")]
)
def test_train_routing_settings_are_single_names(monkeypatch, name, value):
    from attnrec.settings import get_settings

    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name}={value!r} must be a single name without spaces or commas"):
        get_settings()
