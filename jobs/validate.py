"""Spark job: the validation gate on a *staged* partition, run before it is published.

    spark-submit jobs/validate.py --dataset clean_events --dt 2026-01-31 [--data-root s3a://lake]
    python jobs/validate.py --dataset features --dt 2026-01-31

``clean_events`` checks a seeded sample of up to ``RAW_SAMPLE_LINES`` raw lines of the day (suite
``raw_events_sample``: lines are JSON objects whose fields have the contract's JSON types, mostly; inside the clean
job's application the sample comes from the job's own parse of every line, here the raw text is parsed), the staged
clean events (suite ``clean_events``), the staged quarantine
(suite ``quarantine_events``) and the clean job's ``_reconciliation.json`` (counts add up, quarantine
share under ``ATTNREC_MAX_QUARANTINE_SHARE``). ``features`` checks the staged user sequences
(``user_sequences``) and item table (``item_table``), and featurize's ``_manifest.json`` against the raw days of
the look-back window (every day with raw events was read; ``check_lookback``). Validation runs on Spark; nothing
is collected.

behavior_etl runs these gates inside the job that staged the data (``jobs/clean.py --validate``,
``jobs/featurize.py --validate`` call :func:`gate` in their own session); this job runs them on their own.

Every gate of the dataset runs, so one report lists every problem. Prints one line per gate and the
Data Docs page; exits 0 when all pass, 1 with the failures on stderr when a gate fails, 2 when a
staged partition is missing or incomplete. The Spark master comes from spark-submit's ``--master``
when launched by spark-submit, else from ``ATTNREC_SPARK_MASTER``.
"""

from __future__ import annotations

import sys

from attnrec.args import DataRoot, Dataset, Dt, spark_submit_main

RAW_SAMPLE_LINES = 100_000  # the raw sample gate looks at about this many lines of the day


def preload_gx():
    """Import Great Expectations in a background thread and return the thread.

    A job run with ``--validate`` calls this before its Spark work: GX's import (seconds of pure Python, paid once
    per application) then overlaps the job's Spark stages, during which the driver's Python thread only waits. It
    holds the GIL while it runs, so it slows the driver's own Python (planning's Py4J calls): the clean job calls it
    right before its parse's Spark job (``jobs.clean.run``'s ``while_parsing``). :func:`gate`'s own import finds the
    module loaded, or waits on its import lock until it is.
    """
    import threading

    def load() -> None:
        from expectations.runner import _quiet_gx

        _quiet_gx()
        import great_expectations  # noqa: F401

    thread = threading.Thread(target=load, name="preload-great-expectations", daemon=True)
    thread.start()
    return thread


def staged_inputs(dataset: str, dt: str, root: str) -> list[tuple[str, str]]:
    """``(suite, staged path)`` pairs the gate of ``dataset`` validates."""
    from attnrec import lake

    if dataset == "clean_events":
        return [
            ("raw_events_sample", lake.join(root, lake.RAW_EVENTS, f"dt={dt}")),
            ("clean_events", lake.staging(root, lake.CLEAN_EVENTS, dt)),
            ("quarantine_events", lake.staging(root, lake.QUARANTINE_EVENTS, dt)),
        ]
    inputs = [
        ("user_sequences", lake.staging(root, lake.FEATURE_SEQUENCES, dt)),
        ("item_table", lake.staging(root, lake.FEATURE_ITEMS, dt)),
    ]
    rejected_items = lake.staging(root, lake.QUARANTINE_ITEMS, dt)
    if lake.exists(rejected_items):  # only when there is a catalogue; same shape as the events quarantine
        inputs.append(("quarantine_events", rejected_items))
    return inputs


def _require_complete(path: str, suite: str, dt: str) -> None:
    from attnrec import lake

    if not lake.exists(path):
        raise FileNotFoundError(
            f"no staged partition for {suite} dt={dt}: looked in {path}; run the job that writes it for {dt} first"
        )
    if not lake.is_complete(path):
        raise FileNotFoundError(
            f"staged partition for {suite} dt={dt} at {path} is incomplete (no {lake.SUCCESS_MARKER}); "
            "re-run the job that writes it"
        )


def check_inputs(dataset: str, dt: str, root: str) -> tuple[list[tuple[str, str]], str | None]:
    """Fail fast, before Spark starts, when a staged input is missing: ``(inputs, reconciliation path)``."""
    from attnrec import lake

    inputs = staged_inputs(dataset, dt, root)
    for suite, path in inputs:
        if suite != "raw_events_sample":
            _require_complete(path, suite, dt)
    recon_path = None
    if dataset == "clean_events":
        recon_path = lake.join(dict(inputs)["clean_events"], lake.RECONCILIATION_FILE)
        if not lake.exists(recon_path):
            raise FileNotFoundError(
                f"no reconciliation for clean_events dt={dt}: looked for {recon_path}; the clean job writes it"
            )
    else:
        manifest_path = lake.join(dict(inputs)["user_sequences"], lake.FEATURES_MANIFEST)
        if not lake.exists(manifest_path):
            raise FileNotFoundError(
                f"no look-back manifest for features dt={dt}: looked for {manifest_path}; re-run featurize for {dt}"
            )
    if "raw_events_sample" in dict(inputs):
        lake.require_raw_events(root, dt)
    return inputs, recon_path


def raw_sample(spark, raw_dir: str, raw_lines: int | None, seed: int, parsed_lines: str | None = None):
    """About ``RAW_SAMPLE_LINES`` raw lines (seeded), parsed the way the clean job parses them (exact JSON types).

    ``parsed_lines``: the clean job's work copy of the day's lines as it parsed them (``jobs.clean.parsed_lines_dir``,
    with ``RAW_SAMPLE_COLUMNS``), when the gate runs in clean's own application: the sample is then taken from it
    instead of reading and parsing the raw text a second time.
    """
    from jobs.clean import RAW_SAMPLE_COLUMNS, extract, parse

    if parsed_lines is not None:
        lines = spark.read.parquet(parsed_lines).select("raw_line", *RAW_SAMPLE_COLUMNS)
    else:
        lines = extract(spark, raw_dir)
    if raw_lines is None or raw_lines > RAW_SAMPLE_LINES:
        fraction = RAW_SAMPLE_LINES / raw_lines if raw_lines else 1.0
        lines = lines.sample(fraction=min(1.0, fraction), seed=seed)
    return lines if parsed_lines is not None else parse(lines)


def run_gates(
    spark, inputs: list[tuple[str, str]], recon_path: str | None, dt: str, settings, parsed_lines: str | None = None
) -> list[str]:
    """Validate every staged input; print a line per gate; return the failure messages. ``parsed_lines``: see
    :func:`raw_sample`."""
    from attnrec import lake
    from expectations.checks import check_lookback, check_reconciliation
    from expectations.runner import GateFailed, validate_spark_suites

    failures: list[str] = []
    recon = None
    if recon_path is not None:
        recon = lake.read_json(recon_path)
        try:
            check_reconciliation(recon, settings)
            print(
                f"reconciliation dt={dt}: PASSED raw_lines={recon['raw_lines']} clean={recon['clean']} "
                f"quarantined={recon['quarantined']} duplicates={recon['duplicates']}"
            )
        except GateFailed as exc:
            print(f"reconciliation dt={dt}: FAILED", flush=True)
            failures.append(str(exc))
    frames = []
    for suite, path in inputs:
        if suite == "raw_events_sample":
            frames.append((suite, raw_sample(spark, path, (recon or {}).get("raw_lines"), settings.seed, parsed_lines)))
        else:
            frames.append((suite, spark.read.parquet(path)))
    for summary in validate_spark_suites(frames, dt, settings):  # side by side, one Data Docs build for the gate
        suite = summary["suite"]
        if summary["success"]:
            print(
                f"{suite} dt={dt}: PASSED {summary['evaluated']}/{summary['evaluated']} expectations; "
                f"Data Docs: {summary['data_docs'] or 'not built (lake root is not a local path)'}",
                flush=True,
            )
        else:
            print(f"{suite} dt={dt}: FAILED (details on stderr)", flush=True)
            failures.append(summary["message"])
    sequences = dict(inputs).get("user_sequences")
    if sequences is not None:  # the features gate: did featurize read every day it should have?
        manifest = lake.read_json(lake.join(sequences, lake.FEATURES_MANIFEST))
        try:
            check_lookback(manifest, lake.raw_event_days(settings.data_root, manifest["first_dt"], dt))
            print(f"look-back dt={dt}: PASSED {len(manifest['clean_days'])} clean days read", flush=True)
        except GateFailed as exc:
            print(f"look-back dt={dt}: FAILED", flush=True)
            failures.append(str(exc))
    return failures


def gate(spark, dataset: str, dt: str, settings, inputs=None, recon_path=None, parsed_lines=None) -> int:
    """Every gate of ``dataset`` on the staged partitions of ``dt`` in ``spark``: 0 when all pass, 1 (failures on
    stderr) when one fails. The jobs that write a dataset call this in their own session (``--validate``), so a day
    needs no Spark application per gate; ``inputs``/``recon_path`` come from :func:`check_inputs` when it ran;
    ``parsed_lines``: the clean job's parsed lines, for the raw sample (:func:`raw_sample`)."""
    if inputs is None:
        inputs, recon_path = check_inputs(dataset, dt, settings.data_root)
    print(f"{dataset} gate dt={dt}: Spark master {spark.sparkContext.master}", flush=True)
    failures = run_gates(spark, inputs, recon_path, dt, settings, parsed_lines)
    if failures:
        print("\n\n".join(failures), file=sys.stderr)
        return 1
    print(f"{dataset} gate dt={dt}: all checks passed")
    return 0


def main(dataset: Dataset, dt: Dt, data_root: DataRoot = None) -> int:
    """Run every gate of --dataset on the staged partitions of --dt: 0 when all pass, 1 when one fails."""
    from attnrec.settings import get_settings
    from attnrec.spark import get_spark

    settings = get_settings(data_root=data_root)
    inputs, recon_path = check_inputs(dataset, dt, settings.data_root)  # before Spark starts
    spark = get_spark(f"attnrec-validate-{dataset}-{dt}")
    try:
        return gate(spark, dataset, dt, settings, inputs, recon_path)
    finally:
        spark.stop()


if __name__ == "__main__":
    spark_submit_main(main, "validate")
