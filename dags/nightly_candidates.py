"""nightly_candidates: top-K unseen items per user from the day's serving plan, validated, then published.

    resolve_version -> wait_for_features -> generate (models:/attention-recommender/<version> of each arm)
                    -> validate (GX suite, then checks against the day's features and the plan)
                    -> publish candidates/dt=D (with _manifest.json: the plan served)

resolve_version resolves the serving plan once, at the start of the run, and hands it to generate through XCom:
the version ``champion`` points at serves everyone, or, while an A/B experiment runs (ATTNREC_AB_TREATMENT_SHARE
above 0, ATTNREC_AB_EXPERIMENT_ID its name), the control arm, and the version ``challenger`` points at serves the
treatment arm. A user's arm is a pure function of (experiment id, user id) and the day's share (the setting, or
under ATTNREC_AB_ALLOCATION=thompson the newest allocation at or before D: the one kpi_report wrote for the last
measured day), so it is sticky across days. The whole run serves that plan even if an alias moves meanwhile; the
task log, the XCom and the partition's ``_manifest.json`` record it. A re-run or backfill of day D whose published
candidates record a plan serves it again, so D's candidates are reproducible; trigger with ``{"re_resolve": true}``
to resolve champion, challenger and share afresh (e.g. after a roll-back). The run fails at once when it needs the
champion and the registry has none (run train_recommender first), or a challenger and there is none (train with
ATTNREC_PROMOTION_RULE=online, or `attnrec registry promote --alias challenger --version N`). Then it waits
(reschedule mode, no worker slot held) until behavior_etl has published features/*/dt=D with their completion
markers, for up to ATTNREC_WAIT_TIMEOUT_HOURS (default 6), then fails naming what is missing.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from dags.wiring import START_DATE, default_args, sensor_timeout


@dag(
    dag_id="nightly_candidates",
    # the run for day D starts after D has ended; its logical date (ds) is D
    schedule=CronDataIntervalTimetable("0 5 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "re_resolve": Param(
            False,
            type="boolean",
            description="serve the current champion, challenger and treatment share even when day D's published "
            "candidates record another plan",
        )
    },
    tags=["attnrec", "serving"],
    doc_md=__doc__,
)
def nightly_candidates():
    @task
    def resolve_version(ds: str | None = None, params: dict | None = None) -> dict:
        from attnrec.settings import get_settings
        from models.serving_plan import describe_plan, resolve_plan

        plan, why = resolve_plan(ds, get_settings(), re_resolve=bool((params or {}).get("re_resolve")))
        print(f"dt={ds}: serving {describe_plan(plan)}: {why}")
        return plan

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
    def generate(plan: dict, ds: str | None = None) -> dict:
        from models.candidates import run

        return run(ds, plan=plan)

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

    plan = resolve_version()
    summary = generate(plan)
    plan >> wait_for_features() >> summary
    publish(validate(summary))


nightly_candidates()
