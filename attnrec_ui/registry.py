"""The MLflow side of the view: the registry's aliases now, and for each version served on a day its run, with links
to the MLflow UI (the run page and the model version's registry page).

The links are built from ``ATTNREC_MLFLOW_UI_URL`` (:attr:`attnrec.settings.Settings.mlflow_ui`), since the browser
may reach MLflow at another address than the api-server does. An MLflow error never fails the page: the links to the
registry pages are still given and ``error`` says what MLflow answered.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import quote

from attnrec.settings import MODEL_NAME, Settings

ALIASES = ("champion", "challenger")


@functools.lru_cache(maxsize=4)
def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@functools.lru_cache(maxsize=256)
def _run_of(tracking_uri: str, version: str) -> tuple[str, str]:
    """(run id, experiment id) of a model version: both never change, so they are cached."""
    client = _client(tracking_uri)
    run_id = client.get_model_version(MODEL_NAME, version).run_id
    return run_id, client.get_run(run_id).info.experiment_id


def registry_url(settings: Settings, version: str) -> str:
    return f"{settings.mlflow_ui}/#/models/{quote(MODEL_NAME)}/versions/{quote(str(version))}"


def run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    return f"{settings.mlflow_ui}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"


def _missing_store(tracking_uri: str) -> str | None:
    """A SQLite store that does not exist yet is reported, not created by a page view."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.exists():
            return f"no MLflow store at {path} (MLFLOW_TRACKING_URI); train a model first"
    return None


def versions(settings: Settings, served: dict[str, str]) -> dict[str, Any]:
    """The aliases now and, per arm served (``{"control": "3", "treatment": "4"}``), the version's run and links."""
    uri = settings.mlflow_tracking_uri
    out: dict[str, Any] = {
        "model_name": MODEL_NAME,
        "aliases": {},
        "served": [
            {"arm": arm, "version": v, "registry_url": registry_url(settings, v), "run_id": None, "run_url": None}
            for arm, v in sorted(served.items())
        ],
        "error": _missing_store(uri),
    }
    if out["error"]:
        return out
    try:
        model = _client(uri).get_registered_model(MODEL_NAME)
        out["aliases"] = {alias: _str(model.aliases.get(alias)) for alias in ALIASES}
        for entry in out["served"]:
            run_id, experiment_id = _run_of(uri, entry["version"])
            entry["run_id"], entry["run_url"] = run_id, run_url(settings, experiment_id, run_id)
    except Exception as err:  # noqa: BLE001 - any MLflow failure is shown on the page, never a stack trace
        out["error"] = f"MLflow at {uri} answered: {type(err).__name__}: {str(err)[:300]}"
    return out


def _str(version: object) -> str | None:
    return None if version is None else str(version)
