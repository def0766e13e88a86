"""Data-layer tests: the streamed parquet split equals the in-memory one, the encoded arrays match a
plain-Python reference, the holdout sample is bounded and fixed, bad rows fail with a message naming them."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attnrec.contracts import EVENT_TYPES
from models.dataset import TrainingSet, leave_one_out, positive_counts, read_split
from models.encoding import (
    DEFAULT_POSITIVE_TYPES,
    EVENT_TYPE_INDEX,
    N_DWELL_BUCKETS,
    N_GAP_BUCKETS,
    Events,
    dwell_bucket,
    encode_sequences,
    gap_bucket,
)
from models.vocab import ItemVocab
from tests.model_helpers import events, item_rows


def vocab_of(n: int) -> ItemVocab:
    return ItemVocab.from_items([{"item_idx": i, "item_id": f"i{i}"} for i in range(1, n + 1)])


def random_users(n_users: int, n_items: int, seed: int) -> list[Events]:
    """Users with unknown items (ids past the vocabulary), every event type, missing dwell, repeated times."""
    rng = random.Random(seed)
    users = []
    for u in range(n_users):
        n = rng.choice([0, 1, 2, 3, 5, 9, 30])
        t = rng.randrange(10**12)
        times = []
        for _ in range(n):
            t += rng.choice([0, 999, 1000, 59_000, 10**7])
            times.append(t)
        users.append(
            Events(
                f"u{rng.randrange(10**6):06d}-{u}",
                [f"i{rng.randint(1, n_items + 3)}" for _ in range(n)],
                [rng.choice(EVENT_TYPES) for _ in range(n)],
                times,
                [None if rng.random() < 0.3 else rng.choice([0, 1, 999, 1000, 3000, 10**6]) for _ in range(n)],
            )
        )
    return users


def write_partition(path, users: list[Events], rows_per_file: int, null_dwell_lists: bool = False) -> None:
    path.mkdir(parents=True)
    for f, s in enumerate(range(0, len(users), rows_per_file)):
        chunk = users[s : s + rows_per_file]
        dwell = [None if null_dwell_lists and i % 2 else u.dwell_ms for i, u in enumerate(chunk)]
        table = pa.table(
            {
                "user_id": [u.user_id for u in chunk],
                "item_ids": [u.item_ids for u in chunk],
                "event_types": [u.event_types for u in chunk],
                "event_times_ms": pa.array([u.times_ms for u in chunk], pa.list_(pa.int64())),
                "dwell_ms": pa.array(dwell, pa.list_(pa.int64())),
                "length": [len(u) for u in chunk],
            }
        )  # a column the model does not read
        pq.write_table(table, path / f"part-{f:05d}.parquet", row_group_size=7)
    (path / "_SUCCESS").write_text("")


# ---------------------------------------------------------------- buckets and encoding ------------------------


@pytest.mark.parametrize("n_buckets,fn", [(N_DWELL_BUCKETS, dwell_bucket), (N_GAP_BUCKETS, gap_bucket)])
def test_integer_buckets_equal_the_log2_formula(n_buckets, fn):
    """floor(log2(1 + ms / 1000)) capped, as the features documentation states it, on and around every edge."""
    values = {0, 1, 999, -5}
    for k in range(1, n_buckets + 2):
        edge = 1000 * (2**k - 1)
        values |= {edge - 1, edge, edge + 1}
    for ms in sorted(values):
        expected = 2 + min(int(math.log2(1.0 + max(ms, 0) / 1000.0)), n_buckets - 3)
        assert fn(ms) == expected, ms
    assert fn(None) == 1


def reference_encoding(ev: Events, vocab: ItemVocab) -> list[tuple[int, int, int, int]]:
    """The encoding spelled out one event at a time: gaps to the previous raw event, unknown items skipped."""
    out, prev = [], None
    for item, etype, t, dwell in zip(ev.item_ids, ev.event_types, ev.times_ms, ev.dwell_ms):
        gap, prev = (None if prev is None else t - prev), t
        if item in vocab.index:
            out.append((vocab.index[item], EVENT_TYPE_INDEX[etype], dwell_bucket(dwell), gap_bucket(gap)))
    return out


def test_vectorised_encoding_matches_the_reference():
    vocab = vocab_of(40)
    users = random_users(200, 40, seed=1)
    seqs = encode_sequences(users, vocab)
    assert len(seqs) == len(users)
    for u, ev in enumerate(users):
        row = seqs.row(u)
        assert list(zip(row.items, row.event_types, row.dwell, row.gap)) == reference_encoding(ev, vocab)


# ---------------------------------------------------------------- the split, streamed and in memory ------------


def reference_engaged(items: list, types: list, positive, known=lambda item: True) -> list[bool]:
    """Per event: positive, and on an item not seen before (any earlier event but an impression); unknown items
    (not in the vocabulary) always count as new."""
    seen, out = set(), []
    for item, t in zip(items, types):
        out.append(t in positive and (not known(item) or item not in seen))
        if t != "impression" and known(item):
            seen.add(item)
    return out


def reference_split(users: list[Events], positive=DEFAULT_POSITIVE_TYPES, n_known: int = 40):
    train, holdout = [], []
    for ev in users:
        engaged = reference_engaged(ev.item_ids, ev.event_types, positive, lambda i: int(i[1:]) <= n_known)
        pos = [i for i, e in enumerate(engaged) if e]
        if len(pos) < 3:
            train.append(ev)
            continue
        v, t = pos[-2], pos[-1]
        train.append(ev.head(v))
        hv, ht = v, t  # the histories leave out the impressions just before the target
        while hv and ev.event_types[hv - 1] == "impression":
            hv -= 1
        while ht and ev.event_types[ht - 1] == "impression":
            ht -= 1
        holdout.append((ev.user_id, ev.item_ids[:hv], ev.item_ids[v], ev.item_ids[:ht], ev.item_ids[t]))
    return train, sorted(holdout)


def holdout_tuples(split) -> list[tuple]:
    return [
        (v.history.user_id, v.history.item_ids, v.target, t.history.item_ids, t.target)
        for v, t in zip(split.valid, split.test)
    ]


@pytest.mark.parametrize("spill", [False, True])
def test_streamed_split_equals_the_reference_and_the_in_memory_split(tmp_path, spill):
    vocab = vocab_of(40)
    users = random_users(300, 40, seed=2)
    write_partition(tmp_path / "sequences", users, rows_per_file=70)
    split = read_split(
        str(tmp_path / "sequences"), vocab, batch_rows=16, spill_dir=str(tmp_path / "spill") if spill else None
    )
    train, holdout = reference_split(users)
    assert (split.n_users, split.n_holdout_users) == (300, len(holdout)) and len(holdout) > 30
    assert holdout_tuples(split) == holdout
    assert [split.train.row(u) for u in range(300)] == [encode_sequences([ev], vocab).row(0) for ev in train]
    if spill:
        assert isinstance(split.train.items, np.memmap)
        assert (tmp_path / "spill" / "items.bin").stat().st_size == 4 * split.train.n_events
    in_memory = leave_one_out(users, vocab)
    assert holdout_tuples(in_memory) == holdout
    assert np.array_equal(in_memory.train.items, split.train.items)
    assert np.array_equal(in_memory.train.offsets, split.train.offsets)


def test_a_null_dwell_list_means_every_dwell_is_unknown(tmp_path):
    vocab = vocab_of(40)
    users = random_users(40, 40, seed=3)
    write_partition(tmp_path / "sequences", users, rows_per_file=40, null_dwell_lists=True)
    split = read_split(str(tmp_path / "sequences"), vocab, positive_types=EVENT_TYPES)
    expected = [
        Events(ev.user_id, ev.item_ids, ev.event_types, ev.times_ms, [None] * len(ev) if i % 2 else ev.dwell_ms)
        for i, ev in enumerate(users)
    ]
    train, _ = reference_split(expected, EVENT_TYPES)
    assert [split.train.row(u).dwell for u in range(40)] == [encode_sequences([ev], vocab).row(0).dwell for ev in train]


def test_holdout_sample_is_bounded_and_the_same_for_any_batch_size(tmp_path):
    vocab = vocab_of(40)
    users = random_users(400, 40, seed=4)
    write_partition(tmp_path / "sequences", users, rows_per_file=90)
    small = read_split(str(tmp_path / "sequences"), vocab, max_holdout_users=25, batch_rows=8)
    large = read_split(str(tmp_path / "sequences"), vocab, max_holdout_users=25, batch_rows=1000)
    every = read_split(str(tmp_path / "sequences"), vocab)
    assert len(small.test) == 25 < small.n_holdout_users == len(every.test)
    assert holdout_tuples(small) == holdout_tuples(large)
    assert {h.history.user_id for h in small.test} < {h.history.user_id for h in every.test}
    assert holdout_tuples(leave_one_out(users, vocab, max_holdout_users=25)) == holdout_tuples(small)
    assert np.array_equal(small.train.items, every.train.items)  # the cap never touches training
    with pytest.raises(ValueError, match="max_holdout_users=0"):
        read_split(str(tmp_path / "sequences"), vocab, max_holdout_users=0)


def test_bad_rows_fail_with_the_user_and_value(tmp_path):
    vocab = vocab_of(5)
    bad = [
        Events("ok", ["i1"], ["click"], [1], [None]),
        Events("u7", ["i1", "i2"], ["click", "clik"], [1, 2], [None, 3]),
    ]
    with pytest.raises(ValueError, match=r"event type 'clik' of user 'u7' is not one of"):
        encode_sequences(bad, vocab)
    write_partition(tmp_path / "a", bad, rows_per_file=10)
    with pytest.raises(ValueError, match=r"event type 'clik' of user 'u7' is not one of"):
        read_split(str(tmp_path / "a"), vocab)
    path = tmp_path / "b"
    path.mkdir()
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1", "u2"],
                "item_ids": [["i1"], ["i1", "i2"]],
                "event_types": [["click"], ["click"]],
                "event_times_ms": [[1], [1, 2]],
            }
        ),
        path / "part-0.parquet",
    )
    with pytest.raises(ValueError, match="user 'u2' has 2 item_ids but 1 event_types; re-run featurize"):
        read_split(str(path), vocab)
    pq.write_table(pa.table({"user_id": ["u1"], "item_ids": [["i1"]]}), path / "part-0.parquet")
    with pytest.raises(ValueError, match=r"lacks sequence columns \['event_types', 'event_times_ms'\]"):
        read_split(str(path), vocab)


# ---------------------------------------------------------------- training examples ----------------------------


def reference_examples(train: list[Events], vocab: ItemVocab, max_len: int) -> list[tuple[list[int], list[int]]]:
    """Per user: the last max_len + 1 known events; inputs all but the last, the target at each input the item of
    the next first engagement (over the user's whole row) later in the window."""
    positive = {EVENT_TYPE_INDEX[t] for t in DEFAULT_POSITIVE_TYPES}
    types = {v: k for k, v in EVENT_TYPE_INDEX.items()}
    out = []
    for ev in train:
        enc = reference_encoding(ev, vocab)
        engaged = reference_engaged([e[0] for e in enc], [types[e[1]] for e in enc], {types[p] for p in positive})
        enc, engaged = enc[-(max_len + 1) :], engaged[-(max_len + 1) :]
        targets = [
            next((e[0] for e, g in zip(enc[k:], engaged[k:]) if g), 0) if types[enc[k - 1][1]] != "impression" else 0
            for k in range(1, len(enc))
        ]
        if any(targets):
            out.append(([e[0] for e in enc[:-1]], targets))
    return out


@pytest.mark.parametrize("max_len", [1, 4, 50])
def test_training_batches_cover_every_example_once(max_len):
    vocab = vocab_of(40)
    users = random_users(300, 40, seed=5)
    split = leave_one_out(users, vocab)
    examples = TrainingSet(split.train, max_len)
    train, _ = reference_split(users)
    expected = reference_examples(train, vocab, max_len)
    assert len(examples) == len(expected)
    got = []
    for inputs, targets in examples.batches(7, random.Random(0)):
        assert inputs["items"].shape == targets.shape and inputs["items"].shape[1] <= max_len
        for items, tgt in zip(inputs["items"].tolist(), targets.tolist()):
            pad = next((i for i, x in enumerate(items) if x), len(items))
            got.append((items[pad:], tgt[pad:]))
    assert sorted(got) == sorted(expected)
    counts = examples.target_counts(vocab.n_items)
    assert counts.tolist() == np.bincount([t for _, ts in expected for t in ts if t], minlength=41).tolist()
    order = [tuple(b[0]["items"][0].tolist()) for b in examples.batches(7, random.Random(0))]
    assert order == [tuple(b[0]["items"][0].tolist()) for b in examples.batches(7, random.Random(0))]
    assert order != [tuple(b[0]["items"][0].tolist()) for b in examples.batches(7, random.Random(1))]


def test_positive_counts_count_training_events_only():
    vocab = vocab_of(5)
    ev = Events(
        "u",
        ["i1", "i2", "i1", "i3", "i4"],
        ["click", "impression", "rate", "click", "click"],
        [1, 2, 3, 4, 5],
        [None] * 5,
    )
    split = leave_one_out([ev], vocab)  # i3 (validation) and i4 (test) are not training events
    assert positive_counts(split.train, vocab).tolist() == [0, 2, 0, 0, 0, 0]


def test_leave_one_out_uses_positive_events_only():
    ev = events("u", ["a", "b", "c", "d", "e", "f"], ["rate", "impression", "click", "skip", "purchase", "impression"])
    short = events("s", ["a", "b", "c"], ["click", "impression", "click"])
    vocab = ItemVocab.from_items([{"item_idx": i + 1, "item_id": x} for i, x in enumerate("abcdef")])
    split = leave_one_out([ev, short], vocab)
    assert [split.train.row(u).items for u in range(2)] == [[1, 2], [1, 2, 3]]
    assert (split.n_users, split.n_holdout_users) == (2, 1)
    # the impression of b just before c is the exposure that led to the click: not part of c's history
    assert [(h.history.item_ids, h.target) for h in split.valid] == [(["a"], "c")]
    assert [(h.history.item_ids, h.target) for h in split.test] == [(["a", "b", "c", "d"], "e")]


def test_training_examples_target_the_next_first_engagement():
    vocab = ItemVocab.from_items(item_rows(5))
    ev = events("u", ["i1", "i2", "i3", "i4"], ["rate", "impression", "rate", "click"])
    inputs, targets = TrainingSet(encode_sequences([ev], vocab), max_len=10).batch(np.arange(1))
    assert inputs["items"].tolist() == [[1, 2, 3]] and inputs["event_types"].tolist() == [[6, 1, 6]]
    assert targets.tolist() == [[3, 0, 4]]  # after rating i1: i3 (past i2's impression); none after an impression
    inputs, targets = TrainingSet(encode_sequences([ev], vocab), max_len=2).batch(np.arange(1))
    assert inputs["items"].tolist() == [[2, 3]] and targets.tolist() == [[0, 4]]
    # the funnel of an item already clicked, and a return to it, are context, never targets (serving never
    # recommends a seen item); an impression alone does not make an item seen
    ev = events(
        "u",
        ["i1", "i1", "i2", "i2", "i5", "i3", "i1", "i2"],
        ["click", "view", "impression", "skip", "impression", "click", "like", "click"],
    )
    _, targets = TrainingSet(encode_sequences([ev], vocab), max_len=10).batch(np.arange(1))
    assert targets.tolist() == [[3, 3, 0, 3, 0, 0, 0]]  # the skip made i2 seen: its later click is a repeat
