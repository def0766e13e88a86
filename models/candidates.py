"""Nightly candidates: the champion model's top-K unseen items for every user, for one partition.

``run(dt, version=V)`` (the nightly_candidates DAG, with the version :func:`resolve_version` chose at the start of
its run) or ``attnrec candidates --dt YYYY-MM-DD`` (the champion of the moment):
load ``models:/attention-recommender/V`` -> read features/items for ``dt`` -> stream the published
features/sequences ``USER_BATCH`` users at a time: encode them -> score the full catalogue in chunks,
excluding every item the user has seen in the look-back (``seen_item_ids``, the event types of
ATTNREC_SEEN_EVENT_TYPES: not only the events kept in the sequence) and every item that is not available in
features/items (retired, or no longer in the table) -> top-K -> parquet in
``lake.staging(root, candidates, dt)`` with ``_manifest.json`` (the model name and version served) and
``_SUCCESS``, written aside and renamed into place (the candidates gate validates it and publishes it).

A re-run or backfill of day D re-serves the version recorded in D's published manifest, so D's candidates are
reproducible; ``resolve_version(..., re_resolve=True)`` serves the current champion instead.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from attnrec import lake
from attnrec.contracts import CANDIDATE_COLUMNS, check_dt
from attnrec.settings import Settings, get_settings

log = logging.getLogger(__name__)

USER_BATCH = 1024
#: Beside ``_SUCCESS`` in a candidates partition: which model version wrote it (JSON).
MANIFEST_FILE = "_manifest.json"

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


def candidate_table(user_ids: Any, top_idx: Any, top_score: Any, item_ids: Any, model_name: str, version: str) -> Any:
    """Candidates-contract rows for a batch: ``user_ids`` (U,) Arrow strings, ``top_idx`` / ``top_score``
    (U, k) from :func:`models.recommender.recommend` (index 0 = no item: the tail when fewer than k are left),
    ``item_ids`` the model's vocabulary as an Arrow array (index i is position i - 1)."""
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
        ],
        schema=candidates_schema(),
    )


def recorded_version(root: str, dt: str) -> str | None:
    """The model version the published candidates of ``dt`` record in their manifest; None when there are none
    (or they were written before manifests existed)."""
    uri = lake.join(lake.partition(root, lake.CANDIDATES, dt), MANIFEST_FILE)
    if not lake.is_complete(lake.partition(root, lake.CANDIDATES, dt)) or not lake.exists(uri):
        return None
    return str(lake.read_json(uri)["model_version"])


def resolve_version(dt: str, settings: Settings | None = None, re_resolve: bool = False) -> tuple[str, str]:
    """(version, why): the model version that serves day ``dt``, chosen once per run. The version recorded in
    ``dt``'s published candidates when there is one (a re-run or backfill re-serves it), unless ``re_resolve``;
    otherwise the version ``champion`` points at now (RuntimeError when there is none)."""
    from models.registry import require_champion

    check_dt(dt)
    settings = settings or get_settings()
    recorded = None if re_resolve else recorded_version(settings.data_root, dt)
    if recorded is not None:
        return recorded, (
            f"re-serving version {recorded}, recorded in the published candidates of dt={dt} "
            "(trigger with re_resolve=true to serve the current champion)"
        )
    version = require_champion(settings)
    return version, f"'champion' points at version {version}" + (" (re_resolve=true)" if re_resolve else "")


def run(dt: str, settings: Settings | None = None, version: str | None = None) -> dict[str, Any]:
    """Write top-K candidates for every user in features/sequences for ``dt`` to the staging partition,
    streaming the users ``USER_BATCH`` at a time (memory does not grow with the number of users), with model
    ``version`` (default: the version ``champion`` points at now) recorded in the partition's manifest.

    Returns {"path", "users", "rows", "model_version"}.
    """
    import pyarrow.parquet as pq
    import torch

    from models.encoding import encode_record_batch
    from models.features import count_rows, feature_paths, read_table, sequence_batches
    from models.recommender import recommend
    from models.registry import load_champion, load_version
    from models.runtime import choose_device

    check_dt(dt)
    settings = settings or get_settings()
    paths = feature_paths(settings.data_root, dt)  # inputs first: a missing day fails before any model loads
    if version is None:
        rec, version = load_champion(settings)
    else:
        rec = load_version(settings, str(version))
    device, _ = choose_device()
    rec.model.to(device)
    n_users = count_rows(paths["sequences"])
    item_rows = read_table(paths["items"])
    catalogue = servable_items(item_rows)
    allowed = torch.tensor([False, *(i in catalogue for i in rec.vocab.item_ids)], dtype=torch.bool)
    new_items = len(catalogue - set(rec.vocab.item_ids))
    log.info(
        "candidates dt=%s: %d users, champion v%s knows %d items (%d of them not servable: retired or not in "
        "features/items; %d servable items are new to it)",
        dt,
        n_users,
        version,
        rec.vocab.n_items,
        int((~allowed[1:]).sum()),
        new_items,
    )
    item_ids = rec.vocab.arrow_ids()

    out_uri = lake.staging(settings.data_root, lake.CANDIDATES, dt)
    tmp_uri = f"{out_uri}.tmp-{uuid.uuid4().hex[:8]}"
    filesystem, tmp = lake.filesystem_for(tmp_uri)
    filesystem.create_dir(tmp, recursive=True)
    rows, done, start = 0, 0, time.monotonic()
    try:
        with pq.ParquetWriter(f"{tmp}/part-00000.parquet", candidates_schema(), filesystem=filesystem) as writer:
            for batch in sequence_batches(paths["sequences"], USER_BATCH, extra_columns=(SEEN_COLUMN,)):
                seen = seen_indices(batch, item_ids)
                if seen is None and done == 0:
                    log.warning(
                        "%s has no %s (written before featurize kept it): only the items in each user's sequence "
                        "are excluded; re-run behavior_etl for %s to exclude everything seen in the look-back",
                        paths["sequences"],
                        SEEN_COLUMN,
                        dt,
                    )
                top_idx, top_score = recommend(
                    rec, encode_record_batch(batch, rec.vocab), settings.top_k, device, allowed=allowed, exclude=seen
                )
                table = candidate_table(
                    batch.column("user_id"),
                    top_idx.cpu(),
                    top_score.cpu(),
                    item_ids,
                    settings.model_name,
                    str(version),
                )
                if table.num_rows:
                    writer.write_table(table)
                rows, done = rows + table.num_rows, done + batch.num_rows
                elapsed = max(time.monotonic() - start, 1e-9)
                log.info("candidates: %d/%d users, %.0f users/s", done, n_users, done / elapsed)
        manifest = {"dt": dt, "model_name": settings.model_name, "model_version": str(version)}
        lake.write_json(lake.join(tmp_uri, MANIFEST_FILE), {**manifest, "rows": rows, "users": done})
        with filesystem.open_output_stream(f"{tmp}/{lake.SUCCESS_MARKER}"):
            pass
        lake.replace_dir(tmp_uri, out_uri)
    except BaseException:
        from pyarrow import fs

        if filesystem.get_file_info(tmp).type != fs.FileType.NotFound:
            filesystem.delete_dir(tmp)
        raise
    log.info("candidates: wrote %d rows for %d users to %s with model version %s", rows, done, out_uri, version)
    return {"path": out_uri, "users": done, "rows": rows, "model_version": str(version)}
