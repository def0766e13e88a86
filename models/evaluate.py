"""Ranking metrics, full-catalogue ranking in chunks, and the baselines: popularity and an item-to-item
transition kNN.

Every evaluation ranks the whole catalogue (never sampled negatives) and excludes the items in the
user's history, exactly as candidate generation does. A target the user already had in the history
therefore counts as a miss. Ties are broken by item index (lower first), the same for every scorer,
so a constant scorer earns no credit from ties.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable, Sequence

import numpy as np
import torch

from models.data import (
    DEFAULT_POSITIVE_TYPES,
    EncodedSequences,
    Events,
    Holdout,
    ItemVocab,
    encode_sequences,
    positive_type_index,
    user_chunks,
)
from models.pyfunc import Recommender, user_vectors

#: (user rows slice, item column start, item column end) -> (rows, end - start) scores. rank_catalogue masks
#: the result in place when it is not a view of other data (else it copies it first), and never keeps a
#: result past the next call, so a scorer may hand out the same buffer every time.
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


def _writable(sc: torch.Tensor) -> torch.Tensor:
    """``sc`` as float32 that may be modified in place: a scorer's fresh float32 result is used as it is
    (no copy of a users x items block), a view or another dtype is copied."""
    if sc.dtype != torch.float32:
        return sc.float()
    return sc.clone() if sc._base is not None else sc


def _seen_tensor(seen: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """(U, S) seen item rows, right-padded with -1; built with one copy, not one per user."""
    lengths = torch.tensor([len(s) for s in seen], dtype=torch.long)  # (U,)
    width = max(1, int(lengths.max())) if len(seen) else 1
    out = torch.full((len(seen), width), -1, dtype=torch.long)
    flat = torch.tensor([i for s in seen for i in s], dtype=torch.long)  # (sum of lengths,)
    if flat.numel():
        rows = torch.repeat_interleave(torch.arange(len(seen)), lengths)
        cols = torch.arange(flat.numel()) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        out[rows, cols] = flat
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
            sc = _writable(scorer(rows, c0, c1))  # (b, c)
            if c0 == 0:
                sc[:, 0] = float("-inf")
            local = seen_b - c0  # (b, S)
            ok = (seen_b >= 0) & (local >= 0) & (local < c1 - c0)
            r_idx = torch.arange(b, device=device)[:, None].expand_as(local)
            sc[r_idx[ok], local[ok]] = float("-inf")
            if targets is not None:
                inside = (tgt >= c0) & (tgt < c1) & (tgt > 0)
                tgt_score = torch.where(inside, sc.gather(1, (tgt - c0).clamp(0, c1 - c0 - 1)[:, None])[:, 0], tgt_score)
            top = sc.topk(min(k_eff, c1 - c0), dim=1, sorted=False)  # sorted by the merge below
            best_score = torch.cat([best_score, top.values], 1)
            best_idx = torch.cat([best_idx, top.indices + c0], 1)
            keep = best_score.topk(min(k_eff, best_score.shape[1]), dim=1)
            best_score, best_idx = keep.values, best_idx.gather(1, keep.indices)
        if targets is not None:  # pass 2: count items that outrank each target (ties: lower index first)
            for c0 in range(0, n_rows, item_chunk):
                c1 = min(c0 + item_chunk, n_rows)
                sc = _writable(scorer(rows, c0, c1))
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
    # the item bias rides along as a last column against a constant 1, so scoring is one plain matmul
    model = rec.model
    with torch.no_grad():
        table = torch.cat([model.item_table(), model.item_bias[:, None]], 1).to(vecs.device).float()  # (N+1, d+1)
    vecs = torch.cat([vecs.detach().float(), torch.ones(vecs.shape[0], 1, device=vecs.device)], 1)  # (U, d+1)
    cold_rows = [u for u, h in enumerate(has_history) if not h]
    cold = torch.tensor([not h for h in has_history], dtype=torch.bool, device=vecs.device)
    pop = torch.log1p(rec.popularity.to(vecs.device).float())  # (N+1,)
    blocked = None if allowed is None else ~allowed.to(vecs.device)

    buffers: dict[tuple[int, int], torch.Tensor] = {}  # one per block shape: no fresh users x items allocation

    def score(rows: slice, c0: int, c1: int) -> torch.Tensor:
        shape = (rows.stop - rows.start, c1 - c0)
        if shape not in buffers:
            buffers[shape] = torch.empty(shape, device=vecs.device)
        with torch.autocast(vecs.device.type, enabled=False):  # rank in float32 even inside a bf16 region
            sc = torch.matmul(vecs[rows], table[c0:c1].T, out=buffers[shape])  # (b, c): dot product + item bias
        i = bisect.bisect_left(cold_rows, rows.start)  # checked on the host: no device sync
        if i < len(cold_rows) and cold_rows[i] < rows.stop:
            sc[cold[rows]] = pop[c0:c1]
        if blocked is not None:
            sc.masked_fill_(blocked[c0:c1][None, :], float("-inf"))
        return sc

    return score


# ---------------------------------------------------------------- evaluating scorers on a holdout ------------


@torch.no_grad()
def recommender_ranks(rec: Recommender, holdout: list[Holdout], device: torch.device | str = "cpu",
                      k: int = K) -> tuple[torch.Tensor, list[float]]:
    """Each holdout user's top-max(k, 50) items (U, max(k, 50)) and the 1-based rank of their target."""
    vecs, seen = user_vectors(rec, [h.history for h in holdout], device)
    targets = [rec.vocab.index.get(h.target, 0) for h in holdout]
    scorer = model_scorer(rec, vecs, [bool(s) for s in seen])
    top, _, ranks = rank_catalogue(scorer, len(holdout), rec.vocab.n_items + 1, seen, max(k, RECALL_K),
                                   targets=targets, device=device)
    return top, ranks


@torch.no_grad()
def evaluate_recommender(rec: Recommender, holdout: list[Holdout], device: torch.device | str = "cpu",
                         k: int = K) -> dict[str, float]:
    """HR/NDCG/MRR@k, Recall@50, coverage@k of a recommender on ``holdout``, encoded with its own vocabulary
    (a target it does not know counts as a miss)."""
    top, ranks = recommender_ranks(rec, holdout, device, k)
    return {**metrics_from_ranks(ranks, k), f"coverage_at_{k}": coverage_at_k(top, rec.vocab.n_items, k),
            "n_users": float(len(holdout))}


def evaluate_scorer(make_scorer: Callable[[list[Events]], Scorer], vocab: ItemVocab, holdout: list[Holdout],
                    k: int = K) -> dict[str, float]:
    """The same metrics for any scorer over ``vocab``'s items, built from the holdout histories by
    ``make_scorer`` (the baselines); seen items are the history's items known to ``vocab``."""
    seen = encode_sequences([h.history for h in holdout], vocab).item_lists()
    targets = [vocab.index.get(h.target, 0) for h in holdout]
    scorer = make_scorer([h.history for h in holdout])
    top, _, ranks = rank_catalogue(scorer, len(holdout), vocab.n_items + 1, seen, max(k, RECALL_K), targets=targets)
    return {**metrics_from_ranks(ranks, k), f"coverage_at_{k}": coverage_at_k(top, vocab.n_items, k),
            "n_users": float(len(holdout))}


def evaluate_popularity(counts: torch.Tensor, vocab: ItemVocab, holdout: list[Holdout], k: int = K) -> dict[str, float]:
    """The same metrics for ranking every item by ``counts`` (positive events in the training split)."""
    pop = counts.double()

    def make_scorer(histories: list[Events]) -> Scorer:
        def score(rows: slice, c0: int, c1: int) -> torch.Tensor:
            return pop[c0:c1][None, :].expand(rows.stop - rows.start, c1 - c0)

        return score

    return evaluate_scorer(make_scorer, vocab, holdout, k)


# ---------------------------------------------------------------- item-to-item transition kNN ------------------


class TransitionKNN:
    """Item-to-item kNN over the user's last few positive items: the non-neural baseline.

    Fitting counts, within each user's sequence of positive events (known items only, oldest -> newest),
    every pair (a, b) where b comes 1..``window`` steps after a, weighted 1 / steps (with ``symmetric``, b
    before a counts too, which makes it an order-blind co-occurrence model; ``window=None`` pairs every two
    items of a sequence). Rows are normalised, so row a is an estimate of P(next = b | a).

    Scoring a user whose newest positive items are a_0 (newest), a_1, ...: ``sum_j decay**j * P(b | a_j)``
    over the last ``last_n`` of them (all of them when None), plus ``pop_weight`` x popularity / max
    popularity, which ranks the items no transition reaches (and users without any known item) by
    popularity. The matrix is kept as CSR arrays and scored a user batch at a time, so memory grows with
    the number of observed pairs, not with the square of the catalogue.
    """

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, popularity: torch.Tensor,
                 vocab: ItemVocab, last_n: int | None = 3, decay: float = 0.5, pop_weight: float = 1e-3,
                 positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES) -> None:
        if last_n is not None and last_n < 1:
            raise ValueError(f"last_n={last_n}: the kNN needs at least the newest item; use last_n >= 1 or None for all")
        self.crow, self.col, self.val = crow, col, val  # CSR over item rows 0..N: (N+2,), (P,), (P,)
        pop = popularity.double()
        self.prior = pop_weight * pop / pop.max().clamp(min=1.0)  # (N+1,)
        self.vocab, self.last_n, self.decay = vocab, last_n, decay
        self.positive = set(positive_types)

    @classmethod
    def fit(cls, train: EncodedSequences, vocab: ItemVocab, popularity: torch.Tensor, window: int | None = 3,
            symmetric: bool = False, positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
            chunk_events: int = 1 << 20, **kwargs) -> "TransitionKNN":
        """Count transitions in ``train`` (the training split) and normalise rows; ``kwargs`` go to the scorer.
        Pairs are counted ``chunk_events`` positive events at a time, so scratch memory stays bounded."""
        positive = positive_type_index(positive_types)
        n_rows = vocab.n_items + 1
        keys, sums = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)  # (P,) row * n_rows + col, weight
        for u0, u1 in user_chunks(train.offsets, chunk_events):
            lo, hi = int(train.offsets[u0]), int(train.offsets[u1])
            keep = np.isin(train.event_types[lo:hi], positive)  # (e,)
            seq = train.items[lo:hi][keep].astype(np.int64)  # (p,) positive items, one user after another
            owner = np.repeat(np.arange(u1 - u0), np.diff(train.offsets[u0:u1 + 1]))[keep]  # (p,)
            longest = int(np.bincount(owner).max(initial=0))
            reach = longest - 1 if window is None else min(window, longest - 1)
            parts_k, parts_w = [keys], [sums]
            for step in range(1, reach + 1):
                same = owner[:-step] == owner[step:]  # (p - step,) both ends in one user's sequence
                a, b = seq[:-step][same], seq[step:][same]
                w = np.full(len(a), 1.0 / step)
                parts_k.append(a * n_rows + b)
                parts_w.append(w)
                if symmetric:
                    parts_k.append(b * n_rows + a)
                    parts_w.append(w)
            keys, inverse = np.unique(np.concatenate(parts_k), return_inverse=True)
            sums = np.bincount(inverse, weights=np.concatenate(parts_w), minlength=len(keys))
        rows, cols = torch.from_numpy(keys // n_rows), torch.from_numpy(keys % n_rows)  # (P,) sorted by row, column
        vals = torch.from_numpy(sums.astype(np.float64))
        row_sum = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows, vals)
        vals = vals / row_sum[rows]
        crow = torch.zeros(n_rows + 1, dtype=torch.long)
        crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
        return cls(crow, cols, vals, popularity, vocab, positive_types=positive_types, **kwargs)

    def sources(self, ev: Events) -> list[int]:
        """The user's newest positive known items, newest first (at most ``last_n``)."""
        items = [self.vocab.index[i] for i, t in zip(ev.item_ids, ev.event_types)
                 if t in self.positive and i in self.vocab.index]
        items.reverse()
        return items if self.last_n is None else items[: self.last_n]

    def user_scores(self, histories: list[Events]) -> torch.Tensor:
        """(U, N+1) float64 scores of every item for each history (the caller masks seen items)."""
        out = self.prior[None, :].repeat(len(histories), 1)  # (U, N+1)
        users, items, weights = [], [], []
        for u, ev in enumerate(histories):
            for j, a in enumerate(self.sources(ev)):
                users.append(u)
                items.append(a)
                weights.append(self.decay ** j)
        if not users:
            return out
        src = torch.tensor(items, dtype=torch.long)  # (S,)
        starts, lengths = self.crow[src], self.crow[src + 1] - self.crow[src]  # (S,), (S,)
        total = int(lengths.sum())
        if total == 0:
            return out
        rep = torch.repeat_interleave(torch.arange(len(src)), lengths)  # (P_u,) which source each entry is from
        offsets = torch.arange(total) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        entry = starts[rep] + offsets  # (P_u,) positions in col / val
        user_of = torch.tensor(users, dtype=torch.long)[rep]
        weight = torch.tensor(weights, dtype=torch.float64)[rep]
        out.index_put_((user_of, self.col[entry]), weight * self.val[entry], accumulate=True)
        return out

    def make_scorer(self, histories: list[Events]) -> Scorer:
        """A :data:`Scorer` for ``histories``; dense scores are built one user batch at a time."""
        cache: dict[tuple[int, int], torch.Tensor] = {}

        def score(rows: slice, c0: int, c1: int) -> torch.Tensor:
            key = (rows.start, rows.stop)
            if key not in cache:
                cache.clear()
                cache[key] = self.user_scores(histories[rows])
            return cache[key][:, c0:c1]

        return score


def evaluate_knn(knn: TransitionKNN, holdout: list[Holdout], k: int = K) -> dict[str, float]:
    """The same metrics for the transition kNN on ``holdout`` (seen items excluded as everywhere)."""
    return evaluate_scorer(knn.make_scorer, knn.vocab, holdout, k)


#: The kNN settings :func:`tune_knn` chooses from: transition window x (last_n, decay).
KNN_GRID: tuple[tuple[int, int, float], ...] = tuple(
    (window, last_n, decay) for window in (1, 3, 10) for last_n, decay in ((1, 1.0), (3, 0.5), (10, 0.8), (20, 0.9))
)


def tune_knn(train: EncodedSequences, vocab: ItemVocab, popularity: torch.Tensor, valid: list[Holdout],
             positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
             grid: Sequence[tuple[int, int, float]] = KNN_GRID) -> tuple[TransitionKNN, dict[str, float]]:
    """The transition kNN whose (window, last_n, decay) has the best validation NDCG@10 over ``grid``:
    the baseline gets the same model selection on the validation holdout as the neural models (early
    stopping), never the test holdout. Returns (kNN fitted on ``users``, {"window", "last_n", "decay",
    "val_ndcg_at_10"}); without a validation holdout, the first grid point."""
    best: tuple[float, TransitionKNN, tuple[int, int, float]] | None = None
    for window, last_n, decay in grid if valid else grid[:1]:
        knn = TransitionKNN.fit(train, vocab, popularity, window=window, last_n=last_n, decay=decay,
                                positive_types=positive_types)
        score = evaluate_knn(knn, valid)["ndcg_at_10"] if valid else float("nan")
        if best is None or score > best[0]:
            best = (score, knn, (window, last_n, decay))
    if best is None:
        raise ValueError("tune_knn needs at least one (window, last_n, decay) in grid")
    score, knn, (window, last_n, decay) = best
    return knn, {"window": window, "last_n": last_n, "decay": decay, "val_ndcg_at_10": score}

