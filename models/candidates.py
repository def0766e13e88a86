"""Nightly candidates: top-K unseen items per user from the day's serving plan, for one partition.

``run(dt, plan=P)`` (the nightly_candidates DAG, with the plan :func:`models.serving_plan.resolve_plan` chose at
the start of its run) or ``attnrec candidates --dt YYYY-MM-DD`` (which resolves the plan the same way):
load the plan's versions (``models:/attention-recommender/V``, each once) -> read features/items for ``dt`` ->
stream the published features/sequences ``USER_BATCH`` users at a time: split them by arm
(:func:`attnrec.experiments.arms` of the plan's experiment id and share; everyone is ``control`` when no
experiment runs) -> encode each arm's users and score the full catalogue in chunks with that arm's version,
excluding every item the user has seen in the look-back (``seen_item_ids``, the event types of
ATTNREC_SEEN_EVENT_TYPES: not only the events kept in the sequence) and every item that is not available in
features/items (retired, or no longer in the table) -> top-K -> parquet in ``lake.staging(root, candidates, dt)``
with ``_manifest.json`` (the model name, the plan, the counts) and ``_SUCCESS``, written aside and renamed into
place (the candidates gate validates it and publishes it).

A re-run or backfill of day D re-serves the plan recorded in D's published manifest, so D's candidates are
reproducible; ``re_resolve=True`` serves the current champion, challenger and treatment share instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from attnrec import experiments, lake
from attnrec.contracts import ARMS, CANDIDATE_COLUMNS, CONTROL, check_dt
from attnrec.identity import load_identity, raw_user_ids
from attnrec.settings import Settings, get_settings
from models.serving_plan import check_plan, describe_plan, manifest_fields, resolve_plan

log = logging.getLogger(__name__)

USER_BATCH = 1024
#: Beside ``_SUCCESS`` in a candidates partition: the serving plan that wrote it and the counts (JSON).
MANIFEST_FILE = lake.CANDIDATES_MANIFEST

#: The features/sequences column of the items each user has seen in the whole look-back (jobs/featurize.py).
SEEN_COLUMN = "seen_item_ids"


def servable_items(item_rows: list[dict[str, Any]]) -> set[str]:
    """The item ids candidates may serve: every features/items row whose ``available`` is not false (a table
    written before the column existed serves every item)."""
    return {r["item_id"] for r in item_rows if r.get("available") is not False}


def seen_indices(batch: Any, item_ids: Any) -> list[list[int]] | None:
    """Each user's ``seen_item_ids`` in a features/sequences record batch as model item indices (``item_ids``: the
    model's vocabulary as an Arrow array, index i at position i - 1); items the model does not know are left out
    (it cannot serve them). None when the batch has no such column (features written before it existed)."""
    import numpy as np
    import pyarrow.compute as pc

    if SEEN_COLUMN not in batch.schema.names:
        return None
    column = batch.column(SEEN_COLUMN)
    if len(column) == 0:
        return []
    lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0), dtype=np.int64)  # (U,) a null list = none
    idx = pc.index_in(pc.list_flatten(column), value_set=item_ids)
    idx = np.asarray(pc.fill_null(idx, -1), dtype=np.int64) + 1  # (S,) 0 = unknown to the model
    return [row[row > 0].tolist() for row in np.split(idx, np.cumsum(lengths)[:-1])]


def candidates_schema():
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in CANDIDATE_COLUMNS])


def candidate_table(
    user_ids: Any,
    top_idx: Any,
    top_score: Any,
    item_ids: Any,
    model_name: str,
    version: str,
    arm: str = CONTROL,
    experiment_id: str = "",
) -> Any:
    """Candidates-contract rows for a batch of users of one arm: ``user_ids`` (U,) Arrow strings, ``top_idx`` /
    ``top_score`` (U, k) from :func:`models.recommender.recommend` (index 0 = no item: the tail when fewer than k
    are left), ``item_ids`` the model's vocabulary as an Arrow array (index i is position i - 1); every row carries
    ``version`` (the version that scored it), ``arm`` and ``experiment_id``."""
    import numpy as np
    import pyarrow as pa

    idx = top_idx.numpy()
    keep = idx > 0  # (U, k): real items fill each row from the left
    user_rows = np.repeat(np.arange(len(idx)), keep.sum(1))
    n = len(user_rows)
    return pa.Table.from_arrays(
        [
            pa.array(user_ids).take(pa.array(user_rows)).cast(pa.string()),
            pa.array(np.cumsum(keep, axis=1)[keep].astype(np.int32)),
            item_ids.take(pa.array(idx[keep] - 1)),
            pa.array(top_score.numpy()[keep].astype(np.float32)),
            pa.array([model_name] * n, pa.string()),
            pa.array([version] * n, pa.string()),
            pa.array([arm] * n, pa.string()),
            pa.array([experiment_id] * n, pa.string()),
        ],
        schema=candidates_schema(),
    )


@dataclass
class Scorer:
    """One loaded model version, ready to score: the recommender on its device, the (N+1,) bool mask of the items
    it may serve today and its vocabulary as an Arrow array."""

    version: str
    rec: Any  # models.recommender.Recommender
    allowed: Any  # torch.Tensor (N+1,)
    item_ids: Any  # pyarrow.Array (N,)


def load_scorers(
    settings: Settings, plan: dict[str, Any], catalogue: set[str], device: Any, dt: str
) -> dict[str, Scorer]:
    """{arm: Scorer} for every arm the plan serves; a version serving both arms is loaded once."""
    import torch

    from models.registry import load_version

    loaded: dict[str, Scorer] = {}
    for arm in ARMS:
        version = plan[arm]
        if version is None or version in loaded:
            continue
        rec = load_version(settings, version)
        rec.model.to(device)
        allowed = torch.tensor([False, *(i in catalogue for i in rec.vocab.item_ids)], dtype=torch.bool)
        log.info(
            "candidates dt=%s: version %s (%s) knows %d items (%d of them not servable: retired or not in "
            "features/items; %d servable items are new to it)",
            dt,
            version,
            " and ".join(a for a in ARMS if plan[a] == version),
            rec.vocab.n_items,
            int((~allowed[1:]).sum()),
            len(catalogue - set(rec.vocab.item_ids)),
        )
        loaded[version] = Scorer(version, rec, allowed, rec.vocab.arrow_ids())
    return {arm: loaded[plan[arm]] for arm in ARMS if plan[arm] is not None}


def score_arm(batch: Any, scorer: Scorer, arm: str, experiment_id: str, settings: Settings, device: Any) -> Any:
    """Candidates rows of the users in ``batch`` (a features/sequences record batch, all of one arm) from
    ``scorer``: top-K of the servable catalogue, every item the user has seen excluded."""
    from models.encoding import encode_record_batch
    from models.recommender import recommend

    rec = scorer.rec
    seen = seen_indices(batch, scorer.item_ids)
    top_idx, top_score = recommend(
        rec, encode_record_batch(batch, rec.vocab), settings.top_k, device, allowed=scorer.allowed, exclude=seen
    )
    return candidate_table(
        batch.column("user_id"),
        top_idx.cpu(),
        top_score.cpu(),
        scorer.item_ids,
        settings.model_name,
        scorer.version,
        arm,
        experiment_id,
    )


def run(
    dt: str, settings: Settings | None = None, plan: dict[str, Any] | None = None, re_resolve: bool = False
) -> dict[str, Any]:
    """Write top-K candidates for every user in features/sequences for ``dt`` to the staging partition,
    streaming the users ``USER_BATCH`` at a time (memory does not grow with the number of users), each user scored
    by their arm's version of ``plan`` (default: :func:`models.serving_plan.resolve_plan` of ``dt`` and
    ``re_resolve``, after the inputs are found), the plan recorded in the partition's manifest.

    Returns {"path", "users", "rows", "model_version" (the control version), "plan", "users_by_arm"}.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.features import count_rows, feature_paths, read_table, sequence_batches
    from models.runtime import choose_device

    check_dt(dt)
    settings = settings or get_settings()
    paths = feature_paths(settings.data_root, dt)  # inputs first: a missing day fails before any model loads
    if plan is None:
        plan, why = resolve_plan(dt, settings, re_resolve)
        log.info("candidates dt=%s: serving %s: %s", dt, describe_plan(plan), why)
    plan = check_plan(plan)
    device, _ = choose_device()
    n_users = count_rows(paths["sequences"])
    catalogue = servable_items(read_table(paths["items"]))
    scorers = load_scorers(settings, plan, catalogue, device, dt)
    identity = load_identity(settings.data_root)  # features carry pseudonyms; candidates the raw ids
    log.info("candidates dt=%s: %d users, serving %s", dt, n_users, describe_plan(plan))

    out_uri = lake.staging(settings.data_root, lake.CANDIDATES, dt)
    rows, done, start = 0, 0, time.monotonic()
    users_by_arm = dict.fromkeys(scorers, 0)
    with lake.written_dir(out_uri) as (filesystem, tmp, tmp_uri):
        with pq.ParquetWriter(f"{tmp}/part-00000.parquet", candidates_schema(), filesystem=filesystem) as writer:
            for batch in sequence_batches(paths["sequences"], USER_BATCH, extra_columns=(SEEN_COLUMN,)):
                if done == 0 and SEEN_COLUMN not in batch.schema.names:
                    log.warning(
                        "%s has no %s (written before featurize kept it): only the items in each user's sequence "
                        "are excluded; re-run behavior_etl for %s to exclude everything seen in the look-back",
                        paths["sequences"],
                        SEEN_COLUMN,
                        dt,
                    )
                users = raw_user_ids(batch.column("user_id"), identity, dt)
                batch = batch.set_column(batch.schema.get_field_index("user_id"), "user_id", users)
                labels = experiments.arms(plan["experiment_id"], users.to_pylist(), plan["treatment_share"])
                for arm, scorer in scorers.items():
                    members = [i for i, label in enumerate(labels) if label == arm]
                    if not members:
                        continue
                    part = batch if len(members) == batch.num_rows else batch.take(pa.array(members, pa.int64()))
                    table = score_arm(part, scorer, arm, plan["experiment_id"], settings, device)
                    if table.num_rows:
                        writer.write_table(table)
                    rows, users_by_arm[arm] = rows + table.num_rows, users_by_arm[arm] + part.num_rows
                done += batch.num_rows
                elapsed = max(time.monotonic() - start, 1e-9)
                log.info("candidates: %d/%d users, %.0f users/s", done, n_users, done / elapsed)
        manifest = {"dt": dt, "model_name": settings.model_name, **manifest_fields(plan)}
        manifest.update(rows=rows, users=done, users_by_arm=users_by_arm)
        lake.write_json(lake.join(tmp_uri, MANIFEST_FILE), manifest)
    log.info(
        "candidates: wrote %d rows for %d users %s to %s, %s", rows, done, users_by_arm, out_uri, describe_plan(plan)
    )
    return {
        "path": out_uri,
        "users": done,
        "rows": rows,
        "model_version": plan[CONTROL],
        "plan": plan,
        "users_by_arm": users_by_arm,
    }
