"""The closed loop through Airflow on synthetic users (datatools/loop.py): the better model wins the experiment.

History -> behavior_etl -> a weak model (1 epoch; champion) and a strong one (8 epochs; challenger) -> loop days of
nightly_candidates in a thompson A/B test -> simulated next day -> behavior_etl -> kpi_report, every stage through
``airflow dags test``. The simulator's users click items of their hidden favourite cluster; the strong model serves
more of it, so its lists earn clearly more hits.

``make test`` runs the loop at :func:`datatools.loop.small_config`'s size (one history day, two loop days, 1,000
users: nine DAG runs); ``make test-loop`` runs the same assertions on the full-size loop of ``make demo-loop``
(LOOP_SIZE=full: LoopConfig's defaults, three loop days). Everything is seeded; the margins over several seeds
(p-values, lifts, shares) are in docs/operations.md, printed by ``python benchmarks/loop_margins.py``.
"""

from __future__ import annotations

import os

import pytest

# the small loop takes about 5 to 10 minutes on 2 cores (more when the machine is busy); the full one 15-25
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    from datatools.loop import LoopConfig, run, small_config

    workdir = tmp_path_factory.mktemp("loop") / "work"
    size = os.environ.get("LOOP_SIZE", "small")
    if size not in ("small", "full"):
        raise ValueError(f"LOOP_SIZE={size!r}: use 'small' (make test) or 'full' (make test-loop)")
    cfg = small_config(workdir) if size == "small" else LoopConfig(workdir=workdir)
    return cfg, run(cfg)


def test_the_better_model_earns_more_hits_every_day(loop):
    cfg, result = loop
    rows = result["rows"]
    assert len(rows) == cfg.loop_days >= 2
    for row in rows:
        assert row["control_version"] != row["treatment_version"], row  # the two models were compared every day
        assert row["treatment_hit_rate_at_10"] > row["control_hit_rate_at_10"], row
        assert row["lift_hit_rate_at_10"] > 0, row
    last = rows[-1]
    assert last["p_value"] < 0.05, last  # the decision's test, on the day the bandit left control smallest


def test_the_bandit_moves_traffic_to_the_better_arm(loop):
    cfg, result = loop
    served = [row["served_share"] for row in result["rows"]]
    assert abs(served[0] - cfg.treatment_share) < 0.1, served  # the first day: the configured 50/50
    assert all(b >= a - 0.02 for a, b in zip(served, served[1:])), served  # never back (sticky buckets)
    assert served[-1] > served[0] + 0.2, served
    assert all(row["next_share"] is not None and row["next_share"] > 0.5 for row in result["rows"])


def test_the_strong_model_ends_as_champion(loop):
    cfg, result = loop
    rows = result["rows"]
    weak, strong = rows[0]["control_version"], rows[0]["treatment_version"]
    assert (weak, strong) == ("1", "2")
    assert [row["champion"] for row in rows[:-1]] == [weak] * (len(rows) - 1)  # decided on the last day only
    assert rows[-1]["champion"] == strong
    assert (cfg.workdir / "loop.png").stat().st_size > 10_000


def test_the_loop_reports_where_its_time_went(loop):
    cfg, result = loop
    seconds = result["seconds"]
    runs = [name for name in seconds if name.startswith(("behavior_etl-", "train_recommender-", "nightly_", "kpi_"))]
    # behavior_etl per history day, two trainings, then nightly_candidates, behavior_etl, kpi_report per loop day
    assert len(runs) == cfg.history_days + 2 + 3 * cfg.loop_days, runs
    log = (cfg.workdir / "loop.log").read_text(encoding="utf-8")
    assert "seconds per step:" in log and "per kind of step:" in log, log[-2000:]
    assert all(name in log for name in runs), log[-2000:]
