"""The per-user pass of featurize's sequences, over each user partition as Arrow batches (``mapInArrow``).

:func:`jobs.featurize.transform_sequences` shuffles the events by user, each with its item signals and per-event
values already computed by Spark, and hands every partition to :func:`per_user`, which builds one row per user:

* the user's events in the sequences' order: time, then the event's own columns for ties (event id, item, type,
  dwell, rating, session, device; nulls first, text by its UTF-8 bytes, as Spark orders them);
* ``user_events_7d``: the user's events in the ``window_ms`` before each event (strictly earlier, none at the same
  millisecond), two binary searches per event over the sorted (user, time) keys;
* the newest ``max_len`` events as parallel arrays (slices of the sorted columns, offsets per user), the gaps to the
  previous event and the session starts within them, and the activity over every event of the look-back (count,
  distinct days, first and last time, the sorted distinct ``seen_item_ids``).

Everything here orders, counts, slices and subtracts integers: every floating-point value (dwell strength, attention,
heat, ...) comes in computed by Spark and goes out unchanged, so the rows are the ones Spark's own window and
per-user aggregation gave, which this replaces (a sort, a window and a two-phase aggregation over every event; on 2
cores the JIT compiling them was a large part of a day's first run, docs/benchmarks.md#etl). numpy and pyarrow are
PySpark's own Arrow dependencies; the function runs in Spark's Python workers, so a cluster's executors need this
package installed, as for the pseudonyms' pandas UDF (jobs/identity.py).
"""

from __future__ import annotations

from collections.abc import Iterator

#: The sequences' order of a user's events: the columns Spark sorted the per-user structs by, in that order (the
#: values derived from them, and the item signals, which follow from item and time, never decide it).
SORT_KEYS = (
    "user_id",
    "event_time_ms",
    "event_id",
    "item_id",
    "event_type",
    "dwell_ms",
    "rating",
    "session_id",
    "device",
)
#: Per-event columns :func:`per_user` reads beside :data:`SORT_KEYS`: the values Spark computed, ``_day`` (the
#: event's date as days since 1970-01-01, for ``active_days``) and ``_seen`` (the event's type excludes its item from
#: candidates, for ``seen_item_ids``).
VALUE_COLUMNS = (
    "item_heat",
    "item_count_7d",
    "_dwell_strength",
    "_interest",
    "_rating",
    "_attention",
    "_hour",
    "_weekday",
    "_day",
    "_seen",
)
#: The sequences' arrays: (column, the per-event column it is cut from or None when computed here, Spark element
#: type, whether an element may be null). The element nullability is what Spark's aggregation gave each array.
ARRAYS = (
    ("item_ids", "item_id", "string", True),
    ("event_types", "event_type", "string", True),
    ("event_times_ms", "event_time_ms", "long", True),
    ("dwell_ms", "dwell_ms", "long", True),
    ("time_gaps_ms", None, "long", True),
    ("dwell_strength", "_dwell_strength", "float", True),
    ("interest", "_interest", "byte", False),
    ("ratings", "_rating", "float", True),
    ("attention", "_attention", "float", True),
    ("hours", "_hour", "byte", True),
    ("weekdays", "_weekday", "byte", True),
    ("session_starts", None, "boolean", True),
    ("item_heats", "item_heat", "float", True),
    ("item_counts_7d", "item_count_7d", "integer", False),
    ("user_events_7d", None, "integer", False),
    ("devices", "device", "string", True),
)
#: The columns after the arrays: (column, Spark type, nullable), as the aggregation wrote them.
ACTIVITY = (
    ("length", "integer", False),
    ("events_total", "long", True),
    ("active_days", "integer", True),
    ("first_event_ms", "long", True),
    ("last_event_ms", "long", True),
)


def output_schema():
    """The Spark schema of :func:`per_user`'s rows: the sequences' columns, types and nullability."""
    from pyspark.sql import types as T

    kinds = {
        "string": T.StringType(),
        "long": T.LongType(),
        "integer": T.IntegerType(),
        "float": T.FloatType(),
        "byte": T.ByteType(),
        "boolean": T.BooleanType(),
    }

    def spark_type(name: str):
        return kinds[name]

    return T.StructType(
        [T.StructField("user_id", T.StringType(), True)]
        + [T.StructField(name, T.ArrayType(spark_type(kind), nulls), False) for name, _, kind, nulls in ARRAYS]
        + [T.StructField(name, spark_type(kind), nullable) for name, kind, nullable in ACTIVITY]
        + [T.StructField("seen_item_ids", T.ArrayType(T.StringType(), False), False)]
    )


def per_user(batches: Iterator, window_ms: int, max_len: int, rows_per_batch: int = 4096) -> Iterator:
    """One Arrow record batch after another of one row per user of the partition ``batches`` (every event of a user
    is in one partition), the rows in user order (ids by their UTF-8 bytes, as Spark sorts strings: featurize writes
    them as they come). ``window_ms``: the as-of window of ``user_events_7d``; ``max_len``: the newest events kept."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    batches = list(batches)  # a partition no user hashed to may hand over no batch at all
    if not batches or not any(batch.num_rows for batch in batches):
        return
    # the rows stay where they came; ``order`` lists them in the sequences' order, and each column is copied in that
    # order only for the rows it is needed for (every row for the keys and counts, the kept rows for the arrays)
    table = pa.Table.from_batches(batches)
    order = pc.sort_indices(table, sort_keys=[(key, "ascending", "at_start") for key in SORT_KEYS]).to_numpy()
    n = table.num_rows

    def taken(name: str, rows: np.ndarray) -> pa.Array:
        """Column ``name`` at ``rows`` (positions as the rows came), as one array."""
        values = table.column(name).take(pa.array(rows))
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()

    def ordered(name: str) -> np.ndarray:
        """A column without nulls as numpy, in the sequences' order."""
        return table.column(name).to_numpy()[order]

    def differs_from_previous(values: pa.Array) -> np.ndarray:
        """Per row: is it the first row, or does its value differ from the row before (two nulls are alike, as in
        Spark's grouping)?"""
        out = np.ones(len(values), dtype=bool)
        if len(values) > 1:
            before, after = values.slice(0, len(values) - 1), values.slice(1)
            both_null = pc.and_(pc.is_null(after), pc.is_null(before))
            differs = pc.if_else(both_null, False, pc.fill_null(pc.not_equal(after, before), True))
            out[1:] = differs.to_numpy(zero_copy_only=False)
        return out

    users = taken("user_id", order)
    new_user = differs_from_previous(users)
    starts = np.flatnonzero(new_user)
    ends = np.append(starts[1:], n)
    counts = ends - starts
    user_of_row = np.cumsum(new_user) - 1
    times = ordered("event_time_ms")

    # user_events_7d: with the rows sorted by (user, time), key = user * span + time puts every user's times on one
    # increasing line, apart from the others; the events before t, less those before t - window, lie in [t - w, t)
    origin = int(times.min()) - window_ms - 1
    span = int(times.max()) - origin + 1
    if span * len(starts) >= 2**62:
        raise ValueError(
            f"events of one featurize partition span {span} ms over {len(starts)} users, beyond the 64-bit keys of "
            "the per-user pass; shorten ATTNREC_LOOKBACK_DAYS or check the clean events' times"
        )
    key = user_of_row.astype(np.int64) * span + (times - origin)
    user_events = np.searchsorted(key, key, "left") - np.searchsorted(key, key - window_ms, "left")

    # the newest max_len events of each user, in order
    position = np.arange(n) - starts[user_of_row]
    kept = np.flatnonzero(position >= (counts - max_len)[user_of_row])
    take = order[kept]  # the kept rows, in order, where they lie in ``table``
    lengths = np.minimum(counts, max_len)
    ends_kept = np.cumsum(lengths)
    offsets = pa.array(np.concatenate([[0], ends_kept]).astype(np.int32))
    first_kept = np.zeros(len(kept), dtype=bool)
    first_kept[ends_kept - lengths] = True

    kept_times = times[kept]
    gaps = np.zeros(len(kept), dtype=np.int64)
    gaps[1:] = kept_times[1:] - kept_times[:-1]
    sessions = taken("session_id", take)
    previous = pa.concat_arrays([pa.nulls(1, sessions.type), sessions.slice(0, len(sessions) - 1)])
    previous = pc.if_else(pa.array(first_kept), pa.nulls(len(sessions), sessions.type), previous)
    # a session start: the first event kept, or another session than the event before; unknown without a session
    session_starts = pc.if_else(
        pc.is_null(sessions),
        pa.nulls(len(sessions), pa.bool_()),
        pc.or_kleene(pc.is_null(previous), pc.not_equal(sessions, previous)),
    )
    computed = {
        "time_gaps_ms": pa.array(gaps, mask=first_kept),
        "session_starts": session_starts,
        "user_events_7d": pa.array(user_events[kept].astype(np.int32)),
    }
    out = {"user_id": users.take(pa.array(starts))}
    for name, source, _, _ in ARRAYS:
        values = computed[name] if source is None else taken(source, take)
        out[name] = pa.ListArray.from_arrays(offsets, values)

    # the activity over every event of the look-back; days only grow with time within a user
    days = ordered("_day")
    new_day = new_user.copy()
    new_day[1:] |= days[1:] != days[:-1]
    out["length"] = pa.array(lengths.astype(np.int32))
    out["events_total"] = pa.array(counts.astype(np.int64))
    out["active_days"] = pa.array(np.add.reduceat(new_day.astype(np.int32), starts).astype(np.int32))
    out["first_event_ms"] = pa.array(times[starts])
    out["last_event_ms"] = pa.array(times[ends - 1])

    # seen_item_ids: the distinct items of the user's seen events (a null item is no item), sorted by UTF-8 bytes as
    # Spark's array_sort sorts them
    item_ids = table.column("item_id")
    seen_rows = pc.and_(table.column("_seen").fill_null(False), pc.is_valid(item_ids))
    seen = np.flatnonzero(seen_rows.to_numpy()[order])
    pairs = pa.table({"user": pa.array(user_of_row[seen]), "item": taken("item_id", order[seen])})
    pairs = pairs.take(
        pc.sort_indices(pairs, sort_keys=[("user", "ascending", "at_end"), ("item", "ascending", "at_end")])
    )
    pair_users = pairs.column("user").to_numpy()
    items = pa.concat_arrays(pairs.column("item").chunks) if pairs.num_rows else pa.array([], item_ids.type)
    distinct = differs_from_previous(items)
    distinct[1:] |= pair_users[1:] != pair_users[:-1]
    distinct_at = np.flatnonzero(distinct)
    per_user_items = np.bincount(pair_users[distinct_at], minlength=len(starts))
    item_offsets = pa.array(np.concatenate([[0], np.cumsum(per_user_items)]).astype(np.int32))
    out["seen_item_ids"] = pa.ListArray.from_arrays(item_offsets, items.take(pa.array(distinct_at)))

    yield from pa.table(out).to_batches(max_chunksize=rows_per_batch)
