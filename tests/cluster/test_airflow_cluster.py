"""The Airflow tier of the cluster, for real: ``api-server``, ``scheduler`` (LocalExecutor, and the EdgeExecutor for
the training task) and ``dag-processor`` on 127.0.0.1 with their metadata in PostgreSQL, an ``airflow edge worker``
serving the training queue as compose's GPU ``trainer`` does, the repo's DAGs, and a tiny synthetic lake.

One stack serves the whole module (started once, stopped at the end). The tests run in file order so that the
slow parts overlap on a small machine: the backfill (three days, one run at a time) is created first and runs
while the REST-triggered and the browser-triggered runs go on beside it. A test that uses another's runs says so
in an assertion message, and counts only the runs it names; test_05 makes any run it needs that is missing (the
UI test's, when Chromium is not installed and test_03 is skipped).

    day           how it runs
    2026-03-01..03  airflow backfill create ... --max-active-runs 1     (test_01, checked in test_04)
    2026-03-04      POST /api/v2/dags/behavior_etl/dagRuns               (test_02)
    2026-03-05      the Trigger dialog of the Airflow UI in Chromium     (test_03; by test_05 through REST without it)
    2026-03-07..09  no raw data: backfilled to fail fast                 (test_06)
    2026-03-04      train_recommender: ``train`` on the Edge worker      (test_08)

behavior_etl runs at 02:00 UTC ("0 2 * * *"), so the run for day D has logical date D 02:00 UTC: that is what a
backfill creates, and what the REST and UI triggers use, so that a later backfill recognises those days as done.
"""

from __future__ import annotations

import datetime as dt_
import json
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest

from attnrec import lake

from .airflow_stack import REPO, TERMINAL, USERNAME, AirflowStack
from .conftest import IN_CI, chromium

pytestmark = pytest.mark.integration

BACKFILL_DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
REST_DAY = "2026-03-04"
UI_DAY = "2026-03-05"
MISSING_DAYS = ["2026-03-07", "2026-03-08", "2026-03-09"]  # no raw partition: check_raw fails at once
DAG = "behavior_etl"
PUBLISHED = (lake.CLEAN_EVENTS, lake.QUARANTINE_EVENTS, lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS)
TASKS = {"check_raw", "clean", "publish_clean", "featurize", "item_text", "publish_features", "expire_old_partitions"}
ARTIFACTS = Path(os.environ.get("ATTNREC_TEST_ARTIFACTS") or REPO / "test-artifacts") / "airflow-cluster"
TRAIN_QUEUE = "gpu"  # the queue compose's trainer serves
#: small training, so the run is dominated by process start-up (the model and its checks run in tests/test_model*.py);
#: features of day D only
TRAINING_ENV = {
    "ATTNREC_TRAIN_EPOCHS": "2",
    "ATTNREC_TRAIN_ABLATION": "false",
    "ATTNREC_MAX_SEQ_LEN": "32",
    "OMP_NUM_THREADS": "1",
    # runs of different days overlap here on purpose (a backfill beside REST and UI runs); with a look-back the
    # features gate would, rightly, fail a day whose earlier days are not yet published (tested in test_etl_dag)
    "ATTNREC_LOOKBACK_DAYS": "0",
}


def tick(day: str) -> str:
    """The logical date of behavior_etl's run for ``day``: its schedule fires at 02:00 UTC."""
    return f"{day}T02:00:00Z"


def parse(ts: str) -> dt_.datetime:
    return dt_.datetime.fromisoformat(ts.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("airflow-cluster")
    airflow = AirflowStack(base, postgres.create_db("airflow"), extra_env=TRAINING_ENV, edge_queue=TRAIN_QUEUE)
    from datatools.generate import generate

    # five landing days, tiny: each behavior_etl run is dominated by Spark start-up, not by data
    generate(
        str(airflow.data_root),
        start_dt=BACKFILL_DAYS[0],
        days=5,
        users=30,
        items=100,
        events_per_day=400,
        seed=11,
        bad_fraction=0.01,
    )
    try:
        airflow.start()
        airflow.patch(f"/api/v2/dags/{DAG}", {"is_paused": False})  # new DAGs start paused
        yield airflow
    finally:
        airflow.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for name in airflow.procs:
            if airflow.log(name).exists():
                shutil.copy(airflow.log(name), ARTIFACTS / f"{name}.log")


def backfills(stack: AirflowStack) -> list[dict]:
    return sorted(stack.get(f"/api/v2/backfills?dag_id={DAG}")["backfills"], key=lambda b: b["id"])


def backfill_rows(postgres, backfill_id: int) -> list[tuple[str, str, str]]:
    """(logical date, dag_run_id or '', exception_reason or '') per day of a backfill, from PostgreSQL."""
    out = postgres.psql(
        "SELECT to_char(bdr.logical_date AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI'), "
        "coalesce(dr.run_id, ''), coalesce(bdr.exception_reason, '') FROM backfill_dag_run bdr "
        f"LEFT JOIN dag_run dr ON dr.id = bdr.dag_run_id WHERE bdr.backfill_id = {backfill_id} "
        "ORDER BY bdr.sort_ordinal",
        db="airflow",
    )
    return [tuple(line.split("|")) for line in out.splitlines()]


def wait_backfill_done(stack: AirflowStack, backfill_id: int, timeout: float) -> dict:
    return stack.wait_for(
        lambda: next((b for b in backfills(stack) if b["id"] == backfill_id and b["completed_at"]), None),
        timeout,
        f"backfill {backfill_id} to complete",
        every=3,
    )


def backfill_create(stack: AirflowStack, first: str, last: str, *options: str, check: bool = True):
    # --to-date is a timestamp: the day's 02:00 run is inside the window only if the window reaches past 02:00
    return stack.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG,
        "--from-date",
        first,
        "--to-date",
        f"{last}T23:59:59",
        *options,
        check=check,
    )


def assert_published(root: str, day: str) -> None:
    for dataset in PUBLISHED:
        assert lake.is_complete(lake.partition(root, dataset, day)), f"{dataset}/dt={day} has no {lake.SUCCESS_MARKER}"
    recon = lake.read_json(lake.join(lake.partition(root, lake.CLEAN_EVENTS, day), lake.RECONCILIATION_FILE))
    assert recon["raw_lines"] == 400 == recon["clean"] + recon["quarantined"] + recon["duplicates"], recon


def max_overlap(runs: list[dict]) -> int:
    """The largest number of runs that were running at the same instant (from their start and end dates)."""
    edges = sorted(
        [(parse(r["start_date"]), 1) for r in runs] + [(parse(r["end_date"]), -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )  # an end before a start at the same instant
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


@pytest.mark.timeout(360)  # includes starting PostgreSQL, `airflow db migrate` and the three servers
def test_01_backfill_create_queues_one_run_per_day(stack, postgres):
    done = backfill_create(stack, BACKFILL_DAYS[0], BACKFILL_DAYS[-1], "--max-active-runs", "1")
    assert done.returncode == 0
    [backfill] = backfills(stack)
    assert backfill["max_active_runs"] == 1 and backfill["reprocess_behavior"] == "none"
    rows = backfill_rows(postgres, backfill["id"])
    assert [r[0] for r in rows] == [f"{d}T02:00" for d in BACKFILL_DAYS]
    assert all(r[1].startswith("backfill__") and r[2] == "" for r in rows), rows
    runs = {r["logical_date"]: r for r in stack.runs(DAG) if r["run_type"] == "backfill"}
    assert sorted(runs) == [tick(d) for d in BACKFILL_DAYS]


@pytest.mark.timeout(480)
def test_02_rest_trigger_runs_to_success_and_is_recorded_in_postgres(stack, postgres):
    created = stack.post(f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": tick(REST_DAY)})
    assert created["state"] == "queued" and created["run_type"] == "manual"
    run = stack.wait_run(DAG, REST_DAY, 450)
    states = stack.task_states(DAG, run["dag_run_id"])
    assert run["state"] == "success", states
    assert states == {task: "success" for task in TASKS}
    assert lake.exists(lake.partition(str(stack.data_root), lake.CLEAN_EVENTS, REST_DAY))
    assert_published(str(stack.data_root), REST_DAY)

    # the same run, read from Airflow's metadata database in PostgreSQL
    row = postgres.psql(
        "SELECT run_type, state, triggered_by, triggering_user_name FROM dag_run "
        f"WHERE dag_id = '{DAG}' AND run_id = '{run['dag_run_id']}'",
        db="airflow",
    )
    assert row.split() == [f"manual|success|REST_API|{USERNAME}"]
    tis = postgres.psql(
        "SELECT count(*) FROM task_instance WHERE dag_id = '{0}' AND run_id = '{1}' AND state = 'success'".format(
            DAG, run["dag_run_id"]
        ),
        db="airflow",
    )
    assert tis.strip() == str(len(TASKS))


def test_02b_rest_api_refuses_requests_without_a_valid_token(stack):
    assert stack.status("GET", f"/api/v2/dags/{DAG}", token=None) == 401
    assert stack.status("GET", f"/api/v2/dags/{DAG}", token="not-a-jwt") in (401, 403)
    assert stack.status("POST", "/auth/token", {"username": USERNAME, "password": "admin"}, token=None) == 401
    assert stack.status("GET", f"/api/v2/dags/{DAG}") == 200


@pytest.mark.timeout(540)
def test_03_ui_login_dag_list_and_trigger_a_day(stack):
    executable = chromium()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("playwright (in requirements.lock) is not installed in this environment; run `make venv`")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)

            # the UI sends an anonymous visitor to the Simple auth manager's login form; a wrong password is refused
            page.goto(f"{stack.url}/dags")
            page.wait_for_url("**/auth/login**")
            page.get_by_label("Username").fill(USERNAME)
            page.get_by_label("Password").fill("admin")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("Invalid credentials")).to_be_visible()
            page.get_by_label("Password").fill(stack.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{stack.url}/dags")

            for dag_id in ("behavior_etl", "train_recommender", "nightly_candidates", "erase_users"):
                expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
            dag_files = [p for p in (REPO / "dags").glob("*.py") if p.stem not in ("__init__", "wiring")]
            expect(page.get_by_text(f"{len(dag_files)} Dags")).to_be_visible()  # one DAG per file
            page.screenshot(path=str(ARTIFACTS / "dag-list-before-trigger.png"), full_page=True)

            # Trigger dialog of behavior_etl: single run, logical date typed into the date picker (UTC)
            page.get_by_role("link", name=DAG, exact=True).click()
            page.wait_for_url(f"**/dags/{DAG}")
            expect(page.get_by_test_id("trigger-dag-button")).to_have_count(1)  # the DAG page, not the list
            page.get_by_test_id("trigger-dag-button").click()
            expect(page.get_by_role("heading", name="Trigger Dag")).to_be_visible()
            page.get_by_test_id("datetime-input").click()
            page.get_by_placeholder("YYYY/MM/DD").fill(UI_DAY.replace("-", "/"))
            page.get_by_placeholder("HH:mm").fill("02:00")
            page.get_by_role("heading", name="Trigger Dag").click()  # closes the date picker, keeps the dialog
            shown = dt_.date.fromisoformat(UI_DAY).strftime("%b %d, %Y 02:00")
            expect(page.get_by_test_id("datetime-input")).to_have_text(shown)
            page.screenshot(path=str(ARTIFACTS / "trigger-dialog.png"))
            page.get_by_test_id("trigger-dag-submit").click()
            page.wait_for_url(f"**/dags/{DAG}/runs/**")
            run_id = page.url.rsplit("/runs/", 1)[1]

            run = stack.wait_run(DAG, UI_DAY, 480)
            assert run["dag_run_id"] == urllib.parse.unquote(run_id)
            assert run["state"] == "success", stack.task_states(DAG, run["dag_run_id"])
            assert run["logical_date"] == tick(UI_DAY)
            assert (run["run_type"], run["triggered_by"], run["triggering_user_name"]) == ("manual", "ui", USERNAME)
            assert_published(str(stack.data_root), UI_DAY)

            # the run page shows the outcome too; then the DAG list, with the latest runs, for the README
            page.reload()
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            page.goto(f"{stack.url}/dags")
            expect(page.get_by_role("link", name=DAG, exact=True)).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(ARTIFACTS / "airflow-dag-list.png"))
        finally:
            browser.close()


@pytest.mark.timeout(600)
def test_04_backfill_runs_every_day_one_at_a_time_in_date_order(stack, postgres):
    assert backfills(stack), f"needs test_01's backfill of {BACKFILL_DAYS[0]}..{BACKFILL_DAYS[-1]}"
    [backfill] = backfills(stack)
    wait_backfill_done(stack, backfill["id"], 570)
    runs = sorted((r for r in stack.runs(DAG) if r["run_type"] == "backfill"), key=lambda r: r["logical_date"])
    assert [r["logical_date"] for r in runs] == [tick(d) for d in BACKFILL_DAYS]
    assert [r["state"] for r in runs] == ["success"] * 3, [stack.task_states(DAG, r["dag_run_id"]) for r in runs]
    for day in BACKFILL_DAYS:
        assert_published(str(stack.data_root), day)

    # --max-active-runs 1: each day started after the previous one ended, oldest first
    assert max_overlap(runs) == 1
    assert [r["logical_date"] for r in sorted(runs, key=lambda r: r["start_date"])] == [tick(d) for d in BACKFILL_DAYS]

    # backfill runs have their own limit: the manual runs triggered while the backfill ran (test_02's REST run, and
    # test_03's UI run unless that test was skipped) went on while a backfill run was running
    manual = [
        r for r in stack.runs(DAG) if r["run_type"] == "manual" and r["logical_date"] in (tick(REST_DAY), tick(UI_DAY))
    ]
    assert tick(REST_DAY) in [r["logical_date"] for r in manual], f"needs test_02's REST-triggered run of {REST_DAY}"
    for run in manual:
        assert max_overlap([run, *runs]) == 2, f"{run['dag_run_id']} waited for the backfill"


def dry_run(stack: AirflowStack, first: str, last: str, reprocess: str) -> list[str]:
    """The logical dates a backfill would create (``POST /api/v2/backfills/dry_run``, the CLI's --dry-run)."""
    body = stack.post(
        "/api/v2/backfills/dry_run",
        {
            "dag_id": DAG,
            "from_date": f"{first}T00:00:00Z",
            "to_date": f"{last}T23:59:59Z",
            "reprocess_behavior": reprocess,
        },
    )
    return [b["logical_date"] for b in body["backfills"]]


def ensure_successful_runs(stack: AirflowStack, days: list[str], timeout: float) -> None:
    """Every day of ``days`` has a successful behavior_etl run: the one an earlier test made (waited for when still
    running), or one triggered here through the REST API at the day's 02:00 tick when there is none."""
    for day in days:
        if stack.run_for(DAG, day) is None:
            stack.post(f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": tick(day)})
    for day in days:
        run = stack.wait_run(DAG, day, timeout)
        assert run["state"] == "success", (day, stack.task_states(DAG, run["dag_run_id"]))


@pytest.mark.timeout(600)  # 180 s when every day already has its run; more when it triggers the missing ones
def test_05_backfill_over_completed_days_creates_nothing_unless_asked(stack, postgres):
    days = [*BACKFILL_DAYS, REST_DAY, UI_DAY]
    ensure_successful_runs(stack, days, 400)  # without Chromium, UI_DAY has no run from test_03
    before = {r["dag_run_id"]: r["end_date"] for r in stack.runs(DAG)}
    assert dry_run(stack, days[0], days[-1], "none") == []
    assert dry_run(stack, days[0], days[-1], "failed") == []
    assert dry_run(stack, days[0], days[-1], "completed") == [tick(d) for d in days]

    # the plain command (default --reprocess-behavior none) records every day as already done and runs nothing
    backfill_create(stack, days[0], days[-1])
    none = backfills(stack)[-1]
    assert (none["reprocess_behavior"], none["max_active_runs"]) == ("none", 10)  # 10: the default limit
    assert backfill_rows(postgres, none["id"]) == [(f"{d}T02:00", "", "already exists") for d in days]
    wait_backfill_done(stack, none["id"], 90)  # the scheduler closes finished backfills every 30 s
    assert {r["dag_run_id"]: r["end_date"] for r in stack.runs(DAG)} == before  # nothing ran again


@pytest.mark.timeout(300)
def test_06_backfill_max_active_runs_is_its_own_limit_and_failed_days_are_rerun(stack, postgres):
    # three days without raw data: each run fails in check_raw within seconds
    backfill_create(stack, MISSING_DAYS[0], MISSING_DAYS[-1], "--max-active-runs", "3")
    first = backfills(stack)[-1]
    wait_backfill_done(stack, first["id"], 200)
    runs = [stack.run_for(DAG, d) for d in MISSING_DAYS]
    assert [r["state"] for r in runs] == ["failed"] * 3
    assert all(stack.task_states(DAG, r["dag_run_id"])["check_raw"] == "failed" for r in runs)
    # behavior_etl has max_active_runs=2, yet the backfill ran three at once: its own --max-active-runs applies
    assert max_overlap(runs) == 3

    # --reprocess-behavior failed clears the failed runs (same run ids) and runs them again
    backfill_create(stack, MISSING_DAYS[0], MISSING_DAYS[-1], "--reprocess-behavior", "failed")
    again = backfills(stack)[-1]
    wait_backfill_done(stack, again["id"], 200)
    rows = backfill_rows(postgres, again["id"])
    assert rows == [(f"{d}T02:00", r["dag_run_id"], "") for d, r in zip(MISSING_DAYS, runs)]
    rerun = [stack.run_for(DAG, d) for d in MISSING_DAYS]
    assert [r["state"] for r in rerun] == ["failed"] * 3
    assert all(parse(new["start_date"]) > parse(old["end_date"]) for old, new in zip(runs, rerun))
    tries = postgres.psql(
        f"SELECT try_number FROM task_instance WHERE dag_id = '{DAG}' AND task_id = 'check_raw' "
        f"AND run_id IN ({', '.join(repr(r['dag_run_id']) for r in runs)})",
        db="airflow",
    )
    assert tries.split() == ["2", "2", "2"]


@pytest.mark.timeout(120)
def test_07_a_run_triggered_at_midnight_is_not_the_days_scheduled_run(stack):
    """Airflow matches runs by logical date: a manual run of day D at 00:00 does not stand for the 02:00 run
    a backfill makes for D, so even the default backfill would process D again (the ETL replaces the
    partition whole, so that costs time, not correctness). Trigger day D at D 02:00 UTC."""
    day = "2026-03-10"  # no raw data: the run fails at once
    stack.post(f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": f"{day}T00:00:00Z"})
    assert stack.wait_run(DAG, day, 100)["logical_date"] == f"{day}T00:00:00Z"
    assert dry_run(stack, day, day, "none") == [tick(day)]


@pytest.mark.timeout(360)
def test_08_train_runs_on_the_edge_worker_and_the_rest_on_the_local_executor(stack, postgres):
    """compose's GPU profile without Docker: train_recommender for a published day; its ``train`` task goes through
    the EdgeExecutor to the ``airflow edge worker`` serving the training queue, ``feature_partition`` runs on the
    scheduler's LocalExecutor (the default, first executor)."""
    train_dag = "train_recommender"
    assert_published(str(stack.data_root), REST_DAY)  # features of test_02's run
    workers = stack.wait_for(
        lambda: [
            w
            for w in stack.get("/edge_worker/ui/worker")["workers"]
            if w["worker_name"] == stack.edge_hostname and w["state"] == "idle"
        ],
        120,
        f"edge worker {stack.edge_hostname} registered and idle",
    )
    assert workers[0]["queues"] == [TRAIN_QUEUE]
    # compose's health check of the trainer service, against this worker (it finds it by the pid file in AIRFLOW_HOME)
    out = stack.airflow("edge", "status", timeout=60).stdout
    assert json.loads(out[out.index("{") :])["state"] == "idle", out
    # the worker only calls out (to the API server); it listens on no port
    import psutil

    worker = psutil.Process(stack.procs["edge-worker"].pid)
    listening = [
        c.laddr
        for p in (worker, *worker.children(recursive=True))
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening == []

    stack.patch(f"/api/v2/dags/{train_dag}", {"is_paused": False})  # paused DAGs' runs are not scheduled
    stack.post(f"/api/v2/dags/{train_dag}/dagRuns", {"logical_date": f"{REST_DAY}T00:00:00Z"})
    run = stack.wait_run(train_dag, REST_DAY, 270)
    tis = {
        ti["task_id"]: ti
        for ti in stack.get(
            f"/api/v2/dags/{train_dag}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}/taskInstances"
        )["task_instances"]
    }
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    assert {t: ti["state"] for t, ti in tis.items()} == {"feature_partition": "success", "train": "success"}
    assert (tis["train"]["executor"], tis["train"]["queue"]) == ("EdgeExecutor", TRAIN_QUEUE)
    assert (tis["feature_partition"]["executor"], tis["feature_partition"]["queue"]) == (None, "default")

    # the Edge provider's job table: one job, the train task, run by our worker; nothing else went to the edge.
    # The task reports its own state through the Execution API; the worker marks the job done once the task's
    # process has exited (a moment later).
    def edge_jobs_done():
        jobs = stack.get(f"/edge_worker/ui/jobs?dag_id_pattern={train_dag}")["jobs"]
        return jobs if jobs and all(j["state"] in TERMINAL for j in jobs) else None

    jobs = stack.wait_for(edge_jobs_done, 60, "the edge job to finish")
    assert [(j["task_id"], j["run_id"], j["queue"], j["edge_worker"], j["state"]) for j in jobs] == [
        ("train", run["dag_run_id"], TRAIN_QUEUE, stack.edge_hostname, "success")
    ]
    rows = postgres.psql(
        "SELECT task_id, coalesce(executor, ''), queue FROM task_instance "
        f"WHERE dag_id = '{train_dag}' ORDER BY task_id",
        db="airflow",
    )
    assert rows.split() == ["feature_partition||default", f"train|EdgeExecutor|{TRAIN_QUEUE}"]

    # the worker pushed the task's log to the API server (its own log folder is elsewhere): the UI's log view has it
    log_path = (
        f"/api/v2/dags/{train_dag}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}/taskInstances/train/logs/1"
    )
    stack.wait_for(
        lambda: f"dt={REST_DAY}: " in json.dumps(stack.get(log_path)),
        60,
        "the train task's log (models.train's data summary line) through the REST API",
    )
    # and the worker's own log folder holds the train task's log only
    assert [p.parent.name for p in (stack.base / "trainer-logs").rglob("*.log")] == ["task_id=train"]

    # the training process had the worker's environment: only the trainer's checkpoint directory was used
    assert stack.trainer_checkpoints.is_dir(), "training did not write under the edge worker's ATTNREC_CHECKPOINT_DIR"
    assert not (stack.base / "checkpoints").exists()
    # and it produced a model: version 1 of the registered model, trained on REST_DAY's features
    from mlflow import MlflowClient

    client = MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    [version] = client.search_model_versions("name='attention-recommender'")
    assert int(version.version) == 1 and client.get_run(version.run_id).data.tags["feature_dt"] == REST_DAY
