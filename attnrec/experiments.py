"""A/B experiments: which arm serves each user, and the treatment share of each day.

Assignment is a pure function of (experiment id, user id): a user's bucket is a uniform number in [0, 1) from
SHA-256 of ``"<experiment id>\\x1f<user id>"``, and the user is in the treatment arm when their bucket is below the
day's treatment share. So it is sticky across days (the same bucket every day), independent between experiments
(the id salts the hash) and the treatment arm holds the share of users within sampling error. When a bandit moves
the share, a user changes arm only when the share crosses their bucket.

The share of day D is ATTNREC_AB_TREATMENT_SHARE under ``fixed`` allocation; under ``thompson`` it is the newest
``experiments/dt=X/allocation.json`` of this experiment with X < D (kpi_report for day X, which measures
the lists served on X, decides the share from X+1 on), or the setting
before the first one exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from attnrec import lake
from attnrec.contracts import CONTROL, TREATMENT, check_dt
from attnrec.settings import Settings

_SCALE = float(1 << 64)


def bucket(experiment_id: str, user_id: str) -> float:
    """The user's place in [0, 1) for this experiment (the first 8 bytes of the salted SHA-256)."""
    digest = hashlib.sha256(f"{experiment_id}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def arm(experiment_id: str, user_id: str, treatment_share: float) -> str:
    """``treatment`` when the user's bucket is below the share, else ``control`` (always control at share 0)."""
    return TREATMENT if treatment_share > 0 and bucket(experiment_id, user_id) < treatment_share else CONTROL


def arms(experiment_id: str, user_ids: Iterable[str], treatment_share: float) -> list[str]:
    """:func:`arm` for many users."""
    if treatment_share <= 0:
        return [CONTROL for _ in user_ids]
    return [arm(experiment_id, u, treatment_share) for u in user_ids]


def allocation_uri(root: str, dt: str) -> str:
    return lake.join(lake.partition(root, lake.EXPERIMENTS, dt), lake.ALLOCATION_FILE)


def write_allocation(root: str, dt: str, payload: dict[str, Any]) -> str:
    """Record the treatment share that applies from the day after ``dt`` (kpi_report for ``dt``). ``payload``
    must hold ``experiment_id`` and ``treatment_share``; the rest (posterior, counts) is kept as given."""
    share = float(payload["treatment_share"])
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"treatment_share {share} is outside 0..1")
    if not payload.get("experiment_id"):
        raise ValueError("an allocation needs the experiment_id it belongs to")
    staged = lake.staging(root, lake.EXPERIMENTS, check_dt(dt))
    lake.remove_dir(staged)
    lake.write_json(lake.join(staged, lake.ALLOCATION_FILE), {**payload, "dt": dt, "treatment_share": share})
    lake.write_json(lake.join(staged, lake.SUCCESS_MARKER), {})
    lake.publish(root, lake.EXPERIMENTS, dt)  # one rename: a re-run for dt replaces the file whole
    return allocation_uri(root, dt)


def allocation(root: str, dt: str, settings: Settings) -> dict[str, Any]:
    """The day's experiment: ``{"experiment_id", "treatment_share", "source"}``.

    ``fixed`` (or no experiment): the settings. ``thompson``: the newest allocation of this experiment written for
    a day before ``dt`` (kpi_report for day X measures X and sets the share from X+1 on), else the settings.
    """
    check_dt(dt)
    experiment_id, share = settings.ab_experiment_id, settings.ab_treatment_share
    base = {"experiment_id": experiment_id if share > 0 else "", "treatment_share": share, "source": "settings"}
    if share <= 0 or settings.ab_allocation != "thompson":
        return base
    for day in reversed(lake.list_partitions(root, lake.EXPERIMENTS)):
        path = allocation_uri(root, day)
        if day >= dt or not lake.exists(path):
            continue
        recorded = lake.read_json(path)
        if recorded.get("experiment_id") == experiment_id:
            share = float(recorded["treatment_share"])
            return {"experiment_id": experiment_id, "treatment_share": share, "source": path}
    return base
