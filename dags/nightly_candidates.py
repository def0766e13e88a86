"""nightly_candidates: top-K unseen items per user from the champion model, validated, then published.

    check_champion -> wait_for_features -> generate (models:/attention-recommender@champion)
                   -> validate (GX suite, then checks against the day's features) -> publish candidates/dt=D

The run fails at once when the registry has no champion (run train_recommender first). Then it waits
(reschedule mode, no worker slot held) until behavior_etl has published features/*/dt=D with their completion
markers, for up to ATTNREC_WAIT_TIMEOUT_HOURS (default 6), then fails naming what is missing. It serves the
champion of that moment: when train_recommender is still training on D's features, the previous champion writes
D's candidates.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, task

from dags.wiring import START_DATE, default_args, sensor_timeout


@dag(
    dag_id="nightly_candidates",
    # the run for day D starts after D has ended; its logical date (ds) is D
    schedule=CronDataIntervalTimetable("0 5 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["attnrec", "serving"],
    doc_md=__doc__,
)
def nightly_candidates():
    @task
    def check_champion() -> str:
        from attnrec.settings import get_settings
        from models.registry import require_champion

        return require_champion(get_settings())

    @task.sensor(mode="reschedule", poke_interval=300, timeout=sensor_timeout(), soft_fail=False)
    def wait_for_features(ds: str | None = None) -> bool:
        from attnrec import lake
        from attnrec.settings import get_settings
        from dags.wiring import missing_partitions

        missing = missing_partitions(get_settings().data_root, (lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS), ds)
        if missing:
            print(f"waiting for behavior_etl to publish {', '.join(missing)} (no {lake.SUCCESS_MARKER} yet)")
        return not missing

    @task
    def generate(ds: str | None = None) -> dict:
        from models.candidates import run

        return run(ds)

    @task
    def validate(summary: dict, ds: str | None = None) -> dict:
        import pandas as pd

        from expectations.runner import validate_candidates

        return validate_candidates(pd.read_parquet(summary["path"]), ds)

    @task
    def publish(report: dict, ds: str | None = None) -> str:
        from attnrec import lake
        from attnrec.settings import get_settings

        return lake.publish(get_settings().data_root, lake.CANDIDATES, ds)

    summary = generate()
    check_champion() >> wait_for_features() >> summary
    publish(validate(summary))


nightly_candidates()
