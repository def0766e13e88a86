"""Helpers for the cluster tests: free loopback ports, process groups that are always stopped, HTTP waits,
and a session-scoped PostgreSQL server run from Debian's package as an unprivileged user."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

VENV_BIN = Path(sys.prefix) / "bin"  # the virtualenv running the tests (spark-class, mlflow, airflow)
IN_CI = os.environ.get("CI", "").lower() == "true"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None, user: str | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so :func:`stop` also ends its children), output to ``log``."""
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    out = open(log, "ab")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        out.close()


def stop(proc: subprocess.Popen | None, timeout: float = 5) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``timeout`` seconds."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            # the leader is gone; children in the group may not be
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None, ready=lambda body: True
) -> bytes:
    """GET ``url`` until it answers 200 and ``ready(body)`` holds; fail with the server log otherwise."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = resp.read()
                if resp.status == 200 and ready(body):
                    return body
                last = f"status {resp.status}: {body[:200]!r}"
        except OSError as err:
            last = repr(err)
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    pytest.fail(f"{url} not ready within {timeout}s (last: {last}; exit code {proc and proc.poll()})\n{tail}")


def json_of(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def chromium() -> str:
    """Debian's Chromium, which the UI tests drive through Playwright (``playwright install`` is never used); a skip
    naming the package when it is missing, a failure on CI."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if not found:
        message = (
            "Chromium not found; install Debian's package (`apt-get install -y chromium`, .ci/run does this on CI). "
            "Playwright drives that browser; `playwright install` is never used"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        message = (
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/pg_ctl); install them with "
            "`apt-get update && apt-get install -y postgresql` (.ci/run does this on CI)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return Path(found[-1]).parent


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:<free port>, socket in its own temp dir."""

    def __init__(self, base: Path):
        self.bin = _pg_bin()
        self.base = base
        self.port = free_port()
        self.user = None if os.geteuid() != 0 else "postgres"
        if self.user:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                pytest.fail(
                    "running as root needs the unprivileged 'postgres' user (created by the postgresql "
                    "package) to run initdb/pg_ctl"
                )
        self.data = base / "pgdata"
        self.log = base / "postgres.log"
        self.password = "pw-" + os.urandom(8).hex()

    def _run(self, *args: str, input: str | None = None) -> str:
        cmd = [*(["runuser", "-u", self.user, "--"] if self.user else []), *args]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.user:
            uid = pwd.getpwnam(self.user).pw_uid
            os.chown(self.base, uid, -1)
            # the parents (pytest's tmp dirs are 0700 root) must be traversable by the server user
            for parent in self.base.parents:
                if parent == Path("/") or parent == Path("/tmp"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            "--pwfile",
            str(pwfile),
            "-E",
            "UTF8",
            "--no-sync",
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-k {self.base} -h 127.0.0.1 -p {self.port} -c fsync=off",
            "start",
        )

    def psql(self, sql: str, db: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        if done.returncode:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout

    def create_db(self, name: str) -> str:
        """A database and owner ``name`` (password = the cluster's); returns its SQLAlchemy URL."""
        self.psql(f"CREATE USER {name} WITH PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {name} OWNER {name}")
        return f"postgresql+psycopg2://{name}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Immediate shutdown (the data is throw-away); SIGKILL the postmaster if pg_ctl cannot."""
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass  # already gone


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """One PostgreSQL server for the cluster tests; each test creates its own database in it."""
    server = Postgres(tmp_path_factory.mktemp("pg"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
