"""Evaluate a recommender, or any scorer, on a leave-one-out holdout: full-catalogue ranks -> metrics.

Each model encodes the holdout histories with its own vocabulary, so any two models (a challenger and the
champion) meet exactly the same users; a target a model does not know counts as a miss.
"""

from __future__ import annotations

from typing import Callable

import torch

from models.dataset import Holdout
from models.encoding import Events, encode_sequences
from models.metrics import RECALL_K, K, coverage_at_k, metrics_from_ranks
from models.ranking import Scorer, model_scorer, rank_catalogue
from models.recommender import Recommender, user_vectors
from models.runtime import DistContext, gather
from models.vocab import ItemVocab


@torch.no_grad()
def recommender_ranks(
    rec: Recommender, holdout: list[Holdout], device: torch.device | str = "cpu", k: int = K
) -> tuple[torch.Tensor, list[float]]:
    """Each holdout user's top-max(k, 50) items (U, max(k, 50)) and the 1-based rank of their target."""
    vecs, seen = user_vectors(rec, [h.history for h in holdout], device)
    targets = [rec.vocab.index.get(h.target, 0) for h in holdout]
    scorer = model_scorer(rec.model, rec.popularity, vecs, [bool(s) for s in seen])
    top, _, ranks = rank_catalogue(
        scorer, len(holdout), rec.vocab.n_items + 1, seen, max(k, RECALL_K), targets=targets, device=device
    )
    return top, ranks


@torch.no_grad()
def evaluate_recommender(
    rec: Recommender, holdout: list[Holdout], device: torch.device | str = "cpu", k: int = K
) -> dict[str, float]:
    """HR/NDCG/MRR@k, Recall@50, coverage@k of a recommender on ``holdout``, encoded with its own vocabulary
    (a target it does not know counts as a miss)."""
    top, ranks = recommender_ranks(rec, holdout, device, k)
    return {
        **metrics_from_ranks(ranks, k),
        f"coverage_at_{k}": coverage_at_k(top, rec.vocab.n_items, k),
        "n_users": float(len(holdout)),
    }


def evaluate_scorer(
    make_scorer: Callable[[list[Events]], Scorer], vocab: ItemVocab, holdout: list[Holdout], k: int = K
) -> dict[str, float]:
    """The same metrics for any scorer over ``vocab``'s items, built from the holdout histories by
    ``make_scorer`` (the baselines); seen items are the history's items known to ``vocab``."""
    seen = encode_sequences([h.history for h in holdout], vocab).item_lists()
    targets = [vocab.index.get(h.target, 0) for h in holdout]
    scorer = make_scorer([h.history for h in holdout])
    top, _, ranks = rank_catalogue(scorer, len(holdout), vocab.n_items + 1, seen, max(k, RECALL_K), targets=targets)
    return {
        **metrics_from_ranks(ranks, k),
        f"coverage_at_{k}": coverage_at_k(top, vocab.n_items, k),
        "n_users": float(len(holdout)),
    }


#: The holdout slices every training run reports beside the whole holdout (see :func:`cold_slices`).
SLICES = ("cold_items", "cold_users")


def cold_slices(
    holdout: list[Holdout], counts: torch.Tensor, vocab: ItemVocab, max_item_events: int, max_user_events: int
) -> dict[str, list[Holdout]]:
    """The holdout users whose target had at most ``max_item_events`` positive training events (``counts``,
    (N+1,); a target the vocabulary lacks counts 0), and those with at most ``max_user_events`` events before
    their target: {"cold_items": [...], "cold_users": [...]}."""
    n = counts.tolist()
    return {
        "cold_items": [h for h in holdout if n[vocab.index.get(h.target, 0)] <= max_item_events],
        "cold_users": [h for h in holdout if len(h.history.item_ids) <= max_user_events],
    }


def evaluate_sharded(
    rec: Recommender, holdout: list[Holdout], device: torch.device, amp_dtype: torch.dtype | None, ctx: DistContext
) -> dict[str, float]:
    """HR/NDCG/MRR@10 and Recall@50 under autocast (validation during training); with several ranks each
    ranks its share of the users and the ranks are gathered, so every rank returns the same metrics."""
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if ctx.world == 1:
            return evaluate_recommender(rec, holdout, device)
        shard = holdout[ctx.rank :: ctx.world]
        ranks = recommender_ranks(rec, shard, device)[1] if shard else []
    return metrics_from_ranks([r for part in gather(ranks, ctx) for r in part])
