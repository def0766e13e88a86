"""datatools/airflow_session.py: Airflow CLI commands run one after another in one Airflow process (the loop's
DAG runs go through it; tests/test_loop.py runs them). Here, commands that need no metadata database: each gets
its own environment additions (and loses them after), its own log, and the exit code the ``airflow`` executable
would have returned."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from datatools.airflow_session import AirflowSession

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    base = tmp_path_factory.mktemp("session")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
    env.update(
        AIRFLOW_HOME=str(base / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    (base / "airflow").mkdir()
    s = AirflowSession(env, base, base / "session.log")
    yield s, base
    s.close()
    assert s.proc.returncode == 0  # it ended at the end of its input, not by a crash


def test_each_command_gets_its_own_settings_log_and_exit_code(session):
    s, base = session
    argv = ["config", "get-value", "core", "parallelism"]
    assert s.run(argv, base / "a.log", {"AIRFLOW__CORE__PARALLELISM": "7"}) == 0
    lines = (base / "a.log").read_text().splitlines()
    assert "7" in lines and "32" not in lines, lines
    assert s.run(argv, base / "b.log", {}) == 0  # the first command's addition is gone: Airflow's default again
    lines = (base / "b.log").read_text().splitlines()
    assert "32" in lines and "7" not in lines, lines
    assert "exit code 0" in lines[-1]


def test_a_failing_command_returns_its_exit_code_and_the_session_goes_on(session):
    s, base = session
    code = s.run(["dags", "test", "no_such_dag", "2026-01-01"], base / "bad.log", {})  # no metadata database here
    assert code != 0
    assert "Please run `airflow db migrate`" in (base / "bad.log").read_text()
    assert s.run(["config", "get-value", "core"], base / "usage.log", {}) == 2  # argparse: an option is missing
    assert "the following arguments are required: option" in (base / "usage.log").read_text()
    assert s.run(["version"], base / "version.log", {}) == 0  # the same process answers the next command
    import airflow

    assert airflow.__version__ in (base / "version.log").read_text().splitlines()
