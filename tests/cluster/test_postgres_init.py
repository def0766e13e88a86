"""docker/postgres-init.sh (the postgres service's init script) run for real against a throw-away PostgreSQL: it
creates the users and databases the services use, with passwords that hold every character SQL or a shell would
treat specially, and the users can then log in with exactly those passwords."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import Postgres

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "postgres-init.sh"
#: a quote ends a spliced SQL literal, $(...) and backticks run in a spliced shell text, :name is a psql variable
HOSTILE = {
    "AIRFLOW_DB_PASSWORD": "it's; DROP DATABASE postgres; -- $(touch pwned) `id` \\ :mlflow_password",
    "MLFLOW_DB_PASSWORD": "o'hara\"s $HOME %s \\' ;",
}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A PostgreSQL of its own: the script creates the users ``airflow`` and ``mlflow``, which the session's shared
    server (tests/cluster/conftest.py) hands out to other tests."""
    pg = Postgres(tmp_path_factory.mktemp("pg-init"))
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


def _psql(pg: Postgres, user: str, password: str, db: str, sql: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": password}
    cmd = [str(pg.bin / "psql"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", user, "-d", db, "-At", "-c", sql]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)


def test_init_script_creates_users_whose_passwords_are_never_spliced_into_sql(server, tmp_path):
    env = {
        **os.environ,
        **HOSTILE,
        "PATH": f"{server.bin}{os.pathsep}{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGPASSWORD": server.password,
    }
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing in a password ran as a command

    for user, db, variable in (
        ("airflow", "airflow", "AIRFLOW_DB_PASSWORD"),
        ("mlflow", "mlflow", "MLFLOW_DB_PASSWORD"),
        ("mlflow", "mlflow_auth", "MLFLOW_DB_PASSWORD"),
    ):
        login = _psql(server, user, HOSTILE[variable], db, "SELECT current_user, current_database()")
        assert login.returncode == 0, login.stderr
        assert login.stdout.split() == [f"{user}|{db}"]
        assert _psql(server, user, "wrong", db, "SELECT 1").returncode != 0
    owners = server.psql(
        "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname LIKE 'airflow%' OR datname LIKE "
        "'mlflow%' ORDER BY datname"
    )
    assert owners.split() == ["airflow|airflow", "mlflow|mlflow", "mlflow_auth|mlflow"]
    assert "postgres" in server.psql("SELECT datname FROM pg_database").split()  # the DROP stayed a password


def test_init_script_refuses_a_missing_password_by_name(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in HOSTILE}
    env["AIRFLOW_DB_PASSWORD"] = "set"
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "set MLFLOW_DB_PASSWORD in .env" in done.stderr


def test_init_script_has_no_shell_expansion_in_its_sql():
    """The SQL is a quoted here-document (no $VAR expansion inside) that reads the passwords with \\getenv."""
    text = SCRIPT.read_text()
    assert re.search(r"<<'SQL'\n", text)
    sql = text.split("<<'SQL'\n", 1)[1]
    assert "$" not in sql
    assert "WITH PASSWORD :'airflow_password';" in sql and "WITH PASSWORD :'mlflow_password';" in sql
