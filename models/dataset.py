"""The training data of one partition: the leave-one-out split by time, the holdout sample, the training
events kept in (memory-mapped) flat arrays, and the next-item training examples over them.

:func:`read_split` streams features/sequences a batch at a time: training events are encoded with the new
model's vocabulary as they arrive (models.encoding), holdout users stay raw so any model, the champion
included, can be evaluated on exactly the same holdout. Memory does not grow with the number of events.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import random
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from attnrec.contracts import SEEN_EVENT_TYPES
from models.encoding import (
    DEFAULT_POSITIVE_TYPES,
    ENCODED_COLUMNS,
    SEEN_TYPE_INDEX,
    EncodedSequences,
    Events,
    RawBatch,
    attention_weights,
    engaged_events,
    first_engagements,
    gather_windows,
    next_engaged,
    positive_type_index,
    raw_from_arrow,
    raw_from_events,
    user_chunks,
)
from models.features import sequence_batches
from models.vocab import ItemVocab

log = logging.getLogger(__name__)


@dataclass
class Holdout:
    """Predict ``target`` (an item id) from ``history`` (every event before it)."""

    history: Events
    target: str


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


def _split_batch(
    raw: RawBatch,
    user_ids: Callable[[np.ndarray], list[str]],
    rows: Callable[[np.ndarray], list[Events]],
    positive: np.ndarray,
    sample: _HoldoutSample,
) -> tuple[EncodedSequences, int]:
    """Leave-one-out on one batch: a user's last first engagement (a positive event on an item new to them,
    :func:`~models.encoding.first_engagements`) is the test target, the one before it the validation target
    (each predicted from the events before it, less the impressions just before it: :func:`_before`), everything
    before the validation target is training; users with fewer than 3 first engagements are training only.
    Offers the holdout users to ``sample``; returns (training events, holdout user count)."""
    offsets = raw.offsets
    pos = np.flatnonzero(
        first_engagements(offsets, raw.items, raw.event_types, positive, raw.attention)
    )  # (P,) the targets
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
            sample.add(keys[j], Holdout(_before(ev, v), ev.item_ids[v]), Holdout(_before(ev, t), ev.item_ids[t]))
    return train, len(eligible)


def _before(ev: Events, at: int) -> Events:
    """The history a holdout target at ``at`` is predicted from: the events before it, less the impressions just
    before it (the exposure that led to the target: serving never knows what will be shown next)."""
    while at > 0 and ev.event_types[at - 1] not in SEEN_EVENT_TYPES:
        at -= 1
    return ev.head(at)


def leave_one_out(
    users: Sequence[Events],
    vocab: ItemVocab,
    positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
    max_holdout_users: int | None = None,
) -> Split:
    """Leave-one-out by time over positive events, for users already in memory (see :func:`read_split`)."""
    raw = raw_from_events(users, vocab)
    sample = _HoldoutSample(max_holdout_users)
    train, n_holdout = _split_batch(
        raw,
        lambda idx: [users[i].user_id for i in idx],
        lambda idx: [users[i] for i in idx],
        positive_type_index(positive_types),
        sample,
    )
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


def read_split(
    uri: str,
    vocab: ItemVocab,
    positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
    max_holdout_users: int | None = None,
    batch_rows: int = 10_000,
    spill_dir: str | None = None,
) -> Split:
    """:func:`leave_one_out` over a features/sequences partition, streamed ``batch_rows`` users at a time:
    the training events are encoded with ``vocab`` as each batch arrives (fifteen bytes per event, kept in
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
            raw_from_arrow(batch, vocab),
            lambda idx: [str(u) for u in user_column.take(idx).to_pylist()],
            lambda idx: [Events.from_row(r) for r in batch.take(idx).to_pylist()],
            positive,
            sample,
        )
        writer.append(train)
        n_users, n_holdout, n_events = n_users + batch.num_rows, n_holdout + eligible, n_events + train.n_events
        if (b + 1) % 20 == 0:
            log.info("read %d users, %d training events so far from %s", n_users, n_events, uri)
    valid, test = sample.holdouts()
    return Split(writer.finish(), valid, test, n_users, n_holdout)


class TrainingSet:
    """Next-item examples over :class:`EncodedSequences`, without copying them: a user's example is their
    last ``max_len + 1`` events; inputs are all but the last, and the target at each input position is the item of
    the user's next first engagement after it (:func:`~models.encoding.next_targets`: a positive event on an item
    new to the user, as serving only recommends unseen items; 0 when none follows in the window, and 0 after an
    impression, whose item's own click would be a target serving never sees coming). Users without
    any target are left out. Holds 16 bytes per example and one byte per event.

    ``attention`` (the default): an event whose attention strength is 0 or below (a bounce, a low rating) is never
    a target, and each target weighs its strength (``inputs["target_weights"]``, models.losses); False is the
    dwell- and rating-blind variant: every positive event on a new item is a target of weight 1."""

    def __init__(
        self,
        seqs: EncodedSequences,
        max_len: int,
        positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
        chunk_events: int = 1 << 22,
        attention: bool = True,
    ) -> None:
        self.seqs, self.max_len, self.positive = seqs, max_len, positive_type_index(positive_types)
        self.attention = attention
        stops = seqs.offsets[1:]
        starts = np.maximum(seqs.offsets[:-1], stops - (max_len + 1))
        has_target = np.zeros(len(seqs), dtype=bool)
        self.engaged = np.zeros(seqs.n_events, dtype=bool)  # (E,) first engagements: the targets
        for u0, u1 in user_chunks(seqs.offsets, chunk_events):  # bounded scratch memory
            e0, e1 = int(seqs.offsets[u0]), int(seqs.offsets[u1])
            types = seqs.event_types[e0:e1]
            strength = seqs.attention[e0:e1] if attention else None
            engaged = first_engagements(
                seqs.offsets[u0 : u1 + 1] - e0, seqs.items[e0:e1], types, self.positive, strength
            )
            self.engaged[e0:e1] = engaged
            at = np.arange(e1 - e0)
            last_engaged = np.maximum.accumulate(np.where(engaged, at, -1))  # (e,) last engagement at or before
            # (e,) the first position at or after each whose event may carry a target (anything but an impression)
            next_input = np.minimum.accumulate(np.where(np.isin(types, SEEN_TYPE_INDEX), at, e1 - e0)[::-1])[::-1]
            s, e = starts[u0:u1] - e0, stops[u0:u1] - e0
            ok = e - s >= 2
            s_, last = s[ok], last_engaged[e[ok] - 1]  # an input that may carry a target, an engagement after it
            has_target[np.flatnonzero(ok) + u0] = (last >= s_ + 1) & (next_input[s_] < last)
        self.starts, self.stops = starts[has_target], stops[has_target]  # (X,) flat event positions
        self.content = window_hashes(seqs, self.starts, self.stops, chunk_events)  # (X,) uint64

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, idx: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(inputs, targets) of examples ``idx``, each (B, L) with L the longest input among them."""
        starts, stops = self.starts[idx], self.stops[idx]
        length = int((stops - starts - 1).max())
        inputs = self.seqs.windows(starts, stops - 1, length)
        targets, weights = self._targets(starts, stops, length, with_weights=True)
        if self.attention:
            inputs["target_weights"] = torch.from_numpy(weights)
        return inputs, torch.from_numpy(targets)

    def _targets(self, starts: np.ndarray, stops: np.ndarray, length: int, with_weights: bool = False):
        """(B, length) the target of each input position: the user's next first engagement in the window (0 on
        padding and where none follows); with ``with_weights`` also (B, length) float32 the target's attention
        strength (:func:`~models.encoding.attention_weights`)."""
        items = gather_windows(self.seqs.items, starts + 1, stops, length)
        engaged = gather_windows(self.engaged, starts + 1, stops, length).astype(bool)
        # no target after an impression: the impressed item's own click follows it, which serving never knows
        seen = np.isin(gather_windows(self.seqs.event_types, starts, stops - 1, length), SEEN_TYPE_INDEX)
        nxt = np.minimum(next_engaged(engaged), length - 1)  # (B, L) padding has type 0: never seen
        found = np.take_along_axis(engaged, nxt, axis=1) & seen
        targets = np.where(found, np.take_along_axis(items, nxt, axis=1), 0)
        if not with_weights:
            return targets
        strength = attention_weights(gather_windows(self.seqs.attention, starts + 1, stops, length))
        return targets, np.where(targets > 0, np.take_along_axis(strength, nxt, axis=1), 0.0).astype(np.float32)

    def batches(self, batch_size: int, rng: random.Random) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Shuffled batches of (inputs, targets). Batches group sequences of similar length (sorted with random
        tie-breaks, then the batch order is shuffled), so little compute goes to padding; padding does not
        change any output anyway. Every random choice comes from ``rng``.

        The random tie-breaks are dealt in the order of the examples' contents (length, then a hash of the window's
        events), not in the order the users were read: the batches, and so the trained model, do not depend on
        the user ids (which decide the row order of features/sequences) nor on how the rows are split in files."""
        g = np.random.default_rng(rng.getrandbits(64))
        lengths = self.stops - self.starts
        tie = np.empty(len(self))
        tie[np.lexsort((self.content, lengths))] = g.random(len(self))
        order = np.lexsort((tie, lengths))
        starts = np.arange(0, len(order), batch_size)
        g.shuffle(starts)
        for s in starts:
            yield self.batch(order[s : s + batch_size])

    def target_counts(self, n_items: int) -> torch.Tensor:
        """(N+1,) how often each item is a training target (the sampled-softmax proposal)."""
        counts = np.zeros(n_items + 1, dtype=np.float64)
        for x0 in range(0, len(self), 4096):
            starts, stops = self.starts[x0 : x0 + 4096], self.stops[x0 : x0 + 4096]
            targets = self._targets(starts, stops, int((stops - starts - 1).max()))
            counts += np.bincount(targets[targets > 0], minlength=n_items + 1)
        return torch.from_numpy(counts)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic): a well-spread hash of each value."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def window_hashes(seqs: EncodedSequences, starts: np.ndarray, stops: np.ndarray, chunk_events: int) -> np.ndarray:
    """(X,) a hash of each window's events (item, type, dwell and gap buckets, and their positions in the window),
    the same wherever the window sits in the flat arrays: sum over the window of h(event) * (position + 1), from two
    running sums (mod 2**64). Scratch memory is bounded by ``chunk_events``."""
    out = np.zeros(len(starts), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for u0, u1 in user_chunks(seqs.offsets, chunk_events):
            e0, e1 = int(seqs.offsets[u0]), int(seqs.offsets[u1])
            mine = np.flatnonzero((starts >= e0) & (stops <= e1))
            if not len(mine):
                continue
            code = (
                (seqs.items[e0:e1].astype(np.uint64) << np.uint64(24))
                | (seqs.event_types[e0:e1].astype(np.uint8).astype(np.uint64) << np.uint64(16))
                | (seqs.dwell[e0:e1].astype(np.uint8).astype(np.uint64) << np.uint64(8))
                | seqs.gap[e0:e1].astype(np.uint8).astype(np.uint64)
            )
            h = _mix64(code)
            at = np.arange(e1 - e0, dtype=np.uint64)
            s1 = np.concatenate([np.zeros(1, np.uint64), np.cumsum(h, dtype=np.uint64)])
            s2 = np.concatenate([np.zeros(1, np.uint64), np.cumsum(h * at, dtype=np.uint64)])
            a, b = (starts[mine] - e0).astype(np.int64), (stops[mine] - e0).astype(np.int64)
            # sum_{e in [a, b)} h_e * (e - a + 1) = (s2[b] - s2[a]) - (a - 1) * (s1[b] - s1[a])   (mod 2**64)
            out[mine] = (s2[b] - s2[a]) - (a.astype(np.uint64) - np.uint64(1)) * (s1[b] - s1[a])
    return out


def positive_counts(
    train: EncodedSequences, vocab: ItemVocab, positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES
) -> torch.Tensor:
    """(N+1,) number of positive events per item index in ``train`` (the popularity baseline), less those whose
    attention strength is 0 or below (:func:`~models.encoding.engaged_events`)."""
    positive = positive_type_index(positive_types)
    counts = np.zeros(vocab.n_items + 1, dtype=np.float64)
    for u0, u1 in user_chunks(train.offsets, 1 << 22):
        e0, e1 = int(train.offsets[u0]), int(train.offsets[u1])
        items = train.items[e0:e1]
        engaged = engaged_events(train.event_types[e0:e1], train.attention[e0:e1], positive)
        counts += np.bincount(items[engaged], minlength=vocab.n_items + 1)
    return torch.from_numpy(counts)
