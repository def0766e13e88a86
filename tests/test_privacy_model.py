"""Pseudonyms do not change the model: the same features under raw ids and under pseudonyms (rows in the order the
pseudonyms sort, as featurize writes them) train the same attention model and the same ALS baseline to the same
metrics."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
import torch

from attnrec import lake
from tests.test_models_pipeline import DT, write_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")
KEY = b"a-test-key-for-the-model-invariance-check-0123456789"


def pseudonymize_features(root: str) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(lake.partition(root, lake.FEATURE_SEQUENCES, DT)) / "part-00000.parquet"
    table = pq.read_table(path)
    ids = [hmac.new(KEY, u.encode(), hashlib.sha256).hexdigest()[:32] for u in table.column("user_id").to_pylist()]
    table = table.set_column(table.schema.get_field_index("user_id"), "user_id", [ids])
    pq.write_table(table.take(pc.sort_indices(table, [("user_id", "ascending")])), path)


def train_and_evaluate(root: str) -> tuple[list[float], dict[str, float]]:
    from models.config import build_model
    from models.dataset import TrainingSet, positive_counts, read_split
    from models.evaluate import evaluate_recommender
    from models.features import load_features
    from models.fit import fit
    from models.recommender import Recommender
    from models.vocab import ItemVocab
    from tests.model_helpers import config

    paths, items, version = load_features(root, DT)
    vocab = ItemVocab.from_items(items)
    split = read_split(paths["sequences"], vocab)
    tcfg = config(
        d_model=16,
        n_layers=1,
        dropout=0.1,
        batch_size=4,
        lr=1e-2,
        warmup_steps=2,
        patience=100,
        max_seq_len=32,
        epochs=3,
        seed=7,
    )
    torch.manual_seed(7)
    rec = Recommender(build_model(vocab, tcfg), vocab, version, positive_counts(split.train, vocab))
    history = fit(rec, TrainingSet(split.train, 32), split.valid, tcfg, device=torch.device("cpu"))
    losses = [{k: v for k, v in epoch.items() if "seconds" not in k and "time" not in k} for epoch in history]
    from models.baselines import ImplicitALS, evaluate_mf

    counts = positive_counts(split.train, vocab)
    mf = evaluate_mf(ImplicitALS.fit(split.train, vocab, counts, factors=8, iterations=3, seed=7), split.test)
    return losses, {**evaluate_recommender(rec, split.test), **{f"mf_{k}": v for k, v in mf.items()}}


def test_raw_ids_and_pseudonyms_train_the_same_model(tmp_path):
    raw, pseudonymous = str(tmp_path / "raw"), str(tmp_path / "pseudonymous")
    write_features(raw)
    write_features(pseudonymous)
    pseudonymize_features(pseudonymous)
    first, second = train_and_evaluate(raw), train_and_evaluate(pseudonymous)
    assert len(first[0]) == 3
    for a, b in zip(first[0], second[0]):  # every epoch's loss and validation figures (summed in another order)
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)
    assert first[1] == pytest.approx(second[1], rel=1e-12, abs=1e-12)
