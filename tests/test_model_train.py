"""Tests of the training loop (CPU, tiny): a tiny model overfits a planted pattern, checkpoints hold the
best weights and resume exactly, sampled softmax and bf16 autocast train; the training config."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from typer.testing import CliRunner

from attnrec.cli import app
from attnrec.settings import get_settings
from models import train
from models.baselines import evaluate_popularity
from models.config import build_model, train_config
from models.dataset import TrainingSet, leave_one_out, positive_counts
from models.evaluate import evaluate_recommender
from models.fit import fit
from models.recommender import Recommender
from models.vocab import ItemVocab
from tests.model_helpers import config, item_rows, planted_walks, random_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def test_tiny_model_overfits_a_planted_next_item_pattern():
    torch.manual_seed(0)
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = config(
        d_model=32,
        n_heads=2,
        n_layers=1,
        dropout=0.0,
        batch_size=16,
        lr=1e-2,
        warmup_steps=5,
        weight_decay=0.0,
        patience=100,
        max_seq_len=8,
        epochs=40,
        seed=0,
    )
    rec = Recommender(build_model(vocab, tcfg), vocab, {"dt": "2026-01-01"}, positive_counts(split.train, vocab))
    examples = TrainingSet(split.train, 8)
    history = fit(rec, examples, split.valid, tcfg, device=torch.device("cpu"))
    assert history[0]["train_loss"] > 2.5  # ~ log(20) at the start
    assert history[-1]["train_loss"] < 0.2
    metrics = evaluate_recommender(rec, split.test)
    assert metrics["hr_at_10"] == 1.0
    assert metrics["mrr_at_10"] > 0.95  # the planted successor is ranked first for (nearly) everyone
    assert evaluate_popularity(rec.popularity, vocab, split.test)["mrr_at_10"] < 0.5


class Interrupted(Exception):
    pass


def epochs(tcfg, n: int):
    return dataclasses.replace(tcfg, epochs=n)


def _planted_training(dropout: float = 0.3, **overrides):
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = config(
        d_model=16,
        n_heads=2,
        n_layers=1,
        dropout=dropout,
        batch_size=16,
        lr=1e-2,
        warmup_steps=5,
        patience=100,
        max_seq_len=8,
        seed=0,
        **overrides,
    )
    examples = TrainingSet(split.train, 8)

    def fresh(seed: int) -> Recommender:
        torch.manual_seed(seed)
        return Recommender(build_model(vocab, tcfg), vocab, {}, positive_counts(split.train, vocab))

    return split, tcfg, examples, fresh


def test_training_checkpoint_holds_the_best_weights_and_round_trips(tmp_path):
    split, tcfg, examples, fresh = _planted_training()
    rec = fresh(0)
    path = str(tmp_path / "ckpt" / "model.pt")
    torch.manual_seed(0)
    history = fit(rec, examples, split.valid, epochs(tcfg, 3), device=torch.device("cpu"), checkpoint_path=path)
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
    straight_history = fit(straight, examples, split.valid, epochs(tcfg, 4), device=cpu)

    path = str(tmp_path / "model.pt")

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Interrupted

    torch.manual_seed(0)
    with pytest.raises(Interrupted):
        fit(fresh(0), examples, split.valid, epochs(tcfg, 4), device=cpu, checkpoint_path=path, on_epoch=stop_after_two)
    assert torch.load(path, weights_only=True)["epoch"] == 2

    torch.manual_seed(12345)  # another process: other initial weights and RNG state
    resumed = fresh(7)
    seen: list[float] = []
    resumed_history = fit(
        resumed,
        examples,
        split.valid,
        epochs(tcfg, 4),
        device=cpu,
        checkpoint_path=path,
        on_epoch=lambda row: seen.append(row["epoch"]),
    )
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
    fit(
        again,
        examples,
        split.valid,
        epochs(tcfg, 4),
        device=cpu,
        checkpoint_path=path,
        on_epoch=lambda row: calls.append(row["epoch_seconds"]),
    )
    assert calls == [row["epoch_seconds"] for row in resumed_history]
    assert all(torch.equal(a[k], again.model.state_dict()[k]) for k in a)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    split, tcfg, examples, fresh = _planted_training()
    path = str(tmp_path / "model.pt")
    fit(fresh(0), examples, split.valid, epochs(tcfg, 1), device=torch.device("cpu"), checkpoint_path=path)
    with pytest.raises(ValueError, match="written for another model, training config"):
        fit(fresh(0), examples, split.valid, epochs(tcfg, 2), device=torch.device("cpu"), checkpoint_path=path)


def test_sampled_softmax_trains_a_tiny_set():
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = config(
        d_model=32,
        n_heads=2,
        n_layers=1,
        dropout=0.0,
        batch_size=16,
        lr=1e-2,
        warmup_steps=5,
        weight_decay=0.0,
        patience=100,
        full_softmax_max_items=10,
        n_negatives=8,
        max_seq_len=8,
        epochs=40,
        seed=0,
    )
    torch.manual_seed(0)
    rec = Recommender(build_model(vocab, tcfg), vocab, {}, positive_counts(split.train, vocab))
    history = fit(rec, TrainingSet(split.train, 8), split.valid, tcfg, device=torch.device("cpu"))
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert history[0]["train_loss"] < math.log(20) - 0.4  # ~ log(1 + 8): it is the sampled loss, not the full one
    assert history[-1]["train_loss"] < 0.3 * history[0]["train_loss"]
    metrics = evaluate_recommender(rec, split.test)  # evaluation still ranks the whole catalogue
    assert metrics["hr_at_10"] == 1.0 and metrics["mrr_at_10"] > 0.9


@pytest.mark.parametrize("sampled", [False, True])
def test_training_and_validation_run_under_bf16_autocast(sampled):
    """The GPU path (bf16 autocast in the loss, in validation and in ranking), exercised on CPU."""
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = config(
        d_model=16,
        n_heads=2,
        n_layers=1,
        dropout=0.0,
        batch_size=16,
        lr=1e-2,
        warmup_steps=5,
        full_softmax_max_items=10 if sampled else 200_000,
        n_negatives=8,
        max_seq_len=8,
        epochs=2,
        seed=0,
    )
    torch.manual_seed(0)
    rec = Recommender(build_model(vocab, tcfg), vocab, {}, positive_counts(split.train, vocab))
    history = fit(
        rec, TrainingSet(split.train, 8), split.valid, tcfg, device=torch.device("cpu"), amp_dtype=torch.bfloat16
    )
    assert all(math.isfinite(h["train_loss"]) and 0.0 <= h["val_ndcg_at_10"] <= 1.0 for h in history)


@pytest.mark.parametrize(
    "word,value",
    [
        ("true", True),
        ("YES", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("No", False),
        ("0", False),
        ("off", False),
    ],
)
def test_boolean_overrides_take_the_settings_spellings(word, value):
    assert train_config(get_settings(), [f"mask_seen={word}"]).mask_seen is value


@pytest.mark.parametrize("word", ["perhaps", "", "2", "truthy"])
def test_a_boolean_override_that_is_no_boolean_is_refused(word):
    message = f"--set 'mask_seen={word}': '{word}' is not a boolean; use one of 1, true, yes, on or 0, false, no, off"
    with pytest.raises(ValueError) as err:
        train_config(get_settings(), [f"mask_seen={word}"])
    assert str(err.value) == message


def test_the_training_config_comes_from_the_settings_for_every_caller(monkeypatch):
    """train_config reads epochs, wall clock, seed, sequence length, softmax size and the positive event types
    (exposure and negative types from the environment) from the settings; ``attnrec train`` uses it."""
    for name, value in {
        "ATTNREC_TRAIN_EPOCHS": "7",
        "ATTNREC_TRAIN_MAX_MINUTES": "2.5",
        "ATTNREC_SEED": "5",
        "ATTNREC_MAX_SEQ_LEN": "50",
        "ATTNREC_FULL_SOFTMAX_MAX_ITEMS": "1000",
        "ATTNREC_EXPOSURE_EVENT_TYPES": "impression",
        "ATTNREC_NEGATIVE_EVENT_TYPES": "none",
    }.items():
        monkeypatch.setenv(name, value)
    tcfg = train_config(get_settings(), ["dropout=0.1"])
    assert (tcfg.epochs, tcfg.max_minutes, tcfg.seed, tcfg.max_seq_len) == (7, 2.5, 5, 50)
    assert tcfg.full_softmax_max_items == 1000
    assert {"skip", "dislike"} <= set(tcfg.positive_types) and "impression" not in tcfg.positive_types
    assert tcfg.dropout == 0.1
    seen = []
    monkeypatch.setattr(train, "run", lambda dt, settings, tcfg: seen.append(tcfg) or {"rank": 0})
    result = CliRunner().invoke(app, ["train", "--dt", "2026-01-31", "--set", "dropout=0.1"])
    assert result.exit_code == 0, result.output
    assert seen == [tcfg]
    monkeypatch.setenv("ATTNREC_EXPOSURE_EVENT_TYPES", "impression,skip")
    monkeypatch.setenv("ATTNREC_NEGATIVE_EVENT_TYPES", "dislike")
    assert "skip" not in train_config(get_settings()).positive_types
