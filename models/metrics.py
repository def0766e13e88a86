"""Ranking metrics of one held-out item per user: HR, NDCG, MRR, recall and catalogue coverage."""

from __future__ import annotations

import math
from typing import Sequence

import torch

K = 10
RECALL_K = 50


def metrics_from_ranks(ranks: Sequence[float], k: int = K, recall_k: int = RECALL_K) -> dict[str, float]:
    """HR@k, NDCG@k, MRR@k and Recall@recall_k from 1-based ranks of one held-out item per user
    (``inf`` = not rankable). With one relevant item, Recall@n equals HR@n."""
    n = len(ranks)
    if n == 0:
        raise ValueError("no ranks to score: the holdout is empty; need users with at least 3 positive events")
    hits = [r for r in ranks if r <= k]
    return {
        f"hr_at_{k}": len(hits) / n,
        f"ndcg_at_{k}": sum(1.0 / math.log2(r + 1) for r in hits) / n,
        f"mrr_at_{k}": sum(1.0 / r for r in hits) / n,
        f"recall_at_{recall_k}": sum(1 for r in ranks if r <= recall_k) / n,
    }


def coverage_at_k(top_items: torch.Tensor, n_items: int, k: int = K) -> float:
    """Share of the catalogue (n_items real items) appearing in at least one user's top-k (index 0 ignored)."""
    if n_items <= 0:
        raise ValueError(f"n_items={n_items}: coverage needs a non-empty catalogue")
    distinct = torch.unique(top_items[:, :k].reshape(-1))
    return int((distinct > 0).sum()) / n_items
