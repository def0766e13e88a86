"""MLflow experiment, model logging, registry versions, aliases and the promotion gate.

Aliases of the registered model ``attention-recommender``:

* ``challenger`` - the version the latest training run registered; it serves the treatment arm of an A/B
  experiment (ATTNREC_AB_TREATMENT_SHARE above 0, models/serving_plan.py);
* ``champion``   - the version candidate generation serves (to everyone, or to the control arm of an experiment).

ATTNREC_PROMOTION_RULE decides who moves ``champion``. ``online``: training only registers and aliases
``challenger`` (no offline comparison moves ``champion``; kpi_report does, on the experiment's online results),
except that the first version becomes ``champion`` too, since something must serve. ``offline`` (the default):
the gate below. A new version takes ``champion`` only when its validation
  NDCG@10 beats the champion's on the *same* validation holdout (the new run's: each user's second-to-last
  positive event) by more than ``settings.promotion_margin``. The test holdout (the last positive event) takes
  no part in any choice, so a run's ``test_*`` metrics stay an untouched estimate. A champion trained on
  features of a later day than the run's ``dt`` has seen that run's holdout targets: such a backfill is not
  compared and leaves ``champion`` alone unless ``ATTNREC_BACKFILL_PROMOTE`` is true. Every decision and its
  reason are recorded on the new version (tags and description).

Only "the model or alias does not exist" reads as "no champion": any other MLflow error (401/403, 5xx, a
timeout, a wrong URI) fails the caller with the server's message, so an outage never promotes a model.

Forcing or rolling back a promotion (moves ``champion`` to any existing version and records why), or choosing the
version an experiment's treatment arm gets::

    attnrec registry promote --version 3 --reason "roll back: v4 candidates look wrong"
    attnrec registry promote --alias challenger --version 5 --reason "test v5 online"
    attnrec registry show

or from Python: ``models.registry.promote(get_settings(), "3", reason="...", alias="champion")``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from attnrec.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from models.dataset import Holdout
    from models.recommender import Recommender

CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_ARTIFACT = "model"


def client(settings: Settings) -> "MlflowClient":
    """A client on the settings' tracking URI (also the registry), made the process default too."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def ensure_experiment(settings: Settings, name: str | None = None) -> str:
    """The id of experiment ``name`` (default ``settings.experiment_name``), created with
    ``settings.mlflow_artifact_root`` if missing."""
    name = name or settings.experiment_name
    c = client(settings)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise RuntimeError(
                f"MLflow experiment {name!r} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or set ATTNREC_EXPERIMENT"
            )
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=settings.mlflow_artifact_root)


# ---------------------------------------------------------------- logging the model -----------------------------


def signature():
    """Input: user sequences (features/sequences columns); output: ranked items; param k (default 10)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "user_id"),
            ColSpec(Array("string"), "item_ids"),
            ColSpec(Array("string"), "event_types"),
            ColSpec(Array("long"), "event_times_ms"),
            ColSpec(Array("long"), "dwell_ms", required=False),
            ColSpec(Array("float"), "attention", required=False),  # features/sequences: -1..1 per event
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "user_id"),
            ColSpec("long", "rank"),
            ColSpec("string", "item_id"),
            ColSpec("double", "score"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", "long", 10)]))


def input_example(holdout: list["Holdout"]) -> Any:
    """A small real input (the first users' histories) under made-up user ids (``example-user-1``, ...): the
    model store holds no raw id and no pseudonym (DESIGN.md "Privacy"); dwell_ms is left out when it has nulls."""
    import pandas as pd

    rows = [
        {
            "user_id": f"example-user-{n}",
            "item_ids": h.history.item_ids[-5:],
            "event_types": h.history.event_types[-5:],
            "event_times_ms": h.history.times_ms[-5:],
            "dwell_ms": h.history.dwell_ms[-5:],
        }
        for n, h in enumerate(holdout, start=1)
    ]
    frame = pd.DataFrame(rows)
    if any(d is None for r in rows for d in r["dwell_ms"]):
        frame = frame.drop(columns=["dwell_ms"])
    return frame


def log_recommender(rec: "Recommender", workdir: str, example: list["Holdout"]) -> str:
    """Log ``rec`` as an MLflow pyfunc in the active run and return the logged model's URI.

    Models from code: the pyfunc class is models/pyfunc.py (MLflow stores that source file, not a pickle), the
    artifact is the checkpoint alone, and the pip requirements are what loading it imports, pinned to
    requirements.lock."""
    import mlflow

    from attnrec.settings import PROJECT_ROOT
    from models import pyfunc

    path = os.path.join(workdir, pyfunc.CHECKPOINT_FILE)
    rec.save(path)
    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=pyfunc.__file__,
        artifacts={"checkpoint": path},
        signature=signature(),
        input_example=input_example(example) if example else None,
        pip_requirements=pyfunc.pip_requirements(PROJECT_ROOT / "requirements.lock"),
        metadata={"data_version": {k: str(v) for k, v in rec.data_version.items()}, "n_items": rec.vocab.n_items},
    )
    return info.model_uri


# ---------------------------------------------------------------- versions and aliases -------------------------


def register(settings: Settings, model_uri: str, run_id: str, tags: dict[str, str] | None = None) -> str:
    """Register ``model_uri`` as a new version of ``settings.model_name`` and point ``challenger`` at it."""
    import mlflow

    client(settings)
    mv = mlflow.register_model(model_uri, settings.model_name, tags={"run_id": run_id, **(tags or {})})
    client(settings).set_registered_model_alias(settings.model_name, CHALLENGER, mv.version)
    return str(mv.version)


#: Tag set on every version that existed when an erasure ran (value: the newest such erasure's request id): the
#: version learned from data that is gone; the retrain the erasure triggers replaces it (docs/privacy.md#erasure).
TRAINED_BEFORE_ERASURE = "trained_before_erasure"


def tag_trained_before_erasure(settings: Settings, request_id: str) -> list[str]:
    """Tag every registered version of the model ``trained_before_erasure=<request_id>``; returns the versions
    (none when no model is registered yet)."""
    c = client(settings)
    versions = c.search_model_versions(f"name='{settings.model_name}'")  # [] when no model is registered
    for mv in versions:
        c.set_model_version_tag(settings.model_name, mv.version, TRAINED_BEFORE_ERASURE, request_id)
    return sorted((str(mv.version) for mv in versions), key=int)


def is_missing(err: BaseException) -> bool:
    """Whether an MLflow error means "does not exist" (RESOURCE_DOES_NOT_EXIST: no such model or version).
    Anything else - 401/403, a 5xx, a timeout, a URI that is not an MLflow server - is not an absence."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    return isinstance(err, MlflowException) and err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def registry_error(settings: Settings, what: str, err: BaseException) -> RuntimeError:
    """A RuntimeError for a failed registry call: what was asked, where, the server's message and the fix."""
    return RuntimeError(
        f"MLflow registry at {settings.mlflow_tracking_uri} failed to {what}: {err}; nothing was promoted. "
        "Check the server, MLFLOW_TRACKING_URI and the credentials (MLFLOW_TRACKING_USERNAME / "
        "MLFLOW_TRACKING_PASSWORD), then re-run the task"
    )


def alias_version(settings: Settings, alias: str) -> str | None:
    """The version number ``alias`` points at, or None when the model or the alias does not exist.

    Any other registry error raises a RuntimeError with the server's message (see :func:`is_missing`). The
    aliases are read from the registered model: MLflow answers a missing alias with INVALID_PARAMETER_VALUE,
    which cannot be told from a real bad request, while a missing model is RESOURCE_DOES_NOT_EXIST."""
    from mlflow.exceptions import MlflowException

    try:
        model = client(settings).get_registered_model(settings.model_name)
    except MlflowException as err:
        if is_missing(err):
            return None
        raise registry_error(settings, f"read alias {alias!r} of model {settings.model_name!r}", err) from err
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def load_version(settings: Settings, version: str) -> "Recommender":
    """Rebuild the recommender of one registered version from its checkpoint alone: the model directory is
    downloaded and the checkpoint read with ``weights_only``; no code from the artifact store runs."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from models.recommender import Recommender

    client(settings)
    uri = f"models:/{settings.model_name}/{version}"
    with tempfile.TemporaryDirectory(prefix="attnrec-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except MlflowException as err:
            raise RuntimeError(
                f"cannot load {uri} from the MLflow registry at {settings.mlflow_tracking_uri}: {err.message}; "
                "list the versions with `attnrec registry show`"
            ) from None
        artifacts = Model.load(local).flavors["python_function"].get("artifacts", {})
        if "checkpoint" not in artifacts:
            raise RuntimeError(f"{uri} holds no 'checkpoint' artifact; it was not logged by attnrec's train stage")
        return Recommender.load(os.path.join(local, artifacts["checkpoint"]["path"]))


def require_champion(settings: Settings) -> str:
    """The version ``champion`` points at; RuntimeError saying what to run when there is none."""
    version = alias_version(settings, CHAMPION)
    if version is None:
        raise RuntimeError(
            f"no '{CHAMPION}' version of model '{settings.model_name}' in the MLflow registry at "
            f"{settings.mlflow_tracking_uri}; run the train_recommender DAG first"
        )
    return version


def load_champion(settings: Settings) -> tuple["Recommender", str]:
    """(recommender, version) of ``models:/attention-recommender@champion``; RuntimeError when there is none."""
    version = require_champion(settings)
    return load_version(settings, version), version


#: The holdout the gate compares on, recorded on every gated version (``promotion_holdout``).
GATE_HOLDOUT = "validation"


def decide(
    new_ndcg: float, champion_ndcg: float | None, margin: float, champion_version: str | None = None
) -> tuple[bool, str]:
    """The promotion rule, pure: promote when there is no champion or new > champion + margin (validation
    NDCG@10 of both on the same validation holdout)."""
    if champion_ndcg is None:
        return True, f"no champion yet; promoted with validation NDCG@10 {new_ndcg:.4f}"
    if new_ndcg > champion_ndcg + margin:
        return True, (
            f"validation NDCG@10 {new_ndcg:.4f} > champion v{champion_version} {champion_ndcg:.4f} + margin "
            f"{margin:.4f} on the same validation holdout"
        )
    return False, (
        f"validation NDCG@10 {new_ndcg:.4f} <= champion v{champion_version} {champion_ndcg:.4f} + margin "
        f"{margin:.4f} on the same validation holdout; champion kept"
    )


def backfill_reason(champion: str, champion_dt: str, dt: str, version: str, allowed: bool) -> str:
    """Why a run for ``dt`` does not compare with a champion trained on features of the later ``champion_dt``."""
    seen = (
        f"champion v{champion} was trained on features of {champion_dt}, later than this run's dt={dt}, so it "
        "has seen this run's holdout targets and the two cannot be compared"
    )
    if allowed:
        return f"backfill promoted without a comparison (ATTNREC_BACKFILL_PROMOTE=true): {seen}"
    return (
        f"backfill not compared, champion kept: {seen}. To serve this version anyway: "
        f"`attnrec registry promote --version {version} --reason ...`, or re-run with ATTNREC_BACKFILL_PROMOTE=true"
    )


def gate(settings: Settings, version: str, new_ndcg: float, valid: list["Holdout"], dt: str) -> tuple[bool, str]:
    """Decide whether ``version`` (trained on features of ``dt``, validation NDCG@10 ``new_ndcg`` on ``valid``)
    takes ``champion``, move the alias if so, and record the decision on the version (tags and description).
    Under ATTNREC_PROMOTION_RULE=online this is :func:`online_gate` instead.

    The champion is evaluated on the same validation holdout ``valid`` (never the test holdout, which stays an
    untouched estimate). When the champion's ``feature_dt`` is later than ``dt`` (a backfill) it has seen these
    targets: no comparison; the champion stays unless ``settings.backfill_promote``. A registry error other
    than "no champion" raises before anything is written."""
    from mlflow.exceptions import MlflowException

    from models.evaluate import evaluate_recommender

    if settings.promotion_rule == "online":
        return online_gate(settings, version, new_ndcg, dt)
    c = client(settings)
    champion = alias_version(settings, CHAMPION)
    champion_dt, champion_ndcg = "none", None
    if champion is not None:
        try:
            champion_dt = c.get_model_version(settings.model_name, champion).tags.get("feature_dt", "unknown")
        except MlflowException as err:  # the alias points at it: an error here is an outage, never an absence
            raise registry_error(settings, f"read champion v{champion} of {settings.model_name!r}", err) from err
    backfill = champion is not None and champion_dt != "unknown" and champion_dt > dt  # ISO dates sort as text
    if backfill:
        promoted = settings.backfill_promote
        decision, holdout = ("promoted" if promoted else "not_compared"), "none"
        reason = backfill_reason(champion, champion_dt, dt, version, promoted)
    else:
        if champion is not None:
            champion_ndcg = evaluate_recommender(load_version(settings, champion), valid)["ndcg_at_10"]
        promoted, reason = decide(new_ndcg, champion_ndcg, settings.promotion_margin, champion)
        decision, holdout = ("promoted" if promoted else "rejected"), GATE_HOLDOUT
    record_decision(settings, version, decision, reason, holdout, dt, champion, champion_dt, new_ndcg, champion_ndcg)
    if promoted:
        c.set_registered_model_alias(settings.model_name, CHAMPION, version)
    return promoted, reason


def record_decision(
    settings: Settings,
    version: str,
    decision: str,
    reason: str,
    holdout: str,
    dt: str,
    champion: str | None,
    champion_dt: str,
    new_ndcg: float,
    champion_ndcg: float | None,
) -> None:
    """The promotion tags and the description (``reason``) on ``version``, the same for every rule."""
    c = client(settings)
    tags = {
        "promotion_decision": decision,
        "promotion_reason": reason,
        "promotion_holdout": holdout,
        "holdout_dt": dt,
        "champion_before": champion or "none",
        "champion_feature_dt": champion_dt,
        "val_ndcg_at_10": f"{new_ndcg:.6f}",
        "champion_ndcg_at_10": "none" if champion_ndcg is None else f"{champion_ndcg:.6f}",
    }
    for k, v in tags.items():
        c.set_model_version_tag(settings.model_name, version, k, v)
    c.update_model_version(settings.model_name, version, description=reason)


def online_gate(settings: Settings, version: str, new_ndcg: float, dt: str) -> tuple[bool, str]:
    """ATTNREC_PROMOTION_RULE=online: ``version`` (already aliased ``challenger`` by :func:`register`) is left for
    an online experiment and ``champion`` stays, with no offline comparison; when there is no champion yet it
    becomes champion (something must serve). The decision is recorded as :func:`gate` records its own
    (``promotion_decision`` ``challenger`` or ``promoted``, ``promotion_holdout`` ``none``)."""
    champion = alias_version(settings, CHAMPION)
    if champion is None:
        promoted = True
        decision = "promoted"
        reason = (
            f"no champion yet; promoted without a comparison (ATTNREC_PROMOTION_RULE=online: something must serve), "
            f"validation NDCG@10 {new_ndcg:.4f}"
        )
    else:
        promoted, decision = False, CHALLENGER
        reason = (
            f"ATTNREC_PROMOTION_RULE=online: registered as '{CHALLENGER}' for an online experiment, not compared "
            f"offline; champion v{champion} kept until kpi_report promotes on online results (validation NDCG@10 "
            f"{new_ndcg:.4f})"
        )
    record_decision(settings, version, decision, reason, "none", dt, champion, "none", new_ndcg, None)
    if promoted:
        client(settings).set_registered_model_alias(settings.model_name, CHAMPION, version)
    return promoted, reason


def promote(settings: Settings, version: str, reason: str = "manual promotion", alias: str = CHAMPION) -> None:
    """Force ``alias`` (``champion``: a manual promotion or a roll-back; ``challenger``: the version an experiment's
    treatment arm gets) onto an existing ``version`` and record why on it."""
    from mlflow.exceptions import MlflowException

    if alias not in (CHAMPION, CHALLENGER):
        raise ValueError(f"alias {alias!r} is not one attnrec serves; use {CHAMPION!r} or {CHALLENGER!r}")
    c = client(settings)
    try:
        c.get_model_version(settings.model_name, str(version))
    except MlflowException as err:
        if not is_missing(err):
            raise registry_error(settings, f"read version {version!r} of {settings.model_name!r}", err) from err
        raise ValueError(
            f"model '{settings.model_name}' has no version {version!r} at {settings.mlflow_tracking_uri}; "
            "list them with `attnrec registry show`"
        ) from None
    previous = alias_version(settings, alias) or "none"
    c.set_registered_model_alias(settings.model_name, alias, str(version))
    prefix = "promotion" if alias == CHAMPION else CHALLENGER  # challenger_decision: the training decision stays
    c.set_model_version_tag(settings.model_name, str(version), f"{prefix}_decision", "forced")
    c.set_model_version_tag(settings.model_name, str(version), f"{prefix}_reason", f"{reason} ({alias} was {previous})")


def describe(settings: Settings) -> dict[str, Any]:
    """Aliases and every version with its decision tags, for the CLI."""
    c = client(settings)
    versions = c.search_model_versions(f"name='{settings.model_name}'")
    return {
        "model": settings.model_name,
        "aliases": {a: alias_version(settings, a) for a in (CHAMPION, CHALLENGER)},
        "versions": [
            {"version": str(v.version), "run_id": v.run_id, "tags": dict(v.tags)}
            for v in sorted(versions, key=lambda v: int(v.version))
        ],
    }
