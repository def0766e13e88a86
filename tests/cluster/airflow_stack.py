"""The Airflow tier of the cluster as local processes: ``airflow api-server``, ``scheduler`` (LocalExecutor) and
``dag-processor`` on 127.0.0.1, metadata in PostgreSQL, a fresh AIRFLOW_HOME whose ``dags`` is the repo's dags/.

With ``edge_queue`` it is also configured as docker-compose.yml's GPU profile: the scheduler runs LocalExecutor and
the Edge provider's EdgeExecutor, the API server serves the Edge worker API, ATTNREC_TRAIN_EXECUTOR /
ATTNREC_TRAIN_QUEUE route train_recommender's ``train`` task there, and ``airflow edge worker --queues
<edge_queue>`` (the compose ``trainer`` service's command) runs beside them, with its own checkpoint and log
directories.

Authentication is Airflow 3's default Simple auth manager with one admin user whose password is generated here
and written to the passwords file before the API server starts (so Airflow never prints a generated one). The
REST client below gets a JWT from ``POST /auth/token`` and talks to ``/api/v2`` as that user.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from .conftest import VENV_BIN, free_port, start, stop, wait_http

REPO = Path(__file__).resolve().parents[2]
USERNAME = "attnrec_admin"
TERMINAL = {"success", "failed"}
EDGE_EXECUTOR = "airflow.providers.edge3.executors.EdgeExecutor"


class AirflowStack:
    """One Airflow deployment on a PostgreSQL database; :meth:`start` then :meth:`stop` (always)."""

    def __init__(
        self, base: Path, sql_alchemy_conn: str, extra_env: dict[str, str] | None = None, edge_queue: str | None = None
    ):
        self.base = base
        self.edge_queue = edge_queue
        self.edge_hostname = f"attnrec-trainer-{os.getpid()}"  # the name the Edge worker registers under
        self.home = base / "airflow"
        self.data_root = base / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(18)
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sql_alchemy_conn,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__CORE__FERNET_KEY=_fernet_key(),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USERNAME}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.home / "passwords.json"),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
            # the scheduler signs the tasks' tokens and the API server checks them: one secret for both
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            # only runs that someone asks for (REST, UI, backfill): no cron run for "yesterday" on unpause
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            # the DAG files do not change during a test; re-parsing every 30 s only costs CPU on a small machine
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="600",
            ATTNREC_DATA_ROOT=str(self.data_root),
            ATTNREC_CHECKPOINT_DIR=str(base / "checkpoints"),
            MLFLOW_TRACKING_URI=f"sqlite:///{base / 'mlflow.db'}",
            ATTNREC_MLFLOW_ARTIFACTS=(base / "mlartifacts").as_uri(),
            ATTNREC_SPARK_DRIVER_MEMORY="1g",
            # C1-only JIT and the serial GC: a short-lived driver JVM on tiny data starts and runs faster
            SPARK_SUBMIT_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        )
        if edge_queue:
            env.update(
                # the first executor is the default (every task that names none); the train task names EdgeExecutor
                AIRFLOW__CORE__EXECUTOR=f"LocalExecutor,{EDGE_EXECUTOR}",
                AIRFLOW__EDGE__API_ENABLED="True",
                AIRFLOW__EDGE__API_URL=f"{self.url}/edge_worker/v1/rpcapi",
                AIRFLOW__EDGE__JOB_POLL_INTERVAL="2",
                ATTNREC_TRAIN_EXECUTOR="EdgeExecutor",
                ATTNREC_TRAIN_QUEUE=edge_queue,
            )
        env.update(extra_env or {})
        self.env = env
        # as in compose, only the trainer has its checkpoint directory (a volume there), and its task logs stay in its
        # own container: what the API server shows of them, the worker pushed over HTTP
        self.trainer_checkpoints = base / "trainer-checkpoints"
        self.edge_env = {
            **env,
            "ATTNREC_CHECKPOINT_DIR": str(self.trainer_checkpoints),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(base / "trainer-logs"),
        }

    # --- processes -------------------------------------------------------------------------------------------
    def airflow(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run an ``airflow`` CLI command against this deployment's metadata database."""
        done = subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )
        if check and done.returncode:
            raise AssertionError(
                f"airflow {' '.join(args)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
            )
        return done

    def start(self) -> None:
        self.home.mkdir(parents=True)
        (self.home / "dags").symlink_to(REPO / "dags")  # Airflow's default dags folder, $AIRFLOW_HOME/dags
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({USERNAME: self.password}) + "\n")
        passwords.chmod(0o600)
        self.airflow("db", "migrate", timeout=400)
        for name, cmd in (
            ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
        ):
            self.procs[name] = start([str(VENV_BIN / "airflow"), *cmd], self.log(name), self.env)
        wait_http(
            f"{self.url}/api/v2/monitor/health", 180, self.procs["api-server"], self.log("api-server"), ready=_healthy
        )
        if self.edge_queue:  # after the API it registers with is up (it retries with back-off for minutes otherwise)
            self.procs["edge-worker"] = start(
                [
                    str(VENV_BIN / "airflow"),
                    "edge",
                    "worker",
                    "--queues",
                    self.edge_queue,
                    "--concurrency",
                    "1",
                    "--edge-hostname",
                    self.edge_hostname,
                ],
                self.log("edge-worker"),
                self.edge_env,
            )
        self.wait_for(
            lambda: (
                {d["dag_id"] for d in self.get("/api/v2/dags")["dags"]}
                >= {"behavior_etl", "train_recommender", "nightly_candidates"}
            ),
            180,
            "the three DAGs parsed",
        )

    def log(self, name: str) -> Path:
        return self.base / f"{name}.log"

    def stop(self) -> None:
        for name in ("edge-worker", "scheduler", "dag-processor", "api-server"):
            stop(self.procs.get(name), timeout=15)

    def tails(self, chars: int = 2500) -> str:
        out = []
        for name in self.procs:
            text = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
            out.append(f"--- {name}.log (last {chars} chars) ---\n{text[-chars:]}")
        return "\n".join(out)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        if dead:
            pytest.fail(f"Airflow processes exited: {dead}\n{self.tails()}")

    # --- REST API --------------------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            body = self._request("POST", "/auth/token", {"username": USERNAME, "password": self.password}, auth=False)
            self._token = body["access_token"]
        return self._token

    def _request(self, method: str, path: str, payload: dict | None = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path} -> {err.code}: {err.read()[:1000]!r}") from None

    def status(self, method: str, path: str, payload: dict | None = None, token: str | None = "default") -> int:
        """Only the HTTP status of a request (with this user's token, another ``token`` or none)."""
        headers = {"Content-Type": "application/json"}
        if token == "default":
            token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, payload: dict) -> Any:
        return self._request("POST", path, payload)

    def patch(self, path: str, payload: dict) -> Any:
        return self._request("PATCH", path, payload)

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]

    def run_for(self, dag_id: str, ds: str) -> dict | None:
        found = [r for r in self.runs(dag_id) if (r.get("logical_date") or "").startswith(ds)]
        assert len(found) <= 1, f"more than one {dag_id} run for {ds}: {found}"
        return found[0] if found else None

    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str, every: float = 2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.tails()}")
            time.sleep(every)

    def wait_run(self, dag_id: str, ds: str, timeout: float) -> dict:
        """The run of ``dag_id`` for day ``ds`` once it is finished (success or failed)."""

        def finished():
            run = self.run_for(dag_id, ds)
            return run if run and run["state"] in TERMINAL else None

        return self.wait_for(finished, timeout, f"{dag_id} run for {ds} to finish", every=3)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}


def _healthy(body: bytes) -> bool:
    health = json.loads(body)
    return all(
        health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "dag_processor")
    )


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
