"""Spark job: clean one landing day of raw behaviour events.

    raw/events/dt=D/*.jsonl[.gz]  ──▶  _staging/clean/events/dt=D       (parquet, contract columns)
                                   ──▶  _staging/quarantine/events/dt=D  (raw_line, reason, source_file)
                                   ──▶  _staging/clean/events/dt=D/_reconciliation.json

Every raw line ends in exactly one place: clean, quarantine (with the first rule it breaks), or counted
as an identical duplicate of a clean event, so ``raw_lines == clean + quarantined + duplicates``.
Duplicates are found within the day and against the published clean partitions of the previous
``dedupe_lookback_days`` days (late re-sends); users with more than ``bot_events_per_day`` clean events
in the day are labelled bots and their events quarantined as ``bot_user``.
The gate then validates the staged output and ``publish`` moves it into place.

Run: ``spark-submit jobs/clean.py --dt 2026-01-31`` (or ``python jobs/clean.py --dt ...``).
"""

from __future__ import annotations

import argparse
import datetime as dt_
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # spark-submit runs this file from anywhere

from attnrec import lake  # noqa: E402
from attnrec.contracts import EVENT_TYPES, RATING_MAX, RATING_MIN, check_dt  # noqa: E402

RAW_FIELDS = ("event_id", "user_id", "item_id", "event_type", "event_time", "dwell_ms", "rating", "session_id", "device")
CLEAN_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "event_time",
    "event_time_ms",
    "dwell_ms",
    "rating",
    "session_id",
    "device",
)
#: Event times before this are impossible for a behaviour log (and usually a seconds/ms mix-up).
MIN_EVENT_TIME_MS = 631152000000  # 1990-01-01T00:00:00Z


@dataclass(frozen=True)
class CleanParams:
    """The knobs of :func:`transform`; defaults come from attnrec.settings."""

    dt: str
    event_time_tolerance_hours: int = 24
    max_dwell_ms: int = 6 * 3600 * 1000
    bot_events_per_day: int = 5000
    dedupe_lookback_days: int = 7

    @property
    def max_event_time_ms(self) -> int:
        """End of the landing day (UTC) plus the clock-skew tolerance, in epoch ms."""
        day_end = dt_.datetime.fromisoformat(self.dt).replace(tzinfo=dt_.timezone.utc) + dt_.timedelta(days=1)
        return int((day_end + dt_.timedelta(hours=self.event_time_tolerance_hours)).timestamp() * 1000)


def extract(spark, raw_dir: str):
    """Raw lines with the file they came from. Plain and gzip JSON Lines both read as text."""
    from pyspark.sql import functions as F

    if not lake.exists(raw_dir):
        raise FileNotFoundError(
            f"no raw events partition at {raw_dir}; land the day's logs there (raw/events/dt=YYYY-MM-DD/*.jsonl[.gz]) "
            "or run the DAG for a date that has data"
        )
    df = spark.read.option("lineSep", "\n").text(raw_dir)
    return df.select(F.col("value").alias("raw_line"), F.input_file_name().alias("source_file"))


def content_hash(*columns):
    """sha256 of the normalised contract columns: two events with the same hash carry the same content."""
    from pyspark.sql import functions as F

    return F.sha2(F.to_json(F.struct(*(columns or [F.col(c) for c in CLEAN_COLUMNS]))), 256)


def lookback_days(dt: str, days: int) -> list[str]:
    """The ``days`` landing days before ``dt`` (oldest first), the window late re-sends are checked against."""
    day = dt_.date.fromisoformat(dt)
    return [(day - dt_.timedelta(days=k)).isoformat() for k in range(days, 0, -1)]


def extract_earlier(spark, root: str, params: CleanParams):
    """``event_id, content`` of every event in the published clean partitions of the look-back window.

    ``None`` when the window is empty (0 days) or none of its days is published. Only complete published
    partitions count (``lake.list_partitions``), never day ``dt`` itself, which this run replaces.
    """
    from pyspark.sql import functions as F

    wanted = set(lookback_days(params.dt, params.dedupe_lookback_days))
    days = [d for d in lake.list_partitions(root, lake.CLEAN_EVENTS) if d in wanted]
    if not days:
        return None
    paths = [lake.partition(root, lake.CLEAN_EVENTS, d) for d in days]
    earlier = spark.read.parquet(*paths).select(*CLEAN_COLUMNS)
    return earlier.select("event_id", content_hash().alias("content"))


def transform(raw, params: CleanParams, earlier=None):
    """Classify every raw line. Returns ``(clean, quarantine, duplicates)`` DataFrames.

    ``clean`` has the contract columns; ``quarantine`` has raw_line, reason, source_file; ``duplicates``
    holds identical re-sends of a clean event (same event_id, same content), which are only counted.
    ``earlier`` (optional, from :func:`extract_earlier`) is ``event_id, content`` of events already
    published on earlier days: a valid line whose event_id is there is a duplicate when its content is the
    same and a ``conflicting_duplicate_event_id`` when it differs; it is never clean again.
    Of the remaining new events, those of a user with more than ``params.bot_events_per_day`` of them
    are quarantined as ``bot_user`` (their identical re-sends stay counted as duplicates).
    Pure: no I/O, deterministic for the same input.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in RAW_FIELDS] + [T.StructField("_corrupt_record", T.StringType())]
    )
    parsed = raw.withColumn(
        "j", F.from_json("raw_line", schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"})
    )
    line = F.trim(F.col("raw_line"))

    def field(name: str):
        return F.col(f"j.{name}")

    def trimmed(name: str):
        return F.trim(field(name))

    def is_compound(name: str):  # an object or a list where a scalar belongs
        return trimmed(name).startswith("{") | trimmed(name).startswith("[")

    event_time_raw = trimmed("event_time")
    is_epoch = event_time_raw.rlike(r"^-?[0-9]{1,15}$")
    has_offset = event_time_raw.rlike(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+(Z|[+-][0-9]{2}(:?[0-9]{2})?)$")
    iso_ts = F.try_to_timestamp(event_time_raw)
    event_time_ms = (
        F.when(is_epoch, event_time_raw.try_cast("bigint"))
        .when(has_offset & iso_ts.isNotNull(), F.unix_micros(iso_ts) / 1000)
        .cast("bigint")
    )
    dwell = trimmed("dwell_ms")
    dwell_ms = dwell.try_cast("bigint")
    rating_raw = trimmed("rating")
    rating = rating_raw.try_cast("double")
    event_type = F.lower(trimmed("event_type"))

    missing = [(F.col("j").isNull() | field(n).isNull() | (trimmed(n) == ""), f"missing_{n}") for n in RAW_FIELDS[:5]]
    rules = [
        (line == "", "empty_line"),
        (field("_corrupt_record").isNotNull() | ~line.startswith("{") | ~line.endswith("}"), "malformed_json"),
        *missing,
        (is_compound("event_id") | is_compound("user_id") | is_compound("item_id"), "wrong_type_id"),
        (~event_type.isin(*EVENT_TYPES), "unknown_event_type"),
        (event_time_ms.isNull(), "unparseable_event_time"),
        (event_time_ms < MIN_EVENT_TIME_MS, "event_time_too_old"),
        (event_time_ms > params.max_event_time_ms, "event_time_after_landing_day"),
        (dwell.isNotNull() & (dwell != "") & dwell_ms.isNull(), "wrong_type_dwell_ms"),
        (dwell_ms < 0, "negative_dwell_ms"),
        (dwell_ms > params.max_dwell_ms, "absurd_dwell_ms"),
        (rating_raw.isNotNull() & (rating_raw != "") & rating.isNull(), "wrong_type_rating"),
        ((event_type == "rate") & rating.isNull(), "missing_rating_on_rate"),
        ((event_type != "rate") & rating.isNotNull(), "rating_on_non_rate_event"),
        ((rating < RATING_MIN) | (rating > RATING_MAX), "rating_out_of_range"),
    ]
    reason = F.lit(None).cast("string")
    for condition, name in reversed(rules):  # the first rule broken wins
        reason = F.when(F.coalesce(condition, F.lit(False)), F.lit(name)).otherwise(reason)

    def optional_text(name: str):
        return F.when(trimmed(name) != "", trimmed(name))

    classified = parsed.select(
        "raw_line",
        "source_file",
        reason.alias("reason"),
        trimmed("event_id").alias("event_id"),
        trimmed("user_id").alias("user_id"),
        trimmed("item_id").alias("item_id"),
        event_type.alias("event_type"),
        F.timestamp_millis(event_time_ms).alias("event_time"),
        event_time_ms.alias("event_time_ms"),
        dwell_ms.alias("dwell_ms"),
        rating.alias("rating"),
        optional_text("session_id").alias("session_id"),
        optional_text("device").alias("device"),
    )

    valid = classified.where(F.col("reason").isNull()).withColumn("content", content_hash())
    seen_before = F.lit(False)
    if earlier is not None:  # late re-sends of events published on earlier days
        known = earlier.groupBy("event_id").agg(F.collect_set("content").alias("earlier_contents"))
        valid = valid.join(known, "event_id", "left")
        seen_before = F.col("earlier_contents").isNotNull()
        same_before = F.coalesce(F.array_contains("earlier_contents", F.col("content")), F.lit(False))
    else:
        same_before = F.lit(False)
    late = valid.where(seen_before)
    new = valid.where(~seen_before)

    by_id = Window.partitionBy("event_id").orderBy("event_time_ms", "content", "raw_line", "source_file")
    ranked = new.withColumn("pos", F.row_number().over(by_id))
    ranked = ranked.withColumn("kept_content", F.first("content").over(by_id))
    kept = ranked.where(F.col("pos") == 1)
    per_user = kept.groupBy("user_id").agg(F.count(F.lit(1)).alias("user_events"))
    kept = kept.join(per_user, "user_id")
    is_bot = F.col("user_events") > params.bot_events_per_day

    clean = kept.where(~is_bot).select(*CLEAN_COLUMNS)
    bots = kept.where(is_bot).select("raw_line", F.lit("bot_user").alias("reason"), "source_file")
    duplicates = (
        ranked.where((F.col("pos") > 1) & (F.col("content") == F.col("kept_content")))
        .select("raw_line", "source_file", "event_id")
        .unionByName(late.where(same_before).select("raw_line", "source_file", "event_id"))
    )
    conflicts = (
        ranked.where((F.col("pos") > 1) & (F.col("content") != F.col("kept_content")))
        .select("raw_line", "source_file")
        .unionByName(late.where(~same_before).select("raw_line", "source_file"))
        .select("raw_line", F.lit("conflicting_duplicate_event_id").alias("reason"), "source_file")
    )
    quarantine = classified.where(F.col("reason").isNotNull()).select("raw_line", "reason", "source_file")
    return clean, quarantine.unionByName(conflicts).unionByName(bots), duplicates


def reconcile(dt: str, raw_lines: int, clean: int, quarantined_by_reason: dict[str, int], duplicates: int) -> dict:
    """The machine-readable summary written beside the clean partition; raises if the numbers do not add up."""
    quarantined = sum(quarantined_by_reason.values())
    if raw_lines != clean + quarantined + duplicates:
        raise RuntimeError(
            f"reconciliation failed for dt={dt}: raw_lines={raw_lines} != clean={clean} + quarantined={quarantined} "
            f"+ duplicates={duplicates}; this is a bug in jobs/clean.py, please report it with the raw partition"
        )
    return {
        "dt": dt,
        "raw_lines": raw_lines,
        "clean": clean,
        "quarantined": quarantined,
        "quarantined_by_reason": dict(sorted(quarantined_by_reason.items())),
        "duplicates": duplicates,
    }


def load(clean, quarantine, root: str, dt: str) -> tuple[str, str]:
    """Write both outputs to their staging partitions, replacing whatever a previous attempt left."""
    clean_dir = lake.staging(root, lake.CLEAN_EVENTS, dt)
    quarantine_dir = lake.staging(root, lake.QUARANTINE_EVENTS, dt)
    clean.repartition(4, "user_id").sortWithinPartitions("user_id", "event_time_ms").write.mode("overwrite").parquet(
        clean_dir
    )
    quarantine.coalesce(1).write.mode("overwrite").parquet(quarantine_dir)
    return clean_dir, quarantine_dir


def run(spark, root: str, params: CleanParams) -> dict:
    """extract -> transform -> load, then count from the written files and write the reconciliation."""
    raw = extract(spark, lake.join(root, lake.RAW_EVENTS, f"dt={params.dt}")).cache()
    earlier = extract_earlier(spark, root, params)
    clean, quarantine, duplicates = transform(raw, params, earlier)
    clean_dir, quarantine_dir = load(clean, quarantine, root, params.dt)
    by_reason = {
        row["reason"]: row["count"]
        for row in spark.read.parquet(quarantine_dir).groupBy("reason").count().collect()  # a few rows
    }
    summary = reconcile(
        params.dt,
        raw_lines=raw.count(),
        clean=spark.read.parquet(clean_dir).count(),
        quarantined_by_reason=by_reason,
        duplicates=duplicates.count(),
    )
    lake.write_json(lake.join(clean_dir, lake.RECONCILIATION_FILE), summary)
    raw.unpersist()
    return summary


def main(argv: list[str] | None = None) -> int:
    from attnrec.settings import get_settings
    from attnrec.spark import get_spark

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dt", required=True, type=check_dt, help="landing day YYYY-MM-DD (the DAG's logical date)")
    parser.add_argument("--data-root", help="lake root (default: ATTNREC_DATA_ROOT)")
    args = parser.parse_args(argv)
    settings = get_settings()
    params = CleanParams(
        dt=args.dt,
        event_time_tolerance_hours=settings.event_time_tolerance_hours,
        max_dwell_ms=settings.max_dwell_ms,
        bot_events_per_day=settings.bot_events_per_day,
        dedupe_lookback_days=settings.dedupe_lookback_days,
    )
    spark = get_spark(f"attnrec-clean-{args.dt}")
    try:
        summary = run(spark, args.data_root or settings.data_root, params)
    except FileNotFoundError as err:
        print(f"clean: {err}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(
        f"clean dt={summary['dt']}: raw_lines={summary['raw_lines']} clean={summary['clean']} "
        f"quarantined={summary['quarantined']} duplicates={summary['duplicates']} "
        f"by_reason={summary['quarantined_by_reason']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
