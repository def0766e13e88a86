"""jobs/featurize.py: sequences and the item table, exact rows on small DataFrames built here."""

from __future__ import annotations

import pytest

from jobs.featurize import FeatureParams, clean_partitions, transform_items, transform_sequences

EVENTS_DDL = "event_id string, user_id string, item_id string, event_type string, event_time_ms long, dwell_ms long"


def events_df(spark, rows):
    return spark.createDataFrame(rows, EVENTS_DDL)


def test_sequences_are_time_ordered_truncated_and_tie_broken(spark):
    rows = [
        ("e3", "u1", "c", "click", 300, None),
        ("e1", "u1", "a", "view", 100, 5000),
        ("e2b", "u1", "x", "impression", 200, None),
        ("e2a", "u1", "b", "view", 200, 10),  # same time as e2b: event_id breaks the tie
        ("e9", "u2", "z", "rate", 50, None),  # a single-event user
    ]
    out = {r["user_id"]: r.asDict() for r in transform_sequences(events_df(spark, rows), FeatureParams("2026-01-02", max_seq_len=3)).collect()}
    assert out["u1"] == {
        "user_id": "u1",
        "item_ids": ["b", "x", "c"],  # the oldest event (a) falls out of the last 3
        "event_types": ["view", "impression", "click"],
        "event_times_ms": [200, 200, 300],
        "dwell_ms": [10, None, None],
        "length": 3,
    }
    assert out["u2"]["item_ids"] == ["z"] and out["u2"]["length"] == 1


def test_items_join_catalogue_count_popularity_and_index_new_items(spark):
    events = events_df(
        spark,
        [("e1", "u1", "b", "view", 200, None), ("e2", "u2", "b", "click", 100, None), ("e3", "u1", "z", "view", 50, None)],
    )
    catalogue = spark.createDataFrame(
        [(" b ", "Bee", ["drama"], "1999", None), ("c", "Sea", None, None, "2020-05-01T00:00:00Z"), ("", "nameless", None, None, None)],
        "item_id string, title string, categories array<string>, release_year string, published_at string",
    )
    items = {r["item_id"]: r.asDict() for r in transform_items(events, catalogue, None).collect()}
    assert set(items) == {"b", "c", "z"}
    # new items are indexed by first appearance, then id; catalogue-only items (never seen) come last
    assert [items[i]["item_idx"] for i in ("z", "b", "c")] == [1, 2, 3]
    assert items["b"] == {"item_idx": 2, "item_id": "b", "title": "Bee", "categories": ["drama"], "year": 1999, "popularity": 2}
    assert items["c"]["year"] == 2020 and items["c"]["categories"] == [] and items["c"]["popularity"] == 0
    assert items["z"]["title"] is None and items["z"]["popularity"] == 1


def test_vocabulary_carries_over_between_days(spark):
    events = events_df(spark, [("e1", "u1", "new", "view", 10, None), ("e2", "u1", "old", "view", 20, None)])
    previous = spark.createDataFrame([("old", 7), ("gone", 3)], "item_id string, item_idx int")
    items = {r["item_id"]: r["item_idx"] for r in transform_items(events, None, previous).collect()}
    assert items == {"old": 7, "gone": 3, "new": 8}


def test_missing_clean_partition_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the clean job .behavior_etl. for 2026-01-02"):
        clean_partitions(str(tmp_path), FeatureParams("2026-01-02"))
