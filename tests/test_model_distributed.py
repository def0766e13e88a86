"""Data-parallel training through torchrun: 2 CPU processes (gloo) reach the metrics of 1 process.

Both runs go through the real entry point (``python -m models.train``) on the tiny features partition of
test_models_pipeline, each against its own SQLite MLflow registry. Dropout is off (``--set dropout=0``), so
the only difference between the runs is how the sums inside a step are split between processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_models_pipeline import DT, write_features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(tmp_path, name: str, nproc: int) -> tuple[dict, dict]:
    """Run training in ``nproc`` processes; return (the printed result, the MLflow run's metric histories)."""
    from mlflow import MlflowClient

    db = f"sqlite:///{tmp_path / name}.db"
    env = {**os.environ, "ATTNREC_DATA_ROOT": str(tmp_path / "lake"), "MLFLOW_TRACKING_URI": db,
           "ATTNREC_MLFLOW_ARTIFACTS": (tmp_path / f"{name}-artifacts").as_uri(),
           "ATTNREC_CHECKPOINT_DIR": str(tmp_path / f"{name}-checkpoints"), "ATTNREC_TRAIN_EPOCHS": "4",
           "ATTNREC_MAX_SEQ_LEN": "32", "ATTNREC_TRAIN_ABLATION": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": REPO}
    module = ["-m", "models.train", "--dt", DT, "--set", "dropout=0.0"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    out = subprocess.run([*launcher, *module], cwd=REPO, env=env, capture_output=True, text=True, timeout=85)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout[out.stdout.index("{"):])  # only rank 0 prints
    client = MlflowClient(tracking_uri=db, registry_uri=db)
    runs = client.search_runs([client.get_experiment_by_name("attnrec").experiment_id])
    assert len(runs) == 1  # rank 1 logged nothing
    assert [str(v.version) for v in client.search_model_versions("name='attention-recommender'")] == ["1"]
    assert runs[0].data.tags["world_size"] == str(nproc)
    curves = {key: [m.value for m in sorted(client.get_metric_history(runs[0].info.run_id, key), key=lambda m: m.step)]
              for key in ("train_loss", "val_ndcg_at_10", "sasrec_plain_train_loss")}
    return result, curves


@pytest.mark.timeout(180)
def test_two_gloo_processes_match_one_process(tmp_path):
    write_features(str(tmp_path / "lake"))
    one, one_curves = train(tmp_path, "one", 1)
    two, two_curves = train(tmp_path, "two", 2)
    assert len(one_curves["train_loss"]) == len(two_curves["train_loss"]) == 4
    for key in one_curves:
        assert two_curves[key] == pytest.approx(one_curves[key], rel=1e-5)  # measured: 1e-7
    for scorer in ("metrics", "sasrec_plain_metrics", "knn_metrics", "baseline_metrics"):
        for metric, value in one[scorer].items():
            assert two[scorer][metric] == pytest.approx(value, abs=1e-3), (scorer, metric)  # measured: equal
