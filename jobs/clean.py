"""Spark job: clean one landing day of raw behaviour events.

    raw/events/dt=D/*.jsonl[.gz]  ──▶  _staging/clean/events/dt=D       (parquet, contract columns)
                                   ──▶  _staging/quarantine/events/dt=D  (raw_line, reason, source_file)
                                   ──▶  _staging/clean/events/dt=D/_reconciliation.json
                                   ──▶  _staging/identity/users/dt=D     (pseudonym, user_id of the day's users)

Clean events carry the keyed pseudonym in ``user_id`` (jobs/identity.py, docs/privacy.md), never the raw id.

Every raw line ends in exactly one place: clean, quarantine (with the first rule it breaks), or counted
as an identical duplicate of a clean event, so ``raw_lines == clean + quarantined + duplicates``.
Duplicates are found within the day and against the published clean partitions of the previous
``dedupe_lookback_days`` days (late re-sends); users with more than ``bot_events_per_day`` clean events
in the day are labelled bots and their events quarantined as ``bot_user``; an otherwise clean event of a user on
the erased-users list (``erasure/erased_users.parquet``, jobs/erase.py) is quarantined as ``erased_user``.
The gate then validates the staged output and ``publish`` moves it into place.

Run: ``spark-submit jobs/clean.py --dt 2026-01-31`` (or ``python jobs/clean.py --dt ...``).
"""

from __future__ import annotations

import datetime as dt_
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretBytes

from attnrec import lake
from attnrec.args import DataRoot, Dt, Validate, spark_submit_main
from attnrec.contracts import (
    EVENT_TYPES,
    OPTIONAL_EVENT_FIELDS,
    RATING_MAX,
    RATING_MIN,
    REQUIRED_EVENT_FIELDS,
)
from attnrec.privacy import read_erased
from attnrec.spark import sql_strings, without_dictionary, without_statistics
from jobs.identity import identity_table, with_pseudonyms

RAW_FIELDS = REQUIRED_EVENT_FIELDS + OPTIONAL_EVENT_FIELDS
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
#: The clean events' columns whose values hardly repeat in a day, written without Parquet's dictionary encoding
#: (:func:`attnrec.spark.without_dictionary`)
PLAIN_COLUMNS = ("event_id", "user_id", "item_id", "event_time", "event_time_ms", "session_id")
#: The parse's work copy's (:func:`run`): the same and the raw text, without dictionaries and without min/max
#: statistics (:func:`attnrec.spark.without_statistics`: the job's reads of it filter on none of them)
WORK_PLAIN_COLUMNS = ("raw_line", *PLAIN_COLUMNS)
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
    """``event_id`` and the contract columns of every event in the published clean partitions of the look-back
    window (:func:`decide` hashes the ``content`` of only those whose event_id comes again today).

    ``None`` when the window is empty (0 days) or none of its days is published. Only complete published
    partitions count (``lake.list_partitions``), never day ``dt`` itself, which this run replaces.
    """
    wanted = set(lookback_days(params.dt, params.dedupe_lookback_days))
    days = [d for d in lake.list_partitions(root, lake.CLEAN_EVENTS) if d in wanted]
    if not days:
        return None
    paths = [lake.partition(root, lake.CLEAN_EVENTS, d) for d in days]
    return spark.read.parquet(*paths).select(*CLEAN_COLUMNS)


#: Marks, in the outcome of :func:`classify`, an identical re-send that is only counted (not a quarantine reason).
DUPLICATE = "__duplicate__"
#: JSON types (as ``schema_of_variant`` names them) each raw field accepts; anything else is ``wrong_type_*``.
INTEGER_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT")
ACCEPTED_TYPES = {
    "event_id": ("STRING",),
    "user_id": ("STRING",),
    "item_id": ("STRING",),
    "event_type": ("STRING",),
    "event_time": ("STRING", *INTEGER_TYPES),
    "dwell_ms": INTEGER_TYPES,
    "rating": (*INTEGER_TYPES, "DOUBLE", "FLOAT", "DECIMAL"),
    "session_id": ("STRING",),
    "device": ("STRING",),
}
ID_FIELDS = ("event_id", "user_id", "item_id")
#: The whitespace JSON allows around a value (RFC 8259), the only characters the VARIANT parser skips.
JSON_WHITESPACE = " \t\r\n"


def parse(raw, java: bool | None = None):
    """Each raw line parsed as JSON: per field its exact JSON type and its text.

    Columns: raw_line, source_file, ``is_object`` (the line is one JSON object and nothing else; false for text that
    is not JSON, has duplicate keys, is an array/scalar or has anything but whitespace after the object), and per raw
    field ``t_<field>`` (``STRING``, ``BIGINT``, ``DECIMAL(3,1)``, ``DOUBLE``, ``BOOLEAN``, ``OBJECT...``,
    ``ARRAY...``, ``VOID`` for JSON null; null when absent) and ``s_<field>`` (its text). Nothing is coerced here: the
    JSON type decides, so ``"user_id": 42`` is told apart from ``"42"``.

    ``java``: parse with the Java function of jobs/exact_json.py (one streaming pass per line; True: or fail), or
    with Spark SQL alone (False); default: Java where it can be registered. Both give every rule the same input
    (tests/test_exact_json.py). In the Java one a nested value's type names its kind only (``OBJECT``, not
    ``OBJECT<a: BIGINT>``), and a line that is not one object has no types (the SQL one types the fields of a first
    object followed by more).
    """
    from pyspark.sql import functions as F

    from jobs import exact_json

    if java is not False and exact_json.register(raw.sparkSession, RAW_FIELDS):
        fields = F.call_function(exact_json.FUNCTION, F.col("raw_line"), F.lit(",".join(RAW_FIELDS)))
        parsed = raw.select("raw_line", "source_file", fields.alias("p"))
        return parsed.select("raw_line", "source_file", "p.*")
    if java:
        raise RuntimeError(f"the Java parse function ({exact_json.FUNCTION}) could not be registered; see above why")
    return parse_sql(raw)


def parse_sql(raw):
    """:func:`parse` in Spark SQL alone, where the Java function is not available.

    The types come from Spark's VARIANT parse of the line; the texts from one ``json_tuple`` pass over it (a
    streaming parse of all fields at once, several times cheaper than a VARIANT-to-string cast per field). The
    texts agree with the VARIANT's wherever a rule reads them: a string's unescaped value, and the literal of a
    number, whose value (all the rules use) is the same; ``json_tuple`` regenerates other types' JSON, which no
    rule reads because their type is already wrong. One difference from the Java parse: a stray ``]`` after the
    object is not seen (the line is parsed inside ``[...]``, and the parser stops after the array).
    """
    from pyspark.sql import functions as F

    v = F.col("v")
    texts = [f"s_{name}" for name in RAW_FIELDS]
    types = [
        F.schema_of_variant(F.try_variant_get(v, f"$.{name}", "variant")).alias(f"t_{name}") for name in RAW_FIELDS
    ]
    # Parsed inside "[...]": a JSON parser stops after the first complete value, so '{"a":1} junk' or two
    # objects on one line would pass as the first object; as array elements they are a syntax error or a 2nd item.
    wrapped = F.try_parse_json(F.concat(F.lit("["), F.col("raw_line"), F.lit("]")))
    first = F.try_variant_get(wrapped, "$[0]", "variant")
    only_one = F.try_variant_get(wrapped, "$[1]", "variant").isNull()
    # The one value parsed is an object exactly when its first character is "{" after JSON's whitespace (space,
    # tab, CR, LF: all the parser skips): a character test instead of the whole object's schema_of_variant.
    opens_object = F.ltrim(F.col("raw_line"), F.lit(JSON_WHITESPACE)).startswith("{")
    with_texts = raw.select("raw_line", "source_file", F.json_tuple("raw_line", *RAW_FIELDS).alias(*texts))
    return with_texts.select(
        "raw_line", "source_file", *texts, first.alias("v"), (only_one & opens_object).alias("one_object")
    ).select(
        "raw_line",
        "source_file",
        F.coalesce(v.isNotNull() & F.col("one_object"), F.lit(False)).alias("is_object"),
        *(c for t_col, s_col in zip(types, texts) for c in (t_col, s_col)),  # t_<field>, s_<field> per field
    )


#: An ISO-8601 date-time text with its UTC offset (``Z`` or ``+hh[:mm]``): a time without one is unparseable.
ISO_WITH_OFFSET = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"


#: The column :func:`rule_reason`'s first projection computes the event time into (epoch ms, null when unparseable).
EVENT_TIME_MS = "_event_time_ms"


def rule_reason(params: CleanParams):
    """``(shared, reason, normalised columns)`` over the output of :func:`parse`: ``shared`` the columns to add first
    (the event time, :data:`EVENT_TIME_MS`), then ``reason`` the first rule a line breaks, or null, and the columns.

    Written as Spark SQL text, one expression per output column: built from Column objects, the rule chain took
    thousands of calls from Python into the JVM, paid by every clean run and every test (docs/benchmarks.md#etl)."""
    from pyspark.sql import functions as F

    def jtype(name: str) -> str:
        return f"t_{name}"

    def trimmed(name: str) -> str:
        return f"trim(s_{name})"

    def present(name: str) -> str:  # there and not JSON null
        return f"({jtype(name)} IS NOT NULL AND {jtype(name)} != 'VOID')"

    def wrong_type(name: str) -> str:
        ok = f"{jtype(name)} IN ({sql_strings(ACCEPTED_TYPES[name])})"
        if "DECIMAL" in ACCEPTED_TYPES[name]:  # DECIMAL(3,1): any precision and scale (a string test, no regex)
            ok = f"{ok} OR startswith({jtype(name)}, 'DECIMAL(')"
        return f"({present(name)} AND NOT ({ok}))"

    event_time_raw = trimmed("event_time")
    # computed once per line in a projection of its own (EVENT_TIME_MS) and read by name below: inlined, the regex and
    # the timestamp parse ran again in every rule and column that reads the time (Spark does not share an expression
    # between CASE branches); an unparseable ISO text gives a null timestamp and so a null time
    shared = [
        F.expr(
            f"CAST(CASE WHEN {jtype('event_time')} IN ({sql_strings(INTEGER_TYPES)}) "
            f"THEN try_cast({event_time_raw} AS BIGINT) "
            f"WHEN {event_time_raw} RLIKE '{ISO_WITH_OFFSET}' "
            f"THEN unix_micros(try_to_timestamp({event_time_raw})) / 1000 "
            "END AS BIGINT)"
        ).alias(EVENT_TIME_MS)
    ]
    event_time_ms = EVENT_TIME_MS
    dwell_ms = f"CASE WHEN {present('dwell_ms')} THEN try_cast({trimmed('dwell_ms')} AS BIGINT) END"
    rating = f"CASE WHEN {present('rating')} THEN try_cast({trimmed('rating')} AS DOUBLE) END"
    # lower() of the type, but a type that is one of the contract's already (every line of a well-formed log) is
    # taken as it is, which lower() would give back unchanged: Spark's lower() is ICU's, whose case tables take its
    # first call 0.6-2 s to build (one task thread builds them, the other waits; docs/benchmarks.md#etl), and a
    # day whose types are all lowercase then never calls it
    given_type = trimmed("event_type")
    known = sql_strings(EVENT_TYPES)
    event_type = f"CASE WHEN {given_type} IN ({known}) THEN {given_type} ELSE lower({given_type}) END"

    missing = [
        (f"NOT {present(n)} OR ({jtype(n)} = 'STRING' AND {trimmed(n)} = '')", f"missing_{n}")
        for n in REQUIRED_EVENT_FIELDS
    ]
    rules = [
        ("trim(raw_line) = ''", "empty_line"),
        ("NOT is_object", "malformed_json"),
        *missing,
        (f"{wrong_type('event_id')} OR {wrong_type('user_id')} OR {wrong_type('item_id')}", "wrong_type_id"),
        (wrong_type("event_type"), "wrong_type_event_type"),
        (f"NOT ({event_type} IN ({sql_strings(EVENT_TYPES)}))", "unknown_event_type"),
        (wrong_type("event_time"), "wrong_type_event_time"),
        (f"{event_time_ms} IS NULL", "unparseable_event_time"),
        (f"{event_time_ms} < {MIN_EVENT_TIME_MS}", "event_time_too_old"),
        (f"{event_time_ms} > {params.max_event_time_ms}", "event_time_after_landing_day"),
        (wrong_type("dwell_ms"), "wrong_type_dwell_ms"),
        (f"{dwell_ms} < 0", "negative_dwell_ms"),
        (f"{dwell_ms} > {params.max_dwell_ms}", "absurd_dwell_ms"),
        (wrong_type("rating"), "wrong_type_rating"),
        (f"{event_type} = 'rate' AND {rating} IS NULL", "missing_rating_on_rate"),
        (f"{event_type} != 'rate' AND {rating} IS NOT NULL", "rating_on_non_rate_event"),
        (f"{rating} < {RATING_MIN!r}D OR {rating} > {RATING_MAX!r}D", "rating_out_of_range"),
        (f"{wrong_type('session_id')} OR {wrong_type('device')}", "wrong_type_optional_field"),
    ]
    # the first rule broken wins; a rule whose test is unknown (null) is not broken
    reason = "CASE " + " ".join(f"WHEN ({condition}) THEN '{name}'" for condition, name in rules) + " END"

    def optional_text(name: str) -> str:
        return f"CASE WHEN {present(name)} AND {trimmed(name)} != '' THEN {trimmed(name)} END"

    columns = {
        "event_id": trimmed("event_id"),
        "user_id": trimmed("user_id"),
        "item_id": trimmed("item_id"),
        "event_type": event_type,
        # only in range: a quarantined line's epoch 9223372036854775807 would overflow the timestamp and fail the job
        "event_time": f"CASE WHEN {event_time_ms} BETWEEN {MIN_EVENT_TIME_MS} AND {params.max_event_time_ms} "
        f"THEN timestamp_millis({event_time_ms}) END",
        "event_time_ms": event_time_ms,
        "dwell_ms": dwell_ms,
        "rating": rating,
        "session_id": optional_text("session_id"),
        "device": optional_text("device"),
    }
    return shared, F.expr(reason), [F.expr(sql).alias(name) for name, sql in columns.items()]


#: Columns of :func:`parse` the raw sample gate checks (suite ``raw_events_sample``): :func:`run` keeps them in its
#: parsed-lines work copy, so the gate in clean's own application samples the lines clean parsed (``jobs/validate.py``).
RAW_SAMPLE_COLUMNS = ("is_object", *(f"t_{name}" for name in REQUIRED_EVENT_FIELDS))


def lines(raw, params: CleanParams, keep: tuple[str, ...] = (), java: bool | None = None):
    """Every raw line with the first rule it breaks (``reason``) and its contract columns. One row per raw line;
    the only pass over the raw text. (The ``content`` hash dedupe compares is computed in :func:`decide`, for
    the few lines whose event_id comes more than once.) ``keep``: columns of :func:`parse` to keep beside them;
    ``java``: as :func:`parse`'s."""
    shared, reason, columns = rule_reason(params)
    return (
        parse(raw, java).select("*", *shared).select("raw_line", "source_file", *keep, reason.alias("reason"), *columns)
    )


def classify(raw, params: CleanParams, earlier=None):
    """Every raw line with its outcome: the contract columns plus ``reason`` (``decide(lines(raw))``).

    Like :func:`run`'s work copy of the parsed lines, the parsed lines and the outcome are each materialised once
    (Spark's local checkpoint, in memory): :func:`decide` reads its input several times, and without this every
    read, and every later query on the outcome (a ``split`` into three frames, or an ``earlier`` built by another
    ``classify``), would carry the whole parse and rule chain again in its plan (a test of four lines took 90 s to
    plan and run)."""
    parsed = lines(raw, params).localCheckpoint()
    return decide(parsed, params, earlier).localCheckpoint()


def repeated_ids(valid, earlier=None):
    """The ``event_id`` of the valid lines that need a look at their payload in :func:`decide`: ids that come more
    than once in the day, or that ``earlier`` (:func:`extract_earlier`) already holds. One id-only aggregation."""
    from pyspark.sql import functions as F

    repeated = valid.groupBy("event_id").agg(F.count(F.lit(1)).alias("copies")).where("copies > 1").select("event_id")
    if earlier is not None:
        late_ids = valid.select("event_id").join(earlier.select("event_id"), "event_id", "left_semi")
        repeated = repeated.unionByName(late_ids).distinct()
    return repeated


def decide(classified, params: CleanParams, earlier=None, repeated=None, bots_possible: bool = True):
    """The outcome of every line of :func:`lines`: the contract columns plus ``reason``.

    ``reason`` is null for a clean event, :data:`DUPLICATE` for an identical re-send that is only counted,
    and a quarantine reason otherwise. Rows: exactly one per raw line.

    Dedupe: among the valid lines of one ``event_id`` the earliest version is kept (ties: content, then the
    raw text); copies with the same content are duplicates, other versions ``conflicting_duplicate_event_id``.
    ``earlier`` (optional, from :func:`extract_earlier`) is the events already published on earlier days
    (``event_id`` and either their contract columns or their ``content`` hash): a valid line whose event_id
    is there is a duplicate when its content is the same and a
    conflict when it differs; it is never clean again. Of the remaining new events, those of a user with more
    than ``params.bot_events_per_day`` of them are quarantined as ``bot_user``.

    Only lines of event_ids that occur more than once (or on earlier days) are shuffled with their payload;
    the rest is decided by small id-only aggregates. ``repeated``: those ids (:func:`repeated_ids`), when the caller
    has them already (:func:`run` materialises them and broadcasts them when few, so the day's lines are joined
    with them where they lie instead of being shuffled). ``bots_possible=False``: the caller knows no user has more
    than ``params.bot_events_per_day`` valid lines (:func:`possible_bots`), so none can have that many new events and
    the bot count is skipped. Pure: no I/O, deterministic for the same input.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    invalid = classified.where(F.col("reason").isNotNull())
    valid = classified.where(F.col("reason").isNull())

    if repeated is None:
        repeated = repeated_ids(valid, earlier)
    flagged = valid.join(repeated.withColumn("needs_look", F.lit(True)), "event_id", "left")
    single = flagged.where(F.col("needs_look").isNull()).drop("needs_look")
    # the hash dedupe compares, over the columns as published (in run(): with the pseudonym, like earlier days)
    multi = flagged.where(F.col("needs_look")).drop("needs_look").withColumn("content", content_hash())

    if earlier is not None:  # late re-sends of events published on earlier days
        known = earlier.join(repeated, "event_id", "left_semi")
        if "content" not in known.columns:  # hashed after the join: only the events whose id comes again
            known = known.select("event_id", content_hash().alias("content"))
        known = known.groupBy("event_id").agg(F.collect_set("content").alias("earlier_contents"))
        multi = multi.join(known, "event_id", "left")
        seen_before = F.col("earlier_contents").isNotNull()
        same_before = F.coalesce(F.array_contains("earlier_contents", F.col("content")), F.lit(False))
    else:
        multi = multi.withColumn("earlier_contents", F.lit(None).cast("array<string>"))
        seen_before = same_before = F.lit(False)
    by_id = Window.partitionBy("event_id").orderBy("event_time_ms", "content", "raw_line", "source_file")
    multi = multi.withColumn("pos", F.when(~seen_before, F.row_number().over(by_id))).withColumn(
        "kept_content", F.first("content").over(by_id)
    )
    multi_reason = (
        F.when(seen_before & same_before, F.lit(DUPLICATE))
        .when(seen_before, F.lit("conflicting_duplicate_event_id"))
        .when(F.col("pos") == 1, F.lit(None).cast("string"))
        .when(F.col("content") == F.col("kept_content"), F.lit(DUPLICATE))
        .otherwise(F.lit("conflicting_duplicate_event_id"))
    )
    decided = single.unionByName(
        multi.withColumn("reason", multi_reason).drop("earlier_contents", "pos", "kept_content", "content"),
        allowMissingColumns=False,
    )

    if not bots_possible:
        return invalid.unionByName(decided.select(*invalid.columns))
    kept = decided.where(F.col("reason").isNull())
    bots = (
        kept.groupBy("user_id")
        .agg(F.count(F.lit(1)).alias("user_events"))
        .where(F.col("user_events") > params.bot_events_per_day)
        .select("user_id", F.lit(True).alias("is_bot"))
    )
    decided = decided.join(F.broadcast(bots), "user_id", "left").withColumn(
        "reason", F.when(F.col("reason").isNull() & F.col("is_bot"), F.lit("bot_user")).otherwise(F.col("reason"))
    )
    return invalid.unionByName(decided.select(*invalid.columns))


def possible_bots(valid, params: CleanParams) -> int:
    """How many users have more than ``params.bot_events_per_day`` valid lines: an upper bound of the bots
    :func:`decide` labels (their new events are a subset of their valid lines). One id-only aggregation."""
    from pyspark.sql import functions as F

    per_user = valid.groupBy("user_id").agg(F.count(F.lit(1)).alias("lines"))
    return per_user.where(F.col("lines") > params.bot_events_per_day).count()


#: At most this many repeated event ids (:func:`repeated_ids`) are broadcast to every task; more are joined by shuffle.
BROADCAST_REPEATED_IDS = 500_000

#: The quarantine reason of an otherwise clean event of a user on the erased-users list (jobs/erase.py).
ERASED_USER = "erased_user"


def mark_erased(parsed, identity, erased: set[str]):
    """``(parsed, identity)`` without the erased users: their valid lines get reason ``erased_user`` and their
    identity rows go. ``erased``: the tags of the erased-users list (SHA-256 of the pseudonym,
    :func:`attnrec.privacy.erased_tag`), so the list holds neither id nor pseudonym."""
    from pyspark.sql import functions as F

    tags = parsed.sparkSession.createDataFrame([(t,) for t in sorted(erased)], "tag string")
    tagged = identity.withColumn("tag", F.sha2(F.col("pseudonym"), 256))
    hit = tagged.join(F.broadcast(tags), "tag", "left_semi").select("user_id", F.lit(True).alias("_erased"))
    kept = tagged.join(F.broadcast(tags), "tag", "left_anti").select(*identity.columns)
    marked = parsed.join(F.broadcast(hit), "user_id", "left").withColumn(
        "reason",
        F.when(F.col("reason").isNull() & F.col("_erased"), F.lit(ERASED_USER)).otherwise(F.col("reason")),
    )
    return marked.select(*parsed.columns), kept


def transform(raw, params: CleanParams, earlier=None):
    """:func:`classify` split into ``(clean, quarantine, duplicates)`` DataFrames.

    ``clean`` has the contract columns; ``quarantine`` has raw_line, reason, source_file; ``duplicates`` holds
    raw_line, source_file, event_id of the identical re-sends, which are only counted.
    """
    return split(classify(raw, params, earlier))


#: The columns of the lines that are not clean that :func:`split_rejects` reads.
REJECT_COLUMNS = ("raw_line", "reason", "source_file", "event_id")


def split(outcome):
    """``(clean, quarantine, duplicates)`` from a classified outcome (a DataFrame or its parquet copy)."""
    from pyspark.sql import functions as F

    return (outcome.where(F.col("reason").isNull()).select(*CLEAN_COLUMNS), *split_rejects(outcome))


def split_rejects(outcome):
    """``(quarantine, duplicates)`` from a classified outcome, or from a copy of its lines that are not clean (with
    :data:`REJECT_COLUMNS` at least)."""
    from pyspark.sql import functions as F

    reason = F.col("reason")
    quarantine = outcome.where(reason.isNotNull() & (reason != DUPLICATE)).select("raw_line", "reason", "source_file")
    duplicates = outcome.where(reason == DUPLICATE).select("raw_line", "source_file", "event_id")
    return quarantine, duplicates


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


def write_clean(clean, uri: str) -> None:
    """Clean events as every writer of the dataset writes them (this job, erasure): four files hashed by user, each
    sorted by user and time, :data:`PLAIN_COLUMNS` without dictionary encoding."""
    ordered = clean.repartition(4, "user_id").sortWithinPartitions("user_id", "event_time_ms")
    without_dictionary(ordered.write.mode("overwrite"), PLAIN_COLUMNS).parquet(uri)


def load(clean, quarantine, root: str, dt: str) -> tuple[str, str]:
    """Write both outputs to their staging partitions, replacing whatever a previous attempt left."""
    clean_dir = lake.staging(root, lake.CLEAN_EVENTS, dt)
    quarantine_dir = lake.staging(root, lake.QUARANTINE_EVENTS, dt)
    write_clean(clean, clean_dir)
    # one file, written by one task after a shuffle of the quarantined lines only: coalesce(1) would also run the
    # lines' scan and checks in that one task
    quarantine.repartition(1).write.mode("overwrite").parquet(quarantine_dir)
    return clean_dir, quarantine_dir


def work_dir(root: str, dt: str) -> str:
    """Where :func:`run` keeps its work copies of day ``dt`` (under the lake's staging area)."""
    return lake.join(root, lake.STAGING, "clean_work", f"dt={dt}")


def parsed_lines_dir(root: str, dt: str) -> str:
    """The work copy of every raw line of day ``dt`` as parsed, checked (:func:`lines`) and with the raw sample
    gate's columns (:data:`RAW_SAMPLE_COLUMNS`); there after ``run(..., keep_parsed=True)`` until
    ``lake.remove_dir(work_dir(root, dt))``."""
    return lake.join(work_dir(root, dt), "lines")


def run(
    spark,
    root: str,
    params: CleanParams,
    key: SecretBytes | None = None,
    keep_parsed: bool = False,
    while_parsing: Callable[[], object] | None = None,
) -> dict:
    """extract -> classify -> load, then count from the written files and write the reconciliation.

    Clean events carry the pseudonym of the user id (``key``; default: the lake's, :func:`attnrec.privacy.lake_key`,
    checked against the lake's key fingerprint before anything is written), computed once per distinct id of the
    day; the day's ``identity/users`` (pseudonym, user_id) is staged beside them. Quarantine keeps the raw line.

    A work copy of the parsed lines under ``_staging/clean_work/dt=D`` (deleted at the end) keeps it to one pass
    over the raw text: the ids, the outputs and the counts are then read column-wise from parquet. The lines'
    outcome (:func:`decide`: broadcast joins, a shuffle only of the lines whose id repeats) is evaluated twice, once
    for the clean write and once for a copy of the lines that are not clean, which the quarantine and the
    duplicate count read.
    ``keep_parsed``: leave the parsed lines (:func:`parsed_lines_dir`) for the raw sample gate; the caller deletes
    the work directory (:func:`work_dir`) after it. ``while_parsing``: called once the parse is planned, right
    before its Spark job, the longest of the day, during which the driver's Python only waits (``main`` starts
    GX's import there: started earlier, its pure-Python import held the GIL against the planning's Py4J calls).
    """
    import time

    from pyspark.sql import functions as F

    if key is None:
        from attnrec.privacy import lake_key
        from attnrec.settings import get_settings

        key = lake_key(get_settings(data_root=root))
    raw_dir = lake.join(root, lake.RAW_EVENTS, f"dt={params.dt}")
    work = work_dir(root, params.dt)
    started = time.monotonic()

    def progress(step: str) -> None:
        print(f"clean dt={params.dt}: {step} ({time.monotonic() - started:.0f} s)", flush=True)

    raw = extract(spark, raw_dir)
    gzipped = [f for f in raw.inputFiles() if f.endswith(".gz")]
    cores = spark.sparkContext.defaultParallelism
    if 0 < len(gzipped) < cores:  # gzip does not split: one file is one task, so spread the lines over the cores
        progress(
            f"{len(gzipped)} gzip file(s) for {cores} cores: repartitioning the lines (land more files to avoid this)"
        )
        raw = raw.repartition(cores)
    parse = lines(raw, params, keep=RAW_SAMPLE_COLUMNS).write.mode("overwrite")
    parse = without_statistics(without_dictionary(parse, WORK_PLAIN_COLUMNS), WORK_PLAIN_COLUMNS)
    if while_parsing is not None:
        while_parsing()
    parse.parquet(parsed_lines_dir(root, params.dt))
    progress("parsed and checked every raw line")
    parsed = spark.read.parquet(parsed_lines_dir(root, params.dt)).drop(*RAW_SAMPLE_COLUMNS)
    identity_dir = lake.staging(root, lake.IDENTITY_USERS, params.dt)
    valid = parsed.where(parsed["reason"].isNull())
    erased = read_erased(root)
    users = identity_table(valid, key, work_dir=lake.join(work, "ids"))  # on the driver when the day has few users
    if erased:  # events of erased users are quarantined (erased_user) and never get an identity row again
        users.write.mode("overwrite").parquet(lake.join(work, "identity"))
        parsed, users = mark_erased(parsed, spark.read.parquet(lake.join(work, "identity")), erased)
        users.coalesce(1).write.mode("overwrite").parquet(identity_dir)
        progress(f"checked the day's users against {len(erased)} erased users")
    else:
        users.coalesce(1).write.mode("overwrite").parquet(identity_dir)
    identity = spark.read.parquet(identity_dir)
    progress(f"pseudonymised {identity.count()} distinct user ids")
    pseudonymous = with_pseudonyms(parsed, identity, keep=parsed["reason"].isNull())
    earlier = extract_earlier(spark, root, params)
    still_valid = parsed.where(parsed["reason"].isNull())  # after the erased users' lines were marked
    repeated_ids(still_valid, earlier).write.mode("overwrite").parquet(lake.join(work, "repeated"))
    repeated = spark.read.parquet(lake.join(work, "repeated"))
    if repeated.count() <= BROADCAST_REPEATED_IDS:
        repeated = F.broadcast(repeated)
    bots_possible = possible_bots(still_valid, params) > 0
    # every line's outcome is not copied: the clean write evaluates it from the parsed lines (a column-wise scan and
    # broadcast joins, cheaper than writing and reading back every line's outcome); the lines it does not keep
    # (quarantined or duplicates, few on a normal day) are copied once, and the quarantine and the duplicate count
    # read that copy instead of evaluating the outcome over every line again each
    outcome = decide(pseudonymous, params, earlier, repeated, bots_possible)
    rejects_dir = lake.join(work, "rejects")
    outcome.where(outcome["reason"].isNotNull()).select(*REJECT_COLUMNS).write.mode("overwrite").parquet(rejects_dir)
    clean, _, _ = split(outcome)  # lazy: only the clean frame is ever evaluated from the full outcome
    quarantine, duplicates = split_rejects(spark.read.parquet(rejects_dir))
    clean_dir, quarantine_dir = load(clean, quarantine, root, params.dt)
    progress("deduplicated, labelled bots, wrote clean and quarantine")
    by_reason = {
        row["reason"]: row["count"]
        for row in spark.read.parquet(quarantine_dir).groupBy("reason").count().collect()  # a few rows
    }
    summary = reconcile(
        params.dt,
        raw_lines=spark.read.parquet(parsed_lines_dir(root, params.dt)).count(),  # one row per line (parquet metadata)
        clean=spark.read.parquet(clean_dir).count(),
        quarantined_by_reason=by_reason,
        duplicates=duplicates.count(),
    )
    lake.write_json(lake.join(clean_dir, lake.RECONCILIATION_FILE), summary)
    for name in ("ids", "identity", "repeated", "rejects"):
        lake.remove_dir(lake.join(work, name))
    if not keep_parsed:
        lake.remove_dir(work)
    progress("reconciled")
    return summary


def main(dt: Dt, data_root: DataRoot = None, validate: Validate = False) -> int:
    """Clean one landing day of raw behaviour events into staging: clean events, quarantine, reconciliation;
    with ``--validate``, then the clean_events gate on them in the same session (exit 1 when it fails) and, when it
    passes, the day's features and their gate in the same session too, for the featurize task to adopt."""
    from attnrec.privacy import lake_key
    from attnrec.settings import get_settings
    from attnrec.spark import get_spark

    settings = get_settings(data_root=data_root)
    params = CleanParams(
        dt=dt,
        event_time_tolerance_hours=settings.event_time_tolerance_hours,
        max_dwell_ms=settings.max_dwell_ms,
        bot_events_per_day=settings.bot_events_per_day,
        dedupe_lookback_days=settings.dedupe_lookback_days,
    )
    key = lake_key(settings)  # before Spark starts: a wrong or missing key fails at once, having written nothing
    spark = get_spark(
        f"attnrec-clean-{dt}", input_bytes=lake.raw_day_bytes(settings.data_root, dt)
    )  # a large day: the full JIT (attnrec/spark.py)
    preload = None
    if validate:  # GX's import overlaps the parse's Spark job instead of following it
        from jobs.validate import preload_gx as preload
    try:
        summary = run(spark, settings.data_root, params, key, keep_parsed=validate, while_parsing=preload)
        print(
            f"clean dt={summary['dt']}: raw_lines={summary['raw_lines']} clean={summary['clean']} "
            f"quarantined={summary['quarantined']} duplicates={summary['duplicates']} "
            f"by_reason={summary['quarantined_by_reason']}",
            flush=True,
        )
        if not validate:
            return 0
        from jobs.validate import gate

        try:  # the raw sample gate samples the lines this job parsed instead of parsing raw text again
            code = gate(spark, "clean_events", dt, settings, parsed_lines=parsed_lines_dir(settings.data_root, dt))
        finally:
            lake.remove_dir(work_dir(settings.data_root, dt))
        if code != 0:
            return 1
        # the day's features too, in this application, from the staged clean partition; the featurize task adopts
        # them when its inputs are still the same (jobs/featurize.py), else builds them itself
        from jobs import featurize

        featurize.prebuild(spark, settings, featurize.params_from(settings, dt))
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    spark_submit_main(main, "clean")
