"""MovieLens-100K landing: fetch from the recbole wheel (cached), exact counts and rows in the raw contract.

The wheel is kept in the gitignored project cache (``.cache/ml-100k``); the first run downloads it from
PyPI with pip, later runs reuse it.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from attnrec import lake
from datatools.movielens import ITEMS_FILE, WHEEL_NAME, default_cache_dir, fetch, land

DT = "1998-04-23"  # the day after the last rating, 1998-04-22T23:10:38Z
END_OF_DT_MS = 893376000000  # 1998-04-24T00:00:00Z


@pytest.fixture(scope="module")
def source() -> Path:
    return fetch(default_cache_dir())


@pytest.fixture(scope="module")
def landed(source: Path, tmp_path_factory) -> tuple[str, dict]:
    root = str(tmp_path_factory.mktemp("lake"))
    return root, land(root, source)


def _events_file(root: str, dt: str = DT) -> Path:
    return Path(lake.join(root, lake.RAW_EVENTS, f"dt={dt}")) / "ml-100k.jsonl.gz"


def _read_events(root: str) -> list[dict]:
    with gzip.open(_events_file(root), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _read_items(root: str) -> dict[str, dict]:
    with open(Path(lake.raw_items(root)) / ITEMS_FILE, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return {row["item_id"]: row for row in rows}


def test_land_returns_exact_counts(landed):
    _, result = landed
    assert result == {"dt": DT, "events": 100000, "users": 943, "items": 1682}


def test_events_follow_the_raw_contract(landed):
    root, _ = landed
    events = _read_events(root)
    assert len(events) == 100000
    assert len({e["event_id"] for e in events}) == 100000
    assert len({e["user_id"] for e in events}) == 943
    assert {e["event_type"] for e in events} == {"rate"}
    assert all(isinstance(e["event_time"], int) and e["event_time"] < END_OF_DT_MS for e in events)
    assert {e["rating"] for e in events} == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert all("dwell_ms" not in e for e in events)
    # First, middle and last rows of ml-100k.inter.
    assert events[0] == {"event_id": "ml100k-1", "user_id": "196", "item_id": "242", "event_type": "rate",
                         "event_time": 881250949000, "rating": 3.0}  # fmt: skip
    assert events[49999] == {"event_id": "ml100k-50000", "user_id": "13", "item_id": "82", "event_type": "rate",
                             "event_time": 882397503000, "rating": 2.0}  # fmt: skip
    assert events[-1] == {"event_id": "ml100k-100000", "user_id": "12", "item_id": "203", "event_type": "rate",
                          "event_time": 879959583000, "rating": 3.0}  # fmt: skip
    assert max(e["event_time"] for e in events) == 893286638000


def test_items_follow_the_raw_contract(landed):
    root, _ = landed
    items = _read_items(root)
    assert len(items) == 1682
    assert items["1"] == {"item_id": "1", "title": "Toy Story", "categories": ["Animation", "Children's", "Comedy"],
                          "release_year": 1995}  # fmt: skip
    assert items["1682"] == {"item_id": "1682", "title": "Scream of Stone (Schrei aus Stein)",
                             "categories": ["Drama"], "release_year": 1991}  # fmt: skip
    assert items["267"] == {"item_id": "267", "categories": ["unknown"]}  # RecBole's "unkonwn" placeholders
    assert "release_year" not in items["1412"]  # year column holds "V"
    assert sum("release_year" in row for row in items.values()) == 1680


def test_cli_relanding_gives_identical_files(landed, tmp_path):
    from typer.testing import CliRunner

    from attnrec.cli import app

    root, _ = landed
    other = tmp_path / "lake"
    argv = ["movielens", "--data-root", str(other), "--cache-dir", str(default_cache_dir())]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"dt={DT}: 100000 events, 943 users, 1682 items"
    assert _events_file(str(other)).read_bytes() == _events_file(root).read_bytes()
    items_rel = Path(lake.RAW_ITEMS) / ITEMS_FILE
    assert (other / items_rel).read_bytes() == (Path(root) / items_rel).read_bytes()
    # Landing again replaces the partition whole and leaves no temporary directories behind; --print-dt
    # (scripts/demo.sh) prints only the day on stdout.
    result = CliRunner().invoke(app, [*argv, "--print-dt"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{DT}\n" and f"dt={DT}: 100000 events" in result.stderr
    assert sorted(p.name for p in (other / lake.RAW_EVENTS).iterdir()) == [f"dt={DT}"]
    assert sorted(p.name for p in (other / lake.RAW_EVENTS / f"dt={DT}").iterdir()) == ["ml-100k.jsonl.gz"]


def test_explicit_dt(source, tmp_path):
    assert land(str(tmp_path), source, dt="1998-05-01")["dt"] == "1998-05-01"
    assert _events_file(str(tmp_path), "1998-05-01").exists()
    with pytest.raises(ValueError, match="ends before the last MovieLens rating"):
        land(str(tmp_path), source, dt="1998-04-21")


def test_fetch_reuses_the_cached_wheel(source, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a download attempt would fail
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(source.parent / WHEEL_NAME, cache / WHEEL_NAME)
    out = fetch(cache)
    assert out == cache / "ml-100k"
    assert sorted(p.name for p in out.iterdir()) == ["ml-100k.inter", "ml-100k.item"]
    assert (out / "ml-100k.inter").read_bytes() == (source / "ml-100k.inter").read_bytes()


def test_fetch_failure_names_the_command_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index: a real download failure
    with pytest.raises(RuntimeError) as err:
        fetch(tmp_path / "empty-cache")
    message = str(err.value)
    assert "-m pip download --only-binary=:all: --no-deps recbole==1.2.1 -d" in message
    assert "Fix:" in message and WHEEL_NAME in message


def test_fetch_downloads_the_wheel_binary_only(source, tmp_path, monkeypatch):
    """pip may take the published wheel only: a source distribution would be built, running its setup code."""
    import subprocess

    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        shutil.copy(source.parent / WHEEL_NAME, Path(command[command.index("-d") + 1]) / WHEEL_NAME)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert sorted(p.name for p in fetch(tmp_path).iterdir()) == ["ml-100k.inter", "ml-100k.item"]
    [command] = commands
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--only-binary=:all:" in command and "--no-deps" in command
    assert "--no-binary" not in " ".join(command) and command[-3:] == ["recbole==1.2.1", "-d", str(tmp_path)]


def test_fetch_rejects_a_broken_wheel(tmp_path):
    (tmp_path / WHEEL_NAME).write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="delete it and run again"):
        fetch(tmp_path)


def test_land_without_source_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="run datatools.movielens.fetch"):
        land(str(tmp_path / "lake"), tmp_path)
