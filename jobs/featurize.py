"""Spark job: build the model's features for day D from the clean events of D and the days before it.

    clean/events/dt<=D (bounded look-back) + raw/items  ──▶  _staging/features/sequences/dt=D
                                                         ──▶  _staging/features/items/dt=D

sequences: one row per user, their last ``max_seq_len`` events oldest -> newest (ties broken by event_id),
with item ids, event types, epoch-ms times and dwell as parallel arrays.
items: the item vocabulary (``item_idx`` 1..N, 0 is padding) with content (title, categories, year) and
popularity. Indices carry over from the newest earlier features/items partition, so model versions trained on
different days see the same index for the same item; new items are appended in (first seen, item_id) order.

The clean partition of D itself is read from staging when it is not yet published (the DAG publishes it
after its gate, so in the DAG it is always published by the time this runs).

Run: ``spark-submit jobs/featurize.py --dt 2026-01-31``.
"""

from __future__ import annotations

import argparse
import datetime as dt_
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # spark-submit runs this file from anywhere

from attnrec import lake  # noqa: E402
from attnrec.contracts import check_dt  # noqa: E402

ITEM_SCHEMA_DDL = (
    "item_id STRING, title STRING, categories ARRAY<STRING>, release_year STRING, published_at STRING, "
    "_corrupt_record STRING"
)


@dataclass(frozen=True)
class FeatureParams:
    dt: str
    max_seq_len: int = 200
    lookback_days: int = 365

    @property
    def first_dt(self) -> str:
        return (dt_.date.fromisoformat(self.dt) - dt_.timedelta(days=self.lookback_days)).isoformat()


def clean_partitions(root: str, params: FeatureParams) -> list[str]:
    """Paths of the clean partitions in [D - lookback, D]; D must be among them."""
    days = [d for d in lake.list_partitions(root, lake.CLEAN_EVENTS) if params.first_dt <= d <= params.dt]
    paths = [lake.partition(root, lake.CLEAN_EVENTS, d) for d in days]
    if params.dt not in days:
        staged = lake.staging(root, lake.CLEAN_EVENTS, params.dt)
        if not lake.is_complete(staged):
            raise FileNotFoundError(
                f"no clean events for dt={params.dt}: neither {lake.partition(root, lake.CLEAN_EVENTS, params.dt)} "
                f"nor {staged} is complete; run the clean job (behavior_etl) for {params.dt} first"
            )
        paths.append(staged)
    return paths


def previous_items_partition(root: str, dt: str) -> str | None:
    """The newest published features/items partition before ``dt`` (the vocabulary to carry over)."""
    earlier = [d for d in lake.list_partitions(root, lake.FEATURE_ITEMS) if d < dt]
    return lake.partition(root, lake.FEATURE_ITEMS, earlier[-1]) if earlier else None


def extract(spark, root: str, params: FeatureParams):
    """(events, catalogue or None, previous vocabulary or None)."""
    events = spark.read.parquet(*clean_partitions(root, params))
    items_dir = lake.raw_items(root)
    catalogue = None
    if lake.exists(items_dir):
        catalogue = spark.read.schema(ITEM_SCHEMA_DDL).option("columnNameOfCorruptRecord", "_corrupt_record").json(items_dir)
    previous = previous_items_partition(root, params.dt)
    vocab = spark.read.parquet(previous).select("item_id", "item_idx") if previous else None
    return events, catalogue, vocab


def transform_sequences(events, params: FeatureParams):
    """One row per user: their last ``max_seq_len`` events as time-ordered parallel arrays."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    newest_first = Window.partitionBy("user_id").orderBy(F.col("event_time_ms").desc(), F.col("event_id").desc())
    recent = events.withColumn("_n", F.row_number().over(newest_first)).where(F.col("_n") <= params.max_seq_len)
    grouped = recent.groupBy("user_id").agg(
        F.sort_array(
            F.collect_list(F.struct("event_time_ms", "event_id", "item_id", "event_type", "dwell_ms"))
        ).alias("ev")
    )
    return grouped.select(
        "user_id",
        F.transform("ev", lambda e: e["item_id"]).alias("item_ids"),
        F.transform("ev", lambda e: e["event_type"]).alias("event_types"),
        F.transform("ev", lambda e: e["event_time_ms"]).alias("event_times_ms"),
        F.transform("ev", lambda e: e["dwell_ms"]).alias("dwell_ms"),
        F.size("ev").cast("int").alias("length"),
    )


def transform_items(events, catalogue, vocab):
    """The item table: every item in the catalogue or the events, with content, popularity and a stable index."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    stats = events.groupBy("item_id").agg(
        F.count(F.lit(1)).alias("popularity"), F.min("event_time_ms").alias("first_seen_ms")
    )
    if catalogue is not None:
        year = F.coalesce(
            F.col("release_year").try_cast("int"), F.year(F.try_to_timestamp(F.col("published_at")))
        ).cast("int")
        content = (
            catalogue.where(F.col("item_id").isNotNull() & (F.trim("item_id") != ""))
            .select(
                F.trim("item_id").alias("item_id"),
                F.col("title"),
                F.coalesce(F.col("categories"), F.array().cast("array<string>")).alias("categories"),
                year.alias("year"),
            )
            .dropDuplicates(["item_id"])
        )
    else:
        content = events.sparkSession.createDataFrame([], "item_id string, title string, categories array<string>, year int")
    if vocab is None:
        vocab = events.sparkSession.createDataFrame([], "item_id string, item_idx int")
    # an item once indexed keeps its index, even on a day it is neither seen nor in the catalogue
    items = content.join(stats, "item_id", "full_outer").join(vocab, "item_id", "full_outer").select(
        "item_id",
        "title",
        F.coalesce("categories", F.array().cast("array<string>")).alias("categories"),
        "year",
        F.coalesce("popularity", F.lit(0)).cast("long").alias("popularity"),
        "first_seen_ms",
        "item_idx",
    )
    offset = vocab.agg(F.coalesce(F.max("item_idx"), F.lit(0)).alias("m")).first()["m"]  # one number
    new_order = Window.orderBy(F.col("first_seen_ms").asc_nulls_last(), F.col("item_id"))
    new_items = items.where(F.col("item_idx").isNull()).withColumn(
        "item_idx", (F.row_number().over(new_order) + F.lit(offset)).cast("int")
    )
    known = items.where(F.col("item_idx").isNotNull()).withColumn("item_idx", F.col("item_idx").cast("int"))
    return known.unionByName(new_items).select("item_idx", "item_id", "title", "categories", "year", "popularity")


def load(sequences, items, root: str, dt: str) -> tuple[str, str]:
    seq_dir = lake.staging(root, lake.FEATURE_SEQUENCES, dt)
    items_dir = lake.staging(root, lake.FEATURE_ITEMS, dt)
    sequences.repartition(4, "user_id").sortWithinPartitions("user_id").write.mode("overwrite").parquet(seq_dir)
    items.coalesce(1).sortWithinPartitions("item_idx").write.mode("overwrite").parquet(items_dir)
    return seq_dir, items_dir


def main(argv: list[str] | None = None) -> int:
    from attnrec.settings import get_settings
    from attnrec.spark import get_spark

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dt", required=True, type=check_dt, help="feature day YYYY-MM-DD (the DAG's logical date)")
    parser.add_argument("--data-root", help="lake root (default: ATTNREC_DATA_ROOT)")
    args = parser.parse_args(argv)
    settings = get_settings()
    root = args.data_root or settings.data_root
    params = FeatureParams(dt=args.dt, max_seq_len=settings.max_seq_len, lookback_days=settings.lookback_days)
    spark = get_spark(f"attnrec-featurize-{args.dt}")
    try:
        events, catalogue, vocab = extract(spark, root, params)
        seq_dir, items_dir = load(transform_sequences(events, params), transform_items(events, catalogue, vocab), root, args.dt)
        users, n_items = spark.read.parquet(seq_dir).count(), spark.read.parquet(items_dir).count()
    except FileNotFoundError as err:
        print(f"featurize: {err}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(f"featurize dt={args.dt}: users={users} items={n_items} -> {seq_dir}, {items_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
