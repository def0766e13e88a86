"""Serving's way back from pseudonyms to raw user ids: the published ``identity/users`` partitions.

Every dataset after clean carries the pseudonym in ``user_id``; candidates carry the raw id, because the serving
layer looks lists up by it (DESIGN.md "Privacy"). Only nightly_candidates (generation and its gate) reads the
identity table.
"""

from __future__ import annotations

from typing import Any

from attnrec import lake


def load_identity(root: str) -> Any:
    """The identity table of every published day, one row per pseudonym: an Arrow table (pseudonym, user_id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for dt in lake.list_partitions(root, lake.IDENTITY_USERS):
        filesystem, path = lake.filesystem_for(lake.partition(root, lake.IDENTITY_USERS, dt))
        parts.append(pq.read_table(path, columns=["pseudonym", "user_id"], filesystem=filesystem))
    if not parts:
        return pa.table({"pseudonym": pa.array([], pa.string()), "user_id": pa.array([], pa.string())})
    table = pa.concat_tables(parts).group_by("pseudonym", use_threads=False).aggregate([("user_id", "min")])
    return table.select(["pseudonym", "user_id_min"]).rename_columns(["pseudonym", "user_id"])


def raw_user_ids(pseudonyms: Any, identity: Any, dt: str) -> Any:
    """The raw ids of ``pseudonyms`` (an Arrow string array), in order. Raises ValueError naming how many have no
    identity row (and one of them) and the fix; a candidate row is never written under a pseudonym."""
    import pyarrow.compute as pc

    at = pc.index_in(pseudonyms, value_set=identity["pseudonym"])
    missing = pc.sum(pc.is_null(at)).as_py() or 0
    if missing:
        example = pseudonyms.filter(pc.is_null(at))[0].as_py()
        raise ValueError(
            f"{missing} users in features/sequences/dt={dt} have no row in {lake.IDENTITY_USERS} (e.g. pseudonym "
            f"{example}), so their raw id is unknown; re-run behavior_etl for the days they were active (clean "
            "publishes their identity rows), or check that the data root is the lake the features came from"
        )
    return identity["user_id"].combine_chunks().take(at)
