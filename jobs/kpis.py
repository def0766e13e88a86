"""Spark job: what the lists served on day D did over the next H days, per experiment arm (kpi_report).

    candidates/dt=D + clean/events/dt=D+1 .. D+H + features/items/dt=D  ──▶  _staging/kpis/dt=D

One row per (experiment_id, arm, model_version) of D's served lists (candidates written before experiments carry
no ``arm`` / ``experiment_id``: every row counts as ``control`` of experiment ``""``), with the columns of
``attnrec.contracts.KPI_COLUMNS``. "Served" is the whole list of a user (K items); "top-10" its ranks 1..10; the
window is the clean events that landed on D+1 .. D+H (``ATTNREC_KPI_HORIZON_DAYS``, default 1). A user is *active*
when they have at least one clean event of any type in the window; *positive* event types are those featurize
reads as interest 1 (every type that is neither exposure, ATTNREC_EXPOSURE_EVENT_TYPES, nor negative,
ATTNREC_NEGATIVE_EVENT_TYPES).

- ``users`` served in the group; ``active_users`` of them active in the window;
- ``impressions`` / ``clicks``: events of type impression / click in the window on an item of the user's list;
- ``ctr`` = clicks / impressions (null at 0 impressions);
- ``hit_rate_at_10`` / ``hit_rate_at_k``: active users with a positive event on an item of their top-10 / whole
  list, over active users; ``conversion``: active users with a ``purchase`` of a listed item, over active users
  (all three null without active users);
- ``hit_rate_at_10_ci_low`` / ``_ci_high``: the 95% Wilson score interval of hit_rate_at_10;
- ``lift_hit_rate_at_10`` = treatment / control - 1 and ``p_value`` of the one-sided pooled two-proportion z-test
  (H1: treatment's hit rate is higher), on treatment rows only, against the control rows of the same experiment;
  null on control rows, when control has no active users or a zero hit rate (lift), or when the pooled rate is 0
  or 1 (no variance: p_value);
- ``coverage``: distinct items served in the group / available items of features/items dt=D (the catalogue);
- ``novelty``: mean over the served (user, item) rows of -log2 of the item's popularity share, where the share is
  (popularity + 1) / (sum of popularity + number of items) over features/items dt=D (``popularity``: the item's
  events in featurize's look-back up to D; add-one smoothing, so an item without events has a finite value);
- ``intra_list_diversity``: mean over users (with at least 2 items in their top-10) of the share of item pairs in
  their top-10 whose category sets are disjoint (an item without categories shares none).

Sums of fractions are added as exact decimals and the statistics computed in Python on the few aggregate rows, so
a re-run gives identical rows. ``_manifest.json`` beside the rows records the outcome days read and the candidates'
manifest (model versions, experiment, treatment share).

Run: ``spark-submit jobs/kpis.py --dt 2026-01-31`` (D = the day the lists were served).
"""

from __future__ import annotations

import datetime as dt_
import math
from dataclasses import dataclass
from typing import Any

from attnrec import lake
from attnrec.args import DataRoot, Dt, spark_submit_main
from attnrec.contracts import CONTROL, EXPOSURE_EVENT_TYPES, KPI_COLUMNS, NEGATIVE_EVENT_TYPES, TREATMENT, check_dt

MANIFEST_FILE = "_manifest.json"
GROUP = ("experiment_id", "arm", "model_version")
TOP = 10
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95%
_EXACT = "decimal(38,18)"  # sums of fractions in exact decimal: the same total in any order


@dataclass(frozen=True)
class KpiParams:
    dt: str  # the day the lists were served
    horizon_days: int = 1
    exposure_types: tuple[str, ...] = EXPOSURE_EVENT_TYPES
    negative_types: tuple[str, ...] = NEGATIVE_EVENT_TYPES

    @property
    def outcome_days(self) -> list[str]:
        """D+1 .. D+H."""
        day = dt_.date.fromisoformat(check_dt(self.dt))
        return [(day + dt_.timedelta(days=i)).isoformat() for i in range(1, self.horizon_days + 1)]


def missing_inputs(root: str, params: KpiParams) -> list[str]:
    """The published partitions day D's KPIs need that are not there yet: the candidates of D, then the clean
    events of each outcome day, in that order."""
    wanted = [lake.partition(root, lake.CANDIDATES, params.dt)]
    wanted += [lake.partition(root, lake.CLEAN_EVENTS, d) for d in params.outcome_days]
    return [path for path in wanted if not lake.is_complete(path)]


def require_inputs(root: str, params: KpiParams) -> None:
    missing = missing_inputs(root, params)
    if missing:
        raise FileNotFoundError(
            f"cannot measure the lists served on {params.dt}: {', '.join(missing)} not published (no "
            f"{lake.SUCCESS_MARKER}); run nightly_candidates for {params.dt} and behavior_etl for "
            f"{', '.join(params.outcome_days)} first"
        )
    items = lake.partition(root, lake.FEATURE_ITEMS, params.dt)
    if not lake.is_complete(items):
        raise FileNotFoundError(
            f"no published features/items at {items}: coverage, novelty and diversity need the catalogue the lists "
            f"of {params.dt} were served from; run behavior_etl for {params.dt}"
        )


def work_dir(root: str, dt: str) -> str:
    """Where :func:`run` keeps the served users' identity table of day ``dt`` while it runs (removed at its end)."""
    return lake.join(root, lake.STAGING, "kpis_work", f"dt={dt}")


def extract(spark, root: str, params: KpiParams, key=None, work: str | None = None):
    """(served lists, outcome events, item table) of day D; FileNotFoundError naming what is not published.

    The served lists carry raw user ids (the candidates contract), the clean events pseudonyms: the served ids are
    pseudonymised here (``key``; default the lake's, checked against its fingerprint), once per distinct user; with
    ``work`` (a directory the caller removes afterwards) on the driver for a day of up to ``DRIVER_IDS_MAX`` users,
    as clean does (jobs/identity.py), so no Python worker starts."""
    from pyspark.sql import functions as F

    from jobs.identity import identity_table, with_pseudonyms

    require_inputs(root, params)
    if key is None:
        from attnrec.privacy import lake_key
        from attnrec.settings import get_settings

        key = lake_key(get_settings(data_root=root))
    candidates = spark.read.parquet(lake.partition(root, lake.CANDIDATES, params.dt))
    served = candidates.select(
        "user_id",
        F.col("rank").cast("int").alias("rank"),
        "item_id",
        F.col("model_version").cast("string").alias("model_version"),
        (F.coalesce("arm", F.lit(CONTROL)) if "arm" in candidates.columns else F.lit(CONTROL)).alias("arm"),
        (F.coalesce("experiment_id", F.lit("")) if "experiment_id" in candidates.columns else F.lit("")).alias(
            "experiment_id"
        ),
    )
    served = with_pseudonyms(served, identity_table(served, key, work_dir=work))
    events = spark.read.parquet(*(lake.partition(root, lake.CLEAN_EVENTS, d) for d in params.outcome_days)).select(
        "user_id", "item_id", "event_type"
    )
    items = spark.read.parquet(lake.partition(root, lake.FEATURE_ITEMS, params.dt)).select(
        "item_id", "categories", "popularity", "available"
    )
    return served, events, items


def aggregate(served, events, items, params: KpiParams):
    """The counts behind every KPI, one row per (experiment_id, arm, model_version): users, active_users,
    impressions, clicks, hits_at_10, hits_at_k, converted, items_served, catalogue, served_rows,
    self_information (sum), diverse_users, diversity (sum of per-user shares)."""
    from pyspark.sql import functions as F

    from jobs.featurize import FeatureParams, interest

    kinds = FeatureParams(dt=params.dt, exposure_types=params.exposure_types, negative_types=params.negative_types)
    positive = F.expr(interest(kinds, "event_type")) == 1

    # both sides carry the pseudonym: extract() pseudonymised the served lists' raw ids (DESIGN.md "Privacy")
    users = served.select("user_id", *GROUP).distinct()
    active = events.select("user_id").distinct().withColumn("active", F.lit(1))
    on_list = events.join(served.select("user_id", "item_id", "rank"), ["user_id", "item_id"])
    outcomes = on_list.groupBy("user_id").agg(
        F.sum(F.when(F.col("event_type") == "impression", 1).otherwise(0)).alias("impressions"),
        F.sum(F.when(F.col("event_type") == "click", 1).otherwise(0)).alias("clicks"),
        F.max(F.when(positive & (F.col("rank") <= TOP), 1).otherwise(0)).alias("hit_at_10"),
        F.max(F.when(positive, 1).otherwise(0)).alias("hit_at_k"),
        F.max(F.when(F.col("event_type") == "purchase", 1).otherwise(0)).alias("converted"),
    )

    catalogue = items.select(
        "item_id",
        F.coalesce("categories", F.array().cast("array<string>")).alias("categories"),
        F.coalesce("popularity", F.lit(0)).alias("popularity"),
        F.coalesce("available", F.lit(True)).alias("available"),
    )
    totals = catalogue.agg(
        F.sum("popularity").alias("total"),
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("available").cast("int")).alias("available_items"),
    )
    share = (F.coalesce("popularity", F.lit(0)) + 1) / (F.col("total") + F.col("n"))
    novelty = (
        served.join(catalogue.select("item_id", "popularity"), "item_id", "left")
        .crossJoin(totals)
        .groupBy(*GROUP)
        .agg(
            F.count(F.lit(1)).alias("served_rows"),
            F.sum((-F.log2(share)).cast(_EXACT)).alias("self_information"),
            F.countDistinct("item_id").alias("items_served"),
            F.first("available_items").alias("catalogue"),
        )
    )

    top = served.where(F.col("rank") <= TOP).join(catalogue.select("item_id", "categories"), "item_id", "left")
    top = top.select("user_id", "rank", F.coalesce("categories", F.array().cast("array<string>")).alias("cats"))
    a, b = top.alias("a"), top.alias("b")
    pairs = a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("a.rank") < F.col("b.rank"))).select(
        F.col("a.user_id").alias("user_id"),
        (F.size(F.array_intersect("a.cats", "b.cats")) == 0).cast("int").alias("disjoint"),
    )
    per_user_diversity = pairs.groupBy("user_id").agg((F.sum("disjoint") / F.count(F.lit(1))).alias("diversity"))

    per_user = (
        users.join(active, "user_id", "left")
        .join(outcomes, "user_id", "left")
        .join(per_user_diversity, "user_id", "left")
        .fillna(0, subset=["active", "impressions", "clicks", "hit_at_10", "hit_at_k", "converted"])
    )
    counts = per_user.groupBy(*GROUP).agg(
        F.count(F.lit(1)).alias("users"),
        F.sum("active").alias("active_users"),
        F.sum("impressions").alias("impressions"),
        F.sum("clicks").alias("clicks"),
        F.sum("hit_at_10").alias("hits_at_10"),
        F.sum("hit_at_k").alias("hits_at_k"),
        F.sum("converted").alias("converted"),
        F.count("diversity").alias("diverse_users"),
        F.sum(F.col("diversity").cast(_EXACT)).alias("diversity"),
    )
    return counts.join(novelty, list(GROUP))


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float | None, float | None]:
    """The Wilson score interval of a proportion ``successes / n``; (None, None) when n is 0."""
    if n == 0:
        return None, None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def one_sided_p_value(k_t: int, n_t: int, k_c: int, n_c: int) -> float | None:
    """P(Z >= z) of the pooled two-proportion z-test of treatment ``k_t / n_t`` against control ``k_c / n_c``
    (H1: treatment higher); None when an arm is empty or the pooled rate is 0 or 1 (no variance to test)."""
    if n_t == 0 or n_c == 0:
        return None
    pooled = (k_t + k_c) / (n_t + n_c)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    if se == 0:
        return None
    z = (k_t / n_t - k_c / n_c) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def statistics(counts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kpis rows (KPI_COLUMNS, sorted by experiment_id, arm, model_version) from :func:`aggregate`'s counts."""
    control: dict[str, tuple[int, int]] = {}  # experiment -> (hits at 10, active users) over its control rows
    for c in counts:
        if c["arm"] == CONTROL:
            hits, n = control.get(c["experiment_id"], (0, 0))
            control[c["experiment_id"]] = (hits + int(c["hits_at_10"]), n + int(c["active_users"]))
    rows = []
    for c in sorted(counts, key=lambda c: tuple(c[k] for k in GROUP)):
        active = int(c["active_users"])
        hits = int(c["hits_at_10"])
        low, high = wilson(hits, active)
        lift = p_value = None
        if c["arm"] == TREATMENT and active:
            k_c, n_c = control.get(c["experiment_id"], (0, 0))
            rate_c = _ratio(k_c, n_c)
            lift = hits / active / rate_c - 1 if rate_c else None
            p_value = one_sided_p_value(hits, active, k_c, n_c)
        served_rows = int(c["served_rows"])
        row = {
            **{k: c[k] for k in GROUP},
            "users": int(c["users"]),
            "active_users": active,
            "impressions": int(c["impressions"]),
            "clicks": int(c["clicks"]),
            "ctr": _ratio(int(c["clicks"]), int(c["impressions"])),
            "hit_rate_at_10": _ratio(hits, active),
            "hit_rate_at_k": _ratio(int(c["hits_at_k"]), active),
            "conversion": _ratio(int(c["converted"]), active),
            "hit_rate_at_10_ci_low": low,
            "hit_rate_at_10_ci_high": high,
            "lift_hit_rate_at_10": lift,
            "p_value": p_value,
            "coverage": _ratio(int(c["items_served"]), int(c["catalogue"] or 0)),
            "novelty": _ratio(float(c["self_information"] or 0), served_rows),
            "intra_list_diversity": _ratio(float(c["diversity"] or 0), int(c["diverse_users"])),
        }
        rows.append({name: row[name] for name, _ in KPI_COLUMNS})
    return rows


_SPARK_TYPES = {"string": "string", "int64": "bigint", "double": "double"}
KPI_SCHEMA_DDL = ", ".join(f"{name} {_SPARK_TYPES[kind]}" for name, kind in KPI_COLUMNS)


def transform(served, events, items, params: KpiParams):
    """The kpis rows of day D as a DataFrame (KPI_COLUMNS): Spark for the counts, Python for the statistics.

    The rows go to Spark as an Arrow table: from a list of rows, Spark would start Python workers to unpickle them."""
    import pyarrow as pa

    counts = [r.asDict() for r in aggregate(served, events, items, params).collect()]  # one row per arm
    schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in KPI_COLUMNS])  # as models/candidates.py
    return served.sparkSession.createDataFrame(pa.Table.from_pylist(statistics(counts), schema=schema), KPI_SCHEMA_DDL)


def candidates_manifest(root: str, dt: str) -> dict[str, Any]:
    """The published candidates' ``_manifest.json`` of ``dt`` ({} when it has none)."""
    uri = lake.join(lake.partition(root, lake.CANDIDATES, dt), MANIFEST_FILE)
    return lake.read_json(uri) if lake.exists(uri) else {}


def load(kpis, root: str, params: KpiParams) -> str:
    """Write the staged kpis of D (one file; rows sorted) and its manifest."""
    path = lake.staging(root, lake.KPIS, params.dt)
    kpis.coalesce(1).sortWithinPartitions(*GROUP).write.mode("overwrite").parquet(path)
    served = candidates_manifest(root, params.dt)
    lake.write_json(
        lake.join(path, MANIFEST_FILE),
        {
            "dt": params.dt,
            "horizon_days": params.horizon_days,
            "outcome_days": params.outcome_days,
            "candidates": {
                k: served.get(k) for k in ("model_name", "model_versions", "experiment_id", "treatment_share")
            },
        },
    )
    return path


def run(spark, root: str, params: KpiParams) -> dict[str, Any]:
    """extract -> transform -> load for the lists served on ``params.dt``; returns the staged path and the rows."""
    work = work_dir(root, params.dt)
    try:
        served, events, items = extract(spark, root, params, work=work)
        path = load(transform(served, events, items, params), root, params)
    finally:
        lake.remove_dir(work)
    rows = [r.asDict() for r in spark.read.parquet(path).orderBy(*GROUP).collect()]
    return {"dt": params.dt, "path": path, "outcome_days": params.outcome_days, "rows": rows}


def validate_staged(settings, dt: str) -> dict:
    """The kpis gate on the staged kpis of ``dt`` (GX on pandas: a few rows); raises GateFailed."""
    import pandas as pd

    from expectations.runner import validate_kpis

    staged = lake.staging(settings.data_root, lake.KPIS, dt)
    if not lake.is_complete(staged):
        raise FileNotFoundError(f"no complete staged kpis at {staged}; run the kpis job for {dt} first")
    filesystem, local = lake.filesystem_for(staged)
    return validate_kpis(pd.read_parquet(local, filesystem=filesystem), dt, settings)


def gate_and_publish(settings, dt: str) -> int:
    """Validate the staged kpis of ``dt`` and publish them when the gate passes: 0, or 1 with the failures on
    stderr (nothing published)."""
    import sys

    from expectations.runner import GateFailed

    try:
        summary = validate_staged(settings, dt)
    except GateFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"kpis dt={dt}: gate PASSED {summary['evaluated']} expectations; Data Docs: {summary['data_docs']}")
    print(f"kpis dt={dt}: published {lake.publish(settings.data_root, lake.KPIS, dt)}")
    return 0


def params_from(settings, dt: str) -> KpiParams:
    return KpiParams(
        dt=dt,
        horizon_days=settings.kpi_horizon_days,
        exposure_types=settings.exposure_event_types,
        negative_types=settings.negative_event_types,
    )


def main(dt: Dt, data_root: DataRoot = None) -> int:
    """Measure the lists served on --dt against the clean events of the next ATTNREC_KPI_HORIZON_DAYS days into
    staging (kpi_report validates and publishes them)."""
    from attnrec.settings import get_settings
    from attnrec.spark import get_spark

    settings = get_settings(data_root=data_root)
    params = params_from(settings, dt)
    require_inputs(settings.data_root, params)  # before Spark starts
    spark = get_spark(f"attnrec-kpis-{dt}")
    try:
        summary = run(spark, settings.data_root, params)
    finally:
        spark.stop()
    for row in summary["rows"]:
        print(
            f"kpis dt={dt} experiment={row['experiment_id']!r} arm={row['arm']} v{row['model_version']}: "
            f"users={row['users']} active={row['active_users']} hit_rate_at_10={row['hit_rate_at_10']} "
            f"p_value={row['p_value']}"
        )
    print(f"kpis dt={dt}: outcome days {', '.join(summary['outcome_days'])} -> {summary['path']}")
    return 0


if __name__ == "__main__":
    spark_submit_main(main, "kpis")
