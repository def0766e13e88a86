"""Spark side of the pseudonyms: the day's identity table and the swap of raw user ids for pseudonyms.

The HMAC runs once per distinct user id of the day, never per event row; the events get their pseudonym through a
broadcast join with that table. PySpark has no keyed MAC (docs/privacy.md), and a key in a SQL literal would sit in
the query plan, so the key stays in Python: on the driver, where a day has at most :data:`DRIVER_IDS_MAX` distinct
ids and the caller gives a work directory, else inside a pandas UDF's closure on the executors.
"""

from __future__ import annotations

import pandas as pd  # at the top: the pandas UDF's type hints are resolved in this module's globals
from pydantic import SecretBytes

#: The identity table's columns (lake.IDENTITY_USERS): only nightly_candidates reads it, to serve raw ids.
IDENTITY_COLUMNS = ("pseudonym", "user_id")
#: A day with at most this many distinct user ids (about 15 MB of ids and pseudonyms) is pseudonymised on the driver
#: (:func:`identity_table` with a work directory): one collect and no Python worker, whose start cost seconds in every
#: clean job (docs/benchmarks.md#etl). More ids go through the pandas UDF on the executors.
DRIVER_IDS_MAX = 250_000


def identity_table(user_ids, key: SecretBytes, work_dir: str | None = None, driver_ids_max: int = DRIVER_IDS_MAX):
    """``pseudonym, user_id`` of the distinct, non-null ``user_id`` values of ``user_ids`` (a DataFrame).

    With ``work_dir`` (a directory the caller removes afterwards) and at most ``driver_ids_max`` distinct ids, the ids
    are collected, pseudonymised on the driver and handed back to Spark as one parquet file in ``work_dir`` (read
    lazily, like the other path's result); otherwise a pandas UDF pseudonymises them where they lie. Same rows
    either way."""
    from pyspark.sql import functions as F

    from attnrec.privacy import pseudonymizer

    pseudonym_of = pseudonymizer(key)  # fails here, on the driver, when the key is empty
    distinct = user_ids.select("user_id").where(F.col("user_id").isNotNull()).distinct()
    if work_dir is not None:
        ids = [row["user_id"] for row in distinct.limit(driver_ids_max + 1).collect()]
        if len(ids) <= driver_ids_max:
            path = _write_identity(ids, pseudonym_of, work_dir)
            return user_ids.sparkSession.read.schema("pseudonym STRING, user_id STRING").parquet(path)
    secret = key.get_secret_value()  # bytes travel to the executors in the UDF's closure (an HMAC object cannot)

    @F.pandas_udf("string")
    def pseudonymize(ids: pd.Series) -> pd.Series:
        return ids.map(pseudonymizer(secret))

    return distinct.select(pseudonymize("user_id").alias("pseudonym"), "user_id")


def _write_identity(ids: list[str], pseudonym_of, work_dir: str) -> str:
    """``work_dir`` replaced whole (:func:`attnrec.lake.written_dir`) by one parquet file of ``pseudonym, user_id`` for
    ``ids``, written with pyarrow (a Spark task holding the rows would be megabytes); returns ``work_dir``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from attnrec import lake

    table = pa.table(
        {"pseudonym": pa.array([pseudonym_of(i) for i in ids], pa.string()), "user_id": pa.array(ids, pa.string())}
    )
    with lake.written_dir(work_dir) as (filesystem, tmp, _):
        pq.write_table(table, f"{tmp}/part-00000.parquet", filesystem=filesystem)
    return work_dir


def with_pseudonyms(df, identity, keep=None):
    """``df`` with ``user_id`` replaced by its pseudonym (broadcast join with ``identity``). ``keep`` (a column
    condition) limits the swap to some rows; the others get a null ``user_id``. A row whose id is missing from
    ``identity`` gets null too, never its raw id."""
    from pyspark.sql import functions as F

    mapped = df.join(F.broadcast(identity.withColumnRenamed("pseudonym", "_pseudonym")), "user_id", "left")
    pseudonym = F.col("_pseudonym") if keep is None else F.when(keep, F.col("_pseudonym"))
    return mapped.withColumn("user_id", pseudonym).drop("_pseudonym").select(*df.columns)
