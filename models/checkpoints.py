"""Resumable training: after every epoch one file holds the model, optimizer, LR schedule, early-stopping
state, history, elapsed time and every random state, so a retried task ends exactly where an uninterrupted
run ends. Rank 0 writes it atomically; every rank reads it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from attnrec.settings import Settings
from models.config import TrainConfig
from models.losses import NegativeSampler
from models.model import AttentionRecommender
from models.runtime import DistContext, gather, rank0_decides

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where a fit stands after ``epoch`` epochs: the early-stopping state and the history."""

    epoch: int = 0
    best_score: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None  # CPU copy of the best epoch's weights
    stale: int = 0  # epochs since the best one
    elapsed: float = 0.0  # wall-clock seconds spent, over every attempt
    done: bool = False  # stopped early or out of time: a resume trains no further
    history: list[dict[str, float]] = field(default_factory=list)

    def record(self, row: dict[str, float], model: AttentionRecommender) -> None:
        """Add an epoch's ``row``; keep the weights when its validation NDCG@10 (else its epoch number) is the best."""
        self.epoch = int(row["epoch"])
        self.history.append(row)
        score = row.get("val_ndcg_at_10", row["epoch"])
        if score > self.best_score:
            self.best_score, self.stale = score, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.stale += 1


@dataclass
class Trainee:
    """What a checkpoint restores besides the progress: weights, optimizer, LR schedule and random streams."""

    model: AttentionRecommender
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    rng: random.Random  # the batch order
    sampler: NegativeSampler | None  # its own generator: the sampled negatives


def directory(settings: Settings, dt: str, data_version: dict[str, Any], tcfg: TrainConfig) -> str:
    """Where a training's checkpoints live: one directory per (dt, data snapshot, settings, config), so a
    retry of the same task resumes and anything else starts afresh."""
    key = json.dumps(
        {
            "dt": dt,
            "snapshot": data_version.get("snapshot_hash"),
            "ablation": settings.train_ablation,
            "holdout_max_users": settings.holdout_max_users,
            "train": tcfg.resume_key(),
        },
        sort_keys=True,
    )
    return os.path.join(settings.checkpoint_dir, f"train-{dt}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")


def fingerprint(model: AttentionRecommender, tcfg: TrainConfig, n_examples: int) -> str:
    """What a checkpoint must match to be resumed: the model config, the training config, the data size."""
    return json.dumps(
        {"model": asdict(model.cfg), "train": tcfg.resume_key(), "n_examples": n_examples}, sort_keys=True
    )


def save(path: str, key: str, trainee: Trainee, progress: Progress, ctx: DistContext, device: torch.device) -> None:
    """Write the checkpoint (on rank 0, with every rank's torch random state); every rank must call it."""
    torch_states = gather(torch.get_rng_state(), ctx)
    cuda_states = gather(torch.cuda.get_rng_state(device), ctx) if device.type == "cuda" else None
    if not ctx.is_main:
        return
    payload = {
        "fingerprint": key,
        "epoch": progress.epoch,
        "model": trainee.model.state_dict(),
        "optimizer": trainee.opt.state_dict(),
        "scheduler": trainee.sched.state_dict(),
        "best_score": progress.best_score,
        "best_state": progress.best_state,
        "stale": progress.stale,
        "history": progress.history,
        "elapsed": progress.elapsed,
        "done": progress.done,
        "python_rng": trainee.rng.getstate(),
        "torch_rng": torch_states,
        "cuda_rng": cuda_states,
        "sampler_rng": trainee.sampler.generator.get_state() if trainee.sampler is not None else None,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"  # written aside, then renamed: a crash never leaves half a checkpoint
    torch.save(payload, tmp)
    os.replace(tmp, path)


def resume(path: str, key: str, trainee: Trainee, ctx: DistContext, device: torch.device) -> Progress | None:
    """Restore ``trainee`` from ``path`` when rank 0 sees it and return the progress there, else None. A file
    written for another model, config or data size is refused with a ValueError; every rank must call it."""
    if not rank0_decides(os.path.exists(path), ctx, device):
        return None
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"rank {ctx.rank} cannot see the checkpoint {path} that rank 0 resumes from; put "
            "ATTNREC_CHECKPOINT_DIR on storage every node shares"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("fingerprint") != key:
        raise ValueError(
            f"checkpoint {path} was written for another model, training config, data size, epoch count or seed; "
            "delete it to train from scratch, or point the run at its own checkpoint path"
        )
    trainee.model.load_state_dict(ckpt["model"])
    trainee.opt.load_state_dict(ckpt["optimizer"])
    trainee.sched.load_state_dict(ckpt["scheduler"])
    trainee.rng.setstate(ckpt["python_rng"])
    torch_states = ckpt["torch_rng"]
    torch.set_rng_state(torch_states[ctx.rank % len(torch_states)])
    if device.type == "cuda" and ckpt.get("cuda_rng"):
        torch.cuda.set_rng_state(ckpt["cuda_rng"][ctx.rank % len(ckpt["cuda_rng"])], device)
    if trainee.sampler is not None:
        trainee.sampler.generator.set_state(ckpt["sampler_rng"])
    progress = Progress(
        ckpt["epoch"],
        ckpt["best_score"],
        ckpt["best_state"],
        ckpt["stale"],
        ckpt["elapsed"],
        ckpt["done"],
        ckpt["history"],
    )
    log.info("resuming from %s after epoch %d%s", path, progress.epoch, " (already finished)" if progress.done else "")
    return progress
