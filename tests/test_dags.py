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
heavy = sorted({m.split('.')[0] for m in set(sys.modules) - before} & {'torch', 'pyspark', 'mlflow', 'great_expectations', 'pandas', 'numpy', 'sklearn'})
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "heavy": heavy, "dags": {}}
for dag in bag.dags.values():
    out["dags"][dag.dag_id] = {
        "tasks": {t.task_id: {"type": type(t).__name__, "upstream": sorted(t.upstream_task_ids),
                        "mode": getattr(t, "mode", None)} for t in dag.tasks},
        "timetable": type(dag.timetable).__name__,
        "max_active_runs": dag.max_active_runs,
        "conn_id": next((getattr(t, "_conn_id", None) for t in dag.tasks if getattr(t, "_conn_id", None)), None),
    }
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
out["spark_master"] = SparkSubmitHook(conn_id="attnrec_spark")._connection["master"]
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__UNIT_TEST_MODE="False")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags")], env=env, capture_output=True, text=True, timeout=300
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, f"DagBag probe failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[len("RESULT") :])


def test_no_import_errors_and_contract_dag_ids(dagbag):
    assert dagbag["errors"] == {}
    assert set(dagbag["dags"]) == {"behavior_etl", "train_recommender", "nightly_candidates"}


def test_dag_files_do_not_import_heavy_libraries(dagbag):
    assert dagbag["heavy"] == []


def test_behavior_etl_chain_goes_through_spark_submit_and_gates(dagbag):
    etl = dagbag["dags"]["behavior_etl"]
    tasks = etl["tasks"]
    for spark_task in ("clean", "validate_clean", "featurize", "validate_features"):
        assert tasks[spark_task]["type"] == "SparkSubmitOperator"
    assert tasks["clean"]["upstream"] == ["check_raw"]
    assert tasks["validate_clean"]["upstream"] == ["clean"]
    assert tasks["publish_clean"]["upstream"] == ["validate_clean"]
    assert tasks["featurize"]["upstream"] == ["publish_clean"]
    assert tasks["publish_features"]["upstream"] == ["validate_features"]
    assert etl["conn_id"] == "attnrec_spark"
    assert etl["max_active_runs"] == 2


def test_schedules(dagbag):
    assert dagbag["dags"]["behavior_etl"]["timetable"] == "CronDataIntervalTimetable"
    assert dagbag["dags"]["nightly_candidates"]["timetable"] == "CronDataIntervalTimetable"
    assert dagbag["dags"]["train_recommender"]["timetable"] == "AssetTriggeredTimetable"


def test_embedded_spark_connection_is_local(dagbag):
    assert dagbag["spark_master"] == "local[*]"


def test_nightly_candidates_waits_for_published_features(dagbag):
    tasks = dagbag["dags"]["nightly_candidates"]["tasks"]
    assert tasks["wait_for_features"]["mode"] == "reschedule"  # holds no worker slot while waiting
    assert tasks["wait_for_features"]["upstream"] == ["check_champion"]  # no champion: fail at once, do not wait
    assert tasks["generate"]["upstream"] == ["wait_for_features"]
    assert tasks["publish"]["upstream"] == ["validate"]


def test_missing_partitions_names_what_is_not_published(tmp_path, monkeypatch):
    from attnrec import lake
    from attnrec.orchestration import missing_partitions, sensor_timeout

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
