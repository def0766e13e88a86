"""Tests of the baselines: the item-to-item transition kNN (counts by hand, ranking, validation-chosen settings) and
ALS matrix factorisation (a planted structure, seen items, determinism, validation-chosen settings)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from models.dataset import leave_one_out, positive_counts
from models.encoding import encode_sequences
from models.ranking import rank_catalogue
from models.vocab import ItemVocab
from tests.model_helpers import events, item_rows, planted_walks


def test_transition_knn_counts_rows_and_scores_by_hand():
    from models.baselines import TransitionKNN

    vocab = ItemVocab.from_items(item_rows(5))
    users = [
        events("u", ["i1", "i2", "i3"]),
        events("v", ["i1", "i2"]),
        events("w", ["i1", "i4"]),
        events("x", ["i5", "i3"], ["impression", "click"]),
    ]  # impressions are not transitions
    pop = torch.tensor([0, 3, 2, 2, 1, 0], dtype=torch.float64)
    users = encode_sequences(users, vocab)
    knn = TransitionKNN.fit(users, vocab, pop, window=1, last_n=2, decay=0.5, pop_weight=0.0)
    # row-normalised: P(2|1) = 2/3, P(4|1) = 1/3, P(3|2) = 1
    scores = knn.user_scores([events("a", ["i2", "i1"]), events("b", ["i5"]), events("c", ["i3", "i2", "i1"])])
    assert scores[0].tolist() == pytest.approx([0, 0, 2 / 3, 0.5, 1 / 3, 0])  # P(.|1) + 0.5 P(.|2)
    assert scores[1].tolist() == [0] * 6  # i5 never leads anywhere
    assert scores[2].tolist() == pytest.approx([0, 0, 2 / 3, 0.5, 1 / 3, 0])  # last_n = 2: i3 is too old
    wide = TransitionKNN.fit(users, vocab, pop, window=2, last_n=1, pop_weight=0.0)
    assert wide.user_scores([events("a", ["i1"])])[0].tolist() == pytest.approx([0, 0, 2 / 3.5, 0.5 / 3.5, 1 / 3.5, 0])
    bag = TransitionKNN.fit(users, vocab, pop, window=1, symmetric=True, last_n=1, pop_weight=0.0)
    assert bag.user_scores([events("a", ["i2"])])[0].tolist() == pytest.approx([0, 2 / 3, 0, 1 / 3, 0, 0])
    prior = TransitionKNN.fit(users, vocab, pop, window=1, last_n=1, pop_weight=1e-3)
    assert prior.user_scores([events("b", ["i5"])])[0].tolist() == pytest.approx((1e-3 * pop / 3).tolist())


def test_transition_knn_ranks_the_successor_first_and_never_recommends_seen_items():
    from models.baselines import TransitionKNN, evaluate_knn

    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    counts = positive_counts(split.train, vocab)
    knn = TransitionKNN.fit(split.train, vocab, counts)
    m = evaluate_knn(knn, split.test)
    assert m["hr_at_10"] == 1.0 and m["mrr_at_10"] == 1.0  # a first-order walk: the successor is always first
    histories = [h.history for h in split.test]
    top, _, _ = rank_catalogue(
        knn.make_scorer(histories),
        len(histories),
        21,
        encode_sequences(histories, vocab).item_lists(),
        k=10,
        user_batch=7,
    )
    for h, row in zip(histories, top.tolist()):
        assert not set(row) & {vocab.index[i] for i in h.item_ids} and 0 not in row


def test_transition_knn_rejects_last_n_zero():
    from models.baselines import TransitionKNN

    vocab = ItemVocab.from_items(item_rows(3))
    with pytest.raises(ValueError, match="last_n=0"):
        TransitionKNN.fit(encode_sequences([], vocab), vocab, torch.zeros(4), last_n=0)


def test_tune_knn_picks_the_best_validation_setting():
    from models.baselines import TransitionKNN, evaluate_knn, tune_knn
    from tests.test_model_planted import N_ITEMS, partner_walks

    users, _ = partner_walks()
    vocab = ItemVocab.from_items(item_rows(N_ITEMS))
    split = leave_one_out(users, vocab)
    split.valid = split.test  # the partner data's validation targets are random by design; its test targets are not
    counts = positive_counts(split.train, vocab)
    grid = [(10, 20, 1.0), (1, 1, 1.0), (3, 3, 0.5)]
    knn, choice = tune_knn(split.train, vocab, counts, split.valid, grid=grid)
    scores = {
        g: evaluate_knn(
            TransitionKNN.fit(split.train, vocab, counts, window=g[0], last_n=g[1], decay=g[2]), split.valid
        )["ndcg_at_10"]
        for g in grid
    }
    best = max(grid, key=lambda g: scores[g])
    assert (choice["window"], choice["last_n"], choice["decay"]) == best
    assert choice["val_ndcg_at_10"] == scores[best] > scores[(10, 20, 1.0)]
    assert (knn.last_n, knn.decay) == best[1:]
    _, first = tune_knn(split.train, vocab, counts, [], grid=grid)  # no validation: the first grid point
    assert (first["window"], first["last_n"]) == (10, 20) and math.isnan(first["val_ndcg_at_10"])


def planted_clusters(n_clusters: int = 4, size: int = 10, users_per: int = 20, length: int = 7, seed: int = 5):
    """Users each take ``length`` distinct items of one cluster of ``size`` items, in random order: which items
    a user likes is determined by their cluster (what a factorisation recovers); popularity is flat."""
    rng = random.Random(seed)
    users = []
    for c in range(n_clusters):
        ids = [f"i{c * size + j + 1}" for j in range(size)]
        users += [events(f"u{c}-{u:02d}", rng.sample(ids, length)) for u in range(users_per)]
    return users


def test_als_recovers_planted_clusters_better_than_popularity():
    from models.baselines import ImplicitALS, evaluate_mf, evaluate_popularity

    vocab = ItemVocab.from_items(item_rows(40))
    split = leave_one_out(planted_clusters(), vocab)
    counts = positive_counts(split.train, vocab)
    assert counts[1:].max() <= 3 * counts[1:].mean()  # popularity is flat
    pop = evaluate_popularity(counts, vocab, split.test)
    mf = evaluate_mf(ImplicitALS.fit(split.train, vocab, counts, factors=8, regularization=0.1), split.test)
    # 4 of a cluster's items are left unseen at test time, the target among them: all of them fit in the top 10
    assert mf["hr_at_10"] >= 0.95 and mf["hr_at_10"] > pop["hr_at_10"] + 0.5, (mf, pop)
    assert mf["ndcg_at_10"] > pop["ndcg_at_10"] + 0.3


def test_als_never_recommends_seen_items_and_ranks_cold_users_by_popularity():
    from models.baselines import ImplicitALS

    vocab = ItemVocab.from_items(item_rows(40))
    split = leave_one_out(planted_clusters(), vocab)
    counts = positive_counts(split.train, vocab)
    mf = ImplicitALS.fit(split.train, vocab, counts, factors=8, regularization=0.1)
    cold = [events("new", ["i3", "unknown"], ["impression", "click"]), events("empty", [])]  # no known positive
    histories = [h.history for h in split.test] + cold
    scorer = mf.make_scorer(histories)
    top, _, _ = rank_catalogue(
        scorer, len(histories), 41, encode_sequences(histories, vocab).item_lists(), k=10, user_batch=7
    )
    for h, row in zip(histories, top.tolist()):  # seen: every event but an impression (which leaves i3 servable)
        seen = {vocab.index[i] for i, t in zip(h.item_ids, h.event_types) if t != "impression" and i in vocab.index}
        assert not set(row) & seen and 0 not in row
    n = len(split.test)
    assert scorer(slice(n, n + 2), 0, 41).tolist() == [counts.float().tolist()] * 2  # cold: training popularity
    assert counts[top[n + 1]].tolist() == sorted(counts[1:].tolist(), reverse=True)[:10]  # the most popular first


def test_als_is_deterministic_given_the_seed():
    from models.baselines import ImplicitALS, evaluate_mf

    vocab = ItemVocab.from_items(item_rows(40))
    split = leave_one_out(planted_clusters(), vocab)
    counts = positive_counts(split.train, vocab)
    fits = [ImplicitALS.fit(split.train, vocab, counts, factors=8, seed=s) for s in (7, 7, 8)]
    assert torch.equal(fits[0].item_factors, fits[1].item_factors)
    assert not torch.equal(fits[0].item_factors, fits[2].item_factors)  # the seed is what fixes them
    assert evaluate_mf(fits[0], split.test) == evaluate_mf(fits[1], split.test)


def test_tune_mf_picks_the_best_validation_setting():
    from models.baselines import ImplicitALS, evaluate_mf, tune_mf

    vocab = ItemVocab.from_items(item_rows(40))
    split = leave_one_out(planted_clusters(users_per=10, seed=9), vocab)
    counts = positive_counts(split.train, vocab)
    grid = [(2, 50.0, 1.0), (8, 0.1, 1.0), (4, 1.0, 5.0)]
    mf, choice = tune_mf(split.train, vocab, counts, split.valid, seed=3, grid=grid)
    scores = {
        g: evaluate_mf(
            ImplicitALS.fit(split.train, vocab, counts, factors=g[0], regularization=g[1], alpha=g[2], seed=3),
            split.valid,
        )["ndcg_at_10"]
        for g in grid
    }
    best = max(grid, key=lambda g: scores[g])
    assert (choice["factors"], choice["regularization"], choice["alpha"]) == best
    assert choice["val_ndcg_at_10"] == scores[best] > scores[(2, 50.0, 1.0)]
    assert (mf.als.factors, mf.als.regularization, mf.als.alpha) == best
    _, first = tune_mf(split.train, vocab, counts, [], grid=grid)  # no validation: the first grid point
    assert (first["factors"], first["regularization"]) == (2, 50.0) and math.isnan(first["val_ndcg_at_10"])
