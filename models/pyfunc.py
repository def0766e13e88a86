"""The MLflow pyfunc of the recommender: ``predict`` takes user sequences (the features/sequences columns)
and returns their top-k unseen items; the artifact is the self-describing checkpoint (models.recommender)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from models.encoding import Events
from models.recommender import Recommender, recommend

CHECKPOINT_FILE = "recommender.pt"
#: Columns the pyfunc's ``predict`` reads (a subset of features/sequences).
INPUT_COLUMNS = ("user_id", "item_ids", "event_types", "event_times_ms", "dwell_ms")


def predict_frame(rec: Recommender, frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Top-``k`` unseen items for each row of a features/sequences-like pandas DataFrame."""
    missing = [c for c in INPUT_COLUMNS if c != "dwell_ms" and c not in frame.columns]
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
