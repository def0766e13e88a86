"""attnrec.experiments: sticky, salted assignment and the day's treatment share (fixed or from the bandit)."""

from __future__ import annotations

import pytest

from attnrec import experiments
from attnrec.settings import get_settings

USERS = [f"u{i}" for i in range(20_000)]


def test_assignment_is_sticky_holds_the_share_and_is_independent_between_experiments():
    first = experiments.arms("exp-a", USERS, 0.3)
    assert first == experiments.arms("exp-a", USERS, 0.3)  # the same every day
    share = first.count("treatment") / len(USERS)
    assert abs(share - 0.3) < 4 * (0.3 * 0.7 / len(USERS)) ** 0.5  # within sampling error
    other = experiments.arms("exp-b", USERS, 0.3)
    both = sum(a == b == "treatment" for a, b in zip(first, other, strict=True)) / len(USERS)
    assert abs(both - 0.09) < 4 * (0.09 * 0.91 / len(USERS)) ** 0.5  # independent: 0.3 * 0.3
    assert set(experiments.arms("exp-a", USERS, 0.0)) == {"control"}


def test_a_growing_share_only_moves_users_from_control_to_treatment():
    small, large = experiments.arms("exp-a", USERS, 0.2), experiments.arms("exp-a", USERS, 0.6)
    moved = [(a, b) for a, b in zip(small, large, strict=True) if a != b]
    assert moved and set(moved) == {("control", "treatment")}


def test_the_day_share_is_the_newest_allocation_before_the_day(tmp_path):
    root = str(tmp_path)
    s = get_settings(data_root=root, ab_treatment_share=0.5, ab_experiment_id="e1", ab_allocation="thompson")
    assert experiments.allocation(root, "2026-01-02", s)["treatment_share"] == 0.5  # none written yet
    experiments.write_allocation(root, "2026-01-01", {"experiment_id": "e1", "treatment_share": 0.7})
    experiments.write_allocation(root, "2026-01-01", {"experiment_id": "e1", "treatment_share": 0.8})  # re-run
    experiments.write_allocation(root, "2026-01-03", {"experiment_id": "other", "treatment_share": 0.1})
    assert experiments.allocation(root, "2026-01-01", s)["treatment_share"] == 0.5  # D's own report comes after D
    assert experiments.allocation(root, "2026-01-02", s)["treatment_share"] == 0.8
    assert experiments.allocation(root, "2026-01-05", s)["treatment_share"] == 0.8  # another experiment's is skipped
    fixed = get_settings(data_root=root, ab_treatment_share=0.5, ab_experiment_id="e1")
    assert experiments.allocation(root, "2026-01-05", fixed)["treatment_share"] == 0.5
    with pytest.raises(ValueError, match="outside 0..1"):
        experiments.write_allocation(root, "2026-01-04", {"experiment_id": "e1", "treatment_share": 1.2})
