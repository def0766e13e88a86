"""Benchmark the behaviour ETL: generate N synthetic events, then run the Spark jobs of behavior_etl on them.

Each stage runs the way the DAG runs it, one process per job (``python jobs/<job>.py --dt D --validate``: the job,
then its gate in the same Spark application; clean's application then builds and gates the day's features, which
the featurize process adopts) with ATTNREC_DATA_ROOT pointing at a temporary lake, and publishes through
:mod:`attnrec.lake`. For every stage it prints the job's steps and gates as they finished (seconds since its process
started), wall seconds per part (split at the lines that begin a gate or the features: :data:`PART_MARKS`), events
per second and the peak resident memory of the whole process tree (Python driver plus its JVM), sampled with psutil
every 0.5 s.

Beside it, on the same files in the same run, the bare PySpark floor (benchmarks/etl_floor.py) and behavior_etl's
efficiency against it (floor seconds / ETL seconds) overall and per stage. ``--separate-gates`` runs each gate as
its own Spark application (``jobs/validate.py``), as the DAG did before; ``--profile`` adds the fixed costs
(interpreter, JVM and session, first Spark jobs, Python worker start, GX import and set-up); ``--dags-test`` adds
``airflow dags test behavior_etl`` on the same lake, per task, and Airflow's own share.

Run: ``python benchmarks/etl.py --events 100000 [2000000 ...] [--days 1] [--users N] [--keep DIR] [--profile]
[--dags-test]`` (several sizes: one after another in one run, then a table of all of them)
"""

from __future__ import annotations

import argparse
import datetime as dt_
import json
import os
import re
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


def run_stage(cmd: list[str], env: dict[str, str], lines: list | None = None) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak tree RSS in bytes). Raises RuntimeError naming the command on failure.

    ``lines``, when given, receives ``(seconds since start, line)`` for every line the command prints.
    """
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    ps = psutil.Process(proc.pid)
    peak = 0
    output: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            output.append(line)
            if lines is not None:
                lines.append((time.perf_counter() - started, line))

    reader = threading.Thread(target=read, daemon=True)
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


#: Run in a fresh process by :func:`measure_fixed_costs`; prints one JSON line of seconds.
FIXED_COSTS_SCRIPT = """
import json, time
t = {}
t0 = time.perf_counter()
from attnrec.spark import get_spark
spark = get_spark("attnrec-fixed-costs")
t["SparkSession build (JVM start, session)"] = time.perf_counter() - t0
t0 = time.perf_counter(); spark.range(1).count()
t["first Spark job (no Python worker)"] = time.perf_counter() - t0
t0 = time.perf_counter(); spark.range(1).count()
t["second Spark job"] = time.perf_counter() - t0
t0 = time.perf_counter(); spark.sparkContext.parallelize([1], 1).map(lambda x: x).count()
t["first job with a Python worker (worker start)"] = time.perf_counter() - t0
t0 = time.perf_counter(); spark.sparkContext.parallelize([1], 1).map(lambda x: x).count()
t["second job with a Python worker"] = time.perf_counter() - t0
t0 = time.perf_counter(); spark.stop()
t["SparkSession stop"] = time.perf_counter() - t0
t0 = time.perf_counter()
import great_expectations
t["import great_expectations"] = time.perf_counter() - t0
from attnrec.settings import get_settings
from expectations import runner
t0 = time.perf_counter()
for suite in ("raw_events_sample", "clean_events", "quarantine_events", "user_sequences", "item_table"):
    context, site = runner._context(get_settings())
    context.data_sources.add_spark(name="attnrec_spark")
    context.suites.add(runner.load_suite(suite))
t["GX contexts, Spark data sources and suites (5 suites)"] = time.perf_counter() - t0
print(json.dumps(t))
"""


def measure_fixed_costs(env: dict[str, str]) -> dict[str, float]:
    """The fixed costs every day pays, each measured in a fresh process: ``python -c pass``, the JVM and session,
    Spark's first jobs (with and without a Python worker), and GX's import and set-up for the five suites."""

    def wall(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True)
        return time.perf_counter() - started

    costs = {"Python interpreter start (python -c pass)": wall("pass")}
    costs["import pyspark.sql (beyond the interpreter)"] = wall("import pyspark.sql") - costs[next(iter(costs))]
    lines: list = []
    seconds, _ = run_stage([sys.executable, "-c", FIXED_COSTS_SCRIPT], env, lines)
    costs.update(json.loads(next(line for _, line in reversed(lines) if line.startswith("{"))))
    costs["whole fixed-costs process"] = seconds
    return costs


def measure_dags_test(root: Path, dt: str, env: dict[str, str]) -> tuple[float, list[tuple[str, float]]]:
    """``airflow dags test behavior_etl dt`` in a fresh Airflow home (``airflow db migrate`` not counted) on the
    lake the stages just wrote (every task replaces its partition, so the run redoes day ``dt``): its wall seconds
    and each task's seconds from the ``[DAG TEST] starting/end task`` log lines."""
    home = root / "_airflow"
    home.mkdir(exist_ok=True)
    if not (home / "dags").exists():
        (home / "dags").symlink_to(REPO / "dags")  # Airflow's default dags folder, as tests/test_integration.py does
    airflow_env = {k: v for k, v in env.items() if not k.startswith(("AIRFLOW", "MLFLOW_"))}
    airflow_env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
    )
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=airflow_env, check=True, capture_output=True)
    lines: list = []
    seconds, _ = run_stage([sys.executable, "-m", "airflow", "dags", "test", "behavior_etl", dt], airflow_env, lines)
    starts: dict[str, dt_.datetime] = {}
    tasks: list[tuple[str, float]] = []
    for _, line in lines:
        found = re.match(r"(\S+Z) .*\[DAG TEST\] (starting|end task) task_id=(\w+)", line)
        if found:
            at = dt_.datetime.fromisoformat(found[1].replace("Z", "+00:00"))
            if found[2] == "starting":
                starts[found[3]] = at
            else:
                tasks.append((found[3], (at - starts[found[3]]).total_seconds()))
    return seconds, tasks


GATE_MARK = "gate dt="  # jobs/validate.py's first line: where a job's gate begins
#: Lines a --validate job prints where one of its parts begins: (text in the line, part, floor stage compared with).
#: jobs/clean.py --validate builds the day's features too, after its gate (jobs/featurize.py prebuild).
PART_MARKS = (
    ("clean_events gate dt=", "clean gate", "clean"),
    ("building the features in this application", "featurize (in clean's application)", "featurize"),
    ("features gate dt=", "featurize gate", "featurize"),
)


def split_parts(name: str, floor_name: str, seconds: float, lines: list) -> list[tuple[str, float, str]]:
    """A job's wall time as ``[(part, seconds, floor stage)]``: the job itself, then each part that begins at the
    first line of :data:`PART_MARKS` it prints (its gate, and in clean's application the features and their gate);
    the last part includes stopping the session. A gate run on its own (``--separate-gates``) gives
    ``[(name start-up, seconds to its first line), (name, the rest)]``."""
    if name.endswith("gate"):  # a gate of its own (--separate-gates): its Spark start-up, then the gate
        at = next((t for t, line in lines if GATE_MARK in line), None)
        if at is None:
            return [(name, seconds, floor_name)]
        return [(f"{name} start-up", at, floor_name), (name, seconds - at, floor_name)]
    starts = [(name, 0.0, floor_name)]
    for mark, part, part_floor in PART_MARKS:
        at = next((t for t, line in lines if mark in line), None)
        if at is not None:
            starts.append((part, at, part_floor))
    ends = [at for _, at, _ in starts[1:]] + [seconds]
    return [(part, end - at, part_floor) for (part, at, part_floor), end in zip(starts, ends)]


def run_floor(root: Path, dt: str, env: dict[str, str]) -> dict[str, float]:
    """The bare job of benchmarks/etl_floor.py on the day's raw files: its stages' seconds (start-up in clean)."""
    lines: list = []
    out = root / "_floor" / f"dt={dt}"
    raw = root / "raw" / "events" / f"dt={dt}"
    seconds, _ = run_stage(
        [sys.executable, "benchmarks/etl_floor.py", "--raw", str(raw), "--out", str(out)], env, lines
    )
    shutil.rmtree(out, ignore_errors=True)
    times = json.loads(next(line for _, line in reversed(lines) if line.startswith("{")))
    return {"clean": seconds - times["featurize"], "featurize": times["featurize"], "total": seconds}


def etl_stages(dt: str, py: str, separate_gates: bool) -> list[tuple[str, str, list[str] | None]]:
    """``(stage, floor stage, command or None for a publish)`` in behavior_etl's order for day ``dt``."""
    if separate_gates:  # main's DAG before 2026-11-30: one Spark application per job and per gate
        return [
            ("clean", "clean", [py, "jobs/clean.py", "--dt", dt]),
            ("clean gate", "clean", [py, "jobs/validate.py", "--dataset", "clean_events", "--dt", dt]),
            ("publish clean", "clean", None),
            ("featurize", "featurize", [py, "jobs/featurize.py", "--dt", dt]),
            ("featurize gate", "featurize", [py, "jobs/validate.py", "--dataset", "features", "--dt", dt]),
            ("publish features", "featurize", None),
        ]
    return [
        ("clean", "clean", [py, "jobs/clean.py", "--dt", dt, "--validate"]),
        ("publish clean", "clean", None),
        ("featurize", "featurize", [py, "jobs/featurize.py", "--dt", dt, "--validate"]),
        ("publish features", "featurize", None),
    ]


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        nargs="+",
        required=True,
        help="synthetic events in all (split evenly over the days); several sizes run one after another in one run "
        "(e.g. --events 2000000 10000000), each on its own lake, and a summary table follows",
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
    parser.add_argument(
        "--bad-fraction",
        type=float,
        default=0.0,
        help="share of bad lines mixed in (default 0: none; each bad line has one defect the clean job quarantines)",
    )
    parser.add_argument(
        "--keep",
        help="lake directory to write to and keep (default: a temporary one, deleted); with several sizes, one lake "
        "per size in DIR/events=N",
    )
    parser.add_argument("--driver-memory", default="4g", help="ATTNREC_SPARK_DRIVER_MEMORY for the jobs (default 4g)")
    parser.add_argument(
        "--driver-java-options",
        help="ATTNREC_SPARK_DRIVER_JAVA_OPTIONS for the jobs and the floor (default: attnrec's; 'none' for the JVM's); "
        "a raw day of ATTNREC_SPARK_LARGE_DAY_BYTES or more gets ATTNREC_SPARK_LARGE_DAY_JAVA_OPTIONS in clean and the "
        "floor",
    )
    parser.add_argument(
        "--separate-gates",
        action="store_true",
        help="run each gate as its own Spark application (jobs/validate.py), as behavior_etl did before --validate",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-PySpark floor run")
    parser.add_argument(
        "--dags-test",
        action="store_true",
        help="then run `airflow dags test behavior_etl` on the first day too: its tasks' times and Airflow's overhead",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also measure the fixed costs: JVM + session start-up, Python worker start, GX context and suites",
    )
    args = parser.parse_args(argv)
    for events in args.events:
        if events < args.days or args.days < 1:
            raise ValueError(f"--events={events} --days={args.days}: need at least one event per day and one day")
    return args


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them (a shared machine distorts every figure)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_size(args, events: int) -> dict:
    """Generate ``events`` events, run the floor and behavior_etl's stages on them; return what was measured."""
    from attnrec import lake
    from datatools.generate import generate

    per_day = events // args.days
    users = args.users or max(100, per_day // 100)
    if args.keep:
        root = Path(args.keep).resolve() / (f"events={events}" if len(args.events) > 1 else "")
    else:
        root = Path(tempfile.mkdtemp(prefix="attnrec-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNREC_")}
    env.update(ATTNREC_DATA_ROOT=str(root), ATTNREC_SPARK_DRIVER_MEMORY=args.driver_memory)
    if args.driver_java_options is not None:
        env["ATTNREC_SPARK_DRIVER_JAVA_OPTIONS"] = args.driver_java_options
    os.environ["ATTNREC_DATA_ROOT"] = str(root)
    py = sys.executable
    rows: list[tuple[str, float, int, int]] = []  # stage, seconds, events, peak rss
    floor_stage: dict[str, str] = {}  # ETL stage -> the floor stage it is compared with
    floors: list[dict[str, float]] = []
    load_before = load_average()
    print(f"{events:,} events: load average {load_before} at the start", flush=True)

    try:
        seconds, rss = measure_in_process(
            lambda: generate(str(root), start_dt=args.start, days=args.days, users=users, items=args.items,
                             events_per_day=per_day, seed=42, files_per_day=args.files_per_day,
                             bad_fraction=args.bad_fraction)
        )  # fmt: skip
        rows.append(("generate", seconds, per_day * args.days, rss))
        start = dt_.date.fromisoformat(args.start)
        for day in range(args.days):
            dt = (start + dt_.timedelta(days=day)).isoformat()
            suffix = f" {dt}" if args.days > 1 else ""
            if not args.no_floor:
                floors.append(run_floor(root, dt, env))
                print(f"  floor{suffix}: {floors[-1]['total']:.1f} s", flush=True)
            for name, floor_name, cmd in etl_stages(dt, py, args.separate_gates):
                if cmd is None:
                    datasets = lake.CLEAN_OUTPUTS if name == "publish clean" else lake.FEATURE_OUTPUTS
                    optional = () if name == "publish clean" else (lake.QUARANTINE_ITEMS,)
                    seconds, rss = measure_in_process(lambda: lake.publish_all(str(root), datasets, dt, optional))
                    parts = [(name, seconds, floor_name)]
                else:
                    lines: list = []
                    seconds, rss = run_stage(cmd, env, lines)
                    parts = split_parts(name, floor_name, seconds, lines)
                    for at, line in lines:  # the job's steps and each gate, at their offset from the process start
                        if " dt=" in line:
                            print(f"      at {at:6.1f} s: {line.strip()[:160]}", flush=True)
                for part, part_seconds, part_floor in parts:
                    rows.append((part + suffix, part_seconds, per_day, rss))
                    floor_stage[part + suffix] = part_floor
                    print(f"  {rows[-1][0]}: {part_seconds:.1f} s", flush=True)
        profile = measure_fixed_costs(env) if args.profile else None
        dags_test = measure_dags_test(root, args.start, env) if args.dags_test else None
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "events": per_day * args.days,
        "users": users,
        "rows": rows,
        "floor_stage": floor_stage,
        "floors": floors,
        "profile": profile,
        "dags_test": dags_test,
        "env": env,
        "load": (load_before, load_average()),
    }


def efficiency_rows(result: dict) -> list[tuple[str, float, float]]:
    """``(stage, floor seconds, ETL seconds)`` for clean, featurize and the total (empty without a floor)."""
    if not result["floors"]:
        return []
    etl = [r for r in result["rows"] if r[0] != "generate"]
    out = []
    for stage in ("clean", "featurize"):
        floor_s = sum(f[stage] for f in result["floors"])
        etl_s = sum(r[1] for r in etl if result["floor_stage"].get(r[0]) == stage)
        out.append((stage, floor_s, etl_s))
    out.append(("total", sum(f["total"] for f in result["floors"]), sum(r[1] for r in etl)))
    return out


def class_archive_note() -> str:
    """Whether the jobs' and the floor's driver JVMs map a class archive (ATTNREC_SPARK_CLASS_ARCHIVE): both do or
    neither, but it moves every start-up by seconds, so the figures say which."""
    from attnrec.settings import get_settings

    archive = get_settings().spark_class_archive
    if archive and os.path.isfile(archive):
        return f"class archive {archive} (mapped by every driver JVM, the floor's too)"
    return "no class archive (attnrec spark-archive writes one)"


def print_result(args, result: dict) -> None:
    rows, env, total_events = result["rows"], result["env"], result["events"]
    etl = [r for r in rows if r[0] != "generate"]
    etl_seconds = sum(r[1] for r in etl)
    print(
        f"\nbehavior_etl benchmark: {total_events:,} events, {args.days} day(s), {result['users']:,} users, "
        f"{args.items:,} items, {args.files_per_day} gzip file(s) per day, {args.bad_fraction:.0%} bad lines, gates "
        f"{'as separate Spark applications' if args.separate_gates else 'inside the jobs (--validate)'}, "
        f"driver JVM options {env.get('ATTNREC_SPARK_DRIVER_JAVA_OPTIONS', 'attnrec default')!r}, "
        f"{class_archive_note()}; load average {result['load'][0]} at the start, {result['load'][1]} at the end"
    )
    print("| stage | seconds | events/s | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for name, seconds, events, rss in rows:
        print(f"| {name} | {seconds:.1f} | {events / seconds:,.0f} | {rss / 2**20:,.0f} |")
    print(
        f"| **ETL total** (clean to publish features) | {etl_seconds:.1f} | {total_events / etl_seconds:,.0f} | "
        f"{max(r[3] for r in etl) / 2**20:,.0f} |"
    )
    effs = efficiency_rows(result)
    if effs:
        print("\nfloor (benchmarks/etl_floor.py: the bare PySpark job on the same files) against behavior_etl:")
        print("| stage | floor s | ETL s | efficiency (floor / ETL) |")
        print("|---|---|---|---|")
        for stage, floor_s, etl_s in effs[:-1]:
            print(f"| {stage} (with its gate and publish) | {floor_s:.1f} | {etl_s:.1f} | {floor_s / etl_s:.2f} |")
        _, floor_s, etl_s = effs[-1]
        print(f"| **total** | {floor_s:.1f} | {etl_s:.1f} | {floor_s / etl_s:.2f} |")
    if result["profile"]:
        print("\nfixed costs (each measured on its own, on this machine now):")
        print("| what | seconds |")
        print("|---|---|")
        for what, seconds in result["profile"].items():
            print(f"| {what} | {seconds:.1f} |")
    if result["dags_test"]:
        seconds, tasks = result["dags_test"]
        print(f"\nairflow dags test behavior_etl {args.start} (same lake, fresh Airflow home; db migrate not counted):")
        print("| task | seconds |")
        print("|---|---|")
        for task, task_seconds in tasks:
            print(f"| {task} | {task_seconds:.1f} |")
        in_tasks = sum(t for _, t in tasks)
        print(f"| Airflow outside the tasks (dags test start, DAG parse, between tasks) | {seconds - in_tasks:.1f} |")
        print(f"| **dags test total** | {seconds:.1f} |")


def print_summary(results: list[dict]) -> None:
    """One row per size: floor, ETL and efficiency per stage, and the load around each size's run."""
    print("\nall sizes (floor s / ETL s / efficiency = floor / ETL):")
    print("| events | clean | featurize | **total** | ETL events/s | load average at start / end |")
    print("|---|---|---|---|---|---|")
    for result in results:
        effs = efficiency_rows(result)
        cells = [f"{f:.1f} / {e:.1f} / **{f / e:.2f}**" for _, f, e in effs] if effs else ["no floor"] * 3
        etl_s = sum(r[1] for r in result["rows"] if r[0] != "generate")
        print(
            f"| {result['events']:,} | {' | '.join(cells)} | {result['events'] / etl_s:,.0f} | "
            f"{result['load'][0]} / {result['load'][1]} |"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for events in args.events:
        results.append(run_size(args, events))
        print_result(args, results[-1])
    if len(results) > 1:
        print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
