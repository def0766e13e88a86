"""The simulator: better lists earn more clicks, the history continues byte for byte, determinism, clear errors."""

from __future__ import annotations

import datetime as dt_
import gzip
import json
import shutil
from pathlib import Path

import pytest

from attnrec import lake
from attnrec.contracts import EVENT_TYPES, OPTIONAL_EVENT_FIELDS, REQUIRED_EVENT_FIELDS
from datatools.generate import WORLD_FILE, generate
from datatools.simulate import MARKER, SERVED_FILE, load_world, simulate

START = "2026-01-01"
NEXT = "2026-01-02"
WORLD = dict(start_dt=START, users=300, items=200, events_per_day=3000, seed=11, bad_fraction=0.01)
TOP_N = 10


def write_candidates(root: Path, dt: str, lists: dict[str, list[str]]) -> None:
    """A published candidates partition (the columns simulate reads, plus the rest of the contract)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(u, r + 1, i) for u, items in lists.items() for r, i in enumerate(items)]
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.string()),
            "rank": pa.array([r[1] for r in rows], pa.int32()),
            "item_id": pa.array([r[2] for r in rows], pa.string()),
            "score": pa.array([-float(r[1]) for r in rows], pa.float32()),
            "model_name": pa.array(["hand"] * len(rows), pa.string()),
            "model_version": pa.array(["0"] * len(rows), pa.string()),
        }
    )
    path = Path(lake.partition(str(root), lake.CANDIDATES, dt))
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-00000.parquet")
    (path / lake.SUCCESS_MARKER).write_text("{}")


def served_events(root: Path, dt: str = NEXT) -> list[dict]:
    with gzip.open(Path(lake.join(str(root), lake.RAW_EVENTS, f"dt={dt}")) / SERVED_FILE, "rt") as f:
        return [json.loads(line) for line in f]


def clicks_and_hits(events: list[dict], lists: dict[str, list[str]]) -> tuple[int, int]:
    """Clicks on served items, and users with at least one such click."""
    served = {(u, i) for u, items in lists.items() for i in items}
    clicks = [(e["user_id"], e["item_id"]) for e in events if e["event_type"] == "click"]
    assert set(clicks) <= served  # a response is only ever to a served item
    return len(clicks), len({u for u, _ in clicks})


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    generate(str(root), days=1, **WORLD)
    return root


@pytest.fixture(scope="module")
def lists(lake_root) -> dict[str, dict[str, list[str]]]:
    """Per human user: ten items of their true favourite cluster, and ten random items."""
    import numpy as np

    world, _ = load_world(str(lake_root))
    rng = np.random.default_rng(0)
    fav, rand = {}, {}
    for u in np.flatnonzero(~world.is_bot).tolist():
        c = world.fav_cluster[u]
        members = np.arange(world.cluster_start[c], world.cluster_start[c] + world.cluster_size[c])
        fav[f"u{u + 1}"] = [f"i{world.public_id[j]}" for j in members[:TOP_N]]
        rand[f"u{u + 1}"] = [f"i{world.public_id[j]}" for j in rng.choice(world.n_items, TOP_N, replace=False)]
    return {"favourite": fav, "random": rand}


def test_lists_of_the_true_taste_earn_clearly_more_clicks(lake_root, lists):
    outcome = {}
    for name, served in lists.items():
        write_candidates(lake_root, START, served)
        result = simulate(str(lake_root), START, top_n=TOP_N)
        events = served_events(lake_root)
        clicks, hits = clicks_and_hits(events, served)
        assert (result["clicks"], result["users_with_a_click"]) == (clicks, hits)
        assert result["impressions"] == result["visitors"] * TOP_N
        outcome[name] = (clicks, hits, result["visitors"])
        print(f"{name}: {clicks} clicks, {hits} users with a click of {result['visitors']} visitors")
    (fav_clicks, fav_hits, visitors), (rand_clicks, rand_hits, rand_visitors) = outcome["favourite"], outcome["random"]
    assert visitors == rand_visitors > 200  # the same users come back, whatever they are shown
    # expected: ~2.7 vs ~0.5 clicks per visitor, ~95% vs ~40% of visitors with a click
    assert fav_clicks > 3 * rand_clicks
    assert fav_hits / visitors > 0.85 > 0.6 > rand_hits / visitors


def test_served_events_follow_the_raw_contract_and_carry_no_ground_truth(lake_root, lists):
    write_candidates(lake_root, START, lists["favourite"])
    simulate(str(lake_root), START, top_n=TOP_N)
    events = served_events(lake_root)
    lo = int(dt_.datetime.fromisoformat(NEXT).replace(tzinfo=dt_.timezone.utc).timestamp() * 1000)
    allowed = set(REQUIRED_EVENT_FIELDS) | set(OPTIONAL_EVENT_FIELDS)
    for e in events:
        assert set(e) <= allowed and set(REQUIRED_EVENT_FIELDS) <= set(e), e
        assert e["event_type"] in EVENT_TYPES and e["event_id"].startswith("e20260102-r")
        t = e["event_time"]
        ms = t if isinstance(t, int) else int(dt_.datetime.fromisoformat(t).timestamp() * 1000)
        assert lo <= ms < lo + 86_400_000
    partition = Path(lake.join(str(lake_root), lake.RAW_EVENTS, f"dt={NEXT}"))
    organic_ids = set()
    for path in partition.glob("part-*.jsonl.gz"):
        with gzip.open(path, "rt") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:  # the generator's malformed lines
                    continue
                if isinstance(event, dict):
                    organic_ids.add(event.get("event_id"))
    assert len(organic_ids) > 2000
    served_ids = [e["event_id"] for e in events]
    assert len(set(served_ids)) == len(served_ids) and not organic_ids & set(served_ids)
    # a purchase always follows an add_to_cart of the same item by the same user
    carts = {(e["user_id"], e["item_id"]) for e in events if e["event_type"] == "add_to_cart"}
    assert {(e["user_id"], e["item_id"]) for e in events if e["event_type"] == "purchase"} <= carts
    # only the world sidecar knows the taste; it lies outside every dataset
    assert (lake_root / WORLD_FILE).is_file() and not str(WORLD_FILE).startswith(("raw", "clean", "features"))


def test_organic_part_is_the_day_the_generator_would_have_written(lake_root, lists, tmp_path):
    write_candidates(lake_root, START, lists["random"])
    simulate(str(lake_root), START, top_n=TOP_N)
    longer = tmp_path / "longer"
    generate(str(longer), days=2, **WORLD)
    ours = Path(lake.join(str(lake_root), lake.RAW_EVENTS, f"dt={NEXT}"))
    theirs = Path(lake.join(str(longer), lake.RAW_EVENTS, f"dt={NEXT}"))
    assert sorted(p.name for p in theirs.iterdir()) == ["part-00000.jsonl.gz"]
    assert sorted(p.name for p in ours.iterdir()) == [MARKER, "part-00000.jsonl.gz", SERVED_FILE]
    assert (ours / "part-00000.jsonl.gz").read_bytes() == (theirs / "part-00000.jsonl.gz").read_bytes()


def test_same_seed_same_bytes_and_a_rerun_replaces_the_partition(lake_root, lists):
    write_candidates(lake_root, START, lists["favourite"])
    partition = Path(lake.join(str(lake_root), lake.RAW_EVENTS, f"dt={NEXT}"))

    def snapshot() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(partition.iterdir())}

    simulate(str(lake_root), START, top_n=TOP_N)
    first = snapshot()
    simulate(str(lake_root), START, top_n=TOP_N)
    assert snapshot() == first
    simulate(str(lake_root), START, top_n=TOP_N, seed=99)
    other = snapshot()
    assert other[SERVED_FILE] != first[SERVED_FILE]
    assert other["part-00000.jsonl.gz"] == first["part-00000.jsonl.gz"]  # organic browsing follows the world
    simulate(str(lake_root), START, top_n=3)
    assert {e["event_type"] for e in served_events(lake_root)} >= {"impression", "click"}
    assert len({e["item_id"] for e in served_events(lake_root) if e["user_id"] == "u1"}) <= 3


def test_missing_world_or_candidates_fail_naming_the_fix(lake_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no synthetic world at .*world\.json.*attnrec generate"):
        simulate(str(tmp_path), START)
    with pytest.raises(FileNotFoundError, match=r"candidates/dt=2026-01-05 .*airflow dags test nightly_candidates"):
        simulate(str(lake_root), "2026-01-05")
    with pytest.raises(ValueError, match="holds events the history generator wrote"):
        simulate(str(lake_root), "2025-12-31")
    write_candidates(lake_root, "2026-01-03", {"u999999": ["i1"]})
    with pytest.raises(ValueError, match="served user_id 'u999999' is not in the synthetic world"):
        simulate(str(lake_root), "2026-01-03")


def test_cli_one_line_error_and_summary(lake_root, lists, tmp_path):
    from typer.testing import CliRunner

    from attnrec.cli import app

    result = CliRunner().invoke(app, ["simulate", "--data-root", str(tmp_path), "--dt", START])
    assert result.exit_code == 2 and "attnrec simulate: no synthetic world at" in result.output
    write_candidates(lake_root, START, lists["favourite"])
    result = CliRunner().invoke(app, ["simulate", "--data-root", str(lake_root), "--dt", START, "--top-n", "5"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"dt={NEXT}: 3000 organic lines; served lists of dt={START}: ")
