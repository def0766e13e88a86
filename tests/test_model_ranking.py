"""Tests of ranking and its metrics: hand-computed metrics, the exact top-K with exclusions against brute
force, serving never returns a seen item, an unknown target is a miss."""

from __future__ import annotations

import math

import pytest
import torch

from models.dataset import Holdout
from models.evaluate import evaluate_recommender
from models.metrics import coverage_at_k, metrics_from_ranks
from models.ranking import rank_catalogue
from models.recommender import Recommender, recommend
from models.vocab import ItemVocab
from tests.model_helpers import events, item_rows, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def test_metrics_from_hand_computed_ranks():
    m = metrics_from_ranks([1, 3, float("inf"), 12, 60], k=10, recall_k=50)
    assert m["hr_at_10"] == pytest.approx(2 / 5)
    assert m["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(4)) / 5)
    assert m["mrr_at_10"] == pytest.approx((1 + 1 / 3) / 5)
    assert m["recall_at_50"] == pytest.approx(3 / 5)


def test_metrics_refuse_an_empty_holdout():
    with pytest.raises(ValueError, match="holdout is empty"):
        metrics_from_ranks([])


def test_coverage_counts_distinct_real_items():
    top = torch.tensor([[1, 2, 3], [2, 3, 0], [4, 1, 2]])
    assert coverage_at_k(top, n_items=8, k=2) == 4 / 8
    assert coverage_at_k(top, n_items=8, k=3) == 4 / 8


@pytest.mark.parametrize("item_chunk,user_batch", [(100, 100), (2, 1), (3, 2)])
def test_rank_catalogue_excludes_seen_and_padding_and_ranks_targets(item_chunk, user_batch):
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.1, 0.7, 0.7], [9.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # column 0 is padding

    def scorer(rows, c0, c1):
        return scores[rows, c0:c1]

    top, top_scores, ranks = rank_catalogue(
        scorer, 2, 6, [[2], [5, 4, 3, 2]], k=3, targets=[5, 2], item_chunk=item_chunk, user_batch=user_batch
    )
    assert top[0].tolist() == [4, 5, 1] or top[0].tolist() == [5, 4, 1]  # 4 and 5 tie
    assert top_scores[0].tolist() == pytest.approx([0.7, 0.7, 0.5])
    assert top[1].tolist() == [1, 0, 0]  # only item 1 is unseen: fewer than k, padded with 0 / -inf
    assert top_scores[1, 0].item() == pytest.approx(0.1) and top_scores[1, 1:].tolist() == [float("-inf")] * 2
    assert ranks == [2.0, float("inf")]  # tie with item 4 (lower index first); item 2 was seen


@pytest.mark.parametrize("item_chunk,user_batch", [(1000, 1000), (5, 3), (4, 2)])
def test_model_scorer_ranking_matches_brute_force(item_chunk, user_batch):
    """The fast path (bias as a matmul column, reused score buffers, in-place masking) against plain
    full score matrices: same top-k scores, same target ranks, cold users on popularity, blocked items out."""
    from models.ranking import model_scorer

    n_items, n_users, k = 12, 7, 4
    model = tiny_model(n_items)
    with torch.no_grad():
        model.item_bias.normal_(0, 0.5)
    vocab = ItemVocab.from_items(item_rows(n_items))
    pop = torch.tensor([0.0] + [float((7 * i) % 5) for i in range(1, n_items + 1)], dtype=torch.float64)
    rec = Recommender(model, vocab, {}, pop)
    g = torch.Generator().manual_seed(0)
    vecs = torch.randn(n_users, 16, generator=g)
    has_history = [True, False, True, True, True, False, True]
    seen = [[1, 2], [], [3], [12, 11, 10], [], [4], [5, 6, 7, 8]]
    targets = [3, 5, 4, 9, 12, 4, 1]  # user 0's target 3 is unseen; user 2's 4 is unseen; user 5's 4 is seen
    allowed = torch.ones(n_items + 1, dtype=torch.bool)
    allowed[6] = False

    full = vecs @ model.item_table().T + model.item_bias  # (U, N+1)
    full[torch.tensor([not h for h in has_history])] = torch.log1p(pop.float())
    full[:, 0] = float("-inf")
    full[:, 6] = float("-inf")
    for u, s in enumerate(seen):
        full[u, s] = float("-inf")
    with torch.no_grad():
        top, top_scores, ranks = rank_catalogue(
            model_scorer(rec.model, rec.popularity, vecs, has_history, allowed),
            n_users,
            n_items + 1,
            seen,
            k,
            targets=targets,
            item_chunk=item_chunk,
            user_batch=user_batch,
        )
    expected = full.detach().topk(k, dim=1).values
    assert torch.allclose(top_scores, expected, atol=1e-5)
    assert torch.allclose(full.detach().gather(1, top), top_scores, atol=1e-5)
    for u, t in enumerate(targets):
        if t in seen[u]:
            assert ranks[u] == float("inf")
        else:
            ahead = (full[u] > full[u, t]) | (
                (full[u] == full[u, t]) & (torch.arange(n_items + 1) < t)
            )  # ties: lower index first
            assert ranks[u] == float(int(ahead.sum()) + 1)
    assert 6 not in top.flatten().tolist()


def test_recommend_never_returns_seen_items():
    vocab = ItemVocab.from_items(item_rows(12))
    rec = Recommender(tiny_model(), vocab, {}, torch.zeros(13, dtype=torch.float64))
    users = [events("u", ["i1", "i2", "i3"]), events("v", [f"i{i}" for i in range(1, 11)]), events("w", ["nope"])]
    top, sc = recommend(rec, users, k=5)
    assert set(top[0].tolist()).isdisjoint({1, 2, 3}) and 0 not in top[0].tolist()
    assert top[1].tolist()[:2] in ([11, 12], [12, 11]) and top[1].tolist()[2:] == [0, 0, 0]
    assert 0 not in top[2].tolist()  # cold user: popularity fallback over the whole catalogue
    assert (sc[0, :-1] >= sc[0, 1:]).all()


def test_a_target_the_model_does_not_know_is_a_miss():
    vocab = ItemVocab.from_items(item_rows(12))
    rec = Recommender(tiny_model(), vocab, {}, torch.zeros(13, dtype=torch.float64))
    m = evaluate_recommender(rec, [Holdout(events("u", ["i1"]), "unknown-item")])
    assert m["hr_at_10"] == 0.0 and m["recall_at_50"] == 0.0 and m["n_users"] == 1.0
