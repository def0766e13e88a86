"""Spark job: build the model's features for day D from the clean events of D and the days before it.

    clean/events/dt<=D (bounded look-back) + raw/items  ──▶  _staging/features/sequences/dt=D
                                                         ──▶  _staging/features/items/dt=D

sequences: one row per user, their last ``max_seq_len`` events oldest -> newest (ties broken by event_id),
as parallel arrays: item ids, event types, epoch-ms times, dwell, the time gap to the previous event, a dwell
strength in [0, 1] (log-scaled, 1.0 at ``dwell_saturation_s``) and the interest the event type shows (1 positive,
0 exposure such as impressions and skips, -1 negative such as dislikes), the rating (``ratings``, null when none)
and the event's ``attention`` strength in [-1, 1] (:func:`attention`: from event type, rating and dwell), the
UTC hour and weekday (0 = Monday) of each event and whether it opens a session (null without a session id), the signals
as of each event's own time (:func:`item_signals` and jobs/user_pass.py; only strictly earlier events count, no
look-ahead): the item's heat
(``item_heats``) and positive interactions in the 7 days before (``item_counts_7d``), the user's events in the 7 days
before (``user_events_7d``), and the event's ``devices`` (null when none); and the
user's activity over the whole look-back (events, active days, first and last event), and ``seen_item_ids``: every
distinct item the user had an event of a "seen" type with (``seen_types``, default every type but impression) over
the whole look-back, not only the last ``max_seq_len`` events (candidates never serve them to the user).
Catalogue lines that cannot be used go to quarantine/items/dt=D (raw_line, reason, source_file), never dropped.
items: the item vocabulary (``item_idx`` 1..N, 0 is padding) with content (title, categories, year), popularity
(all events in the look-back), positive interactions in the last 1, 7 and 30 days up to the end of D, ``heat``
(positive interactions decayed with a ``heat_half_life_days`` half-life to the end of D), first and last seen, and
``available`` (false retires the item: candidates never serve it). ``available`` comes from the item's kept catalogue
line (missing: true); an item absent from raw/items today keeps its value of the previous features/items partition
(true when it never had one), so a catalogue file that stops listing an item does not retire it: a line with
``"available": false`` does.
Indices carry over from the newest earlier features/items partition, so model versions trained on different days
see the same index for the same item; new items are appended in (first seen, item_id) order.

The clean partition of D itself is read from staging when it is not yet published (the DAG publishes it
after its gate, so in the DAG it is always published by the time this runs). ``_manifest.json`` beside the
sequences lists the clean days read and the vocabulary carried over; the features gate fails when a day of the
look-back window has raw events but was not among them.

``jobs/clean.py --validate`` calls :func:`prebuild` after its gate passes: the features and their gate in the clean
job's Spark application (one JVM a day instead of two). ``featurize --validate`` then adopts those staged features
(:func:`adopt_prebuilt`) when today's inputs have the fingerprint they were built from, and builds them otherwise.

Run: ``spark-submit jobs/featurize.py --dt 2026-01-31``.
"""

from __future__ import annotations

import datetime as dt_
import math
from dataclasses import dataclass

from attnrec import lake
from attnrec.args import DataRoot, Dt, Validate, spark_submit_main
from attnrec.contracts import EXPOSURE_EVENT_TYPES, NEGATIVE_EVENT_TYPES, SEEN_EVENT_TYPES
from attnrec.spark import session_conf, sql_strings, without_dictionary

ITEM_SCHEMA_DDL = (
    "item_id STRING, title STRING, categories ARRAY<STRING>, release_year STRING, published_at STRING, "
    "available BOOLEAN, _corrupt_record STRING"
)


#: The sequences' columns whose values hardly repeat, written without Parquet's dictionary encoding
#: (:func:`attnrec.spark.without_dictionary`): the user, and the arrays of times and measurements
SEQUENCE_PLAIN_COLUMNS = (
    "user_id",
    *(
        f"{name}.list.element"
        for name in ("event_times_ms", "time_gaps_ms", "dwell_ms", "dwell_strength", "attention", "item_heats")
    ),
)
#: Spark's Arrow batches to the per-user pass are cut by rows only (``maxRecordsPerBatch``, 10,000 by default):
#: with a byte limit Spark measures the whole batch after every row it adds, a tenth of the features' JVM time
#: (docs/benchmarks.md#etl), and the pass holds its whole partition anyway (jobs/user_pass.py)
ROWS_ONLY_ARROW_BATCHES = {"spark.sql.execution.arrow.maxBytesPerBatch": str(2**31 - 1)}

ITEM_COLUMNS = (
    "item_idx",
    "item_id",
    "title",
    "categories",
    "year",
    "popularity",
    "interactions_1d",
    "interactions_7d",
    "interactions_30d",
    "heat",
    "first_seen_ms",
    "last_seen_ms",
    "available",
)


@dataclass(frozen=True)
class FeatureParams:
    dt: str
    max_seq_len: int = 200
    lookback_days: int = 365
    exposure_types: tuple[str, ...] = EXPOSURE_EVENT_TYPES
    negative_types: tuple[str, ...] = NEGATIVE_EVENT_TYPES
    seen_types: tuple[str, ...] = SEEN_EVENT_TYPES
    dwell_saturation_s: float = 600.0
    heat_half_life_days: float = 7.0
    low_rating_max: float = 2.0  # a rating at or below this is negative, like a dislike
    bounce_dwell_s: float = 2.0  # a dwell below this is a bounce: seen, no interest
    rating_max: float = 5.0  # the top of the rating scale (raw schema: 0.5 to 5)
    as_of_window_days: int = 7  # the window of item_counts_7d and user_events_7d (the column names say 7)

    @property
    def day_end_ms(self) -> int:
        """End of day D (UTC) in epoch ms: the reference time of the popularity windows and heat."""
        day_end = dt_.datetime.fromisoformat(self.dt).replace(tzinfo=dt_.timezone.utc) + dt_.timedelta(days=1)
        return int(day_end.timestamp() * 1000)

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


def lookback_inputs(root: str, params: FeatureParams) -> dict:
    """What day D's features are built from: ``{"clean": clean partition paths, "items_from": vocabulary path}``."""
    return {"clean": clean_partitions(root, params), "items_from": previous_items_partition(root, params.dt)}


def extract(spark, root: str, params: FeatureParams, inputs: dict | None = None):
    """(events, catalogue lines or None, previous vocabulary or None), from ``inputs`` (:func:`lookback_inputs`)."""
    inputs = inputs or lookback_inputs(root, params)
    events = spark.read.parquet(*inputs["clean"])
    items_dir = lake.raw_items(root)
    catalogue = None
    if lake.exists(items_dir):
        from pyspark.sql import functions as F

        catalogue = (
            spark.read.option("lineSep", "\n")
            .text(items_dir)
            .select(F.col("value").alias("raw_line"), F.input_file_name().alias("source_file"))
        )
    previous = inputs["items_from"]
    vocab = None
    if previous:
        vocab = spark.read.parquet(previous)
        # a partition written before items had ``available``: every item in it was servable
        vocab = vocab.selectExpr(
            "item_id", "item_idx", "available" if "available" in vocab.columns else "true AS available"
        )
    return events, catalogue, vocab


#: The catalogue fields an accepted line keeps (:func:`rank_catalogue`).
CATALOGUE_FIELDS = ("title", "categories", "release_year", "published_at", "available")


def classify_catalogue(lines):
    """Raw catalogue lines -> ``(accepted rows, rejected lines, identical duplicate count column)``:
    ``catalogue_outputs(rank_catalogue(lines))``.

    Accepted: item_id (trimmed), title, categories, release_year, published_at, available (null when the line
    has none), one row per item_id. Rejected,
    with raw_line, reason, source_file: ``empty_line``, ``malformed_json`` (not one JSON object, or a field of
    the wrong type), ``missing_item_id``, and ``conflicting_duplicate_item_id`` for other versions of an item
    listed more than once (the version in the last file by name wins, so a newer catalogue file updates an item).
    Identical repeats are only counted (third value: a one-row DataFrame of ``duplicates`` and ``accepted``).
    """
    return catalogue_outputs(rank_catalogue(lines))


def rank_catalogue(lines):
    """Every catalogue line once, with its ``reason`` (null when it is a valid line) and, for a valid line, its
    fields, ``content`` and its place among the lines of its item_id (``pos``, 1 = the version kept, and
    ``kept_content``). :func:`catalogue_outputs` derives all three outputs from it: :func:`run` caches it, so the
    catalogue is parsed and ranked once for the items, the rejected lines and the counts.

    One scan and one parse of each line: the valid lines are ranked in the same window pass the rejected ones go
    through (their item_id is null, so they form one group of their own, and their ``pos`` stays null). Splitting
    the lines into two branches before ranking read and parsed the catalogue once per branch, and Spark pushed the
    reason's filter below the parse, which parsed every line again for each field it tested."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    parsed = lines.select(
        "raw_line",
        "source_file",
        F.from_json(
            "raw_line", ITEM_SCHEMA_DDL, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"}
        ).alias("j"),
    )
    line = F.trim("raw_line")
    item_id = F.trim("j.item_id")
    reason = (
        F.when(line == "", "empty_line")
        .when(F.col("j._corrupt_record").isNotNull() | ~line.startswith("{") | ~line.endswith("}"), "malformed_json")
        .when(item_id.isNull() | (item_id == ""), "missing_item_id")
    )
    valid = F.col("reason").isNull()
    classified = parsed.select("raw_line", "source_file", "j", reason.alias("reason")).select(
        F.when(valid, item_id).alias("item_id"),
        *(F.when(valid, F.col(f"j.{f}")).alias(f) for f in CATALOGUE_FIELDS),
        "raw_line",
        "source_file",
        "reason",
    )
    classified = classified.withColumn("content", F.when(valid, F.to_json(F.struct(*CATALOGUE_FIELDS))))
    newest_first = Window.partitionBy("item_id").orderBy(F.col("source_file").desc(), F.col("raw_line"))
    return classified.select(
        "item_id",
        *CATALOGUE_FIELDS,
        "raw_line",
        "source_file",
        "content",
        F.when(valid, F.row_number().over(newest_first)).alias("pos"),
        F.when(valid, F.first("content").over(newest_first)).alias("kept_content"),
        "reason",
    )


def catalogue_outputs(ranked):
    """``(accepted rows, rejected lines, identical duplicate count column)`` from :func:`rank_catalogue`'s lines."""
    from pyspark.sql import functions as F

    valid = ranked.where(F.col("reason").isNull())
    accepted = valid.where(F.col("pos") == 1).select("item_id", *CATALOGUE_FIELDS)
    rejected = (
        ranked.where(F.col("reason").isNotNull())
        .select("raw_line", "reason", "source_file")
        .unionByName(
            valid.where((F.col("pos") > 1) & (F.col("content") != F.col("kept_content"))).select(
                "raw_line", F.lit("conflicting_duplicate_item_id").alias("reason"), "source_file"
            )
        )
    )
    same = (F.col("pos") > 1) & (F.col("content") == F.col("kept_content"))
    counts = valid.agg(  # one job for both counts the summary prints
        F.count(F.when(same, 1)).alias("duplicates"), F.count(F.when(F.col("pos") == 1, 1)).alias("accepted")
    )
    return accepted, rejected, counts


def interest(params: FeatureParams, event_type: str = "e.event_type") -> str:
    """SQL for the interest an event type shows: -1 negative, 0 exposure, 1 positive."""
    return (
        f"CASE WHEN {event_type} IN ({sql_strings(params.negative_types)}) THEN -1 "
        f"WHEN {event_type} IN ({sql_strings(params.exposure_types)}) THEN 0 ELSE 1 END"
    )


def attention(params: FeatureParams, e: str = "e") -> str:
    """SQL for an event's attention strength in [-1, 1], the one definition the model reads as an input and as
    the weight of a training target (docs/contracts.md#attention-strength), first rule that applies:

    * -1: a negative event type (dislike), or a rating at or below ``low_rating_max``;
    * 0: an exposure type (impression, skip), or a dwell under ``bounce_dwell_s`` (a bounce: seen, no interest);
    * rating / ``rating_max``: a rating above ``low_rating_max`` (5 stars 1.0, 4 stars 0.8, 3 stars 0.6);
    * the dwell strength (log-scaled, 1.0 at ``dwell_saturation_s``) when the event has a dwell;
    * 1: any other positive event (a click or purchase without dwell or rating).

    Rounded to 4 decimals so re-runs are row-identical."""
    dwell_strength = (
        f"LEAST(1.0D, LN(1.0D + GREATEST({e}.dwell_ms, 0) / 1000.0D) / LN(1.0D + {params.dwell_saturation_s}D))"
    )
    return (
        f"CAST(ROUND(CASE WHEN {e}.event_type IN ({sql_strings(params.negative_types)}) THEN -1.0D "
        f"WHEN {e}.event_type IN ({sql_strings(params.exposure_types)}) THEN 0.0D "
        f"WHEN {e}.rating IS NOT NULL AND {e}.rating <= {params.low_rating_max}D THEN -1.0D "
        f"WHEN {e}.rating IS NOT NULL THEN LEAST(1.0D, {e}.rating / {params.rating_max}D) "
        f"WHEN {e}.dwell_ms IS NOT NULL AND {e}.dwell_ms < {params.bounce_dwell_s * 1000.0}D THEN 0.0D "
        f"WHEN {e}.dwell_ms IS NOT NULL THEN {dwell_strength} "
        "ELSE 1.0D END, 4) AS FLOAT)"
    )


DAY_MS = 86_400_000


def _running_before(rows, key: str, window_ms: int, adds, weight):
    """``rows`` with ``_count``: per ``key``, how many earlier rows (event_time_ms strictly before the row's own) with
    ``adds`` true lie in the ``window_ms`` before it, and ``_weight_sum``, the sum of ``weight`` over every earlier
    row with ``adds`` true (no window). One sort by (key, time) and running sums over frames that all begin at the
    key's first row, which Spark evaluates incrementally (linear, whatever the events per window; a sliding frame
    re-adds its whole window for every row): the window's count is the running count of rows before the row's time
    less the running count of rows before the window's start."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ordered = Window.partitionBy(key).orderBy("event_time_ms")
    before = ordered.rangeBetween(Window.unboundedPreceding, -1)
    before_window = ordered.rangeBetween(Window.unboundedPreceding, -window_ms - 1)  # t_j < t - window_ms
    counted = F.count(F.when(adds, F.lit(1)))
    # one select: Spark evaluates all the frames in one window operator over one buffer of the key's rows (added one
    # withColumn at a time they became two operators, each buffering every row again)
    return rows.select(
        "*",
        (counted.over(before) - counted.over(before_window)).cast("int").alias("_count"),
        F.coalesce(F.sum(F.when(adds, weight)).over(before), F.lit(0.0)).alias("_weight_sum"),
    )


def item_signals(events, params: FeatureParams):
    """``events`` with the item's signals as of each event's own time, from strictly earlier events only (no
    look-ahead; an event at the same millisecond does not count), over the whole look-back:

    * ``item_heat``: the item's positive interactions (interest 1, as the item table's ``heat``) decayed with a
      ``heat_half_life_days`` half-life to the event's time, rounded to 4 decimals;
    * ``item_count_7d``: the item's positive interactions in the ``as_of_window_days`` before the event.

    One window pass partitioned by item (the user's own ``user_events_7d`` comes from the per-user pass,
    jobs/user_pass.py). The decayed sum is exp(-r (t - t0)) * sum of exp(r (t_j - t0)) over earlier t_j, t0 the start
    of the look-back, exact in doubles while the look-back spans at most 1,000 half-lives. For the decay (not for
    which events are earlier, nor for the 7-day counts) a time before the look-back counts as its start and one past
    the end of D plus a day as that end: a late event older than the look-back is a year of half-lives old anyway."""
    from pyspark.sql import functions as F

    half_lives = (params.lookback_days + 2) / params.heat_half_life_days
    if half_lives > 1000:
        raise ValueError(
            f"a look-back of {params.lookback_days} days is {half_lives:.0f} heat half-lives of "
            f"{params.heat_half_life_days} days; the as-of heat overflows beyond 1000: shorten ATTNREC_LOOKBACK_DAYS "
            "or lengthen the half-life"
        )
    window_ms = params.as_of_window_days * DAY_MS
    origin = params.day_end_ms - (params.lookback_days + 1) * DAY_MS
    rate = math.log(2) / (params.heat_half_life_days * DAY_MS)  # per ms
    span_ms = (params.lookback_days + 2) * DAY_MS
    since = F.least(F.greatest(F.col("event_time_ms") - F.lit(origin), F.lit(0)), F.lit(span_ms))
    positive = F.expr(interest(params, "event_type")) == 1
    by_item = _running_before(events, "item_id", window_ms, positive, F.exp(since * rate))
    return by_item.select(
        *events.columns,
        F.col("_count").alias("item_count_7d"),
        F.round(F.exp(-since * rate) * F.col("_weight_sum"), 4).cast("float").alias("item_heat"),
    )


def event_values(params: FeatureParams):
    """The per-event columns of the sequences that need no neighbour, over the events aliased ``e``."""
    from pyspark.sql import functions as F

    dwell = F.col("e.dwell_ms")
    return [
        # greatest/least skip nulls: keep a missing dwell missing
        F.when(
            dwell.isNotNull(),
            F.least(
                F.lit(1.0), F.log1p(F.greatest(dwell, F.lit(0)) / 1000.0) / F.log1p(F.lit(params.dwell_saturation_s))
            ),
        )
        .cast("float")
        .alias("_dwell_strength"),
        F.expr(f"CAST({interest(params)} AS TINYINT)").alias("_interest"),
        F.col("e.rating").cast("float").alias("_rating"),
        F.expr(attention(params)).alias("_attention"),
        # UTC by arithmetic on epoch ms, whatever the session time zone: hour 0..23, weekday 0 = Monday (1970-01-01
        # was a Thursday)
        F.expr("CAST(FLOOR(PMOD(e.event_time_ms, 86400000) / 3600000) AS TINYINT)").alias("_hour"),
        F.expr("CAST(PMOD(FLOOR(e.event_time_ms / 86400000) + 3, 7) AS TINYINT)").alias("_weekday"),
    ]


def transform_sequences(events, params: FeatureParams):
    """One row per user: their last ``max_seq_len`` events as time-ordered parallel arrays, activity, and the
    sorted distinct ``seen_item_ids`` of the whole look-back.

    Spark computes every per-event value (the item signals, :func:`item_signals`, one window pass by item; the values
    of :func:`event_values`; the event's date and whether its type is a seen one), shuffles the events by user, and
    the per-user pass (jobs/user_pass.py, Arrow batches in Spark's Python workers) orders each user's events, counts
    ``user_events_7d`` and cuts the arrays."""
    from functools import partial

    from pyspark.sql import functions as F

    from jobs import user_pass

    if "rating" not in events.columns:  # clean events always have it; small test frames may not
        events = events.withColumn("rating", F.lit(None).cast("double"))
    if "session_id" not in events.columns:
        events = events.withColumn("session_id", F.lit(None).cast("string"))
    if "device" not in events.columns:
        events = events.withColumn("device", F.lit(None).cast("string"))
    seen = F.col("e.event_type").isin(list(params.seen_types)) if params.seen_types else F.lit(False)
    rows = (
        item_signals(events, params)
        .alias("e")
        .select(
            *(F.col(f"e.{name}") for name in user_pass.SORT_KEYS if name != "rating"),
            F.col("e.rating").cast("double").alias("rating"),
            "e.item_heat",
            "e.item_count_7d",
            *event_values(params),
            F.unix_date(F.to_date(F.timestamp_millis("e.event_time_ms"))).alias("_day"),
            seen.alias("_seen"),
        )
    )
    per_user = partial(user_pass.per_user, window_ms=params.as_of_window_days * DAY_MS, max_len=params.max_seq_len)
    return rows.repartition("user_id").mapInArrow(per_user, user_pass.output_schema())


def transform_items(events, catalogue, vocab, params: FeatureParams):
    """The item table: every item in the catalogue or the events, with content, popularity, heat, ``available`` and a
    stable index. ``vocab``: the previous partition's item_id, item_idx and (when it has one) available."""
    import math

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    age_days = F.greatest(F.lit(params.day_end_ms) - F.col("event_time_ms"), F.lit(0)) / 86_400_000.0
    positive = F.expr(interest(params, "event_type")) == 1

    def positive_within(days: int):
        return F.sum(F.when(positive & (age_days <= days), 1).otherwise(0)).alias(f"interactions_{days}d")

    stats = events.groupBy("item_id").agg(
        F.count(F.lit(1)).alias("popularity"),
        positive_within(1),
        positive_within(7),
        positive_within(30),
        F.sum(F.when(positive, F.exp(-math.log(2) * age_days / params.heat_half_life_days)).otherwise(0.0)).alias(
            "heat"
        ),
        F.min("event_time_ms").alias("first_seen_ms"),
        F.max("event_time_ms").alias("last_seen_ms"),
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
                # listed today: the line says (no field: true); null below means not in today's catalogue
                F.coalesce(F.col("available"), F.lit(True)).alias("listed_available")
                if "available" in catalogue.columns
                else F.lit(True).alias("listed_available"),
            )
            .dropDuplicates(["item_id"])
        )
    else:
        content = events.sparkSession.createDataFrame(
            [], "item_id string, title string, categories array<string>, year int, listed_available boolean"
        )
    items = content.join(stats, "item_id", "full_outer")
    if vocab is None:  # the first day: nothing to carry over, every item is new (no join, no job for the offset)
        items = items.withColumn("available", F.lit(None).cast("boolean")).withColumn(
            "item_idx", F.lit(None).cast("int")
        )
        offset = 0
    else:
        if "available" not in vocab.columns:
            vocab = vocab.withColumn("available", F.lit(True))
        # an item once indexed keeps its index, even on a day it is neither seen nor in the catalogue
        items = items.join(vocab, "item_id", "full_outer")
        offset = vocab.agg(F.coalesce(F.max("item_idx"), F.lit(0)).alias("m")).first()["m"]  # one number
    items = items.select(
        "item_id",
        "title",
        F.coalesce("categories", F.array().cast("array<string>")).alias("categories"),
        "year",
        F.coalesce("popularity", F.lit(0)).cast("long").alias("popularity"),
        *(F.coalesce(f"interactions_{d}d", F.lit(0)).cast("long").alias(f"interactions_{d}d") for d in (1, 7, 30)),
        # rounded: a float sum depends on the order partitions are added in; 1e-6 keeps reruns row-identical
        F.round(F.coalesce("heat", F.lit(0.0)), 6).cast("double").alias("heat"),
        "first_seen_ms",
        "last_seen_ms",
        # the newest catalogue line decides; an item not listed today keeps its last known value
        F.coalesce("listed_available", "available", F.lit(True)).alias("available"),
        "item_idx",
    )
    new_order = Window.orderBy(F.col("first_seen_ms").asc_nulls_last(), F.col("item_id"))
    new_items = items.where(F.col("item_idx").isNull()).withColumn(
        "item_idx", (F.row_number().over(new_order) + F.lit(offset)).cast("int")
    )
    known = items.where(F.col("item_idx").isNotNull()).withColumn("item_idx", F.col("item_idx").cast("int"))
    return known.unionByName(new_items).select(*ITEM_COLUMNS)


def load(sequences, items, root: str, dt: str, rejected_items=None) -> tuple[str, str]:
    """Write the staged features (and the rejected catalogue lines, when there is a catalogue).

    The sequences are written as the per-user pass left them (hash-partitioned by user, as many files as adaptive
    execution made partitions, at most ``spark.sql.shuffle.partitions``), each file sorted by user, as the pass yields
    its rows (no sort of its own: a partition's user ids by their UTF-8 bytes, Spark's order of strings): a
    repartition into a fixed number of files would shuffle every user's arrays once more (docs/benchmarks.md#etl).
    The item table is written after them, not beside them on a second thread: written side by side, the sequences'
    per-column Parquet options were now and then not applied (docs/benchmarks.md#etl)."""
    seq_dir = lake.staging(root, lake.FEATURE_SEQUENCES, dt)
    items_dir = lake.staging(root, lake.FEATURE_ITEMS, dt)
    with session_conf(sequences.sparkSession, ROWS_ONLY_ARROW_BATCHES):  # the per-user pass runs in this write
        without_dictionary(sequences.write.mode("overwrite"), SEQUENCE_PLAIN_COLUMNS).parquet(seq_dir)
    items.coalesce(1).sortWithinPartitions("item_idx").write.mode("overwrite").parquet(items_dir)
    if rejected_items is not None:
        rejected_items.coalesce(1).write.mode("overwrite").parquet(lake.staging(root, lake.QUARANTINE_ITEMS, dt))
    return seq_dir, items_dir


def write_manifest(seq_dir: str, params: FeatureParams, inputs: dict) -> None:
    """``_manifest.json`` beside the staged sequences: the clean days read (with their reconciliation counts) and
    the vocabulary carried over; the features gate checks it against the raw days of the look-back window."""
    days = []
    for path in inputs["clean"]:
        recon_path = lake.join(path, lake.RECONCILIATION_FILE)
        recon = lake.read_json(recon_path) if lake.exists(recon_path) else {}
        counts = {k: recon.get(k) for k in ("raw_lines", "clean", "quarantined", "duplicates")}
        days.append({"dt": path.rsplit("dt=", 1)[1], "path": path, **counts})
    items_from = inputs["items_from"]
    manifest = {
        "dt": params.dt,
        "first_dt": params.first_dt,
        "lookback_days": params.lookback_days,
        "clean_days": days,
        "items_vocabulary_from": items_from and {"dt": items_from.rsplit("dt=", 1)[1], "path": items_from},
    }
    lake.write_json(lake.join(seq_dir, lake.FEATURES_MANIFEST), manifest)


def prebuilt_record(root: str, dt: str) -> str:
    """Where :func:`prebuild` records features it built and gated ahead, for :func:`adopt_prebuilt` to check."""
    return lake.join(root, lake.STAGING, "features_prebuilt", f"dt={dt}.json")


def input_fingerprint(root: str, params: FeatureParams) -> dict:
    """Everything day D's features are built from, as data: the parameters, the clean days of the look-back (D's
    with its reconciliation), the vocabulary carried over and the catalogue files (name, size, modification time).
    Two equal fingerprints mean featurize would read the same inputs; D's clean partition counts as the same whether
    it is staged or published (publishing moves it unchanged)."""
    import dataclasses
    import json

    from pyarrow import fs as pafs

    def files(uri: str, with_mtime: bool) -> list:
        """The data files under ``uri``: name, size (and modification time); a rewrite gets new part names."""
        filesystem, base = lake.filesystem_for(uri)
        found = []
        for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
            if info.type == pafs.FileType.File and not info.base_name.startswith(("_", ".")):
                found.append([info.path.removeprefix(base), info.size, *([info.mtime_ns] if with_mtime else [])])
        return sorted(found)

    inputs = lookback_inputs(root, params)
    day = inputs["clean"][-1]  # D: the newest day of the window, staged or published
    recon_path = lake.join(day, lake.RECONCILIATION_FILE)
    items_dir = lake.raw_items(root)
    fingerprint = {
        "params": dataclasses.asdict(params),
        "clean_days": {path.rsplit("dt=", 1)[1]: files(path, with_mtime=False) for path in inputs["clean"]},
        "reconciliation": lake.read_json(recon_path) if lake.exists(recon_path) else None,
        "items_from": [inputs["items_from"], files(inputs["items_from"], with_mtime=False)]
        if inputs["items_from"]
        else None,
        "catalogue": files(items_dir, with_mtime=True) if lake.exists(items_dir) else [],
    }
    return json.loads(json.dumps(fingerprint))  # tuples as lists: comparable with a record read back


def prebuild(spark, settings, params: FeatureParams) -> bool:
    """Build day D's features and run their gate in the caller's Spark application (the clean job's, right after
    its own gate passed: one application a day instead of two), from the staged clean partition of D.

    Records the inputs (:func:`input_fingerprint`) beside staging when the gate passes; the featurize task then
    adopts the staged features instead of building them again (:func:`adopt_prebuilt`). Returns whether it did.
    Never fails its caller: when the build or the gate fails nothing is recorded, and the featurize task builds
    the features itself and reports the failure there, where it belongs.
    """
    from jobs.validate import gate

    root = settings.data_root
    record = prebuilt_record(root, params.dt)
    print(f"featurize dt={params.dt}: building the features in this application (adopted by the featurize task)")
    try:
        inputs = input_fingerprint(root, params)
        run(spark, root, params)
        passed = gate(spark, "features", params.dt, settings) == 0
    except Exception as err:  # noqa: BLE001 - reported, and the featurize task does the work again
        print(f"featurize dt={params.dt}: building ahead failed ({type(err).__name__}: {err}); the featurize task "
              "builds the features itself")  # fmt: skip
        return False
    if not passed:
        print(f"featurize dt={params.dt}: the features gate failed here; the featurize task builds them again and "
              "reports the failure")  # fmt: skip
        return False
    lake.write_json(record, {"dt": params.dt, "inputs": inputs})
    return True


def discard_record(record: str) -> None:
    """Delete a :func:`prebuilt_record` (nothing when there is none)."""
    if lake.exists(record):
        filesystem, path = lake.filesystem_for(record)
        filesystem.delete_file(path)


def adopt_prebuilt(root: str, params: FeatureParams) -> bool:
    """Take the features :func:`prebuild` staged and gated for day D when they were built from exactly today's
    inputs (the same fingerprint) and are still staged complete: rewrite their manifest with the look-back as it is
    now (D's clean partition published) and return True. The record is used once; anything else returns False
    and featurize builds the features itself."""
    record_uri = prebuilt_record(root, params.dt)
    if not lake.exists(record_uri):
        return False
    record = lake.read_json(record_uri)
    discard_record(record_uri)
    seq_dir = lake.staging(root, lake.FEATURE_SEQUENCES, params.dt)
    items_dir = lake.staging(root, lake.FEATURE_ITEMS, params.dt)
    if not (lake.is_complete(seq_dir) and lake.is_complete(items_dir)):
        print(f"featurize dt={params.dt}: the features built ahead are no longer staged; building them")
        return False
    if record.get("inputs") != input_fingerprint(root, params):
        print(f"featurize dt={params.dt}: the inputs changed since the features were built ahead; building them")
        return False
    write_manifest(seq_dir, params, lookback_inputs(root, params))
    print(f"featurize dt={params.dt}: adopted the features built and gated in the clean job's application")
    return True


def run(spark, root: str, params: FeatureParams) -> dict:
    """extract -> transform -> load for day ``params.dt`` (and the manifest of what it read); returns counts and
    the staged paths."""
    import time

    started = time.monotonic()
    discard_record(prebuilt_record(root, params.dt))  # features built ahead are replaced now
    inputs = lookback_inputs(root, params)
    events, lines, vocab = extract(spark, root, params, inputs)
    catalogue = rejected = ranked = None
    if lines is not None:  # parsed and ranked once (cached) for the items, the rejected lines and the counts
        ranked = rank_catalogue(lines).cache()
        catalogue, rejected, duplicates = catalogue_outputs(ranked)
    seq_dir, items_dir = load(
        transform_sequences(events, params),
        transform_items(events, catalogue, vocab, params),
        root,
        params.dt,
        rejected,
    )
    write_manifest(seq_dir, params, inputs)
    print(f"featurize dt={params.dt}: wrote sequences and items ({time.monotonic() - started:.0f} s)", flush=True)
    summary = {
        "users": spark.read.parquet(seq_dir).count(),
        "items": spark.read.parquet(items_dir).count(),
        "sequences": seq_dir,
        "items_path": items_dir,
    }
    if lines is not None:
        rejected_dir = lake.staging(root, lake.QUARANTINE_ITEMS, params.dt)
        by_reason = spark.read.parquet(rejected_dir).groupBy("reason").count().collect()  # a few rows
        counts = duplicates.first()
        summary["catalogue"] = {
            "lines": ranked.count(),  # one row per catalogue line
            "accepted": counts["accepted"],
            "identical_repeats": counts["duplicates"],
            "rejected_by_reason": {r["reason"]: r["count"] for r in by_reason},
        }
        print(f"featurize dt={params.dt}: catalogue {summary['catalogue']} (rejected lines in {rejected_dir})")
        ranked.unpersist()
    return summary


def params_from(settings, dt: str) -> FeatureParams:
    """Day ``dt``'s parameters from the settings."""
    return FeatureParams(
        dt=dt,
        max_seq_len=settings.max_seq_len,
        lookback_days=settings.lookback_days,
        exposure_types=settings.exposure_event_types,
        negative_types=settings.negative_event_types,
        seen_types=settings.seen_event_types,
        low_rating_max=settings.low_rating_max,
        bounce_dwell_s=settings.bounce_dwell_s,
    )


def main(dt: Dt, data_root: DataRoot = None, validate: Validate = False) -> int:
    """Build day D's features (user sequences, item table) into staging from the clean events up to D; with
    ``--validate``, then the features gate on them in the same session (exit 1 when it fails)."""
    from attnrec.settings import get_settings
    from attnrec.spark import get_spark

    settings = get_settings(data_root=data_root)
    params = params_from(settings, dt)
    if validate and adopt_prebuilt(settings.data_root, params):  # built and gated in clean's application
        return 0
    spark = get_spark(f"attnrec-featurize-{dt}")
    if validate:  # GX's import overlaps the Spark work (pyspark is imported by now) instead of following it
        from jobs.validate import preload_gx

        preload_gx()
    try:
        summary = run(spark, settings.data_root, params)
        print(
            f"featurize dt={dt}: users={summary['users']} items={summary['items']} -> {summary['sequences']}, "
            f"{summary['items_path']}",
            flush=True,
        )
        if not validate:
            return 0
        from jobs.validate import gate

        return gate(spark, "features", dt, settings)
    finally:
        spark.stop()


if __name__ == "__main__":
    spark_submit_main(main, "featurize")
