"""The class data sharing archive of the Spark driver JVM (``attnrec spark-archive``, run by ``make test``).

Every attnrec job starts a JVM that loads and verifies some ten thousand classes from Spark's jars before its first
query: seconds of a small day's run, paid again by every task of every day. The JVM can instead map the classes
from an archive written once (class data sharing; JDK 17's ``-XX:ArchiveClassesAtExit`` and
``-XX:SharedArchiveFile``). :func:`build` writes that archive by running the clean job, its gate and the day's
features on a small synthetic day with ``-XX:ArchiveClassesAtExit``: the classes a day of behavior_etl loads.
:func:`attnrec.spark.with_class_archive` then gives every driver JVM ``-XX:SharedArchiveFile`` while the file
exists (``ATTNREC_SPARK_CLASS_ARCHIVE``). Measured in docs/benchmarks.md#etl.

The archive belongs to one JDK build and one Spark classpath: a JVM that differs from it prints one warning and
starts without it, so rebuild it after upgrading Java or pyspark (``make test`` does when the lock changes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

#: The synthetic day the archive is recorded on: enough lines for every stage of the day to run (2% bad lines, so
#: the quarantine paths load their classes too), small enough to take seconds.
DAY = "2026-01-01"
EVENTS = 2_000


def spark_submit() -> str:
    """The ``spark-submit`` of the installed pyspark (the same launcher, so the same classpath, as the jobs')."""
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    if not path.is_file():
        raise FileNotFoundError(f"no spark-submit in the pyspark package at {path}; reinstall pyspark (make venv)")
    return str(path)


def build(output: str, log=print) -> dict:
    """Write the archive to ``output`` (replaced whole, only when the recording run succeeded); returns ``{"path",
    "bytes", "seconds"}``. The recording run's output goes to ``<output>.log``."""
    from attnrec.settings import get_settings
    from datatools.generate import generate

    if shutil.which("java") is None:
        raise FileNotFoundError("Java 17 is required by Spark and 'java' is not on PATH; install it, then run again")
    started = time.perf_counter()
    target = Path(output).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    log_path = target.with_name(target.name + ".log")
    with tempfile.TemporaryDirectory(prefix="attnrec-spark-archive-") as lake_dir:
        generate(lake_dir, DAY, days=1, users=200, items=100, events_per_day=EVENTS, bad_fraction=0.02)
        java_options = f"{settings.spark_driver_java_options} -XX:ArchiveClassesAtExit={partial}".strip()
        submit = spark_submit()
        command = [
            submit,
            "--master", "local[2]",
            "--conf", f"spark.driver.extraJavaOptions={java_options}",
            "--conf", f"spark.pyspark.python={settings.spark_python}",
            "--conf", f"spark.pyspark.driver.python={settings.spark_python}",
            str(Path(__file__).resolve().parent.parent / "jobs" / "clean.py"),
            "--dt", DAY, "--validate",
        ]  # fmt: skip
        env = {**os.environ, "ATTNREC_DATA_ROOT": lake_dir, "ATTNREC_SPARK_CLASS_ARCHIVE": "none"}
        env.setdefault("SPARK_HOME", str(Path(submit).parent.parent))
        env.pop("PYSPARK_GATEWAY_PORT", None)
        log(f"spark-archive: recording the classes of clean, its gate and the features on {EVENTS} synthetic events")
        with open(log_path, "w", encoding="utf-8") as out:
            # spark-submit execs the driver JVM, which writes the archive as it exits: waiting here waits for both
            done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0 or not partial.is_file():
            partial.unlink(missing_ok=True)
            raise RuntimeError(
                f"spark-archive: the recording run failed (exit {done.returncode}); its output is in {log_path}. "
                "Jobs run without an archive meanwhile (they only start slower)"
            )
    os.replace(partial, target)
    result = {"path": str(target), "bytes": target.stat().st_size, "seconds": round(time.perf_counter() - started, 1)}
    log(
        f"spark-archive: wrote {target} ({result['bytes'] / 2**20:.0f} MiB) in {result['seconds']} s; jobs map it "
        f"while ATTNREC_SPARK_CLASS_ARCHIVE names it (default: this environment's, {settings.spark_class_archive})"
    )
    return result
