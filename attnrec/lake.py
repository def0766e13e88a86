"""Lake layout (DESIGN.md "Contracts") and the write-aside-then-publish step.

Every dataset lives at ``<root>/<dataset>/dt=YYYY-MM-DD``. Jobs write to
``<root>/_staging/<dataset>/dt=D``; a gate validates the staged copy; :func:`publish_all` then moves the
datasets of one task into place whole, as one unit that a retry finishes, so a reader never sees half a
partition or one that failed its gate.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from attnrec.contracts import check_dt

RAW_EVENTS = "raw/events"
RAW_ITEMS = "raw/items"
CLEAN_EVENTS = "clean/events"
QUARANTINE_EVENTS = "quarantine/events"
QUARANTINE_ITEMS = "quarantine/items"  # catalogue lines featurize could not use, with a reason
FEATURE_SEQUENCES = "features/sequences"
FEATURE_ITEMS = "features/items"
FEATURE_ITEM_TEXT = "features/item_text"  # title embeddings (pretrained sentence encoder), by item
CANDIDATES = "candidates"
IDENTITY_USERS = "identity/users"  # (pseudonym, user_id) of each day's clean users: only nightly_candidates reads it
KPIS = "kpis"  # kpi_report: what the lists served on D did over the next ATTNREC_KPI_HORIZON_DAYS days
EXPERIMENTS = "experiments"  # experiments/dt=D/allocation.json: the treatment share from D on (bandit)
ALLOCATION_FILE = "allocation.json"

#: The datasets each publish task of behavior_etl moves into place as one unit, in this order.
CLEAN_OUTPUTS = (IDENTITY_USERS, QUARANTINE_EVENTS, CLEAN_EVENTS)  # identity first: no clean pseudonym unmapped
FEATURE_OUTPUTS = (FEATURE_ITEMS, FEATURE_SEQUENCES)

STAGING = "_staging"
RECONCILIATION_FILE = "_reconciliation.json"
FEATURES_MANIFEST = "_manifest.json"  # in features/sequences/dt=D: the clean days and vocabulary featurize read
CANDIDATES_MANIFEST = "_manifest.json"  # in candidates/dt=D: the serving plan (versions, experiment, share)
SUCCESS_MARKER = "_SUCCESS"
#: Written into a staged partition when a publish starts and kept on publish: which publish put it in place.
PUBLISH_TOKEN = "_PUBLISH_TOKEN"
_PARTITION_NAME = re.compile(r"dt=\d{4}-\d{2}-\d{2}")


def is_partition_name(name: str) -> bool:
    """``dt=YYYY-MM-DD`` exactly (not a ``dt=D.replaced-*`` leftover of a publish)."""
    return bool(_PARTITION_NAME.fullmatch(name))


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


def raw_event_days(root: str, first: str, last: str) -> list[str]:
    """The landing days ``first <= d <= last`` whose ``raw/events/dt=d`` holds at least one data file, sorted."""
    from pyarrow import fs as pafs

    filesystem, base = filesystem_for(join(root, RAW_EVENTS))
    if filesystem.get_file_info(base).type == pafs.FileType.NotFound:
        return []
    days = []
    for info in filesystem.get_file_info(pafs.FileSelector(base)):
        name = info.base_name
        if info.type == pafs.FileType.Directory and _PARTITION_NAME.fullmatch(name) and first <= name[3:] <= last:
            files = filesystem.get_file_info(pafs.FileSelector(info.path))
            if any(f.type == pafs.FileType.File and not f.base_name.startswith((".", "_")) for f in files):
                days.append(name[3:])
    return sorted(days)


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


def tree_bytes(uri: str) -> int:
    """The bytes of every file under ``uri`` (0 when there is none)."""
    from pyarrow import fs as pafs

    filesystem, path = filesystem_for(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return 0
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return sum(info.size or 0 for info in infos if info.type == pafs.FileType.File)


def raw_day_bytes(root: str, dt: str) -> int:
    """The bytes of day ``dt``'s raw event files as landed (0 when there is no such partition)."""
    return tree_bytes(join(root, RAW_EVENTS, f"dt={dt}"))


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
        if info.type == pafs.FileType.Directory and _PARTITION_NAME.fullmatch(name):  # not dt=D.replaced-*
            if filesystem.get_file_info(f"{info.path}/{SUCCESS_MARKER}").type != pafs.FileType.NotFound:
                found.append(name[3:])
    return sorted(found)


def replace_dir(src_uri: str, dst_uri: str) -> str:
    """Move the finished directory ``src_uri`` to ``dst_uri``, replacing whatever is there.

    The old copy is moved aside first and deleted last, so ``dst_uri`` is missing only between two renames;
    copies an interrupted earlier call left aside (``<dst>.replaced-*``) are deleted once ``src_uri`` is in place.
    """
    from pyarrow import fs as pafs

    fs_, src = filesystem_for(src_uri)
    _, dst = filesystem_for(dst_uri)
    parent, name = dst.rsplit("/", 1)
    fs_.create_dir(parent, recursive=True)
    old = f"{dst}.replaced-{uuid.uuid4().hex[:8]}"
    had_old = fs_.get_file_info(dst).type != pafs.FileType.NotFound
    if had_old:
        fs_.move(dst, old)
    fs_.move(src, dst)
    for info in fs_.get_file_info(pafs.FileSelector(parent)):
        if info.base_name.startswith(f"{name}.replaced-") and info.type == pafs.FileType.Directory:
            fs_.delete_dir(info.path)
    return dst_uri


@contextmanager
def written_dir(dst_uri: str) -> Iterator[tuple[Any, str, str]]:
    """Build a directory aside and move it to ``dst_uri`` whole: yields ``(filesystem, path, uri)`` of a fresh
    temporary directory beside ``dst_uri``; when the block ends without an error it gets the success marker and replaces
    ``dst_uri`` (:func:`replace_dir`), on an error it is deleted and ``dst_uri`` is left as it was."""
    tmp_uri = f"{dst_uri}.tmp-{uuid.uuid4().hex[:8]}"
    filesystem, tmp = filesystem_for(tmp_uri)
    filesystem.create_dir(tmp, recursive=True)
    try:
        yield filesystem, tmp, tmp_uri
        with filesystem.open_output_stream(f"{tmp}/{SUCCESS_MARKER}"):
            pass
        replace_dir(tmp_uri, dst_uri)
    except BaseException:
        remove_dir(tmp_uri)
        raise


def remove_dir(uri: str) -> None:
    """Delete the directory ``uri`` and everything under it; nothing when it is not there."""
    from pyarrow import fs as pafs

    filesystem, path = filesystem_for(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        filesystem.delete_dir(path)


def publish(root: str, dataset: str, dt: str) -> str:
    """Move the staged partition of ``dataset`` for ``dt`` into place, replacing any earlier one (see
    :func:`publish_all`; a retry after the move succeeds)."""
    return publish_all(root, (dataset,), dt)[0]


def publish_manifest(root: str, datasets: tuple[str, ...], dt: str) -> str:
    """Where :func:`publish_all` records, before its first move, which staged copies it publishes."""
    name = "+".join(d.replace("/", ".") for d in datasets)
    return join(root, STAGING, "_publish", name, f"dt={check_dt(dt)}.json")


def _read_token(uri: str) -> str | None:
    path = join(uri, PUBLISH_TOKEN)
    if not exists(path):
        return None
    filesystem, local = filesystem_for(path)
    with filesystem.open_input_stream(local) as src:
        return src.read().decode().strip()


def publish_all(root: str, datasets: tuple[str, ...], dt: str, optional: tuple[str, ...] = ()) -> list[str]:
    """Publish the staged partitions of ``datasets`` (and of those ``optional`` ones that are staged complete) for
    ``dt`` as one unit; return the published paths.

    When every one of ``datasets`` is staged complete, a fresh publish starts: each staged copy gets a new
    ``_PUBLISH_TOKEN`` and a manifest of the tokens (:func:`publish_manifest`) is written, then the copies are
    moved in order. A retry after a partial failure finds some staged copies gone and resumes from the manifest:
    a dataset whose staged copy is gone counts as done only when its published partition carries this publish's
    token (the copy this publish staged), the others are moved. Anything else raises ``FileNotFoundError`` naming
    the dataset, the paths and the fix; nothing is moved then.
    """
    manifest_uri = publish_manifest(root, datasets, dt)
    staged = {d: staging(root, d, dt) for d in (*datasets, *optional)}
    if all(is_complete(staged[d]) for d in datasets):
        plan = {d: uuid.uuid4().hex for d in (*datasets, *(o for o in optional if is_complete(staged[o])))}
        for dataset, token in plan.items():
            filesystem, path = filesystem_for(join(staged[dataset], PUBLISH_TOKEN))
            with filesystem.open_output_stream(path) as out:
                out.write(token.encode())
        # a list, not an object: the order of the moves is kept
        write_json(manifest_uri, {"dt": dt, "publish": [{"dataset": d, "token": t} for d, t in plan.items()]})
    elif exists(manifest_uri):
        plan = {entry["dataset"]: entry["token"] for entry in read_json(manifest_uri)["publish"]}
    else:
        missing = next(d for d in datasets if not is_complete(staged[d]))
        raise FileNotFoundError(
            f"nothing complete to publish at {staged[missing]} (no {SUCCESS_MARKER}); "
            f"run the job that writes {missing} for {dt} first"
        )
    moves = []
    for dataset, token in plan.items():
        published = partition(root, dataset, dt)
        if is_complete(staged[dataset]) and _read_token(staged[dataset]) == token:
            moves.append(dataset)
        elif exists(staged[dataset]) and not is_complete(staged[dataset]):
            raise FileNotFoundError(
                f"nothing complete to publish at {staged[dataset]} (no {SUCCESS_MARKER}); "
                f"run the job that writes {dataset} for {dt} first"
            )
        elif exists(staged[dataset]) or _read_token(published) != token:
            raise FileNotFoundError(
                f"cannot finish publishing {', '.join(plan)} for {dt}: {dataset} is neither staged at "
                f"{staged[dataset]} nor published at {published} as this publish staged it (token {token} in "
                f"{manifest_uri}); re-run the jobs that write {', '.join(plan)} for {dt}, then publish again"
            )
    for dataset in moves:
        replace_dir(staged[dataset], partition(root, dataset, dt))
    return [partition(root, d, dt) for d in plan]


def write_json(uri: str, payload: dict[str, Any]) -> None:
    filesystem, path = filesystem_for(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(json.dumps(payload, indent=2, sort_keys=True).encode())


def read_json(uri: str) -> dict[str, Any]:
    filesystem, path = filesystem_for(uri)
    with filesystem.open_input_stream(path) as src:
        return json.loads(src.read().decode())
