"""The synthetic behaviour-log generator: determinism, the raw contract, bad input, shapes, bounded memory."""

from __future__ import annotations

import collections
import datetime as dt_
import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from attnrec import lake
from attnrec.contracts import EVENT_TYPES, RATING_MAX, RATING_MIN
from datatools.generate import BAD_KINDS, ITEMS_FILE, generate

START = "2026-01-01"
SMALL = dict(start_dt=START, days=2, users=300, items=200, events_per_day=5000)


def _partition(root: Path, dt: str) -> Path:
    return Path(lake.join(str(root), lake.RAW_EVENTS, f"dt={dt}"))


def _raw_lines(root: Path, dt: str) -> list[str]:
    lines: list[str] = []
    for path in sorted(_partition(root, dt).glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines.extend(line.rstrip("\n") for line in f)
    return lines


def _day_bounds_ms(dt: str) -> tuple[int, int]:
    start = dt_.datetime.fromisoformat(dt).replace(tzinfo=dt_.timezone.utc)
    return int(start.timestamp() * 1000), int((start + dt_.timedelta(days=1)).timestamp() * 1000)


def _time_ms(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            parsed = dt_.datetime.fromisoformat(value)
        except ValueError:
            return None
        return int(parsed.timestamp() * 1000) if parsed.tzinfo is not None else None
    return None


def _classify(line: str, seen: set[str], dt: str) -> str:
    """The kind of a raw line by the contract's rules: 'good' or one of BAD_KINDS."""
    if line in seen:
        return "duplicate"
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return "malformed_json"
    if not isinstance(event, dict):
        return "not_object"
    if any(event.get(f) is None for f in ("event_id", "user_id", "item_id")):
        return "missing_id"
    if event["event_type"] not in EVENT_TYPES:
        return "unknown_event_type"
    lo, hi = _day_bounds_ms(dt)
    t = _time_ms(event["event_time"])
    if t is None or not lo <= t < hi:
        return "bad_event_time"
    if event.get("dwell_ms") is not None and event["dwell_ms"] < 0:
        return "negative_dwell"
    if event["event_type"] == "rate" and not RATING_MIN <= event["rating"] <= RATING_MAX:
        return "bad_rating"
    seen.add(line)
    return "good"


def _good_events(root: Path, dt: str) -> list[dict]:
    seen: set[str] = set()
    return [json.loads(line) for line in _raw_lines(root, dt) if _classify(line, seen, dt) == "good"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    return root, generate(str(root), **SMALL, seed=7)


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirty")
    return root, generate(str(root), start_dt=START, days=1, users=300, items=200, events_per_day=20000,
                          seed=3, bad_fraction=0.05, files_per_day=3)  # fmt: skip


def test_same_seed_same_bytes_other_seed_differs(clean_run, tmp_path):
    root, _ = clean_run
    again, other = tmp_path / "again", tmp_path / "other"
    generate(str(again), **SMALL, seed=7)
    generate(str(other), **SMALL, seed=8)
    for dt in ("2026-01-01", "2026-01-02"):
        name = "part-00000.jsonl.gz"
        assert (_partition(again, dt) / name).read_bytes() == (_partition(root, dt) / name).read_bytes()
        assert (_partition(other, dt) / name).read_bytes() != (_partition(root, dt) / name).read_bytes()
    items = Path(lake.RAW_ITEMS) / ITEMS_FILE
    assert (again / items).read_bytes() == (root / items).read_bytes()
    assert (other / items).read_bytes() != (root / items).read_bytes()


def test_counts_match_lines_written(clean_run):
    root, result = clean_run
    assert list(result["days"]) == ["2026-01-01", "2026-01-02"]
    assert result["events"] == 10000
    for dt, day in result["days"].items():
        lines = _raw_lines(root, dt)
        assert day["lines"] == day["good"] == len(lines) == 5000
        assert day["bad"] == dict.fromkeys(BAD_KINDS, 0)
        events = [json.loads(line) for line in lines]
        assert len({e["event_id"] for e in events}) == 5000
        assert all(e["event_id"].startswith(f"e{dt.replace('-', '')}-") for e in events)


def test_events_follow_the_raw_contract(clean_run):
    root, _ = clean_run
    catalogue = [json.loads(line) for line in (root / lake.RAW_ITEMS / ITEMS_FILE).read_text().splitlines()]
    assert len(catalogue) == 200
    assert all(1 <= len(item["categories"]) <= 3 and isinstance(item["release_year"], int) for item in catalogue)
    known = {item["item_id"] for item in catalogue}
    for dt in ("2026-01-01", "2026-01-02"):
        lines = _raw_lines(root, dt)
        seen: set[str] = set()
        assert {_classify(line, seen, dt) for line in lines} == {"good"}
        events = [json.loads(line) for line in lines]
        assert {e["event_type"] for e in events} == set(EVENT_TYPES)
        assert {e["item_id"] for e in events} <= known
        iso = [e["event_time"] for e in events if isinstance(e["event_time"], str)]
        assert 0 < len(iso) < len(events)  # a mix of ISO-8601 strings and epoch ms
        assert all(dt_.datetime.fromisoformat(t).tzinfo is not None for t in iso)
        for e in events:
            assert ("rating" in e) == (e["event_type"] == "rate")
            if "rating" in e:
                assert e["rating"] * 2 == int(e["rating"] * 2)
            assert ("dwell_ms" in e) == (e["event_type"] in ("click", "view"))


def test_event_type_proportions(clean_run):
    root, _ = clean_run
    counts = collections.Counter(e["event_type"] for e in _good_events(root, "2026-01-01"))
    ranked = [t for t, _ in counts.most_common()]
    assert ranked[0] == "impression" and set(ranked[1:3]) == {"click", "view"}
    assert counts["impression"] > 0.4 * 5000
    assert counts["add_to_cart"] > counts["purchase"] > 0


def test_purchases_follow_an_add_to_cart_in_the_same_session(clean_run):
    root, _ = clean_run
    for dt in ("2026-01-01", "2026-01-02"):
        events = _good_events(root, dt)
        carts: dict[tuple, list[int]] = collections.defaultdict(list)
        for e in events:
            if e["event_type"] == "add_to_cart":
                carts[(e["user_id"], e["item_id"], e["session_id"])].append(_time_ms(e["event_time"]))
        purchases = [e for e in events if e["event_type"] == "purchase"]
        assert purchases
        for p in purchases:
            key = (p["user_id"], p["item_id"], p["session_id"])
            assert any(t < _time_ms(p["event_time"]) for t in carts[key]), p


def test_bad_lines_of_every_kind_are_counted_exactly(dirty_run):
    root, result = dirty_run
    day = result["days"][START]
    lines = _raw_lines(root, START)
    assert len(lines) == day["lines"] == 20000
    assert sum(day["bad"].values()) == 1000 and day["good"] == 19000
    assert all(n > 0 for n in day["bad"].values()), day["bad"]
    seen: set[str] = set()
    found = collections.Counter(_classify(line, seen, START) for line in lines)
    assert found == collections.Counter({"good": 19000, **day["bad"]})
    assert all(line.strip() for line in lines)  # never a blank line


def test_files_per_day_and_partition_replaced_whole(dirty_run, tmp_path):
    root, result = dirty_run
    files = result["days"][START]["files"]
    assert [Path(f).name for f in files] == [f"part-{k:05d}.jsonl.gz" for k in range(3)]
    assert all(Path(f).stat().st_size > 0 for f in files)
    generate(str(root), start_dt=START, days=1, users=50, items=40, events_per_day=100, seed=3)
    assert sorted(p.name for p in _partition(root, START).iterdir()) == ["part-00000.jsonl.gz"]
    assert sorted(p.name for p in (root / lake.RAW_EVENTS).iterdir()) == [f"dt={START}"]  # no temp dirs left
    assert len(_raw_lines(root, START)) == 100


def test_day_does_not_depend_on_later_days(clean_run, tmp_path):
    root, _ = clean_run
    generate(str(tmp_path), **{**SMALL, "days": 1}, seed=7)
    name = "part-00000.jsonl.gz"
    assert (_partition(tmp_path, START) / name).read_bytes() == (_partition(root, START) / name).read_bytes()


def test_sequential_taste_and_drift(tmp_path):
    generate(str(tmp_path), start_dt=START, days=4, users=400, items=300, events_per_day=8000, seed=11)
    days = [(dt_.date(2026, 1, 1) + dt_.timedelta(days=k)).isoformat() for k in range(4)]
    per_day = {dt: _good_events(tmp_path, dt) for dt in days}
    # Order matters: the most frequent successor of an item accounts for a large share of transitions.
    events = sorted(per_day[days[0]], key=lambda e: (e["session_id"], _time_ms(e["event_time"])))
    shown = [(e["session_id"], e["item_id"]) for e in events if e["event_type"] == "impression"]
    successors: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (s1, a), (s2, b) in zip(shown, shown[1:]):
        if s1 == s2:
            successors[a][b] += 1
    transitions = sum(sum(c.values()) for c in successors.values())
    top = sum(c.most_common(1)[0][1] for c in successors.values())
    assert top / transitions > 0.3
    # Drift: the day's most popular items change, and items appear that were not there on day one.
    popular = [{i for i, _ in collections.Counter(e["item_id"] for e in per_day[dt]).most_common(10)} for dt in days]
    assert popular[0] != popular[3]
    first_day_items = {e["item_id"] for e in per_day[days[0]]}
    assert {e["item_id"] for e in per_day[days[3]]} - first_day_items


def test_memory_stays_bounded(tmp_path):
    tracemalloc.start()
    try:
        result = generate(str(tmp_path), start_dt=START, days=1, users=5000, items=2000, events_per_day=200_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["days"][START]["lines"] == 200_000
    # 200k events are ~45 MB as Python strings; streaming holds one chunk at a time.
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start_dt": "2026-02-30"}, "not a real calendar date"),
        ({"days": 0}, "days=0 must be an integer >= 1"),
        ({"bad_fraction": 1.0}, "bad_fraction=1.0 must be in"),
        ({"files_per_day": 0}, "files_per_day=0"),
        ({"data_root": "s3a://bucket/lake"}, "generate into a local directory"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, change, message):
    args = {"data_root": str(tmp_path), **SMALL, **change}
    with pytest.raises(ValueError, match=message):
        generate(**args)


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from attnrec.cli import app

    argv = ["generate", "--data-root", str(tmp_path), "--start", START, "--days", "1", "--users", "100", "--items",
            "50", "--events-per-day", "1000", "--bad-fraction", "0.1", "--seed", "5"]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0] == f"items: 50 -> {tmp_path / lake.RAW_ITEMS / ITEMS_FILE}"
    assert out[1].startswith(f"dt={START}: 1000 lines, 900 good, bad: duplicate=")
    assert out[2].startswith("1,000 lines in ")
    assert len(_raw_lines(tmp_path, START)) == 1000
