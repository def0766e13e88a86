"""Shared fixtures: one local SparkSession for the whole test run (JVM start-up is the slow part)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    from attnrec.spark import get_spark

    session = get_spark("attnrec-tests", master="local[2]")
    session.conf.set("spark.sql.shuffle.partitions", "1")
    yield session
    session.stop()
