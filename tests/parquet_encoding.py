"""How a Parquet dataset's columns are encoded, read from its files' footers (pyarrow), for the tests of writers
that turn dictionary encoding or statistics off for some columns (:func:`attnrec.spark.without_dictionary`,
:func:`attnrec.spark.without_statistics`)."""

from __future__ import annotations

from pathlib import Path


def dictionary_encoded(directory) -> dict[str, bool]:
    """Column path -> whether any page of that column, in any file of ``directory``, is dictionary encoded."""
    import pyarrow.parquet as pq

    found: dict[str, bool] = {}
    files = sorted(Path(directory).glob("*.parquet"))
    assert files, f"no parquet files in {directory}"
    for file in files:
        meta = pq.ParquetFile(file).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                dictionary = any("DICTIONARY" in encoding for encoding in column.encodings)
                found[column.path_in_schema] = found.get(column.path_in_schema, False) or dictionary
    return found


def with_min_max(directory) -> dict[str, bool]:
    """Column path -> whether every row group of that column, in every file of ``directory``, has min/max
    statistics."""
    import pyarrow.parquet as pq

    found: dict[str, bool] = {}
    files = sorted(Path(directory).glob("*.parquet"))
    assert files, f"no parquet files in {directory}"
    for file in files:
        meta = pq.ParquetFile(file).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                bounds = column.is_stats_set and column.statistics.has_min_max
                found[column.path_in_schema] = found.get(column.path_in_schema, True) and bounds
    return found
