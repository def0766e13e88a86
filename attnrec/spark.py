"""The one place a SparkSession is built for attnrec jobs.

Under ``spark-submit`` the master and resources come from the submit command (the Airflow Spark
connection), so this only fills in the attnrec session defaults. Run as plain ``python jobs/x.py``,
the job uses ``ATTNREC_SPARK_MASTER`` (default ``local[*]``), ``ATTNREC_SPARK_DRIVER_MEMORY``,
``ATTNREC_SPARK_DRIVER_JAVA_OPTIONS`` and ``ATTNREC_SPARK_PYTHON`` (the Python workers' interpreter).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

#: Session settings every attnrec job relies on: UTC times, no surprises from ANSI casts we guard ourselves.
SESSION_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "16",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.ui.showConsoleProgress": "false",
}


def sql_strings(values) -> str:
    """``'a', 'b'``: string literals for a Spark SQL ``IN (...)`` list, quotes escaped; ``NULL`` for no values (an
    ``IN (NULL)`` matches nothing)."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values) or "NULL"


def without_dictionary(writer, columns):
    """``writer`` (a ``DataFrameWriter``) with Parquet's dictionary encoding off for ``columns`` (column paths; an
    array's elements are ``name.list.element``): columns whose values hardly repeat (ids, times, measurements). The
    writer hashes every value into a dictionary until it passes 1 MB and then writes plain values anyway, per row
    group: a fifth to a quarter of writing a day's events went into that, and the files come out no larger
    (docs/benchmarks.md#etl). Rows are the same; only the page encoding differs."""
    for column in columns:
        writer = writer.option(f"parquet.enable.dictionary#{column}", "false")
    return writer


def without_statistics(writer, columns):
    """``writer`` (a ``DataFrameWriter``) without Parquet's min/max statistics for ``columns``: for a work copy that
    no reader filters on those columns, where the writer would compare every value with the page's and the row
    group's bounds for nothing (long texts such as a raw line most of all; docs/benchmarks.md#etl)."""
    for column in columns:
        writer = writer.option(f"parquet.column.statistics.enabled#{column}", "false")
    return writer


@contextmanager
def session_conf(spark, conf: dict[str, str]):
    """``conf`` set on ``spark``'s session for the queries run inside the block, the previous values back after it.
    A query reads the settings when it runs, so this is for the query the block runs itself (not for queries of
    other threads started meanwhile: they may see either value)."""
    previous = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def launched_by_spark_submit() -> bool:
    """pyspark sets PYSPARK_GATEWAY_PORT in the Python driver that spark-submit launches (it joins that JVM)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def driver_java_options(settings, input_bytes: int | None = None) -> str:
    """The driver JVM's options for a job reading ``input_bytes`` of raw events (None: not sized): a large day
    (``ATTNREC_SPARK_LARGE_DAY_BYTES`` or more) gets ``ATTNREC_SPARK_LARGE_DAY_JAVA_OPTIONS`` (full JIT, throughput
    GC), anything else ``ATTNREC_SPARK_DRIVER_JAVA_OPTIONS`` (quick start). Measured in docs/benchmarks.md#etl."""
    threshold = settings.spark_large_day_bytes
    if input_bytes is not None and threshold and input_bytes >= threshold:
        return with_class_archive(settings.spark_large_day_java_options, settings)
    return with_class_archive(settings.spark_driver_java_options, settings)


def with_class_archive(java_options: str, settings) -> str:
    """``java_options`` and, while ``ATTNREC_SPARK_CLASS_ARCHIVE`` is a file, ``-XX:SharedArchiveFile`` of it: the
    driver JVM maps the classes Spark loads at start from that archive instead of reading and verifying them from the
    jars (seconds less per job; `attnrec spark-archive` writes it, docs/benchmarks.md#etl). Options that name an
    archive already are kept as they are. A JVM whose classpath or build differs from the archive's prints one
    warning and starts without it; a missing file (a cluster node without it) is ignored."""
    archive = settings.spark_class_archive
    if not archive or "SharedArchiveFile" in java_options or "ArchiveClassesAtExit" in java_options:
        return java_options
    if not os.path.isfile(archive):
        return java_options
    option = f"-XX:SharedArchiveFile={archive}"
    if any(c.isspace() for c in archive):  # spark splits extraJavaOptions like a shell: quoted, one option
        option = f'"{option}"'
    return f"{java_options} {option}".strip()


def get_spark(app_name: str, master: str | None = None, input_bytes: int | None = None):
    """Build (or reuse) the session. ``master`` and the driver's JVM options (:func:`driver_java_options` for
    ``input_bytes``) apply only outside spark-submit, which starts the JVM itself (dags/wiring.py sets them there)."""
    from pyspark.sql import SparkSession

    from attnrec.settings import get_settings

    builder = SparkSession.builder.appName(app_name)
    if not launched_by_spark_submit():
        settings = get_settings()
        builder = builder.master(master or settings.spark_master)
        builder = builder.config("spark.driver.memory", settings.spark_driver_memory)
        # the Python workers run this job's interpreter (ATTNREC_SPARK_PYTHON), not whichever `python3` is first on
        # PATH: `.venv/bin/python jobs/clean.py` without an activated venv would start workers without pandas. pyspark
        # reads only its environment variable here (the spark.pyspark.python conf is spark-submit's); where the
        # variable is set already, it stays in charge
        os.environ.setdefault("PYSPARK_PYTHON", settings.spark_python)
        java_options = driver_java_options(settings, input_bytes)
        if java_options:  # under spark-submit its --conf sets them (dags/wiring.py)
            builder = builder.config("spark.driver.extraJavaOptions", java_options)
        if settings.spark_executor_java_options:  # a cluster's executors (ATTNREC_SPARK_MASTER not local)
            builder = builder.config("spark.executor.extraJavaOptions", settings.spark_executor_java_options)
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    # py4j logs each connection it closes at INFO, also from finalizers at interpreter exit, when a test runner or
    # a task has already closed the log stream ("--- Logging error ---" with a traceback): only its warnings
    logging.getLogger("py4j").setLevel(logging.WARNING)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
