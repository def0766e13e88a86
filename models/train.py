"""Train the attention recommender on one features partition, track it in MLflow, register it, gate it.

``run(dt)`` is what the train_recommender DAG calls; ``python -m models.train --dt YYYY-MM-DD`` does the
same from a shell. Steps: read features/items for ``dt`` -> stream features/sequences into the leave-one-out
split by time (models.dataset; training events in memory-mapped files under the checkpoint directory, the
holdout capped at ``ATTNREC_HOLDOUT_MAX_USERS`` users) -> :func:`fit` (models.losses: full softmax, or
sampled softmax with a logQ correction above ``ATTNREC_FULL_SOFTMAX_MAX_ITEMS`` items; AdamW, warm-up +
cosine decay, gradient clipping, early stopping on validation NDCG@10, bounded by epochs and wall clock; a
resumable checkpoint after every epoch, models.checkpoints) -> the plain SASRec ablation (item ids only)
with the same budget -> the test holdout beside the baselines (models.baselines) -> MLflow (models.report)
and the model as a pyfunc -> register a version, alias "challenger" -> promote it to "champion" only if it
beats the current champion on this run's holdout (models.registry).

Several processes: ``torchrun --nproc_per_node=N -m models.train --dt YYYY-MM-DD`` (NCCL on GPUs, gloo on
CPU). Every rank reads the same data and trains on its share of every batch, with DistributedDataParallel
averaging the gradients; only rank 0 logs to MLflow, writes checkpoints and registers the model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from attnrec.settings import Settings, get_settings
from models import checkpoints, report
from models.baselines import evaluate_knn, evaluate_popularity, tune_knn
from models.checkpoints import Progress, Trainee
from models.config import TrainConfig, build_model, train_config
from models.dataset import Holdout, TrainingSet, positive_counts, read_split
from models.evaluate import evaluate_recommender, evaluate_sharded
from models.features import load_features
from models.losses import NegativeSampler, NextItemLoss, drop_seen_targets
from models.model import AttentionRecommender
from models.recommender import Recommender
from models.runtime import (
    DistContext,
    choose_device,
    dist_context,
    git_commit,
    init_distributed,
    rank0_decides,
    seed_everything,
)
from models.vocab import ItemVocab

log = logging.getLogger(__name__)


def make_optimizer(model: AttentionRecommender, tcfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on Linear weights only (embeddings and norms are not decayed)."""
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "emb" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "emb" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=tcfg.lr, betas=(0.9, 0.98))


def make_scheduler(opt: torch.optim.Optimizer, tcfg: TrainConfig,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps`` optimizer steps, then
    cosine decay to ``lr * min_lr_ratio`` at the last of ``total_steps``."""
    sched = torch.optim.lr_scheduler
    if tcfg.warmup_steps < 1:
        return sched.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=tcfg.lr * tcfg.min_lr_ratio)
    warmup = sched.LinearLR(opt, start_factor=1 / tcfg.warmup_steps, end_factor=1.0, total_iters=tcfg.warmup_steps - 1)
    cosine = sched.CosineAnnealingLR(opt, T_max=max(1, total_steps - tcfg.warmup_steps),
                                     eta_min=tcfg.lr * tcfg.min_lr_ratio)
    return sched.SequentialLR(opt, [warmup, cosine], milestones=[tcfg.warmup_steps])


def train_step(loss: NextItemLoss | DistributedDataParallel, opt: torch.optim.Optimizer,
               inputs: dict[str, torch.Tensor], targets: torch.Tensor, negatives: torch.Tensor | None,
               log_q: torch.Tensor | None, tcfg: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None,
               ctx: DistContext = DistContext()) -> float:
    """One optimizer step on one batch; returns the batch's mean loss over all ranks.

    With several ranks ``loss`` is wrapped in DistributedDataParallel and this rank takes rows rank, rank +
    world, ... of the batch. Its summed loss is divided by the batch's target count over all ranks and
    multiplied by the number of ranks, which DDP's gradient average divides out again: the step is the
    one-process step on the whole batch. A rank without targets still joins, with zero gradients."""
    if ctx.world > 1:
        inputs = {k: v[ctx.rank::ctx.world] for k, v in inputs.items()}
        targets = targets[ctx.rank::ctx.world]
    inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    targets = targets.to(device, non_blocking=True)
    if tcfg.mask_seen:
        targets = drop_seen_targets(inputs["items"], targets)
    n_local = int((targets > 0).sum())
    opt.zero_grad(set_to_none=True)
    loss_sum = None
    if n_local or ctx.world > 1:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss_sum = loss(inputs, targets, negatives, log_q, empty=not n_local)
    local = loss_sum.item() if n_local else 0.0
    if ctx.world > 1:
        stats = torch.tensor([local, float(n_local)], dtype=torch.float64, device=device)
        dist.all_reduce(stats)
        total, n_all = stats.tolist()
        (loss_sum / max(n_all, 1.0) * ctx.world).backward()
    else:
        total, n_all = local, float(n_local)
        if loss_sum is not None:
            (loss_sum / n_all).backward()
    torch.nn.utils.clip_grad_norm_(loss.parameters(), tcfg.grad_clip)
    opt.step()
    return total / max(n_all, 1.0)


def fit(rec: Recommender, examples: TrainingSet, valid: list[Holdout], tcfg: TrainConfig, *, device: torch.device,
        amp_dtype: torch.dtype | None = None, on_epoch: Callable[[dict[str, float]], None] | None = None,
        checkpoint_path: str | None = None) -> list[dict[str, float]]:
    """Train ``rec.model`` in place and keep the weights of the best validation NDCG@10 (the last epoch's
    without a validation holdout). Stops after ``tcfg.epochs``, after ``tcfg.patience`` epochs without
    improvement, or when the next epoch would pass ``tcfg.max_minutes``. Returns one dict per epoch.

    Loss: full softmax up to ``tcfg.full_softmax_max_items`` items, else sampled softmax with logQ correction.
    With ``checkpoint_path`` a checkpoint is written after every epoch and, when one is there at the start,
    training resumes from it (models.checkpoints); ``on_epoch`` is first replayed for the epochs already done.
    Distributed (see models.runtime.init_distributed): every rank builds the same batches from the same seed
    and trains on its rows of each (:func:`train_step`); validation is sharded; ``on_epoch`` runs on rank 0.
    """
    if not len(examples):
        raise ValueError("no training examples: no user has a positive event after another event; "
                         "check features/sequences")
    if examples.max_len > rec.model.cfg.max_len:
        raise ValueError(f"training examples of {examples.max_len} events do not fit the model's max_len "
                         f"{rec.model.cfg.max_len}; build the TrainingSet with max_len <= {rec.model.cfg.max_len}")
    ctx = dist_context()
    model = rec.model.to(device)
    opt = make_optimizer(model, tcfg)
    sched = make_scheduler(opt, tcfg, tcfg.epochs * math.ceil(len(examples) / tcfg.batch_size))
    sampler = None
    if model.cfg.n_items > tcfg.full_softmax_max_items:
        sampler = NegativeSampler(examples.target_counts(model.cfg.n_items), tcfg.n_negatives, tcfg.sampling_alpha,
                                  tcfg.seed, device)
        log.info("sampled softmax: %d items > %d, %d negatives per step with logQ correction",
                 model.cfg.n_items, tcfg.full_softmax_max_items, tcfg.n_negatives)
    trainee = Trainee(model, opt, sched, random.Random(tcfg.seed), sampler)
    key = checkpoints.fingerprint(model, tcfg, len(examples))
    resumed = checkpoints.resume(checkpoint_path, key, trainee, ctx, device) if checkpoint_path else None
    progress = resumed or Progress()
    loss = NextItemLoss(model, tcfg.mask_seen)
    if ctx.world > 1:  # every parameter takes part in every step (an empty rank too): no unused-parameter search
        loss = DistributedDataParallel(loss, device_ids=[device.index] if device.type == "cuda" else None,
                                       forward_sync_buffers=False, find_unused_parameters=False)
    if on_epoch and ctx.is_main:
        for row in progress.history:  # the epochs a resumed checkpoint already ran
            on_epoch(row)

    start = time.monotonic() - progress.elapsed
    log_q = sampler.log_q if sampler is not None else None
    for epoch in range(progress.epoch + 1, tcfg.epochs + 1):
        if progress.done:
            break
        t0 = time.monotonic()
        model.train()
        total, n = 0.0, 0
        for inputs, targets in examples.batches(tcfg.batch_size, trainee.rng):
            negatives = sampler.sample(device) if sampler is not None else None
            total += train_step(loss, opt, inputs, targets, negatives, log_q, tcfg, device, amp_dtype, ctx)
            sched.step()
            n += 1
        model.eval()
        row = {"epoch": float(epoch), "train_loss": total / max(n, 1), "lr": sched.get_last_lr()[0],
               "epoch_train_seconds": time.monotonic() - t0}  # the optimizer steps alone, without validation
        if valid:
            vm = evaluate_sharded(rec, valid, device, amp_dtype, ctx)
            row.update({"val_ndcg_at_10": vm["ndcg_at_10"], "val_hr_at_10": vm["hr_at_10"]})
        row["epoch_seconds"] = time.monotonic() - t0
        log.info("epoch %d loss %.4f val_ndcg@10 %.4f (%.1fs)", epoch, row["train_loss"],
                 row.get("val_ndcg_at_10", float("nan")), row["epoch_seconds"])
        progress.record(row, model)
        over_budget = rank0_decides(time.monotonic() - start + row["epoch_seconds"] > tcfg.max_minutes * 60.0, ctx,
                                    device)
        progress.done = progress.stale >= tcfg.patience or over_budget
        progress.elapsed = time.monotonic() - start
        if checkpoint_path:
            checkpoints.save(checkpoint_path, key, trainee, progress, ctx, device)
        if on_epoch and ctx.is_main:
            on_epoch(row)
        if progress.stale >= tcfg.patience:
            log.info("early stop at epoch %d: no better validation NDCG@10 for %d epochs", epoch, progress.stale)
        elif progress.done:
            log.info("stopping at epoch %d: wall-clock budget of %.1f min reached", epoch, tcfg.max_minutes)
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    rec.model = model.eval()
    return progress.history


def run(dt: str, settings: Settings | None = None, tcfg: TrainConfig | None = None) -> dict[str, Any]:
    """Train on features for ``dt``, log to MLflow, register a version and apply the promotion gate.

    ``tcfg`` defaults to :func:`models.config.train_config` of ``settings``. Returns {"run_id", "model_version",
    "metrics", "baseline_metrics", "knn_metrics", "sasrec_plain_metrics" (None when ATTNREC_TRAIN_ABLATION is
    false), "promoted", "reason"}; under torchrun, ranks other than 0 train only and return {"rank": rank}.
    """
    settings = settings or get_settings()
    tcfg = tcfg or train_config(settings)
    ctx, created = init_distributed()
    try:
        return _run(dt, settings, tcfg, ctx)
    finally:
        if created:
            dist.destroy_process_group()


def _run(dt: str, settings: Settings, tcfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    import mlflow

    from models import registry

    seed_everything(tcfg.seed)
    device, amp_dtype = choose_device()
    paths, item_rows, data_version = load_features(settings.data_root, dt)
    vocab = ItemVocab.from_items(item_rows)
    ckpt_dir = checkpoints.directory(settings, dt, data_version, tcfg)
    t_read = time.monotonic()
    split = read_split(paths["sequences"], vocab, tcfg.positive_types, settings.holdout_max_users or None,
                       spill_dir=os.path.join(ckpt_dir, f"sequences-rank{ctx.rank}"))
    if not split.test:
        raise ValueError(
            f"features for dt={dt} have no user with 3 or more positive events ({', '.join(tcfg.positive_types)}); "
            "the leave-one-out holdout would be empty, so there is nothing to evaluate or gate on"
        )
    examples = TrainingSet(split.train, tcfg.max_seq_len, tcfg.positive_types)
    counts = positive_counts(split.train, vocab, tcfg.positive_types)
    rec = Recommender(build_model(vocab, tcfg), vocab, data_version, counts)
    log.info("dt=%s: %d users, %d items, %d training events in %d training sequences (read in %.1fs, kept on "
             "disk under %s), %d holdout users evaluated of %d, device %s, rank %d of %d",
             dt, split.n_users, vocab.n_items, split.train.n_events, len(examples), time.monotonic() - t_read,
             ckpt_dir, len(split.test), split.n_holdout_users, device, ctx.rank, ctx.world)

    main = ctx.is_main  # rank 0 logs, writes checkpoints and registers; other ranks only train
    experiment_id = registry.ensure_experiment(settings) if main else None
    active_run = (mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{dt}") if main
                  else contextlib.nullcontext())
    with active_run as active:
        if main:
            report.log_setup({"feature_dt": dt, "feature_snapshot_hash": data_version["snapshot_hash"],
                              "git_commit": git_commit(), "device": str(device), "world_size": str(ctx.world)},
                             tcfg, settings, vocab, split, len(examples))
        t0 = time.monotonic()
        history = fit(rec, examples, split.valid, tcfg, device=device, amp_dtype=amp_dtype,
                      on_epoch=report.epoch_logger(report.MODEL) if main else None,
                      checkpoint_path=os.path.join(ckpt_dir, "model.pt"))
        train_seconds = time.monotonic() - t0
        histories = {"attention recommender": history}
        plain = None
        if settings.train_ablation:  # the same budget, batches and seed; item ids and positions only
            seed_everything(tcfg.seed)
            plain = Recommender(build_model(vocab, tcfg, id_only=True), vocab, data_version, counts)
            t1 = time.monotonic()
            histories["plain SASRec"] = fit(plain, examples, split.valid, tcfg, device=device, amp_dtype=amp_dtype,
                                            on_epoch=report.epoch_logger(report.SASREC_PLAIN) if main else None,
                                            checkpoint_path=os.path.join(ckpt_dir, "sasrec_plain.pt"))
            if main:
                mlflow.log_metrics({f"{report.SASREC_PLAIN}train_seconds": time.monotonic() - t1,
                                    f"{report.SASREC_PLAIN}epochs_run": float(len(histories["plain SASRec"]))})
        if not main:  # rank 0 removes the checkpoint directory once the run is registered
            shutil.rmtree(os.path.join(ckpt_dir, f"sequences-rank{ctx.rank}"), ignore_errors=True)
            return {"rank": ctx.rank}

        rec.model = rec.model.cpu()
        metrics = evaluate_recommender(rec, split.test)
        baseline = evaluate_popularity(counts, vocab, split.test)
        knn, knn_choice = tune_knn(split.train, vocab, counts, split.valid, tcfg.positive_types)
        knn_metrics = evaluate_knn(knn, split.test)
        plain_metrics = None
        if plain is not None:
            plain.model = plain.model.cpu()
            plain_metrics = evaluate_recommender(plain, split.test)
        report.log_results({report.MODEL: metrics, report.POPULARITY: baseline, report.KNN: knn_metrics,
                            report.SASREC_PLAIN: plain_metrics}, knn_choice, histories, train_seconds)

        with tempfile.TemporaryDirectory() as tmp:
            model_uri = registry.log_recommender(rec, tmp, split.test[:2])
        version = registry.register(settings, model_uri, active.info.run_id,
                                    {"feature_dt": dt, "feature_snapshot_hash": data_version["snapshot_hash"],
                                     "test_ndcg_at_10": f"{metrics['ndcg_at_10']:.6f}"})
        promoted, reason = registry.gate(settings, version, metrics["ndcg_at_10"], split.test, dt)
        mlflow.set_tags({"model_version": version, "promoted": str(promoted), "promotion_reason": reason})
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the run is recorded; a re-run of dt trains afresh
    return {"run_id": active.info.run_id, "model_version": version, "metrics": metrics, "baseline_metrics": baseline,
            "knn_metrics": knn_metrics, "sasrec_plain_metrics": plain_metrics, "promoted": promoted, "reason": reason}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--dt", required=True, help="features partition date, YYYY-MM-DD")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a TrainConfig field, e.g. --set dropout=0.3 (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    result = run(args.dt, settings, train_config(settings, args.overrides))
    if "rank" not in result:
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
