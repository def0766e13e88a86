"""Reading the published feature partitions: their paths, a snapshot hash, item rows, sequence batches."""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, Sequence

from attnrec import lake


def feature_paths(root: str, dt: str) -> dict[str, str]:
    """The published sequences and items partitions for ``dt``; raise when either is incomplete."""
    paths = {
        "sequences": lake.partition(root, lake.FEATURE_SEQUENCES, dt),
        "items": lake.partition(root, lake.FEATURE_ITEMS, dt),
    }
    for name, path in paths.items():
        if not lake.is_complete(path):
            raise FileNotFoundError(
                f"features/{name} for dt={dt} is not published at {path} (no {lake.SUCCESS_MARKER}); "
                f"run the behavior_etl DAG for {dt} first"
            )
    return paths


def snapshot_hash(paths: Sequence[str]) -> str:
    """sha256 (first 16 hex) over the names and bytes of every data file in the given partitions."""
    from pyarrow import fs

    digest = hashlib.sha256()
    for uri in paths:
        filesystem, base = lake.filesystem_for(uri)
        infos = [
            i for i in filesystem.get_file_info(fs.FileSelector(base, recursive=True)) if i.type == fs.FileType.File
        ]
        for info in sorted(infos, key=lambda i: i.path):
            if info.base_name.startswith(("_", ".")):
                continue
            digest.update(info.path[len(base) :].encode())
            with filesystem.open_input_stream(info.path) as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def read_table(uri: str) -> list[dict[str, Any]]:
    """Rows of a parquet partition as dicts (files starting with ``_`` or ``.`` are ignored)."""
    import pyarrow.parquet as pq

    filesystem, path = lake.filesystem_for(uri)
    return pq.read_table(path, filesystem=filesystem).to_pylist()


#: Sequence columns a partition may lack (written before they existed): the model reads them as unknown.
OPTIONAL_SEQUENCE_COLUMNS = (
    "dwell_ms",
    "attention",
    "hours",
    "weekdays",
    "session_starts",
    "item_heats",
    "item_counts_7d",
    "user_events_7d",
    "devices",
)
#: The sequences columns the model reads; the other feature columns are never loaded.
SEQUENCE_COLUMNS = ("user_id", "item_ids", "event_types", "event_times_ms", *OPTIONAL_SEQUENCE_COLUMNS)


def sequence_batches(uri: str, batch_rows: int = 10_000, extra_columns: Sequence[str] = ()) -> Iterator[Any]:
    """Arrow record batches of :data:`SEQUENCE_COLUMNS` (and those of ``extra_columns`` the files have) from a
    sequences partition, ``batch_rows`` rows at a time, file by file in sorted path order (the same order in every
    run and on every rank)."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    filesystem, base = lake.filesystem_for(uri)
    infos = [
        i
        for i in filesystem.get_file_info(fs.FileSelector(base, recursive=True))
        if i.type == fs.FileType.File and not i.base_name.startswith(("_", "."))
    ]
    for info in sorted(infos, key=lambda i: i.path):
        with filesystem.open_input_file(info.path) as src:
            parquet = pq.ParquetFile(src, pre_buffer=False, buffer_size=1 << 20)  # pre-buffering reads whole files
            names = parquet.schema_arrow.names
            missing = [c for c in SEQUENCE_COLUMNS if c not in OPTIONAL_SEQUENCE_COLUMNS and c not in names]
            if missing:
                raise ValueError(f"{info.path} lacks sequence columns {missing} (has {names}); re-run featurize")
            columns = [c for c in (*SEQUENCE_COLUMNS, *extra_columns) if c in names]
            yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)


def count_rows(uri: str) -> int:
    """Rows of a parquet partition, from the file footers (no data read)."""
    import pyarrow.dataset as ds

    filesystem, path = lake.filesystem_for(uri)
    return sum(f.metadata.num_rows for f in ds.dataset(path, format="parquet", filesystem=filesystem).get_fragments())


def item_text_path(root: str, dt: str) -> str | None:
    """The published features/item_text partition of ``dt``, None when there is none (behavior_etl's item_text task,
    or ``attnrec item-text``, writes it; with ATTNREC_ITEM_TEXT=false nothing does)."""
    path = lake.partition(root, lake.FEATURE_ITEM_TEXT, dt)
    return path if lake.is_complete(path) else None


def read_item_text(uri: str, vocab: Any) -> Any:
    """(N+1, D) float32 tensor of the text vectors of ``uri`` in ``vocab``'s index order: row 0 and the items
    without a row (no title) zero; rows of items the vocabulary lacks are ignored."""
    import pyarrow.parquet as pq
    import torch

    filesystem, path = lake.filesystem_for(uri)
    table = pq.read_table(path, filesystem=filesystem, columns=["item_id", "embedding"])
    pairs = [
        (vocab.index[i], v)
        for i, v in zip(table.column("item_id").to_pylist(), table.column("embedding").to_pylist())
        if i in vocab.index
    ]
    dims = {len(v) for _, v in pairs}
    if len(dims) > 1:
        raise ValueError(f"{uri} mixes text vector lengths {sorted(dims)}; re-run the item_text job for its day")
    out = torch.zeros(vocab.n_items + 1, dims.pop() if dims else 0)
    if pairs:
        out[torch.tensor([i for i, _ in pairs])] = torch.tensor([v for _, v in pairs], dtype=torch.float32)
    return out


def load_features(root: str, dt: str) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, str]]:
    """(partition paths {"sequences", "items", and "item_text" when published}, item rows, data version {dt,
    snapshot_hash, paths}) for ``dt``;
    the sequences are read afterwards with :func:`read_split`, once the vocabulary is known."""
    paths = feature_paths(root, dt)
    items = read_table(paths["items"])
    text = item_text_path(root, dt)
    if text is not None:
        paths["item_text"] = text
    version = {
        "dt": dt,
        "snapshot_hash": snapshot_hash([paths["sequences"], paths["items"], *([text] if text else [])]),
        "sequences_path": paths["sequences"],
        "items_path": paths["items"],
        **({"item_text_path": text} if text else {}),
    }
    return paths, items, version
