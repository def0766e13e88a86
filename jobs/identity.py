"""Spark side of the pseudonyms: the day's identity table and the swap of raw user ids for pseudonyms.

The HMAC runs once per distinct user id of the day (a pandas UDF over a table of a few hundred thousand rows at
most), never per event row; the events get their pseudonym through a broadcast join with that table.
PySpark has no keyed MAC (docs/privacy.md), and a key in a SQL literal would sit in the query plan, so the key
travels only inside the UDF's closure.
"""

from __future__ import annotations

import pandas as pd  # at the top: the pandas UDF's type hints are resolved in this module's globals
from pydantic import SecretBytes

#: The identity table's columns (lake.IDENTITY_USERS): only nightly_candidates reads it, to serve raw ids.
IDENTITY_COLUMNS = ("pseudonym", "user_id")


def identity_table(user_ids, key: SecretBytes):
    """``pseudonym, user_id`` of the distinct, non-null ``user_id`` values of ``user_ids`` (a DataFrame)."""
    from pyspark.sql import functions as F

    from attnrec.privacy import pseudonymizer

    pseudonymizer(key)  # fails here, on the driver, when the key is empty
    secret = key.get_secret_value()  # bytes travel to the executors in the UDF's closure (an HMAC object cannot)

    @F.pandas_udf("string")
    def pseudonymize(ids: pd.Series) -> pd.Series:
        return ids.map(pseudonymizer(secret))

    distinct = user_ids.select("user_id").where(F.col("user_id").isNotNull()).distinct()
    return distinct.select(pseudonymize("user_id").alias("pseudonym"), "user_id")


def with_pseudonyms(df, identity, keep=None):
    """``df`` with ``user_id`` replaced by its pseudonym (broadcast join with ``identity``). ``keep`` (a column
    condition) limits the swap to some rows; the others get a null ``user_id``. A row whose id is missing from
    ``identity`` gets null too, never its raw id."""
    from pyspark.sql import functions as F

    mapped = df.join(F.broadcast(identity.withColumnRenamed("pseudonym", "_pseudonym")), "user_id", "left")
    pseudonym = F.col("_pseudonym") if keep is None else F.when(keep, F.col("_pseudonym"))
    return mapped.withColumn("user_id", pseudonym).drop("_pseudonym").select(*df.columns)
