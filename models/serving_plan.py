"""The serving plan of one candidates day: which model version serves each arm, of which experiment, at what share.

A plan is a plain dict (it travels through Airflow's XCom and lives in the partition's ``_manifest.json``)::

    {"control": "3", "treatment": "4", "experiment_id": "ranker-2026-12", "treatment_share": 0.25}

``control`` is the version ``champion`` points at; ``treatment`` the version ``challenger`` points at, or None when
no experiment runs (``treatment_share`` 0, ``experiment_id`` empty). The share is the day's
(:func:`attnrec.experiments.allocation`): ATTNREC_AB_TREATMENT_SHARE, or under ATTNREC_AB_ALLOCATION=thompson the
newest allocation at or before the day, i.e. the one kpi_report wrote for the last measured day (before ``dt``).
Which arm a user is in is :func:`attnrec.experiments.arm` of (experiment id, user id, share).

:func:`resolve_plan` runs once per candidates run, so the whole run serves one plan even when an alias moves
meanwhile. A re-run or backfill of day D re-serves the plan D's published manifest records (D's candidates are
reproducible) unless ``re_resolve``.
"""

from __future__ import annotations

import logging
from typing import Any

from attnrec import experiments, lake
from attnrec.contracts import ARMS, CONTROL, TREATMENT, check_dt
from attnrec.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: The keys of a serving plan.
PLAN_KEYS: tuple[str, ...] = (CONTROL, TREATMENT, "experiment_id", "treatment_share")


def check_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """``plan`` with plain types (versions as strings, the share as a float); ValueError naming what is wrong.

    A consistent plan has a control version; a share in 0..1; with a share above 0 a treatment version and an
    experiment id, with share 0 neither."""
    if not isinstance(plan, dict) or [k for k in PLAN_KEYS if k not in plan]:
        raise ValueError(
            f"serving plan {plan!r} lacks {[k for k in PLAN_KEYS if k not in (plan or {})]}; it needs the keys "
            f"{list(PLAN_KEYS)}: build it with models.serving_plan.resolve_plan"
        )
    share = float(plan["treatment_share"])
    control, treatment, experiment_id = plan[CONTROL], plan[TREATMENT], plan["experiment_id"] or ""
    if not control:
        raise ValueError(f"serving plan {plan!r} has no control version; the champion's version serves control")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"serving plan {plan!r}: treatment_share {share} is outside 0..1")
    if share > 0 and (not treatment or not experiment_id):
        raise ValueError(
            f"serving plan {plan!r}: treatment_share {share} needs a treatment version and an experiment_id"
        )
    if share == 0 and (treatment or experiment_id):
        raise ValueError(
            f"serving plan {plan!r}: with treatment_share 0 no experiment runs, so treatment must be None and "
            "experiment_id empty"
        )
    return {
        CONTROL: str(control),
        TREATMENT: str(treatment) if share > 0 else None,
        "experiment_id": str(experiment_id),
        "treatment_share": share,
    }


def no_experiment(control: str) -> dict[str, Any]:
    """The plan that serves everyone ``control``."""
    return check_plan({CONTROL: control, TREATMENT: None, "experiment_id": "", "treatment_share": 0.0})


def manifest_fields(plan: dict[str, Any]) -> dict[str, Any]:
    """What a candidates ``_manifest.json`` records of the plan: ``model_version`` (the control version, as
    before experiments), ``model_versions`` (the version of each arm served), ``experiment_id``, ``treatment_share``."""
    return {
        "model_version": plan[CONTROL],
        "model_versions": {a: plan[a] for a in ARMS if plan[a] is not None},
        "experiment_id": plan["experiment_id"],
        "treatment_share": plan["treatment_share"],
    }


def plan_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The plan a candidates manifest records; one written before experiments (``model_version`` alone) served
    that version to everyone."""
    versions = manifest.get("model_versions") or {CONTROL: manifest["model_version"]}
    return check_plan(
        {
            CONTROL: versions[CONTROL],
            TREATMENT: versions.get(TREATMENT),
            "experiment_id": manifest.get("experiment_id", ""),
            "treatment_share": manifest.get("treatment_share", 0.0),
        }
    )


def recorded_plan(root: str, dt: str) -> dict[str, Any] | None:
    """The plan the published candidates of ``dt`` record; None when there are none (or no manifest)."""
    path = lake.partition(root, lake.CANDIDATES, dt)
    uri = lake.join(path, lake.CANDIDATES_MANIFEST)
    if not lake.is_complete(path) or not lake.exists(uri):
        return None
    return plan_of(lake.read_json(uri))


def describe_plan(plan: dict[str, Any]) -> str:
    """``model version 3``, or ``model version 3 to control and 4 to treatment (experiment x, share 0.25)``."""
    text = f"model version {plan[CONTROL]}"
    if plan[TREATMENT] is None:
        return text
    return (
        f"{text} to {CONTROL} and {plan[TREATMENT]} to {TREATMENT} (experiment {plan['experiment_id']}, treatment "
        f"share {plan['treatment_share']:g})"
    )


def missing_challenger(settings: Settings, day: dict[str, Any]) -> RuntimeError:
    """The error of a day with a treatment share and no ``challenger`` version: what is missing and the fixes."""
    source = "ATTNREC_AB_TREATMENT_SHARE" if day["source"] == "settings" else f"the allocation {day['source']}"
    return RuntimeError(
        f"experiment {day['experiment_id']!r} has treatment share {day['treatment_share']:g} (from {source}) but "
        f"model '{settings.model_name}' has no 'challenger' version in the MLflow registry at "
        f"{settings.mlflow_tracking_uri} to serve the treatment arm. Train one with ATTNREC_PROMOTION_RULE=online "
        "(train_recommender then aliases it 'challenger' and leaves 'champion'), or point the alias at an existing "
        "version: `attnrec registry promote --alias challenger --version N`; or set ATTNREC_AB_TREATMENT_SHARE=0 "
        "to serve everyone the champion"
    )


def resolve_plan(dt: str, settings: Settings | None = None, re_resolve: bool = False) -> tuple[dict[str, Any], str]:
    """(plan, why): the plan that serves day ``dt``. The plan recorded in ``dt``'s published candidates when there
    is one, unless ``re_resolve``; otherwise ``champion`` for control and, when the day's treatment share is above
    0, ``challenger`` for treatment. RuntimeError when an alias the plan needs does not exist; a challenger that is
    the champion is allowed (both arms get the same lists) and logged as a warning."""
    from models.registry import CHALLENGER, alias_version, require_champion

    check_dt(dt)
    settings = settings or get_settings()
    recorded = None if re_resolve else recorded_plan(settings.data_root, dt)
    if recorded is not None:
        return recorded, (
            f"re-serving the plan recorded in the published candidates of dt={dt} (trigger with re_resolve=true "
            "to serve the current champion, challenger and treatment share)"
        )
    control = require_champion(settings)
    why = f"'champion' points at version {control}" + (" (re_resolve=true)" if re_resolve else "")
    day = experiments.allocation(settings.data_root, dt, settings)
    if day["treatment_share"] <= 0:
        return no_experiment(control), why
    treatment = alias_version(settings, CHALLENGER)
    if treatment is None:
        raise missing_challenger(settings, day)
    if treatment == control:
        log.warning(
            "experiment %r: 'challenger' and 'champion' both point at version %s, so both arms get the same lists "
            "(an A/A test); train a new version with ATTNREC_PROMOTION_RULE=online for a real experiment",
            day["experiment_id"],
            control,
        )
    plan = check_plan(
        {
            CONTROL: control,
            TREATMENT: treatment,
            "experiment_id": day["experiment_id"],
            "treatment_share": day["treatment_share"],
        }
    )
    source = "ATTNREC_AB_TREATMENT_SHARE" if day["source"] == "settings" else day["source"]
    return plan, (
        f"{why}, 'challenger' at version {treatment}; experiment {plan['experiment_id']!r}, treatment share "
        f"{plan['treatment_share']:g} from {source}"
    )
