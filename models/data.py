"""From the feature partitions to tensors: vocabularies, bucketing, the leave-one-out split, batches.

Two levels, on purpose. The split is made on raw strings (item ids, event types), so a model with a
different item vocabulary (the current champion) can be evaluated on exactly the same holdout; each
model then encodes the raw events with its own vocabulary (:func:`encode_events`), skipping items it
does not know.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from attnrec import lake
from attnrec.contracts import EVENT_TYPES, EXPOSURE_EVENT_TYPES, NEGATIVE_EVENT_TYPES


def positive_types(exposure: Sequence[str] = EXPOSURE_EVENT_TYPES, negative: Sequence[str] = NEGATIVE_EVENT_TYPES) -> tuple[str, ...]:
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


def dwell_bucket(dwell_ms: int | None) -> int:
    """Dwell strength on a log2 scale of seconds: 1 = unknown, 2 = under a second, ... (0 is padding)."""
    if dwell_ms is None:
        return 1
    return 2 + min(int(math.log2(1.0 + max(int(dwell_ms), 0) / 1000.0)), N_DWELL_BUCKETS - 3)


def gap_bucket(gap_ms: int | None) -> int:
    """Time since the previous event on a log2 scale of seconds: 1 = first event, 2 = under a second, ..."""
    if gap_ms is None:
        return 1
    return 2 + min(int(math.log2(1.0 + max(int(gap_ms), 0) / 1000.0)), N_GAP_BUCKETS - 3)


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


def read_sequences(uri: str, batch_rows: int = 10_000) -> list["Events"]:
    """Every user's events from a sequences partition, sorted by user id. Reads only
    :data:`SEQUENCE_COLUMNS`, ``batch_rows`` rows at a time, so the Arrow data in memory at once is one batch."""
    import pyarrow.dataset as ds

    filesystem, path = lake.filesystem_for(uri)
    dataset = ds.dataset(path, format="parquet", filesystem=filesystem)  # skips files starting with _ or .
    users = [Events.from_row(r) for batch in dataset.to_batches(columns=list(SEQUENCE_COLUMNS), batch_size=batch_rows)
             for r in batch.to_pylist()]
    users.sort(key=lambda e: e.user_id)
    return users


# ---------------------------------------------------------------- vocabulary -----------------------------------


@dataclass
class ItemVocab:
    """item_id <-> item_idx (1..N, 0 = padding) plus the content each model row carries."""

    item_ids: list[str]  # item_ids[i - 1] has index i
    categories: list[str]  # categories[j - 1] has index j
    item_categories: list[list[int]]  # per item index 1..N (position i - 1)
    item_years: list[int]  # year bucket per item index 1..N
    index: dict[str, int] = field(init=False, repr=False)

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


# ---------------------------------------------------------------- raw sequences and the split -----------------


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
        return cls(str(row["user_id"]), [str(i) for i in row["item_ids"]], [str(t) for t in row["event_types"]],
                   [int(t) for t in row["event_times_ms"]], dwell)


@dataclass
class Holdout:
    """Predict ``target`` (an item id) from ``history`` (every event before it)."""

    history: Events
    target: str


@dataclass
class Split:
    train: list[Events]  # the sequences the model learns from (every event before the validation target)
    valid: list[Holdout]
    test: list[Holdout]


def leave_one_out(users: list[Events], positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES) -> Split:
    """Leave-one-out by time over positive events: a user's last positive event is the test target, the
    one before it the validation target, everything before that is training. Users with fewer than 3
    positive events are training only (and sit in no holdout)."""
    positive = set(positive_types)
    train, valid, test = [], [], []
    for ev in users:
        pos = [i for i, t in enumerate(ev.event_types) if t in positive]
        if len(pos) < 3:
            train.append(ev)
            continue
        v, t = pos[-2], pos[-1]
        train.append(ev.head(v))
        valid.append(Holdout(ev.head(v), ev.item_ids[v]))
        test.append(Holdout(ev.head(t), ev.item_ids[t]))
    return Split(train, valid, test)


# ---------------------------------------------------------------- encoding -------------------------------------


@dataclass
class Encoded:
    """One user's events in model indices (unknown items dropped), oldest -> newest."""

    items: list[int]
    event_types: list[int]
    dwell: list[int]
    gap: list[int]


def encode_events(ev: Events, vocab: ItemVocab) -> Encoded:
    """Map one user's events to indices with ``vocab``. Gaps are measured to the previous event in the
    raw sequence; events whose item the vocabulary does not know are then skipped."""
    out = Encoded([], [], [], [])
    prev_time: int | None = None
    for item, etype, t, dwell in zip(ev.item_ids, ev.event_types, ev.times_ms, ev.dwell_ms):
        gap = None if prev_time is None else t - prev_time
        prev_time = t
        idx = vocab.index.get(item)
        if idx is None:
            continue
        if etype not in EVENT_TYPE_INDEX:
            raise ValueError(f"event type {etype!r} of user {ev.user_id!r} is not one of {EVENT_TYPES}; fix the clean job")
        out.items.append(idx)
        out.event_types.append(EVENT_TYPE_INDEX[etype])
        out.dwell.append(dwell_bucket(dwell))
        out.gap.append(gap_bucket(gap))
    return out


def left_pad(rows: list[list[int]], length: int) -> torch.Tensor:
    """(B, length) long tensor; each row keeps its last ``length`` values, right aligned, zeros on the left."""
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for b, r in enumerate(rows):
        r = r[-length:]
        if r:
            out[b, length - len(r):] = torch.tensor(r, dtype=torch.long)
    return out


def collate_inputs(encoded: list[Encoded], max_len: int) -> dict[str, torch.Tensor]:
    """Model inputs for the whole of each sequence (last ``max_len`` events), trimmed to the longest row."""
    length = max(1, min(max_len, max((len(e.items) for e in encoded), default=1)))
    return {
        "items": left_pad([e.items for e in encoded], length),
        "event_types": left_pad([e.event_types for e in encoded], length),
        "dwell": left_pad([e.dwell for e in encoded], length),
        "gap": left_pad([e.gap for e in encoded], length),
    }


@dataclass
class TrainExample:
    """Inputs are events 0..n-2, targets are the items of events 1..n-1 (0 where that event is not positive)."""

    inputs: Encoded
    targets: list[int]


def training_examples(users: list[Events], vocab: ItemVocab, max_len: int,
                      positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES) -> list[TrainExample]:
    """Next-item examples: every position predicts the next event's item when that event is positive.
    Sequences are cut to their last ``max_len + 1`` events; users without any target are dropped."""
    positive = {EVENT_TYPE_INDEX[t] for t in positive_types}
    out = []
    for ev in users:
        e = encode_events(ev, vocab)
        n = len(e.items)
        start = max(0, n - (max_len + 1))
        items, types = e.items[start:], e.event_types[start:]
        targets = [it if ty in positive else 0 for it, ty in zip(items[1:], types[1:])]
        if not any(targets):
            continue
        inputs = Encoded(items[:-1], types[:-1], e.dwell[start:-1], e.gap[start:-1])
        out.append(TrainExample(inputs, targets))
    return out


def train_batches(examples: list[TrainExample], batch_size: int, max_len: int,
                  rng: random.Random) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Shuffled batches of (inputs, targets), each (B, L) with L the longest sequence in the batch.

    Batches group sequences of similar length (sorted with random tie-breaks, then the batch order is
    shuffled), so little compute goes to padding; padding does not change any output anyway."""
    keys = [(len(e.targets), rng.random(), i) for i, e in enumerate(examples)]
    order = [i for _, _, i in sorted(keys)]
    starts = list(range(0, len(order), batch_size))
    rng.shuffle(starts)
    for s in starts:
        chunk = [examples[i] for i in order[s:s + batch_size]]
        inputs = collate_inputs([c.inputs for c in chunk], max_len)
        targets = left_pad([c.targets for c in chunk], inputs["items"].shape[1])
        yield inputs, targets


def positive_counts(users: list[Events], vocab: ItemVocab,
                    positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES) -> torch.Tensor:
    """(N+1,) number of positive events per item index in ``users`` (the popularity baseline)."""
    positive = set(positive_types)
    counts = torch.zeros(vocab.n_items + 1, dtype=torch.float64)
    for ev in users:
        for item, etype in zip(ev.item_ids, ev.event_types):
            idx = vocab.index.get(item)
            if idx is not None and etype in positive:
                counts[idx] += 1
    return counts


def load_features(root: str, dt: str) -> tuple[list[Events], list[dict[str, Any]], dict[str, str]]:
    """(user event sequences, item rows, data version {dt, snapshot_hash, paths}) for partition ``dt``."""
    paths = feature_paths(root, dt)
    users = read_sequences(paths["sequences"])
    items = read_table(paths["items"])
    version = {"dt": dt, "snapshot_hash": snapshot_hash([paths["sequences"], paths["items"]]),
               "sequences_path": paths["sequences"], "items_path": paths["items"]}
    return users, items, version
