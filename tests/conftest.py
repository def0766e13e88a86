"""Shared fixtures: one local SparkSession for the whole test run (JVM start-up is the slow part)."""

from __future__ import annotations

import logging
import os
import sys

import pytest

# py4j logs each connection it closes at INFO, also from finalizers after pytest has closed its capture streams
# ("--- Logging error ---" under the summary): only its warnings, as attnrec.spark does for the jobs
logging.getLogger("py4j").setLevel(logging.WARNING)

#: Small-data settings: on tiny DataFrames, code generation and adaptive planning cost more than they save.
FAST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from attnrec.settings import get_settings
    from attnrec.spark import SESSION_CONF, with_class_archive

    # the Python workers run this interpreter, as attnrec.spark.get_spark arranges for the jobs (a pytest started as
    # .venv/bin/python -m pytest, venv not on PATH, would otherwise start the PATH's python3, without pandas)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = {**SESSION_CONF, **FAST_SPARK_CONF}
    # the class archive `make test` writes, as every job's driver maps it (attnrec.spark.with_class_archive)
    conf["spark.driver.extraJavaOptions"] = with_class_archive(conf["spark.driver.extraJavaOptions"], get_settings())
    builder = SparkSession.builder.master("local[2]").appName("attnrec-tests")
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op thread is fastest and avoids spin-waiting on a shared machine.
    Model test modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
