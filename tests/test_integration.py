"""The whole chain through Airflow on tiny synthetic data: behavior_etl -> train_recommender -> nightly_candidates.

Each DAG runs with ``airflow dags test`` (which calls ``dag.test()``) in a fresh Airflow home after
``airflow db migrate``, with only AIRFLOW_HOME, ATTNREC_DATA_ROOT and MLFLOW_TRACKING_URI pointing somewhere
new (plus small training/candidate sizes so the test stays quick; epochs, never the wall clock, bound training).
The module's ``airflow dags test`` commands run one after another in one Airflow process
(tests/airflow_runs.py, datatools/airflow_session.py, as the loop runs them: Airflow's own command, its start-up
paid once), each with its own log (in the Airflow home, outside the task logs the id scan reads) and exit code.
Spark jobs go through spark-submit.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow_runs import DagTests, Run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parent.parent
DT = "2026-03-02"
TOP_K = 20


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("chain")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
    env.update(
        AIRFLOW_HOME=str(base / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        ATTNREC_DATA_ROOT=str(base / "data"),
        MLFLOW_TRACKING_URI=f"sqlite:///{base / 'mlflow.db'}",
        ATTNREC_MLFLOW_ARTIFACTS=(base / "mlartifacts").as_uri(),
        ATTNREC_TRAIN_EPOCHS="3",
        ATTNREC_TOP_K=str(TOP_K),
        ATTNREC_SPARK_DRIVER_MEMORY="1g",
    )
    (base / "airflow").mkdir()
    (base / "airflow" / "dags").symlink_to(REPO / "dags")  # Airflow's default dags folder, $AIRFLOW_HOME/dags
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    from datatools.generate import generate

    generate(
        env["ATTNREC_DATA_ROOT"],
        start_dt=DT,
        days=1,
        users=80,
        items=300,
        events_per_day=6000,
        seed=7,
        bad_fraction=0.01,
    )
    runs = DagTests(env)
    _RUNS[env["AIRFLOW_HOME"]] = runs
    yield env
    runs.close()


_RUNS: dict[str, DagTests] = {}  # AIRFLOW_HOME -> the module's Airflow session (one home per module)


def dags_test(env: dict[str, str], dag_id: str, dt: str = DT, *args: str) -> Run:
    """``airflow dags test dag_id dt *args`` in the module's Airflow session, with the ATTNREC_* settings of ``env``."""
    return _RUNS[env["AIRFLOW_HOME"]](env, dag_id, dt, *args)


def assert_ok(proc: Run, dag_id: str) -> None:
    tail = proc.output[-6000:]
    assert proc.returncode == 0 and "DagRun failed" not in tail, f"{dag_id} failed:\n{tail}"


def test_candidates_before_any_training_fail_with_a_clear_message(env):
    proc = dags_test(env, "nightly_candidates")
    assert proc.returncode != 0
    assert "run the train_recommender DAG first" in proc.output


def test_missing_raw_partition_fails_naming_the_path(env):
    proc = dags_test(env, "behavior_etl", "2026-03-05")
    assert proc.returncode != 0
    assert f"{env['ATTNREC_DATA_ROOT']}/raw/events/dt=2026-03-05" in proc.output


def _raw(pseudonym: dict[str, str], alias: str) -> str:
    return next(u for u, p in pseudonym.items() if p == alias)


def test_full_chain_writes_candidates_per_contract(env):
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    from attnrec import lake

    root = env["ATTNREC_DATA_ROOT"]
    assert_ok(dags_test(env, "behavior_etl"), "behavior_etl")
    recon = lake.read_json(lake.join(lake.partition(root, lake.CLEAN_EVENTS, DT), lake.RECONCILIATION_FILE))
    assert recon["raw_lines"] == 6000 == recon["clean"] + recon["quarantined"] + recon["duplicates"]
    assert recon["quarantined"] > 0
    for dataset in (
        lake.CLEAN_EVENTS,
        lake.QUARANTINE_EVENTS,
        lake.FEATURE_SEQUENCES,
        lake.FEATURE_ITEMS,
        lake.FEATURE_ITEM_TEXT,
    ):
        assert lake.is_complete(lake.partition(root, dataset, DT)), dataset
    titled = pq.read_table(lake.partition(root, lake.FEATURE_ITEMS, DT), columns=["title"]).column("title")
    vectors = pq.read_table(lake.partition(root, lake.FEATURE_ITEM_TEXT, DT))
    assert vectors.num_rows == sum(1 for t in titled.to_pylist() if t and t.strip()) > 0

    assert_ok(dags_test(env, "train_recommender"), "train_recommender")
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("attention-recommender", "champion")
    challenger = client.get_model_version_by_alias("attention-recommender", "challenger")
    assert str(champion.version) == str(challenger.version) == "1"
    assert client.get_run(champion.run_id).data.tags["item_text_dim"] == "384"  # the titles reached the model

    assert_ok(dags_test(env, "nightly_candidates"), "nightly_candidates")
    cands = pq.read_table(lake.partition(root, lake.CANDIDATES, DT)).to_pandas()
    assert list(cands.columns) == [
        "user_id", "rank", "item_id", "score", "model_name", "model_version", "arm", "experiment_id"
    ]  # fmt: skip
    assert str(cands["rank"].dtype) == "int32" and str(cands["score"].dtype) == "float32"
    seqs = pq.read_table(lake.partition(root, lake.FEATURE_SEQUENCES, DT)).to_pandas()
    # features carry pseudonyms (the lake's generated key), candidates the raw ids: every user, mapped back
    key = (Path(root) / "_secrets" / "pseudonym.key").read_text().strip().encode()
    pseudonym = {u: hmac.new(key, u.encode(), hashlib.sha256).hexdigest()[:32] for u in cands["user_id"]}
    assert set(pseudonym.values()) == set(seqs["user_id"])
    # seen: every item of a non-impression event in the look-back (only shown is still servable), which covers
    # every such item of the sequence
    seen = {raw: set(row.seen_item_ids) for row in seqs.itertuples() for raw in [_raw(pseudonym, row.user_id)]}
    for row in seqs.itertuples():
        assert {i for i, t in zip(row.item_ids, row.event_types) if t != "impression"} <= seen[
            _raw(pseudonym, row.user_id)
        ]
    for user, group in cands.sort_values(["user_id", "rank"]).groupby("user_id"):
        assert list(group["rank"]) == list(range(1, TOP_K + 1))
        assert group["score"].is_monotonic_decreasing
        assert not set(group["item_id"]) & seen[user], f"seen items recommended to {user}"
        assert group["item_id"].is_unique
    assert set(cands["model_name"]) == {"attention-recommender"} and set(cands["model_version"]) == {"1"}
    assert set(cands["arm"]) == {"control"} and set(cands["experiment_id"]) == {""}  # no experiment runs

    # Where raw ids may live: raw/, quarantine/ (the raw line), candidates/ and identity/users; nowhere else in the
    # lake, the task logs or the model store, which holds no pseudonym either (DESIGN.md "Privacy", issue 14)
    from tests.privacy_scan import scan

    base = Path(env["AIRFLOW_HOME"]).parent
    raw_ids = {f"u{u}" for u in range(200)}  # every user datatools.generate made (u1..u80), and more
    assert set(cands["user_id"]) <= raw_ids and len(pseudonym) > 40
    allowed = ("raw/", "quarantine/", "candidates/", "identity/users/", "_secrets/")
    assert scan(Path(root), raw_ids, skip=allowed) == {}
    pseudonyms = {hmac.new(key, u.encode(), hashlib.sha256).hexdigest()[:32] for u in raw_ids}
    # the scan finds what is there: raw ids in candidates, pseudonyms in clean events
    assert scan(Path(root) / lake.CANDIDATES, raw_ids) and scan(Path(root) / lake.CLEAN_EVENTS, pseudonyms)
    assert scan(Path(env["AIRFLOW_HOME"]) / "logs", raw_ids) == {}
    assert scan(base / "mlartifacts", raw_ids | pseudonyms) == {}
    assert scan(base, raw_ids | pseudonyms, skip=("data/", "airflow/")) == {}  # mlflow.db: params, tags, metrics


def test_a_rerun_re_serves_the_recorded_version_until_told_to_re_resolve(env):
    """After the chain served version 1 for DT, champion moves to version 2: re-running DT serves 1 again (its
    manifest says so); only a run triggered with {"re_resolve": true} serves the new champion."""
    import mlflow
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    from attnrec import lake
    from models.candidates import MANIFEST_FILE

    root = env["ATTNREC_DATA_ROOT"]
    published = lake.partition(root, lake.CANDIDATES, DT)
    assert lake.read_json(lake.join(published, MANIFEST_FILE))["model_version"] == "1"
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])  # registering a models:/ source looks it up there
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    v1 = client.get_model_version("attention-recommender", "1")
    v2 = client.create_model_version("attention-recommender", v1.source, run_id=v1.run_id)
    client.set_registered_model_alias("attention-recommender", "champion", v2.version)
    assert str(v2.version) == "2"

    for conf, served in ((None, "1"), ('{"re_resolve": true}', "2")):
        proc = dags_test(env, "nightly_candidates", DT, *(["--conf", conf] if conf else []))
        assert_ok(proc, f"nightly_candidates conf={conf}")
        assert f"serving model version {served}: " in proc.output  # the task log says which
        assert set(pq.read_table(published).column("model_version").to_pylist()) == {served}
        manifest = lake.read_json(lake.join(published, MANIFEST_FILE))
        assert (manifest["dt"], manifest["model_version"], manifest["model_versions"]) == (
            DT,
            served,
            {"control": served},
        )


def test_an_experiment_serves_the_challenger_to_its_treatment_arm_and_a_rerun_keeps_the_arms(env):
    """After the re-run test, champion is version 2 and challenger version 1 (what training registered). With a
    treatment share, the DAG's plan (through XCom) serves each user from their arm's version, the gate checks the
    arms against the staged manifest, and a plain re-run re-serves the recorded plan although the share is 0 again."""
    import pyarrow.parquet as pq

    from attnrec import experiments, lake
    from models.candidates import MANIFEST_FILE

    root = env["ATTNREC_DATA_ROOT"]
    published = lake.partition(root, lake.CANDIDATES, DT)
    ab = {**env, "ATTNREC_AB_TREATMENT_SHARE": "0.5", "ATTNREC_AB_EXPERIMENT_ID": "chain-ab"}
    proc = dags_test(ab, "nightly_candidates", DT, "--conf", '{"re_resolve": true}')
    assert_ok(proc, "nightly_candidates with an experiment")
    assert (
        "serving model version 2 to control and 1 to treatment (experiment chain-ab, treatment share 0.5): "
        in proc.output
    )
    plan = {"model_versions": {"control": "2", "treatment": "1"}, "experiment_id": "chain-ab", "treatment_share": 0.5}
    manifest = lake.read_json(lake.join(published, MANIFEST_FILE))
    assert {k: manifest[k] for k in plan} == plan
    cands = pq.read_table(published).to_pandas()
    arms = cands["user_id"].map(lambda u: experiments.arm("chain-ab", u, 0.5))
    assert (cands["arm"] == arms).all() and set(arms) == {"control", "treatment"}
    assert (cands["model_version"] == cands["arm"].map({"control": "2", "treatment": "1"})).all()
    assert set(cands["experiment_id"]) == {"chain-ab"}

    proc = dags_test(env, "nightly_candidates", DT)  # no experiment in the settings now: the recorded plan stays
    assert_ok(proc, "nightly_candidates re-run")
    assert "re-serving the plan recorded in the published candidates" in proc.output
    assert {k: lake.read_json(lake.join(published, MANIFEST_FILE))[k] for k in plan} == plan
    assert pq.read_table(published).to_pandas().equals(cands)
