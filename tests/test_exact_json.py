"""jobs/exact_json.py: the Java parse function gives every clean rule the same input as the Spark SQL parse.

Every kind of value in every raw field, every structural defect, and a synthetic day with bad lines go through
``jobs.clean.lines`` twice, once per parse; the reasons, the contract columns and the raw sample gate's columns must
agree row for row. The one intended difference (a stray ``]`` after the object, which the SQL parse cannot see) and
the nested values' type names (their kind only, in the Java one) are asserted on their own.
"""

from __future__ import annotations

import pytest

from jobs import exact_json
from jobs.clean import RAW_FIELDS, RAW_SAMPLE_COLUMNS, CleanParams, extract, lines

DT = "2026-01-02"
PARAMS = CleanParams(dt=DT, event_time_tolerance_hours=24, max_dwell_ms=3_600_000)
BASE = {
    "event_id": '"e1"',
    "user_id": '"u1"',
    "item_id": '"i1"',
    "event_type": '"rate"',
    "event_time": '"2026-01-02T10:00:00+02:00"',
    "dwell_ms": "1200",
    "rating": "4.5",
    "session_id": '"s1"',
    "device": '"ios"',
}
#: JSON literals (as written in the line) tried in every raw field.
VALUES = [
    '"x"', '""', '"  "', '" padded "', '"VIEW"', '" click "', '"rate"', '"teleport"', '"Zoë-用户"', '"\\u00e9t\\u00e9"',
    '"a\\"b"', '"\\u0000"', '"tab\\there"', '"\\ud83d\\ude00"', '"\\ud800"', '"\\udc00x"', '"\\ud83dx"',
    '"1200"', '"4.5"',
    '"2026-01-02T10:00:00Z"', '"2026-01-02 10:00:00+02"', '"2026-01-02T10:00:00"', '"yesterday"', '"1767348000000"',
    "0", "-0", "7", "-5", "1200", "3600001", "1767348000000", "1767348000", "2147483648", "9223372036854775807",
    "9223372036854775808", "-9223372036854775809", "123456789012345678901234567890123456789",
    "4.5", "4.50", "4.0", "0.5", "5.5", "0.0", "-0.0", "1767348000000.5", "100.0", "1e3", "1.5E2", "4.5e0", "-1e-2",
    "0.000000000000000000000000000000000000001", "1.0000000000000000000000000000000000000001",
    "true", "false", "null", "{}", '{"a": 1}', "[]", '["i1"]', '[{"a": [1, {"b": null}]}]', '{"ms": 1767348000000}',
]  # fmt: skip
#: Whole lines with a structural defect (or none), beside the field values above.
STRUCTURE = [
    "", " ", "\t", "not json", "[1, 2]", '"just a string"', "7", "null", "{}", " {} ", "{", "}",
    '{"event_id": "e1"} trailing', '{"event_id": "e1"} {"event_id": "e2"}', '{"event_id": "e1"}, {"event_id": "e2"}',
    '{"event_id": "e1"}}', '{"event_id": "e1",}', "{'event_id': 'e1'}", '{event_id: "e1"}',
    '{"event_id": "e1", "event_id": "e2"}', '{"event_id": "e1", "extra": {"a": 1, "a": 2}}',
    '{"event_id": "e1", "extra": [{"a": 1, "a": 2}]}', '{"event_id": "e1" /* c */}', '{"event_id": NaN}',
    '{"dwell_ms": 007}', '{"dwell_ms": +7}', '{"dwell_ms": .5}', '{"dwell_ms": 5.}', '{"event_id": "a\tb"}',
    '{"event_id": "\\x41"}', '{"event_id": "e1", "\\ud800": 1}', '{"event_id": "e1", "extra": ["\\ud800"]}',
    '{"event_id": "e1", "extra": {"\\udc00": 1}}', '{"event_id": "e1", "extra": {"a": [1, 2}}',
    '{"event\\u005fid": "e1", "user_id": "u1"}', "\ufeff{}", "\u00a0{}", "\f{}",
    '{"event_id": "e1"', '{"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "view", "event_time": "',
]  # fmt: skip


def line(**fields: str | None) -> str:
    """The base event with ``fields`` replaced by JSON literals (None: the field left out)."""
    merged = {**BASE, **fields}
    return "{" + ", ".join(f'"{k}": {v}' for k, v in merged.items() if v is not None) + "}"


def corpus() -> list[str]:
    out = [line(), *STRUCTURE]
    for field in RAW_FIELDS:
        out.append(line(**{field: None}))
        out.extend(line(**{field: value}) for value in VALUES)
    out.extend(line(event_type='"view"', rating=value) for value in ("null", "4.5"))
    out.extend(" \t\r" + line() + suffix for suffix in ("", " ", "\r", "\t \n"))
    return list(dict.fromkeys(out))  # a value equal to the base's makes the base line again


def outcome(frame, java: bool) -> dict[str, dict]:
    rows = lines(frame, PARAMS, keep=RAW_SAMPLE_COLUMNS, java=java).collect()
    return {r["raw_line"]: r.asDict() for r in rows}


def comparable(row: dict) -> dict:
    """What a parse decides for a line: its reason, the gate's columns and, for a clean line, its contract columns (a
    quarantined line keeps only its raw text); each nested value's type cut to its kind (OBJECT<a: BIGINT> and
    OBJECT are the same finding); for a line that is not one object, the types only in the Java parse are null."""
    cut = dict(row) if row["reason"] is None else {k: row[k] for k in ("raw_line", "reason", *RAW_SAMPLE_COLUMNS)}
    if row["reason"] == "malformed_json":  # not one object: the SQL parse may still type the first one's fields
        cut = {k: row[k] for k in ("raw_line", "reason", "is_object")}
    for name in RAW_FIELDS:
        t = cut.get(f"t_{name}")
        if t and t.startswith(("OBJECT", "ARRAY")):
            cut[f"t_{name}"] = t.split("<")[0]
    return cut


@pytest.fixture(scope="module")
def java_available(spark):
    # no skip: the compiler module ships with the JVM Spark runs on (Debian's JRE too); a failure here is a bug
    assert exact_json.register(spark, RAW_FIELDS), "the Java parse function could not be registered (see output)"
    return True


def test_both_parses_give_every_rule_the_same_input(spark, java_available):
    texts = corpus()
    assert len(texts) > 500
    frame = spark.createDataFrame([(t, "f.jsonl") for t in texts], "raw_line string, source_file string")
    java, sql = outcome(frame, java=True), outcome(frame, java=False)
    assert len(java) == len(sql) == len(texts)
    differ = [t for t in texts if comparable(java[t]) != comparable(sql[t])]
    assert differ == []
    reasons = {row["reason"] for row in java.values()}
    # the corpus reaches every rule but the duplicates' and the bots' (decided after the parse)
    assert None in reasons and {"empty_line", "malformed_json", "wrong_type_id", "wrong_type_rating"} <= reasons
    assert len(reasons) >= 20


def test_a_synthetic_day_with_bad_lines_parses_the_same(spark, java_available, tmp_path):
    from datatools.generate import generate

    generate(str(tmp_path), DT, days=1, users=50, items=40, events_per_day=3000, bad_fraction=0.3, files_per_day=2)
    raw = extract(spark, str(tmp_path / "raw" / "events" / f"dt={DT}"))
    java, sql = outcome(raw, java=True), outcome(raw, java=False)
    assert java.keys() == sql.keys() and len(java) > 2000
    assert [t for t in java if comparable(java[t]) != comparable(sql[t])] == []
    assert sum(r["reason"] is not None for r in java.values()) > 500


def test_a_stray_bracket_after_the_object_is_malformed_only_to_the_java_parse(spark, java_available):
    text = line() + "]"
    frame = spark.createDataFrame([(text, "f.jsonl")], "raw_line string, source_file string")
    assert outcome(frame, java=True)[text]["reason"] == "malformed_json"
    assert outcome(frame, java=False)[text]["reason"] is None  # Spark's parser stops after the wrapping array


def test_nested_values_are_named_by_their_kind(spark, java_available):
    from jobs.clean import parse

    text = line(device='{"os": "ios"}', session_id="[1]")
    frame = spark.createDataFrame([(text, "f.jsonl")], "raw_line string, source_file string")
    java, sql = parse(frame, java=True).first(), parse(frame, java=False).first()
    assert (java["t_device"], java["t_session_id"]) == ("OBJECT", "ARRAY")
    assert (sql["t_device"], sql["t_session_id"]) == ("OBJECT<os: STRING>", "ARRAY<BIGINT>")
    assert outcome(frame, java=True)[text]["reason"] == outcome(frame, java=False)[text]["reason"]
    assert outcome(frame, java=True)[text]["reason"] == "wrong_type_optional_field"


def test_without_the_function_the_job_says_why_and_parses_with_spark_sql(spark, capsys, monkeypatch):
    from jobs import clean

    monkeypatch.setattr(exact_json, "FUNCTION", "attnrec_exact_json_fields_missing")  # not registered in the session
    monkeypatch.setattr(exact_json, "_unavailable_said", False)
    monkeypatch.setenv("ATTNREC_SPARK_UDF_DIR", "none")
    frame = spark.createDataFrame([(line(), "f.jsonl")], "raw_line string, source_file string")
    parsed = clean.parse(frame)
    assert "ATTNREC_SPARK_UDF_DIR is none" in capsys.readouterr().out
    assert parsed.first()["t_event_id"] == "STRING"
    with pytest.raises(RuntimeError, match="could not be registered"):
        clean.parse(frame, java=True)


def test_the_jar_is_rebuilt_for_a_changed_source_and_written_whole(tmp_path, monkeypatch):
    first = exact_json.jar_path(str(tmp_path))
    exact_json.build(first)
    assert first.is_file() and not list(tmp_path.glob(".*.partial"))
    changed = tmp_path / "Changed.java"
    changed.write_text(exact_json.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(exact_json, "SOURCE", changed)
    assert exact_json.jar_path(str(tmp_path)) != first
    broken = tmp_path / "Broken.java"
    broken.write_text("class Broken {")
    monkeypatch.setattr(exact_json, "SOURCE", broken)
    with pytest.raises(RuntimeError, match="compiling Broken.java failed"):
        exact_json.build(tmp_path / "broken.jar")
    assert not (tmp_path / "broken.jar").exists()
    assert exact_json.return_type(("a", "b")) == "struct<is_object:boolean,t_a:string,s_a:string,t_b:string,s_b:string>"
