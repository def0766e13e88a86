"""Unit tests of turning feature rows into model indices: buckets, the item vocabulary, encoding, positive types."""

from __future__ import annotations

import pytest

from models.encoding import (
    Events,
    context_buckets,
    dwell_bucket,
    encode_events,
    encode_record_batch,
    encode_sequences,
    gap_bucket,
)
from models.vocab import ItemVocab, year_bucket
from tests.model_helpers import item_rows


@pytest.mark.parametrize("year,bucket", [(None, 0), (1850, 1), (1900, 1), (1904, 1), (1905, 2), (1995, 20), (2300, 31)])
def test_year_bucket(year, bucket):
    assert year_bucket(year) == bucket


@pytest.mark.parametrize("ms,bucket", [(None, 1), (0, 2), (999, 2), (1000, 3), (3000, 4), (10**12, 15)])
def test_dwell_bucket(ms, bucket):
    assert dwell_bucket(ms) == bucket


@pytest.mark.parametrize("ms,bucket", [(None, 1), (0, 2), (1000, 3), (7000, 5), (86_400_000, 18), (10**15, 31)])
def test_gap_bucket(ms, bucket):
    assert gap_bucket(ms) == bucket


def test_vocab_from_items_maps_categories_and_years():
    vocab = ItemVocab.from_items(list(reversed(item_rows(5))))
    assert vocab.item_ids == ["i1", "i2", "i3", "i4", "i5"]
    assert vocab.categories == ["Action", "Comedy", "Drama"]
    assert vocab.item_categories == [[2], [3], [1], [2, 3], [3]]
    assert vocab.item_years == [19, 19, 19, 19, 0]
    cats, years = vocab.content_tensors()
    assert cats.tolist() == [[0, 0], [2, 0], [3, 0], [1, 0], [2, 3], [3, 0]]
    assert years.tolist() == [0, 19, 19, 19, 19, 0]


def test_vocab_rejects_gaps_in_item_idx():
    rows = item_rows(3)
    rows[2]["item_idx"] = 7
    with pytest.raises(ValueError, match="not contiguous 1..3"):
        ItemVocab.from_items(rows)


def test_encode_skips_unknown_items_but_keeps_their_time_gap():
    vocab = ItemVocab.from_items(item_rows(3))
    ev = Events("u", ["i1", "zzz", "i2"], ["click", "view", "purchase"], [0, 1000, 8000], [None, 5, 2000])
    enc = encode_events(ev, vocab)
    assert enc.items == [1, 2]
    assert enc.event_types == [2, 5]
    assert enc.dwell == [1, 3]
    assert enc.gap == [1, gap_bucket(7000)]


def test_targets_are_the_positive_event_types_exposure_and_negatives_stay_context():
    from models.encoding import DEFAULT_POSITIVE_TYPES, positive_types

    assert set(DEFAULT_POSITIVE_TYPES) == {"click", "view", "add_to_cart", "purchase", "rate", "like", "share"}
    assert set(positive_types(("impression",), ())) == set(DEFAULT_POSITIVE_TYPES) | {"skip", "dislike"}


@pytest.mark.parametrize(
    "value,bucket", [(0, 2), (0.5, 3), (1, 4), (2, 5), (3, 6), (7, 8), (100.0, 15), (5000, 25), (10**9, 25)]
)
def test_log2_context_bucket_has_half_steps_and_a_top_bucket(value, bucket):
    import numpy as np

    assert context_buckets(np.array([value]), np.array([True]), 26, "log2").tolist() == [bucket]
    assert context_buckets(np.array([value]), np.array([False]), 26, "log2").tolist() == [1]  # unknown


def test_as_of_signals_and_device_are_read_the_same_from_rows_and_arrow_and_unknown_when_missing():
    import zlib

    import pyarrow as pa

    vocab = ItemVocab.from_items(item_rows(3))
    row = {
        "user_id": "u",
        "item_ids": ["i1", "zzz", "i2", "i3"],
        "event_types": ["click", "view", "view", "purchase"],
        "event_times_ms": [0, 1, 2, 3],
        "dwell_ms": [None] * 4,
        "item_heats": [0.0, 9.0, 1.0, 5000.0],
        "item_counts_7d": [0, 9, 3, 7],
        "user_events_7d": [0, 1, 2, None],
        "devices": ["phone", "tv", None, "phone"],
    }
    phone = 2 + zlib.crc32(b"phone") % 32
    expected = {"heat": [2, 4, 25], "item_week": [2, 6, 8], "activity": [2, 5, 1], "device": [phone, 1, phone]}
    from_rows = encode_sequences([Events.from_row(row)], vocab).row(0)
    from_arrow = encode_record_batch(pa.RecordBatch.from_pylist([row]), vocab).row(0)
    for name, buckets in expected.items():
        assert getattr(from_rows, name) == buckets, name
        assert getattr(from_arrow, name) == buckets, name
    older = {k: v for k, v in row.items() if k not in ("item_heats", "item_counts_7d", "user_events_7d", "devices")}
    for encoded in (
        encode_sequences([Events.from_row(older)], vocab).row(0),
        encode_record_batch(pa.RecordBatch.from_pylist([older]), vocab).row(0),
    ):
        assert [getattr(encoded, name) for name in expected] == [[1, 1, 1]] * 4  # a partition without them
