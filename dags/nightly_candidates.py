"""nightly_candidates: top-K unseen items per user from the champion model, validated, then published.

    generate (models:/attention-recommender@champion) -> validate (GX) -> publish candidates/dt=D
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, dag, task

from attnrec.orchestration import START_DATE, default_args


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
    def generate(ds: str | None = None) -> dict:
        from models.candidates import run

        return run(ds)

    @task
    def validate(summary: dict, ds: str | None = None) -> dict:
        import pandas as pd

        from expectations.runner import validate_pandas

        return validate_pandas("candidates", pd.read_parquet(summary["path"]), ds)

    @task
    def publish(report: dict, ds: str | None = None) -> str:
        from attnrec import lake
        from attnrec.settings import get_settings

        return lake.publish(get_settings().data_root, lake.CANDIDATES, ds)

    publish(validate(generate()))


nightly_candidates()
