"""erase_users: erase users on request from every dataset and day, then retrain without them.

    erase (Spark, one application) -> tag_models (MLflow: versions trained before the erasure)
                                   -> publish_features (Asset: train_recommender retrains on the erased features)

Triggered by hand (schedule None), with conf ``{"user_ids": ["<raw id>", ...]}``, or without conf: then every
request file in ``raw/erasure_requests/`` (one raw id per line) is processed and deleted once the erasure is done.
The raw ids never leave the ``erase`` task: it returns (XCom) only the audit entry, which holds counts and the
request id (``erasure/log/<request id>.json``). A conf's ids stay in Airflow's metadata database with the DAG run;
request files leave none there (docs/privacy.md#erasure).

Erasing users already erased removes nothing, succeeds, tags nothing and triggers no retraining. A wrong or
missing pseudonym key fails ``erase`` before anything is written. Do not run it while behavior_etl runs: a clean
run that read raw events before the erasure would publish the user's events again (its erased-users check then
quarantines only the events of days cleaned after the erasure started).
"""

from __future__ import annotations

from airflow.sdk import Metadata, dag, task

from dags.wiring import FEATURES_ASSET, START_DATE, default_args


@dag(
    dag_id="erase_users",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["attnrec", "privacy"],
    doc_md=__doc__,
)
def erase_users():
    @task
    def erase(**context) -> dict:
        from attnrec.settings import get_settings
        from jobs.erase import erase as run_erasure

        dag_run = context["dag_run"]
        request_id = "erasure-" + "".join(c if c.isalnum() or c in "_.-" else "-" for c in dag_run.run_id)
        return run_erasure(get_settings(), dag_run.conf, request_id)

    @task
    def tag_models(entry: dict) -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from attnrec.settings import get_settings
        from models.registry import tag_trained_before_erasure

        if not entry["retrain_features_dt"]:
            raise AirflowSkipException("no features held the erased users: no model learned from them")
        return tag_trained_before_erasure(get_settings(), entry["request_id"])

    @task(outlets=[FEATURES_ASSET])
    def publish_features(entry: dict):
        from airflow.sdk.exceptions import AirflowSkipException

        dt = entry["retrain_features_dt"]
        if not dt:
            raise AirflowSkipException("no features held the erased users: nothing to retrain")
        yield Metadata(FEATURES_ASSET, extra={"dt": dt, "erasure": entry["request_id"]})

    entry = erase()
    tag_models(entry)
    publish_features(entry)


erase_users()
