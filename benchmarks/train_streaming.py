"""Benchmark training's memory at scale: read a large features/sequences partition and train on it.

A synthetic partition of ``--users`` users (default 1,000,000; sequence lengths log-normal around
``--mean-len``, items walking a hidden cycle with random jumps) is written to parquet by a child process,
so its memory is not counted. Then, in this process, exactly as ``models.train.run`` does:
``models.dataset.read_split`` streams it (training events encoded to twelve bytes each, kept in files and
memory-mapped; the holdout capped at ``--holdout-max-users``), ``TrainingSet`` indexes the examples, and
``models.fit.train_step`` runs ``--steps`` optimizer steps (the settings' training config), then the capped
validation holdout is ranked once. Printed: read rate, resident memory (RSS, from /proc) after each stage
and at peak, bytes on disk, sequences/s, validation time.

Run: ``python benchmarks/train_streaming.py [--users 1000000] [--items 20000] [--mean-len 50] [--steps 30]
[--threads N] [--device cpu|cuda] [--workdir DIR] [--keep]``
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVENT_MIX = ("click", "view", "rate", "purchase", "impression", "skip")  # the last two are context only


def memory_mib() -> dict[str, float]:
    """This process's resident memory in MiB (Linux /proc/self/status): ``anon`` (the heap: what the process
    really holds), ``file`` (mapped file pages such as the memory-mapped events: page cache the kernel can
    reclaim and re-read), ``peak`` (high-water mark of both together)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    keys = {"anon": "RssAnon", "file": "RssFile", "peak": "VmHWM"}
    kib = {name: int(fields[key].split()[0]) for name, key in keys.items()}
    return {name: value / 1024 for name, value in kib.items()}


def show_memory(base: dict[str, float]) -> str:
    m = memory_mib()
    return (
        f"RSS: heap {m['anon']:,.0f} MiB ({m['anon'] - base['anon']:+,.0f} MiB since the imports), "
        f"mapped files {m['file']:,.0f} MiB, peak {m['peak']:,.0f} MiB"
    )


def generate(path: Path, n_users: int, n_items: int, mean_len: int, seed: int, chunk: int = 50_000) -> None:
    """Write the synthetic partition ``chunk`` users at a time (bounded memory, vectorised)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items) + 1
    types = pa.array(EVENT_MIX)
    path.mkdir(parents=True)
    writer = None
    for u0 in range(0, n_users, chunk):
        n = min(chunk, n_users - u0)
        lengths = np.clip(rng.lognormal(np.log(mean_len), 0.6, n).astype(np.int64), 5, 200)  # (n,)
        e = int(lengths.sum())
        starts = np.cumsum(lengths) - lengths
        jump = rng.random(e) >= 0.7
        jump[starts] = True  # every user starts somewhere random
        step = np.where(jump, 0, 1 + (rng.random(e) < 0.3))
        base = np.where(jump, rng.integers(0, n_items, e), 0)
        walked = np.cumsum(step)
        last_jump = np.maximum.accumulate(np.where(jump, np.arange(e), 0))
        pos = (base[last_jump] + walked - walked[last_jump]) % n_items
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        items = pc.cast(pa.array(cycle[pos]), pa.string())
        kinds = pc.take(types, pa.array(rng.choice(len(EVENT_MIX), e, p=[0.4, 0.25, 0.1, 0.05, 0.15, 0.05])))
        gaps = rng.exponential(600_000, e).astype(np.int64)
        times = 1_700_000_000_000 + np.cumsum(gaps)
        dwell = pa.array(rng.exponential(30_000, e).astype(np.int64), mask=rng.random(e) < 0.2)
        table = pa.table(
            {
                "user_id": pa.array([f"u{u}" for u in range(u0, u0 + n)]),
                "item_ids": pa.ListArray.from_arrays(offsets, items),
                "event_types": pa.ListArray.from_arrays(offsets, kinds),
                "event_times_ms": pa.ListArray.from_arrays(offsets, pa.array(times)),
                "dwell_ms": pa.ListArray.from_arrays(offsets, dwell),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path / "part-00000.parquet", table.schema)
        writer.write_table(table, row_group_size=10_000)
    if writer is not None:
        writer.close()
    (path / "_SUCCESS").write_text("")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--mean-len", type=int, default=50, help="typical sequence length (clipped to 5..200)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps to time")
    parser.add_argument("--holdout-max-users", type=int, default=20_000, help="as ATTNREC_HOLDOUT_MAX_USERS")
    parser.add_argument("--max-seq-len", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: every core)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when there is a GPU)")
    parser.add_argument("--workdir", help="where the partition and the spill files go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (reuse its partition next time)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--generate-only", help=argparse.SUPPRESS)  # the child process: write this partition
    args = parser.parse_args(argv)
    if args.generate_only:
        generate(Path(args.generate_only), args.users, args.items, args.mean_len, args.seed)
        return 0

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="attnrec-stream-"))
    sequences = workdir / "sequences"
    if not (sequences / "_SUCCESS").exists():
        shutil.rmtree(sequences, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--generate-only",
                str(sequences),
                "--users",
                str(args.users),
                "--items",
                str(args.items),
                "--mean-len",
                str(args.mean_len),
                "--seed",
                str(args.seed),
            ],
            check=True,
        )
        print(f"generated {args.users:,} users in {time.perf_counter() - t0:.1f} s (child process)", flush=True)
    parquet_bytes = sum(f.stat().st_size for f in sequences.glob("*.parquet"))

    import numpy as np
    import torch

    from attnrec.settings import get_settings
    from models.config import build_model, train_config
    from models.dataset import TrainingSet, positive_counts, read_split
    from models.evaluate import evaluate_recommender
    from models.fit import make_optimizer, train_step
    from models.losses import NextItemLoss
    from models.recommender import Recommender
    from models.runtime import seed_everything
    from models.vocab import ItemVocab

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    amp = torch.bfloat16 if device.type == "cuda" else None
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    seed_everything(args.seed)
    vocab = ItemVocab.from_items([{"item_idx": i, "item_id": str(i)} for i in range(1, args.items + 1)])
    base = memory_mib()
    print(
        f"partition: {sequences} ({parquet_bytes / 2**20:,.0f} MiB parquet); device: {label}; "
        f"torch {torch.__version__}; heap after imports {base['anon']:,.0f} MiB",
        flush=True,
    )

    t0 = time.perf_counter()
    split = read_split(
        str(sequences), vocab, max_holdout_users=args.holdout_max_users or None, spill_dir=str(workdir / "spill")
    )
    read_s = time.perf_counter() - t0
    spill_bytes = sum(f.stat().st_size for f in (workdir / "spill").iterdir())
    examples = TrainingSet(split.train, args.max_seq_len)
    counts = positive_counts(split.train, vocab)
    print(
        f"read_split: {split.n_users:,} users, {split.train.n_events:,} training events in {read_s:.1f} s "
        f"({split.n_users / read_s:,.0f} users/s); {len(examples):,} training sequences; holdout "
        f"{len(split.test):,} of {split.n_holdout_users:,} users; {spill_bytes / 2**20:,.0f} MiB on disk "
        f"({spill_bytes / max(split.train.n_events, 1):.1f} B/event)\n  {show_memory(base)}",
        flush=True,
    )

    tcfg = train_config(get_settings(), [f"max_seq_len={args.max_seq_len}", f"seed={args.seed}"])
    rec = Recommender(build_model(vocab, tcfg), vocab, {}, counts)
    model = rec.model.to(device).train()
    opt = make_optimizer(model, tcfg)
    loss = NextItemLoss(model, tcfg.mask_seen)
    batches = examples.batches(tcfg.batch_size, random.Random(args.seed))
    losses, t_steps, done = [], 0.0, 0
    for step in range(args.steps):
        inputs, targets = next(batches)
        t1 = time.perf_counter()
        losses.append(train_step(loss, opt, inputs, targets, None, None, tcfg, device, amp))
        t_steps += time.perf_counter() - t1 if step else 0.0  # the first step warms up
        done += len(targets) if step else 0
    print(
        f"training: {args.steps} steps of {tcfg.batch_size} sequences (d={tcfg.d_model}, {args.items:,} items, "
        f"full softmax): {done / max(t_steps, 1e-9):,.1f} sequences/s after the first step; loss "
        f"{np.mean(losses[:5]):.3f} (first 5) -> {np.mean(losses[-5:]):.3f} (last 5)\n  {show_memory(base)}",
        flush=True,
    )

    t0 = time.perf_counter()
    rec.model = model.eval()
    metrics = evaluate_recommender(rec, split.valid, device)
    print(
        f"validation on the {len(split.valid):,} sampled holdout users (full catalogue): "
        f"{time.perf_counter() - t0:.1f} s, NDCG@10 {metrics['ndcg_at_10']:.4f}\n  {show_memory(base)}",
        flush=True,
    )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
