"""kpi_report: what the lists served on day D did over the next H days, per experiment arm; then act on it.

    wait_for_outcomes -> kpis (Spark) -> validate (GX) -> publish kpis/dt=D -> log_to_mlflow -> promote
                                                                             -> allocate

The run for day D (its logical date) measures candidates/dt=D against the clean events that landed on D+1 .. D+H
(ATTNREC_KPI_HORIZON_DAYS, default 1). It is scheduled at 06:00 UTC on D+H+1, after behavior_etl (02:00) has
published D+H; it waits (reschedule mode, no worker slot held) for the candidates of D and every clean partition of
the window, for up to ATTNREC_WAIT_TIMEOUT_HOURS, then fails naming each partition still missing.

log_to_mlflow logs the day to the MLflow experiment ``<ATTNREC_EXPERIMENT>-online`` (a re-run replaces the day's
run) and tags each served model version with its figures; allocate writes the next treatment share under
ATTNREC_AB_ALLOCATION=thompson; promote moves ``champion`` to the treatment's version under
ATTNREC_PROMOTION_RULE=online when its hit-rate lift is significant (models/online.py). Every step replaces D's
outputs whole, so a re-run of D gives the same rows.
"""

from __future__ import annotations

import datetime as dt_

from airflow.sdk import CronTriggerTimetable, dag, task

from attnrec.settings import get_settings
from dags.wiring import START_DATE, default_args, sensor_poke_interval, sensor_timeout, spark_job

#: The run triggered at 06:00 on D+H+1 has logical date D: its data interval starts H+1 days and 6 hours earlier.
HORIZON_DAYS = get_settings().kpi_horizon_days


@dag(
    dag_id="kpi_report",
    schedule=CronTriggerTimetable("0 6 * * *", timezone="UTC", interval=dt_.timedelta(days=HORIZON_DAYS + 1, hours=6)),
    start_date=START_DATE,
    catchup=False,
    # one day at a time: the allocation and the plot read the experiment's earlier days
    max_active_runs=1,
    default_args=default_args(),
    tags=["attnrec", "experiments"],
    doc_md=__doc__,
)
def kpi_report():
    @task.sensor(mode="reschedule", poke_interval=sensor_poke_interval(), timeout=sensor_timeout(), soft_fail=False)
    def wait_for_outcomes(ds: str | None = None) -> bool:
        from attnrec import lake
        from dags.wiring import fail_when_waited_too_long
        from jobs.kpis import missing_inputs, params_from

        params = params_from(get_settings(), ds)
        missing = missing_inputs(get_settings().data_root, params)
        if missing:
            print(f"kpis dt={ds}: waiting for {', '.join(missing)} (no {lake.SUCCESS_MARKER} yet)")
            fail_when_waited_too_long(
                missing,
                f"run nightly_candidates for {ds} and behavior_etl for {', '.join(params.outcome_days)}, then "
                f"re-run kpi_report for {ds}",
            )
        return not missing

    @task
    def validate(ds: str | None = None) -> dict:
        from jobs.kpis import validate_staged

        return validate_staged(get_settings(), ds)

    @task
    def publish(report: dict, ds: str | None = None) -> str:
        from attnrec import lake

        return lake.publish(get_settings().data_root, lake.KPIS, ds)

    @task
    def log_to_mlflow(path: str, ds: str | None = None) -> dict:
        from models.online import log_day

        return log_day(get_settings(), ds)

    @task
    def allocate(path: str, ds: str | None = None) -> dict | None:
        from models.online import allocate as write_allocation

        return write_allocation(get_settings(), ds)

    @task
    def promote(logged: dict, ds: str | None = None) -> dict | None:
        from models.online import promote_online

        decision = promote_online(get_settings(), ds)
        print(f"kpis dt={ds}: online promotion: {decision}")
        return decision

    checked = validate()
    wait_for_outcomes() >> spark_job("kpis", "kpis") >> checked
    published = publish(checked)
    promote(log_to_mlflow(published))
    allocate(published)


kpi_report()
