"""From the feature partitions to tensors: vocabularies, bucketing, the leave-one-out split, batches.

Two levels, on purpose. The holdout (validation and test) keeps raw strings (item ids, event types), so a
model with a different item vocabulary (the current champion) can be evaluated on exactly the same
holdout; each model encodes the raw events with its own vocabulary (:func:`encode_sequences`), skipping
items it does not know. The training part is encoded once, with the new model's vocabulary, into flat
arrays of seven bytes per event (:class:`EncodedSequences`), which :func:`read_split` builds while it
streams the parquet partition a batch at a time and can keep in memory-mapped files on disk, so the
memory training needs does not grow with the number of events.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import logging
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from attnrec import lake
from attnrec.contracts import EVENT_TYPES, EXPOSURE_EVENT_TYPES, NEGATIVE_EVENT_TYPES


log = logging.getLogger(__name__)


def positive_types(exposure: Sequence[str] = EXPOSURE_EVENT_TYPES,
                   negative: Sequence[str] = NEGATIVE_EVENT_TYPES) -> tuple[str, ...]:
    """Event types that count as a positive signal (training targets, holdout events): every type that is neither
    exposure (impressions, skips) nor negative (dislikes). Those stay in the sequence as context."""
    return tuple(t for t in EVENT_TYPES if t not in set(exposure) | set(negative))


DEFAULT_POSITIVE_TYPES: tuple[str, ...] = positive_types()

EVENT_TYPE_INDEX: dict[str, int] = {t: i + 1 for i, t in enumerate(EVENT_TYPES)}  # 0 = padding

YEAR_MIN, YEAR_STEP, N_YEAR_BUCKETS = 1900, 5, 32
N_DWELL_BUCKETS = 16
N_GAP_BUCKETS = 32


# ---------------------------------------------------------------- bucketing (pure) ---------------------------


def year_bucket(year: int | None) -> int:
    """0 = unknown; else 5-year buckets from 1900 (earlier years share bucket 1, later ones the last)."""
    if year is None:
        return 0
    return 1 + min(max((int(year) - YEAR_MIN) // YEAR_STEP, 0), N_YEAR_BUCKETS - 2)


def _log2_edges(n_buckets: int) -> np.ndarray:
    """Millisecond edges of a log2-of-seconds scale: x (ms) has floor(log2(1 + x / 1000)) = the number of edges
    <= x, edge k being 1000 * (2**k - 1); exact on integers, and capped so buckets stay below ``n_buckets``."""
    return np.array([1000 * (2 ** k - 1) for k in range(1, n_buckets - 2)], dtype=np.int64)


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


# ---------------------------------------------------------------- reading the lake -----------------------------


def feature_paths(root: str, dt: str) -> dict[str, str]:
    """The published sequences and items partitions for ``dt``; raise when either is incomplete."""
    paths = {"sequences": lake.partition(root, lake.FEATURE_SEQUENCES, dt), "items": lake.partition(root, lake.FEATURE_ITEMS, dt)}
    for name, path in paths.items():
        if not lake.is_complete(path):
            raise FileNotFoundError(
                f"features/{name} for dt={dt} is not published at {path} (no {lake.SUCCESS_MARKER}); "
                f"run the behavior_etl DAG for {dt} first"
            )
    return paths


def snapshot_hash(paths: Sequence[str]) -> str:
    """sha256 (first 16 hex) over the names and bytes of every data file in the given partitions."""
    from pyarrow import fs

    digest = hashlib.sha256()
    for uri in paths:
        filesystem, base = lake.filesystem_for(uri)
        infos = [i for i in filesystem.get_file_info(fs.FileSelector(base, recursive=True)) if i.type == fs.FileType.File]
        for info in sorted(infos, key=lambda i: i.path):
            if info.base_name.startswith(("_", ".")):
                continue
            digest.update(info.path[len(base):].encode())
            with filesystem.open_input_stream(info.path) as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def read_table(uri: str) -> list[dict[str, Any]]:
    """Rows of a parquet partition as dicts (files starting with ``_`` or ``.`` are ignored)."""
    import pyarrow.parquet as pq

    filesystem, path = lake.filesystem_for(uri)
    return pq.read_table(path, filesystem=filesystem).to_pylist()


#: The sequences columns the model reads; the other feature columns are never loaded.
SEQUENCE_COLUMNS = ("user_id", "item_ids", "event_types", "event_times_ms", "dwell_ms")


def sequence_batches(uri: str, batch_rows: int = 10_000) -> Iterator[Any]:
    """Arrow record batches of :data:`SEQUENCE_COLUMNS` from a sequences partition, ``batch_rows`` rows at a
    time, file by file in sorted path order (the same order in every run and on every rank)."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    filesystem, base = lake.filesystem_for(uri)
    infos = [i for i in filesystem.get_file_info(fs.FileSelector(base, recursive=True))
             if i.type == fs.FileType.File and not i.base_name.startswith(("_", "."))]
    for info in sorted(infos, key=lambda i: i.path):
        with filesystem.open_input_file(info.path) as src:
            parquet = pq.ParquetFile(src, pre_buffer=False, buffer_size=1 << 20)  # pre-buffering reads whole files
            names = parquet.schema_arrow.names
            missing = [c for c in SEQUENCE_COLUMNS if c != "dwell_ms" and c not in names]
            if missing:
                raise ValueError(f"{info.path} lacks sequence columns {missing} (has {names}); re-run featurize")
            yield from parquet.iter_batches(batch_size=batch_rows, columns=[c for c in SEQUENCE_COLUMNS if c in names])


# ---------------------------------------------------------------- vocabulary -----------------------------------


@dataclass
class ItemVocab:
    """item_id <-> item_idx (1..N, 0 = padding) plus the content each model row carries."""

    item_ids: list[str]  # item_ids[i - 1] has index i
    categories: list[str]  # categories[j - 1] has index j
    item_categories: list[list[int]]  # per item index 1..N (position i - 1)
    item_years: list[int]  # year bucket per item index 1..N
    index: dict[str, int] = field(init=False, repr=False)
    _arrow_ids: Any = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        self.index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def max_categories(self) -> int:
        return max([1, *(len(c) for c in self.item_categories)])

    @classmethod
    def from_items(cls, rows: list[dict[str, Any]]) -> "ItemVocab":
        """Build from features/items rows; the table's item_idx is the model index (it is contiguous 1..N)."""
        rows = sorted(rows, key=lambda r: r["item_idx"])
        got = [r["item_idx"] for r in rows]
        if got != list(range(1, len(rows) + 1)):
            raise ValueError(
                f"features/items item_idx is not contiguous 1..{len(rows)} (starts {got[:5]}); re-run featurize"
            )
        categories = sorted({c for r in rows for c in (r.get("categories") or []) if c is not None})
        cat_index = {c: j + 1 for j, c in enumerate(categories)}
        return cls(
            item_ids=[r["item_id"] for r in rows],
            categories=categories,
            item_categories=[sorted({cat_index[c] for c in (r.get("categories") or []) if c is not None}) for r in rows],
            item_years=[year_bucket(r.get("year")) for r in rows],
        )

    def content_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N+1, C) category indices and (N+1,) year buckets, row 0 = padding, for ItemEncoder.set_content."""
        cats = torch.zeros(self.n_items + 1, self.max_categories, dtype=torch.long)
        for i, cs in enumerate(self.item_categories, start=1):
            if cs:
                cats[i, : len(cs)] = torch.tensor(cs)
        years = torch.tensor([0, *self.item_years], dtype=torch.long)
        return cats, years

    def to_dict(self) -> dict[str, Any]:
        return {"item_ids": list(self.item_ids), "categories": list(self.categories),
                "item_categories": [list(c) for c in self.item_categories], "item_years": list(self.item_years)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ItemVocab":
        return cls(d["item_ids"], d["categories"], d["item_categories"], d["item_years"])

    def arrow_ids(self) -> Any:
        """The item ids as a pyarrow array (position i - 1 = index i), for vectorised lookups; built once."""
        if self._arrow_ids is None:
            import pyarrow as pa

            self._arrow_ids = pa.array(self.item_ids, type=pa.string())
        return self._arrow_ids


# ---------------------------------------------------------------- raw sequences -------------------------------


@dataclass
class Events:
    """One user's events, oldest -> newest, as in features/sequences."""

    user_id: str
    item_ids: list[str]
    event_types: list[str]
    times_ms: list[int]
    dwell_ms: list[int | None]

    def __len__(self) -> int:
        return len(self.item_ids)

    def head(self, n: int) -> "Events":
        """The first ``n`` events."""
        return Events(self.user_id, self.item_ids[:n], self.event_types[:n], self.times_ms[:n], self.dwell_ms[:n])

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Events":
        n = len(row["item_ids"])
        dwell = row.get("dwell_ms")
        dwell = [None] * n if dwell is None or isinstance(dwell, float) else [None if d is None else int(d) for d in dwell]
        # ids and types are interned: users who share an item share its string (a holdout of many users stays small)
        return cls(str(row["user_id"]), [sys.intern(str(i)) for i in row["item_ids"]],
                   [sys.intern(str(t)) for t in row["event_types"]], [int(t) for t in row["event_times_ms"]], dwell)


@dataclass
class Holdout:
    """Predict ``target`` (an item id) from ``history`` (every event before it)."""

    history: Events
    target: str


# ---------------------------------------------------------------- encoded sequences ----------------------------


@dataclass
class Encoded:
    """One user's events in model indices (unknown items dropped), oldest -> newest."""

    items: list[int]
    event_types: list[int]
    dwell: list[int]
    gap: list[int]


#: The per-event columns of :class:`EncodedSequences` and their dtypes (seven bytes per event).
ENCODED_COLUMNS: tuple[tuple[str, Any], ...] = (("items", np.int32), ("event_types", np.int8), ("dwell", np.int8),
                                                ("gap", np.int8))


@dataclass
class EncodedSequences:
    """Users' events in model indices as flat arrays: user u's events are positions offsets[u]:offsets[u+1],
    oldest -> newest, items the model does not know left out. The event arrays may be memory-mapped files."""

    offsets: np.ndarray  # (U+1,) int64
    items: np.ndarray  # (E,) int32, 1..N
    event_types: np.ndarray  # (E,) int8, EVENT_TYPE_INDEX
    dwell: np.ndarray  # (E,) int8, dwell_bucket
    gap: np.ndarray  # (E,) int8, gap_bucket (to the previous raw event, known item or not)

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
        return {name: torch.from_numpy(gather_windows(getattr(self, name), starts, stops, length))
                for name, _ in ENCODED_COLUMNS}

    def rows(self, u0: int, u1: int) -> "EncodedSequences":
        """Users u0..u1-1 (views of the same event arrays)."""
        e0, e1 = int(self.offsets[u0]), int(self.offsets[u1])
        columns = (getattr(self, name)[e0:e1] for name, _ in ENCODED_COLUMNS)
        return EncodedSequences(self.offsets[u0:u1 + 1] - e0, *columns)

    def last_inputs(self, max_len: int) -> dict[str, torch.Tensor]:
        """Model inputs for every user: their last ``max_len`` events, trimmed to the longest row (at least 1)."""
        stops = self.offsets[1:]
        starts = np.maximum(self.offsets[:-1], stops - max_len)
        length = max(1, int((stops - starts).max(initial=0)))
        return self.windows(starts, stops, length)

    def item_lists(self) -> list[list[int]]:
        """Each user's item indices (the items candidate generation and evaluation leave out)."""
        flat = self.items.astype(np.int64).tolist()
        return [flat[s:e] for s, e in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist())]


def gather_windows(values: np.ndarray, starts: np.ndarray, stops: np.ndarray, length: int) -> np.ndarray:
    """(B, length) int64: row b is values[starts[b]:stops[b]] right aligned, zeros on the left."""
    n = stops - starts  # (B,)
    col = np.arange(length)[None, :]  # (1, L)
    ok = col >= length - n[:, None]  # (B, L)
    src = np.where(ok, stops[:, None] - length + col, 0)  # (B, L) flat positions (0 where padding)
    if len(values) == 0:
        return np.zeros((len(starts), length), dtype=np.int64)
    return np.asarray(np.where(ok, values[src], 0), dtype=np.int64)


@dataclass
class _Raw:
    """A batch of users' events in model terms, flat, before unknown items are dropped."""

    lengths: np.ndarray  # (U,) int64
    items: np.ndarray  # (E,) int32, 0 = not in the vocabulary
    event_types: np.ndarray  # (E,) int8
    dwell: np.ndarray  # (E,) int8 bucket
    gap: np.ndarray  # (E,) int8 bucket, to the previous raw event

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


def _raw(lengths: np.ndarray, items: np.ndarray, types: np.ndarray, times: np.ndarray, dwell: np.ndarray,
         dwell_known: np.ndarray) -> _Raw:
    """Bucket dwell and the gap to the previous event of the same user (the first event's gap is unknown)."""
    first = np.zeros(len(items), dtype=bool)
    starts = (np.cumsum(lengths) - lengths)[lengths > 0]
    first[starts] = True
    gaps = times - np.concatenate([times[:1], times[:-1]])
    return _Raw(lengths.astype(np.int64), items.astype(np.int32), types.astype(np.int8),
                log2_buckets(dwell, dwell_known, DWELL_EDGES_MS), log2_buckets(gaps, ~first, GAP_EDGES_MS))


def _raw_from_events(users: Sequence[Events], vocab: ItemVocab) -> _Raw:
    for ev in users:
        if not len(ev.event_types) == len(ev.times_ms) == len(ev.dwell_ms) == len(ev.item_ids):
            raise ValueError(f"user {ev.user_id!r} has {len(ev.item_ids)} item_ids but {len(ev.event_types)} "
                             f"event_types, {len(ev.times_ms)} times and {len(ev.dwell_ms)} dwell values")
    types = np.array([EVENT_TYPE_INDEX.get(t, 0) for ev in users for t in ev.event_types], dtype=np.int64)
    if (types == 0).any():
        user, value = next((ev.user_id, t) for ev in users for t in ev.event_types if t not in EVENT_TYPE_INDEX)
        raise _bad_event_type(value, user)
    dwell = [d for ev in users for d in ev.dwell_ms]
    return _raw(np.array([len(ev) for ev in users], dtype=np.int64),
                np.array([vocab.index.get(i, 0) for ev in users for i in ev.item_ids], dtype=np.int64), types,
                np.array([t for ev in users for t in ev.times_ms], dtype=np.int64),
                np.array([0 if d is None else d for d in dwell], dtype=np.int64),
                np.array([d is not None for d in dwell], dtype=bool))


def _raw_from_arrow(batch: Any, vocab: ItemVocab) -> _Raw:
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
            raise ValueError(f"features/sequences user {user(row)!r} has {lengths[row]} item_ids but {other[row]} "
                             f"{name}; re-run featurize")
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
            raise ValueError(f"features/sequences user {user(row)!r} has {lengths[row]} item_ids but {d_len[row]} "
                             "dwell_ms; re-run featurize")
        flat = column.flatten()
        where = np.repeat(has_list, lengths)  # (E,) the events the flattened values belong to
        dwell[where] = np.asarray(pc.fill_null(pc.cast(flat, pa.int64(), safe=False), 0), dtype=np.int64)
        known[where] = np.asarray(flat.is_valid())
    return _raw(lengths, items, types, np.asarray(times, dtype=np.int64), dwell, known)


def encode_sequences(users: Sequence[Events], vocab: ItemVocab) -> EncodedSequences:
    """Map users' events to model indices with ``vocab``. Gaps are measured to the previous event in the
    raw sequence; events whose item the vocabulary does not know are then left out."""
    raw = _raw_from_events(users, vocab)
    return raw.keep(raw.items > 0)


def encode_record_batch(batch: Any, vocab: ItemVocab) -> EncodedSequences:
    """:func:`encode_sequences` for a features/sequences Arrow record batch (see :func:`sequence_batches`)."""
    raw = _raw_from_arrow(batch, vocab)
    return raw.keep(raw.items > 0)


def count_rows(uri: str) -> int:
    """Rows of a parquet partition, from the file footers (no data read)."""
    import pyarrow.dataset as ds

    filesystem, path = lake.filesystem_for(uri)
    return sum(f.metadata.num_rows for f in ds.dataset(path, format="parquet", filesystem=filesystem).get_fragments())


def encode_events(ev: Events, vocab: ItemVocab) -> Encoded:
    """One user's events in model indices (see :func:`encode_sequences`)."""
    return encode_sequences([ev], vocab).row(0)


def positive_type_index(positive_types: Sequence[str]) -> np.ndarray:
    """The EVENT_TYPE_INDEX values of ``positive_types``, for ``np.isin``."""
    return np.array([EVENT_TYPE_INDEX[t] for t in positive_types], dtype=np.int8)


# ---------------------------------------------------------------- the split -----------------------------------


@dataclass
class Split:
    """The leave-one-out split: training events encoded, holdout users raw (see the module docstring)."""

    train: EncodedSequences  # every user's events before their validation target (all events without one)
    valid: list[Holdout]  # the holdout users (or a sample of them), sorted by user id
    test: list[Holdout]
    n_users: int
    n_holdout_users: int  # users with a validation and a test target; ``valid`` holds them all or a sample


class _HoldoutSample:
    """Which holdout users to keep: all, or with ``cap`` the ``cap`` users whose user id hashes lowest, a
    uniform sample that is the same in every run (so a champion and a challenger meet the same users),
    kept in memory bounded by ``cap`` while the partition streams by."""

    def __init__(self, cap: int | None) -> None:
        if cap is not None and cap < 1:
            raise ValueError(f"max_holdout_users={cap}: evaluation needs at least one user; use None for all users")
        self.cap = cap
        self.heap: list[tuple[int, str, Holdout, Holdout]] = []  # (-hash, user, valid, test): the largest on top
        self.kept: list[tuple[str, Holdout, Holdout]] = []

    def key(self, user_id: str) -> int | None:
        """The user's sort key when it would enter the sample now, else None."""
        if self.cap is None:
            return 0
        h = int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big")
        return h if len(self.heap) < self.cap or h < -self.heap[0][0] else None

    def add(self, key: int, valid: Holdout, test: Holdout) -> None:
        user = valid.history.user_id
        if self.cap is None:
            self.kept.append((user, valid, test))
        elif len(self.heap) < self.cap:
            heapq.heappush(self.heap, (-key, user, valid, test))
        else:  # keeps the ``cap`` lowest hashes (``key`` ran against the threshold at the start of the batch)
            heapq.heappushpop(self.heap, (-key, user, valid, test))

    def holdouts(self) -> tuple[list[Holdout], list[Holdout]]:
        kept = self.kept if self.cap is None else [(u, v, t) for _, u, v, t in self.heap]
        kept.sort(key=lambda x: x[0])
        return [v for _, v, _ in kept], [t for _, _, t in kept]


def _split_batch(raw: _Raw, user_ids: Callable[[np.ndarray], list[str]], rows: Callable[[np.ndarray], list[Events]],
                 positive: np.ndarray, sample: _HoldoutSample) -> tuple[EncodedSequences, int]:
    """Leave-one-out on one batch: a user's last positive event is the test target, the one before it the
    validation target, everything before that is training; users with fewer than 3 positive events are
    training only. Offers the holdout users to ``sample``; returns (training events, holdout user count)."""
    offsets = raw.offsets
    pos = np.flatnonzero(np.isin(raw.event_types, positive))  # (P,) flat positions of positive events
    owner = np.searchsorted(offsets, pos, side="right") - 1  # (P,)
    count = np.bincount(owner, minlength=len(raw.lengths))  # (U,)
    eligible = np.flatnonzero(count >= 3)
    last = np.cumsum(count) - 1  # (U,) index in pos of each user's last positive event
    valid_at = pos[last[eligible] - 1] - offsets[eligible]  # (H,) positions within the user's row
    test_at = pos[last[eligible]] - offsets[eligible]
    train_end = offsets[1:].copy()
    train_end[eligible] = offsets[eligible] + valid_at
    event_row = np.repeat(np.arange(len(raw.lengths)), raw.lengths)
    train = raw.keep((raw.items > 0) & (np.arange(len(raw.items)) < train_end[event_row]))
    if len(eligible):
        keys = [sample.key(u) for u in user_ids(eligible)]
        chosen = [j for j, k in enumerate(keys) if k is not None]
        for j, ev in zip(chosen, rows(eligible[chosen])):
            v, t = int(valid_at[j]), int(test_at[j])
            sample.add(keys[j], Holdout(ev.head(v), ev.item_ids[v]), Holdout(ev.head(t), ev.item_ids[t]))
    return train, len(eligible)


def leave_one_out(users: Sequence[Events], vocab: ItemVocab, positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
                  max_holdout_users: int | None = None) -> Split:
    """Leave-one-out by time over positive events, for users already in memory (see :func:`read_split`)."""
    raw = _raw_from_events(users, vocab)
    sample = _HoldoutSample(max_holdout_users)
    train, n_holdout = _split_batch(raw, lambda idx: [users[i].user_id for i in idx],
                                    lambda idx: [users[i] for i in idx], positive_type_index(positive_types), sample)
    valid, test = sample.holdouts()
    return Split(train, valid, test, len(users), n_holdout)


class _SequenceWriter:
    """Collects EncodedSequences batches in memory, or appended to one file per column under ``spill_dir``
    and memory-mapped at the end (the page cache, not the process, then holds the events)."""

    def __init__(self, spill_dir: str | None) -> None:
        self.spill_dir = spill_dir
        self.counts: list[np.ndarray] = []
        self.chunks: dict[str, list[np.ndarray]] = {name: [] for name, _ in ENCODED_COLUMNS}
        self.files: dict[str, Any] = {}
        if spill_dir is not None:
            shutil.rmtree(spill_dir, ignore_errors=True)
            os.makedirs(spill_dir)
            self.files = {name: open(os.path.join(spill_dir, f"{name}.bin"), "wb") for name, _ in ENCODED_COLUMNS}

    def append(self, part: EncodedSequences) -> None:
        self.counts.append(part.lengths())
        for name, _ in ENCODED_COLUMNS:
            values = np.ascontiguousarray(getattr(part, name))
            if self.files:
                self.files[name].write(values.tobytes())
            else:
                self.chunks[name].append(values)

    def finish(self) -> EncodedSequences:
        counts = np.concatenate([np.zeros(1, dtype=np.int64), *self.counts])
        offsets = np.cumsum(counts).astype(np.int64)
        n = int(offsets[-1])
        columns = {}
        for name, dtype in ENCODED_COLUMNS:
            if self.files:
                self.files[name].close()
                path = os.path.join(self.spill_dir, f"{name}.bin")
                columns[name] = np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype)
            else:
                columns[name] = np.concatenate([np.zeros(0, dtype=dtype), *self.chunks[name]])
        return EncodedSequences(offsets, **columns)


def read_split(uri: str, vocab: ItemVocab, positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
               max_holdout_users: int | None = None, batch_rows: int = 10_000,
               spill_dir: str | None = None) -> Split:
    """:func:`leave_one_out` over a features/sequences partition, streamed ``batch_rows`` users at a time:
    the training events are encoded with ``vocab`` as each batch arrives (seven bytes per event, kept in
    files under ``spill_dir`` and memory-mapped when given), and the holdout keeps at most
    ``max_holdout_users`` users (a fixed hash sample; all when None). Memory held: one Arrow batch, eight
    bytes per user, and the sampled holdout users' raw events."""
    positive = positive_type_index(positive_types)
    sample = _HoldoutSample(max_holdout_users)
    writer = _SequenceWriter(spill_dir)
    n_users = n_holdout = n_events = 0
    for b, batch in enumerate(sequence_batches(uri, batch_rows)):
        user_column = batch.column("user_id")
        train, eligible = _split_batch(
            _raw_from_arrow(batch, vocab), lambda idx: [str(u) for u in user_column.take(idx).to_pylist()],
            lambda idx: [Events.from_row(r) for r in batch.take(idx).to_pylist()], positive, sample)
        writer.append(train)
        n_users, n_holdout, n_events = n_users + batch.num_rows, n_holdout + eligible, n_events + train.n_events
        if (b + 1) % 20 == 0:
            log.info("read %d users, %d training events so far from %s", n_users, n_events, uri)
    valid, test = sample.holdouts()
    return Split(writer.finish(), valid, test, n_users, n_holdout)


# ---------------------------------------------------------------- training examples ----------------------------


class TrainingSet:
    """Next-item examples over :class:`EncodedSequences`, without copying them: a user's example is their
    last ``max_len + 1`` events; inputs are all but the last, targets are the items of events 1.. when that
    event is positive (0 otherwise). Users without any target are left out. Holds 16 bytes per example."""

    def __init__(self, seqs: EncodedSequences, max_len: int, positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
                 chunk_events: int = 1 << 22) -> None:
        self.seqs, self.max_len, self.positive = seqs, max_len, positive_type_index(positive_types)
        stops = seqs.offsets[1:]
        starts = np.maximum(seqs.offsets[:-1], stops - (max_len + 1))
        has_target = np.zeros(len(seqs), dtype=bool)
        for u0, u1 in user_chunks(seqs.offsets, chunk_events):  # bounded scratch memory
            e0 = int(seqs.offsets[u0])
            csum = np.concatenate([[0], np.cumsum(np.isin(seqs.event_types[e0:seqs.offsets[u1]], self.positive))])
            s, e = starts[u0:u1] - e0, stops[u0:u1] - e0
            has_target[u0:u1] = (e - s >= 2) & (csum[e] - csum[np.minimum(s + 1, e)] > 0)
        self.starts, self.stops = starts[has_target], stops[has_target]  # (X,) flat event positions

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, idx: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(inputs, targets) of examples ``idx``, each (B, L) with L the longest input among them."""
        starts, stops = self.starts[idx], self.stops[idx]
        length = int((stops - starts - 1).max())
        inputs = self.seqs.windows(starts, stops - 1, length)
        items = gather_windows(self.seqs.items, starts + 1, stops, length)
        types = gather_windows(self.seqs.event_types, starts + 1, stops, length)
        return inputs, torch.from_numpy(np.where(np.isin(types, self.positive), items, 0))

    def batches(self, batch_size: int, rng: random.Random) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Shuffled batches of (inputs, targets). Batches group sequences of similar length (sorted with random
        tie-breaks, then the batch order is shuffled), so little compute goes to padding; padding does not
        change any output anyway. Every random choice comes from ``rng``."""
        g = np.random.default_rng(rng.getrandbits(64))
        order = np.lexsort((g.random(len(self)), self.stops - self.starts))
        starts = np.arange(0, len(order), batch_size)
        g.shuffle(starts)
        for s in starts:
            yield self.batch(order[s:s + batch_size])

    def target_counts(self, n_items: int) -> torch.Tensor:
        """(N+1,) how often each item is a training target (the sampled-softmax proposal)."""
        counts = np.zeros(n_items + 1, dtype=np.float64)
        for x0 in range(0, len(self), 4096):
            starts, stops = self.starts[x0:x0 + 4096], self.stops[x0:x0 + 4096]
            items = gather_windows(self.seqs.items, starts + 1, stops, int((stops - starts - 1).max()))
            types = gather_windows(self.seqs.event_types, starts + 1, stops, items.shape[1])
            counts += np.bincount(items[np.isin(types, self.positive) & (items > 0)], minlength=n_items + 1)
        return torch.from_numpy(counts)


def user_chunks(offsets: np.ndarray, chunk_events: int) -> Iterator[tuple[int, int]]:
    """Consecutive user ranges [u0, u1) of about ``chunk_events`` events each (at least one user)."""
    n_users, u0 = len(offsets) - 1, 0
    while u0 < n_users:
        u1 = int(np.searchsorted(offsets, offsets[u0] + chunk_events, side="right")) - 1
        u1 = min(max(u1, u0 + 1), n_users)
        yield u0, u1
        u0 = u1


def positive_counts(train: EncodedSequences, vocab: ItemVocab,
                    positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES) -> torch.Tensor:
    """(N+1,) number of positive events per item index in ``train`` (the popularity baseline)."""
    positive = positive_type_index(positive_types)
    counts = np.zeros(vocab.n_items + 1, dtype=np.float64)
    for u0, u1 in user_chunks(train.offsets, 1 << 22):
        e0, e1 = int(train.offsets[u0]), int(train.offsets[u1])
        items = train.items[e0:e1]
        counts += np.bincount(items[np.isin(train.event_types[e0:e1], positive)], minlength=vocab.n_items + 1)
    return torch.from_numpy(counts)


def load_features(root: str, dt: str) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, str]]:
    """(partition paths {"sequences", "items"}, item rows, data version {dt, snapshot_hash, paths}) for ``dt``;
    the sequences are read afterwards with :func:`read_split`, once the vocabulary is known."""
    paths = feature_paths(root, dt)
    items = read_table(paths["items"])
    version = {"dt": dt, "snapshot_hash": snapshot_hash([paths["sequences"], paths["items"]]),
               "sequences_path": paths["sequences"], "items_path": paths["items"]}
    return paths, items, version
