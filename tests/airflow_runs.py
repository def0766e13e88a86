"""``airflow dags test`` for the integration test modules: a module's runs go one after another through one Airflow
process (datatools/airflow_session.py, as the loop runs them), so Airflow's start-up is paid once per module.

Each run is Airflow's own ``dags test`` command with the ATTNREC_* settings of the ``env`` it is given (an
experiment's, say) for that run only; its output (what the command printed to stdout and stderr) is kept in
``$AIRFLOW_HOME/dags-test/NN-<dag_id>.log``, inside the Airflow home and outside its task logs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from datatools.airflow_session import AirflowSession

REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Run:
    """One ``airflow dags test``: its exit code and its whole output."""

    returncode: int
    output: str


class DagTests:
    """The Airflow session of one test module's Airflow home (``env["AIRFLOW_HOME"]``, already migrated)."""

    def __init__(self, env: dict[str, str]):
        self.home = Path(env["AIRFLOW_HOME"])
        self.logs = self.home / "dags-test"
        self.logs.mkdir()
        path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)  # this checkout's code
        self.session = AirflowSession({**env, "PYTHONPATH": path}, self.home, self.home / "session.log")

    def __call__(self, env: dict[str, str], dag_id: str, dt: str, *args: str) -> Run:
        """``airflow dags test dag_id dt *args`` with the ATTNREC_* settings of ``env``."""
        if Path(env["AIRFLOW_HOME"]) != self.home:
            raise ValueError(f"env's AIRFLOW_HOME {env['AIRFLOW_HOME']} is not this session's ({self.home})")
        log = self.logs / f"{len(list(self.logs.iterdir())):02d}-{dag_id}.log"
        settings = {k: v for k, v in env.items() if k.startswith("ATTNREC_")}
        code = self.session.run(["dags", "test", dag_id, dt, *args], log, settings)
        return Run(code, log.read_text(encoding="utf-8", errors="replace"))

    def close(self) -> None:
        self.session.close()
