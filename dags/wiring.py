"""What the DAG files share: the features Asset, default args, task routing and the Spark-submit task factory.

Imported by DAG files at parse time, so it stays cheap: standard library, ``pendulum``, ``airflow.sdk`` and
``attnrec.settings`` at the top (the Spark provider's operator and Airflow's executor lookup inside the functions);
settings come from :func:`attnrec.settings.get_settings` (the environment: no I/O, no Variables). Listed in
``.airflowignore``: the DAG processor imports it through the DAG files, never parses it as a DAG file.
"""

from __future__ import annotations

import datetime as dt_
import json
import os
import sys
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Asset

from attnrec.settings import PROJECT_ROOT, get_settings

#: Published by behavior_etl when features/*/dt=D are in place; train_recommender is scheduled on it.
#: Each event's ``extra`` carries ``{"dt": "YYYY-MM-DD"}``: the feature partition to train on.
FEATURES_ASSET = Asset(name="attnrec_features", uri="attnrec://features")

#: Earliest logical date the DAGs accept. Historical logs (MovieLens is from 1997-98) must be runnable and
#: backfillable; catchup is off, so an early start date schedules nothing by itself.
START_DATE = pendulum.datetime(1990, 1, 1, tz="UTC")

#: The connection the embedded default uses when the connection named by ATTNREC_SPARK_CONN_ID
#: (default ``attnrec_spark``) is not defined anywhere: Spark in-process on this machine.
DEFAULT_SPARK_CONNECTION = {"conn_type": "spark", "host": "local[*]"}


def default_args() -> dict[str, Any]:
    """Every task's defaults: ATTNREC_TASK_RETRIES retries (default 0), two minutes apart."""
    return {"owner": "attnrec", "retries": get_settings().task_retries, "retry_delay": dt_.timedelta(minutes=2)}


def train_task_routing() -> dict[str, str]:
    """``executor`` / ``queue`` arguments for train_recommender's ``train`` task, from ATTNREC_TRAIN_EXECUTOR and
    ATTNREC_TRAIN_QUEUE; ``{}`` when both are unset (the default executor and queue, as every other task).

    Airflow refuses a whole DAG whose task names an executor missing from ``[core] executor``, with a message
    that does not say where the name came from; this checks first, against the same lookup, and names the
    setting and the fix. The check reads configuration only (no database, no I/O).
    """
    settings = get_settings()
    routing = {}
    if settings.train_executor:
        from airflow.configuration import conf
        from airflow.exceptions import UnknownExecutorException
        from airflow.executors.executor_loader import ExecutorLoader

        try:
            ExecutorLoader.lookup_executor_name_by_str(settings.train_executor, validate_teams=False)
        except UnknownExecutorException:
            configured = conf.get("core", "executor")
            raise ValueError(
                f"ATTNREC_TRAIN_EXECUTOR={settings.train_executor!r} is not one of the executors Airflow runs "
                f"([core] executor = {configured!r}); add it there, e.g. AIRFLOW__CORE__EXECUTOR="
                "'LocalExecutor,airflow.providers.edge3.executors.EdgeExecutor', name one of those (alias, class "
                "name or module path), or unset ATTNREC_TRAIN_EXECUTOR to train on the default executor"
            ) from None
        routing["executor"] = settings.train_executor
    if settings.train_queue:
        routing["queue"] = settings.train_queue
    return routing


def sensor_timeout() -> dt_.timedelta:
    """How long a task waits for its input partitions (``ATTNREC_WAIT_TIMEOUT_HOURS``, default 6) before failing."""
    return dt_.timedelta(hours=get_settings().wait_timeout_hours)


def sensor_poke_interval() -> float:
    """Seconds between two pokes of a sensor: five minutes, or the whole timeout when that is shorter."""
    return min(300.0, sensor_timeout().total_seconds())


def fail_when_waited_too_long(missing: list[str], fix: str) -> None:
    """Inside a reschedule-mode sensor that still misses ``missing``: once it has waited :func:`sensor_timeout`,
    fail with AirflowSensorTimeout naming what is missing and ``fix`` (Airflow's own timeout names nothing)."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSensorTimeout

    context = get_current_context()
    first = context["ti"].get_first_reschedule_date(context)  # None on the first poke
    waited = 0.0 if first is None else (pendulum.now("UTC") - first).total_seconds()
    limit = sensor_timeout().total_seconds()
    if waited >= limit:
        raise AirflowSensorTimeout(
            f"waited {waited:.0f}s (ATTNREC_WAIT_TIMEOUT_HOURS={limit / 3600:g}) and still not published: "
            f"{', '.join(missing)}; {fix}"
        )


def missing_partitions(root: str, datasets: tuple[str, ...], dt: str) -> list[str]:
    """The partitions of ``datasets`` for ``dt`` that are not yet published (no completion marker)."""
    from attnrec import lake

    return [path for path in (lake.partition(root, d, dt) for d in datasets) if not lake.is_complete(path)]


def ensure_default_spark_connection() -> str:
    """Make the embedded Spark connection available when nobody defined one; return the conn id.

    Only the default id ``attnrec_spark`` gets an embedded fallback, through the standard
    ``AIRFLOW_CONN_ATTNREC_SPARK`` variable, which a user's own value overrides. On a cluster, set that
    variable (e.g. ``spark://spark-master:7077``) or point ATTNREC_SPARK_CONN_ID at a connection made in
    the UI.
    """
    conn_id = get_settings().spark_conn_id
    if conn_id == "attnrec_spark":
        os.environ.setdefault("AIRFLOW_CONN_ATTNREC_SPARK", json.dumps(DEFAULT_SPARK_CONNECTION))
    return conn_id


def _spark_submit_env() -> dict[str, str]:
    """PATH and SPARK_HOME for spark-submit when Airflow runs from a virtualenv that is not activated.

    ``spark-submit`` from the pyspark wheel locates Spark through the ``python3`` on PATH; put this
    interpreter's bin directory first, and default SPARK_HOME to the installed pyspark (a user's own
    SPARK_HOME, e.g. a cluster's Spark distribution, wins).
    """
    import importlib.util

    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if "SPARK_HOME" not in os.environ:
        spec = importlib.util.find_spec("pyspark")  # locates the package without importing it
        if spec and spec.submodule_search_locations:
            env["SPARK_HOME"] = list(spec.submodule_search_locations)[0]
    return env


def _submit_conf(settings) -> dict[str, str]:
    """spark-submit ``--conf`` of every job: the Python to run, the log level, the driver's JVM options
    (ATTNREC_SPARK_DRIVER_JAVA_OPTIONS, with the class archive when there is one; the driver JVM starts before the job's
    code, so only here can they apply) and the executors' (ATTNREC_SPARK_EXECUTOR_JAVA_OPTIONS)."""
    from attnrec.spark import driver_java_options

    python = settings.spark_python
    conf = {"spark.pyspark.python": python, "spark.pyspark.driver.python": python, "spark.log.level": "WARN"}
    java_options = driver_java_options(settings)
    if java_options:
        conf["spark.driver.extraJavaOptions"] = java_options
    if settings.spark_executor_java_options:
        conf["spark.executor.extraJavaOptions"] = settings.spark_executor_java_options
    return conf


def raw_day_java_options(dt: str) -> str:
    """The driver JVM options for a job on day ``dt``'s raw events, by their size (:func:`attnrec.spark.
    driver_java_options`); a DAG macro (``user_defined_macros``) that :func:`spark_job`'s ``sized_by_raw_day`` uses."""
    from attnrec import lake
    from attnrec.spark import driver_java_options

    settings = get_settings()
    return driver_java_options(settings, lake.raw_day_bytes(settings.data_root, dt))


#: The DAG macros a DAG with a ``sized_by_raw_day`` job passes as ``user_defined_macros``.
SPARK_MACROS = {"raw_day_java_options": raw_day_java_options}


def spark_job(
    task_id: str,
    job: str,
    dt_template: str = "{{ ds }}",
    extra_args: list[str] | None = None,
    sized_by_raw_day: bool = False,
):
    """A SparkSubmitOperator for ``jobs/<job>.py --dt <logical date>`` on the attnrec Spark connection.
    ``sized_by_raw_day``: the driver's JVM options follow the size of the logical day's raw events
    (:func:`raw_day_java_options`, rendered when the task runs; the DAG passes :data:`SPARK_MACROS`)."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    settings = get_settings()
    env = {"ATTNREC_DATA_ROOT": settings.data_root, **_spark_submit_env()}
    conf = _submit_conf(settings)
    if sized_by_raw_day:
        conf["spark.driver.extraJavaOptions"] = "{{ raw_day_java_options(ds) }}"
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(PROJECT_ROOT / "jobs" / f"{job}.py"),
        application_args=["--dt", dt_template, *(extra_args or [])],
        conn_id=ensure_default_spark_connection(),
        name=f"attnrec-{job}",
        driver_memory=settings.spark_driver_memory,
        conf=conf,
        env_vars=env,
        verbose=False,
    )


def feature_dt_from_context(context: dict[str, Any]) -> str:
    """The feature partition a train_recommender run is for.

    Asset-triggered runs have no logical date; the partition comes from the newest triggering features
    event (``extra["dt"]``). A run with a logical date (manual trigger, ``airflow dags test``) uses it.
    """
    events = context.get("triggering_asset_events") or {}
    dts = sorted(str(event.extra["dt"]) for asset in events for event in events[asset] if (event.extra or {}).get("dt"))
    if dts:
        return dts[-1]
    if context.get("ds"):
        return context["ds"]
    raise ValueError(
        "train_recommender needs a feature partition: run it from a features Asset event, or trigger it with a "
        "logical date (e.g. airflow dags test train_recommender 2026-01-31)"
    )
