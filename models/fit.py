"""The training loop: AdamW with warm-up + cosine decay, one optimizer step per batch, epochs with early stopping.

:func:`fit` trains one :class:`~models.recommender.Recommender` on a :class:`~models.dataset.TrainingSet` the
way nanoGPT's loop reads: full softmax, or sampled softmax with the logQ correction above
``full_softmax_max_items`` items (models.losses); gradient clipping; validation NDCG@10 after every epoch
keeps the best weights and stops after ``patience`` epochs without a better one, or at the wall-clock safety
net; a resumable checkpoint after every epoch (models.checkpoints). Under torchrun each rank trains on its
share of every batch through DistributedDataParallel; the step equals the one-process step on the whole batch.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from models import checkpoints
from models.checkpoints import Progress, Trainee
from models.config import TrainConfig
from models.dataset import Holdout, TrainingSet
from models.encoding import seen_items
from models.evaluate import evaluate_sharded
from models.losses import NegativeSampler, NextItemLoss, drop_seen_targets
from models.model import AttentionRecommender
from models.recommender import Recommender
from models.runtime import DistContext, dist_context, rank0_decides

log = logging.getLogger(__name__)


def make_optimizer(model: AttentionRecommender, tcfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on Linear weights only (embeddings and norms are not decayed)."""
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "emb" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "emb" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=tcfg.lr,
        betas=(0.9, 0.98),
    )


def make_scheduler(
    opt: torch.optim.Optimizer, tcfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps`` optimizer steps, then
    cosine decay to ``lr * min_lr_ratio`` at the last of ``total_steps``."""
    sched = torch.optim.lr_scheduler
    if tcfg.warmup_steps < 1:
        return sched.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=tcfg.lr * tcfg.min_lr_ratio)
    warmup = sched.LinearLR(opt, start_factor=1 / tcfg.warmup_steps, end_factor=1.0, total_iters=tcfg.warmup_steps - 1)
    cosine = sched.CosineAnnealingLR(
        opt, T_max=max(1, total_steps - tcfg.warmup_steps), eta_min=tcfg.lr * tcfg.min_lr_ratio
    )
    return sched.SequentialLR(opt, [warmup, cosine], milestones=[tcfg.warmup_steps])


def train_step(
    loss: NextItemLoss | DistributedDataParallel,
    opt: torch.optim.Optimizer,
    inputs: dict[str, torch.Tensor],
    targets: torch.Tensor,
    negatives: torch.Tensor | None,
    log_q: torch.Tensor | None,
    tcfg: TrainConfig,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    ctx: DistContext = DistContext(),
) -> float:
    """One optimizer step on one batch; returns the batch's mean loss over all ranks.

    With several ranks ``loss`` is wrapped in DistributedDataParallel and this rank takes rows rank, rank +
    world, ... of the batch. Its summed loss is divided by the batch's target count over all ranks and
    multiplied by the number of ranks, which DDP's gradient average divides out again: the step is the
    one-process step on the whole batch. A rank without targets still joins, with zero gradients."""
    if ctx.world > 1:
        inputs = {k: v[ctx.rank :: ctx.world] for k, v in inputs.items()}
        targets = targets[ctx.rank :: ctx.world]
    inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    targets = targets.to(device, non_blocking=True)
    if tcfg.mask_seen:
        targets = drop_seen_targets(seen_items(inputs), targets)
    n_local = int((targets > 0).sum())
    weights = inputs.get("target_weights")  # the loss is a weighted sum: normalise by the weights' sum
    denom = float(weights[targets > 0].sum()) if weights is not None else float(n_local)
    opt.zero_grad(set_to_none=True)
    loss_sum = None
    if n_local or ctx.world > 1:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss_sum = loss(inputs, targets, negatives, log_q, empty=not n_local)
    local = loss_sum.item() if n_local else 0.0
    if ctx.world > 1:
        stats = torch.tensor([local, denom], dtype=torch.float64, device=device)
        dist.all_reduce(stats)
        total, n_all = stats.tolist()
        (loss_sum / max(n_all, 1e-6) * ctx.world).backward()
    else:
        total, n_all = local, denom
        if loss_sum is not None:
            (loss_sum / max(n_all, 1e-6)).backward()
    torch.nn.utils.clip_grad_norm_(loss.parameters(), tcfg.grad_clip)
    opt.step()
    return total / max(n_all, 1e-6)


def fit(
    rec: Recommender,
    examples: TrainingSet,
    valid: list[Holdout],
    tcfg: TrainConfig,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    checkpoint_path: str | None = None,
) -> list[dict[str, float]]:
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
        raise ValueError(
            "no training examples: no user has a positive event after another event; check features/sequences"
        )
    if examples.max_len > rec.model.cfg.max_len:
        raise ValueError(
            f"training examples of {examples.max_len} events do not fit the model's max_len "
            f"{rec.model.cfg.max_len}; build the TrainingSet with max_len <= {rec.model.cfg.max_len}"
        )
    ctx = dist_context()
    model = rec.model.to(device)
    opt = make_optimizer(model, tcfg)
    sched = make_scheduler(opt, tcfg, tcfg.epochs * math.ceil(len(examples) / tcfg.batch_size))
    sampler = None
    if model.cfg.n_items > tcfg.full_softmax_max_items:
        sampler = NegativeSampler(
            examples.target_counts(model.cfg.n_items), tcfg.n_negatives, tcfg.sampling_alpha, tcfg.seed, device
        )
        log.info(
            "sampled softmax: %d items > %d, %d negatives per step with logQ correction",
            model.cfg.n_items,
            tcfg.full_softmax_max_items,
            tcfg.n_negatives,
        )
    trainee = Trainee(model, opt, sched, random.Random(tcfg.seed), sampler)
    key = checkpoints.fingerprint(model, tcfg, len(examples))
    resumed = checkpoints.resume(checkpoint_path, key, trainee, ctx, device) if checkpoint_path else None
    progress = resumed or Progress()
    loss = NextItemLoss(model, tcfg.mask_seen)
    if ctx.world > 1:  # every parameter takes part in every step (an empty rank too): no unused-parameter search
        loss = DistributedDataParallel(
            loss,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
            find_unused_parameters=False,
        )
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
        row = {
            "epoch": float(epoch),
            "train_loss": total / max(n, 1),
            "lr": sched.get_last_lr()[0],
            "epoch_train_seconds": time.monotonic() - t0,
        }  # the optimizer steps alone, without validation
        if valid:
            vm = evaluate_sharded(rec, valid, device, amp_dtype, ctx)
            row.update({"val_ndcg_at_10": vm["ndcg_at_10"], "val_hr_at_10": vm["hr_at_10"]})
        row["epoch_seconds"] = time.monotonic() - t0
        log.info(
            "epoch %d loss %.4f val_ndcg@10 %.4f (%.1fs)",
            epoch,
            row["train_loss"],
            row.get("val_ndcg_at_10", float("nan")),
            row["epoch_seconds"],
        )
        progress.record(row, model)
        over_budget = rank0_decides(
            time.monotonic() - start + row["epoch_seconds"] > tcfg.max_minutes * 60.0, ctx, device
        )
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
