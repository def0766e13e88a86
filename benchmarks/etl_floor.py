"""The bare PySpark floor for behavior_etl: only the irreducible work on the same raw day, in one application.

    read the raw JSON Lines with an explicit schema -> drop lines without ids or with an unknown event type
    -> dedupe on event_id -> write parquet ("clean")
    -> read it back, each user's newest MAX_SEQ_LEN events as arrays sorted by time -> write parquet ("featurize")

No exact-type checks, no quarantine, no reconciliation, no gates, no publish: what any job that turns these
logs into sequences must do. ``benchmarks/etl.py`` runs it on the files it benchmarks behavior_etl on, in the
same run, and divides. Prints one JSON line: ``{"startup": s, "clean": s, "featurize": s}`` (seconds; start-up is
the SparkSession build, the process start before it is counted by the caller's wall clock).

Run: ``python benchmarks/etl_floor.py --raw DIR --out DIR``
"""

from __future__ import annotations

import argparse
import json
import time

MAX_SEQ_LEN = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", required=True, help="raw/events/dt=D directory")
    parser.add_argument("--out", required=True, help="directory the floor writes clean/ and sequences/ under")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from attnrec import lake
    from attnrec.contracts import EVENT_TYPES
    from attnrec.spark import get_spark

    # the JVM options behavior_etl's clean job gets for this raw day (attnrec.spark.driver_java_options): a large
    # day's full JIT and throughput GC make the floor a third faster than the quick-start options at 2M events
    spark = get_spark("attnrec-etl-floor", input_bytes=lake.tree_bytes(args.raw))
    times = {"startup": time.perf_counter() - started}

    t0 = time.perf_counter()
    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in ("event_id", "user_id", "item_id", "event_type", "event_time")]
        + [T.StructField("dwell_ms", T.LongType()), T.StructField("rating", T.DoubleType())]
    )
    raw = spark.read.schema(schema).json(args.raw)
    epoch = F.col("event_time").try_cast("bigint")
    event_time_ms = F.coalesce(epoch, F.unix_millis(F.try_to_timestamp(F.col("event_time"))))
    clean = (
        raw.where(F.col("event_id").isNotNull() & F.col("user_id").isNotNull() & F.col("item_id").isNotNull())
        .where(F.lower(F.col("event_type")).isin(*EVENT_TYPES))
        .withColumn("event_time_ms", event_time_ms)
        .dropDuplicates(["event_id"])
    )
    clean_dir = f"{args.out}/clean"
    clean.write.mode("overwrite").parquet(clean_dir)
    times["clean"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    events = spark.read.parquet(clean_dir)
    newest = F.slice(
        F.sort_array(F.collect_list(F.struct("event_time_ms", "item_id", "event_type", "dwell_ms")), asc=False),
        1,
        MAX_SEQ_LEN,
    )
    sequences = (
        events.groupBy("user_id")
        .agg(F.reverse(newest).alias("events"))  # oldest first, like the model reads them
        .select(
            "user_id",
            F.col("events.item_id").alias("items"),
            F.col("events.event_type").alias("event_types"),
            F.col("events.event_time_ms").alias("timestamps"),
            F.col("events.dwell_ms").alias("dwell_ms"),
        )
    )
    sequences.write.mode("overwrite").parquet(f"{args.out}/sequences")
    times["featurize"] = time.perf_counter() - t0
    spark.stop()
    print(json.dumps(times), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
