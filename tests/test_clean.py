"""jobs/clean.py: every rule, normalisation, dedupe and reconciliation, on small DataFrames built here."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json

import pytest

from jobs.clean import CleanParams, extract, reconcile, run, transform
from tests.parquet_encoding import dictionary_encoded, with_min_max

DT = "2026-01-02"
PARAMS = CleanParams(dt=DT, event_time_tolerance_hours=24, max_dwell_ms=3_600_000)


def ev(**overrides) -> str:
    base = {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "view",
        "event_time": "2026-01-02T10:00:00+02:00",
        "dwell_ms": 1200,
    }
    base.update(overrides)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def classify(spark, lines: list[str]):
    raw = spark.createDataFrame([(line, "f.jsonl") for line in lines], "raw_line string, source_file string")
    clean, quarantine, duplicates = transform(raw, PARAMS)
    return (
        [r.asDict() for r in clean.orderBy("event_id").collect()],
        sorted(r["reason"] for r in quarantine.collect()),
        duplicates.count(),
    )


def test_valid_event_is_normalised(spark):
    clean, quarantine, dups = classify(
        spark,
        [ev(user_id=" u1 ", item_id=" i1", event_type=" VIEW ", session_id="", device="ios")],
    )
    assert quarantine == [] and dups == 0
    (row,) = clean
    assert row["user_id"] == "u1" and row["item_id"] == "i1" and row["event_type"] == "view"
    assert row["event_time_ms"] == 1767340800000  # 10:00 at +02:00 is 08:00 UTC
    assert row["event_time"].isoformat() == "2026-01-02T08:00:00"
    assert row["dwell_ms"] == 1200 and row["rating"] is None
    assert row["session_id"] is None and row["device"] == "ios"


def test_event_types_are_lowercased_exactly_as_sparks_lower(spark):
    """The rules take a type that is already one of the contract's as it is and lower() every other: the outcome
    must be Spark's lower() of the trimmed text for every kind of text, non-ASCII ones whose lowercase is ASCII
    (the Kelvin sign's is "k") or longer (a dotted capital I's) included."""
    from pyspark.sql import functions as F

    from jobs.clean import lines

    types = ["view", " click ", "VIEW", "Rate", "CLIC\u212a", "\u0130mpression", "\u03a3\u0391\u03a3", "teleport", ""]
    lines_of_day = [(ev(event_id=f"e{i}", event_type=t), "f.jsonl") for i, t in enumerate(types)]
    raw = spark.createDataFrame(lines_of_day, "raw_line string, source_file string")
    got = {r["event_id"]: r["event_type"] for r in lines(raw, PARAMS).collect()}
    expected = spark.createDataFrame([(f"e{i}", t) for i, t in enumerate(types)], "event_id string, t string")
    lowered = expected.select("event_id", F.lower(F.trim("t")).alias("lowered"))
    want = {r["event_id"]: r["lowered"] for r in lowered.collect()}
    assert got == want
    assert got["e4"] == "click" and got["e0"] == "view" and got["e1"] == "click"


def test_epoch_millis_and_numeric_ratings_are_accepted(spark):
    clean, quarantine, _ = classify(
        spark,
        [
            ev(event_time=1767348000000, event_type="rate", rating=4.5, dwell_ms=...),
            ev(event_id="e2", event_type="rate", rating=4, dwell_ms=None, session_id=None, extra={"a": [1]}),
        ],
    )
    assert quarantine == []
    assert clean[0]["event_time_ms"] == 1767348000000 and clean[0]["rating"] == 4.5
    assert clean[1]["rating"] == 4.0 and clean[1]["dwell_ms"] is None and clean[1]["session_id"] is None


def test_unicode_ids_are_kept_exactly(spark):
    clean, quarantine, _ = classify(spark, [ev(user_id="Zoë-用户", item_id="\u00e9t\u00e9")])
    assert quarantine == []
    assert clean[0]["user_id"] == "Zoë-用户" and clean[0]["item_id"] == "été"


RULE_CASES = [
    ("", "empty_line"),
    ("not json", "malformed_json"),
    ("[1, 2]", "malformed_json"),
    ('{"event_id": "e1"} trailing', "malformed_json"),
    (ev(event_id=...), "missing_event_id"),
    (ev(event_id=None), "missing_event_id"),
    (ev(user_id="  "), "missing_user_id"),
    (ev(item_id=...), "missing_item_id"),
    (ev(event_type=...), "missing_event_type"),
    (ev(event_time=...), "missing_event_time"),
    (ev(user_id={"id": 1}), "wrong_type_id"),
    (ev(user_id=42), "wrong_type_id"),  # ids are strings: a number is not coerced
    (ev(item_id=["i1"]), "wrong_type_id"),
    (ev(event_id=True), "wrong_type_id"),
    (ev(event_type=7), "wrong_type_event_type"),
    (ev(event_time=1767348000000.5), "wrong_type_event_time"),
    (ev(event_time={"ms": 1767348000000}), "wrong_type_event_time"),
    ('{"event_id": "e1", "event_id": "e2", "user_id": "u1"}', "malformed_json"),  # duplicate keys: ambiguous
    ('"just a string"', "malformed_json"),
    ('{"event_id": "e1", "user_id": "u1"} {"event_id": "e2"}', "malformed_json"),  # two objects on one line
    ('{"event_id": "e1", "user_id": "u1"}, {"event_id": "e2"}', "malformed_json"),
    ('{"event_id": "e1", "user_id": "u1"}}', "malformed_json"),
    ('{"event_id": "e1", "user_id": "u1"}]', "malformed_json"),  # a stray bracket after the object
    (ev(event_type="teleport"), "unknown_event_type"),
    (ev(event_time="yesterday"), "unparseable_event_time"),
    (ev(event_time="2026-01-02T10:00:00"), "unparseable_event_time"),  # no offset: ambiguous
    (ev(event_time=1767348000), "event_time_too_old"),  # seconds, not milliseconds
    (ev(event_time=9223372036854775807), "event_time_after_landing_day"),  # the largest epoch: no overflow
    ('{"event_id": "e1", "user_id": "\\ud800"}', "malformed_json"),  # an unpaired surrogate is not text
    (ev(event_time="1900-01-01T00:00:00Z"), "event_time_too_old"),
    (ev(event_time="2026-01-04T00:00:01Z"), "event_time_after_landing_day"),  # day end + 24 h
    (ev(dwell_ms="long"), "wrong_type_dwell_ms"),
    (ev(dwell_ms="1200"), "wrong_type_dwell_ms"),  # a JSON string, not an int
    (ev(dwell_ms=12.5), "wrong_type_dwell_ms"),
    (ev(dwell_ms=-5), "negative_dwell_ms"),
    (ev(dwell_ms=3_600_001), "absurd_dwell_ms"),
    (ev(event_type="rate", rating="five"), "wrong_type_rating"),
    (ev(event_type="rate", rating="4"), "wrong_type_rating"),
    (ev(event_type="rate"), "missing_rating_on_rate"),
    (ev(rating=4.0), "rating_on_non_rate_event"),
    (ev(event_type="rate", rating=5.5), "rating_out_of_range"),
    (ev(event_type="rate", rating=0.0), "rating_out_of_range"),
    (ev(device={"os": "ios"}), "wrong_type_optional_field"),
    (ev(session_id=17), "wrong_type_optional_field"),
]


@pytest.fixture(scope="module")
def rule_reasons(spark):
    """All rule cases classified in one Spark job: raw line -> reasons (Spark start-up per case is too slow)."""
    raw = spark.createDataFrame([(line, "f.jsonl") for line, _ in RULE_CASES], "raw_line string, source_file string")
    clean, quarantine, duplicates = transform(raw, PARAMS)
    reasons: dict[str, list[str]] = {}
    for row in quarantine.collect():
        reasons.setdefault(row["raw_line"], []).append(row["reason"])
    return reasons, clean.count(), duplicates.count()


@pytest.mark.parametrize("line, reason", RULE_CASES, ids=[reason + str(i) for i, (_, reason) in enumerate(RULE_CASES)])
def test_each_rule_quarantines_with_its_reason(rule_reasons, line, reason):
    reasons, clean_rows, duplicate_rows = rule_reasons
    assert reasons[line] == [reason]
    assert clean_rows == 0 and duplicate_rows == 0


def test_tolerance_edge_is_inclusive(spark):
    clean, quarantine, _ = classify(spark, [ev(event_time="2026-01-04T00:00:00Z")])
    assert quarantine == [] and len(clean) == 1


def test_json_whitespace_around_an_object_keeps_it_an_object_and_other_leading_text_does_not(spark):
    # JSON allows space, tab, CR and LF around a value: the object test looks past exactly those
    padded = [" \t" + ev(event_id="e1"), "\r\n " + ev(event_id="e2") + " \t\r"]
    others = ["\u00a0" + ev(event_id="e3"), "\f" + ev(event_id="e4"), " [" + ev(event_id="e5") + "]", " 7"]
    clean, quarantine, _ = classify(spark, padded + others)
    assert [r["event_id"] for r in clean] == ["e1", "e2"]
    assert quarantine == ["malformed_json"] * 4


def test_identical_duplicates_are_counted_and_conflicts_quarantined(spark):
    same = ev(event_id="e1")
    other = ev(event_id="e1", item_id="i2", event_time="2026-01-02T11:00:00+02:00")
    clean, quarantine, dups = classify(spark, [same, same, same, other, ev(event_id="e2")])
    assert [r["event_id"] for r in clean] == ["e1", "e2"]
    assert clean[0]["item_id"] == "i1"  # the earliest version is kept
    assert dups == 2
    assert quarantine == ["conflicting_duplicate_event_id"]


def test_ties_in_time_keep_both_events_and_pick_one_version_deterministically(spark):
    a = ev(event_id="e1", item_id="i1")
    b = ev(event_id="e1", item_id="i2")  # same id, same time, other content
    c = ev(event_id="e2", item_id="i3")  # another event at the very same time
    first, _, _ = classify(spark, [a, b, c])
    second, quarantine, _ = classify(spark, [c, b, a])
    assert first == second and [r["event_id"] for r in first] == ["e1", "e2"]
    assert quarantine == ["conflicting_duplicate_event_id"]


def test_reconcile_adds_up_or_raises():
    summary = reconcile(DT, raw_lines=10, clean=6, quarantined_by_reason={"b": 1, "a": 2}, duplicates=1)
    assert summary == {
        "dt": DT,
        "raw_lines": 10,
        "clean": 6,
        "quarantined": 3,
        "quarantined_by_reason": {"a": 2, "b": 1},
        "duplicates": 1,
    }
    with pytest.raises(RuntimeError, match="raw_lines=10 != clean=6"):
        reconcile(DT, raw_lines=10, clean=6, quarantined_by_reason={"a": 2}, duplicates=1)


def test_run_reads_plain_and_gzip_and_writes_staged_outputs(spark, tmp_path):
    from attnrec import lake

    root = str(tmp_path)
    day = tmp_path / "raw" / "events" / f"dt={DT}"
    day.mkdir(parents=True)
    (day / "a.jsonl").write_text(ev(event_id="e1") + "\n" + "garbage\n")
    with gzip.open(day / "b.jsonl.gz", "wt") as out:
        out.write(ev(event_id="e2", user_id="ü-ß") + "\n" + ev(event_id="e1") + "\n")
    summary = run(spark, root, PARAMS)
    assert summary["raw_lines"] == 4 and summary["clean"] == 2 and summary["duplicates"] == 1
    assert summary["quarantined_by_reason"] == {"malformed_json": 1}
    clean = spark.read.parquet(lake.staging(root, lake.CLEAN_EVENTS, DT))
    key = (tmp_path / "_secrets" / "pseudonym.key").read_text().strip().encode()  # the lake's generated key
    expected = {u: hmac.new(key, u.encode(), hashlib.sha256).hexdigest()[:32] for u in ("u1", "ü-ß")}
    assert sorted(r["user_id"] for r in clean.collect()) == sorted(expected.values())  # pseudonyms, never raw ids
    identity = spark.read.parquet(lake.staging(root, lake.IDENTITY_USERS, DT))
    assert sorted((r["pseudonym"], r["user_id"]) for r in identity.collect()) == sorted(
        (p, u) for u, p in expected.items()
    )
    assert lake.read_json(lake.join(lake.staging(root, lake.CLEAN_EVENTS, DT), lake.RECONCILIATION_FILE)) == summary
    assert lake.is_complete(lake.staging(root, lake.QUARANTINE_EVENTS, DT))
    assert not lake.exists(lake.partition(root, lake.CLEAN_EVENTS, DT))  # nothing published before the gate
    assert not lake.exists(lake.join(root, lake.STAGING, "clean_work", f"dt={DT}"))  # work copies removed


def test_clean_events_are_written_with_ids_and_times_plain_and_the_rest_with_dictionaries(spark, tmp_path):
    """write_clean (clean's and erasure's writer): ids, times and sessions without dictionary encoding (their values
    hardly repeat), event type and device with it; the rows are the ones given."""
    from jobs.clean import PLAIN_COLUMNS, write_clean

    rows = [
        (f"e{i}", f"u{i % 9}", f"m{i % 40}", "view", None, 1_000 * i, None, None, f"s{i}", "ios") for i in range(400)
    ]
    ddl = (
        "event_id string, user_id string, item_id string, event_type string, event_time timestamp, "
        "event_time_ms long, dwell_ms long, rating double, session_id string, device string"
    )
    write_clean(spark.createDataFrame(rows, ddl), str(tmp_path / "clean"))
    encoded = dictionary_encoded(tmp_path / "clean")
    assert set(PLAIN_COLUMNS) >= {"event_id", "user_id", "event_time_ms"}
    assert not any(encoded[c] for c in PLAIN_COLUMNS) and encoded["event_type"] and encoded["device"]
    assert sorted(tuple(r) for r in spark.read.parquet(str(tmp_path / "clean")).collect()) == sorted(rows)


def test_the_identity_table_is_the_same_on_the_driver_and_in_the_udf(spark, tmp_path):
    """A day with few users is pseudonymised on the driver (a file in the work directory, no Python worker), a day
    with more than the limit by the pandas UDF: the same rows either way, nulls skipped, ids trimmed as HMAC'd."""
    from pydantic import SecretBytes

    from attnrec.privacy import pseudonym
    from jobs.identity import identity_table

    key = SecretBytes(b"k" * 32)
    ids = ["u1", "u2", " u2 ", "ü-ß", None, "u1"]
    events = spark.createDataFrame([(u,) for u in ids], "user_id string")
    expected = sorted((pseudonym(u, key), u) for u in {"u1", "u2", " u2 ", "ü-ß"})

    def rows(frame):
        return sorted((r["pseudonym"], r["user_id"]) for r in frame.collect())

    on_driver = identity_table(events, key, work_dir=str(tmp_path / "ids"), driver_ids_max=4)
    assert list((tmp_path / "ids").iterdir()), "four distinct ids, a limit of four: computed on the driver"
    by_udf = identity_table(events, key, work_dir=str(tmp_path / "more"), driver_ids_max=3)
    assert not (tmp_path / "more").exists(), "over the limit: the pandas UDF, nothing written"
    assert rows(on_driver) == rows(by_udf) == rows(identity_table(events, key)) == expected


def test_the_raw_sample_gate_in_clean_s_application_samples_the_lines_clean_parsed(spark, tmp_path, monkeypatch):
    """jobs/clean.py --validate keeps its parsed lines for the raw sample gate: the sample holds exactly the rows a
    parse of the raw text gives (all of a small day; a seeded fraction of a large one), so the gate reads no raw text
    again; the work directory goes after the gate."""
    from attnrec import lake
    from attnrec.settings import get_settings
    from jobs import clean, validate

    root = str(tmp_path)
    day = tmp_path / "raw" / "events" / f"dt={DT}"
    day.mkdir(parents=True)
    bad = ["garbage", "[1]", '{"a": 1} {"b": 2}', ev(event_id="e7", user_id=42), ev(event_id="e8", event_time=1.5)]
    (day / "a.jsonl").write_text("\n".join([ev(event_id=f"e{k}") for k in range(200)] + bad) + "\n")
    summary = run(spark, root, PARAMS, keep_parsed=True)
    parsed = clean.parsed_lines_dir(root, DT)
    columns = ["raw_line", *clean.RAW_SAMPLE_COLUMNS]
    # the work copy: the raw text, ids and times without dictionaries or min/max statistics, the rest with both
    encoded, bounded = dictionary_encoded(parsed), with_min_max(parsed)
    assert {"raw_line", "event_id", "event_time_ms"} <= set(clean.WORK_PLAIN_COLUMNS)
    assert not any(encoded[c] or bounded[c] for c in clean.WORK_PLAIN_COLUMNS)
    assert encoded["reason"] and bounded["reason"] and bounded["event_type"]

    def rows(df):
        return sorted((tuple(r) for r in df.select(*columns).collect()), key=repr)

    from_text = rows(validate.raw_sample(spark, str(day), summary["raw_lines"], seed=7))
    assert len(from_text) == 205 and ("[1]", False, None, None, None, None, None) in from_text
    assert ('{"a": 1} {"b": 2}', False, None, None, None, None, None) in from_text  # two values: not one object
    assert rows(validate.raw_sample(spark, str(day), summary["raw_lines"], 7, parsed_lines=parsed)) == from_text

    monkeypatch.setattr(validate, "RAW_SAMPLE_LINES", 9)  # a large day: a seeded sample of about 9 lines
    sample = rows(validate.raw_sample(spark, str(day), summary["raw_lines"], 7, parsed_lines=parsed))
    assert 0 < len(sample) < 50 and set(sample) <= set(from_text)
    assert rows(validate.raw_sample(spark, str(day), summary["raw_lines"], 7, parsed_lines=parsed)) == sample

    monkeypatch.undo()
    inputs, recon = validate.check_inputs("clean_events", DT, root)
    assert validate.run_gates(spark, inputs, recon, DT, get_settings(data_root=root), parsed_lines=parsed) == []
    lake.remove_dir(clean.work_dir(root, DT))
    assert not lake.exists(clean.work_dir(root, DT))


def test_missing_raw_partition_names_the_path(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"raw/events/dt={DT}"):
        extract(spark, str(tmp_path / "raw" / "events" / f"dt={DT}"))


def test_users_above_the_bot_rate_are_quarantined_not_dropped(spark):
    params = CleanParams(dt=DT, event_time_tolerance_hours=24, max_dwell_ms=3_600_000, bot_events_per_day=2)
    bot = [ev(event_id=f"b{i}", user_id="bot") for i in range(3)]
    human = [ev(event_id=f"h{i}", user_id="human") for i in range(2)]
    resent = ev(event_id="b0", user_id="bot")  # an identical re-send of a bot event stays a counted duplicate
    bad = ev(event_id="b9", user_id="bot", event_type="teleport")  # invalid lines keep their own reason
    lines = [*bot, *human, resent, bad]
    raw = spark.createDataFrame([(line, "f.jsonl") for line in lines], "raw_line string, source_file string")
    clean, quarantine, duplicates = transform(raw, params)
    assert sorted(r["event_id"] for r in clean.collect()) == ["h0", "h1"]
    assert sorted((r["raw_line"], r["reason"]) for r in quarantine.collect()) == sorted(
        [(line, "bot_user") for line in bot] + [(bad, "unknown_event_type")]
    )
    assert [r["raw_line"] for r in duplicates.collect()] == [resent]


def test_run_labels_bots_by_their_new_events_not_their_lines(spark, tmp_path):
    """run() counts bots only when some user has more valid lines than the threshold (an upper bound); a user over
    it only through re-sends stays clean, one over it by new events is quarantined."""
    from attnrec import lake

    root = str(tmp_path)
    day = tmp_path / "raw" / "events" / f"dt={DT}"
    day.mkdir(parents=True)
    bot = [ev(event_id=f"b{i}", user_id="bot") for i in range(3)]
    resender = [ev(event_id=f"r{i}", user_id="resender") for i in range(2)] + [ev(event_id="r0", user_id="resender")]
    (day / "a.jsonl").write_text("\n".join([*bot, *resender]) + "\n")
    params = CleanParams(dt=DT, max_dwell_ms=3_600_000, bot_events_per_day=2)
    summary = run(spark, root, params)
    assert summary["quarantined_by_reason"] == {"bot_user": 3} and summary["clean"] == 2
    assert summary["duplicates"] == 1 and summary["raw_lines"] == 6
    clean = spark.read.parquet(lake.staging(root, lake.CLEAN_EVENTS, DT))
    assert sorted(r["event_id"] for r in clean.collect()) == ["r0", "r1"]


def earlier_events(spark, lines: list[str]):
    """``event_id, content`` as extract_earlier gives them, from lines that were clean on an earlier day."""
    from jobs.clean import content_hash

    raw = spark.createDataFrame([(line, "old.jsonl") for line in lines], "raw_line string, source_file string")
    clean, _, _ = transform(raw, PARAMS)
    return clean.select("event_id", content_hash().alias("content"))


def test_late_resends_of_earlier_days_are_counted_or_quarantined(spark):
    earlier = earlier_events(spark, [ev(event_id="old1"), ev(event_id="old2")])
    same = ev(event_id="old1")
    changed = ev(event_id="old2", item_id="i9")
    fresh = ev(event_id="new1")
    lines = [same, same, changed, fresh]
    raw = spark.createDataFrame([(line, "f.jsonl") for line in lines], "raw_line string, source_file string")
    clean, quarantine, duplicates = transform(raw, PARAMS, earlier)
    assert [r["event_id"] for r in clean.collect()] == ["new1"]
    assert [(r["raw_line"], r["reason"]) for r in quarantine.collect()] == [(changed, "conflicting_duplicate_event_id")]
    assert sorted(r["raw_line"] for r in duplicates.collect()) == [same, same]


def test_run_dedupes_against_published_days_inside_the_lookback_only(spark, tmp_path):
    from attnrec import lake

    root = str(tmp_path)

    def land(dt: str, lines: list[str]) -> None:
        day = tmp_path / "raw" / "events" / f"dt={dt}"
        day.mkdir(parents=True)
        (day / "a.jsonl").write_text("\n".join(lines) + "\n")

    land("2025-12-30", [ev(event_id="e-old", event_time="2025-12-30T10:00:00Z")])
    land("2026-01-01", [ev(event_id="e1", event_time="2026-01-01T10:00:00Z")])
    for dt in ("2025-12-30", "2026-01-01"):
        run(spark, root, CleanParams(dt=dt, max_dwell_ms=3_600_000, dedupe_lookback_days=2))
        lake.publish(root, lake.QUARANTINE_EVENTS, dt)
        lake.publish(root, lake.CLEAN_EVENTS, dt)
    resent = ev(event_id="e1", event_time="2026-01-01T10:00:00Z")
    conflicting = ev(event_id="e1", event_time="2026-01-01T10:00:00Z", dwell_ms=5)
    too_old_to_see = ev(event_id="e-old", event_time="2025-12-30T10:00:00Z")  # 3 days back: outside the window
    land(DT, [resent, conflicting, too_old_to_see, ev(event_id="e2")])
    summary = run(spark, root, CleanParams(dt=DT, max_dwell_ms=3_600_000, dedupe_lookback_days=2))
    assert summary == {
        "dt": DT,
        "raw_lines": 4,
        "clean": 2,
        "quarantined": 1,
        "quarantined_by_reason": {"conflicting_duplicate_event_id": 1},
        "duplicates": 1,
    }
    clean = spark.read.parquet(lake.staging(root, lake.CLEAN_EVENTS, DT))
    assert sorted(r["event_id"] for r in clean.collect()) == ["e-old", "e2"]


def test_a_rerun_gives_the_same_rows(spark, tmp_path):
    from attnrec import lake
    from datatools.generate import generate

    root = str(tmp_path)
    generate(
        root, start_dt=DT, days=1, users=40, items=80, events_per_day=2_000, seed=11, bad_fraction=0.03, files_per_day=3
    )

    def snapshot():
        clean = spark.read.parquet(lake.staging(root, lake.CLEAN_EVENTS, DT))
        quarantine = spark.read.parquet(lake.staging(root, lake.QUARANTINE_EVENTS, DT))
        return (
            sorted(tuple(r) for r in clean.collect()),
            sorted((r["raw_line"], r["reason"], r["source_file"]) for r in quarantine.collect()),
        )

    params = CleanParams(dt=DT, max_dwell_ms=3_600_000)
    first = run(spark, root, params)
    rows = snapshot()
    assert first["quarantined"] > 0 and first["clean"] > 0
    assert run(spark, root, params) == first
    assert snapshot() == rows


def test_a_wrong_or_missing_key_fails_before_anything_is_written(spark, tmp_path, monkeypatch):
    from attnrec import lake
    from attnrec.privacy import FINGERPRINT_FILE
    from jobs.clean import main

    root = tmp_path / "lake"
    day = root / "raw" / "events" / f"dt={DT}"
    day.mkdir(parents=True)
    (day / "a.jsonl").write_text(ev(event_id="e1", user_id="alice") + "\n")
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", "k" * 40)
    run(spark, str(root), PARAMS)  # the first pseudonymous write records the key's fingerprint
    assert "k" * 40 not in (root / FINGERPRINT_FILE).read_text()
    lake.remove_dir(str(root / lake.STAGING))
    for problem in ("wrong", "missing"):
        if problem == "wrong":
            monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", "w" * 40)
        else:
            monkeypatch.delenv("ATTNREC_PSEUDONYM_KEY")
        match = "not the key the pseudonyms" if problem == "wrong" else "ATTNREC_PSEUDONYM_KEY is not set"
        with pytest.raises(ValueError, match=match) as err:
            main(dt=DT, data_root=str(root))
        assert "w" * 40 not in str(err.value) and "k" * 40 not in str(err.value)  # the key is never shown
        assert not (root / lake.STAGING).exists() and not (root / "_secrets").exists()  # nothing written
