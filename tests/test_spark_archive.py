"""The Spark driver's class archive (datatools/spark_archive.py, ``attnrec spark-archive``; ``make test`` writes it
before the tests): a job's driver JVM maps it, under spark-submit (the DAGs) and from plain Python alike, and takes
Spark's classes from it instead of the jars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnrec.settings import get_settings

IN_CI = os.environ.get("CI", "").lower() == "true"
JOB = """
from attnrec.spark import get_spark

spark = get_spark("attnrec-archive-check")
assert spark.range(3).count() == 3
spark.stop()
"""
#: What ``-Xlog:class+load`` writes for a class the JVM mapped from the archive (JDK 17: the dynamic archive is "top").
FROM_ARCHIVE = "org.apache.spark.SparkContext source: shared objects file (top)"


@pytest.fixture(scope="module")
def archive() -> str:
    path = get_settings().spark_class_archive
    if not path or not os.path.isfile(path):
        message = f"no class archive at {path!r}: `make test` writes it first (`attnrec spark-archive`)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _env(**extra: str) -> dict[str, str]:
    import pyspark

    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    env.update(SPARK_HOME=str(Path(pyspark.__file__).parent), PYSPARK_PYTHON=sys.executable, **extra)
    return env


def test_a_job_under_spark_submit_loads_spark_from_the_archive(archive, tmp_path):
    from attnrec.spark import driver_java_options
    from datatools.spark_archive import spark_submit

    job = tmp_path / "job.py"
    job.write_text(JOB)
    classes = tmp_path / "classes.log"
    options = f"{driver_java_options(get_settings())} -Xlog:class+load=info:file={classes}"
    assert f"-XX:SharedArchiveFile={archive}" in options
    done = subprocess.run(
        [spark_submit(), "--master", "local[1]", "--conf", f"spark.driver.extraJavaOptions={options}", str(job)],
        env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Unable to use shared archive" not in done.stdout + done.stderr
    assert FROM_ARCHIVE in classes.read_text()


def test_a_job_run_by_python_maps_the_archive_itself(archive, tmp_path):
    job = tmp_path / "job.py"
    job.write_text(JOB)
    classes = tmp_path / "classes.log"
    quick = get_settings().spark_driver_java_options
    done = subprocess.run(
        [sys.executable, str(job)],
        env=_env(ATTNREC_SPARK_DRIVER_JAVA_OPTIONS=f"{quick} -Xlog:class+load=info:file={classes}"),
        capture_output=True, text=True, timeout=300, check=False, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert FROM_ARCHIVE in classes.read_text()


def test_a_failed_recording_run_says_where_its_output_is_and_leaves_no_archive(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from attnrec.cli import app

    target = tmp_path / "classes.jsa"
    # the recording JVM cannot start (spark's launcher lets the JVM ignore unknown -XX options, not a bad stack size)
    monkeypatch.setenv("ATTNREC_SPARK_DRIVER_JAVA_OPTIONS", "-Xss1k")
    result = CliRunner().invoke(app, ["spark-archive", "--output", str(target)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("attnrec spark-archive: the recording run failed (exit 1); its output is in ")
    assert f"{target}.log" in result.stderr and result.stderr.count("\n") == 1
    assert "thread stack size specified is too small" in Path(f"{target}.log").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.jsa.log"]  # no archive, no partial one

    monkeypatch.setenv("ATTNREC_SPARK_CLASS_ARCHIVE", "none")
    result = CliRunner().invoke(app, ["spark-archive"])
    assert (result.exit_code, result.stderr) == (
        2,
        "attnrec spark-archive: ATTNREC_SPARK_CLASS_ARCHIVE is none; pass --output PATH\n",
    )
