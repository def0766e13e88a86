"""What each input signal is worth, without retraining: the trained model evaluated with one signal unknown.

Every run evaluates its champion-to-be on the test holdout once per signal of :data:`SIGNALS`, with that signal's
input replaced by "unknown" at every position (bucket 1 of its embedding: the value a log without the signal has),
everything else equal. The drop in NDCG@10 is what the model draws from the signal; it costs one evaluation per
signal, never a training run (the blind *training* variant, targets unweighted too, is ``--set attention=false``;
``benchmarks/attention.py`` measures it). Logged as ``ablation_<signal>_test_<metric>`` and printed by
``attnrec summary``.
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
