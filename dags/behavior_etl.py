"""behavior_etl: one landing day of behaviour logs -> clean events -> features, each behind a GX gate.

    check_raw -> clean (Spark, then its GX gate) -> publish_clean
              -> featurize (Spark, then its GX gate) -> item_text (title vectors, then its GX gate)
              -> publish_features (Asset)
    expire_old_partitions (retention of raw/events and quarantine/, beside the chain; attnrec/retention.py)

Each Spark task stages its output and then validates it in the same Spark application (``--validate``: the
gates of ``jobs/validate.py``, on the staged files). When the clean gate passes, the clean task's application goes on
to build the day's features from the staged clean partition and runs the features gate on them (a day then starts
one Spark application); the featurize task adopts those staged features when its inputs are exactly the ones they
were built from (same look-back partitions, vocabulary, catalogue files and settings), and builds them itself
otherwise (``jobs/featurize.py``: ``prebuild``, ``adopt_prebuilt``). Nothing is published before its task: clean
after publish_clean, features after publish_features.

Every task works on partition dt = the run's logical date and replaces it whole, so retries, re-runs and
backfills are safe; each publish task moves its datasets as one unit that a retry finishes (``lake.publish_all``).
A failed gate fails its task; nothing downstream runs and nothing is published.

``item_text`` embeds the staged item table's titles with the pretrained sentence encoder (``jobs/item_text.py``,
in the task's own process, no Spark), reusing the vectors of titles embedded before; with ATTNREC_ITEM_TEXT=false
it does nothing and the features are published without features/item_text.

Clean and featurize read the days published before D (dedupe look-back, feature look-back, carried-over item
vocabulary), so runs go one at a time in date order (``max_active_runs=1``), and the features gate fails a day
whose look-back misses a day that has raw events but was not published when featurize ran.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Metadata, dag, task

from dags.wiring import FEATURES_ASSET, SPARK_MACROS, START_DATE, default_args, spark_job


@dag(
    dag_id="behavior_etl",
    # the run for day D starts after D has ended; its logical date (ds) is D
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    # one scheduled or manual run at a time: queued runs start in date order, so D+1 reads what D published.
    # A backfill has its own limit (`airflow backfill create --max-active-runs`, default 10) and never takes
    # this slot: backfill with --max-active-runs 1 (docs/operations.md). No depends_on_past: Airflow then
    # refuses backfills that skip finished days, and a day whose look-back misses a day fails its features gate.
    max_active_runs=1,
    default_args=default_args(),
    user_defined_macros=SPARK_MACROS,  # the clean job's JVM options follow the day's raw size
    tags=["attnrec", "etl"],
    doc_md=__doc__,
)
def behavior_etl():
    @task
    def check_raw(ds: str | None = None) -> str:
        from attnrec import lake
        from attnrec.settings import get_settings

        return lake.require_raw_events(get_settings().data_root, ds)

    @task
    def publish_clean(ds: str | None = None) -> list[str]:
        from attnrec import lake
        from attnrec.settings import get_settings

        return lake.publish_all(get_settings().data_root, lake.CLEAN_OUTPUTS, ds)

    @task
    def item_text(ds: str | None = None) -> dict:
        from attnrec.settings import get_settings
        from jobs.item_text import gate, run

        settings = get_settings()
        if not settings.item_text:
            return {"skipped": "ATTNREC_ITEM_TEXT=false"}
        summary = run(settings.data_root, ds, settings.item_text_batch_size)
        gate(settings.data_root, ds, settings)
        return summary

    @task(outlets=[FEATURES_ASSET])
    def publish_features(ds: str | None = None):
        from attnrec import lake
        from attnrec.settings import get_settings

        # the rejected catalogue lines are staged only when there is a catalogue, item_text unless switched off
        optional = (lake.QUARANTINE_ITEMS, lake.FEATURE_ITEM_TEXT)
        paths = lake.publish_all(get_settings().data_root, lake.FEATURE_OUTPUTS, ds, optional=optional)
        yield Metadata(FEATURES_ASSET, extra={"dt": ds, "paths": paths})

    @task
    def expire_old_partitions(ds: str | None = None) -> dict:
        from attnrec.retention import expire
        from attnrec.settings import get_settings

        return expire(get_settings(), ds)

    expire_old_partitions()  # retention of raw/events and quarantine/ (ATTNREC_*_RETENTION_DAYS); 0 = keep
    clean = spark_job("clean", "clean", extra_args=["--validate"], sized_by_raw_day=True)
    featurize = spark_job("featurize", "featurize", extra_args=["--validate"])

    check_raw() >> clean >> publish_clean() >> featurize >> item_text() >> publish_features()


behavior_etl()
