"""Model tests (CPU, tiny): causal mask, padding invariance, overfitting a planted pattern, checkpoint
round trip; unit tests of bucketing, the leave-one-out split, encoding, metrics and full-catalogue ranking."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from models.baselines import evaluate_popularity
from models.dataset import Holdout, TrainingSet, leave_one_out, positive_counts
from models.encoding import Events, dwell_bucket, encode_events, encode_sequences, gap_bucket
from models.evaluate import evaluate_recommender
from models.metrics import coverage_at_k, metrics_from_ranks
from models.model import AttentionRecommender, ModelConfig
from models.ranking import rank_catalogue
from models.recommender import Recommender, recommend
from models.train import TrainConfig, build_model, drop_seen_targets, fit, next_item_loss
from models.vocab import ItemVocab, year_bucket


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def item_rows(n: int) -> list[dict]:
    cats = ["Action", "Comedy", "Drama"]
    return [{"item_idx": i, "item_id": f"i{i}", "title": f"t{i}", "categories": [cats[i % 3]] + (["Drama"] if i % 4 == 0 else []),
             "year": None if i % 5 == 0 else 1990 + i, "popularity": 0} for i in range(1, n + 1)]


def tiny_model(n_items: int = 12, seed: int = 0, dropout: float = 0.0, max_len: int = 16) -> AttentionRecommender:
    torch.manual_seed(seed)
    vocab = ItemVocab.from_items(item_rows(n_items))
    model = build_model(vocab, TrainConfig(d_model=16, n_heads=2, n_layers=2, dropout=dropout), max_len)
    return model.eval()


def random_batch(B: int, L: int, n_items: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "items": torch.randint(1, n_items + 1, (B, L), generator=g),
        "event_types": torch.randint(1, 11, (B, L), generator=g),
        "dwell": torch.randint(1, 16, (B, L), generator=g),
        "gap": torch.randint(1, 32, (B, L), generator=g),
    }


def events(user: str, items: list[str], types: list[str] | None = None) -> Events:
    n = len(items)
    return Events(user, items, types or ["rate"] * n, [1000 * (i + 1) for i in range(n)], [None] * n)


# ---------------------------------------------------------------- the model --------------------------------------


def test_scores_have_one_column_per_item_and_padding_item_is_zero():
    model = tiny_model()
    out = model(random_batch(3, 7, 12))
    assert out.shape == (3, 7, 13)
    assert torch.equal(model.item_table()[0], torch.zeros(16))


@pytest.mark.parametrize("t", [0, 3, 6])
def test_causal_changing_position_t_leaves_earlier_outputs_unchanged(t):
    model = tiny_model()
    batch = random_batch(2, 7, 12)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["items"][:, t] = changed["items"][:, t] % 12 + 1  # a different real item
    changed["event_types"][:, t] = changed["event_types"][:, t] % 10 + 1
    with torch.no_grad():
        a, b = model.encode(batch), model.encode(changed)
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert not torch.allclose(a[:, t], b[:, t], atol=1e-4)


def test_more_left_padding_does_not_change_real_positions():
    model = tiny_model()
    batch = random_batch(2, 5, 12)
    padded = {k: torch.cat([torch.zeros(2, 4, dtype=torch.long), v], dim=1) for k, v in batch.items()}
    with torch.no_grad():
        a, b = model.encode(batch), model.encode(padded)
    assert b.shape == (2, 9, 16)
    assert torch.allclose(a, b[:, 4:], atol=1e-5)


def test_a_short_row_beside_a_long_row_matches_the_row_alone():
    model = tiny_model()
    vocab = ItemVocab.from_items(item_rows(12))
    short, long = events("u", ["i3", "i5"]), events("v", [f"i{i}" for i in range(1, 10)])
    with torch.no_grad():
        alone = model.encode(encode_sequences([short], vocab).last_inputs(16))[:, -1]
        together = model.encode(encode_sequences([short, long], vocab).last_inputs(16))[:1, -1]
    assert torch.allclose(alone, together, atol=1e-5)


def test_config_rejects_heads_that_do_not_divide_d_model():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_heads=3"):
        ModelConfig(n_items=5, n_categories=1, max_categories=1, d_model=10, n_heads=3)


def planted_walks(n_items: int = 20, n_users: int = 60, length: int = 6, seed: int = 3) -> list[Events]:
    """Every user walks a fixed permutation of the items: the next item is determined by the current one."""
    rng = random.Random(seed)
    perm = list(range(1, n_items + 1))
    rng.shuffle(perm)
    users = []
    for u in range(n_users):
        s = rng.randrange(n_items)
        users.append(events(f"u{u:03d}", [f"i{perm[(s + j) % n_items]}" for j in range(length)]))
    return users


def test_tiny_model_overfits_a_planted_next_item_pattern():
    torch.manual_seed(0)
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = TrainConfig(d_model=32, n_heads=2, n_layers=1, dropout=0.0, batch_size=16, lr=1e-2, warmup_steps=5,
                       weight_decay=0.0, patience=100)
    rec = Recommender(build_model(vocab, tcfg, 8), vocab, {"dt": "2026-01-01"}, positive_counts(split.train, vocab))
    examples = TrainingSet(split.train, 8)
    history = fit(rec, examples, split.valid, tcfg, epochs=40, max_minutes=1.0, seed=0, device=torch.device("cpu"))
    assert history[0]["train_loss"] > 2.5  # ~ log(20) at the start
    assert history[-1]["train_loss"] < 0.2
    metrics = evaluate_recommender(rec, split.test)
    assert metrics["hr_at_10"] == 1.0
    assert metrics["mrr_at_10"] > 0.95  # the planted successor is ranked first for (nearly) everyone
    assert evaluate_popularity(rec.popularity, vocab, split.test)["mrr_at_10"] < 0.5


def test_checkpoint_round_trip_gives_identical_scores(tmp_path):
    vocab = ItemVocab.from_items(item_rows(12))
    torch.manual_seed(5)
    rec = Recommender(build_model(vocab, TrainConfig(d_model=16), 16).eval(), vocab, {"dt": "2026-01-02", "snapshot_hash": "abc"},
                      torch.arange(13, dtype=torch.float64))
    path = str(tmp_path / "ckpt.pt")
    rec.save(path)
    back = Recommender.load(path)
    batch = random_batch(4, 9, 12)
    with torch.no_grad():
        assert torch.equal(rec.model(batch), back.model(batch))
    assert back.vocab.item_ids == vocab.item_ids and back.vocab.item_categories == vocab.item_categories
    assert back.data_version == {"dt": "2026-01-02", "snapshot_hash": "abc"}
    assert torch.equal(back.popularity, rec.popularity)
    assert back.model.cfg == rec.model.cfg
    assert not back.model.training


# ---------------------------------------------------------------- data ------------------------------------------


@pytest.mark.parametrize("year,bucket", [(None, 0), (1850, 1), (1900, 1), (1904, 1), (1905, 2), (1995, 20), (2300, 31)])
def test_year_bucket(year, bucket):
    assert year_bucket(year) == bucket


@pytest.mark.parametrize("ms,bucket", [(None, 1), (0, 2), (999, 2), (1000, 3), (3000, 4), (10**12, 15)])
def test_dwell_bucket(ms, bucket):
    assert dwell_bucket(ms) == bucket


@pytest.mark.parametrize("ms,bucket", [(None, 1), (0, 2), (1000, 3), (7000, 5), (86_400_000, 18), (10**15, 31)])
def test_gap_bucket(ms, bucket):
    assert gap_bucket(ms) == bucket


def test_vocab_from_items_maps_categories_and_years():
    vocab = ItemVocab.from_items(list(reversed(item_rows(5))))
    assert vocab.item_ids == ["i1", "i2", "i3", "i4", "i5"]
    assert vocab.categories == ["Action", "Comedy", "Drama"]
    assert vocab.item_categories == [[2], [3], [1], [2, 3], [3]]
    assert vocab.item_years == [19, 19, 19, 19, 0]
    cats, years = vocab.content_tensors()
    assert cats.tolist() == [[0, 0], [2, 0], [3, 0], [1, 0], [2, 3], [3, 0]]
    assert years.tolist() == [0, 19, 19, 19, 19, 0]


def test_vocab_rejects_gaps_in_item_idx():
    rows = item_rows(3)
    rows[2]["item_idx"] = 7
    with pytest.raises(ValueError, match="not contiguous 1..3"):
        ItemVocab.from_items(rows)


def test_leave_one_out_uses_positive_events_only():
    ev = events("u", ["a", "b", "c", "d", "e", "f"], ["rate", "impression", "click", "skip", "purchase", "impression"])
    short = events("s", ["a", "b", "c"], ["click", "impression", "click"])
    vocab = ItemVocab.from_items([{"item_idx": i + 1, "item_id": x} for i, x in enumerate("abcdef")])
    split = leave_one_out([ev, short], vocab)
    assert [split.train.row(u).items for u in range(2)] == [[1, 2], [1, 2, 3]]
    assert (split.n_users, split.n_holdout_users) == (2, 1)
    assert [(h.history.item_ids, h.target) for h in split.valid] == [(["a", "b"], "c")]
    assert [(h.history.item_ids, h.target) for h in split.test] == [(["a", "b", "c", "d"], "e")]


def test_encode_skips_unknown_items_but_keeps_their_time_gap():
    vocab = ItemVocab.from_items(item_rows(3))
    ev = Events("u", ["i1", "zzz", "i2"], ["click", "view", "purchase"], [0, 1000, 8000], [None, 5, 2000])
    enc = encode_events(ev, vocab)
    assert enc.items == [1, 2]
    assert enc.event_types == [2, 5]
    assert enc.dwell == [1, 3]
    assert enc.gap == [1, gap_bucket(7000)]


def test_training_examples_target_the_next_positive_event():
    vocab = ItemVocab.from_items(item_rows(5))
    ev = events("u", ["i1", "i2", "i3", "i4"], ["rate", "impression", "rate", "click"])
    inputs, targets = TrainingSet(encode_sequences([ev], vocab), max_len=10).batch(np.arange(1))
    assert inputs["items"].tolist() == [[1, 2, 3]] and inputs["event_types"].tolist() == [[6, 1, 6]]
    assert targets.tolist() == [[0, 3, 4]]
    inputs, targets = TrainingSet(encode_sequences([ev], vocab), max_len=2).batch(np.arange(1))
    assert inputs["items"].tolist() == [[2, 3]] and targets.tolist() == [[3, 4]]


def test_loss_is_log_catalogue_size_for_a_constant_model():
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    batch = random_batch(2, 4, 12)
    targets = torch.tensor([[0, 3, 4, 5], [1, 0, 0, 2]])
    assert next_item_loss(model, batch, targets).item() == pytest.approx(math.log(12), abs=1e-5)


def test_masked_loss_leaves_the_items_seen_so_far_out_of_each_softmax():
    model = tiny_model()
    batch = random_batch(2, 5, 12)
    batch["items"] = torch.tensor([[0, 0, 3, 5, 3], [1, 2, 4, 4, 6]])
    batch["event_types"][0, :2] = 0  # row 0 is left padded
    targets = drop_seen_targets(batch["items"], torch.tensor([[0, 0, 5, 3, 7], [2, 4, 4, 6, 1]]))
    assert targets.tolist() == [[0, 0, 5, 0, 7], [2, 4, 0, 6, 0]]  # repeats of a seen item are no targets
    with torch.no_grad():
        got = next_item_loss(model, batch, targets, mask_seen=True, reduction="sum")
        scores = model(batch)  # (B, L, N+1)
    want = 0.0
    for b, t in zip(*torch.nonzero(targets, as_tuple=True)):
        allowed = [i for i in range(1, 13) if i not in batch["items"][b, : t + 1].tolist()]
        logits = scores[b, t, allowed]
        want += float(torch.logsumexp(logits, 0) - scores[b, t, targets[b, t]])
    assert got.item() == pytest.approx(want, rel=1e-5)
    with torch.no_grad():  # without the mask every item competes, so the loss is larger
        assert next_item_loss(model, batch, targets, reduction="sum").item() > got.item()
        # row 1 has no padding: its last position still leaves the padding item out of the softmax
        last = torch.zeros_like(targets)
        last[1, 4] = 12
        want_last = float(torch.logsumexp(scores[1, 4, [i for i in range(1, 13) if i not in (1, 2, 4, 6)]], 0)
                          - scores[1, 4, 12])
        assert next_item_loss(model, batch, last, mask_seen=True).item() == pytest.approx(want_last, rel=1e-5)


# ---------------------------------------------------------------- metrics and ranking --------------------------


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
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.1, 0.7, 0.7],
                           [9.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # column 0 is padding

    def scorer(rows, c0, c1):
        return scores[rows, c0:c1]

    top, top_scores, ranks = rank_catalogue(scorer, 2, 6, [[2], [5, 4, 3, 2]], k=3, targets=[5, 2],
                                            item_chunk=item_chunk, user_batch=user_batch)
    assert top[0].tolist() == [4, 5, 1] or top[0].tolist() == [5, 4, 1]  # 4 and 5 tie
    assert top_scores[0].tolist() == pytest.approx([0.7, 0.7, 0.5])
    assert top[1].tolist() == [1, 0, 0]  # only item 1 is unseen: fewer than k, padded with 0 / -inf
    assert top_scores[1, 0].item() == pytest.approx(0.1) and top_scores[1, 1:].tolist() == [float("-inf")] * 2
    assert ranks == [2.0, float("inf")]  # tie with item 4 (lower index first); item 2 was seen


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


# ---------------------------------------------------------------- plain SASRec (the ablation) ----------------


def test_id_only_model_has_no_content_or_context_and_ignores_them():
    vocab = ItemVocab.from_items(item_rows(12))
    torch.manual_seed(0)
    plain = build_model(vocab, TrainConfig(d_model=16, dropout=0.0), 16, id_only=True).eval()
    full = build_model(vocab, TrainConfig(d_model=16, dropout=0.0), 16).eval()
    def embeddings(model: AttentionRecommender) -> set[str]:
        return {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}

    assert embeddings(plain) == {"id_emb", "pos_emb"}
    assert embeddings(full) == {"id_emb", "pos_emb", "cat_emb", "year_emb", "type_emb", "dwell_emb", "gap_emb"}
    batch = random_batch(2, 6, 12)
    other = {**batch, "event_types": batch["event_types"] % 10 + 1, "dwell": batch["dwell"] % 15 + 1,
             "gap": batch["gap"] % 31 + 1}
    with torch.no_grad():
        assert torch.equal(plain.encode(batch), plain.encode(other))  # only items and positions matter
        assert not torch.allclose(full.encode(batch), full.encode(other), atol=1e-4)
        plain.items.set_content(torch.zeros_like(plain.items.item_categories), torch.zeros_like(plain.items.item_year))
        assert torch.equal(plain.item_table(), plain.items.id_emb.weight * (torch.arange(13) > 0)[:, None])


def test_id_only_model_is_causal_and_round_trips_its_checkpoint(tmp_path):
    vocab = ItemVocab.from_items(item_rows(12))
    torch.manual_seed(0)
    rec = Recommender(build_model(vocab, TrainConfig(d_model=16, dropout=0.0), 16, id_only=True).eval(), vocab, {},
                      torch.zeros(13, dtype=torch.float64))
    batch = random_batch(2, 7, 12)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["items"][:, 4] = changed["items"][:, 4] % 12 + 1
    with torch.no_grad():
        a, b = rec.model.encode(batch), rec.model.encode(changed)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6) and not torch.allclose(a[:, 4], b[:, 4], atol=1e-4)
    rec.save(str(tmp_path / "plain.pt"))
    back = Recommender.load(str(tmp_path / "plain.pt"))
    assert back.model.cfg.id_only is True
    with torch.no_grad():
        assert torch.equal(back.model(batch), rec.model(batch))


# ---------------------------------------------------------------- item-to-item transition kNN -----------------


def test_transition_knn_counts_rows_and_scores_by_hand():
    from models.baselines import TransitionKNN

    vocab = ItemVocab.from_items(item_rows(5))
    users = [events("u", ["i1", "i2", "i3"]), events("v", ["i1", "i2"]), events("w", ["i1", "i4"]),
             events("x", ["i5", "i3"], ["impression", "click"])]  # impressions are not transitions
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
    top, _, _ = rank_catalogue(knn.make_scorer(histories), len(histories), 21,
                               encode_sequences(histories, vocab).item_lists(), k=10, user_batch=7)
    for h, row in zip(histories, top.tolist()):
        assert not set(row) & {vocab.index[i] for i in h.item_ids} and 0 not in row


def test_transition_knn_rejects_last_n_zero():
    from models.baselines import TransitionKNN

    vocab = ItemVocab.from_items(item_rows(3))
    with pytest.raises(ValueError, match="last_n=0"):
        TransitionKNN.fit(encode_sequences([], vocab), vocab, torch.zeros(4), last_n=0)


# ---------------------------------------------------------------- training checkpoints and resume -------------


class Interrupted(Exception):
    pass


def _planted_training(dropout: float = 0.3, **overrides):
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = TrainConfig(d_model=16, n_heads=2, n_layers=1, dropout=dropout, batch_size=16, lr=1e-2, warmup_steps=5,
                       patience=100, **overrides)
    examples = TrainingSet(split.train, 8)

    def fresh(seed: int) -> Recommender:
        torch.manual_seed(seed)
        return Recommender(build_model(vocab, tcfg, 8), vocab, {}, positive_counts(split.train, vocab))

    return split, tcfg, examples, fresh


def test_training_checkpoint_holds_the_best_weights_and_round_trips(tmp_path):
    split, tcfg, examples, fresh = _planted_training()
    rec = fresh(0)
    path = str(tmp_path / "ckpt" / "model.pt")
    torch.manual_seed(0)
    history = fit(rec, examples, split.valid, tcfg, epochs=3, max_minutes=5.0, seed=0, device=torch.device("cpu"),
                  checkpoint_path=path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["done"] is False and len(ckpt["history"]) == 3
    assert ckpt["history"] == history
    back = fresh(99)  # other initial weights: everything must come from the checkpoint
    back.model.load_state_dict(ckpt["best_state"])
    batch = random_batch(4, 8, 20)
    with torch.no_grad():
        assert torch.equal(back.model.eval()(batch), rec.model(batch))
    assert evaluate_recommender(back, split.test) == evaluate_recommender(rec, split.test)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.pt"]  # no temp file left behind


@pytest.mark.parametrize("overrides", [{}, {"mask_seen": True}], ids=["plain", "mask_seen"])
def test_resuming_an_interrupted_run_ends_exactly_like_an_uninterrupted_one(tmp_path, overrides):
    split, tcfg, examples, fresh = _planted_training(dropout=0.3, **overrides)  # dropout: the torch RNG must resume too
    cpu = torch.device("cpu")

    torch.manual_seed(0)
    straight = fresh(0)
    straight_history = fit(straight, examples, split.valid, tcfg, epochs=4, max_minutes=5.0, seed=0, device=cpu)

    path = str(tmp_path / "model.pt")

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Interrupted

    torch.manual_seed(0)
    with pytest.raises(Interrupted):
        fit(fresh(0), examples, split.valid, tcfg, epochs=4, max_minutes=5.0, seed=0, device=cpu,
            checkpoint_path=path, on_epoch=stop_after_two)
    assert torch.load(path, weights_only=True)["epoch"] == 2

    torch.manual_seed(12345)  # another process: other initial weights and RNG state
    resumed = fresh(7)
    seen: list[float] = []
    resumed_history = fit(resumed, examples, split.valid, tcfg, epochs=4, max_minutes=5.0, seed=0, device=cpu,
                          checkpoint_path=path, on_epoch=lambda row: seen.append(row["epoch"]))
    assert seen == [1.0, 2.0, 3.0, 4.0]  # epochs 1-2 replayed from the checkpoint, 3-4 trained

    def drop(h):
        return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "epoch_train_seconds")} for row in h]

    assert drop(resumed_history) == drop(straight_history)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert evaluate_recommender(resumed, split.test) == evaluate_recommender(straight, split.test)

    # a finished checkpoint resumes to the same model without training again
    again = fresh(3)
    calls: list[float] = []
    fit(again, examples, split.valid, tcfg, epochs=4, max_minutes=5.0, seed=0, device=cpu, checkpoint_path=path,
        on_epoch=lambda row: calls.append(row["epoch_seconds"]))
    assert calls == [row["epoch_seconds"] for row in resumed_history]
    assert all(torch.equal(a[k], again.model.state_dict()[k]) for k in a)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    split, tcfg, examples, fresh = _planted_training()
    path = str(tmp_path / "model.pt")
    fit(fresh(0), examples, split.valid, tcfg, epochs=1, max_minutes=5.0, seed=0, device=torch.device("cpu"),
        checkpoint_path=path)
    with pytest.raises(ValueError, match="written for another model, training config"):
        fit(fresh(0), examples, split.valid, tcfg, epochs=2, max_minutes=5.0, seed=0, device=torch.device("cpu"),
            checkpoint_path=path)


# ---------------------------------------------------------------- sampled softmax with logQ correction --------


def test_sampled_softmax_builds_batch_by_negatives_logits_not_catalogue_wide():
    from torch.utils._python_dispatch import TorchDispatchMode

    from models.train import NegativeSampler, next_item_loss

    class LargestOutput(TorchDispatchMode):
        """Records the largest tensor any operation produces."""

        def __init__(self):
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
            return out

    n_items, K = 100_000, 32
    vocab = ItemVocab.from_items(item_rows(n_items))
    torch.manual_seed(0)
    model = build_model(vocab, TrainConfig(d_model=8, n_heads=2, n_layers=1, dropout=0.0), 8)
    batch = random_batch(4, 6, n_items)
    targets = torch.randint(1, n_items + 1, (4, 6))
    targets[:, :2] = 0  # T = 16 positions with a target
    counts = torch.zeros(n_items + 1, dtype=torch.float64)
    counts[1:1000] = 50.0  # a skewed proposal
    sampler = NegativeSampler(counts, K, 0.75, seed=0, device=torch.device("cpu"))
    negatives = sampler.sample(torch.device("cpu"))
    assert negatives.shape == (K,) and int(negatives.min()) >= 1 and int(negatives.max()) <= n_items

    with LargestOutput() as sampled:
        loss = next_item_loss(model, batch, targets, negatives, sampler.log_q)
    assert torch.isfinite(loss)
    assert sampled.largest <= 4 * 6 * 4 * 8  # the widest activation (B x L x 4d MLP); logits are T x (K+1) = 528
    with LargestOutput() as full:
        next_item_loss(model, batch, targets)
    assert full.largest >= 16 * n_items  # the full softmax builds (T, N) logits: the recorder does see them


def test_sampled_softmax_with_mask_seen_drops_negatives_the_position_has_seen():
    from models.train import sampled_logits, seen_prefixes

    model = tiny_model()
    batch = random_batch(1, 4, 12)
    batch["items"] = torch.tensor([[2, 5, 7, 9]])
    targets = torch.tensor([[0, 3, 4, 11]])
    sel = targets > 0
    negatives = torch.tensor([2, 3, 7, 8, 9, 12])
    log_q = torch.zeros(13)
    with torch.no_grad():
        h = model.encode(batch)[sel]
        logits = sampled_logits(model, h, targets[sel], negatives, log_q, seen_prefixes(batch["items"], sel))
    dropped = torch.isinf(logits[:, 1:]).tolist()
    # position 1 has seen 2, 5 (target 3 is an accidental hit); position 2: 2, 5, 7; position 3: 2, 5, 7, 9
    assert dropped == [[True, True, False, False, False, False],
                       [True, False, True, False, False, False],
                       [True, False, True, False, True, False]]
    assert torch.isfinite(logits[:, 0]).all()


def test_logq_correction_makes_sampled_gradients_match_the_full_softmax():
    from models.train import NegativeSampler, next_item_loss

    n_items = 30
    vocab = ItemVocab.from_items(item_rows(n_items))
    torch.manual_seed(0)
    model = build_model(vocab, TrainConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.0), 8)
    with torch.no_grad():
        model.items.id_emb.weight.mul_(50)  # spread the scores so the softmax is far from uniform
    batch = random_batch(8, 6, n_items, seed=3)
    targets = torch.randint(1, n_items + 1, (8, 6), generator=torch.Generator().manual_seed(4))
    counts = torch.tensor([0.0] + [float(4 ** (i % 5)) for i in range(n_items)], dtype=torch.float64)  # Q skewed 256:1

    def grad(negatives=None, log_q=None) -> torch.Tensor:
        model.zero_grad()
        next_item_loss(model, batch, targets, negatives, log_q).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])

    exact = grad()
    sampler = NegativeSampler(counts, 100_000, 1.0, seed=0, device=torch.device("cpu"))
    negatives = sampler.sample(torch.device("cpu"))
    corrected = grad(negatives, sampler.log_q)
    uncorrected = grad(negatives, torch.zeros_like(sampler.log_q))

    def rel_error(g: torch.Tensor) -> float:
        return float((g - exact).norm() / exact.norm())

    assert rel_error(corrected) < 0.03  # measured 0.009 with 100,000 negatives
    assert rel_error(uncorrected) > 3 * rel_error(corrected)  # measured 0.081: biased toward popular items


def test_sampled_softmax_trains_a_tiny_set():
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = TrainConfig(d_model=32, n_heads=2, n_layers=1, dropout=0.0, batch_size=16, lr=1e-2, warmup_steps=5,
                       weight_decay=0.0, patience=100, full_softmax_max_items=10, n_negatives=8)
    torch.manual_seed(0)
    rec = Recommender(build_model(vocab, tcfg, 8), vocab, {}, positive_counts(split.train, vocab))
    history = fit(rec, TrainingSet(split.train, 8), split.valid, tcfg, epochs=40, max_minutes=1.0,
                  seed=0, device=torch.device("cpu"))
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert history[0]["train_loss"] < math.log(20) - 0.4  # ~ log(1 + 8): it is the sampled loss, not the full one
    assert history[-1]["train_loss"] < 0.3 * history[0]["train_loss"]
    metrics = evaluate_recommender(rec, split.test)  # evaluation still ranks the whole catalogue
    assert metrics["hr_at_10"] == 1.0 and metrics["mrr_at_10"] > 0.9


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
        top, top_scores, ranks = rank_catalogue(model_scorer(rec.model, rec.popularity, vecs, has_history, allowed), n_users, n_items + 1,
                                                seen, k, targets=targets, item_chunk=item_chunk, user_batch=user_batch)
    expected = full.detach().topk(k, dim=1).values
    assert torch.allclose(top_scores, expected, atol=1e-5)
    assert torch.allclose(full.detach().gather(1, top), top_scores, atol=1e-5)
    for u, t in enumerate(targets):
        if t in seen[u]:
            assert ranks[u] == float("inf")
        else:
            ahead = (full[u] > full[u, t]) | ((full[u] == full[u, t]) & (torch.arange(n_items + 1) < t))  # ties: lower index first
            assert ranks[u] == float(int(ahead.sum()) + 1)
    assert 6 not in top.flatten().tolist()


@pytest.mark.parametrize("sampled", [False, True])
def test_training_and_validation_run_under_bf16_autocast(sampled):
    """The GPU path (bf16 autocast in the loss, in validation and in ranking), exercised on CPU."""
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = TrainConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.0, batch_size=16, lr=1e-2, warmup_steps=5,
                       full_softmax_max_items=10 if sampled else 200_000, n_negatives=8)
    torch.manual_seed(0)
    rec = Recommender(build_model(vocab, tcfg, 8), vocab, {}, positive_counts(split.train, vocab))
    history = fit(rec, TrainingSet(split.train, 8), split.valid, tcfg, epochs=2, max_minutes=1.0, seed=0,
                  device=torch.device("cpu"), amp_dtype=torch.bfloat16)
    assert all(math.isfinite(h["train_loss"]) and 0.0 <= h["val_ndcg_at_10"] <= 1.0 for h in history)


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
    scores = {g: evaluate_knn(TransitionKNN.fit(split.train, vocab, counts, window=g[0], last_n=g[1], decay=g[2]),
                              split.valid)["ndcg_at_10"] for g in grid}
    best = max(grid, key=lambda g: scores[g])
    assert (choice["window"], choice["last_n"], choice["decay"]) == best
    assert choice["val_ndcg_at_10"] == scores[best] > scores[(10, 20, 1.0)]
    assert (knn.last_n, knn.decay) == best[1:]
    _, first = tune_knn(split.train, vocab, counts, [], grid=grid)  # no validation: the first grid point
    assert (first["window"], first["last_n"]) == (10, 20) and math.isnan(first["val_ndcg_at_10"])


def test_targets_are_the_positive_event_types_exposure_and_negatives_stay_context():
    from models.encoding import DEFAULT_POSITIVE_TYPES, positive_types

    assert set(DEFAULT_POSITIVE_TYPES) == {"click", "view", "add_to_cart", "purchase", "rate", "like", "share"}
    assert set(positive_types(("impression",), ())) == set(DEFAULT_POSITIVE_TYPES) | {"skip", "dislike"}
