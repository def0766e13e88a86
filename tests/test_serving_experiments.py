"""A/B experiments on the serving side, on a real MLflow registry (SQLite in tmp_path) and a tiny lake: each user is
served by their arm's version (attnrec.experiments.arm), the plan is resolved once and recorded, a re-run re-serves
it, the candidates gate accepts what is served and refuses a wrong arm or version; under
ATTNREC_PROMOTION_RULE=online training aliases 'challenger' and leaves 'champion'."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from attnrec import experiments, lake
from attnrec.settings import get_settings
from tests.test_models_pipeline import DT, N_USERS
from tests.test_serving import env, log_and_register, untrained  # noqa: F401  (env is a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

EXPERIMENT = "ranker-test"
ROW = ["user_id", "rank", "item_id", "score"]


def staged_frame(settings) -> pd.DataFrame:
    return pd.read_parquet(lake.staging(settings.data_root, lake.CANDIDATES, DT)).sort_values(["user_id", "rank"])


def served(settings, plan: dict) -> pd.DataFrame:
    from models import candidates

    candidates.run(DT, settings, plan=plan)
    return staged_frame(settings)


def add_serving_columns(root: str) -> None:
    """Give the tiny features what featurize writes and the candidates gate checks against: items ``available``
    (all but the last item), sequences ``seen_item_ids`` (the items of the user's non-impression events)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    items_path = f"{lake.partition(root, lake.FEATURE_ITEMS, DT)}/part-00000.parquet"
    items = pq.read_table(items_path)
    pq.write_table(items.append_column("available", pa.array([True] * (items.num_rows - 1) + [False])), items_path)
    seqs_path = f"{lake.partition(root, lake.FEATURE_SEQUENCES, DT)}/part-00000.parquet"
    seqs = pq.read_table(seqs_path)
    seen = [
        sorted({i for i, t in zip(row["item_ids"], row["event_types"]) if t != "impression"})
        for row in seqs.to_pylist()
    ]
    pq.write_table(seqs.append_column("seen_item_ids", pa.array(seen, pa.list_(pa.string()))), seqs_path)
    assert pc.sum(pc.list_value_length(pq.read_table(seqs_path).column("seen_item_ids"))).as_py() > 0


@pytest.fixture()
def two_versions(env, tmp_path):  # noqa: F811
    """Version 1 (champion) and version 2 (challenger): untrained models of different seeds, so their lists differ."""
    from models import registry

    add_serving_columns(env.data_root)

    v1 = log_and_register(env, untrained(env, seed=1), tmp_path)
    v2 = log_and_register(env, untrained(env, seed=2), tmp_path)
    registry.promote(env, v1, reason="test")
    assert (registry.alias_version(env, "champion"), registry.alias_version(env, "challenger")) == (v1, v2)
    return v1, v2


def test_each_arm_is_served_by_its_version_and_a_rerun_re_serves_the_recorded_plan(env, two_versions):  # noqa: F811
    from expectations.runner import validate_candidates
    from models import candidates, registry
    from models.serving_plan import no_experiment, recorded_plan, resolve_plan

    v1, v2 = two_versions
    ab = get_settings(ab_treatment_share=0.5, ab_experiment_id=EXPERIMENT)
    plan, why = resolve_plan(DT, ab)
    assert plan == {"control": v1, "treatment": v2, "experiment_id": EXPERIMENT, "treatment_share": 0.5}
    assert "'challenger' at version 2" in why and "treatment share 0.5 from ATTNREC_AB_TREATMENT_SHARE" in why

    # what each version alone serves everyone (no experiment: all control, empty experiment_id)
    alone = {v: served(env, no_experiment(v)) for v in (v1, v2)}
    for v, frame in alone.items():
        assert set(frame["arm"]) == {"control"} and set(frame["experiment_id"]) == {""}
        assert set(frame["model_version"]) == {v}

    result = candidates.run(DT, ab, plan=plan)
    frame = staged_frame(env)
    arm_of = {u: experiments.arm(EXPERIMENT, u, 0.5) for u in frame["user_id"].unique()}
    assert frame.groupby("user_id")["arm"].nunique().max() == 1
    assert (frame["arm"] == frame["user_id"].map(arm_of)).all()
    treated = sorted(u for u, a in arm_of.items() if a == "treatment")
    assert 0 < len(treated) < N_USERS and result["users_by_arm"] == {"control": N_USERS - len(treated),
                                                                     "treatment": len(treated)}  # fmt: skip
    assert (frame["model_version"] == frame["arm"].map({"control": v1, "treatment": v2})).all()
    assert set(frame["experiment_id"]) == {EXPERIMENT}
    # each user's rows are exactly what their arm's version serves alone; the two versions' lists differ
    for arm, version in (("control", v1), ("treatment", v2)):
        mine = frame[frame["arm"] == arm][ROW].reset_index(drop=True)
        expected = alone[version][alone[version]["user_id"].isin(mine["user_id"])][ROW].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, expected)
    other = alone[v1][alone[v1]["user_id"].isin(treated)][ROW].reset_index(drop=True)
    assert not other.equals(frame[frame["arm"] == "treatment"][ROW].reset_index(drop=True))

    manifest = lake.read_json(lake.join(result["path"], candidates.MANIFEST_FILE))
    assert {k: manifest[k] for k in ("model_version", "model_versions", "experiment_id", "treatment_share")} == {
        "model_version": v1,
        "model_versions": {"control": v1, "treatment": v2},
        "experiment_id": EXPERIMENT,
        "treatment_share": 0.5,
    }
    assert validate_candidates(frame, DT, env)["success"]  # the staged manifest's plan
    lake.publish(env.data_root, lake.CANDIDATES, DT)
    assert recorded_plan(env.data_root, DT) == plan
    from attnrec.cli import summary_lines

    assert summary_lines(DT)[0].endswith(
        f"({len(frame)} rows, {N_USERS} users, model version 1 to control and 2 to treatment (experiment "
        f"{EXPERIMENT}, treatment share 0.5))"
    )

    # a re-run of DT re-serves the recorded plan, whatever the settings and aliases say now; re_resolve does not
    registry.promote(env, v2, reason="champion moves")
    assert resolve_plan(DT, env)[0] == plan  # env: share 0 now
    assert resolve_plan(DT, env, re_resolve=True)[0] == no_experiment(v2)
    assert candidates.run(DT, env)["users_by_arm"] == result["users_by_arm"]
    pd.testing.assert_frame_equal(staged_frame(env), frame)


def test_a_missing_challenger_fails_naming_the_fix_and_one_equal_to_the_champion_is_a_warning(
    env,  # noqa: F811
    two_versions,
    caplog,
):
    from typer.testing import CliRunner

    from attnrec.cli import app
    from models import candidates, registry
    from models.serving_plan import resolve_plan

    v1, _ = two_versions
    ab = get_settings(ab_treatment_share=0.25, ab_experiment_id=EXPERIMENT)
    registry.client(env).delete_registered_model_alias(env.model_name, "challenger")
    expected = (
        f"experiment '{EXPERIMENT}' has treatment share 0.25 (from ATTNREC_AB_TREATMENT_SHARE) but model "
        f"'attention-recommender' has no 'challenger' version in the MLflow registry at {env.mlflow_tracking_uri} "
        "to serve the treatment arm. Train one with ATTNREC_PROMOTION_RULE=online (train_recommender then aliases "
        "it 'challenger' and leaves 'champion'), or point the alias at an existing version: `attnrec registry "
        "promote --alias challenger --version N`; or set ATTNREC_AB_TREATMENT_SHARE=0 to serve everyone the champion"
    )
    with pytest.raises(RuntimeError) as err:
        resolve_plan(DT, ab)
    assert str(err.value) == expected
    with pytest.raises(RuntimeError, match="has no 'challenger' version"):
        candidates.run(DT, ab)
    assert not lake.exists(lake.staging(env.data_root, lake.CANDIDATES, DT))
    assert resolve_plan(DT, env)[0]["control"] == v1  # no experiment: no challenger needed

    promoted = CliRunner().invoke(
        app, ["registry", "promote", "--alias", "challenger", "--version", v1, "--reason", "an A/A test"]
    )
    assert promoted.exit_code == 0, promoted.output
    tags = registry.client(env).get_model_version(env.model_name, v1).tags
    assert (tags["challenger_decision"], tags["challenger_reason"]) == ("forced", "an A/A test (challenger was none)")
    assert tags["promotion_decision"] == "forced"  # the champion's record stays
    with caplog.at_level(logging.WARNING, logger="models.serving_plan"):
        plan, _ = resolve_plan(DT, ab)
    assert plan["control"] == plan["treatment"] == v1
    assert "'challenger' and 'champion' both point at version 1" in caplog.text
    with pytest.raises(ValueError, match="alias 'winner' is not one attnrec serves; use 'champion' or 'challenger'"):
        registry.promote(env, v1, alias="winner")


def test_online_rule_aliases_challenger_and_leaves_champion(env, tmp_path):  # noqa: F811
    from models import registry

    online = get_settings(promotion_rule="online")

    def train(seed: int, ndcg: float) -> tuple[str, bool, str]:
        version = log_and_register(online, untrained(online, seed=seed), tmp_path)
        return (version, *registry.gate(online, version, ndcg, [], DT))

    v1, promoted, reason = train(1, 0.1)  # no champion yet: something must serve
    assert promoted and reason.startswith("no champion yet; promoted without a comparison")
    assert registry.alias_version(env, "champion") == registry.alias_version(env, "challenger") == v1
    v2, promoted, reason = train(2, 0.9)  # far better offline: still only the challenger
    assert not promoted
    assert reason == (
        "ATTNREC_PROMOTION_RULE=online: registered as 'challenger' for an online experiment, not compared offline; "
        "champion v1 kept until kpi_report promotes on online results (validation NDCG@10 0.9000)"
    )
    assert (registry.alias_version(env, "champion"), registry.alias_version(env, "challenger")) == (v1, v2)
    mv2 = registry.client(env).get_model_version(env.model_name, v2)
    assert mv2.description == reason
    assert {k: mv2.tags[k] for k in ("promotion_decision", "promotion_holdout", "champion_before", "holdout_dt")} == {
        "promotion_decision": "challenger",
        "promotion_holdout": "none",
        "champion_before": v1,
        "holdout_dt": DT,
    }
    assert registry.client(env).get_model_version(env.model_name, v1).tags["promotion_decision"] == "promoted"
