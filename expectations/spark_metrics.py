"""A cheaper Spark plan for one GX metric the gates compute on every large partition.

``expect_column_values_to_be_unique`` asks GX for ``column_values.unique.unexpected_count``: how many rows hold a
value that another row holds too. GX's Spark engine computes it as a window count over every row partitioned by
the value (``count(1) OVER (PARTITION BY column) > 1``, then a count of the rows it flags): a shuffle and then a sort
of the whole column. On the clean gate that is ``event_id`` of every event of the day, the gate's largest query
(docs/benchmarks.md#etl). The same number is an aggregation: count the rows per value, keep the values counted
more than once, sum their counts; and first per 64-bit hash of the value, found repeated or not by sorting the
hashes per shuffle partition, so that a column without repeats (a gate that passes) shuffles and sorts 8 bytes a
row, and only the rows whose hash repeats are counted again by value. Same rows
(GX's domain records: the batch with its row condition and null filter applied), same count, so the same pass or
fail; no sort of the values themselves.

:func:`register` replaces GX's Spark provider of that one metric with :func:`unique_unexpected_count`, once per
process, through GX's metric registry (:func:`great_expectations.expectations.registry.register_metric`, the
function custom metrics register with). Only the count changes: a failed suite's re-run for its details
(``result_format`` SUMMARY) still lists the unexpected values with GX's own window condition, so failure messages
and Data Docs read as before. The pandas and SQL engines keep GX's providers.
"""

from __future__ import annotations

import threading

UNIQUE_UNEXPECTED_COUNT = "column_values.unique.unexpected_count"

_lock = threading.Lock()
_registered = False


def unique_unexpected_count(
    cls, execution_engine, metric_domain_kwargs: dict, metric_value_kwargs: dict, metrics: dict, **kwargs
) -> int:
    """Rows of the metric's domain whose column value occurs in more than one row (GX's signature for a metric
    provider). The domain is what GX's own provider counts over: the compute and accessor domain of the metric's
    ``unexpected_condition`` (the batch, its row condition, rows with a null value dropped)."""
    from pyspark.sql import functions as F

    _, compute_domain_kwargs, accessor_domain_kwargs = metrics["unexpected_condition"]
    rows = execution_engine.get_domain_records(domain_kwargs={**compute_domain_kwargs, **accessor_domain_kwargs})
    return repeated_rows(rows, accessor_domain_kwargs["column"], F.xxhash64)


def repeated_rows(rows, column: str, key) -> int:
    """Rows of ``rows`` whose ``column`` value (null being one value, as in a window partition) occurs in more than
    one row. Checked first on ``key(value)`` (a 64-bit hash: 8 bytes a row to shuffle instead of the value's text),
    by :func:`repeated_keys` (the keys shuffled by key, then sorted per partition by numpy: a column of distinct
    keys in a hash aggregation builds a table as large as the column and reduces nothing); distinct keys mean
    distinct values, so a day without repeats ends there. Where keys repeat, the values of those rows only are
    counted exactly (a repeated key may be two different values)."""
    from pyspark.sql import functions as F

    # a null key (a null value, or a key function that gives null) is one key among the others
    keyed = rows.select(rows[column].alias("value"), F.coalesce(key(rows[column]).cast("long"), F.lit(0)).alias("key"))
    repeated = keyed.select("key").repartition("key").mapInArrow(repeated_keys, "key long")
    if repeated.isEmpty():
        return 0
    exact = (
        keyed.join(repeated, "key", "left_semi")
        .groupBy("value")
        .agg(F.count(F.lit(1)).alias("n"))
        .where(F.col("n") > 1)
    )
    return int(exact.agg(F.coalesce(F.sum("n"), F.lit(0)).alias("rows")).first()["rows"])


def repeated_keys(batches):
    """The keys (one long column, no nulls) that occur more than once in a partition's Arrow batches, each once, as
    Arrow batches (``mapInArrow``; runs in Spark's Python workers, like the features' per-user pass)."""
    import numpy as np
    import pyarrow as pa

    columns = [batch.column(0).to_numpy() for batch in batches if batch.num_rows]
    if not columns:
        return
    keys = np.sort(np.concatenate(columns))
    repeated = np.unique(keys[1:][keys[1:] == keys[:-1]])
    if len(repeated):
        yield pa.RecordBatch.from_arrays([pa.array(repeated)], ["key"])


def register() -> None:
    """Make :func:`unique_unexpected_count` GX's Spark provider of ``column_values.unique.unexpected_count`` (once
    per process; later calls do nothing). Raises RuntimeError when GX has no such metric registered for Spark (an
    upgrade renamed it): the gates would silently fall back to the slow plan otherwise."""
    global _registered
    with _lock:
        if _registered:
            return
        import logging

        from great_expectations.execution_engine import SparkDFExecutionEngine
        from great_expectations.expectations.metrics import column_map_metrics  # noqa: F401 - registers GX's metrics
        from great_expectations.expectations.metrics.metric_provider import MetricFunctionTypes
        from great_expectations.expectations.registry import _registered_metrics, register_metric

        definition = _registered_metrics.get(UNIQUE_UNEXPECTED_COUNT, {})
        provider = definition.get("providers", {}).get(SparkDFExecutionEngine.__name__)
        if provider is None:
            raise RuntimeError(
                f"Great Expectations registers no Spark provider for {UNIQUE_UNEXPECTED_COUNT!r}; this GX version is "
                "not the one expectations/spark_metrics.py was written for (see requirements.lock)"
            )
        metric_class, _ = provider
        registry_log = logging.getLogger("great_expectations.expectations.registry")
        level = registry_log.level
        registry_log.setLevel(logging.ERROR)  # GX warns that a provider is replaced: that is the point here
        try:
            register_metric(
                metric_name=UNIQUE_UNEXPECTED_COUNT,
                metric_domain_keys=definition["metric_domain_keys"],
                metric_value_keys=definition["metric_value_keys"],
                execution_engine=SparkDFExecutionEngine,
                metric_class=metric_class,
                metric_provider=unique_unexpected_count,
                metric_fn_type=MetricFunctionTypes.VALUE,
            )
        finally:
            registry_log.setLevel(level)
        _registered = True
