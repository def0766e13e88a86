"""The MLflow pyfunc of the recommender: ``predict`` takes user sequences (the features/sequences columns)
and returns their top-k unseen items.

Logged as MLflow *models from code* (``python_model=`` this file's path, see :func:`models.registry.log_recommender`):
the artifact holds this source file, the self-describing checkpoint (models.recommender) and the pinned pip
requirements, never a pickle, so loading a registry version runs no code deserialised from the artifact store
and the checkpoint is read with ``weights_only``. The ``set_model`` call at the bottom is what MLflow looks for
when it runs this file to log or load the model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.encoding import Events
from models.recommender import Recommender, recommend

CHECKPOINT_FILE = "recommender.pt"
#: Columns the pyfunc's ``predict`` reads (a subset of features/sequences).
INPUT_COLUMNS = ("user_id", "item_ids", "event_types", "event_times_ms", "dwell_ms", "attention")
#: Input columns a request may leave out: the model reads them as unknown.
OPTIONAL_COLUMNS = ("dwell_ms", "attention")
#: What loading and calling the pyfunc imports; pinned to requirements.lock in the logged model.
RUNTIME_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pyarrow")


def pip_requirements(lock: Path) -> list[str]:
    """``name==version`` of each of :data:`RUNTIME_PACKAGES` as ``lock`` (requirements.lock) pins it."""
    if not lock.is_file():
        raise ValueError(f"{lock} not found: the pyfunc's pip requirements are pinned from the checkout's lock file")
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+).*", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(3)
    missing = [p for p in RUNTIME_PACKAGES if p not in pins]
    if missing:
        raise ValueError(f"{lock} pins no version of {missing}; add them (pip freeze) so the logged model is pinned")
    return [f"{p}=={pins[p]}" for p in RUNTIME_PACKAGES]


def predict_frame(rec: Recommender, frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Top-``k`` unseen items for each row of a features/sequences-like pandas DataFrame."""
    missing = [c for c in INPUT_COLUMNS if c not in OPTIONAL_COLUMNS and c not in frame.columns]
    if missing:
        raise ValueError(
            f"model input lacks columns {missing}; pass rows shaped like features/sequences {INPUT_COLUMNS}"
        )
    users = [Events.from_row(r) for r in frame.to_dict("records")]
    top_idx, top_score = recommend(rec, users, k)
    rows = []
    for u, idx, sc in zip(users, top_idx.tolist(), top_score.tolist()):
        ranked = [(i, s) for i, s in zip(idx, sc) if i > 0]
        rows.extend(
            {"user_id": u.user_id, "rank": r, "item_id": rec.vocab.item_ids[i - 1], "score": s}
            for r, (i, s) in enumerate(ranked, start=1)
        )
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


class RecommenderPyfunc(PythonModel):
    """MLflow pyfunc: input = user sequences (features/sequences columns), params {"k": int},
    output = user_id, rank, item_id, score (seen items excluded)."""

    def load_context(self, context: Any) -> None:
        self.recommender = Recommender.load(context.artifacts["checkpoint"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict_frame(self.recommender, model_input, int((params or {}).get("k", 10)))


mlflow.models.set_model(RecommenderPyfunc())
