"""The Recommendations view (attnrec_ui) in a real ``airflow api-server``: the plugin loaded from the repo's
``plugins/`` folder, Airflow's Simple auth manager in front of it, a small hand-built lake and an MLflow registry
(SQLite) with a real ``mlflow server`` on it for the links, and the page driven in Debian's Chromium.

One api-server (metadata in SQLite; no scheduler: the view only reads the lake and MLflow) and one MLflow server serve
the whole module.

    day          in the lake
    2026-04-01   kpis only (the chart's earlier point)
    2026-04-02   features, candidates (an experiment: u-1001 in treatment v2, the rest control v1), clean events with
                 reconciliation, Data Docs of the candidates gate, kpis: the day the tests look at
    2026-04-03   clean events: the outcome window of 2026-04-02 (u-1001 clicks rank 3, only sees rank 5)
    2026-04-04   candidates staged under _staging only: never shown
    2026-04-05   candidates without _SUCCESS: never shown
"""

from __future__ import annotations

import datetime as dt_
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from attnrec import lake
from attnrec.contracts import KPI_COLUMNS

from .conftest import VENV_BIN, chromium, free_port, start, stop, wait_http

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: Screenshots go here (never into docs/, so `make test` leaves the checkout clean); docs/ui-recommendations*.png
#: are copies of them, refreshed by hand: cp test-artifacts/recommendations-ui/*.png docs/
SHOTS = Path(os.environ.get("ATTNREC_TEST_ARTIFACTS") or REPO / "test-artifacts") / "recommendations-ui"
USERNAME = "attnrec_admin"
DAY, NEXT, PREV, STAGED, UNFINISHED = "2026-04-02", "2026-04-03", "2026-04-01", "2026-04-04", "2026-04-05"
EXPERIMENT = "ranker-2026-04"
MODEL = "attention-recommender"
TITLES = [
    ("Toy Story", ["Animation", "Comedy"]),
    ("GoldenEye", ["Action", "Thriller"]),
    ("Heat", ["Crime", "Thriller"]),
    ("Casablanca", ["Drama", "Romance"]),
    ("Rear Window", ["Mystery", "Thriller"]),
    ("Fargo", ["Crime", "Drama"]),
    ("Alien", ["Horror", "Sci-Fi"]),
    ("Vertigo", ["Mystery", "Romance"]),
    ("Amadeus", ["Drama", "Music"]),
    ("Brazil", ["Sci-Fi", "Comedy"]),
]
ITEMS = {f"m{i}": (f"{TITLES[(i - 1) % 10][0]} ({1990 + i})", TITLES[(i - 1) % 10][1]) for i in range(1, 31)}
EVENT_CYCLE = ["view", "click", "rate", "impression"]
T0 = int(dt_.datetime(2026, 3, 20, 9, 0, tzinfo=dt_.timezone.utc).timestamp() * 1000)


def _sequence(n: int, offset: int) -> dict:
    return {
        "item_ids": [f"m{(offset + i) % 20 + 1}" for i in range(n)],
        "event_types": [EVENT_CYCLE[i % 4] for i in range(n)],
        "event_times_ms": [T0 + (offset * 1000 + i) * 3_600_000 for i in range(n)],
        "dwell_ms": [None if i % 4 == 3 else 15_000 + 1000 * i for i in range(n)],
    }


SEQUENCES = {"u-1001": _sequence(60, 0), "u-1002": _sequence(3, 5), "x-77": _sequence(2, 9)}
ARMS = {"u-1001": ("treatment", "2"), "u-1002": ("control", "1"), "x-77": ("control", "1")}
#: the served lists: 10 unseen items each (m21..m30), scores falling with rank
SERVED = {
    user: [(rank, f"m{20 + (rank + k) % 10 + 1}", round(3.0 - 0.25 * rank, 2)) for rank in range(1, 11)]
    for k, user in enumerate(SEQUENCES)
}
#: the outcome window (clean events of NEXT): a click on u-1001's rank 3, a mere impression of its rank 5
OUTCOME = [
    ("u-1001", SERVED["u-1001"][2][1], "click"),
    ("u-1001", SERVED["u-1001"][4][1], "impression"),
    ("u-1002", SERVED["u-1002"][0][1], "purchase"),
]


# --------------------------------------------------------------------------------------------- the lake ---------
def _write(root: Path, dataset: str, day: str, rows: list[dict], published: bool = True, staged: bool = False) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(lake.staging(str(root), dataset, day) if staged else lake.partition(str(root), dataset, day))
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "part-00000.parquet")
    if published:
        (path / lake.SUCCESS_MARKER).write_text("")
    return path


def _candidates(users: dict[str, list]) -> list[dict]:
    return [
        {
            "user_id": user,
            "rank": rank,
            "item_id": item,
            "score": score,
            "model_name": MODEL,
            "model_version": ARMS.get(user, ("control", "1"))[1],
            "arm": ARMS.get(user, ("control", "1"))[0],
            "experiment_id": EXPERIMENT,
        }
        for user, served in users.items()
        for rank, item, score in served
    ]


def _kpi_row(arm: str, version: str, hit: float) -> dict:
    row = {name: None for name, _ in KPI_COLUMNS}
    row.update(experiment_id=EXPERIMENT, arm=arm, model_version=version, users=100, active_users=40, impressions=900)
    row.update(clicks=45, ctr=0.05, hit_rate_at_10=hit, hit_rate_at_k=hit + 0.1, conversion=0.02, coverage=0.3)
    if arm == "treatment":
        row.update(lift_hit_rate_at_10=0.1, p_value=0.04)
    return row


def pseudo(user_id: str) -> str:
    """A stand-in pseudonym: the page must show this for the user, and look the user up through identity/users."""
    return f"p-{user_id}"


def build_lake(root: Path) -> None:
    items = [
        {"item_idx": i + 1, "item_id": k, "title": t, "categories": c} for i, (k, (t, c)) in enumerate(ITEMS.items())
    ]
    _write(root, lake.FEATURE_ITEMS, DAY, [{**r, "available": True} for r in items])
    _write(
        root,
        lake.FEATURE_SEQUENCES,
        DAY,
        [
            {"user_id": pseudo(u), **s, "length": len(s["item_ids"]), "events_total": len(s["item_ids"]) + 5}
            for u, s in SEQUENCES.items()
        ],
    )
    # features and clean carry pseudonyms; identity/users maps them back to the raw ids the UI is asked for
    _write(root, lake.IDENTITY_USERS, DAY, [{"pseudonym": pseudo(u), "user_id": u} for u in SEQUENCES])
    cand = _write(root, lake.CANDIDATES, DAY, _candidates(SERVED))
    lake.write_json(
        str(cand / lake.CANDIDATES_MANIFEST),
        {
            "dt": DAY,
            "model_name": MODEL,
            "model_version": "1",
            "model_versions": {"control": "1", "treatment": "2"},
            "experiment_id": EXPERIMENT,
            "treatment_share": 0.5,
            "rows": 30,
            "users": 3,
            "users_by_arm": {"control": 2, "treatment": 1},
        },
    )
    clean = _write(root, lake.CLEAN_EVENTS, DAY, [{"user_id": pseudo("u-1001"), "item_id": "m1", "event_type": "view"}])
    lake.write_json(
        str(clean / lake.RECONCILIATION_FILE),
        {"dt": DAY, "raw_lines": 65, "clean": 63, "quarantined": 1, "duplicates": 1, "quarantined_by_reason": {}},
    )
    _write(
        root, lake.CLEAN_EVENTS, NEXT, [{"user_id": pseudo(u), "item_id": i, "event_type": t} for u, i, t in OUTCOME]
    )
    _write(root, lake.KPIS, PREV, [_kpi_row("control", "1", 0.20), _kpi_row("treatment", "2", 0.22)])
    _write(root, lake.KPIS, DAY, [_kpi_row("control", "1", 0.21), _kpi_row("treatment", "2", 0.26)])
    # never shown: a staged partition and one without _SUCCESS
    _write(root, lake.CANDIDATES, STAGED, _candidates({"staged-user": SERVED["x-77"]}), staged=True)
    _write(root, lake.CANDIDATES, UNFINISHED, _candidates({"unfinished-user": SERVED["x-77"]}), published=False)
    docs = root / "validation" / "data_docs" / "validations" / "candidates" / f"candidates-{DAY}-20260402T050000Z"
    (docs / "20260402T050000.000000Z").mkdir(parents=True)
    (docs / "20260402T050000.000000Z" / "attnrec_pandas-candidates.html").write_text(
        f"<html><body><h1>candidates gate for {DAY}: passed</h1></body></html>"
    )


def build_registry(tracking_uri: str) -> dict[str, str]:
    """Two versions of the model, each from its own run; champion = 1, challenger = 2. Returns version -> run id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.create_experiment("attnrec")
    client.create_registered_model(MODEL)
    runs = {}
    for version in ("1", "2"):
        run = client.create_run(experiment, run_name=f"train-v{version}")
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        assert mv.version == int(version)
        runs[version] = run.info.run_id
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return runs


# --------------------------------------------------------------------------------------------- servers ---------
class Servers:
    def __init__(self, base: Path):
        self.base = base
        self.port, self.mlflow_port = free_port(), free_port()
        self.url, self.mlflow_url = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.mlflow_port}"
        self.password = os.urandom(12).hex()
        self.data_root = base / "lake"
        self.tracking_uri = f"sqlite:///{base / 'mlflow.db'}"
        home = base / "airflow"
        home.mkdir()
        (home / "dags").mkdir()  # the view needs no DAG files; the api-server only checks access to nightly_candidates
        (home / "passwords.json").write_text(json.dumps({USERNAME: self.password}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
            AIRFLOW_HOME=str(home),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USERNAME}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__API__SECRET_KEY=os.urandom(16).hex(),
            AIRFLOW__API_AUTH__JWT_SECRET=os.urandom(32).hex(),
            ATTNREC_DATA_ROOT=str(self.data_root),
            MLFLOW_TRACKING_URI=self.tracking_uri,
            ATTNREC_MLFLOW_UI_URL=self.mlflow_url,
            MLFLOW_SERVER_ALLOWED_HOSTS=f"127.0.0.1:{self.mlflow_port},localhost:{self.mlflow_port}",
        )
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.runs: dict[str, str] = {}

    def log(self, name: str) -> Path:
        return self.base / f"{name}.log"

    def start(self) -> None:
        migrate = start([str(VENV_BIN / "airflow"), "db", "migrate"], self.log("db-migrate"), self.env)
        build_lake(self.data_root)
        self.runs = build_registry(self.tracking_uri)  # meanwhile, in this process
        mlflow_cmd = ["mlflow", "server", "--backend-store-uri", self.tracking_uri, "--host", "127.0.0.1"]
        mlflow_cmd += ["--port", str(self.mlflow_port), "--workers", "1"]
        self.procs["mlflow"] = start([str(VENV_BIN / mlflow_cmd[0]), *mlflow_cmd[1:]], self.log("mlflow"), self.env)
        if migrate.wait(timeout=400):
            pytest.fail(f"airflow db migrate failed:\n{self.log('db-migrate').read_text()[-3000:]}")
        api = ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.procs["api-server"] = start([str(VENV_BIN / "airflow"), *api], self.log("api-server"), self.env)
        wait_http(f"{self.url}/api/v2/monitor/health", 240, self.procs["api-server"], self.log("api-server"))
        wait_http(f"{self.mlflow_url}/health", 120, self.procs["mlflow"], self.log("mlflow"))

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc, timeout=10)

    def token(self) -> str:
        body = json.dumps({"username": USERNAME, "password": self.password}).encode()
        req = urllib.request.Request(
            f"{self.url}/auth/token", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["access_token"]

    def get(self, path: str, token: str | None = None, accept: str = "application/json") -> tuple[int, dict, bytes]:
        """(status, headers, body) of a GET, redirects not followed."""
        headers = {"Accept": accept, **({"Authorization": f"Bearer {token}"} if token else {})}

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(urllib.request.Request(self.url + path, headers=headers), timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    stack = Servers(tmp_path_factory.mktemp("recommendations-ui"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def token(servers) -> str:
    return servers.token()


def api(servers: Servers, path: str, token: str) -> dict:
    status, _, body = servers.get(path, token)
    assert status == 200, (path, status, body[:500])
    return json.loads(body)


# --------------------------------------------------------------------------------------------- tests -----------
@pytest.mark.timeout(420)  # includes `airflow db migrate` on SQLite and starting both servers
def test_the_api_server_loads_the_plugin_and_lists_the_view(servers, token):
    [plugin] = [p for p in api(servers, "/api/v2/plugins", token)["plugins"] if p["name"] == "attnrec_recommendations"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/attnrec"]
    [view] = plugin["external_views"]
    assert (view["name"], view["href"], view["url_route"], view["destination"]) == (
        "Recommendations",
        "/attnrec/recommendations",
        "recommendations",
        "nav",
    )
    assert api(servers, "/api/v2/plugins/importErrors", token)["import_errors"] == []


def test_anonymous_requests_are_refused_like_the_rest_of_the_api(servers, token):
    user_path = f"/attnrec/api/days/{DAY}/users/u-1001"
    for path in ("/attnrec/api/days", user_path, f"/attnrec/api/days/{DAY}", "/attnrec/recommendations"):
        status, _, body = servers.get(path)
        assert status == 401, (path, status, body[:300])
        assert b"u-1001" not in body and b"Toy Story" not in body
    assert servers.get(user_path, token="not-a-jwt")[0] in (401, 403)
    assert servers.get("/api/v2/dags", token=None)[0] == 401  # the same answer as Airflow's own API
    docs = "/attnrec/data-docs/validations/candidates/"
    assert servers.get(docs)[0] == 401
    # a browser asking for the page is sent to Airflow's login, and back to the view inside the UI afterwards
    status, headers, _ = servers.get(f"/attnrec/recommendations?dt={DAY}&user=u-1001", accept="text/html")
    assert status == 302
    location = urllib.parse.urlsplit(headers["location"])
    assert location.path == "/api/v2/auth/login"
    nxt = urllib.parse.parse_qs(location.query)["next"][0]
    assert nxt == f"/plugin/recommendations/attnrec/recommendations?dt={DAY}&user=u-1001"
    # with the token, the same requests are answered
    assert servers.get(user_path, token)[0] == 200
    assert servers.get("/attnrec/recommendations", token, accept="text/html")[0] == 200


def test_a_user_page_is_the_lake_history_and_served_list(servers, token):
    started = time.perf_counter()
    body = api(servers, f"/attnrec/api/days/{DAY}/users/u-1001", token)
    assert time.perf_counter() - started < 1.0
    seq = SEQUENCES["u-1001"]
    history = body["history"]
    assert (history["total"], history["events_total"], history["offset"], len(history["rows"])) == (60, 65, 0, 50)
    newest_first = list(range(59, 9, -1))
    assert [r["item_id"] for r in history["rows"]] == [seq["item_ids"][i] for i in newest_first]
    assert [r["event_type"] for r in history["rows"]] == [seq["event_types"][i] for i in newest_first]
    assert [r["dwell_ms"] for r in history["rows"]] == [seq["dwell_ms"][i] for i in newest_first]
    first = history["rows"][0]
    assert first["time"] == dt_.datetime.fromtimestamp(seq["event_times_ms"][59] / 1000, dt_.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )
    assert (first["title"], first["categories"]) == ITEMS[seq["item_ids"][59]]
    assert (first["rating"], first["attention_strength"]) == (None, None)  # not in this feature version

    older = api(servers, f"/attnrec/api/days/{DAY}/users/u-1001?offset=50", token)["history"]
    assert [r["item_id"] for r in older["rows"]] == [seq["item_ids"][i] for i in range(9, -1, -1)]

    served = body["served"]
    assert [(r["rank"], r["item_id"], r["score"]) for r in served["rows"]] == SERVED["u-1001"]
    assert {(r["arm"], r["model_version"], r["experiment_id"]) for r in served["rows"]} == {
        ("treatment", "2", EXPERIMENT)
    }
    assert [r["title"] for r in served["rows"]] == [ITEMS[i][0] for _, i, _ in SERVED["u-1001"]]
    # engaged: the click on rank 3 in the outcome window; the impression of rank 5 is no engagement
    assert served["outcome"] == {"measured": True, "days": [NEXT], "items": [SERVED["u-1001"][2][1]]}
    assert [r["rank"] for r in served["rows"] if r["engaged"]] == [3]


def test_the_day_shows_versions_gates_reconciliation_and_kpis(servers, token):
    day = api(servers, f"/attnrec/api/days/{DAY}", token)
    assert day["plan"]["model_versions"] == {"control": "1", "treatment": "2"}
    mlflow = day["mlflow"]
    assert mlflow["error"] is None and mlflow["aliases"] == {"champion": "1", "challenger": "2"}
    assert [(v["arm"], v["version"], v["run_id"]) for v in mlflow["served"]] == [
        ("control", "1", servers.runs["1"]),
        ("treatment", "2", servers.runs["2"]),
    ]
    assert mlflow["served"][1]["registry_url"] == f"{servers.mlflow_url}/#/models/{MODEL}/versions/2"
    assert mlflow["served"][1]["run_url"].startswith(f"{servers.mlflow_url}/#/experiments/")
    assert mlflow["served"][1]["run_url"].endswith(f"/runs/{servers.runs['2']}")
    assert day["reconciliation"]["raw_lines"] == 65 == 63 + 1 + 1
    page = day["gates"]["candidates"]
    run = f"candidates-{DAY}-20260402T050000Z/20260402T050000.000000Z"
    assert page == f"validations/candidates/{run}/attnrec_pandas-candidates.html"
    assert day["gates"]["clean_events"] is None  # no validation run of that gate for the day
    status, _, html = servers.get(f"/attnrec/data-docs/{page}", token, accept="text/html")
    assert status == 200 and f"candidates gate for {DAY}: passed".encode() in html
    assert servers.get("/attnrec/data-docs/../../passwords.json", token)[0] == 404
    kpis = day["kpis"]
    assert [(r["arm"], r["hit_rate_at_10"]) for r in kpis["rows"]] == [("control", 0.21), ("treatment", 0.26)]
    assert [(p["dt"], p["hit_rate_at_10"]) for p in kpis["series"]["treatment"]] == [(PREV, 0.22), (DAY, 0.26)]
    assert api(servers, "/attnrec/api/days", token)["days"] == [DAY]  # not the staged nor the unfinished day


def test_search_by_prefix_and_random_user(servers, token):
    assert api(servers, f"/attnrec/api/days/{DAY}/users?prefix=u-10", token)["users"] == ["u-1001", "u-1002"]
    assert api(servers, f"/attnrec/api/days/{DAY}/users?prefix=zz", token)["users"] == []
    picked = {api(servers, f"/attnrec/api/days/{DAY}/random-user", token)["user_id"] for _ in range(12)}
    assert picked <= set(SEQUENCES) and len(picked) >= 2


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/attnrec/api/days/2026-4-2/users/u-1001", 400, "is not a date in the form YYYY-MM-DD"),
        ("/attnrec/api/days/2026-02-30", 400, "is not a date in the form YYYY-MM-DD"),
        (f"/attnrec/api/days/{DAY}/users/nobody", 404, "user 'nobody' was not served on 2026-04-02"),
        (f"/attnrec/api/days/{STAGED}/users/staged-user", 404, f"candidates/dt={STAGED} is not published"),
        (f"/attnrec/api/days/{UNFINISHED}", 404, f"candidates/dt={UNFINISHED} is not published"),
    ],
)
def test_bad_days_and_unknown_users_get_a_clear_message(servers, token, path, status, message):
    got, _, body = servers.get(path, token)
    assert got == status, body[:300]
    assert message in json.loads(body)["detail"]
    # the page says the same, as a message, not a stack trace
    query = path.removeprefix("/attnrec/api/days/").split("/")
    page = f"/attnrec/recommendations?dt={query[0]}" + (f"&user={query[-1]}" if len(query) == 3 else "")
    got, _, html = servers.get(page, token, accept="text/html")
    assert got == status and message.replace("'", "&#39;") in html.decode() and b"Traceback" not in html


@pytest.mark.timeout(300)
def test_browser_signs_in_opens_a_user_and_follows_the_mlflow_link(servers):
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            # the view's URL in the Airflow UI; an anonymous visitor goes through Airflow's login first
            page.goto(f"{servers.url}/plugin/recommendations")
            page.wait_for_url("**/auth/login**")
            page.get_by_label("Username").fill(USERNAME)
            page.get_by_label("Password").fill(servers.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/plugin/recommendations**")
            view = page.frame_locator("iframe[title='Recommendations']")

            # search by prefix, pick the user
            view.get_by_label("User id or prefix").fill("u-10")
            view.get_by_role("button", name="Find user").click()
            expect(view.get_by_test_id("match")).to_have_text(["u-1001", "u-1002"])
            view.get_by_test_id("match").filter(has_text="u-1001").click()
            expect(view.get_by_test_id("user-id")).to_have_text("u-1001")
            # Airflow keeps the iframe's address in its own URL: the user page can be linked to
            page.wait_for_url(f"**/plugin/recommendations/attnrec/recommendations?dt={DAY}&user=u-1001**")

            seq = SEQUENCES["u-1001"]
            history = view.get_by_test_id("history-row")
            expect(history).to_have_count(50)
            newest = seq["item_ids"][59]
            expect(history.first).to_have_attribute("data-item-id", newest)
            expect(history.first).to_contain_text(ITEMS[newest][0])
            expect(history.first).to_contain_text(seq["event_types"][59])
            served = view.get_by_test_id("served-row")
            expect(served).to_have_count(10)
            for row, (rank, item, _) in zip(range(10), SERVED["u-1001"]):
                expect(served.nth(row)).to_have_attribute("data-item-id", item)
                expect(served.nth(row)).to_contain_text(ITEMS[item][0])
            expect(view.locator("tr[data-engaged='true']")).to_have_attribute("data-item-id", SERVED["u-1001"][2][1])
            expect(view.get_by_test_id("reconciliation")).to_contain_text(
                "raw 65 = clean 63 + quarantined 1 + duplicates 1"
            )
            expect(view.locator("svg.chart polyline")).to_have_count(2)
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "ui-recommendations.png"))

            # paging the history
            view.get_by_test_id("older").click()
            expect(history).to_have_count(10)
            expect(history.last).to_have_attribute("data-item-id", seq["item_ids"][0])

            # the registry link of the version that served u-1001 (treatment, v2) opens MLflow's page of it
            link = view.get_by_test_id("registry-link").nth(1)
            expect(link).to_have_attribute("href", f"{servers.mlflow_url}/#/models/{MODEL}/versions/2")
            with page.context.expect_page() as opened:
                link.click()
            mlflow_page = opened.value
            mlflow_page.wait_for_load_state()
            assert mlflow_page.url == f"{servers.mlflow_url}/#/models/{MODEL}/versions/2"
            expect(mlflow_page.get_by_role("heading", name="Version 2")).to_be_visible()
            source_run = mlflow_page.get_by_role("link", name="train-v2")  # the run that logged version 2
            expect(source_run).to_have_attribute("href", re.compile(f"/runs/{servers.runs['2']}$"))
            mlflow_page.screenshot(path=str(SHOTS / "ui-recommendations-mlflow.png"))
            mlflow_page.close()

            # a random user of the day, then a day that is not published
            view.get_by_test_id("random-user").click()
            expect(history.first).to_be_visible()
            page.wait_for_url(lambda url: "user=" in url and "offset=" not in url)
            assert view.get_by_test_id("user-id").inner_text() in SEQUENCES
            page.goto(f"{servers.url}/plugin/recommendations/attnrec/recommendations?dt={STAGED}&user=staged-user")
            expect(view.get_by_test_id("error")).to_contain_text(f"candidates/dt={STAGED} is not published")

            # the view follows the Airflow UI's colour mode (system by default), also when it changes
            page.goto(f"{servers.url}/plugin/recommendations/attnrec/recommendations?dt={DAY}&user=u-1001")
            expect(view.locator("html")).to_have_attribute("data-mode", "light")
            page.emulate_media(color_scheme="dark")
            expect(page.locator("html")).to_have_class(re.compile(r"\bdark\b"))
            expect(view.locator("html")).to_have_attribute("data-mode", "dark")
            expect(history).to_have_count(50)
            page.screenshot(path=str(SHOTS / "ui-recommendations-dark.png"))
        finally:
            browser.close()
