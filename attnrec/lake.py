"""Lake layout (DESIGN.md "Contracts") and the write-aside-then-publish step.

Every dataset lives at ``<root>/<dataset>/dt=YYYY-MM-DD``. Jobs write to
``<root>/_staging/<dataset>/dt=D``; a gate validates the staged copy; :func:`publish` then moves it
into place whole, so a reader never sees half a partition or one that failed its gate.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from attnrec.contracts import check_dt

RAW_EVENTS = "raw/events"
RAW_ITEMS = "raw/items"
CLEAN_EVENTS = "clean/events"
QUARANTINE_EVENTS = "quarantine/events"
QUARANTINE_ITEMS = "quarantine/items"  # catalogue lines featurize could not use, with a reason
FEATURE_SEQUENCES = "features/sequences"
FEATURE_ITEMS = "features/items"
CANDIDATES = "candidates"

STAGING = "_staging"
RECONCILIATION_FILE = "_reconciliation.json"
SUCCESS_MARKER = "_SUCCESS"


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def partition(root: str, dataset: str, dt: str) -> str:
    """The published location of ``dataset`` for day ``dt``."""
    return join(root, dataset, f"dt={check_dt(dt)}")


def staging(root: str, dataset: str, dt: str) -> str:
    """Where a job writes ``dataset`` for day ``dt`` before its gate passes."""
    return join(root, STAGING, dataset, f"dt={check_dt(dt)}")


def raw_items(root: str) -> str:
    return join(root, RAW_ITEMS)


def data_docs_dir(root: str) -> str:
    return join(root, "validation", "data_docs")


def require_raw_events(root: str, dt: str) -> str:
    """The raw events partition for ``dt``; a FileNotFoundError naming the path when it is missing or empty."""
    from pyarrow import fs as pafs

    path = join(root, RAW_EVENTS, f"dt={check_dt(dt)}")
    filesystem, local = filesystem_for(path)
    info = filesystem.get_file_info(local)
    files = []
    if info.type == pafs.FileType.Directory:
        files = [
            f
            for f in filesystem.get_file_info(pafs.FileSelector(local))
            if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_"))
        ]
    if not files:
        raise FileNotFoundError(
            f"no raw events for dt={dt}: looked in {path} and found no files; land the day's logs there "
            "as JSON Lines (*.jsonl or *.jsonl.gz), or trigger the DAG for a date that has data"
        )
    return path


def filesystem_for(uri: str):
    """A pyarrow filesystem and the path inside it, for a local path or any URI pyarrow knows.

    ``s3a://bucket/key`` (Hadoop's name for S3, the one Spark's hadoop-aws connector reads) is pyarrow's
    S3FileSystem at ``bucket/key``, configured from the standard AWS environment (credentials, ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``, default us-east-1); pyarrow itself rejects the scheme. ``hdfs://`` goes to pyarrow's
    HadoopFileSystem, which needs libhdfs and a Hadoop client (``HADOOP_HOME``, ``CLASSPATH``).
    """
    from pyarrow import fs

    if "://" not in uri:
        return fs.LocalFileSystem(), uri
    scheme, _, path = uri.partition("://")
    if scheme == "s3a":
        if not path.split("/", 1)[0]:
            raise ValueError(f"{uri!r} names no bucket; write the lake root as s3a://<bucket>/<prefix>")
        return fs.S3FileSystem(), path.rstrip("/")
    return fs.FileSystem.from_uri(uri)


def exists(uri: str) -> bool:
    from pyarrow import fs as pafs

    filesystem, path = filesystem_for(uri)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def is_complete(uri: str) -> bool:
    """A partition is complete when its ``_SUCCESS`` marker is there."""
    return exists(join(uri, SUCCESS_MARKER))


def list_partitions(root: str, dataset: str) -> list[str]:
    """The ``YYYY-MM-DD`` of every complete published partition of ``dataset``, sorted."""
    from pyarrow import fs as pafs

    filesystem, base = filesystem_for(join(root, dataset))
    if filesystem.get_file_info(base).type == pafs.FileType.NotFound:
        return []
    found = []
    for info in filesystem.get_file_info(pafs.FileSelector(base)):
        name = info.base_name
        if info.type == pafs.FileType.Directory and name.startswith("dt="):
            if filesystem.get_file_info(f"{info.path}/{SUCCESS_MARKER}").type != pafs.FileType.NotFound:
                found.append(name[3:])
    return sorted(found)


def replace_dir(src_uri: str, dst_uri: str) -> str:
    """Move the finished directory ``src_uri`` to ``dst_uri``, replacing whatever is there.

    The old copy is moved aside first and deleted last, so ``dst_uri`` is missing only between two renames.
    """
    from pyarrow import fs as pafs

    fs_, src = filesystem_for(src_uri)
    _, dst = filesystem_for(dst_uri)
    fs_.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    old = f"{dst}.replaced-{uuid.uuid4().hex[:8]}"
    had_old = fs_.get_file_info(dst).type != pafs.FileType.NotFound
    if had_old:
        fs_.move(dst, old)
    fs_.move(src, dst)
    if had_old:
        fs_.delete_dir(old)
    return dst_uri


def remove_dir(uri: str) -> None:
    """Delete the directory ``uri`` and everything under it; nothing when it is not there."""
    from pyarrow import fs as pafs

    filesystem, path = filesystem_for(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        filesystem.delete_dir(path)


def publish(root: str, dataset: str, dt: str) -> str:
    """Move the staged partition of ``dataset`` for ``dt`` into place, replacing any earlier one.

    Raises ``FileNotFoundError`` naming the staged path when there is nothing complete to publish.
    """
    src_uri = staging(root, dataset, dt)
    if not is_complete(src_uri):
        raise FileNotFoundError(
            f"nothing complete to publish at {src_uri} (no {SUCCESS_MARKER}); "
            f"run the job that writes {dataset} for {dt} first"
        )
    return replace_dir(src_uri, partition(root, dataset, dt))


def write_json(uri: str, payload: dict[str, Any]) -> None:
    filesystem, path = filesystem_for(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(json.dumps(payload, indent=2, sort_keys=True).encode())


def read_json(uri: str) -> dict[str, Any]:
    filesystem, path = filesystem_for(uri)
    with filesystem.open_input_stream(path) as src:
        return json.loads(src.read().decode())
