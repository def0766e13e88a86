"""attnrec_ui.lakeview on small partitions built here: what the Recommendations view reads and what it never reads.

The view in a real api-server and browser is tests/cluster/test_recommendations_ui.py; these are the reading rules,
without Airflow: partitions written before experiments, a day not measured yet, paging, staged and unfinished data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attnrec import lake
from attnrec.settings import get_settings
from attnrec_ui import lakeview

DAY = "2026-05-10"


def write(root: Path, dataset: str, day: str, rows: list[dict], marker: bool = True, staged: bool = False) -> Path:
    path = Path(lake.staging(str(root), dataset, day) if staged else lake.partition(str(root), dataset, day))
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "part-0.parquet")
    if marker:
        (path / lake.SUCCESS_MARKER).write_text("")
    return path


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path))
    root = tmp_path
    write(
        root,
        lake.FEATURE_ITEMS,
        DAY,
        [{"item_id": f"i{n}", "title": f"Item {n}", "categories": ["A"]} for n in range(9)],
    )
    events = 7
    write(
        root,
        lake.FEATURE_SEQUENCES,
        DAY,
        [
            {
                "user_id": "p-alice",  # features carry the pseudonym; identity/users maps it back
                "item_ids": [f"i{n}" for n in range(events)],
                "event_types": ["view"] * events,
                "event_times_ms": [1_700_000_000_000 + n * 60_000 for n in range(events)],
                "dwell_ms": [1000 * n for n in range(events)],
            }
        ],
    )
    write(root, lake.IDENTITY_USERS, DAY, [{"pseudonym": f"p-{u}", "user_id": u} for u in ("alice", "albert", "bob")])
    # candidates as nightly_candidates wrote them before experiments: no arm, no experiment_id, manifest of one version
    cand = write(
        root,
        lake.CANDIDATES,
        DAY,
        [
            {"user_id": u, "rank": r, "item_id": f"i{6 + r}", "score": 1.0 / r, "model_name": "m", "model_version": "3"}
            for u in ("alice", "albert", "bob")
            for r in (1, 2)
        ],
    )
    lake.write_json(str(cand / lake.CANDIDATES_MANIFEST), {"dt": DAY, "model_version": "3", "rows": 6, "users": 3})
    return get_settings()


def test_a_day_written_before_experiments_reads_as_control_only(settings):
    plan = lakeview.manifest(settings.data_root, DAY)
    assert plan["model_versions"] == {"control": "3"}
    served = lakeview.served(settings, DAY, "alice")
    assert [(r["rank"], r["item_id"], r["title"], r["arm"], r["model_version"]) for r in served["rows"]] == [
        (1, "i7", "Item 7", None, "3"),
        (2, "i8", "Item 8", None, "3"),
    ]
    # kpis/dt=D not published: the day is not measured, nothing is highlighted
    assert served["outcome"] == {"measured": False, "days": [], "items": []}
    assert not any(r["engaged"] for r in served["rows"])


def test_history_is_newest_first_and_paged(settings):
    first = lakeview.history(settings.data_root, DAY, "alice", offset=0, limit=3)
    assert (first["total"], [r["item_id"] for r in first["rows"]]) == (7, ["i6", "i5", "i4"])
    assert first["rows"][0]["dwell_ms"] == 6000 and first["rows"][0]["time"] == "2023-11-14 22:19:20 UTC"
    last = lakeview.history(settings.data_root, DAY, "alice", offset=6, limit=3)
    assert [r["item_id"] for r in last["rows"]] == ["i0"]
    assert lakeview.history(settings.data_root, DAY, "alice", offset=7, limit=3)["rows"] == []


def test_search_is_by_prefix_over_the_days_users(settings):
    assert lakeview.users(settings.data_root, DAY) == ("albert", "alice", "bob")
    assert lakeview.search_users(settings.data_root, DAY, "al") == ["albert", "alice"]
    assert lakeview.search_users(settings.data_root, DAY, "al", limit=1) == ["albert"]
    assert lakeview.search_users(settings.data_root, DAY, "c") == []


def test_staged_and_unfinished_partitions_are_never_read(settings, tmp_path):
    write(tmp_path, lake.CANDIDATES, "2026-05-11", [{"user_id": "eve", "rank": 1, "item_id": "i1"}], staged=True)
    write(tmp_path, lake.CANDIDATES, "2026-05-12", [{"user_id": "eve", "rank": 1, "item_id": "i1"}], marker=False)
    assert lakeview.days(settings.data_root) == [DAY]
    for day in ("2026-05-11", "2026-05-12"):
        with pytest.raises(lakeview.NotFound, match=f"candidates/dt={day} is not published"):
            lakeview.served(settings, day, "eve")


def test_a_republished_day_is_read_afresh(settings, tmp_path):
    assert "carol" not in lakeview.users(settings.data_root, DAY)
    path = Path(lake.partition(str(tmp_path), lake.CANDIDATES, DAY))
    pq.write_table(pa.Table.from_pylist([{"user_id": "carol", "rank": 1, "item_id": "i1"}]), path / "part-1.parquet")
    (path / lake.SUCCESS_MARKER).unlink()
    (path / lake.SUCCESS_MARKER).write_text("again")  # what a publish does: a new marker
    # a later modification time than the first one, even on a file system with coarse timestamps
    os.utime(path / lake.SUCCESS_MARKER, ns=(1, 2_000_000_000_000_000_000))
    assert "carol" in lakeview.users(settings.data_root, DAY)


@pytest.mark.parametrize("value", ["2026-5-10", "yesterday", "2026-02-30", ""])
def test_a_malformed_day_names_the_format(value):
    with pytest.raises(ValueError, match="is not a date in the form YYYY-MM-DD"):
        lakeview.parse_day(value)


def test_an_unknown_user_is_named(settings):
    with pytest.raises(lakeview.NotFound, match="user 'mallory' was not served on 2026-05-10"):
        lakeview.served(settings, DAY, "mallory")
    with pytest.raises(lakeview.NotFound, match="user 'bob' has no sequence in features/sequences/dt=2026-05-10"):
        lakeview.history(settings.data_root, DAY, "bob")


def test_data_docs_pages_are_the_newest_run_of_each_gate_and_files_stay_inside(settings, tmp_path):
    base = Path(lake.data_docs_dir(str(tmp_path)))
    for run in ("candidates-2026-05-10-20260510T050000Z", "candidates-2026-05-10-20260510T070000Z"):
        page = base / "validations" / "candidates" / run / "t" / "page.html"
        page.parent.mkdir(parents=True)
        page.write_text(run)
    (base / "validations" / "candidates" / "candidates-2026-05-11-20260511T050000Z").mkdir()
    pages = lakeview.data_docs_pages(settings, DAY)
    assert pages["candidates"] == "validations/candidates/candidates-2026-05-10-20260510T070000Z/t/page.html"
    assert pages["clean_events"] is None
    assert lakeview.data_docs_file(settings, pages["candidates"]).read_text().endswith("T070000Z")
    (tmp_path / "secret.txt").write_text("no")
    for name in ("../../secret.txt", "/etc/passwd", "validations/nothing.html"):
        with pytest.raises(lakeview.NotFound, match="no Data Docs page"):
            lakeview.data_docs_file(settings, name)
