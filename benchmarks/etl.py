"""Benchmark the behaviour ETL: generate N synthetic events, then run the Spark jobs of behavior_etl on them.

Each stage runs the way the DAG runs it, one process per job (``python jobs/<job>.py --dt D``) with
ATTNREC_DATA_ROOT pointing at a temporary lake, and publishes through :mod:`attnrec.lake`. For every stage
it prints wall seconds, events per second and the peak resident memory of the whole process tree (Python
driver plus its JVM), sampled with psutil every 0.5 s.

Run: ``python benchmarks/etl.py --events 1000000 [--days 1] [--users N] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import datetime as dt_
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _tree_rss(proc) -> int:
    """Resident bytes of ``proc`` and all its descendants (0 for processes that are already gone)."""
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_stage(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak tree RSS in bytes). Raises RuntimeError naming the command on failure."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    ps = psutil.Process(proc.pid)
    peak = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, _tree_rss(ps))
        time.sleep(0.5)
    reader.join()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{''.join(output)[-4000:]}")
    return seconds, peak


def measure_in_process(fn) -> tuple[float, int]:
    """Wall seconds and peak RSS of this process while ``fn()`` runs (for the generator and publish steps)."""
    import psutil

    me = psutil.Process()
    peak = [me.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return time.perf_counter() - started, max(peak[0], me.memory_info().rss)


def main(argv: list[str] | None = None) -> int:
    from attnrec import lake
    from datatools.generate import generate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--events", type=int, required=True, help="synthetic events in all (split evenly over the days)"
    )
    parser.add_argument("--days", type=int, default=1, help="landing days (default 1)")
    parser.add_argument("--users", type=int, default=0, help="users (default: events / 100 per day, at least 100)")
    parser.add_argument("--items", type=int, default=20_000, help="catalogue size (default 20000)")
    parser.add_argument("--start", default="2026-01-01", help="first landing day (default 2026-01-01)")
    parser.add_argument(
        "--files-per-day",
        type=int,
        default=8,
        help="gzip files per landing day (default 8; gzip is not splittable, so one file is one task)",
    )
    parser.add_argument("--keep", help="lake directory to write to and keep (default: a temporary one, deleted)")
    parser.add_argument("--driver-memory", default="4g", help="ATTNREC_SPARK_DRIVER_MEMORY for the jobs (default 4g)")
    args = parser.parse_args(argv)
    if args.events < args.days or args.days < 1:
        raise ValueError(f"--events={args.events} --days={args.days}: need at least one event per day and one day")

    per_day = args.events // args.days
    users = args.users or max(100, per_day // 100)
    root = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="attnrec-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNREC_")}
    env.update(ATTNREC_DATA_ROOT=str(root), ATTNREC_SPARK_DRIVER_MEMORY=args.driver_memory)
    os.environ["ATTNREC_DATA_ROOT"] = str(root)
    py = sys.executable
    rows: list[tuple[str, float, int, int]] = []  # stage, seconds, events, peak rss

    try:
        seconds, rss = measure_in_process(
            lambda: generate(str(root), start_dt=args.start, days=args.days, users=users, items=args.items,
                             events_per_day=per_day, seed=42, files_per_day=args.files_per_day)
        )  # fmt: skip
        rows.append(("generate", seconds, per_day * args.days, rss))
        start = dt_.date.fromisoformat(args.start)
        for day in range(args.days):
            dt = (start + dt_.timedelta(days=day)).isoformat()
            stages = [
                ("clean", [py, "jobs/clean.py", "--dt", dt]),
                ("validate clean", [py, "jobs/validate.py", "--dataset", "clean_events", "--dt", dt]),
                ("publish clean", None),
                ("featurize", [py, "jobs/featurize.py", "--dt", dt]),
                ("validate features", [py, "jobs/validate.py", "--dataset", "features", "--dt", dt]),
                ("publish features", None),
            ]
            for name, cmd in stages:
                if cmd is None:
                    datasets = (
                        (lake.QUARANTINE_EVENTS, lake.CLEAN_EVENTS)
                        if name == "publish clean"
                        else (lake.FEATURE_ITEMS, lake.FEATURE_SEQUENCES)
                    )
                    seconds, rss = measure_in_process(lambda: [lake.publish(str(root), d, dt) for d in datasets])
                else:
                    seconds, rss = run_stage(cmd, env)
                rows.append((f"{name} {dt}" if args.days > 1 else name, seconds, per_day, rss))
                print(f"  {rows[-1][0]}: {seconds:.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    etl = [r for r in rows if r[0] != "generate"]
    etl_seconds = sum(r[1] for r in etl)
    total_events = per_day * args.days
    print(
        f"\nbehavior_etl benchmark: {total_events:,} events, {args.days} day(s), {users:,} users, "
        f"{args.items:,} items, {args.files_per_day} gzip file(s) per day"
    )
    print("| stage | seconds | events/s | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for name, seconds, events, rss in rows:
        print(f"| {name} | {seconds:.1f} | {events / seconds:,.0f} | {rss / 2**20:,.0f} |")
    print(
        f"| **ETL total** (clean to publish features) | {etl_seconds:.1f} | {total_events / etl_seconds:,.0f} | "
        f"{max(r[3] for r in etl) / 2**20:,.0f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
