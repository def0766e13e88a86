"""The baselines every run reports beside the model: popularity and an item-to-item transition kNN, whose
settings are chosen on the validation holdout like the neural models' epochs."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from models.dataset import Holdout
from models.encoding import DEFAULT_POSITIVE_TYPES, EncodedSequences, Events, positive_type_index, user_chunks
from models.evaluate import evaluate_scorer
from models.metrics import K
from models.ranking import Scorer
from models.vocab import ItemVocab


def evaluate_popularity(counts: torch.Tensor, vocab: ItemVocab, holdout: list[Holdout], k: int = K) -> dict[str, float]:
    """The same metrics for ranking every item by ``counts`` (positive events in the training split)."""
    pop = counts.double()

    def make_scorer(histories: list[Events]) -> Scorer:
        def score(rows: slice, c0: int, c1: int) -> torch.Tensor:
            return pop[c0:c1][None, :].expand(rows.stop - rows.start, c1 - c0)

        return score

    return evaluate_scorer(make_scorer, vocab, holdout, k)


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

    def __init__(
        self,
        crow: torch.Tensor,
        col: torch.Tensor,
        val: torch.Tensor,
        popularity: torch.Tensor,
        vocab: ItemVocab,
        last_n: int | None = 3,
        decay: float = 0.5,
        pop_weight: float = 1e-3,
        positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
    ) -> None:
        if last_n is not None and last_n < 1:
            raise ValueError(
                f"last_n={last_n}: the kNN needs at least the newest item; use last_n >= 1 or None for all"
            )
        self.crow, self.col, self.val = crow, col, val  # CSR over item rows 0..N: (N+2,), (P,), (P,)
        pop = popularity.double()
        self.prior = pop_weight * pop / pop.max().clamp(min=1.0)  # (N+1,)
        self.vocab, self.last_n, self.decay = vocab, last_n, decay
        self.positive = set(positive_types)

    @classmethod
    def fit(
        cls,
        train: EncodedSequences,
        vocab: ItemVocab,
        popularity: torch.Tensor,
        window: int | None = 3,
        symmetric: bool = False,
        positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
        chunk_events: int = 1 << 20,
        **kwargs,
    ) -> "TransitionKNN":
        """Count transitions in ``train`` (the training split) and normalise rows; ``kwargs`` go to the scorer.
        Pairs are counted ``chunk_events`` positive events at a time, so scratch memory stays bounded."""
        positive = positive_type_index(positive_types)
        n_rows = vocab.n_items + 1
        keys, sums = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)  # (P,) row * n_rows + col, weight
        for u0, u1 in user_chunks(train.offsets, chunk_events):
            lo, hi = int(train.offsets[u0]), int(train.offsets[u1])
            keep = np.isin(train.event_types[lo:hi], positive)  # (e,)
            seq = train.items[lo:hi][keep].astype(np.int64)  # (p,) positive items, one user after another
            owner = np.repeat(np.arange(u1 - u0), np.diff(train.offsets[u0 : u1 + 1]))[keep]  # (p,)
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
        items = [
            self.vocab.index[i]
            for i, t in zip(ev.item_ids, ev.event_types)
            if t in self.positive and i in self.vocab.index
        ]
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
                weights.append(self.decay**j)
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


def tune_knn(
    train: EncodedSequences,
    vocab: ItemVocab,
    popularity: torch.Tensor,
    valid: list[Holdout],
    positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
    grid: Sequence[tuple[int, int, float]] = KNN_GRID,
) -> tuple[TransitionKNN, dict[str, float]]:
    """The transition kNN whose (window, last_n, decay) has the best validation NDCG@10 over ``grid``:
    the baseline gets the same model selection on the validation holdout as the neural models (early
    stopping), never the test holdout. Returns (kNN fitted on ``users``, {"window", "last_n", "decay",
    "val_ndcg_at_10"}); without a validation holdout, the first grid point."""
    best: tuple[float, TransitionKNN, tuple[int, int, float]] | None = None
    for window, last_n, decay in grid if valid else grid[:1]:
        knn = TransitionKNN.fit(
            train, vocab, popularity, window=window, last_n=last_n, decay=decay, positive_types=positive_types
        )
        score = evaluate_knn(knn, valid)["ndcg_at_10"] if valid else float("nan")
        if best is None or score > best[0]:
            best = (score, knn, (window, last_n, decay))
    if best is None:
        raise ValueError("tune_knn needs at least one (window, last_n, decay) in grid")
    score, knn, (window, last_n, decay) = best
    return knn, {"window": window, "last_n": last_n, "decay": decay, "val_ndcg_at_10": score}
