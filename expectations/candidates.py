"""The candidates gate: the ``candidates`` suite, then what a suite cannot see: the rows against the day's features
and against the serving plan.

:func:`check_candidates` reads the published features of the day (every item available, no item the user has
seen, scores non-increasing with rank on the whole partition) and the staged ``_manifest.json`` (each user's
arm is the one :func:`attnrec.experiments.arm` gives, each arm's rows carry its version);
:func:`validate_candidates` runs the suite and then these checks. Failures raise
:class:`expectations.runner.GateFailed` naming counts, examples and the fix.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from attnrec import lake
from attnrec.contracts import check_dt
from attnrec.identity import load_identity, raw_user_ids
from expectations.runner import GateFailed, validate_pandas

if TYPE_CHECKING:
    from attnrec.settings import Settings

log = logging.getLogger(__name__)

_SHOWN = 5


def _features_table(root: str, dataset: str, dt: str, columns: list[str]):
    """``columns`` of the published features partition ``dataset`` for ``dt`` as an Arrow table; GateFailed
    naming the fix when the partition or a column is missing."""
    import pyarrow.dataset as ds

    path = lake.partition(root, dataset, dt)
    if not lake.is_complete(path):
        raise GateFailed(
            f"candidates gate FAILED for dt={dt}: {dataset} is not published at {path}; the gate checks the "
            f"candidates against it. Run behavior_etl for {dt} first"
        )
    filesystem, base = lake.filesystem_for(path)
    data = ds.dataset(base, format="parquet", filesystem=filesystem)
    missing = [c for c in columns if c not in data.schema.names]
    if missing:
        raise GateFailed(
            f"candidates gate FAILED for dt={dt}: {path} lacks {missing} (written by featurize since items carry "
            f"`available` and sequences `seen_item_ids`); re-run behavior_etl for {dt}, then nightly_candidates"
        )
    return data.to_table(columns=columns)


#: The keys of a candidates ``_manifest.json`` the arm checks read (models/serving_plan.py writes them).
_PLAN_KEYS = ("model_versions", "experiment_id", "treatment_share")


def staged_manifest(dt: str, settings: Settings) -> dict:
    """The ``_manifest.json`` of the staged candidates of ``dt`` (what nightly_candidates' generate wrote);
    GateFailed naming the fix when there is none."""
    uri = lake.join(lake.staging(settings.data_root, lake.CANDIDATES, dt), lake.CANDIDATES_MANIFEST)
    if not lake.exists(uri):
        raise GateFailed(
            f"candidates gate FAILED for dt={dt}: no {uri}; models/candidates.py writes the serving plan there "
            f"beside the rows. Re-run nightly_candidates (or `attnrec candidates --dt {dt}`) for {dt}"
        )
    return lake.read_json(uri)


def _plan_failures(frame, manifest: dict, dt: str) -> list[str]:
    """The arm checks of :func:`check_candidates` against the serving plan the manifest records."""
    from attnrec import experiments
    from attnrec.contracts import ARMS, CONTROL

    missing = [k for k in _PLAN_KEYS if k not in manifest]
    if missing:
        return [
            f"the candidates manifest lacks {missing} (written before A/B experiments); re-run nightly_candidates "
            f"for {dt} so it records the serving plan"
        ]
    versions, experiment_id = manifest["model_versions"], manifest["experiment_id"]
    share = float(manifest["treatment_share"])
    failures: list[str] = []
    if (experiment_id == "") != (share <= 0) or CONTROL not in versions or (share > 0) != (len(versions) == 2):
        failures.append(
            f"the manifest's plan is inconsistent: experiment_id {experiment_id!r}, treatment_share {share}, "
            f"model_versions {versions}; experiment_id is empty and only control is served exactly when the share is "
            "0. models/candidates.py writes it from models.serving_plan.check_plan"
        )
    other = frame[frame["experiment_id"] != experiment_id]
    if len(other):
        failures.append(
            f"{len(other)} rows carry experiment_id other than the manifest's {experiment_id!r}, e.g. "
            f"{sorted(set(other['experiment_id'].tolist()))[:_SHOWN]}; every row of a day carries the day's experiment"
        )
    per_user = frame.groupby("user_id", sort=True)["arm"].agg(["nunique", "first"])
    mixed = per_user[per_user["nunique"] > 1]
    if len(mixed):
        failures.append(
            f"{len(mixed)} users have rows of more than one arm, e.g. {mixed.index.tolist()[:_SHOWN]}; a user is in "
            "one arm (attnrec.experiments.arm)"
        )
    single = per_user[per_user["nunique"] == 1]
    expected = experiments.arms(experiment_id, single.index.tolist(), share)
    wrong = single[single["first"].to_numpy() != expected]
    if len(wrong):
        shown = list(zip(wrong.index.tolist(), wrong["first"].tolist()))[:_SHOWN]
        failures.append(
            f"{len(wrong)} users are served an arm other than attnrec.experiments.arm({experiment_id!r}, user_id, "
            f"{share:g}), e.g. (user_id, arm) {shown}; the assignment is a pure function of experiment and user"
        )
    expected_version = frame["arm"].map({a: str(v) for a, v in versions.items() if a in ARMS})
    off = frame[frame["model_version"] != expected_version]
    if len(off):
        shown = sorted(set(zip(off["arm"], off["model_version"])))[:_SHOWN]
        failures.append(
            f"{len(off)} rows carry a model_version other than their arm's in the manifest {versions}, e.g. "
            f"(arm, model_version) {shown}; each arm is served by its own version"
        )
    return failures


def check_candidates(candidates, dt: str, settings: Settings | None = None, manifest: dict | None = None) -> dict:
    """Checks of a candidates partition (pandas) that no GX expectation expresses, over the whole partition:

    - ``score`` is non-increasing with ``rank``, and ranks run 1, 2, ... without gaps, for every user;
    - every item is in the published features/items of ``dt`` with ``available`` true (a retired item is never
      served);
    - no user gets an item in their features/sequences ``seen_item_ids`` (every item they had a seen-type event
      with in the look-back, ``ATTNREC_SEEN_EVENT_TYPES``);
    - against the serving plan in ``manifest`` (default: the staged partition's ``_manifest.json``): every user's
      rows carry one arm, equal to :func:`attnrec.experiments.arm` of (the manifest's ``experiment_id``, user,
      ``treatment_share``); each arm's rows carry that arm's version of ``model_versions``; every row carries the
      manifest's ``experiment_id``, which is empty exactly when the share is 0.

    Returns ``{"checks": [...], "rows": n}``; raises GateFailed listing every failed check with counts and examples.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from attnrec.settings import get_settings

    settings = settings or get_settings()
    check_dt(dt)
    missing = [c for c in ("model_version", "arm", "experiment_id") if c not in candidates.columns]
    if missing:
        raise GateFailed(
            f"candidates gate FAILED for dt={dt}: the candidates lack the columns {missing} (attnrec.contracts."
            f"CANDIDATE_COLUMNS); re-run nightly_candidates for {dt}"
        )
    failures: list[str] = []
    frame = candidates[["user_id", "rank", "item_id", "score"]].sort_values(["user_id", "rank"], kind="stable")
    users = frame["user_id"].to_numpy()
    same_user = np.r_[False, users[1:] == users[:-1]]  # (R,) the row before is the same user's
    position = frame.groupby("user_id", sort=False).cumcount().to_numpy() + 1
    gaps = frame[frame["rank"].to_numpy() != position]
    if len(gaps):
        shown = sorted(set(gaps["user_id"].tolist()))[:_SHOWN]
        failures.append(
            f"rank does not run 1, 2, ... for {gaps['user_id'].nunique()} users, e.g. {shown}; "
            "models/candidates.py writes ranks 1..K per user"
        )
    scores = frame["score"].to_numpy()
    rising = same_user & np.r_[False, scores[1:] > scores[:-1]]
    if rising.any():
        rows = frame[rising]
        shown = [(u, int(r), float(s)) for u, r, s in rows[["user_id", "rank", "score"]].head(_SHOWN).itertuples(False)]
        failures.append(
            f"score increases with rank in {int(rising.sum())} rows of {rows['user_id'].nunique()} users, e.g. "
            f"(user_id, rank, score) {shown}; scores must be non-increasing with rank"
        )

    items = _features_table(settings.data_root, lake.FEATURE_ITEMS, dt, ["item_id", "available"]).to_pandas()
    servable = set(items.loc[items["available"].fillna(True).astype(bool), "item_id"])
    retired = set(items["item_id"]) - servable
    bad = frame[~frame["item_id"].isin(servable)]
    if len(bad):
        gone = bad[bad["item_id"].isin(retired)]
        unknown = bad[~bad["item_id"].isin(retired)]
        for rows, what in ((gone, "retired (available false)"), (unknown, "not in features/items")):
            if len(rows):
                shown = sorted(set(rows["item_id"].tolist()))[:_SHOWN]
                failures.append(
                    f"{len(rows)} rows serve items {what} in features/items dt={dt}, e.g. {shown}; candidates "
                    "may only serve available catalogue items"
                )

    seqs = _features_table(settings.data_root, lake.FEATURE_SEQUENCES, dt, ["user_id", "seen_item_ids"])
    seen = seqs.column("seen_item_ids").combine_chunks()
    # features carry pseudonyms, candidates raw ids: the features' users mapped back as candidates maps them
    users = raw_user_ids(seqs.column("user_id").combine_chunks(), load_identity(settings.data_root), dt)
    pairs = pa.table(
        {
            "user_id": pc.take(users, pc.list_parent_indices(seen)),
            "item_id": pc.list_flatten(seen),
        }
    )
    served = pa.Table.from_pandas(frame[["user_id", "item_id", "rank"]], preserve_index=False)
    repeated = served.join(pairs, keys=["user_id", "item_id"], join_type="inner")
    if repeated.num_rows:
        shown = sorted(zip(*(repeated.column(c).to_pylist() for c in ("user_id", "item_id", "rank"))))[:_SHOWN]
        failures.append(
            f"{repeated.num_rows} (user, item) pairs serve an item the user has already seen (features/sequences "
            f"seen_item_ids, event types {','.join(settings.seen_event_types) or 'none'}), e.g. (user_id, item_id, "
            f"rank) {shown}; candidates must exclude every seen item"
        )
    manifest = staged_manifest(dt, settings) if manifest is None else manifest
    failures += _plan_failures(candidates[["user_id", "model_version", "arm", "experiment_id"]], manifest, dt)
    checks = ["rank_order_and_scores", "available_items", "seen_items_excluded", "arms_and_versions"]
    if failures:
        message = "\n".join(
            [f"candidates gate FAILED for dt={dt}: {len(failures)} check(s) against the features and the plan failed"]
            + [f"  - {f}" for f in failures]
        )
        raise GateFailed(message, {"dt": dt, "success": False, "failed": failures, "checks": checks})
    log.info("candidates checks passed for dt=%s (%d rows): %s", dt, len(frame), ", ".join(checks))
    return {"checks": checks, "rows": len(frame)}


def validate_candidates(candidates, dt: str, settings: Settings | None = None, manifest: dict | None = None) -> dict:
    """The candidates gate: the ``candidates`` suite (GX, pandas), then :func:`check_candidates` against the
    published features of ``dt`` and the serving plan in ``manifest`` (default: the staged partition's
    ``_manifest.json``). Returns the suite summary with ``checks`` added; raises GateFailed."""
    summary = validate_pandas("candidates", candidates, dt, settings)
    summary["checks"] = check_candidates(candidates, dt, settings, manifest)["checks"]
    return summary
