"""Erasure (issue 14): ``erase_users`` through Airflow (``airflow dags test``) on a two-day lake built once with the
real jobs (clean, featurize, train on a real MLflow registry, candidates), then what must hold after it: neither the
raw id nor the pseudonym anywhere under the data root or in the MLflow store, every other user's rows unchanged,
the reconciliation still adds up, the features Asset queued train_recommender, the old versions are tagged; twice is
a no-op; a wrong or missing key fails and writes nothing; a late event lands in quarantine as ``erased_user``.
The request rules and the raw-file rewrite are unit-tested first."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import SecretBytes

from attnrec import lake
from attnrec.privacy import ERASED_USERS_FILE, erased_tag, pseudonym
from jobs import erase as er

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parent.parent
KEY = "0123456789abcdef0123456789abcdef-erase-test-key"
OTHER_KEY = "fedcba9876543210fedcba9876543210-other-key"
D1, D2, D3 = "2026-03-02", "2026-03-03", "2026-03-04"


# ---------------------------------------------------------------- unit: the request and the raw lines


@pytest.mark.parametrize(
    "value, message",
    [
        ("u1", 'conf "user_ids" must be a list of raw user ids, not str'),
        ([], 'conf "user_ids" is empty: nothing to erase'),
        (["u1", 7], 'conf "user_ids"[1] is a int, not a string'),
        (["u1", "  "], 'conf "user_ids"[1] is blank'),
    ],
)
def test_a_bad_request_names_the_value_and_the_fix(value, message):
    with pytest.raises(ValueError) as err:
        er.check_user_ids(value)
    assert str(err.value).startswith(message) and 'trigger with {"user_ids": ["<raw id>", ...]}' in str(err.value)


def test_ids_are_trimmed_like_clean_and_deduplicated():
    assert er.check_user_ids([" u1 ", "u1", "u2"]) == ["u1", "u2"]


def test_a_request_comes_from_the_conf_or_from_the_request_files(tmp_path):
    root = str(tmp_path)
    with pytest.raises(ValueError, match="holds no request file"):
        er.resolve_request(root, {}, "r1")
    with pytest.raises(ValueError, match=r"unknown conf keys \['users'\]"):
        er.resolve_request(root, {"users": ["u1"]}, "r1")
    (tmp_path / er.REQUESTS_DIR).mkdir(parents=True)
    (tmp_path / er.REQUESTS_DIR / "ticket-1.txt").write_text("u1\n# a comment\n\n u2 \n")
    (tmp_path / er.REQUESTS_DIR / "ticket-2.txt").write_text("u2\nu3")
    request = er.resolve_request(root, None, "r1")
    assert (request.user_ids, request.source, len(request.files)) == (["u1", "u2", "u3"], "files", 2)
    assert er.resolve_request(root, {"user_ids": ["u9"]}, "r1").user_ids == ["u9"]  # the conf wins


def test_a_line_is_the_users_when_its_parsed_user_id_is_the_id():
    assert er.line_user(b'{"user_id": " u1 ", "item_id": "i"}') == "u1"
    assert er.line_user('{"user_id": 42}') == "42"  # a wrong-typed id is still the user's line
    assert er.line_user(b'{"user_id": "u1"') is None and er.line_user(b"[1]") is None
    assert er.line_user(b'{"user_id": true}') is None and er.line_user(b"") is None


def test_a_raw_file_loses_only_the_users_lines_byte_for_byte(tmp_path):
    lines = [b'{"user_id":"u1","n":1}', b'{"user_id":"u2","n":2}', b"not json u1", b'{"user_id":"u1","n":3}']
    plain, zipped = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    plain.write_bytes(b"\n".join(lines) + b"\n")
    zipped.write_bytes(gzip.compress(b"\n".join(lines)))
    assert er.erase_raw_file(str(plain), {"u1"}) == (2, 2)
    assert plain.read_bytes() == lines[1] + b"\n" + lines[2] + b"\n"
    assert er.erase_raw_file(str(zipped), {"u1"}) == (2, 2)
    assert gzip.decompress(zipped.read_bytes()) == lines[1] + b"\n" + lines[2]
    assert er.erase_raw_file(str(plain), {"u1"}) == (0, 2)  # nothing left of u1: the file is not rewritten
    assert er.erase_raw_file(str(plain), {"u2"}) == (1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl.gz"]  # no temporary file left


def test_the_reconciliation_is_recounted_with_what_was_erased():
    old = {
        "dt": D1,
        "raw_lines": 100,
        "clean": 90,
        "quarantined": 6,
        "quarantined_by_reason": {"malformed_json": 4, "bot_user": 2},
        "duplicates": 4,
    }
    new = er.recount(old, raw_lines=93, clean=86, by_reason={"malformed_json": 3, "bot_user": 2})
    assert (new["raw_lines"], new["clean"], new["quarantined"], new["duplicates"]) == (93, 86, 5, 2)
    assert new["erased"] == {
        "raw_lines": 7, "clean": 4, "quarantined": 1, "duplicates": 2, "quarantined_by_reason": {"malformed_json": 1}
    }  # fmt: skip
    # raw deleted by retention: the duplicates cannot be recounted and stay
    gone = er.recount(old, raw_lines=None, clean=86, by_reason={"malformed_json": 4, "bot_user": 2})
    assert (gone["raw_lines"], gone["duplicates"], gone["erased"]["raw_lines"]) == (96, 4, 4)


def test_another_key_is_refused_while_erased_users_exist_even_after_the_fingerprint_is_deleted(tmp_path):
    from attnrec.privacy import FINGERPRINT_FILE, add_erased, key_fingerprint, lake_key
    from attnrec.settings import get_settings

    root = str(tmp_path)
    assert add_erased(root, {erased_tag(pseudonym("u1", KEY.encode()))}, key_fingerprint(KEY.encode())) == 1
    assert add_erased(root, {erased_tag(pseudonym("u1", KEY.encode()))}, key_fingerprint(KEY.encode())) == 0
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="is not the key the erased-users list") as err:
        lake_key(get_settings(data_root=root, pseudonym_key=OTHER_KEY))  # a rotation: no fingerprint file
    assert OTHER_KEY not in str(err.value) and "rotating-the-key-after-erasures" in str(err.value)
    assert _tree(tmp_path) == before and not (tmp_path / FINGERPRINT_FILE).exists()
    lake_key(get_settings(data_root=root, pseudonym_key=KEY))  # the list's key is accepted


# ---------------------------------------------------------------- the lake, built once


def _rows(path: str, exclude_col: str | None = None, exclude: set[str] = frozenset()) -> list:
    if not lake.exists(path):
        return []
    table = pq.read_table(path)
    rows = [tuple(json.dumps(v, sort_keys=True, default=str) for v in r.values()) for r in table.to_pylist()]
    if exclude_col:
        col = table.column_names.index(exclude_col)
        rows = [r for r in rows if json.loads(r[col]) not in exclude]
    return sorted(rows)


def _quarantine(root: str, dt: str, user: str | None) -> list[tuple]:
    table = pq.read_table(lake.partition(root, lake.QUARANTINE_EVENTS, dt))
    return sorted(tuple(r.values()) for r in table.to_pylist() if user is None or er.line_user(r["raw_line"]) != user)


def _raw_paths(root: str) -> list[Path]:
    return sorted(p for p in Path(root, lake.RAW_EVENTS).rglob("*") if p.is_file())


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).split(b"\n")


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory, spark):
    from datatools.generate import generate
    from jobs import clean, featurize

    base = tmp_path_factory.mktemp("erase")
    root = str(base / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
    env.update(
        AIRFLOW_HOME=str(base / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",  # an asset event queues only unpaused DAGs
        ATTNREC_DATA_ROOT=root,
        MLFLOW_TRACKING_URI=f"sqlite:///{base / 'mlflow.db'}",
        ATTNREC_MLFLOW_ARTIFACTS=(base / "mlartifacts").as_uri(),
        ATTNREC_PSEUDONYM_KEY=KEY,
        ATTNREC_TRAIN_EPOCHS="2",
        ATTNREC_TRAIN_ABLATION="false",
        ATTNREC_ITEM_TEXT="false",
        ATTNREC_TOP_K="10",
        ATTNREC_SPARK_DRIVER_MEMORY="1g",
        ATTNREC_CHECKPOINT_DIR=str(base / "checkpoints"),
    )
    (base / "airflow").mkdir()
    (base / "airflow" / "dags").symlink_to(REPO / "dags")
    migrate = subprocess.Popen(  # Airflow's metadata database, while Spark builds the lake
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith(("ATTNREC_", "MLFLOW_"))]:
            mp.delenv(k)
        for k, v in env.items():
            if k.startswith(("ATTNREC_", "MLFLOW_")):
                mp.setenv(k, v)
        from attnrec.privacy import lake_key
        from attnrec.settings import get_settings
        from models import candidates, train

        settings = get_settings()
        generate(root, start_dt=D1, days=2, users=40, items=60, events_per_day=1500, seed=11, bad_fraction=0.02)
        key = lake_key(settings)
        for dt in (D1, D2):
            clean.run(spark, root, clean.CleanParams(dt=dt), key)
            lake.publish_all(root, lake.CLEAN_OUTPUTS, dt)
            featurize.run(spark, root, featurize.FeatureParams(dt=dt, max_seq_len=settings.max_seq_len))
            lake.publish_all(root, lake.FEATURE_OUTPUTS, dt, optional=(lake.QUARANTINE_ITEMS,))
        assert train.run(D2, settings)["model_version"] == "1"
        candidates.run(D2, settings)
        lake.publish(root, lake.CANDIDATES, D2)
        assert migrate.wait(timeout=600) == 0, migrate.stderr.read()[-3000:]
        subprocess.run(  # train_recommender in the database, so an asset event can queue it
            [sys.executable, "-m", "airflow", "dags", "reserialize"], env=env, check=True, capture_output=True
        )
        yield {"base": base, "root": root, "env": env, "settings": settings, "spark": spark}


def _victim(root: str) -> str:
    """The user with the most quarantined lines of both days that name them (and clean events on both days)."""
    counts: dict[str, int] = {}
    for dt in (D1, D2):
        for line in pq.read_table(lake.partition(root, lake.QUARANTINE_EVENTS, dt)).column("raw_line").to_pylist():
            user = er.line_user(line)
            if user:
                counts[user] = counts.get(user, 0) + 1
    return max(sorted(counts), key=counts.get)


def test_erase_users_leaves_no_trace_and_keeps_everyone_else(stack):
    root, env, base = stack["root"], stack["env"], stack["base"]
    user = _victim(root)
    alias = pseudonym(user, KEY.encode())
    before = {}
    for dataset, col, ex in (
        (lake.CLEAN_EVENTS, "user_id", {alias}),
        (lake.FEATURE_SEQUENCES, "user_id", {alias}),
        (lake.IDENTITY_USERS, "pseudonym", {alias}),
        (lake.CANDIDATES, "user_id", {user}),
    ):
        for dt in (D1, D2):
            before[dataset, dt] = _rows(lake.partition(root, dataset, dt), col, ex)
    quarantine_before = {dt: _quarantine(root, dt, user) for dt in (D1, D2)}
    raw_before = {p: [ln for ln in _lines(p) if er.line_user(ln) != user] for p in _raw_paths(root)}
    recon_before = {
        dt: lake.read_json(lake.join(lake.partition(root, lake.CLEAN_EVENTS, dt), lake.RECONCILIATION_FILE))
        for dt in (D1, D2)
    }
    touched = {  # items the user had events of: their statistics change; every other item's stay
        r["item_id"] for r in pq.read_table(lake.partition(root, lake.CLEAN_EVENTS, D2)).to_pylist()
        if r["user_id"] == alias
    } | {r["item_id"] for r in pq.read_table(lake.partition(root, lake.CLEAN_EVENTS, D1)).to_pylist()
         if r["user_id"] == alias}  # fmt: skip
    items_before = _rows(lake.partition(root, lake.FEATURE_ITEMS, D2), "item_id", touched)
    from tests.privacy_scan import scan

    assert scan(Path(root), {user}, skip=("_secrets/",))  # the scan finds them before
    assert scan(Path(root), {alias})

    conf = json.dumps({"user_ids": [user]})
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "erase_users", D2, "--conf", conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=env["AIRFLOW_HOME"],
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DagRun failed" not in out, out[-6000:]

    # no trace: every file under the data root (parquet columns, text, gzip), the MLflow artifacts and database
    assert scan(Path(root), {user, alias}) == {}
    assert scan(base, {user, alias}, skip=("data/", "airflow/")) == {}
    assert scan(Path(env["AIRFLOW_HOME"]) / "logs", {user, alias}) == {}

    # everyone else unchanged
    for (dataset, dt), rows in before.items():
        col = "pseudonym" if dataset == lake.IDENTITY_USERS else "user_id"
        assert (
            _rows(lake.partition(root, dataset, dt), col, {alias, user})
            == rows
            == _rows(lake.partition(root, dataset, dt))
        ), (dataset, dt)
    for dt, rows in quarantine_before.items():
        assert _quarantine(root, dt, None) == rows
    for path, kept in raw_before.items():
        assert _lines(path) == kept, path
    assert _rows(lake.partition(root, lake.FEATURE_ITEMS, D2), "item_id", touched) == items_before
    popularity = {
        r["item_id"]: r["popularity"] for r in pq.read_table(lake.partition(root, lake.FEATURE_ITEMS, D2)).to_pylist()
    }
    clean_now = [r for dt in (D1, D2) for r in pq.read_table(lake.partition(root, lake.CLEAN_EVENTS, dt)).to_pylist()]
    assert popularity == {i: sum(1 for r in clean_now if r["item_id"] == i) for i in popularity}  # recomputed

    # the reconciliation adds up, and says what left
    log = next(Path(root, er.LOG_DIR).glob("*.json"))
    entry = json.loads(log.read_text())
    for dt in (D1, D2):
        recon = lake.read_json(lake.join(lake.partition(root, lake.CLEAN_EVENTS, dt), lake.RECONCILIATION_FILE))
        assert recon["raw_lines"] == recon["clean"] + recon["quarantined"] + recon["duplicates"]
        assert recon["raw_lines"] == recon_before[dt]["raw_lines"] - recon["erased"]["raw_lines"]
        assert recon["erased"]["raw_lines"] == entry["rows_removed_by_day"][lake.RAW_EVENTS][dt] > 0
        assert recon["erased"]["clean"] == entry["rows_removed_by_day"][lake.CLEAN_EVENTS][dt] > 0
    assert entry["rows_removed"][lake.QUARANTINE_EVENTS] >= 2 and entry["rows_removed"][lake.CANDIDATES] == 10
    assert entry["rows_removed"][lake.FEATURE_SEQUENCES] == 2 and entry["rows_removed"][lake.IDENTITY_USERS] == 2
    assert entry["users"] == 1 and entry["retrain_features_dt"] == D2

    # retraining: the features Asset event (dt D2) queued train_recommender; the old version is tagged
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        [(extra,)] = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.name = 'attnrec_features' AND e.source_dag_id = 'erase_users'"
        ).fetchall()
        queued = db.execute("SELECT target_dag_id FROM asset_dag_run_queue").fetchall()
    assert json.loads(extra) == {"dt": D2, "erasure": entry["request_id"]}
    assert queued == [("train_recommender",)]
    from models.registry import TRAINED_BEFORE_ERASURE, client

    version = client(stack["settings"]).get_model_version("attention-recommender", "1")
    assert version.tags[TRAINED_BEFORE_ERASURE] == entry["request_id"]
    assert erased_tag(alias) in pq.read_table(Path(root, ERASED_USERS_FILE)).column(0).to_pylist()


def test_erasing_again_is_a_no_op_and_a_wrong_or_missing_key_writes_nothing(stack, monkeypatch):
    from attnrec.settings import get_settings

    root, spark = stack["root"], stack["spark"]
    tree = _tree(Path(root))
    for key, message in (
        (OTHER_KEY, "is not the key the pseudonyms under"),
        (None, "is not set and the lake at"),
    ):
        if key:
            monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", key)
        else:
            monkeypatch.delenv("ATTNREC_PSEUDONYM_KEY", raising=False)
        with pytest.raises(ValueError, match=message) as err:
            er.erase(get_settings(), {"user_ids": ["u1"]}, "wrong-key", spark=spark)
        assert KEY not in str(err.value) and OTHER_KEY not in str(err.value)
        assert _tree(Path(root)) == tree  # nothing written
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", KEY)
    entry = er.erase(get_settings(), {"user_ids": [_erased_user(root)]}, "again", spark=spark)
    assert entry["rows_removed"] == {} and entry["retrain_features_dt"] is None
    changed = {p for p, h in _tree(Path(root)).items() if tree.get(p) != h}
    assert changed == {f"{er.LOG_DIR}/again.json"}

    # the same through a request file, picked up by a run without conf and deleted once done
    request = Path(root, er.REQUESTS_DIR, "ticket-77.txt")
    request.parent.mkdir(parents=True)
    request.write_text(_erased_user(root) + "\n")
    entry = er.erase(get_settings(), None, "from-file", spark=spark)
    assert (entry["source"], entry["request_files"], entry["users"], entry["rows_removed"]) == ("files", 1, 1, {})
    assert not request.exists() and not any(request.parent.iterdir())


def _erased_user(root: str) -> str:
    """The erased user, found by their tag in the erased-users list among the generated ids."""
    tags = set(pq.read_table(Path(root, ERASED_USERS_FILE)).column(0).to_pylist())
    return next(f"u{i}" for i in range(1, 100) if erased_tag(pseudonym(f"u{i}", KEY.encode())) in tags)


def test_a_late_event_of_an_erased_user_is_quarantined_as_erased_user(stack):
    from jobs import clean

    root, spark = stack["root"], stack["spark"]
    user = _erased_user(root)
    day = Path(root, lake.RAW_EVENTS, f"dt={D3}")
    day.mkdir(parents=True)
    event = {"item_id": "i1", "event_type": "click", "event_time": f"{D3}T10:00:00Z"}
    lines = [
        json.dumps({**event, "event_id": "late-1", "user_id": user}),
        json.dumps({**event, "event_id": "ok-1", "user_id": "u-new"}),
    ]
    (day / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    summary = clean.run(spark, root, clean.CleanParams(dt=D3), SecretBytes(KEY.encode()))
    assert summary["quarantined_by_reason"] == {"erased_user": 1} and summary["clean"] == 1
    [row] = pq.read_table(lake.staging(root, lake.QUARANTINE_EVENTS, D3)).to_pylist()
    assert (row["raw_line"], row["reason"]) == (lines[0], clean.ERASED_USER)
    identity = pq.read_table(lake.staging(root, lake.IDENTITY_USERS, D3)).to_pylist()
    assert identity == [{"pseudonym": pseudonym("u-new", KEY.encode()), "user_id": "u-new"}]


def test_the_retrain_the_asset_queued_learns_without_them_and_logs_no_id(stack):
    """What train_recommender does with the erasure's Asset event ({"dt": D2}), run here in-process: a new
    version trained on the erased features; the MLflow store still holds neither id nor pseudonym."""
    from models import registry, train
    from tests.privacy_scan import scan

    root, base = stack["root"], stack["base"]
    user = _erased_user(root)
    alias = pseudonym(user, KEY.encode())
    entry = json.loads(next(Path(root, er.LOG_DIR).glob("erasure-*.json")).read_text())
    result = train.run(entry["retrain_features_dt"], stack["settings"])
    assert result["model_version"] == "2"
    version = registry.client(stack["settings"]).get_model_version("attention-recommender", "2")
    assert registry.TRAINED_BEFORE_ERASURE not in version.tags
    assert scan(base, {user, alias}, skip=("data/", "airflow/")) == {}
