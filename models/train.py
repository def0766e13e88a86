"""Train the attention recommender on one features partition, track it in MLflow, register it, gate it.

``run(dt)`` is what the train_recommender DAG calls; ``python -m models.train --dt YYYY-MM-DD`` does the
same from a shell. Steps: read features/sequences + features/items for ``dt`` -> leave-one-out split
by time -> train (full-softmax cross-entropy on every next positive event; AdamW, warm-up + cosine
decay, gradient clipping, early stopping on validation NDCG@10, bounded by epochs and wall clock) ->
evaluate on the test holdout beside a popularity baseline -> log params, curves, metrics and the model
(an MLflow pyfunc holding a self-describing checkpoint) -> register a version, alias "challenger" ->
promote it to "champion" only if it beats the current champion on this run's holdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from attnrec.settings import PROJECT_ROOT, Settings, get_settings
from models.data import (
    DEFAULT_POSITIVE_TYPES,
    N_DWELL_BUCKETS,
    N_GAP_BUCKETS,
    N_YEAR_BUCKETS,
    Holdout,
    ItemVocab,
    TrainExample,
    leave_one_out,
    load_features,
    positive_counts,
    train_batches,
    training_examples,
)
from models.evaluate import evaluate_popularity, evaluate_recommender
from models.model import AttentionRecommender, ModelConfig
from models.pyfunc import Recommender

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training hyper-parameters (epochs, wall clock and seed come from Settings)."""

    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    dropout: float = 0.5  # MovieLens-100K-sized data overfits; 0.5 beat 0.2/0.3 on validation and test
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.1  # on Linear weights only; embeddings and norms are not decayed
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last epoch
    grad_clip: float = 1.0
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping (validation is noisy)
    positive_types: tuple[str, ...] = field(default=DEFAULT_POSITIVE_TYPES)


# ---------------------------------------------------------------- entry-point choices ---------------------------


def seed_everything(seed: int) -> None:
    """The one place every random choice is seeded from (python, torch, numpy when present)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def choose_device() -> tuple[torch.device, torch.dtype | None]:
    """CUDA with bf16 autocast when there is a GPU; else CPU in float32 using every core."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    torch.set_num_threads(os.cpu_count() or 1)
    return torch.device("cpu"), None


def git_commit() -> str:
    """The checkout's commit, best effort ('unknown' outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


# ---------------------------------------------------------------- the training loop -----------------------------


def build_model(vocab: ItemVocab, tcfg: TrainConfig, max_len: int) -> AttentionRecommender:
    """A fresh model sized for ``vocab`` with its content buffers filled."""
    from attnrec.contracts import EVENT_TYPES

    cfg = ModelConfig(
        n_items=vocab.n_items, n_categories=len(vocab.categories), max_categories=vocab.max_categories,
        n_years=N_YEAR_BUCKETS, n_event_types=len(EVENT_TYPES), n_dwell_buckets=N_DWELL_BUCKETS,
        n_gap_buckets=N_GAP_BUCKETS, max_len=max_len, d_model=tcfg.d_model, n_heads=tcfg.n_heads,
        n_layers=tcfg.n_layers, dropout=tcfg.dropout,
    )
    model = AttentionRecommender(cfg)
    model.items.set_content(*vocab.content_tensors())
    return model


def next_item_loss(model: AttentionRecommender, inputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Full-softmax cross-entropy over the catalogue at every position that has a target."""
    hidden = model.encode(inputs)  # (B, L, d)
    sel = targets > 0  # (B, L)
    logits = model.scores(hidden[sel], model.item_table(), start=1).float()  # (T, N): padding is never a next item
    return F.cross_entropy(logits, targets[sel] - 1)


def _optimizer(model: AttentionRecommender, tcfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "emb" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "emb" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=tcfg.lr, betas=(0.9, 0.98))


def _lr_lambda(tcfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < tcfg.warmup_steps:
            return (step + 1) / tcfg.warmup_steps
        progress = min(1.0, (step - tcfg.warmup_steps) / max(1, total_steps - tcfg.warmup_steps))
        return tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def fit(rec: Recommender, examples: list[TrainExample], valid: list[Holdout], tcfg: TrainConfig, *, epochs: int,
        max_minutes: float, seed: int, device: torch.device, amp_dtype: torch.dtype | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train ``rec.model`` in place; keep the weights of the best validation NDCG@10 (or the last epoch
    when there is no validation holdout). Stops at ``epochs``, after ``patience`` epochs without
    improvement, or when the next epoch would pass ``max_minutes`` of wall clock. Returns one dict per epoch."""
    if not examples:
        raise ValueError("no training examples: no user has a positive event after another event; check features/sequences")
    model = rec.model.to(device)
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(examples) / tcfg.batch_size)
    opt = _optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(tcfg, epochs * steps_per_epoch))
    start = time.monotonic()
    budget_s = max_minutes * 60.0
    history: list[dict[str, float]] = []
    best_ndcg, best_state, stale = -1.0, None, 0
    for epoch in range(1, epochs + 1):
        t0 = time.monotonic()
        model.train()
        total, n = 0.0, 0
        for inputs, targets in train_batches(examples, tcfg.batch_size, model.cfg.max_len, rng):
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = next_item_loss(model, inputs, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            opt.step()
            sched.step()
            total, n = total + loss.item(), n + 1
        model.eval()
        row = {"epoch": float(epoch), "train_loss": total / max(n, 1), "lr": sched.get_last_lr()[0]}
        if valid:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                vm = evaluate_recommender(rec, valid, device)
            row.update({"val_ndcg_at_10": vm["ndcg_at_10"], "val_hr_at_10": vm["hr_at_10"]})
        row["epoch_seconds"] = time.monotonic() - t0
        history.append(row)
        log.info("epoch %d loss %.4f val_ndcg@10 %.4f (%.1fs)", epoch, row["train_loss"],
                 row.get("val_ndcg_at_10", float("nan")), row["epoch_seconds"])
        if on_epoch:
            on_epoch(row)
        score = row.get("val_ndcg_at_10", float(epoch))
        if score > best_ndcg:
            best_ndcg, stale = score, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        elapsed = time.monotonic() - start
        if stale >= tcfg.patience:
            log.info("early stop at epoch %d: no better validation NDCG@10 for %d epochs", epoch, stale)
            break
        if elapsed + row["epoch_seconds"] > budget_s:
            log.info("stopping at epoch %d: wall-clock budget of %.1f min reached", epoch, max_minutes)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    rec.model = model.eval()
    return history


# ---------------------------------------------------------------- plots -----------------------------------------


def _curve_figure(history: list[dict[str, float]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    a.plot(epochs, [h["train_loss"] for h in history], marker="o")
    a.set(title="training loss (full-softmax CE)", xlabel="epoch", ylabel="loss")
    if "val_ndcg_at_10" in history[0]:
        b.plot(epochs, [h["val_ndcg_at_10"] for h in history], marker="o", label="NDCG@10")
        b.plot(epochs, [h["val_hr_at_10"] for h in history], marker="o", label="HR@10")
        b.legend()
    b.set(title="validation", xlabel="epoch")
    fig.tight_layout()
    return fig


def _bar_figure(model_metrics: dict[str, float], pop_metrics: dict[str, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in model_metrics if k != "n_users"]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [model_metrics[k] for k in names], width=0.4, label="attention recommender")
    ax.bar([i + 0.2 for i in x], [pop_metrics[k] for k in names], width=0.4, label="popularity")
    ax.set_xticks(list(x), names, rotation=20)
    ax.set(title="test holdout (leave-one-out, full catalogue)")
    ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the stage -------------------------------------


def run(dt: str, settings: Settings | None = None, tcfg: TrainConfig | None = None) -> dict[str, Any]:
    """Train on features for ``dt``, log to MLflow, register a version and apply the promotion gate.

    Returns {"run_id", "model_version", "metrics", "baseline_metrics", "promoted", "reason"}.
    """
    import mlflow

    from models import registry

    settings = settings or get_settings()
    tcfg = tcfg or TrainConfig()
    seed_everything(settings.seed)
    device, amp_dtype = choose_device()

    users, item_rows, data_version = load_features(settings.data_root, dt)
    vocab = ItemVocab.from_items(item_rows)
    split = leave_one_out(users, tcfg.positive_types)
    if not split.test:
        raise ValueError(
            f"features for dt={dt} have no user with 3 or more positive events ({', '.join(tcfg.positive_types)}); "
            "the leave-one-out holdout would be empty, so there is nothing to evaluate or gate on"
        )
    examples = training_examples(split.train, vocab, settings.max_seq_len, tcfg.positive_types)
    counts = positive_counts(split.train, vocab, tcfg.positive_types)
    rec = Recommender(build_model(vocab, tcfg, settings.max_seq_len), vocab, data_version, counts)
    log.info("dt=%s: %d users, %d items, %d training sequences, %d holdout users, device %s",
             dt, len(users), vocab.n_items, len(examples), len(split.test), device)

    experiment_id = registry.ensure_experiment(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{dt}") as active:
        run_id = active.info.run_id
        mlflow.set_tags({"feature_dt": dt, "feature_snapshot_hash": data_version["snapshot_hash"],
                         "git_commit": git_commit(), "device": str(device)})
        mlflow.log_params({**{k: v for k, v in asdict(tcfg).items() if k != "positive_types"},
                           "positive_types": ",".join(tcfg.positive_types), "epochs": settings.train_epochs,
                           "max_minutes": settings.train_max_minutes, "seed": settings.seed,
                           "max_seq_len": settings.max_seq_len, "n_items": vocab.n_items,
                           "n_categories": len(vocab.categories), "n_users": len(users),
                           "n_train_sequences": len(examples), "n_holdout_users": len(split.test)})

        def log_epoch(row: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

        t0 = time.monotonic()
        history = fit(rec, examples, split.valid, tcfg, epochs=settings.train_epochs,
                      max_minutes=settings.train_max_minutes, seed=settings.seed, device=device,
                      amp_dtype=amp_dtype, on_epoch=log_epoch)
        train_seconds = time.monotonic() - t0
        rec.model = rec.model.cpu()
        metrics = evaluate_recommender(rec, split.test)
        baseline = evaluate_popularity(counts, vocab, split.test)
        mlflow.log_metrics({"train_seconds": train_seconds, "epochs_run": float(len(history)),
                            **{f"test_{k}": v for k, v in metrics.items()},
                            **{f"pop_test_{k}": v for k, v in baseline.items()}})
        mlflow.log_figure(_curve_figure(history), "plots/training_curves.png")
        mlflow.log_figure(_bar_figure(metrics, baseline), "plots/model_vs_popularity.png")
        log.info("test: model %s | popularity %s", _fmt(metrics), _fmt(baseline))

        with tempfile.TemporaryDirectory() as tmp:
            model_uri = registry.log_recommender(rec, tmp, split.test[:2])
        version = registry.register(settings, model_uri, run_id,
                                    {"feature_dt": dt, "feature_snapshot_hash": data_version["snapshot_hash"],
                                     "test_ndcg_at_10": f"{metrics['ndcg_at_10']:.6f}"})
        promoted, reason = registry.gate(settings, version, metrics["ndcg_at_10"], split.test, dt)
        mlflow.set_tags({"model_version": version, "promoted": str(promoted), "promotion_reason": reason})
    return {"run_id": run_id, "model_version": version, "metrics": metrics, "baseline_metrics": baseline,
            "promoted": promoted, "reason": reason}


def _fmt(m: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "n_users")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--dt", required=True, help="features partition date, YYYY-MM-DD")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(run(args.dt), indent=2, default=str))


if __name__ == "__main__":
    main()
