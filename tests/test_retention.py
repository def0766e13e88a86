"""attnrec.retention: raw/events and quarantine/ partitions past their retention go, nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnrec import lake
from attnrec.retention import expire
from attnrec.settings import get_settings

DAYS = ["2026-03-01", "2026-03-05", "2026-03-06", "2026-03-10"]


def build(root: Path) -> None:
    for dataset in (
        lake.RAW_EVENTS,
        lake.QUARANTINE_EVENTS,
        lake.QUARANTINE_ITEMS,
        lake.CLEAN_EVENTS,
        lake.FEATURE_SEQUENCES,
    ):
        for day in DAYS:
            part = root / dataset / f"dt={day}"
            part.mkdir(parents=True)
            (part / "a.jsonl").write_text("{}\n")
    (root / lake.RAW_EVENTS / "notes.txt").write_text("not a partition\n")


def remaining(root: Path, dataset: str) -> list[str]:
    return sorted(p.name.removeprefix("dt=") for p in (root / dataset).iterdir() if p.name.startswith("dt="))


def test_default_keeps_everything(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNREC_RAW_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("ATTNREC_QUARANTINE_RETENTION_DAYS", raising=False)
    build(tmp_path)
    assert expire(get_settings(data_root=str(tmp_path)), "2026-03-10") == {}
    assert remaining(tmp_path, lake.RAW_EVENTS) == DAYS


def test_old_partitions_of_raw_and_quarantine_go_and_are_logged(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNREC_RAW_RETENTION_DAYS", "5")
    monkeypatch.setenv("ATTNREC_QUARANTINE_RETENTION_DAYS", "4")
    build(tmp_path)
    settings = get_settings(data_root=str(tmp_path))
    deleted = expire(settings, "2026-03-10")
    # raw: kept from 2026-03-05 (10 - 5) on; quarantine: from 2026-03-06 on
    assert deleted == {
        lake.RAW_EVENTS: ["2026-03-01"],
        lake.QUARANTINE_EVENTS: ["2026-03-01", "2026-03-05"],
        lake.QUARANTINE_ITEMS: ["2026-03-01", "2026-03-05"],
    }
    assert remaining(tmp_path, lake.RAW_EVENTS) == DAYS[1:]
    assert remaining(tmp_path, lake.QUARANTINE_EVENTS) == DAYS[2:]
    for untouched in (lake.CLEAN_EVENTS, lake.FEATURE_SEQUENCES):
        assert remaining(tmp_path, untouched) == DAYS
    assert (tmp_path / lake.RAW_EVENTS / "notes.txt").exists()
    assert "retention: deleted raw/events/dt=2026-03-01" in capsys.readouterr().out
    assert expire(settings, "2026-03-10")[lake.RAW_EVENTS] == []  # a re-run deletes nothing more


def test_a_negative_retention_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("ATTNREC_RAW_RETENTION_DAYS", "-1")
    with pytest.raises(ValueError, match="ATTNREC_RAW_RETENTION_DAYS"):
        get_settings()
