"""behavior_etl failure modes end to end: a flood of bad lines, and a clean job killed half-way.

The flood runs the real DAG with ``airflow dags test`` in a fresh Airflow home (the pattern of
tests/test_integration.py); the kill runs ``python jobs/clean.py`` as a subprocess and SIGKILLs its
process group (Python driver and JVM) once it has started writing to staging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnrec import lake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parent.parent


def job_env(base: Path) -> dict[str, str]:
    """The environment of a fresh, isolated run: only our lake root, Airflow home and small Spark memory."""
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        AIRFLOW_HOME=str(base / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        ATTNREC_DATA_ROOT=str(base / "data"),
        MLFLOW_TRACKING_URI=f"sqlite:///{base / 'mlflow.db'}",
        ATTNREC_SPARK_DRIVER_MEMORY="1g",
        ATTNREC_SPARK_MASTER="local[2]",
    )
    return env


def test_flood_of_bad_lines_fails_the_dag_and_publishes_nothing(tmp_path):
    from datatools.generate import generate

    dt = "2026-04-01"
    env = job_env(tmp_path)
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "dags").symlink_to(REPO / "dags")
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    root = env["ATTNREC_DATA_ROOT"]
    generate(root, start_dt=dt, days=1, users=50, items=200, events_per_day=2000, seed=3, bad_fraction=0.3)

    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "behavior_etl", dt],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
        cwd=env["AIRFLOW_HOME"],
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert f"reconciliation FAILED for dt={dt}" in output, output[-4000:]
    assert (
        "of raw_lines=2000 is" in output and "above the threshold 5.00% (ATTNREC_MAX_QUARANTINE_SHARE=0.05)" in output
    )
    for dataset in (lake.CLEAN_EVENTS, lake.QUARANTINE_EVENTS, lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS):
        assert not lake.exists(lake.partition(root, dataset, dt)), f"{dataset} was published after a failed gate"
    assert lake.list_partitions(root, lake.CLEAN_EVENTS) == []
    from jobs.clean import work_dir

    assert not lake.exists(work_dir(root, dt))  # clean's parsed lines, kept for its raw sample gate, are gone


def parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(path).num_rows


def test_killed_clean_job_leaves_the_published_partition_and_the_rerun_completes(spark, tmp_path):
    from datatools.generate import generate
    from jobs.clean import CleanParams, run

    dt = "2026-04-02"
    env = job_env(tmp_path)
    root = env["ATTNREC_DATA_ROOT"]
    params = CleanParams(dt=dt)

    generate(root, start_dt=dt, days=1, users=30, items=100, events_per_day=500, seed=5)
    first = run(spark, root, params)
    lake.publish(root, lake.QUARANTINE_EVENTS, dt)
    published = lake.publish(root, lake.CLEAN_EVENTS, dt)
    assert first["clean"] == 500 and parquet_rows(published) == 500

    # the day is re-landed, bigger; the re-run of clean is killed once it writes to staging
    generate(root, start_dt=dt, days=1, users=300, items=500, events_per_day=40_000, seed=6)
    staged = lake.staging(root, lake.CLEAN_EVENTS, dt)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "clean.py"), "--dt", dt],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the driver and its JVM die together
    )
    try:
        deadline = time.monotonic() + 240
        while not lake.exists(staged) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lake.exists(staged) and proc.poll() is None, "clean never started writing to staging"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    assert parquet_rows(published) == 500  # the previous state is intact and readable
    assert lake.read_json(lake.join(published, lake.RECONCILIATION_FILE)) == first
    assert not lake.is_complete(staged)
    with pytest.raises(FileNotFoundError, match="nothing complete to publish"):
        lake.publish(root, lake.CLEAN_EVENTS, dt)
    assert parquet_rows(published) == 500

    second = run(spark, root, params)  # the next run replaces the half-written staging whole
    assert second == {
        "dt": dt,
        "raw_lines": 40_000,
        "clean": 40_000,
        "quarantined": 0,
        "quarantined_by_reason": {},
        "duplicates": 0,
    }
    assert lake.is_complete(staged) and parquet_rows(staged) == 40_000
    assert parquet_rows(lake.publish(root, lake.CLEAN_EVENTS, dt)) == 40_000


def etl_day(spark, root: str, dt: str) -> list[str]:
    """behavior_etl's steps for ``dt`` through the real jobs on the shared Spark session: clean, its gate, publish,
    featurize and the features gate; publish the features when the gate passes. Returns the gate failures."""
    from attnrec.settings import get_settings
    from jobs import clean, featurize, validate

    settings = get_settings(data_root=root)
    clean.run(spark, root, clean.CleanParams(dt=dt))
    assert validate.run_gates(spark, *validate.check_inputs("clean_events", dt, root), dt, settings) == []
    lake.publish_all(root, lake.CLEAN_OUTPUTS, dt)
    featurize.run(spark, root, featurize.FeatureParams(dt=dt, lookback_days=30))
    failures = validate.run_gates(spark, *validate.check_inputs("features", dt, root), dt, settings)
    if not failures:
        lake.publish_all(root, lake.FEATURE_OUTPUTS, dt, optional=(lake.QUARANTINE_ITEMS,))
    return failures


def test_features_of_a_day_built_before_the_day_before_fail_their_gate_naming_it(spark, tmp_path):
    from datatools.generate import generate

    root = str(tmp_path / "data")
    day, next_day = "2026-04-10", "2026-04-11"
    generate(root, start_dt=day, days=2, users=30, items=80, events_per_day=300, seed=9)

    # D+1 before D: its look-back misses D, which has raw events and no published clean partition yet
    failures = etl_day(spark, root, next_day)
    assert len(failures) == 1, failures
    assert failures[0] == (
        f"look-back FAILED for features dt={next_day}: dt={day} has raw events but no published clean/events "
        f"partition was read. Run behavior_etl for {day} first (and each later day with raw events, oldest first), "
        f"then re-run behavior_etl for {next_day}"
    )
    assert lake.list_partitions(root, lake.FEATURE_SEQUENCES) == []  # nothing built without D was published

    # D, then D+1 again: both pass, and D+1's manifest says what it was built from
    assert etl_day(spark, root, day) == []
    assert etl_day(spark, root, next_day) == []
    assert lake.list_partitions(root, lake.FEATURE_SEQUENCES) == [day, next_day]
    manifest = lake.read_json(lake.join(lake.partition(root, lake.FEATURE_SEQUENCES, next_day), lake.FEATURES_MANIFEST))
    assert [d["dt"] for d in manifest["clean_days"]] == [day, next_day]
    for read in manifest["clean_days"]:
        recon = lake.read_json(lake.join(lake.partition(root, lake.CLEAN_EVENTS, read["dt"]), lake.RECONCILIATION_FILE))
        assert {k: read[k] for k in ("raw_lines", "clean", "quarantined", "duplicates")} == {
            k: recon[k] for k in ("raw_lines", "clean", "quarantined", "duplicates")
        }
    assert manifest["items_vocabulary_from"]["dt"] == day


def test_behavior_etl_runs_one_day_at_a_time_in_date_order():
    from dags.behavior_etl import behavior_etl

    dag = behavior_etl()
    # queued runs start oldest first (by run_after); one at a time, D+1 starts after D has published or failed
    assert dag.max_active_runs == 1
    assert not any(task.depends_on_past for task in dag.tasks)  # backfill create keeps --reprocess-behavior none


def test_a_job_run_with_the_venv_s_python_but_not_its_path_runs_its_python_workers_with_that_python(tmp_path):
    """``.venv/bin/python jobs/clean.py`` without an activated venv: clean's pseudonyms run in Python workers, which
    must start this interpreter (with pandas), not the first ``python3`` on PATH."""
    from datatools.generate import generate

    dt = "2026-04-05"
    env = job_env(tmp_path)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != str(Path(sys.executable).parent))
    env.pop("PYSPARK_PYTHON", None)
    env.pop("VIRTUAL_ENV", None)
    root = env["ATTNREC_DATA_ROOT"]
    generate(root, start_dt=dt, days=1, users=10, items=20, events_per_day=50, seed=4)
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "clean.py"), "--dt", dt],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert parquet_rows(lake.staging(root, lake.CLEAN_EVENTS, dt)) == 50


def test_features_built_in_clean_s_application_are_adopted_only_for_the_same_inputs(spark, tmp_path):
    """jobs/clean.py --validate builds and gates the day's features in its own application (featurize.prebuild);
    the featurize task adopts them (featurize.adopt_prebuilt) only when its inputs are still those they were built
    from, and then they are the rows a fresh featurize writes, with the manifest of the published look-back."""
    import pyarrow.parquet as pq

    from attnrec.settings import get_settings
    from datatools.generate import generate
    from jobs import clean, featurize, validate

    root = str(tmp_path / "data")
    dt = "2026-04-12"
    generate(root, start_dt=dt, days=1, users=30, items=80, events_per_day=300, seed=11)
    settings = get_settings(data_root=root)
    params = featurize.FeatureParams(dt=dt, lookback_days=30)
    clean.run(spark, root, clean.CleanParams(dt=dt))
    assert validate.run_gates(spark, *validate.check_inputs("clean_events", dt, root), dt, settings) == []
    assert featurize.prebuild(spark, settings, params) is True
    lake.publish_all(root, lake.CLEAN_OUTPUTS, dt)

    staged = {d: lake.staging(root, d, dt) for d in (lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS)}
    assert featurize.adopt_prebuilt(root, params) is True
    adopted = {
        d: pq.read_table(path).sort_by("item_idx" if d == lake.FEATURE_ITEMS else "user_id")
        for d, path in staged.items()
    }
    manifest = lake.read_json(lake.join(staged[lake.FEATURE_SEQUENCES], lake.FEATURES_MANIFEST))
    assert [d["path"] for d in manifest["clean_days"]] == [lake.partition(root, lake.CLEAN_EVENTS, dt)]
    assert featurize.adopt_prebuilt(root, params) is False  # a record is used once

    featurize.run(spark, root, params)  # a fresh build from the published clean partition: the same rows
    for dataset, path in staged.items():
        fresh = pq.read_table(path).sort_by("item_idx" if dataset == lake.FEATURE_ITEMS else "user_id")
        assert fresh.equals(adopted[dataset]), dataset
    assert lake.read_json(lake.join(staged[lake.FEATURE_SEQUENCES], lake.FEATURES_MANIFEST)) == manifest

    assert featurize.prebuild(spark, settings, params) is True
    (Path(root) / "raw" / "items" / "late.jsonl").write_text('{"item_id": "i-late", "title": "Late"}\n')
    assert featurize.adopt_prebuilt(root, params) is False  # the catalogue changed since: featurize builds again
