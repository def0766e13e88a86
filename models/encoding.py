"""User events -> model indices: event types, dwell and gap buckets, and the flat encoded arrays.

The holdout (validation and test) keeps raw strings (item ids, event types, :class:`Events`), so a model with a
different item vocabulary (the current champion) can be evaluated on exactly the same holdout; each model
encodes the raw events with its own vocabulary (:func:`encode_sequences`), skipping items it does not know.
Training events are encoded once, with the new model's vocabulary, into flat arrays of fifteen bytes per event
(:class:`EncodedSequences`); models.dataset builds them while it streams the parquet partition.
"""

from __future__ import annotations

import bisect
import sys
import zlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from attnrec.contracts import EVENT_TYPES, EXPOSURE_EVENT_TYPES, NEGATIVE_EVENT_TYPES, SEEN_EVENT_TYPES
from models.vocab import ItemVocab


def positive_types(
    exposure: Sequence[str] = EXPOSURE_EVENT_TYPES, negative: Sequence[str] = NEGATIVE_EVENT_TYPES
) -> tuple[str, ...]:
    """Event types that count as a positive signal (training targets, holdout events): every type that is neither
    exposure (impressions, skips) nor negative (dislikes). Those stay in the sequence as context."""
    return tuple(t for t in EVENT_TYPES if t not in set(exposure) | set(negative))


DEFAULT_POSITIVE_TYPES: tuple[str, ...] = positive_types()

EVENT_TYPE_INDEX: dict[str, int] = {t: i + 1 for i, t in enumerate(EVENT_TYPES)}  # 0 = padding
#: Event types after which an item counts as seen in training and evaluation, as serving counts it
#: (``seen_item_ids``): every type but ``impression``, so an item that was only shown can still be a target.
SEEN_TYPE_INDEX: np.ndarray = np.array([EVENT_TYPE_INDEX[t] for t in SEEN_EVENT_TYPES], dtype=np.int64)


def seen_items(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, L) the input items that count as seen (:data:`SEEN_TYPE_INDEX`), 0 where the event was only an exposure
    (an impression of an item the user then clicks must not hide that click as a target) or padding."""
    if "event_types" not in inputs:  # items alone (no event types): every item counts
        return inputs["items"]
    seen = torch.isin(inputs["event_types"], torch.from_numpy(SEEN_TYPE_INDEX).to(inputs["event_types"].device))
    return inputs["items"] * seen


N_DWELL_BUCKETS = 16
N_GAP_BUCKETS = 32
#: Attention strength (features/sequences ``attention``, -1..1, jobs.featurize.attention) in steps of 0.1:
#: 0 = padding, 1 = unknown (no ``attention`` column, e.g. a request without it), 2 + round(10 * (a + 1)) else,
#: so -1 -> 2, 0 -> 12, 1 -> 22.
N_ATTENTION_BUCKETS = 23
ATTENTION_UNKNOWN = 1
ATTENTION_ZERO = 12  # the bucket of strength 0: at or below it an event is never a target


#: Context inputs featurize publishes per event: (features/sequences column, model column, buckets counting
#: 0 = padding and 1 = unknown, scale). Scales (:func:`context_buckets`): ``value``: a value v (an hour 0..23, a
#: weekday 0..6, a session start false/true) is bucket 2 + v; ``log2``: a count or decayed count v >= 0 (the item's
#: heat and 7-day interactions, the user's events in the 7 days, all as of the event) is bucket
#: 2 + floor(2 log2(1 + v)), half steps (0 -> 2, 1 -> 4, 3 -> 6, 7 -> 8), the top bucket holding every larger value;
#: ``hash``: a string (the device) is bucket 2 + crc32(its UTF-8) mod (buckets - 2), no vocabulary to carry.
CONTEXT_COLUMNS: tuple[tuple[str, str, int, str], ...] = (
    ("hours", "hour", 26, "value"),
    ("weekdays", "weekday", 9, "value"),
    ("session_starts", "session", 4, "value"),
    ("item_heats", "heat", 26, "log2"),
    ("item_counts_7d", "item_week", 26, "log2"),
    ("user_events_7d", "activity", 26, "log2"),
    ("devices", "device", 34, "hash"),
)


def context_buckets(values: np.ndarray, known: np.ndarray, n_buckets: int, scale: str = "value") -> np.ndarray:
    """(E,) values and known mask -> (E,) int8 buckets of ``scale`` (see :data:`CONTEXT_COLUMNS`; 1 where unknown or,
    on the ``value`` scale, out of range). ``hash`` takes the values' :func:`string_codes`."""
    if scale == "log2":
        v = np.nan_to_num(np.asarray(values, dtype=np.float64))
        b = 2 + np.minimum(np.floor(2.0 * np.log2(1.0 + np.maximum(v, 0.0))), n_buckets - 3)
        return np.where(known, b, 1).astype(np.int8)
    v = np.asarray(values, dtype=np.int64)
    if scale == "hash":
        return np.where(known, 2 + v % (n_buckets - 2), 1).astype(np.int8)
    if scale != "value":
        raise ValueError(f"context scale {scale!r} is not one of value, log2, hash")
    ok = known & (v >= 0) & (v < n_buckets - 2)
    return np.where(ok, 2 + v, 1).astype(np.int8)


def string_codes(values: Sequence[str | None]) -> np.ndarray:
    """(E,) int64 crc32 of each string's UTF-8 (0 for None): stable across processes, unlike ``hash``."""
    return np.array([0 if v is None else zlib.crc32(str(v).encode("utf-8")) for v in values], dtype=np.int64)


def _context_value(scale: str, v: Any) -> Any:
    """A features/sequences context value as Python: an int, a float (``log2``) or a string (``hash``)."""
    return float(v) if scale == "log2" else str(v) if scale == "hash" else int(v)


def attention_buckets(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(E,) float attention strengths and (E,) known mask -> (E,) int8 buckets (see :data:`N_ATTENTION_BUCKETS`)."""
    b = 2 + np.rint(10.0 * (np.clip(np.nan_to_num(values), -1.0, 1.0) + 1.0))
    return np.where(known, b, ATTENTION_UNKNOWN).astype(np.int8)


def attention_weights(buckets: np.ndarray) -> np.ndarray:
    """(...) attention buckets -> (...) float32 target weights: the strength itself, 1.0 when unknown (a log
    without attention weighs every positive event alike), 0 on padding."""
    b = np.asarray(buckets, dtype=np.float32)
    return np.where(b == ATTENTION_UNKNOWN, 1.0, np.where(b == 0, 0.0, (b - ATTENTION_ZERO) / 10.0)).astype(np.float32)


def engaged_events(event_types: np.ndarray, attention: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """(E,) bool: events that show interest: a positive type whose attention strength is unknown or above 0 (a low
    rating or a bounce is no evidence of interest; see jobs.featurize.attention). Baselines count these."""
    return np.isin(event_types, positive) & ((attention == ATTENTION_UNKNOWN) | (attention > ATTENTION_ZERO))


def _log2_edges(n_buckets: int) -> np.ndarray:
    """Millisecond edges of a log2-of-seconds scale: x (ms) has floor(log2(1 + x / 1000)) = the number of edges
    <= x, edge k being 1000 * (2**k - 1); exact on integers, and capped so buckets stay below ``n_buckets``."""
    return np.array([1000 * (2**k - 1) for k in range(1, n_buckets - 2)], dtype=np.int64)


DWELL_EDGES_MS = _log2_edges(N_DWELL_BUCKETS)
GAP_EDGES_MS = _log2_edges(N_GAP_BUCKETS)


def dwell_bucket(dwell_ms: int | None) -> int:
    """Dwell strength on a log2 scale of seconds: 1 = unknown, 2 = under a second, ... (0 is padding)."""
    if dwell_ms is None:
        return 1
    return 2 + bisect.bisect_right(DWELL_EDGES_MS.tolist(), max(int(dwell_ms), 0))


def gap_bucket(gap_ms: int | None) -> int:
    """Time since the previous event on a log2 scale of seconds: 1 = first event, 2 = under a second, ..."""
    if gap_ms is None:
        return 1
    return 2 + bisect.bisect_right(GAP_EDGES_MS.tolist(), max(int(gap_ms), 0))


def log2_buckets(ms: np.ndarray, known: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """:func:`dwell_bucket` / :func:`gap_bucket` over arrays: (E,) int64 ms and (E,) known mask -> (E,) int8."""
    return np.where(known, 2 + np.searchsorted(edges, np.maximum(ms, 0), side="right"), 1).astype(np.int8)


@dataclass
class Events:
    """One user's events, oldest -> newest, as in features/sequences."""

    user_id: str
    item_ids: list[str]
    event_types: list[str]
    times_ms: list[int]
    dwell_ms: list[int | None]
    attention: list[float | None] | None = None  # features/sequences ``attention``; None: not known
    context: dict[str, list] | None = None  # CONTEXT_COLUMNS' features/sequences columns the row had

    def __len__(self) -> int:
        return len(self.item_ids)

    def head(self, n: int) -> "Events":
        """The first ``n`` events."""
        attention = None if self.attention is None else self.attention[:n]
        context = None if self.context is None else {k: v[:n] for k, v in self.context.items()}
        return Events(
            self.user_id,
            self.item_ids[:n],
            self.event_types[:n],
            self.times_ms[:n],
            self.dwell_ms[:n],
            attention,
            context,
        )

    def engaged(self, k: int) -> bool:
        """Whether event ``k`` can show interest by its strength: unknown or above 0 (see :func:`engaged_events`)."""
        return self.attention is None or self.attention[k] is None or self.attention[k] > 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Events":
        n = len(row["item_ids"])
        dwell = row.get("dwell_ms")
        if dwell is None or isinstance(dwell, float):
            dwell = [None] * n
        else:
            dwell = [None if d is None else int(d) for d in dwell]
        attention = row.get("attention")
        if attention is not None and not isinstance(attention, float):
            attention = [None if a is None else float(a) for a in attention]
        else:
            attention = None
        context = {}
        for column, _, _, scale in CONTEXT_COLUMNS:
            values = row.get(column)
            if values is not None and not isinstance(values, float):
                context[column] = [None if v is None else _context_value(scale, v) for v in values]
        # ids and types are interned: users who share an item share its string (a holdout of many users stays small)
        return cls(
            str(row["user_id"]),
            [sys.intern(str(i)) for i in row["item_ids"]],
            [sys.intern(str(t)) for t in row["event_types"]],
            [int(t) for t in row["event_times_ms"]],
            dwell,
            attention,
            context or None,
        )


@dataclass
class Encoded:
    """One user's events in model indices (unknown items dropped), oldest -> newest."""

    items: list[int]
    event_types: list[int]
    dwell: list[int]
    gap: list[int]
    attention: list[int]
    hour: list[int]
    weekday: list[int]
    session: list[int]
    heat: list[int]
    item_week: list[int]
    activity: list[int]
    device: list[int]


#: The per-event columns of :class:`EncodedSequences` and their dtypes (fifteen bytes per event).
ENCODED_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("items", np.int32),
    ("event_types", np.int8),
    ("dwell", np.int8),
    ("gap", np.int8),
    ("attention", np.int8),
    ("hour", np.int8),
    ("weekday", np.int8),
    ("session", np.int8),
    ("heat", np.int8),
    ("item_week", np.int8),
    ("activity", np.int8),
    ("device", np.int8),
)


@dataclass
class EncodedSequences:
    """Users' events in model indices as flat arrays: user u's events are positions offsets[u]:offsets[u+1],
    oldest -> newest, items the model does not know left out. The event arrays may be memory-mapped files."""

    offsets: np.ndarray  # (U+1,) int64
    items: np.ndarray  # (E,) int32, 1..N
    event_types: np.ndarray  # (E,) int8, EVENT_TYPE_INDEX
    dwell: np.ndarray  # (E,) int8, dwell_bucket
    gap: np.ndarray  # (E,) int8, gap_bucket (to the previous raw event, known item or not)
    attention: np.ndarray  # (E,) int8, attention_buckets
    hour: np.ndarray  # (E,) int8, context_buckets of CONTEXT_COLUMNS
    weekday: np.ndarray
    session: np.ndarray
    heat: np.ndarray
    item_week: np.ndarray
    activity: np.ndarray
    device: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, u: int) -> Encoded:
        s, e = int(self.offsets[u]), int(self.offsets[u + 1])
        return Encoded(*(getattr(self, name)[s:e].astype(np.int64).tolist() for name, _ in ENCODED_COLUMNS))

    def windows(self, starts: np.ndarray, stops: np.ndarray, length: int) -> dict[str, torch.Tensor]:
        """Model inputs (B, length): row b holds events starts[b]:stops[b] (flat positions, at most ``length``
        of them) right aligned, zeros (padding) on the left."""
        return {
            name: torch.from_numpy(gather_windows(getattr(self, name), starts, stops, length))
            for name, _ in ENCODED_COLUMNS
        }

    def rows(self, u0: int, u1: int) -> "EncodedSequences":
        """Users u0..u1-1 (views of the same event arrays)."""
        e0, e1 = int(self.offsets[u0]), int(self.offsets[u1])
        columns = (getattr(self, name)[e0:e1] for name, _ in ENCODED_COLUMNS)
        return EncodedSequences(self.offsets[u0 : u1 + 1] - e0, *columns)

    def last_inputs(self, max_len: int) -> dict[str, torch.Tensor]:
        """Model inputs for every user: their last ``max_len`` events, trimmed to the longest row (at least 1)."""
        stops = self.offsets[1:]
        starts = np.maximum(self.offsets[:-1], stops - max_len)
        length = max(1, int((stops - starts).max(initial=0)))
        return self.windows(starts, stops, length)

    def item_lists(self) -> list[list[int]]:
        """Each user's seen item indices (the items candidate generation and evaluation leave out): those of events
        of :data:`SEEN_TYPE_INDEX`, not of impressions alone, as serving's ``seen_item_ids``."""
        seen = np.isin(self.event_types, SEEN_TYPE_INDEX)
        flat = np.where(seen, self.items, 0).astype(np.int64).tolist()
        return [[i for i in flat[s:e] if i] for s, e in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist())]


def gather_windows(values: np.ndarray, starts: np.ndarray, stops: np.ndarray, length: int) -> np.ndarray:
    """(B, length) int64: row b is values[starts[b]:stops[b]] right aligned, zeros on the left."""
    n = stops - starts  # (B,)
    col = np.arange(length)[None, :]  # (1, L)
    ok = col >= length - n[:, None]  # (B, L)
    src = np.where(ok, stops[:, None] - length + col, 0)  # (B, L) flat positions (0 where padding)
    if len(values) == 0:
        return np.zeros((len(starts), length), dtype=np.int64)
    return np.asarray(np.where(ok, values[src], 0), dtype=np.int64)


def user_chunks(offsets: np.ndarray, chunk_events: int) -> Iterator[tuple[int, int]]:
    """Consecutive user ranges [u0, u1) of about ``chunk_events`` events each (at least one user)."""
    n_users, u0 = len(offsets) - 1, 0
    while u0 < n_users:
        u1 = int(np.searchsorted(offsets, offsets[u0] + chunk_events, side="right")) - 1
        u1 = min(max(u1, u0 + 1), n_users)
        yield u0, u1
        u0 = u1


@dataclass
class RawBatch:
    """A batch of users' events in model terms, flat, before unknown items are dropped."""

    lengths: np.ndarray  # (U,) int64
    items: np.ndarray  # (E,) int32, 0 = not in the vocabulary
    event_types: np.ndarray  # (E,) int8
    dwell: np.ndarray  # (E,) int8 bucket
    gap: np.ndarray  # (E,) int8 bucket, to the previous raw event
    attention: np.ndarray  # (E,) int8 bucket
    hour: np.ndarray  # (E,) int8 buckets of CONTEXT_COLUMNS
    weekday: np.ndarray
    session: np.ndarray
    heat: np.ndarray
    item_week: np.ndarray
    activity: np.ndarray
    device: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def keep(self, mask: np.ndarray) -> EncodedSequences:
        """The events where ``mask`` (E,) holds, per user, as EncodedSequences (users with none stay, empty)."""
        owner = np.repeat(np.arange(len(self.lengths)), self.lengths)  # (E,)
        counts = np.bincount(owner[mask], minlength=len(self.lengths))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return EncodedSequences(offsets, *(getattr(self, name)[mask].astype(dtype) for name, dtype in ENCODED_COLUMNS))


def _bad_event_type(value: Any, user_id: Any) -> ValueError:
    return ValueError(f"event type {value!r} of user {user_id!r} is not one of {EVENT_TYPES}; fix the clean job")


def _raw(
    lengths: np.ndarray,
    items: np.ndarray,
    types: np.ndarray,
    times: np.ndarray,
    dwell: np.ndarray,
    dwell_known: np.ndarray,
    attention: np.ndarray | None = None,
    attention_known: np.ndarray | None = None,
    context: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> RawBatch:
    """Bucket dwell and the gap to the previous event of the same user (the first event's gap is unknown)."""
    first = np.zeros(len(items), dtype=bool)
    starts = (np.cumsum(lengths) - lengths)[lengths > 0]
    first[starts] = True
    gaps = times - np.concatenate([times[:1], times[:-1]])
    return RawBatch(
        lengths.astype(np.int64),
        items.astype(np.int32),
        types.astype(np.int8),
        log2_buckets(dwell, dwell_known, DWELL_EDGES_MS),
        log2_buckets(gaps, ~first, GAP_EDGES_MS),
        attention_buckets(
            np.zeros(len(items)) if attention is None else attention,
            np.zeros(len(items), dtype=bool) if attention_known is None else attention_known,
        ),
        *(
            context_buckets(*(context or {}).get(column, (np.zeros(len(items)), np.zeros(len(items), bool))), n, scale)
            for column, _, n, scale in CONTEXT_COLUMNS
        ),
    )


def raw_from_events(users: Sequence[Events], vocab: ItemVocab) -> RawBatch:
    """Users' events in model terms with ``vocab`` (unknown items kept as 0, for the split to see)."""
    for ev in users:
        if not len(ev.event_types) == len(ev.times_ms) == len(ev.dwell_ms) == len(ev.item_ids):
            raise ValueError(
                f"user {ev.user_id!r} has {len(ev.item_ids)} item_ids but {len(ev.event_types)} "
                f"event_types, {len(ev.times_ms)} times and {len(ev.dwell_ms)} dwell values"
            )
    types = np.array([EVENT_TYPE_INDEX.get(t, 0) for ev in users for t in ev.event_types], dtype=np.int64)
    if (types == 0).any():
        user, value = next((ev.user_id, t) for ev in users for t in ev.event_types if t not in EVENT_TYPE_INDEX)
        raise _bad_event_type(value, user)
    dwell = [d for ev in users for d in ev.dwell_ms]
    strength = [None if ev.attention is None else ev.attention for ev in users]
    for ev, a in zip(users, strength):
        if a is not None and len(a) != len(ev):
            raise ValueError(f"user {ev.user_id!r} has {len(ev)} item_ids but {len(a)} attention values")
    attention = [x for ev, a in zip(users, strength) for x in (a if a is not None else [None] * len(ev))]
    context = {}
    for column, _, _, scale in CONTEXT_COLUMNS:
        flat = []
        for ev in users:
            values = (ev.context or {}).get(column)
            if values is not None and len(values) != len(ev):
                raise ValueError(f"user {ev.user_id!r} has {len(ev)} item_ids but {len(values)} {column}")
            flat += values if values is not None else [None] * len(ev)
        if scale == "hash":
            values = string_codes(flat)
        else:
            kind = np.float64 if scale == "log2" else np.int64
            values = np.array([0 if x is None else x for x in flat], dtype=kind)
        context[column] = (values, np.array([x is not None for x in flat], dtype=bool))
    return _raw(
        np.array([len(ev) for ev in users], dtype=np.int64),
        np.array([vocab.index.get(i, 0) for ev in users for i in ev.item_ids], dtype=np.int64),
        types,
        np.array([t for ev in users for t in ev.times_ms], dtype=np.int64),
        np.array([0 if d is None else d for d in dwell], dtype=np.int64),
        np.array([d is not None for d in dwell], dtype=bool),
        np.array([0.0 if a is None else a for a in attention], dtype=np.float64),
        np.array([a is not None for a in attention], dtype=bool),
        context,
    )


def raw_from_arrow(batch: Any, vocab: ItemVocab) -> RawBatch:
    """The same from a features/sequences record batch, with vectorised lookups (no Python object per event)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def lengths_of(name: str) -> np.ndarray:
        return np.asarray(pc.fill_null(pc.list_value_length(batch.column(name)), 0), dtype=np.int64)

    def user(row: int) -> Any:
        return batch.column("user_id")[row].as_py()

    def owner_of(event: int) -> int:  # the row of a flat event position
        return int(np.searchsorted(np.cumsum(lengths), event, side="right"))

    lengths = lengths_of("item_ids")
    for name in ("event_types", "event_times_ms"):
        other = lengths_of(name)
        if (other != lengths).any():
            row = int(np.flatnonzero(other != lengths)[0])
            raise ValueError(
                f"features/sequences user {user(row)!r} has {lengths[row]} item_ids but {other[row]} "
                f"{name}; re-run featurize"
            )
    items = pc.index_in(batch.column("item_ids").flatten(), value_set=vocab.arrow_ids())
    items = np.asarray(pc.fill_null(items, -1), dtype=np.int64) + 1  # (E,) 0 = unknown
    flat_types = batch.column("event_types").flatten()
    types = pc.index_in(flat_types, value_set=pa.array(EVENT_TYPES, type=pa.string()))
    if types.null_count:
        at = int(np.flatnonzero(np.asarray(types.is_null()))[0])
        raise _bad_event_type(flat_types[at].as_py(), user(owner_of(at)))
    types = np.asarray(types, dtype=np.int64) + 1
    times = batch.column("event_times_ms").flatten()
    if times.null_count:
        at = int(np.flatnonzero(np.asarray(times.is_null()))[0])
        raise ValueError(f"features/sequences user {user(owner_of(at))!r} has a null event time; re-run featurize")
    dwell = np.zeros(len(items), dtype=np.int64)
    known = np.zeros(len(items), dtype=bool)
    if "dwell_ms" in batch.schema.names:
        column = batch.column("dwell_ms")
        has_list = np.asarray(column.is_valid())  # (U,) a null list = every dwell unknown
        d_len = lengths_of("dwell_ms")
        if (has_list & (d_len != lengths)).any():
            row = int(np.flatnonzero(has_list & (d_len != lengths))[0])
            raise ValueError(
                f"features/sequences user {user(row)!r} has {lengths[row]} item_ids but {d_len[row]} "
                "dwell_ms; re-run featurize"
            )
        flat = column.flatten()
        where = np.repeat(has_list, lengths)  # (E,) the events the flattened values belong to
        dwell[where] = np.asarray(pc.fill_null(pc.cast(flat, pa.int64(), safe=False), 0), dtype=np.int64)
        known[where] = np.asarray(flat.is_valid())
    strength = np.zeros(len(items), dtype=np.float64)
    strength_known = np.zeros(len(items), dtype=bool)
    if "attention" in batch.schema.names:
        column = batch.column("attention")
        has_list = np.asarray(column.is_valid())
        a_len = lengths_of("attention")
        if (has_list & (a_len != lengths)).any():
            row = int(np.flatnonzero(has_list & (a_len != lengths))[0])
            raise ValueError(
                f"features/sequences user {user(row)!r} has {lengths[row]} item_ids but {a_len[row]} "
                "attention values; re-run featurize"
            )
        flat = column.flatten()
        where = np.repeat(has_list, lengths)
        strength[where] = np.asarray(pc.fill_null(pc.cast(flat, pa.float64()), 0.0), dtype=np.float64)
        strength_known[where] = np.asarray(flat.is_valid())
    context = {}
    for name, _, _, scale in CONTEXT_COLUMNS:
        if name not in batch.schema.names:
            continue
        column = batch.column(name)
        has_list = np.asarray(column.is_valid())
        c_len = lengths_of(name)
        if (has_list & (c_len != lengths)).any():
            row = int(np.flatnonzero(has_list & (c_len != lengths))[0])
            raise ValueError(
                f"features/sequences user {user(row)!r} has {lengths[row]} item_ids but {c_len[row]} {name}; "
                "re-run featurize"
            )
        flat = column.flatten()
        where = np.repeat(has_list, lengths)
        kind = np.float64 if scale == "log2" else np.int64
        values, valid = np.zeros(len(items), dtype=kind), np.zeros(len(items), dtype=bool)
        if scale == "hash":  # a few distinct strings: hash each once
            encoded = pc.dictionary_encode(flat.combine_chunks() if isinstance(flat, pa.ChunkedArray) else flat)
            codes = string_codes(encoded.dictionary.to_pylist())
            values[where] = codes[np.asarray(pc.fill_null(encoded.indices, 0), dtype=np.int64)] if len(codes) else 0
        else:
            arrow_kind = pa.float64() if scale == "log2" else pa.int64()
            values[where] = np.asarray(pc.fill_null(pc.cast(flat, arrow_kind), 0), dtype=kind)
        valid[where] = np.asarray(flat.is_valid())
        context[name] = (values, valid)
    return _raw(
        lengths, items, types, np.asarray(times, dtype=np.int64), dwell, known, strength, strength_known, context
    )


def encode_sequences(users: Sequence[Events], vocab: ItemVocab) -> EncodedSequences:
    """Map users' events to model indices with ``vocab``. Gaps are measured to the previous event in the
    raw sequence; events whose item the vocabulary does not know are then left out."""
    raw = raw_from_events(users, vocab)
    return raw.keep(raw.items > 0)


def encode_record_batch(batch: Any, vocab: ItemVocab) -> EncodedSequences:
    """:func:`encode_sequences` for a features/sequences Arrow record batch
    (see :func:`models.features.sequence_batches`)."""
    raw = raw_from_arrow(batch, vocab)
    return raw.keep(raw.items > 0)


def encode_events(ev: Events, vocab: ItemVocab) -> Encoded:
    """One user's events in model indices (see :func:`encode_sequences`)."""
    return encode_sequences([ev], vocab).row(0)


def first_engagements(
    offsets: np.ndarray,
    items: np.ndarray,
    event_types: np.ndarray,
    positive: np.ndarray,
    attention: np.ndarray | None = None,
) -> np.ndarray:
    """(E,) bool: the positive events (with ``attention`` buckets: only those :func:`engaged_events` keeps, so a
    1-star rating or a bounce is never a target) on an item the user had not yet seen (no earlier event of
    :data:`SEEN_TYPE_INDEX` on it): the only items serving may recommend, so the only training and holdout targets.
    A click's ``view``, ``like`` or ``add_to_cart`` of the same item, or a repeat visit, stays context. Over each
    user's whole row (``offsets``), however long; an unknown item (0) counts as new. On logs where every item is
    engaged once (MovieLens: one rating per movie) every positive event is a first engagement."""
    n = len(items)
    owner = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))  # (E,)
    items = np.asarray(items, dtype=np.int64)
    key = owner * (int(items.max(initial=0)) + 1) + items  # (E,) user-item pair
    seen_at = np.flatnonzero(np.isin(event_types, SEEN_TYPE_INDEX) & (items > 0))
    pairs, first = np.unique(key[seen_at], return_index=True)  # earliest seen position of each pair
    j = np.minimum(np.searchsorted(pairs, key), max(len(pairs) - 1, 0))
    found = (pairs[j] == key) if len(pairs) else np.zeros(n, dtype=bool)
    first_seen = np.where(found, seen_at[first][j] if len(pairs) else 0, n)  # (E,) n = never seen
    interest = np.isin(event_types, positive) if attention is None else engaged_events(event_types, attention, positive)
    return interest & ((first_seen >= np.arange(n)) | (items == 0))


def next_engaged(engaged: np.ndarray) -> np.ndarray:
    """(B, L) int64: the column of the first engagement at or after each position, L when none follows."""
    length = engaged.shape[1]
    col = np.where(engaged, np.arange(length)[None, :], length)
    return np.minimum.accumulate(col[:, ::-1], axis=1)[:, ::-1]


def next_targets(items: np.ndarray, engaged: np.ndarray) -> np.ndarray:
    """(B, L) int64: at each position, the item of the first engagement (``engaged``, (B, L) bool) at or after it
    in its row, 0 when none follows: what the user chose next, however many impressions, skips or repeat events
    on an item they already knew lie between."""
    length = items.shape[1]
    nxt = next_engaged(engaged)  # (B, L) first engaged column at or after each
    return np.where(nxt < length, np.take_along_axis(items, np.minimum(nxt, length - 1), axis=1), 0)


def positive_type_index(positive_types: Sequence[str]) -> np.ndarray:
    """The EVENT_TYPE_INDEX values of ``positive_types``, for ``np.isin``."""
    return np.array([EVENT_TYPE_INDEX[t] for t in positive_types], dtype=np.int8)
