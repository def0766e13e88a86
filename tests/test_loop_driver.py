"""The loop driver's own parts, without Airflow: its refusal to start without kpi_report, the daily row it reads
from the lake, the table and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnrec import lake
from datatools import loop
from datatools.loop import LoopConfig, check_config, day_row, plot, seconds_lines, small_config, table_lines

DT = "2026-02-02"


def test_a_missing_kpi_report_dag_stops_the_loop_before_it_starts(tmp_path, monkeypatch):
    dags = tmp_path / "dags"
    dags.mkdir()
    for dag_id in ("behavior_etl", "train_recommender", "nightly_candidates"):
        (dags / f"{dag_id}.py").write_text("")
    monkeypatch.setattr(loop, "DAGS", dags)
    cfg = LoopConfig(workdir=tmp_path / "work")
    with pytest.raises(FileNotFoundError, match=r"needs DAG\(s\) kpi_report .* no kpi_report\.py.*merge it"):
        check_config(cfg)
    assert not cfg.workdir.exists()  # nothing was started
    (dags / "kpi_report.py").write_text("")
    check_config(cfg)
    with pytest.raises(ValueError, match="loop_days=0 must be >= 1"):
        check_config(LoopConfig(workdir=tmp_path / "work", loop_days=0))


def test_config_days():
    cfg = LoopConfig(workdir=Path("w"), start="2026-02-27", history_days=3, loop_days=2)
    assert cfg.history == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert cfg.serve_days == ["2026-03-01", "2026-03-02"]
    small = small_config(Path("w"), seed=3)  # make test's loop: one history day (both models train on it), two served
    assert (small.history, small.serve_days, small.seed) == (["2026-02-01"], ["2026-02-01", "2026-02-02"], 3)


def test_seconds_lines_sum_each_kind_of_step():
    etl1, weak, etl2 = "behavior_etl-2026-02-01", "train_recommender-weak-2026-02-01", "behavior_etl-2026-02-02"
    seconds = {"generate": 1.0, etl1: 60.0, weak: 30.0, etl2: 40.0}
    kinds = {"generate": "generate", etl1: "behavior_etl", weak: "train_recommender", etl2: "behavior_etl"}
    lines = seconds_lines(seconds, kinds)
    assert lines[0].split() == ["generate", "1", "s"]
    assert lines[4] == "per kind of step:"
    assert lines[5].split() == ["behavior_etl", "2", "x", "50", "s", "=", "100", "s"]  # largest total first
    assert lines[6].split() == ["train_recommender", "1", "x", "30", "s", "=", "30", "s"]
    assert lines[-1].split() == ["all", "steps", "131", "s"]


def _write_partition(root: Path, dataset: str, table) -> None:
    import pyarrow.parquet as pq

    path = Path(lake.partition(str(root), dataset, DT))
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-00000.parquet")
    (path / lake.SUCCESS_MARKER).write_text("{}")


def test_day_row_reads_the_arms_the_kpis_and_the_next_share(tmp_path):
    import pyarrow as pa

    from attnrec.experiments import write_allocation

    users = [f"u{k}" for k in range(10)]  # 3 control users (version 1), 7 treatment users (version 2), 2 rows each
    arm = ["control"] * 3 + ["treatment"] * 7
    _write_partition(tmp_path, lake.CANDIDATES, pa.table({
        "user_id": [u for u in users for _ in range(2)], "rank": [1, 2] * 10, "item_id": ["i1", "i2"] * 10,
        "model_version": [("1" if a == "control" else "2") for a in arm for _ in range(2)],
        "arm": [a for a in arm for _ in range(2)], "experiment_id": ["x"] * 20,
    }))  # fmt: skip
    _write_partition(tmp_path, lake.KPIS, pa.table({
        "experiment_id": ["x", "x", "other"], "arm": ["control", "treatment", "treatment"],
        "model_version": ["1", "2", "9"], "users": [4, 9, 100], "active_users": [3, 7, 90],
        "hit_rate_at_10": [1 / 3, 6 / 7, 0.0],
        "lift_hit_rate_at_10": [None, 6 / 7 - 1 / 3, 0.0], "p_value": [None, 0.01, 0.9],
    }))  # fmt: skip
    row = day_row(str(tmp_path), DT, "x")
    assert row["next_share"] is None
    write_allocation(str(tmp_path), DT, {"experiment_id": "x", "treatment_share": 0.8})
    row = day_row(str(tmp_path), DT, "x")
    assert row == pytest.approx({
        "dt": DT, "served_share": 0.7, "control_version": "1", "treatment_version": "2", "control_users": 3,
        "treatment_users": 7, "control_hit_rate_at_10": 1 / 3, "treatment_hit_rate_at_10": 6 / 7,
        "lift_hit_rate_at_10": 6 / 7 - 1 / 3, "p_value": 0.01, "next_share": 0.8,
    })  # fmt: skip
    with pytest.raises(ValueError, match="no row for experiment 'y'"):
        day_row(str(tmp_path), DT, "y")

    row["champion"] = "2"
    lines = table_lines([row, {**row, "dt": "2026-02-03", "next_share": None}])
    assert lines[0].split()[:3] == ["day", "share", "ctl"]
    assert lines[1].split() == ["2026-02-02", "0.700", "1", "3", "0.333", "2", "7", "0.857", "+0.524", "0.01",
                                "0.800", "2"]  # fmt: skip
    assert lines[2].split()[-2] == "-"
    assert plot([row, {**row, "next_share": 0.9}], tmp_path / "loop.png").stat().st_size > 10_000


def test_candidates_without_arms_name_the_missing_merge(tmp_path):
    import pyarrow as pa

    _write_partition(tmp_path, lake.CANDIDATES, pa.table({"user_id": ["u1"], "model_version": ["1"]}))
    with pytest.raises(ValueError, match="no 'arm' column: nightly_candidates predates issue 12"):
        day_row(str(tmp_path), DT, "x")


def test_the_loop_log_keeps_every_printed_message(tmp_path):
    printed = []
    log = loop._tee(printed.append, tmp_path / "loop.log")
    log("history: 1 days")
    log("seconds per step:\n  generate 1 s")
    assert printed == ["history: 1 days", "seconds per step:\n  generate 1 s"]
    assert (tmp_path / "loop.log").read_text() == "history: 1 days\nseconds per step:\n  generate 1 s\n"
