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

:func:`register` also bundles the two counts of every column-pair map metric (``expect_column_pair_values_*``; the
features gate checks four such pairs) into the suite's one aggregation. GX's Spark engine computes a column-pair
expectation's ``unexpected_count`` and ``filtered_row_count`` as two ``count()`` jobs each (a map stage and a result
job under AQE): 16 small jobs one after another for the features gate's four pairs, where a single-column
expectation's counts join the suite's one ``agg`` query. Here both counts are aggregate functions of that query
(:func:`pair_unexpected_count`, :func:`pair_filtered_row_count`): the rows GX's ``ignore_row_if`` would drop are
left out inside the expression instead of by a filter, so the counts, and the pass or fail, are the ones GX computes.
"""

from __future__ import annotations

import threading

UNIQUE_UNEXPECTED_COUNT = "column_values.unique.unexpected_count"
#: The column-pair metric the suites use (``expect_column_pair_values_a_to_be_greater_than_b``): registration fails
#: loudly when GX no longer has it as a bundleable column-pair metric.
PAIR_GREATER = "column_pair_values.a_greater_than_b"

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


def pair_unexpected_count(
    cls, execution_engine, metric_domain_kwargs: dict, metric_value_kwargs: dict, metrics: dict, **kwargs
):
    """A column-pair metric's ``unexpected_count`` as an aggregate of the suite's query (GX's signature for an
    aggregate partial): rows GX's ``ignore_row_if`` keeps whose condition is true (a null condition is not, as in
    GX's ``filter(condition == True)``). Returns ``(aggregate, compute domain, accessor domain)``."""
    from pyspark.sql import functions as F

    condition, compute_domain_kwargs, accessor_domain_kwargs = metrics["unexpected_condition"]
    kept, compute_domain_kwargs = pair_kept_rows(compute_domain_kwargs, accessor_domain_kwargs)
    return F.count(F.when(condition & kept, True)), compute_domain_kwargs, accessor_domain_kwargs


def pair_filtered_row_count(
    cls, execution_engine, metric_domain_kwargs: dict, metric_value_kwargs: dict, metrics: dict, **kwargs
):
    """A column-pair metric's ``filtered_row_count`` (the rows GX's ``ignore_row_if`` keeps) as an aggregate of the
    suite's query; same return as :func:`pair_unexpected_count`."""
    from pyspark.sql import functions as F

    _, compute_domain_kwargs, accessor_domain_kwargs = metrics["unexpected_condition"]
    kept, compute_domain_kwargs = pair_kept_rows(compute_domain_kwargs, accessor_domain_kwargs)
    return F.count(F.when(kept, True)), compute_domain_kwargs, accessor_domain_kwargs


def pair_kept_rows(compute_domain_kwargs: dict, accessor_domain_kwargs: dict):
    """``(condition, compute domain)``: the rows GX's Spark engine keeps of a column-pair domain under its
    ``ignore_row_if`` (``SparkDFExecutionEngine.get_domain_records``: ``both_values_are_missing``,
    ``either_value_is_missing`` or ``neither``) as a condition, and the compute domain without ``ignore_row_if``,
    whose records are then the batch with its row condition, the domain of the suite's other aggregates."""
    from pyspark.sql import functions as F

    a, b = F.col(accessor_domain_kwargs["column_A"]), F.col(accessor_domain_kwargs["column_B"])
    compute_domain_kwargs = dict(compute_domain_kwargs)
    ignore_row_if = compute_domain_kwargs.pop("ignore_row_if", "neither")
    if ignore_row_if == "both_values_are_missing":
        return ~(a.isNull() & b.isNull()), compute_domain_kwargs
    if ignore_row_if == "either_value_is_missing":
        return ~(a.isNull() | b.isNull()), compute_domain_kwargs
    if ignore_row_if == "neither":
        return F.lit(True), compute_domain_kwargs
    raise ValueError(
        f"ignore_row_if {ignore_row_if!r} of a column-pair expectation on {accessor_domain_kwargs['column_A']!r}/"
        f"{accessor_domain_kwargs['column_B']!r}: use both_values_are_missing, either_value_is_missing or neither"
    )


def _bundled_pair_class(metric_class, base: str):
    """``metric_class`` (a GX column-pair metric) whose ``<base>.filtered_row_count`` depends on the aggregate
    ``<base>.filtered_row_count.aggregate_fn`` (GX bundles a metric's ``metric_partial_fn`` into the suite's query;
    its own dependency protocol does so for ``unexpected_count`` only), and that aggregate on the pair's condition.
    The class is registered for those two metric names only. Registers nothing itself (GX's metaclass would
    register the class's metric functions again)."""
    from great_expectations.validator.metric_configuration import MetricConfiguration

    filtered = f"{base}.filtered_row_count"
    depends_on = {  # metric name -> (dependency name, the metric it is)
        filtered: ("metric_partial_fn", f"{filtered}.aggregate_fn"),
        f"{filtered}.aggregate_fn": ("unexpected_condition", f"{base}.condition"),
    }

    def dependencies(cls, metric, configuration=None, execution_engine=None, runtime_configuration=None):
        values = {k: v for k, v in (metric.metric_value_kwargs or {}).items() if k != "result_format"}
        key, name = depends_on[metric.metric_name]
        return {
            key: MetricConfiguration(
                metric_name=name, metric_domain_kwargs=metric.metric_domain_kwargs, metric_value_kwargs=values
            )
        }

    return type(
        f"{metric_class.__name__}BundledCounts",
        (metric_class,),
        {
            "_register_metric_functions": classmethod(lambda cls: None),
            "_get_evaluation_dependencies": classmethod(dependencies),
        },
    )


def _bundle_pair_counts(registered: dict, register_metric, engine) -> list[str]:
    """Register :func:`pair_unexpected_count` and :func:`pair_filtered_row_count` as the aggregate partials of every
    column-pair map metric GX's Spark engine counts with ``count()`` jobs (those whose Spark ``filtered_row_count``
    provider is GX's ``_spark_column_pair_map_condition_filtered_row_count`` and whose condition is a row-wise map
    condition, not a window); returns their names."""
    from great_expectations.expectations.metrics.map_metric_provider.column_pair_map_condition_auxilliary_methods import (  # noqa: E501
        _spark_column_pair_map_condition_filtered_row_count,
    )
    from great_expectations.expectations.metrics.metric_provider import (
        MetricFunctionTypes,
        MetricPartialFunctionTypes,
    )

    bundled = []
    for name, definition in list(registered.items()):
        provider = definition.get("providers", {}).get(engine.__name__)
        if not name.endswith(".filtered_row_count") or provider is None:
            continue
        metric_class, function = provider
        base = name.removesuffix(".filtered_row_count")
        condition = registered.get(f"{base}.condition", {}).get("providers", {}).get(engine.__name__)
        if function is not _spark_column_pair_map_condition_filtered_row_count or condition is None:
            continue
        if getattr(condition[1], "metric_fn_type", None) != MetricPartialFunctionTypes.MAP_CONDITION_FN:
            continue
        counted = registered[f"{base}.unexpected_count"]
        domain_keys, value_keys = counted["metric_domain_keys"], counted["metric_value_keys"]
        dependent = _bundled_pair_class(metric_class, base)
        for metric_name, metric_provider, keys, fn_type, cls in (
            (
                f"{base}.unexpected_count.aggregate_fn",
                pair_unexpected_count,
                value_keys,
                MetricPartialFunctionTypes.AGGREGATE_FN,
                metric_class,
            ),
            (f"{base}.unexpected_count", None, value_keys, MetricFunctionTypes.VALUE, metric_class),
            (
                f"{name}.aggregate_fn",
                pair_filtered_row_count,
                value_keys,
                MetricPartialFunctionTypes.AGGREGATE_FN,
                dependent,
            ),
            (name, None, definition["metric_value_keys"], MetricFunctionTypes.VALUE, dependent),
        ):
            register_metric(
                metric_name=metric_name,
                metric_domain_keys=domain_keys,
                metric_value_keys=keys,
                execution_engine=engine,
                metric_class=cls,
                metric_provider=metric_provider,
                metric_fn_type=fn_type,
            )
        bundled.append(base)
    return bundled


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
        from great_expectations.expectations.metrics import (  # noqa: F401 - registers GX's metrics
            column_map_metrics,
            column_pair_map_metrics,
        )
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
            if PAIR_GREATER not in _bundle_pair_counts(_registered_metrics, register_metric, SparkDFExecutionEngine):
                raise RuntimeError(
                    f"Great Expectations' Spark engine no longer counts the column-pair metric {PAIR_GREATER!r} "
                    "the way expectations/spark_metrics.py bundles; this GX version is not the one it was written "
                    "for (see requirements.lock)"
                )
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
