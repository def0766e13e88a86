"""jobs/kpis.py and models/online.py on a hand-built day: every figure computed by hand below.

The day D = 2026-05-10: eight users served by experiment ``exp1`` (control v1, treatment v2), their next-day clean
events (D+1), and one day later (D+2) two more events outside the default one-day window.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attnrec import lake

D, D1, D2 = "2026-05-10", "2026-05-11", "2026-05-12"
Z = 1.959963984540054

ITEMS = [f"i{n:02d}" for n in range(1, 14)]
CATEGORIES = {"i01": ["a"], "i02": ["b"], "i03": ["a", "b"], "i04": ["c"], "i05": ["c"], "i06": []}
POPULARITY = {"i01": 20, "i02": 10, "i03": 5, "i04": 5}  # the rest 0: 40 events over 13 items
LISTS = {  # user -> (arm, model version, served items in rank order)
    "c1": ("control", "1", ITEMS[:11]),  # 11 items: rank 11 is outside the top-10
    "c2": ("control", "1", ["i01", "i02", "i03"]),
    "c3": ("control", "1", ["i04", "i05"]),
    "c4": ("control", "1", ["i01", "i05"]),  # no event in the window: inactive
    "t1": ("treatment", "2", ["i12", *ITEMS[:8]]),
    "t2": ("treatment", "2", ["i03", "i04"]),
    "t3": ("treatment", "2", ["i05", "i06"]),
    "t4": ("treatment", "2", ["i07"]),  # inactive in the window; one item: no pair for diversity
}
EVENTS_D1 = [
    ("c1", "i11", "click"),  # positive on rank 11: a hit in the whole list, not in the top-10
    ("c1", "i11", "impression"),
    ("c1", "i01", "impression"),
    ("c2", "i02", "view"),  # positive on rank 2
    ("c2", "i02", "purchase"),
    ("c2", "i03", "dislike"),  # negative: no hit
    ("c3", "i04", "impression"),
    ("c3", "i05", "skip"),  # exposure: no hit
    ("c3", "i12", "click"),  # not on c3's list: counts for nothing but activity
    ("t1", "i12", "click"),
    ("t1", "i12", "impression"),
    ("t2", "i04", "purchase"),
    ("t2", "i03", "impression"),
    ("t2", "i04", "impression"),
    ("t2", "i03", "click"),
    ("t3", "i05", "dislike"),
    ("x9", "i01", "click"),  # a user who was served nothing
]
EVENTS_D2 = [("t4", "i07", "click"), ("c4", "i01", "purchase")]


def write(root: str, dataset: str, dt: str, table: pa.Table, manifest: dict | None = None) -> None:
    path = Path(lake.partition(root, dataset, dt))
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-00000.parquet")
    if manifest is not None:
        (path / "_manifest.json").write_text(json.dumps(manifest))
    (path / lake.SUCCESS_MARKER).write_text("")


def candidates(with_arms: bool = True) -> pa.Table:
    rows = [
        (user, rank, item, 1.0 - rank / 100, version, arm)
        for user, (arm, version, items) in LISTS.items()
        for rank, item in enumerate(items, start=1)
    ]
    columns = {
        "user_id": pa.array([r[0] for r in rows]),
        "rank": pa.array([r[1] for r in rows], pa.int32()),
        "item_id": pa.array([r[2] for r in rows]),
        "score": pa.array([r[3] for r in rows], pa.float32()),
        "model_name": pa.array(["attention-recommender"] * len(rows)),
        "model_version": pa.array([r[4] for r in rows] if with_arms else ["1"] * len(rows)),
    }
    if with_arms:
        columns["arm"] = pa.array([r[5] for r in rows])
        columns["experiment_id"] = pa.array(["exp1"] * len(rows))
    return pa.table(columns)


#: The lake's pseudonym key in these tests (never a real one): clean events carry pseudonyms, candidates raw ids.
TEST_KEY = "0123456789abcdef0123456789abcdef-kpis-test-key"


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch):
    monkeypatch.setenv("ATTNREC_PSEUDONYM_KEY", TEST_KEY)


def events(day: str, rows: list[tuple[str, str, str]]) -> pa.Table:
    import hashlib
    import hmac

    def pseudonym(user: str) -> str:  # the contract, computed here rather than by the code under test
        return hmac.new(TEST_KEY.encode(), user.encode(), hashlib.sha256).hexdigest()[:32]

    return pa.table(
        {
            "event_id": [f"{day}-{n}" for n in range(len(rows))],
            "user_id": [pseudonym(r[0]) for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "event_time_ms": pa.array([1_778_500_000_000 + n for n in range(len(rows))], pa.int64()),
        }
    )


def build_lake(root: str, with_arms: bool = True, outcome_days: tuple[str, ...] = (D1, D2)) -> None:
    manifest = {"model_versions": {"control": "1", "treatment": "2"}, "experiment_id": "exp1", "treatment_share": 0.5}
    write(root, lake.CANDIDATES, D, candidates(with_arms), manifest if with_arms else None)
    items = pa.table(
        {
            "item_idx": pa.array(range(1, 14), pa.int32()),
            "item_id": ITEMS,
            "categories": pa.array([CATEGORIES.get(i, ["a"] if i != "i13" else ["b"]) for i in ITEMS]),
            "popularity": pa.array([POPULARITY.get(i, 0) for i in ITEMS], pa.int64()),
            "available": [i != "i13" for i in ITEMS],  # i13 retired: not in the catalogue that coverage counts
        }
    )
    write(root, lake.FEATURE_ITEMS, D, items)
    for day, rows in ((D1, EVENTS_D1), (D2, EVENTS_D2)):
        if day in outcome_days:
            write(root, lake.CLEAN_EVENTS, day, events(day, rows))


def log2(x: float) -> float:
    return math.log(x, 2)


#: By hand. Control: users c1..c4, active c1, c2, c3; impressions c1 i11, c1 i01, c3 i04; clicks c1 i11 (c3's click is
#: off its list); top-10 hit c2; whole-list hits c1, c2; purchase c2. Treatment: active t1, t2, t3; impressions t1 i12,
#: t2 i03, t2 i04; clicks t1 i12, t2 i03; hits t1, t2 (both in the top-10); purchase t2.
#: Coverage: control serves i01..i11, treatment i01..i08 and i12, of 12 available items.
#: Novelty: share = (popularity + 1) / (40 + 13). Control's 18 rows: i01 x3, i02 x2, i03 x2, i04 x2, nine rows of
#: popularity 0; treatment's 14 rows: i01, i02, i03 x2, i04 x2, eight rows of popularity 0.
#: Diversity (pairs with disjoint categories in the top-10): c1 i01..i10: 45 pairs, 15 share a, 1 b, 1 c -> 28/45;
#: c2 (a, b, ab) 1/3; c3 (c, c) 0; c4 (a, c) 1. t1 (i12, i01..i08): 36 pairs, 10 share a, 1 b, 1 c -> 24/36;
#: t2 (ab, c) 1; t3 (c, none) 1; t4 has one item and is left out.
EXPECTED = {
    "control": {
        "experiment_id": "exp1",
        "arm": "control",
        "model_version": "1",
        "users": 4,
        "active_users": 3,
        "impressions": 3,
        "clicks": 1,
        "ctr": 1 / 3,
        "hit_rate_at_10": 1 / 3,
        "hit_rate_at_k": 2 / 3,
        "conversion": 1 / 3,
        "hit_rate_at_10_ci_low": (1 / 3 + Z**2 / 6 - Z * math.sqrt(1 / 3 * 2 / 3 / 3 + Z**2 / 36)) / (1 + Z**2 / 3),
        "hit_rate_at_10_ci_high": (1 / 3 + Z**2 / 6 + Z * math.sqrt(1 / 3 * 2 / 3 / 3 + Z**2 / 36)) / (1 + Z**2 / 3),
        "lift_hit_rate_at_10": None,
        "p_value": None,
        "coverage": 11 / 12,
        "novelty": (3 * log2(53 / 21) + 2 * log2(53 / 11) + 4 * log2(53 / 6) + 9 * log2(53)) / 18,
        "intra_list_diversity": (28 / 45 + 1 / 3 + 0 + 1) / 4,
    },
    "treatment": {
        "experiment_id": "exp1",
        "arm": "treatment",
        "model_version": "2",
        "users": 4,
        "active_users": 3,
        "impressions": 3,
        "clicks": 2,
        "ctr": 2 / 3,
        "hit_rate_at_10": 2 / 3,
        "hit_rate_at_k": 2 / 3,
        "conversion": 1 / 3,
        "hit_rate_at_10_ci_low": (2 / 3 + Z**2 / 6 - Z * math.sqrt(2 / 3 * 1 / 3 / 3 + Z**2 / 36)) / (1 + Z**2 / 3),
        "hit_rate_at_10_ci_high": (2 / 3 + Z**2 / 6 + Z * math.sqrt(2 / 3 * 1 / 3 / 3 + Z**2 / 36)) / (1 + Z**2 / 3),
        "lift_hit_rate_at_10": (2 / 3) / (1 / 3) - 1,
        # pooled rate 3/6; z = (2/3 - 1/3) / sqrt(0.5 * 0.5 * (1/3 + 1/3)); one-sided P(Z >= z)
        "p_value": 0.5 * math.erfc((1 / 3) / math.sqrt(0.25 * (2 / 3)) / math.sqrt(2)),
        "coverage": 9 / 12,
        "novelty": (log2(53 / 21) + log2(53 / 11) + 4 * log2(53 / 6) + 8 * log2(53)) / 14,
        "intra_list_diversity": (24 / 36 + 1 + 1) / 3,
    },
}


def assert_row(row: dict, expected: dict) -> None:
    assert set(row) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float):
            assert row[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert row[key] == value, key


def test_kpis_of_a_hand_built_day_and_a_rerun_gives_identical_rows(spark, tmp_path):
    from attnrec.contracts import KPI_COLUMNS
    from attnrec.settings import get_settings
    from jobs import kpis

    root = str(tmp_path / "data")
    build_lake(root)
    result = kpis.run(spark, root, kpis.KpiParams(dt=D))
    assert result["outcome_days"] == [D1]
    control, treatment = result["rows"]
    assert_row(control, EXPECTED["control"])
    assert_row(treatment, EXPECTED["treatment"])
    assert pq.read_table(result["path"]).schema.names == [name for name, _ in KPI_COLUMNS]
    manifest = lake.read_json(lake.join(result["path"], kpis.MANIFEST_FILE))
    assert manifest["outcome_days"] == [D1] and manifest["candidates"]["model_versions"]["treatment"] == "2"
    assert not lake.exists(kpis.work_dir(root, D))  # the served users' identity table, made on the driver, removed

    settings = get_settings(data_root=root)
    assert kpis.gate_and_publish(settings, D) == 0
    published = lake.partition(root, lake.KPIS, D)
    first = pq.read_table(published).to_pylist()
    kpis.run(spark, root, kpis.KpiParams(dt=D))  # a re-run of D
    assert kpis.gate_and_publish(settings, D) == 0
    assert pq.read_table(published).to_pylist() == first  # identical rows, exactly
    assert lake.list_partitions(root, lake.KPIS) == [D]


def test_a_longer_horizon_reads_the_later_day_and_old_candidates_count_as_control(spark, tmp_path):
    from jobs import kpis

    root = str(tmp_path / "data")
    build_lake(root, with_arms=False)
    # two days: c4 (purchase of i01, rank 1) and t4 (click on i07, rank 1) become active with a top-10 hit
    [row] = kpis.run(spark, root, kpis.KpiParams(dt=D, horizon_days=2))["rows"]
    assert (row["experiment_id"], row["arm"], row["model_version"]) == ("", "control", "1")
    assert (row["users"], row["active_users"], row["impressions"], row["clicks"]) == (
        8,
        8,
        6,
        4,
    )  # and t4's click on i07
    assert row["hit_rate_at_10"] == pytest.approx(5 / 8)  # c2, t1, t2, c4, t4
    assert row["hit_rate_at_k"] == pytest.approx(6 / 8)  # and c1
    assert row["conversion"] == pytest.approx(3 / 8)  # c2, t2, c4
    assert row["lift_hit_rate_at_10"] is None and row["p_value"] is None
    assert row["coverage"] == pytest.approx(12 / 12)


def test_a_missing_outcome_day_is_named(spark, tmp_path):
    from jobs import kpis

    root = str(tmp_path / "data")
    build_lake(root, outcome_days=())
    missing = lake.partition(root, lake.CLEAN_EVENTS, D1)
    assert kpis.missing_inputs(root, kpis.KpiParams(dt=D)) == [missing]
    with pytest.raises(FileNotFoundError, match=f"{missing} not published"):
        kpis.run(spark, root, kpis.KpiParams(dt=D))


def test_the_kpis_gate_fails_on_a_broken_row(tmp_path):
    import pandas as pd

    from attnrec.settings import get_settings
    from expectations.runner import GateFailed, validate_kpis

    good = pd.DataFrame([EXPECTED["control"], EXPECTED["treatment"]])
    settings = get_settings(data_root=str(tmp_path))
    assert validate_kpis(good, D, settings)["success"]
    bad = good.copy()
    bad.loc[0, "active_users"] = 5  # more active users than users
    bad.loc[0, "p_value"] = 0.5  # a p-value on the control row
    with pytest.raises(GateFailed) as failed:
        validate_kpis(bad, D, settings)
    message = str(failed.value)
    assert "2 of" in message and "column_A=users column_B=active_users" in message and "column=p_value" in message


# ------------------------------------------------------------------------------------------ bandit allocation


def test_thompson_share_is_the_exact_posterior_probability_clipped():
    from models.online import prob_beats, thompson_share

    assert prob_beats(1, 1, 1, 1) == pytest.approx(0.5)
    # X ~ Beta(2, 1) (density 2x), Y uniform: P(X > Y) = integral of 2x * x over [0, 1] = 2/3
    assert prob_beats(2, 1, 1, 1) == pytest.approx(2 / 3)
    assert prob_beats(1, 1, 2, 1) == pytest.approx(1 / 3)
    # X ~ Beta(3, 1) (density 3x^2), Y ~ Beta(1, 2) (cdf 1 - (1 - y)^2): integral of 3x^2 (2x - x^2) = 3/2 - 3/5
    assert prob_beats(3, 1, 1, 2) == pytest.approx(1.5 - 0.6)
    share, p, posterior = thompson_share({"treatment": 1, "control": 0}, {"treatment": 1, "control": 0}, 0.05)
    assert (share, posterior) == (
        pytest.approx(2 / 3),
        {"control": {"alpha": 1, "beta": 1}, "treatment": {"alpha": 2, "beta": 1}},
    )
    share, p, _ = thompson_share({"treatment": 90, "control": 10}, {"treatment": 100, "control": 100}, 0.05)
    assert p > 0.999 and share == 0.95  # clipped to 1 - ATTNREC_AB_MIN_SHARE
    share, p, _ = thompson_share({"treatment": 10, "control": 90}, {"treatment": 100, "control": 100}, 0.1)
    assert p < 0.001 and share == 0.1


def test_allocation_sums_the_experiments_days_so_far(tmp_path):
    import pandas as pd

    from attnrec import experiments
    from attnrec.settings import get_settings
    from models.online import allocate

    root = str(tmp_path)
    for day, (t_hits, c_hits) in {"2026-05-08": (1, 0), "2026-05-09": (1, 1), "2026-05-10": (0, 0)}.items():
        rows = [
            {**EXPECTED["control"], "active_users": 1, "hit_rate_at_10": float(c_hits)},
            {**EXPECTED["treatment"], "active_users": 1, "hit_rate_at_10": float(t_hits)},
        ]
        write(root, lake.KPIS, day, pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False))
    settings = get_settings(
        data_root=root, ab_allocation="thompson", ab_experiment_id="exp1", ab_treatment_share=0.5, ab_min_share=0.05
    )
    payload = allocate(settings, "2026-05-09")  # days 08 and 09: treatment 2 hits of 2, control 1 of 2
    assert payload["kpi_days"] == ["2026-05-08", "2026-05-09"]
    assert payload["posterior"] == {"control": {"alpha": 2, "beta": 2}, "treatment": {"alpha": 3, "beta": 1}}
    # X ~ Beta(3, 1) (density 3x^2), Y ~ Beta(2, 2) (cdf 3y^2 - 2y^3): integral of 3x^2 (3x^2 - 2x^3) = 9/5 - 1
    assert payload["treatment_share"] == pytest.approx(0.8)
    assert experiments.allocation(root, "2026-05-10", settings)["treatment_share"] == pytest.approx(0.8)
    assert allocate(get_settings(data_root=root, ab_experiment_id="exp1", ab_treatment_share=0.5), D) is None  # fixed


# -------------------------------------------------------------------------------------------- MLflow, promotion


@pytest.fixture
def registry(tmp_path):
    """A real sqlite MLflow registry with versions 1 (champion) and 2 of attention-recommender."""
    from mlflow import MlflowClient

    from attnrec.settings import get_settings

    settings = get_settings(
        data_root=str(tmp_path / "data"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifact_root=(tmp_path / "artifacts").as_uri(),
    )
    c = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    c.create_registered_model(settings.model_name)
    for _ in range(2):
        c.create_model_version(settings.model_name, source=(tmp_path / "model").as_uri())
    c.set_registered_model_alias(settings.model_name, "champion", "1")
    return settings, c


def kpi_day(root: str, control_active: int, control_hits: int, treatment_active: int, treatment_hits: int) -> None:
    from jobs.kpis import statistics

    def counts(arm: str, version: str, active: int, hits: int) -> dict:
        return {
            "experiment_id": "exp1", "arm": arm, "model_version": version, "users": active, "active_users": active,
            "impressions": 0, "clicks": 0, "hits_at_10": hits, "hits_at_k": hits, "converted": 0, "items_served": 1,
            "catalogue": 10, "served_rows": 1, "self_information": 1.0, "diverse_users": 0, "diversity": None,
        }  # fmt: skip

    rows = statistics(
        [
            counts("control", "1", control_active, control_hits),
            counts("treatment", "2", treatment_active, treatment_hits),
        ]
    )
    write(root, lake.KPIS, D, pa.Table.from_pylist(rows))


def test_online_promotion_needs_significance_and_enough_users(registry):
    from models.online import promote_online

    settings, c = registry
    online = settings.model_copy(update={"promotion_rule": "online", "ab_min_users": 100, "ab_alpha": 0.05})
    # 60 of 200 vs 40 of 200: z = 0.1 / sqrt(0.25 * 0.75 * 0.01) = 2.3094, p = 0.0105
    kpi_day(settings.data_root, 200, 40, 200, 60)
    assert promote_online(settings, D) is None  # offline rule: kpi_report never moves champion
    assert c.get_registered_model(settings.model_name).aliases["champion"] == 1

    strict = online.model_copy(update={"ab_alpha": 0.01})
    result = promote_online(strict, D)
    assert (result["decision"], result["promoted"]) == ("rejected", False)
    assert c.get_registered_model(settings.model_name).aliases["champion"] == 1
    few = online.model_copy(update={"ab_min_users": 201})
    assert promote_online(few, D)["decision"] == "too_few_users"

    result = promote_online(online, D)
    assert (result["decision"], result["promoted"], result["champion_before"]) == ("promoted", True, "1")
    assert c.get_registered_model(settings.model_name).aliases["champion"] == 2
    tags = c.get_model_version(settings.model_name, "2").tags
    assert tags["promotion_decision"] == "promoted" and tags["promotion_rule"] == "online"
    assert float(tags["online_p_value"]) == pytest.approx(0.5 * math.erfc(2.3094010767585 / math.sqrt(2)))
    assert float(tags["online_lift_hit_rate_at_10"]) == pytest.approx(0.5)
    assert (tags["online_active_users_treatment"], tags["online_active_users_control"]) == ("200", "200")
    assert promote_online(online, D)["decision"] == "already_champion"  # a re-run changes nothing


def test_a_registry_outage_never_promotes(registry, monkeypatch):
    from models.online import promote_online

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once: nothing listens on port 9

    settings, c = registry
    kpi_day(settings.data_root, 200, 40, 200, 60)
    down = settings.model_copy(
        update={"promotion_rule": "online", "mlflow_tracking_uri": "http://127.0.0.1:9", "ab_min_users": 1}
    )
    with pytest.raises(RuntimeError, match="nothing was promoted"):
        promote_online(down, D)
    assert c.get_registered_model(settings.model_name).aliases["champion"] == 1


def test_mlflow_logs_one_run_per_day_and_tags_the_versions(registry):
    import mlflow

    from models.online import log_day, online_experiment

    settings, c = registry
    kpi_day(settings.data_root, 200, 40, 200, 60)
    first = log_day(settings, D)
    second = log_day(settings, D)  # a re-run of D replaces D's run
    experiment = c.get_experiment_by_name(online_experiment(settings))
    runs = c.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [second["run_id"]] != [first["run_id"]]
    run = runs[0]
    assert run.data.tags["kpi_dt"] == D
    assert (run.data.tags["model_version_control"], run.data.tags["model_version_treatment"]) == ("1", "2")
    assert run.data.metrics["treatment_hit_rate_at_10"] == pytest.approx(0.3)
    assert run.data.metrics["control_active_users"] == 200
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/hit_rate_at_10.png"}
    assert second["versions_tagged"] == ["1", "2"]
    tags = c.get_model_version(settings.model_name, "2").tags
    assert (tags["online_kpi_dt"], tags["online_arm"], float(tags["online_hit_rate_at_10"])) == (D, "treatment", 0.3)
