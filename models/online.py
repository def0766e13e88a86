"""What kpi_report does with a published kpis/dt=D: MLflow, the bandit allocation, the online promotion.

* :func:`log_day`: one MLflow run per day D in the experiment ``<ATTNREC_EXPERIMENT>-online`` (a re-run of D
  replaces that day's run), with every figure per arm as metrics, the model versions as tags, the rows as
  ``kpis.json`` and a plot of the daily hit rate at 10 per arm (95% Wilson bands) over the experiment's days so far;
  the day's figures also go on each served model version as ``online_*`` tags (unless a later day's are there).
* :func:`allocate`: under ``ATTNREC_AB_ALLOCATION=thompson``, the next treatment share = P(treatment's hit rate >
  control's) under Beta(1 + hits, 1 + active users - hits) per arm, hits and active users summed over the
  experiment's kpis days up to D (exact, no sampling), clipped to [ATTNREC_AB_MIN_SHARE, 1 - that], written to
  experiments/dt=D/allocation.json.
* :func:`promote_online`: under ``ATTNREC_PROMOTION_RULE=online``, ``champion`` moves to the treatment's version
  when D's one-sided p-value of the hit-rate lift is below ATTNREC_AB_ALPHA and each arm had at least
  ATTNREC_AB_MIN_USERS active users; the decision, its reason and the figures are recorded on the version, as the
  offline gate does. A registry error other than "does not exist" fails the call before anything is moved.
"""

from __future__ import annotations

import datetime as dt_
import logging
import math
from typing import Any

from attnrec import experiments, lake
from attnrec.contracts import CONTROL, TREATMENT, check_dt
from attnrec.settings import Settings

log = logging.getLogger(__name__)

#: The kpis columns logged as metrics and as ``online_*`` version tags (the counts behind the rates included).
FIGURES = (
    "users",
    "active_users",
    "impressions",
    "clicks",
    "ctr",
    "hit_rate_at_10",
    "hit_rate_at_k",
    "conversion",
    "hit_rate_at_10_ci_low",
    "hit_rate_at_10_ci_high",
    "lift_hit_rate_at_10",
    "p_value",
    "coverage",
    "novelty",
    "intra_list_diversity",
)
DT_TAG = "kpi_dt"


def online_experiment(settings: Settings) -> str:
    return f"{settings.experiment_name}-online"


def _plain(value: Any) -> Any:
    """numpy scalars and NaN (pandas' null) as plain Python values / None."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def read_kpis(root: str, dt: str) -> list[dict[str, Any]]:
    """The rows of the published kpis/dt=``dt`` (FileNotFoundError naming the path when it is not published)."""
    import pyarrow.parquet as pq

    path = lake.partition(root, lake.KPIS, check_dt(dt))
    if not lake.is_complete(path):
        raise FileNotFoundError(f"no published kpis at {path}; run kpi_report (or `attnrec kpis --dt {dt}`) first")
    filesystem, local = lake.filesystem_for(path)
    table = pq.read_table(local, filesystem=filesystem)
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


def history(root: str, dt: str, experiment_id: str) -> list[dict[str, Any]]:
    """Every published kpis row of ``experiment_id`` for the days up to ``dt``, each with its ``dt``, oldest first."""
    rows = []
    for day in lake.list_partitions(root, lake.KPIS):
        if day <= dt:
            rows += [{**r, "dt": day} for r in read_kpis(root, day) if r["experiment_id"] == experiment_id]
    return rows


# ------------------------------------------------------------------------------------------------ MLflow


def _metric_key(row: dict[str, Any], name: str, rows_per_arm: dict[str, int]) -> str:
    arm = row["arm"]
    return f"{arm}_{name}" if rows_per_arm[arm] == 1 else f"{arm}_v{row['model_version']}_{name}"


def plot(rows: list[dict[str, Any]], title: str):
    """Daily hit rate at 10 per arm with its 95% Wilson interval (a matplotlib Figure)."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))  # not through pyplot: nothing keeps it alive once logged
    ax = fig.subplots()
    for arm in (CONTROL, TREATMENT):
        points = sorted((r for r in rows if r["arm"] == arm and r["hit_rate_at_10"] is not None), key=lambda r: r["dt"])
        if not points:
            continue
        days = [dt_.date.fromisoformat(r["dt"]) for r in points]
        ax.plot(days, [r["hit_rate_at_10"] for r in points], marker="o", label=arm)
        ax.fill_between(
            days, [r["hit_rate_at_10_ci_low"] for r in points], [r["hit_rate_at_10_ci_high"] for r in points], alpha=0.2
        )
    span = len({r["dt"] for r in rows})  # days shown: at most about ten date ticks
    ax.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, span // 10)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.set_title(title)
    ax.set_xlabel("day the lists were served")
    ax.set_ylabel("hit rate at 10 (95% Wilson interval)")
    ax.tick_params(axis="x", labelrotation=45)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    return fig


def tag_versions(settings: Settings, dt: str, rows: list[dict[str, Any]]) -> list[str]:
    """The day's figures as ``online_*`` tags on each served model version (a version whose tags come from a later
    day keeps them); returns the versions tagged. A version missing from the registry is skipped with a warning."""
    from mlflow.exceptions import MlflowException

    from models.registry import client, is_missing, registry_error

    c = client(settings)
    tagged = []
    for row in rows:
        version = str(row["model_version"])
        try:
            current = c.get_model_version(settings.model_name, version).tags.get(f"online_{DT_TAG}", "")
        except MlflowException as err:
            if is_missing(err):
                log.warning("kpis dt=%s: model version %s is not in the registry; not tagged", dt, version)
                continue
            raise registry_error(settings, f"read version {version} of {settings.model_name!r}", err) from err
        if current > dt:
            continue
        tags = {
            f"online_{DT_TAG}": dt,
            "online_arm": row["arm"],
            "online_experiment_id": row["experiment_id"],
            **{f"online_{k}": "none" if row[k] is None else str(row[k]) for k in FIGURES},
        }
        for key, value in tags.items():
            c.set_model_version_tag(settings.model_name, version, key, value)
        tagged.append(version)
    return tagged


def log_day(settings: Settings, dt: str) -> dict[str, Any]:
    """Log kpis/dt=``dt`` to MLflow (see the module doc); returns ``{"run_id", "experiment", "versions_tagged"}``."""
    import mlflow

    from models.registry import client, ensure_experiment

    rows = read_kpis(settings.data_root, dt)
    name = online_experiment(settings)
    experiment_id = ensure_experiment(settings, name)
    c = client(settings)
    for old in c.search_runs([experiment_id], filter_string=f"tags.{DT_TAG} = '{dt}'"):
        c.delete_run(old.info.run_id)  # a re-run of D replaces D's run
    rows_per_arm = {arm: sum(r["arm"] == arm for r in rows) for arm in (CONTROL, TREATMENT)}
    versions = {
        arm: ",".join(sorted({str(r["model_version"]) for r in rows if r["arm"] == arm})) for arm in rows_per_arm
    }
    experiment = next((r["experiment_id"] for r in rows if r["experiment_id"]), "")
    manifest_uri = lake.join(lake.partition(settings.data_root, lake.KPIS, dt), "_manifest.json")
    manifest = lake.read_json(manifest_uri) if lake.exists(manifest_uri) else {}
    tags = {
        DT_TAG: dt,
        "experiment_id": experiment,
        "model_version_control": versions[CONTROL] or "none",
        "model_version_treatment": versions[TREATMENT] or "none",
        "outcome_days": ",".join(manifest.get("outcome_days") or []),
    }
    metrics = {_metric_key(r, k, rows_per_arm): float(r[k]) for r in rows for k in FIGURES if r[k] is not None}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"kpis-{dt}") as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"dt": dt, "rows": rows}, "kpis.json")
        days = history(settings.data_root, dt, experiment)
        title = f"hit rate at 10 per arm, experiment {experiment or '(none)'}, up to {dt}"
        mlflow.log_figure(plot(days, title), "plots/hit_rate_at_10.png")
    tagged = tag_versions(settings, dt, rows)
    return {"run_id": run.info.run_id, "experiment": name, "versions_tagged": tagged}


# ------------------------------------------------------------------------------------------ allocation


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def prob_beats(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X > Y) for independent X ~ Beta(a1, b1), Y ~ Beta(a2, b2) with integer parameters, exactly (Evan Miller's
    closed form, summed over the smaller of a1 and a2)."""
    if a2 < a1:
        return 1.0 - prob_beats(a2, b2, a1, b1)
    total = 0.0
    for i in range(a1):
        total += math.exp(_log_beta(a2 + i, b1 + b2) - math.log(b1 + i) - _log_beta(1 + i, b1) - _log_beta(a2, b2))
    return min(1.0, max(0.0, total))


def thompson_share(
    hits: dict[str, int], active: dict[str, int], min_share: float
) -> tuple[float, float, dict[str, dict[str, int]]]:
    """(clipped share, P(treatment beats control), posteriors) from the hits at 10 and active users per arm."""
    posterior = {
        arm: {"alpha": 1 + hits.get(arm, 0), "beta": 1 + active.get(arm, 0) - hits.get(arm, 0)}
        for arm in (
            CONTROL,
            TREATMENT,
        )
    }
    t, c = posterior[TREATMENT], posterior[CONTROL]
    p = prob_beats(t["alpha"], t["beta"], c["alpha"], c["beta"])
    return min(1.0 - min_share, max(min_share, p)), p, posterior


def hits_at_10(row: dict[str, Any]) -> int:
    """Active users of a kpis row with a hit in their top-10 (hit_rate_at_10 x active_users, a whole number)."""
    rate = row["hit_rate_at_10"]
    return 0 if rate is None else round(rate * int(row["active_users"]))


def allocate(settings: Settings, dt: str) -> dict[str, Any] | None:
    """Write the next treatment share of ``settings.ab_experiment_id`` to experiments/dt=``dt`` (thompson only);
    returns the payload, or None when allocation is fixed or no experiment runs."""
    if settings.ab_allocation != "thompson" or not settings.ab_experiment_id:
        log.info(
            "kpis dt=%s: allocation %s, experiment %r: no allocation written",
            dt,
            settings.ab_allocation,
            settings.ab_experiment_id,
        )
        return None
    rows = history(settings.data_root, dt, settings.ab_experiment_id)
    hits = {arm: sum(hits_at_10(r) for r in rows if r["arm"] == arm) for arm in (CONTROL, TREATMENT)}
    active = {arm: sum(int(r["active_users"]) for r in rows if r["arm"] == arm) for arm in (CONTROL, TREATMENT)}
    share, p, posterior = thompson_share(hits, active, settings.ab_min_share)
    payload = {
        "experiment_id": settings.ab_experiment_id,
        "treatment_share": share,
        "p_treatment_better": p,
        "rule": "thompson",
        "min_share": settings.ab_min_share,
        "posterior": posterior,
        "hits_at_10": hits,
        "active_users": active,
        "kpi_days": sorted({r["dt"] for r in rows}),
    }
    payload["path"] = experiments.write_allocation(settings.data_root, dt, payload)
    return payload


# ---------------------------------------------------------------------------------------------- promotion


def decide_online(
    treatment: dict[str, Any] | None, control_active: int, alpha: float, min_users: int
) -> tuple[bool, str, str]:
    """(promote, decision, reason) from the day's treatment row and the control arm's active users, pure."""
    if treatment is None:
        return False, "no_treatment", "no treatment arm was served that day; champion kept"
    n_t = int(treatment["active_users"])
    lift, p = treatment["lift_hit_rate_at_10"], treatment["p_value"]
    if min(n_t, control_active) < min_users:
        return (
            False,
            "too_few_users",
            (
                f"active users treatment {n_t}, control {control_active}: each arm needs at least {min_users} "
                "(ATTNREC_AB_MIN_USERS) before the test decides; champion kept"
            ),
        )
    figures = f"hit-rate lift {'none' if lift is None else f'{lift:+.4f}'}, one-sided p-value " + (
        "none" if p is None else f"{p:.4g}"
    )
    if p is not None and p < alpha:
        return (
            True,
            "promoted",
            f"{figures} < alpha {alpha} (ATTNREC_AB_ALPHA) with {n_t} / {control_active} active users",
        )
    return False, "rejected", f"{figures} not below alpha {alpha} (ATTNREC_AB_ALPHA); champion kept"


def promote_online(settings: Settings, dt: str) -> dict[str, Any] | None:
    """The online promotion for day ``dt`` (see the module doc); None unless ATTNREC_PROMOTION_RULE=online."""
    from mlflow.exceptions import MlflowException

    from models.registry import CHAMPION, alias_version, client, is_missing, registry_error

    if settings.promotion_rule != "online":
        log.info("kpis dt=%s: promotion rule %s: kpi_report does not move champion", dt, settings.promotion_rule)
        return None
    rows = [r for r in read_kpis(settings.data_root, dt) if r["experiment_id"]]
    treatment = next((r for r in rows if r["arm"] == TREATMENT), None)
    control_active = sum(int(r["active_users"]) for r in rows if r["arm"] == CONTROL)
    promote, decision, reason = decide_online(treatment, control_active, settings.ab_alpha, settings.ab_min_users)
    result = {"dt": dt, "decision": decision, "reason": reason, "promoted": False}
    if treatment is None:
        return result
    version = str(treatment["model_version"])
    c = client(settings)
    try:
        c.get_model_version(settings.model_name, version)
    except MlflowException as err:
        if not is_missing(err):
            raise registry_error(settings, f"read version {version} of {settings.model_name!r}", err) from err
        raise ValueError(
            f"kpis dt={dt}: the treatment's model version {version!r} is not in the registry at "
            f"{settings.mlflow_tracking_uri}; list the versions with `attnrec registry show`"
        ) from None
    champion = alias_version(settings, CHAMPION)  # raises on any registry error but absence
    if champion == version:
        return {**result, "decision": "already_champion", "reason": f"v{version} is already champion"}
    tags = {
        "promotion_rule": "online",
        "promotion_decision": decision,
        "promotion_reason": reason,
        "online_decision_dt": dt,
        "champion_before": champion or "none",
        "online_p_value": "none" if treatment["p_value"] is None else str(treatment["p_value"]),
        "online_lift_hit_rate_at_10": "none"
        if treatment["lift_hit_rate_at_10"] is None
        else str(treatment["lift_hit_rate_at_10"]),
        "online_active_users_treatment": str(treatment["active_users"]),
        "online_active_users_control": str(control_active),
    }
    for key, value in tags.items():
        c.set_model_version_tag(settings.model_name, version, key, value)
    c.update_model_version(settings.model_name, version, description=f"online, kpis dt={dt}: {reason}")
    if promote:
        c.set_registered_model_alias(settings.model_name, CHAMPION, version)
    return {**result, "promoted": promote, "version": version, "champion_before": champion}


def report(settings: Settings, dt: str) -> dict[str, Any]:
    """Everything kpi_report does after publishing kpis/dt=``dt``: MLflow, allocation, promotion."""
    return {
        "mlflow": log_day(settings, dt),
        "allocation": allocate(settings, dt),
        "promotion": promote_online(settings, dt),
    }
