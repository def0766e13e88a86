"""Pipeline tests of models/ on a real MLflow registry (SQLite in tmp_path) and a tiny lake:
train.run end to end, the promotion gate, forced promotion / roll-back, the pyfunc, candidates."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from attnrec import lake
from attnrec.settings import get_settings

DT = "2026-01-31"
DT_EARLY, DT_LATER = "2026-01-30", "2026-02-01"  # a backfill day and the next day
N_ITEMS, N_USERS = 30, 40


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def write_features(root: str, dt: str = DT) -> None:
    """A tiny published features partition: users walk a fixed permutation of the items (so the next item
    is learnable), with impressions, dwell and time gaps mixed in; user u039 has seen 27 of the 30 items."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(7)
    perm = list(range(1, N_ITEMS + 1))
    rng.shuffle(perm)
    rows = []
    for u in range(N_USERS):
        n = 27 if u == N_USERS - 1 else rng.randint(4, 9)
        s = rng.randrange(N_ITEMS)
        items = [f"m{perm[(s + j) % N_ITEMS]:02d}" for j in range(n)]
        types = ["impression" if j % 5 == 4 else rng.choice(["click", "view", "purchase"]) for j in range(n)]
        times = [1_767_000_000_000 + u * 10_000_000 + j * rng.randint(1000, 900_000) for j in range(n)]
        dwell = [None if j % 3 == 0 else rng.randint(0, 60_000) for j in range(n)]
        rows.append(
            {
                "user_id": f"u{u:03d}",
                "item_ids": items,
                "event_types": types,
                "event_times_ms": times,
                "dwell_ms": dwell,
                "length": n,
            }
        )
    seq_schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("item_ids", pa.list_(pa.string())),
            ("event_types", pa.list_(pa.string())),
            ("event_times_ms", pa.list_(pa.int64())),
            ("dwell_ms", pa.list_(pa.int64())),
            ("length", pa.int32()),
        ]
    )
    genres = ["Action", "Comedy", "Drama", "Horror"]
    items_table = pa.table(
        {
            "item_idx": pa.array(range(1, N_ITEMS + 1), pa.int32()),
            "item_id": [f"m{i:02d}" for i in range(1, N_ITEMS + 1)],
            "title": [f"Movie {i}" for i in range(1, N_ITEMS + 1)],
            "categories": pa.array(
                [[genres[i % 4]] if i % 7 else [] for i in range(1, N_ITEMS + 1)], pa.list_(pa.string())
            ),
            "year": pa.array([None if i % 6 == 0 else 1960 + i for i in range(1, N_ITEMS + 1)], pa.int32()),
            "popularity": pa.array([0] * N_ITEMS, pa.int64()),
        }
    )
    for dataset, table in [
        (lake.FEATURE_SEQUENCES, pa.Table.from_pylist(rows, seq_schema)),
        (lake.FEATURE_ITEMS, items_table),
        # the features' ids stand for pseudonyms; the identity table maps them to themselves as the raw ids
        (
            lake.IDENTITY_USERS,
            pa.table({"pseudonym": [r["user_id"] for r in rows], "user_id": [r["user_id"] for r in rows]}),
        ),
    ]:
        path = Path(lake.partition(root, dataset, dt))
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path / "part-00000.parquet")
        (path / lake.SUCCESS_MARKER).touch()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ATTNREC_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("ATTNREC_TRAIN_EPOCHS", "3")
    monkeypatch.setenv("ATTNREC_TOP_K", "5")
    monkeypatch.setenv("ATTNREC_MAX_SEQ_LEN", "32")
    monkeypatch.setenv("ATTNREC_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    write_features(str(tmp_path / "lake"))
    return get_settings()


def test_missing_champion_is_a_clear_runtime_error(env):
    from models import candidates, registry

    expected = (
        f"no 'champion' version of model 'attention-recommender' in the MLflow registry at "
        f"{env.mlflow_tracking_uri}; run the train_recommender DAG first"
    )
    with pytest.raises(RuntimeError) as err:
        registry.load_champion(env)
    assert str(err.value) == expected
    with pytest.raises(RuntimeError, match="run the train_recommender DAG first"):
        candidates.run(DT, env)
    assert not Path(lake.staging(env.data_root, lake.CANDIDATES, DT)).exists()


def test_promotion_gate_promotes_better_and_refuses_worse(env):
    import mlflow

    from models import registry
    from models.config import build_model
    from models.dataset import TrainingSet, positive_counts, read_split
    from models.evaluate import evaluate_recommender
    from models.features import load_features
    from models.fit import fit
    from models.recommender import Recommender
    from models.vocab import ItemVocab
    from tests.model_helpers import config

    paths, items, version = load_features(env.data_root, DT)
    vocab = ItemVocab.from_items(items)
    split = read_split(paths["sequences"], vocab)
    counts = positive_counts(split.train, vocab)
    tcfg = config(
        d_model=32,
        n_layers=1,
        dropout=0.0,
        batch_size=8,
        lr=1e-2,
        warmup_steps=5,
        patience=100,
        max_seq_len=32,
        epochs=30,
        seed=1,
    )

    def model(trained: bool) -> Recommender:
        torch.manual_seed(1)
        rec = Recommender(build_model(vocab, tcfg), vocab, version, counts)
        if trained:
            fit(rec, TrainingSet(split.train, 32), split.valid, tcfg, device=torch.device("cpu"))
        return rec

    untrained, trained = model(False), model(True)
    ndcg = {name: evaluate_recommender(r, split.valid)["ndcg_at_10"] for name, r in [("u", untrained), ("t", trained)]}
    assert ndcg["t"] > ndcg["u"] + 0.2

    experiment = registry.ensure_experiment(env)

    def log_and_gate(rec: Recommender, tmp: Path) -> tuple[str, bool, str]:
        with mlflow.start_run(experiment_id=experiment) as run:
            uri = registry.log_recommender(rec, str(tmp), split.test[:2])
            v = registry.register(env, uri, run.info.run_id)
            promoted, reason = registry.gate(
                env, v, evaluate_recommender(rec, split.valid)["ndcg_at_10"], split.valid, DT
            )
        return v, promoted, reason

    v1, p1, r1 = log_and_gate(untrained, env.local_data_root.parent)
    assert (v1, p1) == ("1", True) and r1.startswith("no champion yet")
    v2, p2, r2 = log_and_gate(trained, env.local_data_root.parent)
    assert (v2, p2) == ("2", True) and "> champion v1" in r2
    v3, p3, r3 = log_and_gate(untrained, env.local_data_root.parent)
    assert (v3, p3) == ("3", False) and "champion v2" in r3 and r3.endswith("champion kept")
    assert registry.alias_version(env, "champion") == "2"
    assert registry.alias_version(env, "challenger") == "3"

    client = registry.client(env)
    mv3 = client.get_model_version(env.model_name, "3")
    assert mv3.tags["promotion_decision"] == "rejected" and mv3.tags["promotion_holdout"] == "validation"
    assert float(mv3.tags["champion_ndcg_at_10"]) == pytest.approx(ndcg["t"], abs=1e-6)
    assert mv3.description == r3
    assert client.get_model_version(env.model_name, "2").tags["promotion_decision"] == "promoted"

    # the champion served is the trained model, rebuilt from the registry artifact alone
    rec, version_loaded = registry.load_champion(env)
    assert version_loaded == "2"
    assert evaluate_recommender(rec, split.valid)["ndcg_at_10"] == pytest.approx(ndcg["t"], abs=1e-6)

    # forced roll-back through the CLI, and a clear error for a version that does not exist
    from typer.testing import CliRunner

    from attnrec.cli import app

    promoted = CliRunner().invoke(app, ["registry", "promote", "--version", "1", "--reason", "roll back for the test"])
    assert promoted.exit_code == 0, promoted.output
    assert registry.alias_version(env, "champion") == "1"
    assert client.get_model_version(env.model_name, "1").tags["promotion_decision"] == "forced"
    with pytest.raises(ValueError, match="has no version '9'"):
        registry.promote(env, "9")


def _split(settings, dt: str):
    from models.dataset import read_split
    from models.features import load_features
    from models.vocab import ItemVocab

    paths, items, _ = load_features(settings.data_root, dt)
    return read_split(paths["sequences"], ItemVocab.from_items(items))


def test_the_gate_compares_on_the_validation_holdout_and_test_stays_untouched(env, monkeypatch):
    """Both versions are evaluated on the run's validation holdout (each user's second-to-last positive event);
    the test holdout (the last one) decides nothing and is only reported."""
    from models import registry, train
    from models.evaluate import evaluate_recommender

    monkeypatch.setenv("ATTNREC_TRAIN_ABLATION", "false")
    write_features(env.data_root, DT_LATER)
    settings = get_settings()
    assert train.run(DT, settings)["model_version"] == "1"
    later = train.run(DT_LATER, settings)
    assert later["model_version"] == "2"

    split = _split(settings, DT_LATER)
    v1, v2 = registry.load_version(settings, "1"), registry.load_version(settings, "2")
    champion_val = evaluate_recommender(v1, split.valid)["ndcg_at_10"]
    assert champion_val != pytest.approx(evaluate_recommender(v1, split.test)["ndcg_at_10"], abs=1e-6)
    mv2 = registry.client(settings).get_model_version(settings.model_name, "2")
    assert float(mv2.tags["champion_ndcg_at_10"]) == pytest.approx(champion_val, abs=1e-6)
    assert float(mv2.tags["val_ndcg_at_10"]) == pytest.approx(
        evaluate_recommender(v2, split.valid)["ndcg_at_10"], abs=1e-6
    )
    assert mv2.tags["promotion_holdout"] == "validation" and mv2.tags["champion_feature_dt"] == DT
    assert "on the same validation holdout" in later["reason"] and mv2.description == later["reason"]
    # the reported test figure is the untouched one
    assert later["metrics"]["ndcg_at_10"] == pytest.approx(evaluate_recommender(v2, split.test)["ndcg_at_10"])


def test_a_backfill_never_promotes_backwards_in_time(env, monkeypatch):
    """A champion trained on features of a later day has seen an earlier day's holdout targets: the gate does not
    compare, keeps the champion and says why on the version; ATTNREC_BACKFILL_PROMOTE=true lets it through."""
    from models import registry, train

    monkeypatch.setenv("ATTNREC_TRAIN_ABLATION", "false")
    write_features(env.data_root, DT_EARLY)
    settings = get_settings()
    client = registry.client(settings)
    assert train.run(DT, settings)["promoted"] is True  # v1 on features of DT

    back = train.run(DT_EARLY, settings)
    assert (back["model_version"], back["promoted"]) == ("2", False)
    assert back["reason"] == (
        f"backfill not compared, champion kept: champion v1 was trained on features of {DT}, later than this "
        f"run's dt={DT_EARLY}, so it has seen this run's holdout targets and the two cannot be compared. To serve "
        "this version anyway: `attnrec registry promote --version 2 --reason ...`, or re-run with "
        "ATTNREC_BACKFILL_PROMOTE=true"
    )
    mv2 = client.get_model_version(settings.model_name, "2")
    assert mv2.description == back["reason"] and mv2.tags["promotion_reason"] == back["reason"]
    assert (mv2.tags["promotion_decision"], mv2.tags["promotion_holdout"], mv2.tags["champion_ndcg_at_10"]) == (
        "not_compared",
        "none",
        "none",
    )
    assert (mv2.tags["champion_before"], mv2.tags["champion_feature_dt"]) == ("1", DT)
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "challenger") == "2"

    monkeypatch.setenv("ATTNREC_BACKFILL_PROMOTE", "true")
    forced = train.run(DT_EARLY, get_settings())
    assert (forced["model_version"], forced["promoted"]) == ("3", True)
    assert forced["reason"].startswith("backfill promoted without a comparison (ATTNREC_BACKFILL_PROMOTE=true): ")
    assert registry.alias_version(settings, "champion") == "3"
    assert client.get_model_version(settings.model_name, "3").tags["promotion_decision"] == "promoted"


def test_decide_rule():
    from models.registry import decide

    assert decide(0.2, None, 0.0)[0] is True
    assert decide(0.2, 0.1, 0.05, "4") == (
        True,
        "validation NDCG@10 0.2000 > champion v4 0.1000 + margin 0.0500 on the same validation holdout",
    )
    assert decide(0.12, 0.1, 0.05, "4")[0] is False
    assert decide(0.1, 0.1, 0.0, "4")[0] is False  # a tie keeps the champion


def test_train_run_then_candidates(env):
    import mlflow
    import pyarrow.parquet as pq

    from models import candidates, registry, train

    result = train.run(DT, env)
    assert set(result) == {
        "run_id",
        "model_version",
        "metrics",
        "baseline_metrics",
        "knn_metrics",
        "mf_metrics",
        "sasrec_plain_metrics",
        "slices",
        "promoted",
        "reason",
    }
    assert result["model_version"] == "1" and result["promoted"] is True
    scorers = {
        "": "metrics",
        "pop_": "baseline_metrics",
        "knn_": "knn_metrics",
        "mf_": "mf_metrics",
        "sasrec_plain_": "sasrec_plain_metrics",
    }
    for key in scorers.values():
        m = result[key]
        assert set(m) == {"hr_at_10", "ndcg_at_10", "mrr_at_10", "recall_at_50", "coverage_at_10", "n_users"}
        assert m["n_users"] == 40.0  # every scorer on the same holdout
        assert 0.0 <= m["ndcg_at_10"] <= m["hr_at_10"] <= m["recall_at_50"] <= 1.0
    # the walks follow a fixed permutation: the transition kNN finds it, popularity cannot
    assert result["knn_metrics"]["hr_at_10"] > result["baseline_metrics"]["hr_at_10"] + 0.3

    client = registry.client(env)
    run = client.get_run(result["run_id"])
    for prefix, key in scorers.items():
        for metric in ("ndcg_at_10", "hr_at_10"):
            assert run.data.metrics[f"{prefix}test_{metric}"] == pytest.approx(result[key][metric])
    assert len(client.get_metric_history(result["run_id"], "val_ndcg_at_10")) == run.data.metrics["epochs_run"] <= 3
    assert (
        len(client.get_metric_history(result["run_id"], "sasrec_plain_val_ndcg_at_10"))
        == run.data.metrics["sasrec_plain_epochs_run"]
        <= 3
    )
    assert run.data.tags["feature_dt"] == DT
    assert len(run.data.tags["feature_snapshot_hash"]) == 16 and run.data.tags["git_commit"]
    assert run.data.tags["item_text_dim"] == "0"  # no features/item_text published here: trained without text
    # the cold slices: every scorer on the same users, logged beside the whole holdout
    assert set(result["slices"]) == {"cold_items", "cold_users"}
    for name, by_scorer in result["slices"].items():
        n = by_scorer["n_users"]
        assert run.data.metrics[f"test_{name}_n_users"] == n and 0 <= n <= 40
        for prefix in scorers if n else ():
            assert by_scorer[prefix]["n_users"] == n
            assert run.data.metrics[f"{prefix}test_{name}_ndcg_at_10"] == pytest.approx(by_scorer[prefix]["ndcg_at_10"])
    assert run.data.params["epochs"] == "3"
    assert run.data.params["loss"] == "full_softmax" and run.data.params["train_ablation"] == "True"
    from models.baselines import KNN_GRID, MF_GRID  # the tuned baselines: their choice on validation, logged alike

    knn_choice = tuple(run.data.params[f"knn_{k}"] for k in ("window", "last_n", "decay"))
    assert knn_choice in {tuple(map(str, g)) for g in KNN_GRID}
    mf_choice = tuple(run.data.params[f"mf_{k}"] for k in ("factors", "regularization", "alpha"))
    assert mf_choice in {tuple(map(str, g)) for g in MF_GRID}
    assert 0.0 < run.data.metrics["mf_val_ndcg_at_10"] <= 1.0 and 0.0 < run.data.metrics["knn_val_ndcg_at_10"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(result["run_id"], "plots")}
    assert artifacts == {"plots/training_curves.png", "plots/model_vs_baselines.png"}
    assert not any(Path(env.checkpoint_dir).glob("*/*.pt"))  # checkpoints are removed once the run is recorded
    assert client.get_experiment(run.info.experiment_id).artifact_location == env.mlflow_artifact_root
    assert registry.alias_version(env, "champion") == registry.alias_version(env, "challenger") == "1"
    from attnrec.cli import summary_lines  # what make demo prints: the champion beside every baseline of its run

    lines = summary_lines(DT)
    table = lines[lines.index("Test metrics (same leave-one-out split, full catalogue):") + 1 :]
    assert table[0].split() == ["hr_at_10", "ndcg_at_10", "mrr_at_10", "recall_at_50", "coverage_at_10"]
    assert [row.split()[0] for row in table[1:-1]] == ["attention", "transition", "ALS", "plain", "popularity"]
    assert f"{result['knn_metrics']['ndcg_at_10']:.4f}" in table[2]
    assert f"{result['mf_metrics']['ndcg_at_10']:.4f}" in table[3]
    # the input ablation: the model evaluated once per signal read as unknown; these features have no attention
    # column, so attention is unknown already and masking it changes nothing
    ablated = {k for k in run.data.metrics if k.startswith("ablation_") and k.endswith("_test_ndcg_at_10")}
    signals = ("attention", "dwell", "gap", "hour", "weekday", "session", "heat", "item_week", "activity", "device")
    assert ablated == {f"ablation_{s}_test_ndcg_at_10" for s in signals}
    assert run.data.metrics["ablation_attention_test_ndcg_at_10"] == run.data.metrics["test_ndcg_at_10"]
    assert table[-1].startswith("Input ablation (attention recommender, test NDCG@10 ")
    # and as a table in the run's artifacts: one row per signal, with = the model's test metric, delta = with - without
    rows = mlflow.artifacts.load_dict(f"runs:/{result['run_id']}/ablation/input_ablation.json")["rows"]
    assert [r["signal"] for r in rows] == list(signals)
    for r in rows:
        assert r["ndcg_at_10_with"] == round(run.data.metrics["test_ndcg_at_10"], 4)
        assert r["ndcg_at_10_without"] == round(run.data.metrics[f"ablation_{r['signal']}_test_ndcg_at_10"], 4)
    markdown = mlflow.artifacts.load_text(f"runs:/{result['run_id']}/ablation/input_ablation.md").splitlines()
    assert markdown[0].startswith("| signal | carries | ndcg_at_10 with | ndcg_at_10 without | ndcg_at_10 delta |")
    assert len(markdown) == 2 + len(signals)
    # the command that writes the table for a registered version: the same holdout gives the same figures
    from benchmarks.ablation import run as ablation_run

    _, full, again = ablation_run(DT)
    assert full["ndcg_at_10"] == pytest.approx(run.data.metrics["test_ndcg_at_10"])
    expected = {s: run.data.metrics[f"ablation_{s}_test_ndcg_at_10"] for s in signals}
    assert {s: m["ndcg_at_10"] for s, m in again.items()} == pytest.approx(expected)
    (ablation_run_info,) = client.search_runs([run.info.experiment_id], "tags.kind = 'input_ablation'")
    assert ablation_run_info.data.tags["model_version"] == "1" and ablation_run_info.info.run_name == f"ablation-{DT}"
    assert client.list_artifacts(ablation_run_info.info.run_id, "ablation")

    # the registered pyfunc serves ranked unseen items for features/sequences-shaped input
    model = mlflow.pyfunc.load_model("models:/attention-recommender@champion")
    assert model.metadata.get_input_schema().input_names() == [
        "user_id",
        "item_ids",
        "event_types",
        "event_times_ms",
        "dwell_ms",
        "attention",
    ]
    import pandas as pd

    frame = pd.DataFrame(
        [
            {
                "user_id": "x",
                "item_ids": ["m01", "m02"],
                "event_types": ["click", "view"],
                "event_times_ms": [1, 2],
                "dwell_ms": [10, 20],
            }
        ]
    )
    out = model.predict(frame, params={"k": 3})
    assert out["rank"].tolist() == [1, 2, 3] and not set(out["item_id"]) & {"m01", "m02"}

    # candidates: contract, K per user, no seen items, re-runs replace the partition
    res = candidates.run(DT, env)
    assert res["model_version"] == "1" and res["users"] == N_USERS
    # u039 had 27 of the 30 items in their sequence, 5 of them only as impressions (not seen): 8 are left, K=5 served
    assert res["rows"] == N_USERS * 5
    path = Path(res["path"])
    assert path == Path(lake.staging(env.data_root, lake.CANDIDATES, DT)) and (path / lake.SUCCESS_MARKER).exists()
    table = pq.read_table(path)
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("user_id", "string"),
        ("rank", "int32"),
        ("item_id", "string"),
        ("score", "float"),
        ("model_name", "string"),
        ("model_version", "string"),
        ("arm", "string"),
        ("experiment_id", "string"),
    ]
    cands = table.to_pandas()
    seqs = pq.read_table(lake.partition(env.data_root, lake.FEATURE_SEQUENCES, DT)).to_pandas()
    seen = {r.user_id: {i for i, t in zip(r.item_ids, r.event_types) if t != "impression"} for r in seqs.itertuples()}
    assert set(cands["user_id"]) == set(seen)
    for user, g in cands.groupby("user_id"):
        assert g["rank"].tolist() == list(range(1, 6))
        assert g["score"].is_monotonic_decreasing
        assert not set(g["item_id"]) & seen[user]
        assert g["item_id"].is_unique
    assert set(cands["model_name"]) == {"attention-recommender"} and set(cands["model_version"]) == {"1"}
    assert set(cands["arm"]) == {"control"} and set(cands["experiment_id"]) == {""}  # no experiment runs

    again = candidates.run(DT, env)
    assert again["rows"] == res["rows"] and pq.read_table(path).num_rows == res["rows"]
    assert sorted(p.name for p in path.parent.iterdir()) == [f"dt={DT}"]  # no temp or replaced dirs left


def test_training_settings_from_env(monkeypatch, tmp_path):
    from models.config import train_config

    for name in ("ATTNREC_TRAIN_ABLATION", "ATTNREC_FULL_SOFTMAX_MAX_ITEMS", "ATTNREC_CHECKPOINT_DIR"):
        monkeypatch.delenv(name, raising=False)
    s = get_settings()
    assert s.train_ablation is True and s.full_softmax_max_items == 200_000 and s.checkpoint_dir.endswith("checkpoints")
    monkeypatch.setenv("ATTNREC_TRAIN_ABLATION", "false")
    monkeypatch.setenv("ATTNREC_FULL_SOFTMAX_MAX_ITEMS", "5000")
    monkeypatch.setenv("ATTNREC_CHECKPOINT_DIR", str(tmp_path))
    s = get_settings()
    assert (s.train_ablation, s.full_softmax_max_items, s.checkpoint_dir) == (False, 5000, str(tmp_path))
    monkeypatch.setenv("ATTNREC_TRAIN_ABLATION", "perhaps")
    with pytest.raises(ValueError, match="ATTNREC_TRAIN_ABLATION='perhaps' is not a boolean"):
        get_settings()

    tcfg = train_config(s, ["dropout=0.1", "n_layers=3", "positive_types=click,rate"])
    assert (tcfg.dropout, tcfg.n_layers, tcfg.positive_types) == (0.1, 3, ("click", "rate"))
    assert tcfg.lr == train_config(s).lr
    with pytest.raises(ValueError, match="expected NAME=VALUE with NAME one of"):
        train_config(s, ["depth=3"])
    with pytest.raises(ValueError, match="'x' is not a valid int"):
        train_config(s, ["n_layers=x"])


def test_a_retried_run_resumes_from_its_checkpoint_and_the_ablation_can_be_skipped(env, monkeypatch):
    from models import registry, train

    monkeypatch.setenv("ATTNREC_TRAIN_ABLATION", "false")
    settings = get_settings()
    log_recommender = registry.log_recommender

    def artifact_store_down(*args, **kwargs):
        raise RuntimeError("artifact store down")

    monkeypatch.setattr(registry, "log_recommender", artifact_store_down)
    with pytest.raises(RuntimeError, match="artifact store down"):
        train.run(DT, settings)
    (ckpt_path,) = Path(settings.checkpoint_dir).glob("*/*.pt")  # the model's only: no ablation was trained
    assert ckpt_path.name == "model.pt" and torch.load(ckpt_path, weights_only=True)["epoch"] == 3
    client = registry.client(settings)
    (failed,) = client.search_runs([client.get_experiment_by_name(settings.experiment_name).experiment_id])
    assert failed.info.status == "FAILED"

    # the retry: training is already done, so it resumes without a single optimizer step
    monkeypatch.setattr(registry, "log_recommender", log_recommender)
    from models import fit

    steps = []
    train_step = fit.train_step
    monkeypatch.setattr(fit, "train_step", lambda *a, **k: steps.append(1) or train_step(*a, **k))
    result = train.run(DT, settings)
    assert steps == []
    assert result["metrics"]["ndcg_at_10"] == pytest.approx(failed.data.metrics["test_ndcg_at_10"])
    assert result["sasrec_plain_metrics"] is None and result["knn_metrics"]["n_users"] == 40.0
    run = client.get_run(result["run_id"])
    assert not [k for k in run.data.metrics if k.startswith("sasrec_plain_")]
    assert len(client.get_metric_history(result["run_id"], "val_ndcg_at_10")) == 3  # replayed from the checkpoint
    assert run.data.params["train_ablation"] == "False"
    assert not list(Path(settings.checkpoint_dir).glob("*/*.pt"))


def test_candidates_exclude_everything_seen_in_the_look_back_and_never_serve_retired_items(env, monkeypatch):
    """Issue #11 points 7 and 8 on users' data shape: user u000 has 30 events but a sequence of its last 5
    (ATTNREC_MAX_SEQ_LEN=5): every item it rated is excluded, the items it was only shown stay servable,
    and retired items (available false) are served to nobody; the candidates gate agrees."""
    import mlflow
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from expectations.candidates import validate_candidates
    from models import candidates, registry
    from models.config import build_model
    from models.dataset import positive_counts, read_split
    from models.features import load_features
    from models.recommender import Recommender
    from models.vocab import ItemVocab
    from tests.model_helpers import config

    monkeypatch.setenv("ATTNREC_MAX_SEQ_LEN", "5")
    monkeypatch.setenv("ATTNREC_TOP_K", "10")
    settings = get_settings()
    # an untrained champion is enough: exclusion does not depend on the scores
    paths, item_rows, version = load_features(settings.data_root, DT)
    vocab = ItemVocab.from_items(item_rows)
    split = read_split(paths["sequences"], vocab)
    torch.manual_seed(1)
    rec = Recommender(
        build_model(vocab, config(d_model=16, n_layers=1)), vocab, version, positive_counts(split.train, vocab)
    )
    with mlflow.start_run(experiment_id=registry.ensure_experiment(settings)) as run:
        uri = registry.log_recommender(rec, str(settings.local_data_root.parent), split.test[:2])
        v = registry.register(settings, uri, run.info.run_id)
        assert registry.gate(settings, v, 0.0, split.test, DT)[0] is True

    # features written before seen_item_ids and available: the sequence's items are excluded, as before
    legacy = pd.read_parquet(candidates.run(DT, settings)["path"])
    # u039's sequence holds 27 of the 30 items, 5 of them only as impressions: 8 are left (K=10)
    assert (legacy["user_id"] == "u039").sum() == 8

    seq_path = Path(lake.partition(settings.data_root, lake.FEATURE_SEQUENCES, DT))
    items_path = Path(lake.partition(settings.data_root, lake.FEATURE_ITEMS, DT))
    rows = pq.read_table(seq_path).to_pylist()
    for row in rows:  # what featurize writes: the non-impression items of the look-back (here: of the sequence)
        row["seen_item_ids"] = sorted({i for i, t in zip(row["item_ids"], row["event_types"]) if t != "impression"})
    rows[1]["seen_item_ids"].append("not-in-the-model")  # an item the model does not know needs no exclusion
    history = [(f"m{i + 1:02d}", "impression" if i % 5 == 4 else "rate", 1_767_000_000_000 + i) for i in range(30)]
    last = history[-5:]
    rows[0].update(
        item_ids=[i for i, _, _ in last],
        event_types=[t for _, t, _ in last],
        event_times_ms=[ms for _, _, ms in last],
        dwell_ms=[None] * 5,
        length=5,
        seen_item_ids=sorted({i for i, t, _ in history if t != "impression"}),
    )
    schema = pq.read_schema(seq_path / "part-00000.parquet").append(pa.field("seen_item_ids", pa.list_(pa.string())))
    pq.write_table(pa.Table.from_pylist(rows, schema), seq_path / "part-00000.parquet")
    retired = {"m03", "m10"}
    items = pq.read_table(items_path)
    available = [i not in retired for i in items.column("item_id").to_pylist()]
    pq.write_table(items.append_column("available", pa.array(available)), items_path / "part-00000.parquet")

    res = candidates.run(DT, settings)
    cands = pd.read_parquet(res["path"])
    served = cands.groupby("user_id")["item_id"].apply(set).to_dict()
    shown_only = {i for i, t, _ in history if t == "impression"}
    assert shown_only == {"m05", "m10", "m15", "m20", "m25", "m30"}
    assert served["u000"] == shown_only - retired  # 24 rated items excluded, not only the 4 of the sequence
    assert not set(cands["item_id"]) & retired
    for row in rows:
        assert not served[row["user_id"]] & set(row["seen_item_ids"]), row["user_id"]
    assert validate_candidates(cands, DT, settings)["checks"] == [
        "rank_order_and_scores",
        "available_items",
        "seen_items_excluded",
        "arms_and_versions",
    ]
