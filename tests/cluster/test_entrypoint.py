"""docker/entrypoint.sh, the image's entry point: it turns on Spark's shared-secret authentication for every Spark
process of the container (master, worker, spark-submit) from SPARK_AUTH_SECRET, then runs the command.
(test_spark_standalone.py runs a master, a worker and the jobs through it.)"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
SECRET = "s3cret_token-Of.Enough~Length+/="

pytestmark = pytest.mark.timeout(30)


def run(tmp_path: Path, secret: str | None, *command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SPARK_AUTH_SECRET"}
    env["SPARK_CONF_DIR"] = str(tmp_path / "conf")
    if secret is not None:
        env["SPARK_AUTH_SECRET"] = secret
    return subprocess.run(["bash", str(ENTRYPOINT), *command], env=env, capture_output=True, text=True, timeout=20)


def test_writes_the_secret_for_every_spark_process_readable_by_its_user_only(tmp_path):
    done = run(tmp_path, SECRET, "sh", "-c", 'echo "ran as $0 with $1"', "cmd", "arg one")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran as cmd with arg one\n"  # the command runs, arguments intact
    conf = tmp_path / "conf" / "spark-defaults.conf"
    assert conf.read_text().splitlines() == ["spark.authenticate true", f"spark.authenticate.secret {SECRET}"]
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert SECRET not in done.stdout + done.stderr


def test_without_a_secret_it_only_runs_the_command(tmp_path):
    done = run(tmp_path, None, "true")
    assert done.returncode == 0 and not (tmp_path / "conf").exists()


@pytest.mark.parametrize(
    "secret", ["too-short", "back\\slash-in-the-secret", "line\nbreak-in-the-secret", " leading-blank-xx"]
)
def test_refuses_a_secret_the_properties_file_would_change_and_names_the_fix(tmp_path, secret):
    done = run(tmp_path, secret, "touch", str(tmp_path / "ran"))
    assert done.returncode == 2
    assert "SPARK_AUTH_SECRET" in done.stderr and "secrets.token_urlsafe(32)" in done.stderr
    assert secret not in done.stderr  # the value itself is never printed
    assert not (tmp_path / "ran").exists() and not (tmp_path / "conf" / "spark-defaults.conf").exists()
