"""behavior_etl: one landing day of behaviour logs -> clean events -> features, each behind a GX gate.

    check_raw -> clean (Spark) -> validate_clean (GX on Spark) -> publish_clean
              -> featurize (Spark) -> validate_features (GX on Spark) -> publish_features (Asset)

Every task works on partition dt = the run's logical date and replaces it whole, so retries, re-runs and
backfills are safe. A failed gate fails its task; nothing downstream runs and nothing is published.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Metadata, dag, task

from dags.wiring import FEATURES_ASSET, START_DATE, default_args, spark_job


@dag(
    dag_id="behavior_etl",
    # the run for day D starts after D has ended; its logical date (ds) is D
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    # scheduled and manual runs; a backfill has its own limit (`airflow backfill create --max-active-runs`,
    # default 10) and never takes these slots. Backfill with --max-active-runs 1: clean and featurize read
    # the days published before D, so days run oldest first, one at a time, give the nightly chain's result.
    max_active_runs=2,
    default_args=default_args(),
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

        root = get_settings().data_root
        return [lake.publish(root, lake.QUARANTINE_EVENTS, ds), lake.publish(root, lake.CLEAN_EVENTS, ds)]

    @task(outlets=[FEATURES_ASSET])
    def publish_features(ds: str | None = None):
        from attnrec import lake
        from attnrec.settings import get_settings

        root = get_settings().data_root
        paths = [lake.publish(root, lake.FEATURE_ITEMS, ds), lake.publish(root, lake.FEATURE_SEQUENCES, ds)]
        if lake.is_complete(lake.staging(root, lake.QUARANTINE_ITEMS, ds)):  # rejected catalogue lines
            paths.append(lake.publish(root, lake.QUARANTINE_ITEMS, ds))
        yield Metadata(FEATURES_ASSET, extra={"dt": ds, "paths": paths})

    clean = spark_job("clean", "clean")
    validate_clean = spark_job("validate_clean", "validate", extra_args=["--dataset", "clean_events"])
    featurize = spark_job("featurize", "featurize")
    validate_features = spark_job("validate_features", "validate", extra_args=["--dataset", "features"])

    check_raw() >> clean >> validate_clean >> publish_clean() >> featurize >> validate_features >> publish_features()


behavior_etl()
