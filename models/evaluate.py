"""Ranking metrics, full-catalogue ranking in chunks, and the popularity baseline.

Every evaluation ranks the whole catalogue (never sampled negatives) and excludes the items in the
user's history, exactly as candidate generation does. A target the user already had in the history
therefore counts as a miss. Ties are broken by item index (lower first), the same for every scorer,
so a constant scorer earns no credit from ties.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from models.data import Holdout, ItemVocab
from models.pyfunc import Recommender, user_vectors

#: (user rows slice, item column start, item column end) -> (rows, end - start) scores
Scorer = Callable[[slice, int, int], torch.Tensor]

K = 10
RECALL_K = 50


# ---------------------------------------------------------------- metrics (pure) -------------------------------


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


# ---------------------------------------------------------------- full-catalogue ranking ------------------------


def _seen_tensor(seen: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    width = max([1, *(len(s) for s in seen)])
    out = torch.full((len(seen), width), -1, dtype=torch.long)
    for u, s in enumerate(seen):
        if s:
            out[u, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return out.to(device)


def rank_catalogue(scorer: Scorer, n_users: int, n_rows: int, seen: Sequence[Sequence[int]], k: int,
                   targets: Sequence[int] | None = None, user_batch: int = 512, item_chunk: int = 65536,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Rank item rows 1..n_rows-1 for every user, excluding row 0 (padding) and each user's ``seen`` rows.

    Scores are computed ``user_batch`` users by ``item_chunk`` items at a time, so memory stays bounded
    for any catalogue. Returns the top-k rows (U, k) and scores (U, k) (-inf and row 0 fill the tail when
    fewer than k items are left), and, when ``targets`` are given, each target's 1-based rank (``inf``
    when the target is 0 = unknown, or in ``seen``).
    """
    device = torch.device(device)
    k_eff = min(k, n_rows - 1)
    all_idx, all_score, ranks = [], [], []
    for s in range(0, n_users, user_batch):
        rows = slice(s, min(s + user_batch, n_users))
        b = rows.stop - rows.start
        seen_b = _seen_tensor(seen[rows], device)  # (b, S), -1 pads
        best_score = torch.full((b, 0), float("-inf"), device=device)
        best_idx = torch.zeros((b, 0), dtype=torch.long, device=device)
        if targets is not None:
            tgt = torch.tensor(list(targets[rows]), dtype=torch.long, device=device)  # (b,)
            tgt_score = torch.full((b,), float("-inf"), device=device)
            greater = torch.zeros(b, dtype=torch.long, device=device)
        # pass 1 (targets only): each target's own score, with seen/unknown targets at -inf
        for c0 in range(0, n_rows, item_chunk):
            c1 = min(c0 + item_chunk, n_rows)
            sc = scorer(rows, c0, c1).float().clone()  # (b, c)
            if c0 == 0:
                sc[:, 0] = float("-inf")
            local = seen_b - c0  # (b, S)
            ok = (seen_b >= 0) & (local >= 0) & (local < c1 - c0)
            r_idx = torch.arange(b, device=device)[:, None].expand_as(local)
            sc[r_idx[ok], local[ok]] = float("-inf")
            if targets is not None:
                inside = (tgt >= c0) & (tgt < c1) & (tgt > 0)
                tgt_score = torch.where(inside, sc.gather(1, (tgt - c0).clamp(0, c1 - c0 - 1)[:, None])[:, 0], tgt_score)
            top = sc.topk(min(k_eff, c1 - c0), dim=1)
            best_score = torch.cat([best_score, top.values], 1)
            best_idx = torch.cat([best_idx, top.indices + c0], 1)
            keep = best_score.topk(min(k_eff, best_score.shape[1]), dim=1)
            best_score, best_idx = keep.values, best_idx.gather(1, keep.indices)
        if targets is not None:  # pass 2: count items that outrank each target (ties: lower index first)
            for c0 in range(0, n_rows, item_chunk):
                c1 = min(c0 + item_chunk, n_rows)
                sc = scorer(rows, c0, c1).float().clone()
                if c0 == 0:
                    sc[:, 0] = float("-inf")
                local = seen_b - c0
                ok = (seen_b >= 0) & (local >= 0) & (local < c1 - c0)
                r_idx = torch.arange(b, device=device)[:, None].expand_as(local)
                sc[r_idx[ok], local[ok]] = float("-inf")
                col = torch.arange(c0, c1, device=device)[None, :]  # (1, c)
                t = tgt_score[:, None]
                greater += ((sc > t) | ((sc == t) & (col < tgt[:, None]))).sum(1)
            ranks.extend(float("inf") if not math.isfinite(ts) else float(g) + 1.0
                         for ts, g in zip(tgt_score.tolist(), greater.tolist()))
        best_idx = torch.where(torch.isfinite(best_score), best_idx, torch.zeros_like(best_idx))
        all_idx.append(best_idx.cpu())
        all_score.append(best_score.cpu())
    if not all_idx:
        return torch.zeros(0, k_eff, dtype=torch.long), torch.zeros(0, k_eff), ranks
    return torch.cat(all_idx), torch.cat(all_score), ranks


def model_scorer(rec: Recommender, vecs: torch.Tensor, has_history: Sequence[bool],
                 allowed: torch.Tensor | None = None) -> Scorer:
    """Dot products of user states with item vectors; users with no known history get training popularity
    (log1p of counts) instead, so every user still gets a ranking. Items where ``allowed`` (N+1,) is False
    score -inf for everyone (e.g. items no longer in the catalogue)."""
    table = rec.model.item_table().to(vecs.device)  # (N+1, d)
    cold = torch.tensor([not h for h in has_history], dtype=torch.bool, device=vecs.device)
    pop = torch.log1p(rec.popularity.to(vecs.device).float())  # (N+1,)
    blocked = None if allowed is None else ~allowed.to(vecs.device)

    def score(rows: slice, c0: int, c1: int) -> torch.Tensor:
        sc = rec.model.scores(vecs[rows], table, c0, c1).float()  # (b, c)
        sc = torch.where(cold[rows][:, None], pop[c0:c1][None, :].expand_as(sc), sc)
        if blocked is not None:
            sc = sc.masked_fill(blocked[c0:c1][None, :], float("-inf"))
        return sc

    return score


# ---------------------------------------------------------------- evaluating scorers on a holdout ------------


@torch.no_grad()
def evaluate_recommender(rec: Recommender, holdout: list[Holdout], device: torch.device | str = "cpu",
                         k: int = K) -> dict[str, float]:
    """HR/NDCG/MRR@k, Recall@50, coverage@k of a recommender on ``holdout``, encoded with its own vocabulary
    (a target it does not know counts as a miss)."""
    vecs, seen = user_vectors(rec, [h.history for h in holdout], device)
    targets = [rec.vocab.index.get(h.target, 0) for h in holdout]
    scorer = model_scorer(rec, vecs, [bool(s) for s in seen])
    top, _, ranks = rank_catalogue(scorer, len(holdout), rec.vocab.n_items + 1, seen, max(k, RECALL_K),
                                   targets=targets, device=device)
    return {**metrics_from_ranks(ranks, k), f"coverage_at_{k}": coverage_at_k(top, rec.vocab.n_items, k),
            "n_users": float(len(holdout))}


def evaluate_popularity(counts: torch.Tensor, vocab: ItemVocab, holdout: list[Holdout], k: int = K) -> dict[str, float]:
    """The same metrics for ranking every item by ``counts`` (positive events in the training split)."""
    from models.data import encode_events

    seen = [encode_events(h.history, vocab).items for h in holdout]
    targets = [vocab.index.get(h.target, 0) for h in holdout]
    pop = counts.double()

    def score(rows: slice, c0: int, c1: int) -> torch.Tensor:
        return pop[c0:c1][None, :].expand(rows.stop - rows.start, c1 - c0)

    top, _, ranks = rank_catalogue(score, len(holdout), vocab.n_items + 1, seen, max(k, RECALL_K), targets=targets)
    return {**metrics_from_ranks(ranks, k), f"coverage_at_{k}": coverage_at_k(top, vocab.n_items, k),
            "n_users": float(len(holdout))}
