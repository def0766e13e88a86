"""Item text and cold-start items: the title job (real encoder, offline, cached by hash, gated, published) and the
planted catalogue where held-out items never seen in training must reach the lists through their titles alone.

The planted catalogue (datatools/coldstart.py): 8 themes; a theme's cold items share no word and no category with
its warm items ("Nebula, Galaxy" vs "Astronaut, Rocket"); every user reads warm items of one theme, then two cold
ones (the validation and test targets, so no cold item has a training event). Popularity, the transition kNN and
the model without text cannot place a cold item; with the title vectors the model must. 120 more cold items of
themes no user follows are there to be passed over. Measured when written (240 users, 8 x (20 warm + 6 cold) +
8 x 15 distractor items, one thread): HR@20 with text 0.887, without 0.062; popularity and kNN 0.0.
"""

from __future__ import annotations

import socket

import pyarrow.parquet as pq
import pytest
import torch

from attnrec import lake
from attnrec.settings import get_settings
from datatools.coldstart import THEMES, planted_catalogue
from expectations.runner import GateFailed
from jobs import item_text
from models.baselines import TransitionKNN, evaluate_knn, evaluate_popularity
from models.config import build_model
from models.dataset import TrainingSet, leave_one_out, positive_counts
from models.encoding import Events
from models.evaluate import cold_slices, evaluate_recommender
from models.features import read_item_text
from models.fit import fit
from models.recommender import Recommender
from models.vocab import ItemVocab
from tests.model_helpers import config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py
DT = "2026-01-31"


@pytest.fixture(scope="module")
def encoder():
    """The real sentence encoder, loaded once, with every socket connect refused: it must load offline."""
    real = socket.socket.connect

    def refuse(self, address):
        raise AssertionError(f"the item text encoder tried the network: {address}")

    socket.socket.connect = refuse
    try:
        yield item_text.load_encoder()
    finally:
        socket.socket.connect = real


def test_planted_titles_share_no_word_between_warm_and_cold_items():
    planted = planted_catalogue(n_users=10)
    for theme, (warm_words, cold_words) in THEMES.items():
        words = {
            kind: {w for r in planted.items if r["item_id"].startswith(f"{theme}-{kind}") for w in _words(r["title"])}
            for kind in ("w", "c")
        }
        assert words["w"] and words["c"] and not words["w"] & words["c"], theme
    assert all(seq[-1] in planted.cold and seq[-2] in planted.cold for seq in planted.sequences.values())


def _words(title: str) -> set[str]:
    return {w.strip(",").lower() for w in title.split()}


def test_encoder_places_a_cold_title_nearest_its_own_theme(encoder):
    vectors = item_text.embed(["Nebula, Galaxy", "Astronaut, Rocket", "Recipe, Kitchen", "Pastry, Soup"], 8, encoder)
    assert vectors.shape == (4, item_text.ENCODER_DIM) and vectors.dtype.name == "float32"
    sim = vectors @ vectors.T
    assert sim[0, 1] > sim[0, 2] and sim[3, 2] > sim[3, 1]  # space with space, cooking with cooking


def _lake_items(root, dt: str, titles: dict[str, str | None]) -> None:
    """A published features/items partition with ``titles`` (item_id -> title) as items 1..N."""
    import pyarrow as pa

    path = lake.partition(str(root), lake.FEATURE_ITEMS, dt)
    (root / "features" / "items" / f"dt={dt}").mkdir(parents=True)
    table = pa.table(
        {
            "item_idx": pa.array(range(1, len(titles) + 1), pa.int32()),
            "item_id": list(titles),
            "title": list(titles.values()),
        }
    )
    pq.write_table(table, f"{path}/part-0.parquet")
    (root / "features" / "items" / f"dt={dt}" / lake.SUCCESS_MARKER).touch()


def test_job_embeds_titles_once_reuses_them_gates_and_publishes(tmp_path, encoder):
    root = tmp_path / "lake"
    settings = get_settings().model_copy(update={"data_root": str(root)})
    _lake_items(root, "2026-01-30", {"a": "Nebula, Galaxy", "b": "  ", "c": "Recipe, Kitchen"})
    first = item_text.run(str(root), "2026-01-30", 8, encoder)
    assert {k: first[k] for k in ("items", "with_text", "embedded", "reused")} == {
        "items": 3,
        "with_text": 2,
        "embedded": 2,
        "reused": 0,
    }
    item_text.gate(str(root), "2026-01-30", settings)
    lake.publish_all(str(root), (lake.FEATURE_ITEM_TEXT,), "2026-01-30")
    published = pq.read_table(lake.partition(str(root), lake.FEATURE_ITEM_TEXT, "2026-01-30"))
    assert published.column("item_id").to_pylist() == ["a", "c"]  # "b" has no title: no row
    assert published.column("text_hash").to_pylist() == [
        item_text.text_hash("Nebula, Galaxy"),
        item_text.text_hash("Recipe, Kitchen"),
    ]

    # the next day: one title unchanged, one edited, one new; only those two go through the encoder
    _lake_items(root, DT, {"a": "Nebula, Galaxy", "c": "Pastry, Soup", "d": "Astronaut, Rocket"})
    second = item_text.run(str(root), DT, 8, encoder)
    assert {k: second[k] for k in ("with_text", "embedded", "reused")} == {"with_text": 3, "embedded": 2, "reused": 1}
    staged = pq.read_table(lake.staging(str(root), lake.FEATURE_ITEM_TEXT, DT))
    assert staged.column("embedding")[0].as_py() == published.column("embedding")[0].as_py()  # copied, not redone
    item_text.gate(str(root), DT, settings)

    # a rerun of the day reuses everything (its own published partition is the cache) and writes the same rows
    lake.publish_all(str(root), (lake.FEATURE_ITEM_TEXT,), DT)
    again = item_text.run(str(root), DT, 8, encoder)
    assert again["embedded"] == 0 and again["reused"] == 3
    assert pq.read_table(lake.staging(str(root), lake.FEATURE_ITEM_TEXT, DT)).equals(staged)

    vocab = ItemVocab.from_items([{"item_idx": i, "item_id": x} for i, x in enumerate("acd", start=1)])
    text = read_item_text(lake.partition(str(root), lake.FEATURE_ITEM_TEXT, DT), vocab)
    assert text.shape == (4, item_text.ENCODER_DIM) and torch.equal(text[0], torch.zeros(item_text.ENCODER_DIM))
    assert torch.allclose(text.norm(dim=1)[1:], torch.ones(3), atol=1e-4)


def test_gate_fails_naming_an_item_whose_title_has_no_vector(tmp_path, encoder):
    root = tmp_path / "lake"
    settings = get_settings().model_copy(update={"data_root": str(root)})
    _lake_items(root, DT, {"a": "Nebula, Galaxy", "c": "Recipe, Kitchen"})
    item_text.run(str(root), DT, 8, encoder)
    staged = lake.staging(str(root), lake.FEATURE_ITEM_TEXT, DT)
    table = pq.read_table(staged)
    pq.write_table(table.slice(0, 1), f"{staged}/part-00000.parquet")  # item "c" lost its vector
    with pytest.raises(GateFailed, match=r"1 items with a title have no vector \(first \['c'\]\)"):
        item_text.gate(str(root), DT, settings)


def test_cold_items_reach_the_lists_only_through_their_titles(encoder):
    planted = planted_catalogue(
        n_users=240, warm_per_theme=20, cold_per_theme=6, history=8, seed=1, distractors_per_theme=15
    )
    vocab = ItemVocab.from_items(planted.items)
    users = [
        Events(u, seq, ["rate"] * len(seq), [60_000 * (j + 1) for j in range(len(seq))], [None] * len(seq))
        for u, seq in planted.sequences.items()
    ]
    split = leave_one_out(users, vocab)
    counts = positive_counts(split.train, vocab)
    assert all(h.target in planted.cold and counts[vocab.index[h.target]] == 0 for h in split.test)
    slices = cold_slices(split.test, counts, vocab, max_item_events=0, max_user_events=5)
    assert len(slices["cold_items"]) == len(split.test) and slices["cold_users"] == []

    vectors = item_text.embed([r["title"] for r in planted.items], 64, encoder)
    text = torch.cat([torch.zeros(1, vectors.shape[1]), torch.from_numpy(vectors)])
    tcfg = config(d_model=32, n_heads=2, n_layers=1, dropout=0.1, epochs=12, patience=100, max_seq_len=10, seed=0)
    hr = {}
    for name, with_text in (("text", text), ("no text", None)):
        torch.manual_seed(0)
        rec = Recommender(build_model(vocab, tcfg, item_text=with_text), vocab, {}, counts)
        rec.model.items.set_warm(counts > 0)
        fit(rec, TrainingSet(split.train, 10), [], tcfg, device=torch.device("cpu"))
        hr[name] = evaluate_recommender(rec, split.test, k=20)["hr_at_20"]
    hr["popularity"] = evaluate_popularity(counts, vocab, split.test, k=20)["hr_at_20"]
    hr["kNN"] = evaluate_knn(TransitionKNN.fit(split.train, vocab, counts), split.test, k=20)["hr_at_20"]

    assert hr["popularity"] == 0.0 and hr["kNN"] == 0.0, hr
    assert hr["no text"] <= 0.25, hr  # a block of look-alike cold items, ranked by chance
    assert hr["text"] >= 0.6, hr


def test_a_cold_item_is_its_content_and_title_and_never_a_training_negative():
    vocab = ItemVocab.from_items(
        [{"item_idx": i, "item_id": f"i{i}", "categories": [], "year": None} for i in (1, 2, 3)]
    )
    text = torch.zeros(4, 8)
    text[1:, :] = torch.eye(8)[:3]
    torch.manual_seed(0)
    model = build_model(vocab, config(d_model=16, n_heads=2, n_layers=1, dropout=0.0), item_text=text).eval()
    model.items.set_warm(torch.tensor([False, True, True, False]))  # item 3 had no positive training event
    with torch.no_grad():
        model.item_bias.fill_(0.5)
        table = model.item_table()
        proj = model.items.text_proj(text)
        year0 = model.items.year_emb(torch.zeros(1, dtype=torch.long))[0]  # padding row: zero
    assert torch.allclose(table[3], proj[3] + year0) and table[3].abs().sum() > 0  # title only, no id
    assert torch.allclose(table[1], model.items.id_emb.weight[1] + proj[1])
    assert model.item_biases().tolist() == [0.0, 0.5, 0.5, 0.0]
    assert model.cold_items().tolist() == [True, False, False, True]

    # the full softmax and the sampled one leave item 3 out: moving its logit changes neither loss
    from models.losses import next_item_loss

    inputs = {k: torch.tensor([[0, 1]]) for k in ("event_types", "dwell", "gap")}
    inputs["items"] = torch.tensor([[0, 1]])
    targets = torch.tensor([[0, 2]])
    before = next_item_loss(model, inputs, targets)
    sampled_before = next_item_loss(model, inputs, targets, torch.tensor([1, 3]), torch.zeros(4))
    with torch.no_grad():
        model.items.item_text[3] = 5 * torch.ones(8)
    assert torch.equal(next_item_loss(model, inputs, targets), before)
    assert torch.equal(next_item_loss(model, inputs, targets, torch.tensor([1, 3]), torch.zeros(4)), sampled_before)

    # the checkpoint carries the text and the warm mask; one written before them loads with every item warm
    from models.model import from_checkpoint, to_checkpoint

    again = from_checkpoint(to_checkpoint(model, {}))
    assert torch.equal(again.item_table(), model.item_table()) and again.cold_items().tolist()[3]
    old = to_checkpoint(model, {})
    for key in [k for k in old["state_dict"] if k.endswith("item_warm")]:
        del old["state_dict"][key]
    assert from_checkpoint(old).cold_items() is not None and not from_checkpoint(old).cold_items().any()
