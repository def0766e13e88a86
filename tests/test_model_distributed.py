"""Data-parallel training through torchrun: 2 CPU processes (gloo) reach the metrics of 1 process; a rank
with no target (or no row) in a batch still joins DistributedDataParallel's step.

Both runs go through the real entry point (``python -m attnrec train``) on the tiny features partition of
test_models_pipeline, each against its own SQLite MLflow registry. Dropout is off (``--set dropout=0``), so
the only difference between the runs is how the sums inside a step are split between processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.test_models_pipeline import DT, write_features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(tmp_path, name: str, nproc: int) -> tuple[dict, dict]:
    """Run training in ``nproc`` processes; return (the printed result, the MLflow run's metric histories)."""
    from mlflow import MlflowClient

    db = f"sqlite:///{tmp_path / name}.db"
    env = {
        **os.environ,
        "ATTNREC_DATA_ROOT": str(tmp_path / "lake"),
        "MLFLOW_TRACKING_URI": db,
        "ATTNREC_MLFLOW_ARTIFACTS": (tmp_path / f"{name}-artifacts").as_uri(),
        "ATTNREC_CHECKPOINT_DIR": str(tmp_path / f"{name}-checkpoints"),
        "ATTNREC_TRAIN_EPOCHS": "4",
        "ATTNREC_MAX_SEQ_LEN": "32",
        "ATTNREC_TRAIN_ABLATION": "true",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": REPO,
    }
    module = ["-m", "attnrec", "train", "--dt", DT, "--set", "dropout=0.0"]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else [sys.executable]
    )
    out = subprocess.run([*launcher, *module], cwd=REPO, env=env, capture_output=True, text=True, timeout=85)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout[out.stdout.index("{") :])  # only rank 0 prints
    client = MlflowClient(tracking_uri=db, registry_uri=db)
    runs = client.search_runs([client.get_experiment_by_name("attnrec").experiment_id])
    assert len(runs) == 1  # rank 1 logged nothing
    assert [str(v.version) for v in client.search_model_versions("name='attention-recommender'")] == ["1"]
    assert runs[0].data.tags["world_size"] == str(nproc)
    curves = {
        key: [m.value for m in sorted(client.get_metric_history(runs[0].info.run_id, key), key=lambda m: m.step)]
        for key in ("train_loss", "val_ndcg_at_10", "sasrec_plain_train_loss")
    }
    return result, curves


@pytest.mark.timeout(180)
def test_two_gloo_processes_match_one_process(tmp_path):
    write_features(str(tmp_path / "lake"))
    one, one_curves = train(tmp_path, "one", 1)
    two, two_curves = train(tmp_path, "two", 2)
    assert len(one_curves["train_loss"]) == len(two_curves["train_loss"]) == 4
    for key in one_curves:
        assert two_curves[key] == pytest.approx(one_curves[key], rel=1e-5)  # measured: 1e-7
    for scorer in ("metrics", "sasrec_plain_metrics", "knn_metrics", "mf_metrics", "baseline_metrics"):
        for metric, value in one[scorer].items():
            assert two[scorer][metric] == pytest.approx(value, abs=1e-3), (scorer, metric)  # measured: equal


def _two_steps(rank: int, world: int, init_file: str, out: str) -> None:
    """Two optimizer steps of a tiny model on a fixed batch whose rows 1, 3, ... have no target, then one on a
    single row: with two ranks, rank 1 has no target in the first steps and no row at all in the last."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from models.fit import train_step
    from models.losses import NextItemLoss
    from models.runtime import DistContext
    from tests.model_helpers import config, random_batch, tiny_model

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = tiny_model(n_items=12, seed=0, dropout=0.0, max_len=8).train()
    tcfg = config(d_model=16, n_heads=2, n_layers=2, dropout=0.0, max_seq_len=8, mask_seen=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # plain SGD: Adam would blow rounding noise up to lr
    loss = NextItemLoss(model, tcfg.mask_seen)
    if world > 1:
        loss = DistributedDataParallel(loss, forward_sync_buffers=False)
    batch = random_batch(4, 6, 12, seed=2)
    targets = torch.randint(1, 13, (4, 6), generator=torch.Generator().manual_seed(3))
    targets[1::2] = 0
    ctx = DistContext(rank, world)
    losses = [train_step(loss, opt, batch, targets, None, None, tcfg, torch.device("cpu"), None, ctx) for _ in range(2)]
    losses.append(
        train_step(
            loss,
            opt,
            {k: v[:1] for k, v in batch.items()},
            targets[:1],
            None,
            None,
            tcfg,
            torch.device("cpu"),
            None,
            ctx,
        )
    )
    if rank == 0:
        torch.save({"losses": losses, "state": model.state_dict()}, out)
    if world > 1:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_a_rank_without_targets_or_rows_joins_the_step_with_zero_gradients(tmp_path):
    import torch.multiprocessing as mp

    _two_steps(0, 1, "", str(tmp_path / "one.pt"))
    mp.start_processes(
        _two_steps, args=(2, str(tmp_path / "init"), str(tmp_path / "two.pt")), nprocs=2, start_method="spawn"
    )
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-6)
    for name, weight in one["state"].items():
        assert torch.allclose(two["state"][name], weight, rtol=1e-5, atol=1e-7), name
