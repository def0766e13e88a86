"""train_recommender: train the attention recommender on a published feature partition and register it.

Scheduled on the features Asset that behavior_etl publishes; the partition to train on comes from the
triggering event (``extra["dt"]``), or from the logical date when run by hand (``airflow dags test
train_recommender 2026-01-31``). The new version is aliased ``challenger`` and becomes ``champion`` only
when it beats the current champion on the same holdout.

The ``train`` task runs on the executor and queue named by ATTNREC_TRAIN_EXECUTOR / ATTNREC_TRAIN_QUEUE (on the
cluster: the GPU trainer's Edge worker); unset, on the default executor like every other task.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from dags.wiring import FEATURES_ASSET, START_DATE, default_args, train_task_routing


@dag(
    dag_id="train_recommender",
    schedule=[FEATURES_ASSET],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["attnrec", "training"],
    doc_md=__doc__,
)
def train_recommender():
    @task
    def feature_partition(**context) -> str:
        from dags.wiring import feature_dt_from_context

        return feature_dt_from_context(context)

    @task(**train_task_routing())
    def train(dt: str) -> dict:
        from models.train import run

        return run(dt)

    train(feature_partition())


train_recommender()
