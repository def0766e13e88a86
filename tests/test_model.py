"""Tests of the network (CPU, tiny): causal mask, padding invariance, the config, the plain SASRec ablation,
the self-describing checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from models.config import build_model
from models.encoding import encode_sequences
from models.model import AttentionRecommender, ModelConfig
from models.recommender import Recommender
from models.vocab import ItemVocab
from tests.model_helpers import config, events, item_rows, random_batch, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


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
        ModelConfig(
            n_items=5,
            n_categories=1,
            max_categories=1,
            n_years=32,
            n_event_types=10,
            n_dwell_buckets=16,
            n_gap_buckets=32,
            max_len=16,
            d_model=10,
            n_heads=3,
            n_layers=1,
            dropout=0.0,
        )


def test_checkpoint_round_trip_gives_identical_scores(tmp_path):
    vocab = ItemVocab.from_items(item_rows(12))
    torch.manual_seed(5)
    rec = Recommender(
        build_model(vocab, config(d_model=16, max_seq_len=16)).eval(),
        vocab,
        {"dt": "2026-01-02", "snapshot_hash": "abc"},
        torch.arange(13, dtype=torch.float64),
    )
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


def test_id_only_model_has_no_content_or_context_and_ignores_them():
    vocab = ItemVocab.from_items(item_rows(12))
    torch.manual_seed(0)
    plain = build_model(vocab, config(d_model=16, dropout=0.0, max_seq_len=16), id_only=True).eval()
    full = build_model(vocab, config(d_model=16, dropout=0.0, max_seq_len=16)).eval()

    def embeddings(model: AttentionRecommender) -> set[str]:
        return {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}

    assert embeddings(plain) == {"id_emb", "pos_emb"}
    context = {"type_emb", "dwell_emb", "gap_emb"}
    context |= {"hour_emb", "weekday_emb", "session_emb", "heat_emb", "item_week_emb", "activity_emb", "device_emb"}
    assert embeddings(full) == {"id_emb", "pos_emb", "cat_emb", "year_emb", "attn_emb"} | context
    blind = build_model(vocab, config(d_model=16, dropout=0.0, max_seq_len=16, attention=False)).eval()
    assert embeddings(blind) == {"id_emb", "pos_emb", "cat_emb", "year_emb"} | context
    batch = random_batch(2, 6, 12)
    other = {
        **batch,
        "event_types": batch["event_types"] % 10 + 1,
        "dwell": batch["dwell"] % 15 + 1,
        "gap": batch["gap"] % 31 + 1,
    }
    stronger = {**batch, "attention": batch["attention"] % 22 + 1}
    dwell_only = {**batch, "dwell": batch["dwell"] % 15 + 1}
    with torch.no_grad():
        assert torch.equal(plain.encode(batch), plain.encode(other))  # only items and positions matter
        assert not torch.allclose(full.encode(batch), full.encode(other), atol=1e-4)
        assert not torch.allclose(full.encode(batch), full.encode(stronger), atol=1e-4)
        # the blind variant reads neither attention nor dwell
        assert torch.equal(blind.encode(batch), blind.encode(stronger))
        assert torch.equal(blind.encode(batch), blind.encode(dwell_only))
        plain.items.set_content(torch.zeros_like(plain.items.item_categories), torch.zeros_like(plain.items.item_year))
        assert torch.equal(plain.item_table(), plain.items.id_emb.weight * (torch.arange(13) > 0)[:, None])


def test_id_only_model_is_causal_and_round_trips_its_checkpoint(tmp_path):
    vocab = ItemVocab.from_items(item_rows(12))
    torch.manual_seed(0)
    rec = Recommender(
        build_model(vocab, config(d_model=16, dropout=0.0, max_seq_len=16), id_only=True).eval(),
        vocab,
        {},
        torch.zeros(13, dtype=torch.float64),
    )
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


def test_an_ablated_input_is_read_as_unknown_only_inside_the_block():
    from models.ablation import unknown

    vocab = ItemVocab.from_items(item_rows(12))
    torch.manual_seed(0)
    rec = Recommender(build_model(vocab, config(d_model=16, dropout=0.0, max_seq_len=16)).eval(), vocab, {}, None)
    batch = random_batch(2, 6, 12)
    as_unknown = {**batch, "attention": (batch["attention"] > 0).long()}
    with torch.no_grad():
        full = rec.model.encode(batch)
        with unknown(rec, "attention"):
            assert torch.equal(rec.model.encode(batch), rec.model.encode(as_unknown))
            assert not torch.allclose(rec.model.encode(batch), full, atol=1e-4)
        assert torch.equal(rec.model.encode(batch), full)
    with pytest.raises(ValueError, match="unknown signal 'colour'; use one of attention, dwell, gap"):
        with unknown(rec, "colour"):
            pass


@pytest.mark.parametrize("signal", ["heat", "item_week", "activity", "device"])
def test_each_as_of_signal_and_the_device_is_an_input_the_ablation_can_mask(signal):
    from models.ablation import SIGNALS, unknown

    vocab = ItemVocab.from_items(item_rows(12))
    torch.manual_seed(0)
    rec = Recommender(build_model(vocab, config(d_model=16, dropout=0.0, max_seq_len=16)).eval(), vocab, {}, None)
    column = SIGNALS[signal][0]
    assert rec.model.embed.reads(column)
    batch = random_batch(2, 6, 12)
    changed = {**batch, column: batch[column] % 20 + 2}  # other known buckets
    with torch.no_grad():
        full = rec.model.encode(batch)
        assert not torch.allclose(rec.model.encode(changed), full, atol=1e-4)  # the model reads it
        with unknown(rec, signal):
            assert torch.equal(rec.model.encode(batch), rec.model.encode(changed))  # masked: both read as unknown
        assert torch.equal(rec.model.encode(batch), full)


def test_ablation_table_has_with_without_and_delta_per_signal_largest_delta_first():
    from models.ablation import ablation_rows, format_table

    full = {"ndcg_at_10": 0.12, "hr_at_10": 0.2, "mrr_at_10": 0.09, "n_users": 10.0}
    ablated = {
        "device": {"ndcg_at_10": 0.12, "hr_at_10": 0.2, "mrr_at_10": 0.09},
        "heat": {"ndcg_at_10": 0.1, "hr_at_10": 0.21, "mrr_at_10": 0.08},
    }
    rows = ablation_rows(full, ablated)
    assert rows[1] == {
        "signal": "heat",
        "carries": "item heat as of the event",
        "ndcg_at_10_with": 0.12,
        "ndcg_at_10_without": 0.1,
        "ndcg_at_10_delta": 0.02,
        "hr_at_10_with": 0.2,
        "hr_at_10_without": 0.21,
        "hr_at_10_delta": -0.01,
        "mrr_at_10_with": 0.09,
        "mrr_at_10_without": 0.08,
        "mrr_at_10_delta": 0.01,
    }
    lines = format_table(rows).splitlines()
    assert lines[0] == (
        "| signal | carries | ndcg_at_10 with | ndcg_at_10 without | ndcg_at_10 delta | hr_at_10 with | "
        "hr_at_10 without | hr_at_10 delta | mrr_at_10 with | mrr_at_10 without | mrr_at_10 delta |"
    )
    assert lines[2] == (
        "| heat | item heat as of the event | 0.1200 | 0.1000 | +0.0200 | 0.2000 | 0.2100 | -0.0100 | 0.0900 | "
        "0.0800 | +0.0100 |"
    )
    assert lines[3].startswith("| device | device (hashed) | 0.1200 | 0.1200 | +0.0000 |")
