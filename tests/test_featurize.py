"""jobs/featurize.py: sequences and the item table, exact rows on small DataFrames built here."""

from __future__ import annotations

import math

import pytest

from attnrec.spark import session_conf
from jobs.featurize import FeatureParams, clean_partitions, transform_items, transform_sequences

EVENTS_DDL = "event_id string, user_id string, item_id string, event_type string, event_time_ms long, dwell_ms long"


PARAMS = FeatureParams("2026-01-02")
DAYS_TO_END = PARAMS.day_end_ms / 86_400_000  # events at ~epoch 0 are this many days before the end of D


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
    out = {
        r["user_id"]: r.asDict()
        for r in transform_sequences(events_df(spark, rows), FeatureParams("2026-01-02", max_seq_len=3)).collect()
    }
    assert out["u1"] == {
        "user_id": "u1",
        "item_ids": ["b", "x", "c"],  # the oldest event (a) falls out of the last 3
        "event_types": ["view", "impression", "click"],
        "event_times_ms": [200, 200, 300],
        "dwell_ms": [10, None, None],
        "time_gaps_ms": [None, 0, 100],
        "dwell_strength": [pytest.approx(math.log1p(0.01) / math.log1p(600), rel=1e-6), None, None],
        "interest": [1, 0, 1],  # an impression is exposure, not interest
        "ratings": [None, None, None],
        "attention": [0.0, 0.0, 1.0],  # a 10 ms view is a bounce; an impression is exposure; a click without dwell
        "hours": [0, 0, 0],  # 1970-01-01 00:00 UTC, a Thursday
        "weekdays": [3, 3, 3],
        "session_starts": [None, None, None],  # no session ids
        "item_heats": [0.0, 0.0, 0.0],  # every item once: nothing earlier
        "item_counts_7d": [0, 0, 0],
        "user_events_7d": [1, 1, 3],  # a and b were 100 ms before; x at the same ms as b does not count for b
        "devices": [None, None, None],
        "length": 3,
        "events_total": 4,  # activity covers the whole look-back, not only the last 3
        "active_days": 1,
        "first_event_ms": 100,
        "last_event_ms": 300,
        "seen_item_ids": ["a", "b", "c"],  # the whole look-back; x was only shown (an impression)
    }
    assert out["u2"]["item_ids"] == ["z"] and out["u2"]["length"] == 1 and out["u2"]["time_gaps_ms"] == [None]


def test_dwell_strength_saturates_and_interest_follows_configuration(spark):
    day = 86_400_000
    rows = [
        ("e1", "u1", "a", "view", 1 * day, 3_600_000),  # an hour: capped at 1.0
        ("e2", "u1", "b", "dislike", 3 * day, 0),
        ("e3", "u1", "c", "skip", 3 * day + 1, -5),  # negative dwell never reaches here; clamp anyway
    ]
    params = FeatureParams("2026-01-02", negative_types=("dislike",), exposure_types=("skip",))
    (row,) = transform_sequences(events_df(spark, rows), params).collect()
    assert row["dwell_strength"] == [1.0, 0.0, 0.0]
    assert row["interest"] == [1, -1, 0]
    assert row["active_days"] == 2 and row["time_gaps_ms"] == [None, 2 * day, 1]
    (row,) = transform_sequences(events_df(spark, rows), FeatureParams("2026-01-02", negative_types=())).collect()
    assert row["interest"] == [1, 1, 0]


def test_attention_strength_from_event_type_rating_and_dwell(spark):
    rows = [
        ("e1", "u1", "a", "rate", 1, None, 5.0),
        ("e2", "u1", "b", "rate", 2, None, 3.0),
        ("e3", "u1", "c", "rate", 3, None, 2.0),  # at the low-rating line: negative
        ("e4", "u1", "d", "view", 4, 1_999, None),  # under 2 s: a bounce
        ("e5", "u1", "e", "view", 5, 600_000, None),  # saturated dwell
        ("e6", "u1", "f", "view", 6, 29_000, None),
        ("e7", "u1", "g", "dislike", 7, None, None),
        ("e8", "u1", "h", "skip", 8, 90_000, None),
        ("e9", "u1", "i", "purchase", 9, None, None),
    ]
    ddl = EVENTS_DDL + ", rating double"
    (row,) = transform_sequences(spark.createDataFrame(rows, ddl), PARAMS).collect()
    assert row["ratings"] == [5.0, 3.0, 2.0, None, None, None, None, None, None]
    strength_29s = round(math.log1p(29) / math.log1p(600), 4)
    assert row["attention"] == pytest.approx([1.0, 0.6, -1.0, 0.0, 1.0, strength_29s, -1.0, 0.0, 1.0], abs=1e-6)
    stricter = FeatureParams("2026-01-02", low_rating_max=3.0, bounce_dwell_s=30.0)
    (row,) = transform_sequences(spark.createDataFrame(rows, ddl), stricter).collect()
    assert row["attention"][:6] == pytest.approx([1.0, -1.0, -1.0, 0.0, 1.0, 0.0])
    again = transform_sequences(spark.createDataFrame(rows[::-1], ddl), stricter).collect()
    assert again[0]["attention"] == row["attention"]  # stable whatever order the rows come in


def test_hour_weekday_and_session_starts_in_utc(spark):
    monday_2330 = 1_764_631_800_000  # 2025-12-01 23:30 UTC, a Monday
    rows = [
        ("e1", "u1", "a", "view", monday_2330, None, "s1"),
        ("e2", "u1", "b", "view", monday_2330 + 20 * 60_000, None, "s1"),  # 23:50, same session
        ("e3", "u1", "c", "view", monday_2330 + 40 * 60_000, None, "s2"),  # Tuesday 00:10, a new session
        ("e4", "u1", "d", "view", monday_2330 + 6 * 86_400_000, None, None),  # Sunday 23:30, no session id
    ]
    ddl = EVENTS_DDL + ", session_id string"
    with session_conf(spark, {"spark.sql.session.timeZone": "America/New_York"}):  # UTC columns whatever the zone
        (row,) = transform_sequences(spark.createDataFrame(rows, ddl), PARAMS).collect()
    assert row["hours"] == [23, 23, 0, 23]
    assert row["weekdays"] == [0, 0, 1, 6]
    assert row["session_starts"] == [True, False, True, None]


def test_item_heat_interactions_and_user_activity_are_as_of_each_event_with_no_look_ahead(spark):
    day, t0 = 86_400_000, PARAMS.day_end_ms - 20 * 86_400_000
    rows = [
        ("e1", "u1", "a", "click", t0, None, "phone"),
        ("e2", "u2", "a", "impression", t0 + day, None, None),  # exposure: seen, not an interaction
        ("e3", "u2", "a", "view", t0 + 7 * day, None, "tv"),  # e1 exactly 7 days before: in the window
        ("e4", "u1", "a", "purchase", t0 + 7 * day, None, "phone"),  # the same ms as e3: e3 does not count
        ("e5", "u1", "b", "view", t0 + 7 * day + 1, None, "tablet"),  # e1 is 7 days and 1 ms before: out
        ("e6", "u3", "a", "click", t0 + 8 * day + 1, None, None),  # e1 out of the 7 days, e3 and e4 in
        ("e7", "u3", "a", "dislike", t0 + 8 * day + 2, None, None),  # negative: never an interaction
        ("e8", "u3", "a", "click", t0 + 9 * day, None, None),
    ]
    ddl = EVENTS_DDL + ", device string"
    out = {r["user_id"]: r for r in transform_sequences(spark.createDataFrame(rows, ddl), PARAMS).collect()}

    def decayed(*ages_ms):  # positive interactions, halved every 7 days
        return pytest.approx(sum(0.5 ** (age / (7 * day)) for age in ages_ms), abs=1e-4)

    assert out["u1"]["item_heats"] == [0.0, decayed(7 * day), 0.0]
    assert out["u1"]["item_counts_7d"] == [0, 1, 0]
    assert out["u1"]["user_events_7d"] == [0, 1, 1]  # e4 sees e1 (exactly 7 days); e5 sees e4 only
    assert out["u1"]["devices"] == ["phone", "phone", "tablet"]
    assert out["u2"]["item_heats"] == [decayed(day), decayed(7 * day)]  # the impression adds no heat
    assert out["u2"]["item_counts_7d"] == [1, 1]
    assert out["u2"]["user_events_7d"] == [0, 1]
    assert out["u2"]["devices"] == [None, "tv"]
    assert out["u3"]["item_heats"] == [
        decayed(8 * day + 1, day + 1, day + 1),
        decayed(8 * day + 2, day + 2, day + 2, 1),
        decayed(9 * day, 2 * day, 2 * day, day - 1),  # the dislike adds nothing
    ]
    assert out["u3"]["item_counts_7d"] == [2, 3, 3]
    assert out["u3"]["user_events_7d"] == [0, 1, 2]
    # a later event changes nothing before it, and the row order of the input does not matter
    later = rows + [("e9", "u4", "a", "click", t0 + 2 * day, None, None)]
    again = {r["user_id"]: r for r in transform_sequences(spark.createDataFrame(later[::-1], ddl), PARAMS).collect()}
    assert again["u1"]["item_heats"][0] == 0.0 and again["u2"]["item_heats"][0] == out["u2"]["item_heats"][0]
    assert again["u2"]["item_counts_7d"] == [1, 2] and again["u1"]["item_counts_7d"] == [0, 2, 0]


def test_as_of_heat_refuses_a_look_back_of_too_many_half_lives(spark):
    events = events_df(spark, [("e1", "u1", "a", "click", 0, None)])
    with pytest.raises(ValueError, match="shorten ATTNREC_LOOKBACK_DAYS or lengthen the half-life"):
        transform_sequences(events, FeatureParams("2026-01-02", lookback_days=3650, heat_half_life_days=1.0))


def test_items_join_catalogue_count_popularity_and_index_new_items(spark):
    events = events_df(
        spark,
        [
            ("e1", "u1", "b", "view", 200, None),
            ("e2", "u2", "b", "click", 100, None),
            ("e3", "u1", "z", "view", 50, None),
        ],
    )
    catalogue = spark.createDataFrame(
        [
            (" b ", "Bee", ["drama"], "1999", None),
            ("c", "Sea", None, None, "2020-05-01T00:00:00Z"),
            ("", "nameless", None, None, None),
        ],
        "item_id string, title string, categories array<string>, release_year string, published_at string",
    )
    items = {r["item_id"]: r.asDict() for r in transform_items(events, catalogue, None, PARAMS).collect()}
    assert set(items) == {"b", "c", "z"}
    # new items are indexed by first appearance, then id; catalogue-only items (never seen) come last
    assert [items[i]["item_idx"] for i in ("z", "b", "c")] == [1, 2, 3]
    assert items["b"] == {
        "item_idx": 2,
        "item_id": "b",
        "title": "Bee",
        "categories": ["drama"],
        "year": 1999,
        "popularity": 2,
        "interactions_1d": 0,
        "interactions_7d": 0,
        "interactions_30d": 0,
        "heat": pytest.approx(2 * 0.5 ** (DAYS_TO_END / 7)),
        "first_seen_ms": 100,
        "last_seen_ms": 200,
        "available": True,
    }
    assert items["c"]["year"] == 2020 and items["c"]["categories"] == [] and items["c"]["popularity"] == 0
    assert items["z"]["title"] is None and items["z"]["popularity"] == 1


def test_vocabulary_carries_over_between_days(spark):
    events = events_df(spark, [("e1", "u1", "new", "view", 10, None), ("e2", "u1", "old", "view", 20, None)])
    previous = spark.createDataFrame([("old", 7), ("gone", 3)], "item_id string, item_idx int")
    items = {r["item_id"]: r["item_idx"] for r in transform_items(events, None, previous, PARAMS).collect()}
    assert items == {"old": 7, "gone": 3, "new": 8}


def test_popularity_windows_and_heat_count_positive_interactions_to_the_end_of_the_day(spark):
    day, end = 86_400_000, PARAMS.day_end_ms
    rows = [
        ("e1", "u1", "a", "purchase", end - day // 2, None),  # 12 h before the end of D
        ("e2", "u2", "a", "view", end - 3 * day, None),
        ("e3", "u3", "a", "click", end - 14 * day, None),  # one half-life... twice
        ("e4", "u4", "a", "impression", end - day // 2, None),  # exposure: popularity, not interest
        ("e5", "u5", "a", "dislike", end - day // 2, None),
    ]
    (item,) = transform_items(events_df(spark, rows), None, None, PARAMS).collect()
    assert (item["popularity"], item["interactions_1d"], item["interactions_7d"], item["interactions_30d"]) == (
        5,
        1,
        2,
        3,
    )
    assert item["heat"] == pytest.approx(0.5 ** (0.5 / 7) + 0.5 ** (3 / 7) + 0.25)
    assert item["first_seen_ms"] == end - 14 * day and item["last_seen_ms"] == end - day // 2


def test_missing_clean_partition_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the clean job .behavior_etl. for 2026-01-02"):
        clean_partitions(str(tmp_path), FeatureParams("2026-01-02"))


def test_catalogue_lines_are_accepted_or_quarantined_with_a_reason(spark):
    from jobs.featurize import classify_catalogue

    good = '{"item_id": " b ", "title": "Bee", "categories": ["drama"], "release_year": "1999"}'
    lines = [
        ("a.jsonl", good),
        ("a.jsonl", good),  # identical repeat: counted
        ("a.jsonl", '{"item_id": "c", "title": "Sea v1"}'),
        ("b.jsonl", '{"item_id": "c", "title": "Sea v2"}'),  # the later file wins
        ("a.jsonl", ""),
        ("a.jsonl", "not json"),
        ("a.jsonl", '{"item_id": "d", "categories": "drama"}'),  # categories must be a list
        ("a.jsonl", '{"title": "no id"}'),
        ("a.jsonl", '{"item_id": "  "}'),
    ]
    df = spark.createDataFrame([(line, f) for f, line in lines], "raw_line string, source_file string")
    accepted, rejected, duplicates = classify_catalogue(df)
    assert {r["item_id"]: r["title"] for r in accepted.collect()} == {"b": "Bee", "c": "Sea v2"}
    assert sorted((r["raw_line"], r["reason"]) for r in rejected.collect()) == sorted(
        [
            ('{"item_id": "c", "title": "Sea v1"}', "conflicting_duplicate_item_id"),
            ("", "empty_line"),
            ("not json", "malformed_json"),
            ('{"item_id": "d", "categories": "drama"}', "malformed_json"),
            ('{"title": "no id"}', "missing_item_id"),
            ('{"item_id": "  "}', "missing_item_id"),
        ]
    )
    assert duplicates.first()["duplicates"] == 1
    # every line is accounted for
    assert accepted.count() + rejected.count() + duplicates.first()["duplicates"] == len(lines)


def test_seen_item_ids_cover_the_whole_look_back_not_only_the_last_events(spark):
    """A user with 30 events and max_seq_len 5: the sequence keeps 5, seen_item_ids keeps every item of a seen
    type (default every type but impression), distinct and sorted."""
    types = ["rate", "click", "skip", "dislike", "impression"]
    rows = [(f"e{i:02d}", "heavy", f"m{i % 25:02d}", types[i % 5], 1000 * i, None) for i in range(30)]
    rows.append(("e99", "shown", "m00", "impression", 5, None))  # only ever shown an item
    out = {r["user_id"]: r for r in transform_sequences(events_df(spark, rows), FeatureParams(PARAMS.dt, 5)).collect()}
    heavy = out["heavy"]
    assert heavy["length"] == 5 and heavy["item_ids"] == ["m00", "m01", "m02", "m03", "m04"]  # events 25..29
    shown_only = {f"m{i % 25:02d}" for i in range(30) if i % 5 == 4} - {
        f"m{i % 25:02d}" for i in range(30) if i % 5 != 4
    }
    assert shown_only == {"m04", "m09", "m14", "m19", "m24"}
    assert heavy["seen_item_ids"] == sorted({f"m{i:02d}" for i in range(25)} - shown_only)  # 20 items, not 5
    assert out["shown"]["seen_item_ids"] == []
    # the setting decides which types count: purchases and rates only
    params = FeatureParams(PARAMS.dt, 5, seen_types=("rate", "purchase"))
    (heavy,) = [r for r in transform_sequences(events_df(spark, rows), params).collect() if r["user_id"] == "heavy"]
    assert heavy["seen_item_ids"] == sorted({f"m{i % 25:02d}" for i in range(30) if i % 5 == 0})
    params = FeatureParams(PARAMS.dt, 5, seen_types=())
    assert {
        r["user_id"]: r["seen_item_ids"] for r in transform_sequences(events_df(spark, rows), params).collect()
    } == {
        "heavy": [],
        "shown": [],
    }


def test_partitions_without_users_and_an_empty_day_give_no_rows_and_no_error(spark):
    """Without adaptive execution most of the 8 shuffle partitions hold no user: the per-user pass gets no batch
    there and writes nothing; an empty frame gives an empty result."""
    rows = [("e1", "u1", "i1", "click", 5, None)]
    with session_conf(spark, {"spark.sql.adaptive.enabled": "false", "spark.sql.shuffle.partitions": "8"}):
        out = transform_sequences(events_df(spark, rows), PARAMS).collect()
        empty = transform_sequences(events_df(spark, rows).limit(0), PARAMS).collect()
    assert [(r["user_id"], r["item_ids"], r["length"]) for r in out] == [("u1", ["i1"], 1)]
    assert empty == []


def test_long_histories_of_many_users_match_a_plain_python_reference(spark):
    """Users with up to 700 events over 20 days (MovieLens has such users), ties at the same millisecond, sessions
    that come and go, spread over several shuffle partitions: every user's newest max_seq_len events, the gaps, the
    session starts, user_events_7d and the activity equal a plain Python computation from the rows."""
    import random

    rng = random.Random(7)
    day = 86_400_000
    rows = []
    for u in range(40):
        n = rng.choice([1, 2, 5, 199, 200, 201, 700])
        times = sorted(rng.randrange(0, 20 * day, 1 + rng.randrange(3) * 3_600_000) for _ in range(n))
        for i, t in enumerate(times):
            event_type = rng.choice(["click", "view", "impression", "rate"])
            session = rng.choice([None, f"s{u}-{i // 10}"])
            rows.append(
                (
                    f"e{u:02d}-{rng.randrange(10**6):06d}-{i}",
                    f"u{u:02d}",
                    f"m{rng.randrange(60)}",
                    event_type,
                    t,
                    None,
                    session,
                )
            )
    ddl = EVENTS_DDL + ", session_id string"
    params = FeatureParams("2026-01-21", max_seq_len=200)
    epoch_rows = [(e, u, m, k, t + params.day_end_ms - 21 * day, d, s) for e, u, m, k, t, d, s in rows]
    with session_conf(spark, {"spark.sql.shuffle.partitions": "5"}):
        sequences = transform_sequences(spark.createDataFrame(epoch_rows, ddl), params)
        out = {r["user_id"]: r for r in sequences.collect()}
        # each partition's rows come sorted by user (featurize.load writes them without a sort of its own)
        partitions = [[r["user_id"] for r in rows] for rows in sequences.select("user_id").rdd.glom().collect()]
    assert sum(len(p) > 1 for p in partitions) >= 2 and all(p == sorted(p) for p in partitions)
    window = params.as_of_window_days * day
    by_user = {}
    for row in epoch_rows:
        by_user.setdefault(row[1], []).append(row)
    assert sorted(out) == sorted(by_user)
    for user, events in by_user.items():
        events.sort(key=lambda r: (r[4], r[0], r[2], r[3]))
        newest = events[-200:]
        times = [r[4] for r in events]
        got = out[user]
        assert got["length"] == len(newest) and got["events_total"] == len(events)
        assert got["item_ids"] == [r[2] for r in newest]
        assert got["event_times_ms"] == [r[4] for r in newest]
        assert got["time_gaps_ms"] == [None] + [b[4] - a[4] for a, b in zip(newest, newest[1:])]
        sessions = [r[6] for r in newest]
        assert got["session_starts"] == [
            None if s is None else (i == 0 or sessions[i - 1] is None or sessions[i - 1] != s)
            for i, s in enumerate(sessions)
        ]
        assert got["user_events_7d"] == [sum(1 for x in times if t - window <= x < t) for t in (r[4] for r in newest)]
        assert got["active_days"] == len({t // day for t in times})
        assert (got["first_event_ms"], got["last_event_ms"]) == (times[0], times[-1])
        assert got["seen_item_ids"] == sorted({r[2] for r in events if r[3] != "impression"})


def test_available_comes_from_the_newest_line_and_an_item_missing_from_the_catalogue_keeps_its_last_value(spark):
    from jobs.featurize import classify_catalogue

    lines = [
        ("a.jsonl", '{"item_id": "retired", "title": "R", "available": true}'),
        ("b.jsonl", '{"item_id": "retired", "title": "R", "available": false}'),  # the newer file retires it
        ("a.jsonl", '{"item_id": "back", "title": "B"}'),  # retired yesterday, listed again: available
        ("a.jsonl", '{"item_id": "plain", "title": "P"}'),
        ("a.jsonl", '{"item_id": "bad", "available": "no"}'),  # not a JSON boolean
    ]
    df = spark.createDataFrame([(line, f) for f, line in lines], "raw_line string, source_file string")
    catalogue, rejected, _ = classify_catalogue(df)
    assert sorted((r["raw_line"], r["reason"]) for r in rejected.collect()) == [
        ('{"item_id": "bad", "available": "no"}', "malformed_json"),
        ('{"item_id": "retired", "title": "R", "available": true}', "conflicting_duplicate_item_id"),
    ]
    previous = spark.createDataFrame(
        [("back", 1, False), ("gone_retired", 2, False), ("gone", 3, True), ("retired", 4, True)],
        "item_id string, item_idx int, available boolean",
    )
    events = events_df(spark, [("e1", "u1", "events_only", "view", 10, None), ("e2", "u1", "gone", "view", 20, None)])
    items = {r["item_id"]: r["available"] for r in transform_items(events, catalogue, previous, PARAMS).collect()}
    assert items == {
        "retired": False,
        "back": True,
        "plain": True,
        "gone_retired": False,  # not in raw/items today: keeps its last value
        "gone": True,
        "events_only": True,  # never in the catalogue
    }
    # a previous partition written before ``available`` existed: its items are available
    old = spark.createDataFrame([("gone", 3)], "item_id string, item_idx int")
    assert {r["item_id"]: r["available"] for r in transform_items(events, None, old, PARAMS).collect()} == {
        "gone": True,
        "events_only": True,
    }


def test_seen_event_types_setting_defaults_to_every_type_but_impression(monkeypatch):
    from attnrec.contracts import EVENT_TYPES
    from attnrec.settings import get_settings

    monkeypatch.delenv("ATTNREC_SEEN_EVENT_TYPES", raising=False)
    assert get_settings().seen_event_types == tuple(t for t in EVENT_TYPES if t != "impression")
    assert FeatureParams(PARAMS.dt).seen_types == get_settings().seen_event_types
    monkeypatch.setenv("ATTNREC_SEEN_EVENT_TYPES", "purchase, RATE")
    assert get_settings().seen_event_types == ("purchase", "rate")
    monkeypatch.setenv("ATTNREC_SEEN_EVENT_TYPES", "rate,watched")
    with pytest.raises(ValueError, match=r"ATTNREC_SEEN_EVENT_TYPES='rate,watched' names unknown event types"):
        get_settings()


def test_load_writes_ids_and_times_without_dictionaries_and_restores_the_arrow_batch_limit(spark, tmp_path):
    """featurize.load: the user ids and the arrays of times and measurements are written without dictionary encoding
    (their values hardly repeat), the item ids and event types with it; the per-user pass runs with Arrow batches cut
    by rows only, and the session's byte limit is what it was once the write is done."""
    from jobs.featurize import SEQUENCE_PLAIN_COLUMNS, load
    from tests.parquet_encoding import dictionary_encoded

    rows = [(f"e{i}", f"u{i % 7}", f"m{i % 3}", "click", 1_000 * i, 500 + i) for i in range(60)]
    limit = "spark.sql.execution.arrow.maxBytesPerBatch"
    before = spark.conf.get(limit)
    items = transform_items(events_df(spark, rows), None, None, PARAMS)
    seq_dir, _ = load(transform_sequences(events_df(spark, rows), PARAMS), items, str(tmp_path), PARAMS.dt)
    assert spark.conf.get(limit) == before
    encoded = dictionary_encoded(seq_dir)
    plain = {"user_id", "event_times_ms.list.element", "item_heats.list.element", "dwell_ms.list.element"}
    assert plain <= set(SEQUENCE_PLAIN_COLUMNS) and not any(encoded[c] for c in plain)
    assert encoded["item_ids.list.element"] and encoded["event_types.list.element"]
    assert spark.read.parquet(seq_dir).count() == 7


def test_load_writes_sequences_and_items_and_reports_each_write_s_own_error(spark, tmp_path):
    """featurize.load writes the sequences, then the item table: both land; an error in either write is raised by
    load (the sequences' when both fail), and the sequences stay written when only the items fail."""
    from pyspark.sql import functions as F

    from attnrec import lake
    from jobs.featurize import load

    rows = [(f"e{i}", f"u{i % 7}", f"m{i % 3}", "click", 1_000 * i, 500 + i) for i in range(60)]
    sequences = transform_sequences(events_df(spark, rows), PARAMS)
    items = transform_items(events_df(spark, rows), None, None, PARAMS)
    seq_dir, items_dir = load(sequences, items, str(tmp_path / "ok"), PARAMS.dt)
    assert spark.read.parquet(seq_dir).count() == 7 and spark.read.parquet(items_dir).count() == 3

    def broken(frame, message: str):
        return frame.withColumn("item_idx", F.when(F.lit(True), F.raise_error(F.lit(message))).cast("int"))

    root = str(tmp_path / "items_fail")
    with pytest.raises(Exception, match="items broke"):
        load(sequences, broken(items, "items broke"), root, PARAMS.dt)
    assert spark.read.parquet(lake.staging(root, lake.FEATURE_SEQUENCES, PARAMS.dt)).count() == 7
    with pytest.raises(Exception, match="sequences broke"):
        load(broken(sequences, "sequences broke"), broken(items, "items broke"), str(tmp_path / "both"), PARAMS.dt)
