"""Serving a registered version, on a real MLflow registry (SQLite in tmp_path) and a tiny lake: the logged
model is code plus a checkpoint (no pickle) with pinned requirements; candidates serve the plan they are given
and record it; a re-run re-serves the recorded plan. And training does not depend on machine load. The A/B arms
are in tests/test_serving_experiments.py."""

from __future__ import annotations

import pickle
import re
import types
from pathlib import Path

import pytest
import torch

from attnrec import lake
from attnrec.settings import PROJECT_ROOT, get_settings
from tests.test_models_pipeline import DT, N_USERS, write_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ATTNREC_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("ATTNREC_TOP_K", "5")
    write_features(str(tmp_path / "lake"))
    return get_settings()


def untrained(settings, seed: int):
    """A small untrained recommender over the lake's items: each seed gives different scores."""
    from models.config import build_model
    from models.dataset import positive_counts, read_split
    from models.features import load_features
    from models.recommender import Recommender
    from models.vocab import ItemVocab
    from tests.model_helpers import config

    paths, items, version = load_features(settings.data_root, DT)
    vocab = ItemVocab.from_items(items)
    tcfg = config(d_model=16, n_heads=2, n_layers=1, max_seq_len=32)
    torch.manual_seed(seed)
    counts = positive_counts(read_split(paths["sequences"], vocab).train, vocab)
    return Recommender(build_model(vocab, tcfg).eval(), vocab, version, counts)


def log_and_register(settings, rec, workdir: Path) -> str:
    import mlflow

    from models import registry

    with mlflow.start_run(experiment_id=registry.ensure_experiment(settings)) as run:
        uri = registry.log_recommender(rec, str(workdir), [])
        return registry.register(settings, uri, run.info.run_id)


def frame():
    import pandas as pd

    return pd.DataFrame(
        [
            {"user_id": "a", "item_ids": ["m01", "m02"], "event_types": ["click", "view"], "event_times_ms": [1, 2]},
            {"user_id": "b", "item_ids": ["m07"], "event_types": ["purchase"], "event_times_ms": [5]},
        ]
    )


def lock_pins(*names: str) -> set[str]:
    text = (PROJECT_ROOT / "requirements.lock").read_text()
    return {re.search(rf"^{name}==\S+", text, re.MULTILINE).group(0) for name in names}


def test_logged_model_is_code_and_checkpoint_with_pinned_requirements_and_loads_back(env, tmp_path):
    import mlflow

    from models import registry
    from models.pyfunc import predict_frame

    rec = untrained(env, seed=1)
    version = log_and_register(env, rec, tmp_path)
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{env.model_name}/{version}", dst_path=str(tmp_path / "download"))
    )
    files = {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files  # no cloudpickled python_model
    assert {"MLmodel", "artifacts/recommender.pt", "pyfunc.py"} <= files
    requirements = (local / "requirements.txt").read_text().split()
    assert set(requirements) == lock_pins("mlflow", "torch", "numpy", "pandas", "pyarrow")

    expected = predict_frame(rec, frame(), 5)
    served = mlflow.pyfunc.load_model(f"models:/{env.model_name}/{version}").predict(frame(), params={"k": 5})
    assert served.equals(expected) and len(served) == 10
    loaded = registry.load_version(env, version)
    assert predict_frame(loaded, frame(), 5).equals(expected)


class RunsCode:
    """Unpickling this runs code: what a tampered artifact store could plant."""

    def __reduce__(self):
        return (exec, ("raise RuntimeError('code from the artifact store ran')",))


def test_loading_a_version_runs_no_code_from_the_artifact_store(env, tmp_path):
    from models import registry
    from models.pyfunc import predict_frame

    rec = untrained(env, seed=1)
    version = log_and_register(env, rec, tmp_path)
    stored = [p for p in (tmp_path / "artifacts").rglob("*") if p.suffix in (".py", ".pkl") and p.is_file()]
    assert stored  # the model's code (or, before models from code, its pickle)
    for path in stored:  # plant code that raises if anything executes or unpickles it
        path.write_bytes(pickle.dumps(RunsCode()) if path.suffix == ".pkl" else b"raise RuntimeError('ran')\n")
    loaded = registry.load_version(env, version)
    assert predict_frame(loaded, frame(), 5).equals(predict_frame(rec, frame(), 5))


def test_candidates_serve_the_given_plan_and_a_rerun_re_serves_the_recorded_one(env, tmp_path):
    import pyarrow.parquet as pq

    from models import candidates, registry
    from models.serving_plan import no_experiment, recorded_plan, resolve_plan

    v1 = log_and_register(env, untrained(env, seed=1), tmp_path)
    v2 = log_and_register(env, untrained(env, seed=2), tmp_path)
    registry.promote(env, v1, reason="test")
    assert resolve_plan(DT, env)[0] == no_experiment(v1)  # nothing published for DT yet: the champion

    registry.promote(env, v2, reason="champion moves while the run goes on")
    res = candidates.run(DT, env, plan=no_experiment(v1))  # the plan the run resolved at its start
    staged = lake.staging(env.data_root, lake.CANDIDATES, DT)
    assert res["model_version"] == v1 and res["users"] == N_USERS and res["users_by_arm"] == {"control": N_USERS}
    table = pq.read_table(staged)
    assert table.column_names == ["user_id", "rank", "item_id", "score", "model_name", "model_version", "arm",
                                  "experiment_id"]  # fmt: skip
    assert set(table.column("model_version").to_pylist()) == {v1}
    assert set(table.column("arm").to_pylist()) == {"control"} and set(table.column("experiment_id").to_pylist()) == {
        ""
    }
    manifest = lake.read_json(lake.join(staged, candidates.MANIFEST_FILE))
    assert manifest == {
        "dt": DT,
        "model_name": "attention-recommender",
        "model_version": v1,
        "model_versions": {"control": v1},
        "experiment_id": "",
        "treatment_share": 0.0,
        "rows": res["rows"],
        "users": N_USERS,
        "users_by_arm": {"control": N_USERS},
    }
    assert recorded_plan(env.data_root, DT) is None  # staged, not published
    lake.publish(env.data_root, lake.CANDIDATES, DT)
    assert recorded_plan(env.data_root, DT) == no_experiment(v1)

    plan, why = resolve_plan(DT, env)
    assert plan == no_experiment(v1) and "re-serving the plan recorded" in why and "re_resolve=true" in why
    assert resolve_plan(DT, env, re_resolve=True)[0] == no_experiment(v2)
    assert resolve_plan("2026-02-01", env)[0] == no_experiment(v2)  # another day: the champion
    assert candidates.run(DT, env)["model_version"] == v1  # no plan given: resolved as the DAG does, re-served
    assert candidates.run(DT, env, re_resolve=True)["model_version"] == v2


def test_a_busy_machine_trains_the_same_model_as_an_idle_one(monkeypatch):
    """Epochs and early stopping decide how long training runs; the wall-clock limit is only a safety net. A
    machine so busy that every epoch takes ~100 s (30 epochs in 50 min) gives the same model as an idle one."""
    from models import fit as fit_module
    from models.config import build_model
    from models.dataset import TrainingSet, leave_one_out, positive_counts
    from models.recommender import Recommender
    from models.vocab import ItemVocab
    from tests.model_helpers import config, item_rows, planted_walks

    monkeypatch.delenv("ATTNREC_TRAIN_MAX_MINUTES", raising=False)
    assert get_settings().train_max_minutes >= 60
    vocab = ItemVocab.from_items(item_rows(20))
    split = leave_one_out(planted_walks(), vocab)
    tcfg = config(d_model=16, n_heads=2, n_layers=1, dropout=0.0, batch_size=16, max_seq_len=8, seed=0)
    assert tcfg.max_minutes == get_settings().train_max_minutes  # the default, as the demo runs

    def train() -> tuple[list[dict], dict]:
        torch.manual_seed(0)
        rec = Recommender(build_model(vocab, tcfg), vocab, {}, positive_counts(split.train, vocab))
        history = fit_module.fit(rec, TrainingSet(split.train, 8), split.valid, tcfg, device=torch.device("cpu"))
        return history, rec.model.state_dict()

    idle_history, idle_state = train()
    clock = types.SimpleNamespace(now=0.0)

    def busy_monotonic() -> float:
        clock.now += 20.0  # fit reads the clock 5 times an epoch: ~100 s an epoch
        return clock.now

    monkeypatch.setattr(fit_module, "time", types.SimpleNamespace(monotonic=busy_monotonic))
    busy_history, busy_state = train()
    assert clock.now > 15 * 60  # far past the old 5-minute budget: it did look like a busy machine
    drop = ("epoch_train_seconds", "epoch_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in busy_history] == [
        {k: v for k, v in r.items() if k not in drop} for r in idle_history
    ]
    assert all(torch.equal(busy_state[k], idle_state[k]) for k in idle_state)
