"""The Spark jobs on a real standalone cluster (one master, one worker, as local processes on 127.0.0.1),
submitted with ``spark-submit jobs/clean.py`` / ``jobs/featurize.py`` as the compose topology runs them, give
the same staged outputs row for row as the same job code on the in-process ``local[2]`` session (the shared
``spark`` fixture, which saves two JVM start-ups on this small machine) on a copy of the same raw day.

Every process starts through the image's entry point (docker/entrypoint.sh) with a SPARK_AUTH_SECRET, as in
compose: the cluster runs with ``spark.authenticate``, and a driver without the secret is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnrec import lake

from .conftest import VENV_BIN, free_port, json_of, start, stop, wait_http

ROOT = Path(__file__).resolve().parents[2]
DT = "2026-01-31"
ENTRYPOINT = ["bash", str(ROOT / "docker" / "entrypoint.sh")]  # what the image runs every command through
SECRET = "test-" + os.urandom(16).hex()

pytestmark = pytest.mark.timeout(300)


def _env(tmp: Path, data_root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(tmp / "work"),
        "SPARK_LOG_DIR": str(tmp / "logs"),
        "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": sys.executable,
        "ATTNREC_DATA_ROOT": str(data_root),
        "SPARK_AUTH_SECRET": SECRET,
        "SPARK_CONF_DIR": str(tmp / "conf"),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, master UI URL) of a running 1-worker standalone cluster; both stopped afterwards."""
    tmp = tmp_path_factory.mktemp("spark-cluster")
    port, ui, worker_ui = free_port(), free_port(), free_port()
    env = _env(tmp, tmp / "unused")
    java_opts = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    env["SPARK_DAEMON_JAVA_OPTS"] = java_opts
    env["SPARK_DAEMON_MEMORY"] = "256m"
    master = worker = None
    try:
        master = start(
            [
                *ENTRYPOINT,
                str(VENV_BIN / "spark-class"),
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            tmp / "master.log",
            env,
        )
        url = f"http://127.0.0.1:{ui}/json/"
        wait_http(url, 90, master, tmp / "master.log")
        worker = start(
            [
                *ENTRYPOINT,
                str(VENV_BIN / "spark-class"),
                "org.apache.spark.deploy.worker.Worker",
                f"spark://127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--webui-port",
                str(worker_ui),
            ],
            tmp / "worker.log",
            env,
        )
        wait_http(
            url,
            90,
            worker,
            tmp / "worker.log",
            ready=lambda body: b'"aliveworkers" : 1' in body or b'"aliveworkers":1' in body,
        )
        yield f"spark://127.0.0.1:{port}", url, tmp
    finally:
        stop(worker)
        stop(master)


def submit(master: str, job: str, data_root: Path, tmp: Path) -> None:
    cmd = [
        *ENTRYPOINT,
        str(VENV_BIN / "spark-submit"),
        "--master",
        master,
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        f"spark.pyspark.driver.python={sys.executable}",
        "--conf",
        "spark.ui.enabled=false",
        # small data: compiling generated code costs more than it saves (as in tests/conftest.py)
        "--conf",
        "spark.sql.codegen.wholeStage=false",
        "--conf",
        "spark.sql.codegen.factoryMode=NO_CODEGEN",
        "--conf",
        "spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "--conf",
        "spark.executor.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "--driver-memory",
        "512m",
        "--executor-memory",
        "512m",
        str(ROOT / "jobs" / job),
        "--dt",
        DT,
        "--data-root",
        str(data_root),
    ]
    done = subprocess.run(
        cmd, env=_env(tmp, data_root), capture_output=True, text=True, timeout=180, start_new_session=True
    )
    assert done.returncode == 0, f"{job} on {master} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def rows(root: Path, dataset: str, key: tuple[str, ...]) -> list[dict]:
    """Rows of a staged partition as sorted dicts; quarantine's source_file reduced to the file name (the
    two lakes live in different directories)."""
    import pyarrow.parquet as pq

    table = pq.read_table(lake.staging(str(root), dataset, DT))
    out = table.to_pylist()
    for row in out:
        if "source_file" in row:
            row["source_file"] = Path(row["source_file"]).name
    return sorted(out, key=lambda r: tuple(str(r[k]) for k in key))


def from_settings(params_cls, settings):
    """The job's params as its main() builds them: every field but dt taken from the settings of that name."""
    import dataclasses

    return {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(params_cls)
        if f.name != "dt" and hasattr(settings, f.name)
    }


def run_locally(spark, root: Path) -> None:
    """clean then featurize for DT through the jobs' own functions (what their main() does) on ``spark``."""
    from attnrec.settings import get_settings
    from jobs import clean, featurize

    settings = get_settings()
    clean.run(spark, str(root), clean.CleanParams(dt=DT, **from_settings(clean.CleanParams, settings)))
    params = featurize.FeatureParams(dt=DT, **from_settings(featurize.FeatureParams, settings))
    featurize.run(spark, str(root), params)


def test_standalone_cluster_matches_local_mode(cluster, spark, tmp_path):
    from datatools.generate import generate

    master, ui_json, tmp = cluster
    on_cluster, on_local = tmp_path / "lake-cluster", tmp_path / "lake-local"
    generate(
        str(on_cluster), DT, days=1, users=40, items=30, events_per_day=600, seed=11, bad_fraction=0.05, files_per_day=2
    )
    shutil.copytree(on_cluster / "raw", on_local / "raw")

    t0 = time.monotonic()
    for job in ("clean.py", "featurize.py"):
        submit(master, job, on_cluster, tmp)
    cluster_s = time.monotonic() - t0
    # the same pseudonym key (the cluster's clean made the lake's key file): the same ids get the same pseudonyms
    shutil.copytree(on_cluster / "_secrets", on_local / "_secrets")
    run_locally(spark, on_local)

    # both applications really ran on the standalone cluster, with executors on its worker
    state = json_of(ui_json)
    names = sorted(app["name"] for app in state["completedapps"])
    assert names == [f"attnrec-clean-{DT}", f"attnrec-featurize-{DT}"], state["completedapps"]
    assert any((tmp / "work").glob("app-*/*/stdout")), "no executor ran on the worker"

    checks = [
        (lake.CLEAN_EVENTS, ("event_id",)),
        (lake.QUARANTINE_EVENTS, ("source_file", "raw_line", "reason")),
        (lake.FEATURE_SEQUENCES, ("user_id",)),
        (lake.FEATURE_ITEMS, ("item_idx",)),
    ]
    for dataset, key in checks:
        a, b = rows(on_cluster, dataset, key), rows(on_local, dataset, key)
        assert len(a) > 0, dataset
        assert a == b, dataset
    recon = [
        lake.read_json(lake.join(lake.staging(str(r), lake.CLEAN_EVENTS, DT), lake.RECONCILIATION_FILE))
        for r in (on_cluster, on_local)
    ]
    assert recon[0] == recon[1]
    assert recon[0]["raw_lines"] == 600 and recon[0]["quarantined"] >= 1
    print(f"standalone clean+featurize: {cluster_s:.1f}s")


def test_a_driver_without_the_secret_is_refused(cluster, tmp_path):
    """spark.authenticate on the master: an application submitted without the shared secret never registers."""
    master, ui_json, _ = cluster
    app = tmp_path / "intruder.py"
    app.write_text("from pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate().range(3).count()\n")
    env = {k: v for k, v in _env(tmp_path, tmp_path / "unused").items() if k != "SPARK_AUTH_SECRET"}
    env["SPARK_CONF_DIR"] = str(tmp_path / "no-conf")  # no spark-defaults.conf: no secret
    cmd = [
        str(VENV_BIN / "spark-submit"),
        "--master",
        master,
        "--name",
        "intruder",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--driver-memory",
        "512m",
        str(app),
    ]
    # the master refuses the connection at once; the driver would retry three times, 20 s apart, before giving up,
    # so the test stops it once the refusal is in its log
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen: list[str] = []
    try:
        for line in proc.stderr:  # ends when the driver exits (by itself after about a minute)
            seen.append(line)
            if "Expected SaslMessage" in line:  # the master's SASL handshake refused the secret-less client
                break
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
    log = "".join(seen)
    assert "Failed to connect to master" in log and "Expected SaslMessage" in log, log[-3000:]
    state = json_of(ui_json)
    assert "intruder" not in [a["name"] for a in state["activeapps"] + state["completedapps"]]
