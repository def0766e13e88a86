"""Nightly candidates: the champion model's top-K unseen items for every user, for one partition.

``run(dt)`` (the nightly_candidates DAG) or ``python -m models.candidates --dt YYYY-MM-DD``:
load ``models:/attention-recommender@champion`` -> read the published features/sequences and
features/items for ``dt`` -> encode users in batches -> score the full catalogue in chunks, excluding
every item in the user's sequence and items no longer in the catalogue -> top-K -> parquet in
``lake.staging(root, candidates, dt)`` with ``_SUCCESS``, written aside and renamed into place (the
candidates gate validates it and publishes it).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from typing import Any

from attnrec import lake
from attnrec.contracts import CANDIDATE_COLUMNS, check_dt
from attnrec.settings import Settings, get_settings

log = logging.getLogger(__name__)

USER_BATCH = 1024


def candidates_schema():
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in CANDIDATE_COLUMNS])


def run(dt: str, settings: Settings | None = None) -> dict[str, Any]:
    """Write top-K candidates for every user in features/sequences for ``dt`` to the staging partition.

    Returns {"path", "users", "rows", "model_version"}.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from models.data import feature_paths, read_sequences, read_table
    from models.pyfunc import recommend
    from models.registry import load_champion
    from models.train import choose_device

    check_dt(dt)
    settings = settings or get_settings()
    rec, version = load_champion(settings)
    device, _ = choose_device()
    rec.model.to(device)
    paths = feature_paths(settings.data_root, dt)
    users = read_sequences(paths["sequences"])
    catalogue = {r["item_id"] for r in read_table(paths["items"])}
    allowed = torch.tensor([False, *(i in catalogue for i in rec.vocab.item_ids)], dtype=torch.bool)
    new_items = len(catalogue - set(rec.vocab.item_ids))
    log.info("candidates dt=%s: %d users, champion v%s knows %d items (%d catalogue items are new to it)",
             dt, len(users), version, rec.vocab.n_items, new_items)

    out_uri = lake.staging(settings.data_root, lake.CANDIDATES, dt)
    tmp_uri = f"{out_uri}.tmp-{uuid.uuid4().hex[:8]}"
    filesystem, tmp = lake.filesystem_for(tmp_uri)
    filesystem.create_dir(tmp, recursive=True)
    schema = candidates_schema()
    rows, start = 0, time.monotonic()
    try:
        with pq.ParquetWriter(f"{tmp}/part-00000.parquet", schema, filesystem=filesystem) as writer:
            for s in range(0, len(users), USER_BATCH):
                batch = users[s:s + USER_BATCH]
                top_idx, top_score = recommend(rec, batch, settings.top_k, device, allowed=allowed)
                cols: dict[str, list] = {name: [] for name, _ in CANDIDATE_COLUMNS}
                for u, idx, sc in zip(batch, top_idx.tolist(), top_score.tolist()):
                    ranked = [(i, v) for i, v in zip(idx, sc) if i > 0]
                    for r, (i, v) in enumerate(ranked, start=1):
                        cols["user_id"].append(u.user_id)
                        cols["rank"].append(r)
                        cols["item_id"].append(rec.vocab.item_ids[i - 1])
                        cols["score"].append(v)
                if cols["user_id"]:
                    cols["model_name"] = [settings.model_name] * len(cols["user_id"])
                    cols["model_version"] = [str(version)] * len(cols["user_id"])
                    writer.write_table(pa.Table.from_pydict(cols, schema=schema))
                rows += len(cols["user_id"])
                done = s + len(batch)
                elapsed = max(time.monotonic() - start, 1e-9)
                log.info("candidates: %d/%d users, %.0f users/s", done, len(users), done / elapsed)
        with filesystem.open_output_stream(f"{tmp}/{lake.SUCCESS_MARKER}"):
            pass
        lake.replace_dir(tmp_uri, out_uri)
    except BaseException:
        from pyarrow import fs

        if filesystem.get_file_info(tmp).type != fs.FileType.NotFound:
            filesystem.delete_dir(tmp)
        raise
    log.info("candidates: wrote %d rows for %d users to %s", rows, len(users), out_uri)
    return {"path": out_uri, "users": len(users), "rows": rows, "model_version": str(version)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.candidates", description=__doc__.splitlines()[0])
    parser.add_argument("--dt", required=True, help="features partition date, YYYY-MM-DD")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(json.dumps(run(args.dt), indent=2))


if __name__ == "__main__":
    main()
