"""What each input signal is worth, without retraining: the trained model evaluated with one signal unknown.

Every run evaluates its champion-to-be on the test holdout once per signal of :data:`SIGNALS`, with that signal's
input replaced by "unknown" at every position (bucket 1 of its embedding: the value a log without the signal has),
everything else equal. The drop in NDCG@10 is what the model draws from the signal; it costs one evaluation per
signal, never a training run (the blind *training* variant, targets unweighted too, is ``--set attention=false``;
``benchmarks/attention.py`` measures it). Logged as ``ablation_<signal>_test_<metric>``, printed by
``attnrec summary``, and as a table (signal, metric with and without it, the difference) in the run's artifacts,
``ablation/input_ablation.md`` and ``.json`` (:func:`log_table`); ``python benchmarks/ablation.py --dt D`` writes the
same table for a registered model on any day's features.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from models.dataset import Holdout
from models.evaluate import evaluate_recommender
from models.recommender import Recommender

#: signal -> (the model input it masks, what it carries)
SIGNALS: dict[str, tuple[str, str]] = {
    "attention": ("attention", "attention strength (event type, rating, dwell)"),
    "dwell": ("dwell", "dwell bucket"),
    "gap": ("gap", "time since the previous event"),
    "hour": ("hour", "hour of day (UTC)"),
    "weekday": ("weekday", "day of week (UTC)"),
    "session": ("session", "session boundary"),
    "heat": ("heat", "item heat as of the event"),
    "item_week": ("item_week", "item interactions in the 7 days before the event"),
    "activity": ("activity", "user events in the 7 days before the event"),
    "device": ("device", "device (hashed)"),
}


@contextlib.contextmanager
def unknown(rec: Recommender, signal: str) -> Iterator[None]:
    """Within the block the model reads ``signal`` as unknown at every real position."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; use one of {', '.join(SIGNALS)}")
    embed = rec.model.embed
    before = set(embed.masked)
    embed.masked = before | {SIGNALS[signal][0]}
    try:
        yield
    finally:
        embed.masked = before


def input_ablation(rec: Recommender, holdout: list[Holdout]) -> dict[str, dict[str, float]]:
    """{signal: metrics on ``holdout`` with that signal unknown} for every signal the model reads."""
    out = {}
    for signal, (column, _) in SIGNALS.items():
        if not rec.model.embed.reads(column):
            continue
        with unknown(rec, signal):
            out[signal] = evaluate_recommender(rec, holdout)
    return out


#: The metrics of the ablation table, in its column order.
TABLE_METRICS = ("ndcg_at_10", "hr_at_10", "mrr_at_10")


def ablation_rows(full: dict[str, float], ablated: dict[str, dict[str, float]]) -> list[dict[str, object]]:
    """One row per signal of ``ablated`` ({signal: metrics with it unknown}, :func:`input_ablation`): the signal,
    what it carries, and per metric of :data:`TABLE_METRICS` the model's value with the signal (``full``), without
    it, and ``delta`` = with - without (what the signal is worth; above 0 the model draws on it)."""
    rows = []
    for signal, metrics in ablated.items():
        row: dict[str, object] = {"signal": signal, "carries": SIGNALS[signal][1]}
        for m in TABLE_METRICS:
            row[f"{m}_with"] = round(full[m], 4)
            row[f"{m}_without"] = round(metrics[m], 4)
            row[f"{m}_delta"] = round(full[m] - metrics[m], 4)
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """``rows`` (:func:`ablation_rows`) as a Markdown table, largest NDCG@10 delta first."""
    head = ["signal", "carries"] + [f"{m} {part}" for m in TABLE_METRICS for part in ("with", "without", "delta")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(rows, key=lambda r: (-float(r["ndcg_at_10_delta"]), str(r["signal"]))):
        cells = [str(row["signal"]), str(row["carries"])]
        for m in TABLE_METRICS:
            cells += [f"{row[f'{m}_with']:.4f}", f"{row[f'{m}_without']:.4f}", f"{row[f'{m}_delta']:+.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def log_table(full: dict[str, float], ablated: dict[str, dict[str, float]]) -> str:
    """Log the table to the active MLflow run (``ablation/input_ablation.md`` and ``.json``); return its text."""
    import mlflow

    rows = ablation_rows(full, ablated)
    table = format_table(rows)
    mlflow.log_text(table, "ablation/input_ablation.md")
    mlflow.log_dict({"metrics": list(TABLE_METRICS), "rows": rows}, "ablation/input_ablation.json")
    return table
