"""Train the attention recommender on one features partition, track it in MLflow, register it, gate it.

``run(dt)`` is what the train_recommender DAG calls; ``python -m models.train --dt YYYY-MM-DD`` does the
same from a shell. Steps: read features/items for ``dt`` -> stream features/sequences a batch at a time
into the leave-one-out split by time (training events encoded to seven bytes each, in memory-mapped files
under the checkpoint directory; the holdout capped at ``ATTNREC_HOLDOUT_MAX_USERS`` users) -> train (cross-entropy on every next positive event: full softmax, or sampled softmax with a
logQ correction above ``ATTNREC_FULL_SOFTMAX_MAX_ITEMS`` items; AdamW, warm-up + cosine decay, gradient
clipping, early stopping on validation NDCG@10, bounded by epochs and wall clock; a resumable checkpoint
after every epoch) -> train the plain SASRec ablation (item ids only) with the same budget -> evaluate
on the test holdout beside the baselines (popularity, item-to-item transition kNN with its settings chosen
on the validation holdout, plain SASRec) -> log
params, curves, metrics and the model (an MLflow pyfunc holding a self-describing checkpoint) -> register
a version, alias "challenger" -> promote it to "champion" only if it beats the current champion on this
run's holdout.

Several processes: ``torchrun --nproc_per_node=N -m models.train --dt YYYY-MM-DD`` (NCCL on GPUs, gloo on
CPU). Every rank reads the same data and trains on its share of every batch with gradients summed over
ranks; only rank 0 logs to MLflow, writes checkpoints and registers the model.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from attnrec.settings import PROJECT_ROOT, Settings, get_settings
from models.baselines import evaluate_knn, evaluate_popularity, tune_knn
from models.dataset import Holdout, TrainingSet, positive_counts, read_split
from models.encoding import DEFAULT_POSITIVE_TYPES, N_DWELL_BUCKETS, N_GAP_BUCKETS, positive_types
from models.evaluate import evaluate_recommender, recommender_ranks
from models.features import load_features
from models.metrics import metrics_from_ranks
from models.model import AttentionRecommender, ModelConfig
from models.recommender import Recommender
from models.vocab import N_YEAR_BUCKETS, ItemVocab

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training hyper-parameters (epochs, wall clock and seed come from Settings)."""

    d_model: int = 128  # 128 beat 64 on MovieLens-100K validation (0.1295 vs 0.1196 over 3 seeds) and test
    n_heads: int = 2
    n_layers: int = 2
    dropout: float = 0.3  # with mask_seen, 0.3 beat 0.5 on MovieLens-100K validation and test over 3 seeds
    batch_size: int = 32  # sequences per optimizer step, over all ranks together
    lr: float = 2e-3
    weight_decay: float = 0.1  # on Linear weights only; embeddings and norms are not decayed
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last epoch
    grad_clip: float = 1.0
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping (validation is noisy)
    positive_types: tuple[str, ...] = field(default=DEFAULT_POSITIVE_TYPES)
    full_softmax_max_items: int = 200_000  # larger catalogues train with sampled softmax + logQ correction
    n_negatives: int = 1024  # sampled softmax: negatives per step, shared by every position of the batch
    sampling_alpha: float = 0.75  # sampled softmax: Q(item) proportional to (training target count + 1) ** alpha
    mask_seen: bool = True  # leave the items seen so far out of each position's softmax, as serving does


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
    """CUDA (this process's local rank's GPU under torchrun) with bf16 autocast when there is a GPU; else CPU
    in float32, the cores shared evenly by the processes on this machine."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))), torch.bfloat16
    local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return torch.device("cpu"), None


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_context() -> DistContext:
    """The current process group, if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def init_distributed() -> tuple[DistContext, bool]:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL when there are GPUs, gloo on CPU.

    Returns (context, whether this call created the group, so the caller destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist_context(), False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist_context(), True


def git_commit() -> str:
    """The checkout's commit, best effort ('unknown' outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


# ---------------------------------------------------------------- model and loss -------------------------------


def build_model(vocab: ItemVocab, tcfg: TrainConfig, max_len: int, id_only: bool = False) -> AttentionRecommender:
    """A fresh model sized for ``vocab`` with its content buffers filled (``id_only``: plain SASRec)."""
    from attnrec.contracts import EVENT_TYPES

    cfg = ModelConfig(
        n_items=vocab.n_items, n_categories=len(vocab.categories), max_categories=vocab.max_categories,
        n_years=N_YEAR_BUCKETS, n_event_types=len(EVENT_TYPES), n_dwell_buckets=N_DWELL_BUCKETS,
        n_gap_buckets=N_GAP_BUCKETS, max_len=max_len, d_model=tcfg.d_model, n_heads=tcfg.n_heads,
        n_layers=tcfg.n_layers, dropout=tcfg.dropout, id_only=id_only,
    )
    model = AttentionRecommender(cfg)
    model.items.set_content(*vocab.content_tensors())
    return model


class NegativeSampler:
    """Negatives for sampled softmax with the logQ correction (Bengio & Senecal 2008; Yi et al. 2019).

    Every step draws ``n`` items with replacement from Q(i) proportional to (count_i + 1) ** alpha over
    items 1..N (``counts`` are training target counts), shared by every position of the batch. Every logit,
    the target's and the negatives', is corrected by - log Q(item), so popular items, which are sampled
    more often, are not pushed down more than the full softmax would. The sampler has its own seeded
    generator (inverse-CDF sampling, any catalogue size): the same negatives on every rank and after a resume.
    """

    def __init__(self, counts: torch.Tensor, n: int, alpha: float, seed: int, device: torch.device) -> None:
        if n < 1:
            raise ValueError(f"n_negatives={n}: sampled softmax needs at least one negative per step")
        q = (counts[1:].double().clamp(min=0) + 1.0) ** alpha  # (N,)
        q = q / q.sum()
        self.cdf = q.cumsum(0)  # (N,) float64 on CPU
        self.log_q = torch.cat([torch.zeros(1, dtype=torch.float64), q.log()]).float().to(device)  # (N+1,)
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, device: torch.device) -> torch.Tensor:
        """(n,) item indices in 1..N."""
        u = torch.rand(self.n, generator=self.generator, dtype=torch.float64) * self.cdf[-1]
        idx = torch.searchsorted(self.cdf, u).clamp(max=self.cdf.numel() - 1)
        return (idx + 1).to(device)


def sampled_logits(model: AttentionRecommender, hidden: torch.Tensor, targets: torch.Tensor,
                   negatives: torch.Tensor, log_q: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Corrected logits (T, 1 + K): column 0 the target, then the K shared negatives; a negative equal to
    the row's target (an accidental hit), or among the row's ``seen`` items (T, S) when given, is masked out.
    hidden (T, d), targets (T,), negatives (K,), log_q (N+1,). Builds T x (K + 1) logits, never T x N."""
    pos = model.target_scores(hidden, targets) - log_q[targets]  # (T,)
    neg = model.item_scores(hidden, negatives) - log_q[negatives]  # (T, K)
    drop = negatives[None, :] == targets[:, None]  # (T, K)
    if seen is not None:  # membership by binary search in each sorted row: T x K, never T x K x S
        rows = seen.sort(-1).values  # (T, S)
        wanted = negatives.expand(len(rows), -1).contiguous()  # (T, K)
        at = torch.searchsorted(rows, wanted).clamp(max=rows.shape[1] - 1)  # (T, K)
        drop |= rows.gather(-1, at) == wanted
    neg = neg.masked_fill(drop, float("-inf"))  # (T, K)
    return torch.cat([pos[:, None], neg], 1).float()  # (T, 1 + K)


def seen_prefixes(items: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """For each selected position (b, t) of ``sel`` (B, L), the items at positions 0..t of row b, zeros
    after t: (T, L). These are the items candidate generation would exclude after that position."""
    L = items.shape[1]
    upto = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()  # (L, L): row t keeps 0..t
    return (items[:, None, :] * upto)[sel]  # (T, L)


def drop_seen_targets(items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``targets`` (B, L) with every target already among the items up to its position set to 0: candidate
    generation never serves a seen item, so a repeat is not something to learn to rank."""
    sel = targets > 0  # (B, L)
    repeat = (seen_prefixes(items, sel) == targets[sel][:, None]).any(-1)  # (T,)
    out = targets.clone()
    out[sel] = torch.where(repeat, torch.zeros_like(targets[sel]), targets[sel])
    return out


def next_item_loss(model: AttentionRecommender, inputs: dict[str, torch.Tensor], targets: torch.Tensor,
                   negatives: torch.Tensor | None = None, log_q: torch.Tensor | None = None,
                   reduction: str = "mean", mask_seen: bool = False) -> torch.Tensor:
    """Cross-entropy of the next item at every position that has a target: over the full catalogue, or,
    with ``negatives`` and ``log_q`` (see :class:`NegativeSampler`), sampled softmax with logQ correction.

    ``mask_seen``: at each position the items seen up to it are left out of the softmax (out of the sampled
    negatives with sampled softmax), as candidate generation and evaluation leave them out of the ranking;
    targets must not be among them (see :func:`drop_seen_targets`)."""
    hidden = model.encode(inputs)  # (B, L, d)
    sel = targets > 0  # (B, L)
    h, t = hidden[sel], targets[sel]  # (T, d), (T,)
    if negatives is None:
        if not mask_seen:
            logits = model.scores(h, model.item_table(), start=1).float()  # (T, N): padding is never a next item
            return F.cross_entropy(logits, t - 1, reduction=reduction)
        padding = torch.zeros_like(t)[:, None]  # (T, 1): column 0 is never a next item either
        left_out = torch.cat([padding, seen_prefixes(inputs["items"], sel)], 1)  # (T, 1 + L)
        logits = model.scores(h, model.item_table()).float().scatter(-1, left_out, -math.inf)  # (T, N+1)
        return F.cross_entropy(logits, t, reduction=reduction)
    if log_q is None:
        raise ValueError("sampled softmax needs log_q, the log sampling probability of every item (NegativeSampler.log_q)")
    seen = seen_prefixes(inputs["items"], sel) if mask_seen else None  # (T, L)
    logits = sampled_logits(model, h, t, negatives, log_q, seen)  # (T, 1 + K)
    return F.cross_entropy(logits, torch.zeros_like(t), reduction=reduction)


def make_optimizer(model: AttentionRecommender, tcfg: TrainConfig) -> torch.optim.Optimizer:
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


# ---------------------------------------------------------------- distributed helpers ---------------------------


def _all_reduce_grads(model: AttentionRecommender) -> None:
    """Sum every gradient over the ranks in one flat all-reduce (a rank with no rows contributes zeros)."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


def _rank0_decides(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (wall-clock decisions differ between processes)."""
    if ctx.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _gather(obj: Any, ctx: DistContext) -> list[Any]:
    if ctx.world == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def _validate(rec: Recommender, valid: list[Holdout], device: torch.device, amp_dtype: torch.dtype | None,
              ctx: DistContext) -> dict[str, float]:
    """Validation metrics; with several ranks each ranks its share of users and the ranks are gathered."""
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if ctx.world == 1:
            return evaluate_recommender(rec, valid, device)
        shard = valid[ctx.rank::ctx.world]
        ranks = recommender_ranks(rec, shard, device)[1] if shard else []
    return metrics_from_ranks([r for part in _gather(ranks, ctx) for r in part])


def train_step(model: AttentionRecommender, opt: torch.optim.Optimizer, inputs: dict[str, torch.Tensor],
               targets: torch.Tensor, negatives: torch.Tensor | None, log_q: torch.Tensor | None, tcfg: TrainConfig,
               device: torch.device, amp_dtype: torch.dtype | None, ctx: DistContext = DistContext()) -> float:
    """One optimizer step on one batch; returns the batch's mean loss over all ranks.

    With several ranks, this rank takes rows rank, rank + world, ... of the batch; its loss is the sum over
    its targets divided by the batch's target count over all ranks, and gradients are summed over ranks,
    so the step is the one-process step on the whole batch."""
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
    if n_local:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss_sum = next_item_loss(model, inputs, targets, negatives, log_q, reduction="sum",
                                      mask_seen=tcfg.mask_seen)
    local = 0.0 if loss_sum is None else loss_sum.item()
    if ctx.world > 1:
        stats = torch.tensor([local, float(n_local)], dtype=torch.float64, device=device)
        dist.all_reduce(stats)
        total, n_all = stats.tolist()
    else:
        total, n_all = local, float(n_local)
    if loss_sum is not None:
        (loss_sum / n_all).backward()
    if ctx.world > 1:
        _all_reduce_grads(model)
    torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
    opt.step()
    return total / max(n_all, 1.0)


# ---------------------------------------------------------------- checkpoints -----------------------------------


def _fingerprint(model: AttentionRecommender, tcfg: TrainConfig, n_examples: int, epochs: int, seed: int) -> str:
    """What a checkpoint must match to be resumed: configs, data size, epochs, seed."""
    return json.dumps({"model": asdict(model.cfg), "train": {**asdict(tcfg), "positive_types": list(tcfg.positive_types)},
                       "n_examples": n_examples, "epochs": epochs, "seed": seed}, sort_keys=True)


def _save_checkpoint(path: str, payload: dict[str, Any]) -> None:
    """Write aside, then rename: a crash mid-write never leaves a half checkpoint at ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the training loop -----------------------------


def fit(rec: Recommender, examples: TrainingSet, valid: list[Holdout], tcfg: TrainConfig, *, epochs: int,
        max_minutes: float, seed: int, device: torch.device, amp_dtype: torch.dtype | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        checkpoint_path: str | None = None) -> list[dict[str, float]]:
    """Train ``rec.model`` in place; keep the weights of the best validation NDCG@10 (or the last epoch
    when there is no validation holdout). Stops at ``epochs``, after ``patience`` epochs without
    improvement, or when the next epoch would pass ``max_minutes`` of wall clock. Returns one dict per epoch.

    Loss: full softmax while the catalogue has at most ``tcfg.full_softmax_max_items`` items, else sampled
    softmax with logQ correction (:class:`NegativeSampler`).

    Checkpoint: with ``checkpoint_path``, after every epoch the model, optimizer, LR schedule, epoch, best
    weights, early-stopping state, history, elapsed time and every random state are written there (by
    rank 0, atomically). When the file exists at the start, training resumes from it and ends exactly
    where an uninterrupted run ends; ``on_epoch`` is first replayed for the epochs already done. A file
    written for another model, config, data size, epoch count or seed is refused with a ValueError.

    Distributed (a process group is initialised, see :func:`init_distributed`): every rank builds the same
    batches from the same seed and trains on its rows of each (:func:`train_step`); validation is sharded
    and gathered; ``on_epoch`` runs on rank 0 only.
    """
    if not len(examples):
        raise ValueError("no training examples: no user has a positive event after another event; check features/sequences")
    if examples.max_len > rec.model.cfg.max_len:
        raise ValueError(f"training examples of {examples.max_len} events do not fit the model's max_len "
                         f"{rec.model.cfg.max_len}; build the TrainingSet with max_len <= {rec.model.cfg.max_len}")
    ctx = dist_context()
    model = rec.model.to(device)
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(examples) / tcfg.batch_size)
    opt = make_optimizer(model, tcfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(tcfg, epochs * steps_per_epoch))
    sampler = None
    if model.cfg.n_items > tcfg.full_softmax_max_items:
        sampler = NegativeSampler(examples.target_counts(model.cfg.n_items), tcfg.n_negatives, tcfg.sampling_alpha,
                                  seed, device)
        log.info("sampled softmax: %d items > %d, %d negatives per step with logQ correction",
                 model.cfg.n_items, tcfg.full_softmax_max_items, tcfg.n_negatives)
    fingerprint = _fingerprint(model, tcfg, len(examples), epochs, seed)
    done_epochs, best_score, best_state, stale, elapsed, done = 0, -math.inf, None, 0, 0.0, False
    history: list[dict[str, float]] = []

    resume = _rank0_decides(bool(checkpoint_path) and os.path.exists(checkpoint_path), ctx, device)
    if resume and not os.path.exists(checkpoint_path):
        raise FileNotFoundError(
            f"rank {ctx.rank} cannot see the checkpoint {checkpoint_path} that rank 0 resumes from; put "
            "ATTNREC_CHECKPOINT_DIR on storage every node shares"
        )
    if resume:
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if ckpt.get("fingerprint") != fingerprint:
            raise ValueError(
                f"checkpoint {checkpoint_path} was written for another model, training config, data size, epoch "
                "count or seed; delete it to train from scratch, or point the run at its own checkpoint path"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        rng.setstate(ckpt["python_rng"])
        torch_states = ckpt["torch_rng"]
        torch.set_rng_state(torch_states[ctx.rank % len(torch_states)])
        if device.type == "cuda" and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state(ckpt["cuda_rng"][ctx.rank % len(ckpt["cuda_rng"])], device)
        if sampler is not None:
            sampler.generator.set_state(ckpt["sampler_rng"])
        done_epochs, best_score, stale = ckpt["epoch"], ckpt["best_score"], ckpt["stale"]
        best_state = ckpt["best_state"]
        elapsed, done, history = ckpt["elapsed"], ckpt["done"], ckpt["history"]
        log.info("resuming from %s after epoch %d%s", checkpoint_path, done_epochs, " (already finished)" if done else "")
        if on_epoch and ctx.is_main:
            for row in history:
                on_epoch(row)

    start = time.monotonic() - elapsed
    budget_s = max_minutes * 60.0
    log_q = sampler.log_q if sampler is not None else None
    for epoch in range(done_epochs + 1, epochs + 1):
        if done:
            break
        t0 = time.monotonic()
        model.train()
        total, n = 0.0, 0
        for inputs, targets in examples.batches(tcfg.batch_size, rng):
            negatives = sampler.sample(device) if sampler is not None else None
            total += train_step(model, opt, inputs, targets, negatives, log_q, tcfg, device, amp_dtype, ctx)
            sched.step()
            n += 1
        model.eval()
        row = {"epoch": float(epoch), "train_loss": total / max(n, 1), "lr": sched.get_last_lr()[0],
               "epoch_train_seconds": time.monotonic() - t0}  # the optimizer steps alone, without validation
        if valid:
            vm = _validate(rec, valid, device, amp_dtype, ctx)
            row.update({"val_ndcg_at_10": vm["ndcg_at_10"], "val_hr_at_10": vm["hr_at_10"]})
        row["epoch_seconds"] = time.monotonic() - t0
        history.append(row)
        log.info("epoch %d loss %.4f val_ndcg@10 %.4f (%.1fs)", epoch, row["train_loss"],
                 row.get("val_ndcg_at_10", float("nan")), row["epoch_seconds"])
        score = row.get("val_ndcg_at_10", float(epoch))
        if score > best_score:
            best_score, stale = score, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        over_budget = _rank0_decides(time.monotonic() - start + row["epoch_seconds"] > budget_s, ctx, device)
        done = stale >= tcfg.patience or over_budget
        if checkpoint_path:
            torch_states = _gather(torch.get_rng_state(), ctx)
            cuda_states = _gather(torch.cuda.get_rng_state(device), ctx) if device.type == "cuda" else None
            if ctx.is_main:
                _save_checkpoint(checkpoint_path, {
                    "fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "best_score": best_score,
                    "best_state": best_state, "stale": stale, "history": history,
                    "elapsed": time.monotonic() - start, "done": done, "python_rng": rng.getstate(),
                    "torch_rng": torch_states, "cuda_rng": cuda_states,
                    "sampler_rng": sampler.generator.get_state() if sampler is not None else None,
                })
        if on_epoch and ctx.is_main:
            on_epoch(row)
        if stale >= tcfg.patience:
            log.info("early stop at epoch %d: no better validation NDCG@10 for %d epochs", epoch, stale)
        elif done:
            log.info("stopping at epoch %d: wall-clock budget of %.1f min reached", epoch, max_minutes)
    if best_state is not None:
        model.load_state_dict(best_state)
    rec.model = model.eval()
    return history


# ---------------------------------------------------------------- plots -----------------------------------------


def _curve_figure(histories: dict[str, list[dict[str, float]]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        a.plot(epochs, [h["train_loss"] for h in history], marker="o", label=name)
        if history and "val_ndcg_at_10" in history[0]:
            b.plot(epochs, [h["val_ndcg_at_10"] for h in history], marker="o", label=f"{name} NDCG@10")
            b.plot(epochs, [h["val_hr_at_10"] for h in history], marker=".", linestyle="--", label=f"{name} HR@10")
    a.set(title="training loss", xlabel="epoch", ylabel="loss")
    a.legend()
    b.set(title="validation", xlabel="epoch")
    if b.lines:
        b.legend()
    fig.tight_layout()
    return fig


def _bar_figure(results: dict[str, dict[str, float]]):
    """Grouped bars: one group per metric, one bar per scorer (the model first, then the baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results.values()))
    names = [k for k in first if k != "n_users"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(results)
    for j, (label, metrics) in enumerate(results.items()):
        offset = (j - (len(results) - 1) / 2) * width
        ax.bar([i + offset for i in range(len(names))], [metrics[k] for k in names], width=width, label=label)
    ax.set_xticks(list(range(len(names))), names, rotation=20)
    ax.set(title="test holdout (leave-one-out, full catalogue)")
    ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the stage -------------------------------------

#: MLflow metric prefixes of the scorers every run reports (test metrics are "<prefix>test_<metric>").
MODEL, POPULARITY, KNN, SASREC_PLAIN = "", "pop_", "knn_", "sasrec_plain_"


def checkpoint_dir(settings: Settings, dt: str, data_version: dict[str, Any], tcfg: TrainConfig) -> str:
    """Where this training's checkpoints live: one directory per (dt, data snapshot, settings, config), so a
    retry of the same task resumes and anything else starts afresh."""
    key = json.dumps({"dt": dt, "snapshot": data_version.get("snapshot_hash"), "epochs": settings.train_epochs,
                      "seed": settings.seed, "max_seq_len": settings.max_seq_len, "ablation": settings.train_ablation,
                      "holdout_max_users": settings.holdout_max_users,
                      "train": {**asdict(tcfg), "positive_types": list(tcfg.positive_types)}}, sort_keys=True)
    return os.path.join(settings.checkpoint_dir, f"train-{dt}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")


def run(dt: str, settings: Settings | None = None, tcfg: TrainConfig | None = None) -> dict[str, Any]:
    """Train on features for ``dt``, log to MLflow, register a version and apply the promotion gate.

    Returns {"run_id", "model_version", "metrics", "baseline_metrics", "knn_metrics", "sasrec_plain_metrics"
    (None when ATTNREC_TRAIN_ABLATION is false), "promoted", "reason"}; under torchrun, ranks other than 0
    train only and return {"rank": rank}.
    """
    settings = settings or get_settings()
    tcfg = tcfg or TrainConfig(full_softmax_max_items=settings.full_softmax_max_items,
                               positive_types=positive_types(settings.exposure_event_types, settings.negative_event_types))
    ctx, created = init_distributed()
    try:
        return _run(dt, settings, tcfg, ctx)
    finally:
        if created:
            dist.destroy_process_group()


def _run(dt: str, settings: Settings, tcfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    import mlflow

    from models import registry

    seed_everything(settings.seed)
    device, amp_dtype = choose_device()

    paths, item_rows, data_version = load_features(settings.data_root, dt)
    vocab = ItemVocab.from_items(item_rows)
    ckpt_dir = checkpoint_dir(settings, dt, data_version, tcfg)
    t_read = time.monotonic()
    split = read_split(paths["sequences"], vocab, tcfg.positive_types, settings.holdout_max_users or None,
                       spill_dir=os.path.join(ckpt_dir, f"sequences-rank{ctx.rank}"))
    if not split.test:
        raise ValueError(
            f"features for dt={dt} have no user with 3 or more positive events ({', '.join(tcfg.positive_types)}); "
            "the leave-one-out holdout would be empty, so there is nothing to evaluate or gate on"
        )
    examples = TrainingSet(split.train, settings.max_seq_len, tcfg.positive_types)
    counts = positive_counts(split.train, vocab, tcfg.positive_types)
    rec = Recommender(build_model(vocab, tcfg, settings.max_seq_len), vocab, data_version, counts)
    log.info("dt=%s: %d users, %d items, %d training events in %d training sequences (read in %.1fs, kept on "
             "disk under %s), %d holdout users evaluated of %d, device %s, rank %d of %d",
             dt, split.n_users, vocab.n_items, split.train.n_events, len(examples), time.monotonic() - t_read,
             ckpt_dir, len(split.test), split.n_holdout_users, device, ctx.rank, ctx.world)
    fit_args: dict[str, Any] = {"epochs": settings.train_epochs, "max_minutes": settings.train_max_minutes,
                                "seed": settings.seed, "device": device, "amp_dtype": amp_dtype}

    main = ctx.is_main  # rank 0 logs, writes checkpoints and registers; other ranks only train
    experiment_id = registry.ensure_experiment(settings) if main else None
    active_run = mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{dt}") if main else contextlib.nullcontext()
    with active_run as active:
        if main:
            mlflow.set_tags({"feature_dt": dt, "feature_snapshot_hash": data_version["snapshot_hash"],
                             "git_commit": git_commit(), "device": str(device), "world_size": str(ctx.world)})
            mlflow.log_params({**{k: v for k, v in asdict(tcfg).items() if k != "positive_types"},
                               "positive_types": ",".join(tcfg.positive_types), "epochs": settings.train_epochs,
                               "max_minutes": settings.train_max_minutes, "seed": settings.seed,
                               "max_seq_len": settings.max_seq_len, "n_items": vocab.n_items,
                               "n_categories": len(vocab.categories), "n_users": split.n_users,
                               "n_train_events": split.train.n_events, "n_train_sequences": len(examples),
                               "n_holdout_users": len(split.test), "n_holdout_eligible_users": split.n_holdout_users,
                               "loss": ("sampled_softmax_logq" if vocab.n_items > tcfg.full_softmax_max_items
                                        else "full_softmax"),
                               "train_ablation": settings.train_ablation})

        def epoch_logger(prefix: str) -> Callable[[dict[str, float]], None]:
            def log_epoch(row: dict[str, float]) -> None:
                mlflow.log_metrics({f"{prefix}{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

            return log_epoch

        t0 = time.monotonic()
        history = fit(rec, examples, split.valid, tcfg, on_epoch=epoch_logger(MODEL) if main else None,
                      checkpoint_path=os.path.join(ckpt_dir, "model.pt"), **fit_args)
        train_seconds = time.monotonic() - t0
        histories = {"attention recommender": history}
        plain = None
        if settings.train_ablation:  # the same budget, batches and seed; item ids and positions only
            seed_everything(settings.seed)
            plain = Recommender(build_model(vocab, tcfg, settings.max_seq_len, id_only=True), vocab, data_version, counts)
            t1 = time.monotonic()
            histories["plain SASRec"] = fit(plain, examples, split.valid, tcfg,
                                            on_epoch=epoch_logger(SASREC_PLAIN) if main else None,
                                            checkpoint_path=os.path.join(ckpt_dir, "sasrec_plain.pt"), **fit_args)
            if main:
                mlflow.log_metrics({f"{SASREC_PLAIN}train_seconds": time.monotonic() - t1,
                                    f"{SASREC_PLAIN}epochs_run": float(len(histories["plain SASRec"]))})
        if not main:  # rank 0 removes the checkpoint directory once the run is registered
            shutil.rmtree(os.path.join(ckpt_dir, f"sequences-rank{ctx.rank}"), ignore_errors=True)
            return {"rank": ctx.rank}
        run_id = active.info.run_id

        rec.model = rec.model.cpu()
        metrics = evaluate_recommender(rec, split.test)
        baseline = evaluate_popularity(counts, vocab, split.test)
        knn, knn_choice = tune_knn(split.train, vocab, counts, split.valid, tcfg.positive_types)
        knn_metrics = evaluate_knn(knn, split.test)
        mlflow.log_params({f"{KNN}{k}": v for k, v in knn_choice.items() if k != "val_ndcg_at_10"})
        results = {"attention recommender": metrics, "popularity": baseline, "item kNN (transitions)": knn_metrics}
        plain_metrics = None
        if plain is not None:
            plain.model = plain.model.cpu()
            plain_metrics = evaluate_recommender(plain, split.test)
            results["plain SASRec (ids only)"] = plain_metrics
        mlflow.log_metrics({"train_seconds": train_seconds, "epochs_run": float(len(history)),
                            **{f"{MODEL}test_{k}": v for k, v in metrics.items()},
                            **{f"{POPULARITY}test_{k}": v for k, v in baseline.items()},
                            **{f"{KNN}test_{k}": v for k, v in knn_metrics.items()},
                            f"{KNN}val_ndcg_at_10": knn_choice["val_ndcg_at_10"],
                            **{f"{SASREC_PLAIN}test_{k}": v for k, v in (plain_metrics or {}).items()}})
        mlflow.log_figure(_curve_figure(histories), "plots/training_curves.png")
        mlflow.log_figure(_bar_figure(results), "plots/model_vs_baselines.png")
        for name, m in results.items():
            log.info("test %s: %s", name, _fmt(m))

        with tempfile.TemporaryDirectory() as tmp:
            model_uri = registry.log_recommender(rec, tmp, split.test[:2])
        version = registry.register(settings, model_uri, run_id,
                                    {"feature_dt": dt, "feature_snapshot_hash": data_version["snapshot_hash"],
                                     "test_ndcg_at_10": f"{metrics['ndcg_at_10']:.6f}"})
        promoted, reason = registry.gate(settings, version, metrics["ndcg_at_10"], split.test, dt)
        mlflow.set_tags({"model_version": version, "promoted": str(promoted), "promotion_reason": reason})
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the run is recorded; a re-run of dt trains afresh
    return {"run_id": run_id, "model_version": version, "metrics": metrics, "baseline_metrics": baseline,
            "knn_metrics": knn_metrics, "sasrec_plain_metrics": plain_metrics, "promoted": promoted, "reason": reason}


def _fmt(m: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "n_users")


def parse_overrides(pairs: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """``["dropout=0.3", "n_layers=3"]`` -> a TrainConfig with those fields replaced (typed like the field)."""
    base = base or TrainConfig()
    kinds = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in kinds:
            raise ValueError(f"--set {pair!r}: expected NAME=VALUE with NAME one of {sorted(kinds)}")
        kind = kinds[name]
        if kind is bool:
            changes[name] = raw.lower() in ("1", "true", "yes", "on")
        elif kind is tuple:
            changes[name] = tuple(v.strip() for v in raw.split(",") if v.strip())
        else:
            try:
                changes[name] = kind(raw)
            except ValueError:
                raise ValueError(f"--set {pair!r}: {raw!r} is not a valid {kind.__name__}") from None
    return dataclasses.replace(base, **changes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--dt", required=True, help="features partition date, YYYY-MM-DD")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a TrainConfig field, e.g. --set dropout=0.3 (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    tcfg = parse_overrides(args.overrides, TrainConfig(full_softmax_max_items=settings.full_softmax_max_items))
    result = run(args.dt, settings, tcfg)
    if "rank" not in result:
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
