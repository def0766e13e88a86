"""The baselines every run reports beside the model: popularity, an item-to-item transition kNN and implicit-feedback
matrix factorisation (ALS), the last two with settings chosen on the validation holdout like the neural models'
epochs."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse
import torch
from threadpoolctl import threadpool_limits

from models.dataset import Holdout
from models.encoding import (
    DEFAULT_POSITIVE_TYPES,
    EncodedSequences,
    Events,
    engaged_events,
    positive_type_index,
    user_chunks,
)
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
            keep = engaged_events(train.event_types[lo:hi], train.attention[lo:hi], positive)  # (e,)
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
            for k, (i, t) in enumerate(zip(ev.item_ids, ev.event_types))
            if t in self.positive and i in self.vocab.index and ev.engaged(k)
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


class ImplicitALS:
    """Implicit-feedback matrix factorisation: alternating least squares (Hu, Koren & Volinsky 2008), fitted by
    the ``implicit`` package on the (training users x items) matrix of positive events, the same events
    popularity counts and the kNN pairs (each event weighs 1; a user's repeats add up). Confidence is
    ``alpha`` x that count, preference 1, on observed cells; every other cell has confidence 1, preference 0.

    Scoring folds a user in from their history alone (the exact least-squares user factor given the item
    factors and the same confidences; the fit itself solves it approximately, by conjugate gradient), so a
    validation or test user is scored from exactly the events the other scorers read, the validation target
    included in the test history; a user with no known positive item gets the training popularity, as the
    model's cold users do. Fitting and fold-in run on one thread with BLAS limited to one thread (the package's
    advice), which also makes them deterministic given ``seed``; the CPU implementation is used even where a GPU
    is present, so every machine gets the same factors.
    """

    def __init__(self, als, popularity: torch.Tensor, vocab: ItemVocab, positive_types: Sequence[str]) -> None:
        self.als = als  # implicit.cpu.als.AlternatingLeastSquares over item rows 0..N (row 0 never observed)
        self.item_factors = torch.from_numpy(np.ascontiguousarray(als.item_factors))  # (N+1, f) float32
        self.popularity = popularity.float()  # (N+1,)
        self.vocab = vocab
        self.positive = set(positive_types)

    @classmethod
    def fit(
        cls,
        train: EncodedSequences,
        vocab: ItemVocab,
        popularity: torch.Tensor,
        factors: int = 32,
        regularization: float = 1.0,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
        positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
        chunk_events: int = 1 << 22,
    ) -> "ImplicitALS":
        """Factorise ``train``'s positive (user, item) counts; the initial factors come from ``seed``."""
        from implicit.cpu.als import AlternatingLeastSquares

        from models.dataset import window_hashes

        positive = positive_type_index(positive_types)
        # each user's row of the matrix (and so its random initial factors) follows the order of the users'
        # contents (length, then a hash of their events), not the order they were read in: the factors do not
        # depend on the user ids, which decide the row order of features/sequences
        starts, stops = train.offsets[:-1], train.offsets[1:]
        row_of = np.empty(len(train), dtype=np.int32)
        row_of[np.lexsort((window_hashes(train, starts, stops, chunk_events), stops - starts))] = np.arange(len(train))
        rows, cols = [], []
        for u0, u1 in user_chunks(train.offsets, chunk_events):
            lo, hi = int(train.offsets[u0]), int(train.offsets[u1])
            keep = engaged_events(train.event_types[lo:hi], train.attention[lo:hi], positive)  # (e,)
            cols.append(train.items[lo:hi][keep].astype(np.int32))  # (p,)
            rows.append(np.repeat(row_of[u0:u1], np.diff(train.offsets[u0 : u1 + 1]))[keep])
        user_items = _count_matrix(rows, cols, len(train), vocab.n_items + 1)  # (U, N+1)
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares(
                factors=factors,
                regularization=regularization,
                alpha=alpha,
                iterations=iterations,
                num_threads=1,
                random_state=seed,
            )
            als.fit(user_items, show_progress=False)
        return cls(als, popularity, vocab, positive_types)

    def user_factors(self, histories: list[Events]) -> tuple[torch.Tensor, list[bool]]:
        """(U, f) float32 fold-in factors of ``histories`` and whether each has a known positive item."""
        rows, cols = [], []
        for u, ev in enumerate(histories):
            known = [
                self.vocab.index[i]
                for k, (i, t) in enumerate(zip(ev.item_ids, ev.event_types))
                if t in self.positive and i in self.vocab.index and ev.engaged(k)
            ]
            rows.append(np.full(len(known), u, dtype=np.int32))
            cols.append(np.array(known, dtype=np.int32))
        user_items = _count_matrix(rows, cols, len(histories), self.vocab.n_items + 1)  # (U, N+1)
        has_history = (np.diff(user_items.indptr) > 0).tolist()
        if not histories:
            return torch.zeros(0, self.als.factors), has_history
        with threadpool_limits(1, "blas"):
            factors = self.als.recalculate_user(np.arange(len(histories)), user_items)
        return torch.from_numpy(np.asarray(factors, dtype=np.float32)), has_history

    def make_scorer(self, histories: list[Events]) -> Scorer:
        """A :data:`Scorer` for ``histories``: dot products of the fold-in user factors with the item factors,
        training popularity for users with no known positive item."""
        vecs, has_history = self.user_factors(histories)  # (U, f)
        cold = torch.tensor([not h for h in has_history], dtype=torch.bool)  # (U,)

        def score(rows: slice, c0: int, c1: int) -> torch.Tensor:
            sc = vecs[rows] @ self.item_factors[c0:c1].T  # (b, c)
            sc[cold[rows]] = self.popularity[c0:c1]
            return sc

        return score


def _count_matrix(rows: list[np.ndarray], cols: list[np.ndarray], n_rows: int, n_cols: int) -> scipy.sparse.csr_matrix:
    """(n_rows, n_cols) float32 CSR of how often each (row, col) pair occurs (duplicates summed)."""
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int32)
    m = scipy.sparse.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n_rows, n_cols))
    m.sum_duplicates()
    return m


def evaluate_mf(mf: ImplicitALS, holdout: list[Holdout], k: int = K) -> dict[str, float]:
    """The same metrics for the ALS factorisation on ``holdout`` (seen items excluded as everywhere)."""
    return evaluate_scorer(mf.make_scorer, mf.vocab, holdout, k)


#: The ALS settings :func:`tune_mf` chooses from: (factors, regularization, alpha), 15 iterations each; eight
#: points, so tuning adds seconds, not minutes, to a training run (timed in docs/model.md).
MF_GRID: tuple[tuple[int, float, float], ...] = tuple(
    (factors, regularization, alpha) for factors in (32, 64) for regularization in (1.0, 10.0) for alpha in (1.0, 5.0)
)


def tune_mf(
    train: EncodedSequences,
    vocab: ItemVocab,
    popularity: torch.Tensor,
    valid: list[Holdout],
    positive_types: Sequence[str] = DEFAULT_POSITIVE_TYPES,
    seed: int = 0,
    grid: Sequence[tuple[int, float, float]] = MF_GRID,
) -> tuple[ImplicitALS, dict[str, float]]:
    """The ALS factorisation whose (factors, regularization, alpha) has the best validation NDCG@10 over
    ``grid``, chosen as :func:`tune_knn` chooses the kNN's settings. Returns (the fitted model, {"factors",
    "regularization", "alpha", "val_ndcg_at_10"}); without a validation holdout, the first grid point."""
    best: tuple[float, ImplicitALS, tuple[int, float, float]] | None = None
    for factors, regularization, alpha in grid if valid else grid[:1]:
        mf = ImplicitALS.fit(
            train,
            vocab,
            popularity,
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            seed=seed,
            positive_types=positive_types,
        )
        score = evaluate_mf(mf, valid)["ndcg_at_10"] if valid else float("nan")
        if best is None or score > best[0]:
            best = (score, mf, (factors, regularization, alpha))
    if best is None:
        raise ValueError("tune_mf needs at least one (factors, regularization, alpha) in grid")
    score, mf, (factors, regularization, alpha) = best
    return mf, {"factors": factors, "regularization": regularization, "alpha": alpha, "val_ndcg_at_10": score}
