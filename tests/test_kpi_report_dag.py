"""kpi_report through Airflow (``airflow dags test``, one fresh Airflow home, both runs in one Airflow process:
tests/airflow_runs.py) on the hand-built day of test_kpis.py: a missing outcome day waits, then fails naming it;
once the day lands, the run publishes kpis/dt=D, logs the day to MLflow and writes the bandit allocation."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from attnrec import lake
from tests.airflow_runs import DagTests, Run
from tests.test_kpis import D1, EVENTS_D1, EXPECTED, TEST_KEY, D, assert_row, build_lake, events, write

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("kpi_report")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        AIRFLOW_HOME=str(base / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        ATTNREC_DATA_ROOT=str(base / "data"),
        MLFLOW_TRACKING_URI=f"sqlite:///{base / 'mlflow.db'}",
        ATTNREC_MLFLOW_ARTIFACTS=(base / "mlartifacts").as_uri(),
        ATTNREC_SPARK_DRIVER_MEMORY="1g",
        ATTNREC_WAIT_TIMEOUT_HOURS="0.001",  # 3.6 s: the sensor pokes, reschedules, pokes again, gives up
        ATTNREC_AB_EXPERIMENT_ID="exp1",
        ATTNREC_AB_TREATMENT_SHARE="0.5",
        ATTNREC_AB_ALLOCATION="thompson",
        ATTNREC_PSEUDONYM_KEY=TEST_KEY,
    )
    (base / "airflow").mkdir()
    (base / "airflow" / "dags").symlink_to(REPO / "dags")
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    runs = DagTests(env)
    _RUNS[env["AIRFLOW_HOME"]] = runs
    yield env
    runs.close()


_RUNS: dict[str, DagTests] = {}  # AIRFLOW_HOME -> the module's Airflow session


def dags_test(env: dict[str, str]) -> Run:
    """``airflow dags test kpi_report D`` in the module's Airflow session (tests/airflow_runs.py)."""
    return _RUNS[env["AIRFLOW_HOME"]](env, "kpi_report", D)


def test_a_missing_outcome_day_waits_then_fails_naming_it_and_the_complete_day_publishes(env):
    from mlflow import MlflowClient

    root = env["ATTNREC_DATA_ROOT"]
    build_lake(root, outcome_days=())  # candidates and features of D; nothing has landed on D+1 yet
    proc = dags_test(env)
    output = proc.output
    assert proc.returncode != 0 or "DagRun failed" in output, output[-4000:]
    missing = lake.partition(root, lake.CLEAN_EVENTS, D1)
    assert f"kpis dt={D}: waiting for {missing}" in output, output[-4000:]  # it poked and waited
    assert "and still not published: " + missing in output, output[-4000:]  # then failed naming the day
    assert f"behavior_etl for {D1}" in output
    assert not lake.exists(lake.partition(root, lake.KPIS, D))

    write(root, lake.CLEAN_EVENTS, D1, events(D1, EVENTS_D1))  # D+1 lands
    proc = dags_test(env)
    output = proc.output
    assert proc.returncode == 0 and "DagRun failed" not in output, output[-6000:]
    control, treatment = pq.read_table(lake.partition(root, lake.KPIS, D)).to_pylist()
    assert_row(control, EXPECTED["control"])
    assert_row(treatment, EXPECTED["treatment"])

    # thompson: treatment Beta(1 + 2, 1 + 1), control Beta(1 + 1, 1 + 2); P(X > Y) = 12 * (6/5 - 7/3 + 11/7 - 3/8)
    allocation = lake.read_json(lake.join(lake.partition(root, lake.EXPERIMENTS, D), lake.ALLOCATION_FILE))
    assert allocation["experiment_id"] == "exp1"
    assert allocation["treatment_share"] == pytest.approx(53 / 70)

    c = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    [run] = c.search_runs([c.get_experiment_by_name("attnrec-online").experiment_id])
    assert run.data.tags["kpi_dt"] == D and run.data.tags["experiment_id"] == "exp1"
    assert run.data.metrics["treatment_hit_rate_at_10"] == pytest.approx(2 / 3)
