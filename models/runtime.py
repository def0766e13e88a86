"""Where a process runs: seeds, device and dtype, its place in the torchrun process group, the git commit.

Chosen once in entry points (training, candidates, benchmarks); models take tensors already on their device.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from attnrec.settings import PROJECT_ROOT


def seed_everything(seed: int) -> None:
    """The one place every random choice is seeded from (python, numpy, torch)."""
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)


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


def rank0_decides(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (wall-clock decisions differ between processes)."""
    if ctx.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather(obj: Any, ctx: DistContext) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` when not distributed)."""
    if ctx.world == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def git_commit() -> str:
    """The checkout's commit, best effort ('unknown' outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
