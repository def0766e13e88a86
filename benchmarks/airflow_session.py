"""What one ``airflow dags test`` costs before any of its data work, as its own process and in an Airflow session.

In a fresh Airflow home (``airflow db migrate`` not counted) with an empty lake and an empty MLflow registry, it runs
``airflow dags test nightly_candidates D`` ``--runs`` times as separate processes (what the loop and the integration
tests did per DAG run) and, alternating with them, ``--runs`` times in one
:class:`datatools.airflow_session.AirflowSession` (what they do now; its first run also starts the in-process
execution API). Each run parses the DAG folder, creates the run, starts its first task (``resolve_version``:
imports MLflow, finds no champion) and fails with "run the train_recommender DAG first": all of a DAG run's fixed
costs, none of its Spark or training work. It prints every run's seconds, the mean of each way and the difference,
which is what the session saves per DAG run (the loop has nine DAG runs, tests/test_integration.py nine).

Run: ``python benchmarks/airflow_session.py [--runs 3]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datatools.airflow_session import AirflowSession

REPO = Path(__file__).resolve().parent.parent
DT = "2026-03-02"
EXPECTED = "run the train_recommender DAG first"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="DAG runs each way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="airflow-session-bench-") as tmp:
        base = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
            AIRFLOW_HOME=str(base / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            ATTNREC_DATA_ROOT=str(base / "data"),
            MLFLOW_TRACKING_URI=f"sqlite:///{base / 'mlflow.db'}",
        )
        (base / "airflow").mkdir()
        (base / "airflow" / "dags").symlink_to(REPO / "dags")
        (base / "logs").mkdir()
        cmd = [sys.executable, "-m", "airflow", "db", "migrate"]
        subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=base / "airflow")
        argv = ["dags", "test", "nightly_candidates", DT]

        started = time.perf_counter()
        session = AirflowSession(env, base / "airflow", base / "logs" / "session.log")
        start = time.perf_counter() - started
        print(f"session start (imports Airflow once): {start:.1f} s", flush=True)
        separate, in_session = [], []
        try:
            for k in range(args.runs):  # the two ways alternate, so both see the same machine load
                started = time.perf_counter()
                cmd = [sys.executable, "-m", "airflow", *argv]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=base / "airflow")
                separate.append(time.perf_counter() - started)
                if proc.returncode == 0 or EXPECTED not in proc.stdout + proc.stderr:
                    out = (proc.stdout + proc.stderr)[-3000:]
                    raise RuntimeError(f"run {k}: expected a failure naming {EXPECTED!r}:\n{out}")
                log = base / "logs" / f"run-{k}.log"
                started = time.perf_counter()
                code = session.run(argv, log, {})
                in_session.append(time.perf_counter() - started)
                if code == 0 or EXPECTED not in log.read_text(encoding="utf-8"):
                    raise RuntimeError(f"session run {k}: expected a failure naming {EXPECTED!r}; log {log}")
                print(
                    f"run {k + 1}: own process {separate[-1]:.1f} s, in the session {in_session[-1]:.1f} s", flush=True
                )
        finally:
            session.close()

    mean_separate, mean_session = sum(separate) / len(separate), sum(in_session) / len(in_session)
    print(f"\nmean per DAG run: own process {mean_separate:.1f} s, in the session {mean_session:.1f} s "
          f"(plus {start:.1f} s once); saved per run {mean_separate - mean_session:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
