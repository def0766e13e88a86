"""How a Parquet dataset's columns are encoded, read from its files' footers (pyarrow), for the tests of writers
that turn dictionary encoding or statistics off for some columns (:func:`attnrec.spark.without_dictionary`,
:func:`attnrec.spark.without_statistics`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def column_chunks(directory) -> Iterator:
    """The footer metadata of every column chunk (every column of every row group) of every file of ``directory``."""
    import pyarrow.parquet as pq

    files = sorted(Path(directory).glob("*.parquet"))
    assert files, f"no parquet files in {directory}"
    for file in files:
        meta = pq.ParquetFile(file).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                yield group.column(c)


def dictionary_encoded(directory) -> dict[str, bool]:
    """Column path -> whether any page of that column, in any file of ``directory``, is dictionary encoded."""
    found: dict[str, bool] = {}
    for column in column_chunks(directory):
        dictionary = any("DICTIONARY" in encoding for encoding in column.encodings)
        found[column.path_in_schema] = found.get(column.path_in_schema, False) or dictionary
    return found


def with_min_max(directory) -> dict[str, bool]:
    """Column path -> whether every row group of that column, in every file of ``directory``, has min/max
    statistics."""
    found: dict[str, bool] = {}
    for column in column_chunks(directory):
        bounds = column.is_stats_set and column.statistics.has_min_max
        found[column.path_in_schema] = found.get(column.path_in_schema, True) and bounds
    return found
