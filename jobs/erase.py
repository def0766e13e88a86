"""Erase users: every line and row of the given raw user ids, from every dataset and every day.

    raw/events/dt=*/*          files rewritten without the users' lines (aside, then renamed over the file)
    quarantine/events/dt=*     rows whose raw line is one of theirs
    clean/events/dt=*          their pseudonym's rows; _reconciliation.json recounted, with an ``erased`` record
    features/sequences/dt=*    their pseudonym's row; features/items of the same day: statistics recomputed
    candidates/dt=*            their raw id's rows; _manifest.json's counts recounted
    identity/users/dt=*        their row (last: no clean or features pseudonym is ever left without one)
    erasure/erased_users.parquet   + SHA-256 of each pseudonym: clean quarantines later events as ``erased_user``
    erasure/log/<request>.json     the audit entry: request id, times, rows removed per dataset; no id, no pseudonym

A line is a user's when it parses as one JSON object whose ``user_id`` (a string, or a number written as the id's
text), trimmed of ASCII spaces as clean trims it, is the id (:func:`line_user`); raw files and quarantine rows use the
same test. A line that is not JSON names no user and stays. Parquet partitions are rewritten by one Spark
application (pyarrow for the small one-file partitions: quarantine, candidates), each to
``_staging/erasure/<request>/...`` and moved into place whole (``lake.replace_dir``), only when the users have rows
there; every other partition and file is left as it was, byte for byte. Other users' rows keep
their values (the same writes as the jobs that made them: same partitioning and sort).

Erasing users already erased removes nothing and succeeds. The key is checked against the lake's fingerprint (and
the erased-users list's) before anything is read or written: a wrong or missing key fails with nothing written.
KPIs (aggregates per arm), features/item_text (titles), quarantine/items (catalogue lines) and experiments/ hold no
user's rows and are not touched. docs/privacy.md#erasure.
"""

from __future__ import annotations

import datetime as dt_
import gzip
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretBytes

from attnrec import lake
from attnrec.settings import Settings

#: Where request files land: one raw id per line (blank lines and lines starting with # are skipped).
REQUESTS_DIR = "raw/erasure_requests"
LOG_DIR = "erasure/log"
ERASURE_STAGING = "erasure"  # under _staging/
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")
MAX_ID_CHARS = 1000


@dataclass
class Request:
    """What to erase: the raw ids (trimmed, distinct, in order), where they came from, the request files."""

    request_id: str
    user_ids: list[str]
    source: str  # "conf" or "files"
    files: list[str] = field(default_factory=list)


def check_user_ids(value: Any, where: str = 'conf "user_ids"') -> list[str]:
    """The trimmed, distinct ids of a request; ValueError naming the bad value's position (never the other ids)
    and the fix: not a list, an id that is not a non-blank string, or no id at all."""
    fix = 'trigger with {"user_ids": ["<raw id>", ...]} (raw ids as strings, as they appear in raw/events)'
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of raw user ids, not {type(value).__name__}; {fix}")
    if not value:
        raise ValueError(f"{where} is empty: nothing to erase; {fix}")
    ids: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"{where}[{i}] is a {type(item).__name__}, not a string; {fix}")
        trimmed = item.strip(" ")
        if not trimmed:
            raise ValueError(f"{where}[{i}] is blank; {fix}")
        if len(trimmed) > MAX_ID_CHARS:
            raise ValueError(f"{where}[{i}] is {len(trimmed)} characters long (at most {MAX_ID_CHARS}); {fix}")
        if trimmed not in ids:
            ids.append(trimmed)
    return ids


def new_request_id(now: dt_.datetime | None = None) -> str:
    now = now or dt_.datetime.now(dt_.timezone.utc)
    return f"erasure-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def pending_request_files(root: str) -> list[str]:
    """The request files waiting in ``raw/erasure_requests/`` (names starting with ``.`` or ``_`` are skipped)."""
    from pyarrow import fs as pafs

    base = lake.join(root, REQUESTS_DIR)
    filesystem, path = lake.filesystem_for(base)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = filesystem.get_file_info(pafs.FileSelector(path))
    return sorted(
        lake.join(base, i.base_name)
        for i in infos
        if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))
    )


def _read_text(uri: str) -> str:
    filesystem, path = lake.filesystem_for(uri)
    with filesystem.open_input_stream(path) as src:
        return src.read().decode("utf-8")


def resolve_request(root: str, conf: dict | None, request_id: str | None = None) -> Request:
    """The request of a DAG run: conf ``{"user_ids": [...]}``, or, without ``user_ids`` in the conf, every file in
    ``raw/erasure_requests/`` (one raw id per line). ValueError naming the bad value and the fix."""
    request_id = request_id or new_request_id()
    if not _REQUEST_ID.fullmatch(request_id):
        raise ValueError(f"request id {request_id!r} may hold only letters, digits and _.-")
    conf = conf or {}
    if not isinstance(conf, dict):
        raise ValueError(f'the run conf must be a JSON object such as {{"user_ids": ["..."]}}, not {conf!r}')
    unknown = sorted(set(conf) - {"user_ids"})
    if unknown:
        raise ValueError(f'unknown conf keys {unknown}; erase_users takes only {{"user_ids": ["<raw id>", ...]}}')
    if "user_ids" in conf:
        return Request(request_id, check_user_ids(conf["user_ids"]), "conf")
    files = pending_request_files(root)
    if not files:
        raise ValueError(
            f'nothing to erase: the run has no conf "user_ids" and {lake.join(root, REQUESTS_DIR)} holds no request '
            'file; trigger with {"user_ids": ["<raw id>", ...]} or drop a file there with one raw id per line'
        )
    ids: list[str] = []
    for uri in files:
        lines = [ln for ln in _read_text(uri).splitlines() if ln.strip(" \t\r") and not ln.lstrip().startswith("#")]
        name = uri.rsplit("/", 1)[1]
        ids += [i for i in check_user_ids([ln.strip(" \t\r") for ln in lines], f"request file {name} line") if i]
    return Request(request_id, list(dict.fromkeys(ids)), "files", files)


def line_user(line: bytes | str) -> str | None:
    """The user id a raw line names, as clean reads it (trimmed of ASCII spaces), or None: a line that is not one
    JSON object, or has no string (or integer) ``user_id``."""
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict):
        return None
    value = event.get("user_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value).strip(" ")


# ---------------------------------------------------------------- raw files


def _raw_files(root: str) -> list[tuple[str, str]]:
    """``(dt, file uri)`` of every data file of every raw/events partition."""
    from pyarrow import fs as pafs

    base = lake.join(root, lake.RAW_EVENTS)
    filesystem, path = lake.filesystem_for(base)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    found = []
    for day in filesystem.get_file_info(pafs.FileSelector(path)):
        if day.type == pafs.FileType.Directory and lake.is_partition_name(day.base_name):
            for f in filesystem.get_file_info(pafs.FileSelector(day.path)):
                if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_")):
                    found.append((day.base_name[3:], lake.join(base, day.base_name, f.base_name)))
    return sorted(found)


def count_lines(data: bytes) -> int:
    """Lines as Spark's text reader (lineSep ``\\n``) counts them: a last line without ``\\n`` counts too."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def erase_raw_file(uri: str, user_ids: set[str]) -> tuple[int, int]:
    """Rewrite one raw file without the lines of ``user_ids`` (other lines byte for byte); returns (lines removed,
    lines left). The new file is written beside it under a dot name (readers skip those) and renamed over it; a
    file left with no line is deleted."""
    filesystem, path = lake.filesystem_for(uri)
    with filesystem.open_input_stream(path, compression=None) as src:  # the bytes as stored (no gzip detection)
        data = src.read()
    zipped = data[:2] == b"\x1f\x8b"
    text = gzip.decompress(data) if zipped else data
    lines = text.split(b"\n")
    kept = [ln for ln in lines if line_user(ln) not in user_ids]
    removed = len(lines) - len(kept)
    if not removed:
        return 0, count_lines(text)
    out = b"\n".join(kept)
    if not count_lines(out):
        filesystem.delete_file(path)
        return removed, 0
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/.{name}.erasing-{uuid.uuid4().hex[:8]}"
    with filesystem.open_output_stream(tmp, compression=None) as dst:
        dst.write(gzip.compress(out, mtime=0) if zipped else out)
    filesystem.move(tmp, path)
    return removed, count_lines(out)


# ---------------------------------------------------------------- parquet partitions


def _copy_sidecars(src_uri: str, dst_uri: str) -> None:
    """Copy the partition's own small files (``_reconciliation.json``, ``_manifest.json``, ``_PUBLISH_TOKEN``)
    into the staged copy; Spark wrote ``_SUCCESS`` there itself."""
    from pyarrow import fs as pafs

    filesystem, src = lake.filesystem_for(src_uri)
    _, dst = lake.filesystem_for(dst_uri)
    for info in filesystem.get_file_info(pafs.FileSelector(src)):
        name = info.base_name
        if info.type == pafs.FileType.File and name.startswith("_") and name != lake.SUCCESS_MARKER:
            filesystem.copy_file(info.path, f"{dst}/{name}")


def _stage(root: str, request_id: str, dataset: str, dt: str) -> str:
    return lake.join(root, lake.STAGING, ERASURE_STAGING, request_id, dataset, f"dt={dt}")


def _affected_days(spark, root: str, dataset: str, column: str, values: list[str]) -> dict[str, int]:
    """{dt: rows whose ``column`` is one of ``values``} over every published partition of ``dataset``."""
    from pyspark.sql import functions as F

    days = lake.list_partitions(root, dataset)
    if not days:
        return {}
    base = lake.join(root, dataset)
    df = spark.read.option("basePath", base).parquet(*(lake.partition(root, dataset, d) for d in days))
    rows = df.where(F.col(column).isin(values)).groupBy(F.col("dt").cast("string").alias("dt")).count().collect()
    return {r["dt"]: r["count"] for r in rows}


def _rewrite(spark, root: str, request_id: str, dataset: str, dt: str, keep, write, edit_sidecars=None) -> None:
    """Stage ``dataset``'s partition ``dt`` without the erased rows (``keep``: DataFrame -> DataFrame; ``write``:
    (DataFrame, uri) -> None, the writer of the job that made it), then move it into place whole."""
    published = lake.partition(root, dataset, dt)
    staged = _stage(root, request_id, dataset, dt)
    write(keep(spark.read.parquet(published)), staged)
    _copy_sidecars(published, staged)
    if edit_sidecars:
        edit_sidecars(staged)
    lake.replace_dir(staged, published)


def _write_sequences(df, uri: str) -> None:  # jobs/featurize.py load()
    from attnrec.spark import without_dictionary
    from jobs.featurize import SEQUENCE_PLAIN_COLUMNS

    ordered = df.repartition(4, "user_id").sortWithinPartitions("user_id")
    without_dictionary(ordered.write.mode("overwrite"), SEQUENCE_PLAIN_COLUMNS).parquet(uri)


def _write_items(df, uri: str) -> None:  # jobs/featurize.py load()
    df.coalesce(1).sortWithinPartitions("item_idx").write.mode("overwrite").parquet(uri)


def _write_one_file(df, uri: str) -> None:  # identity: jobs/clean.py
    df.coalesce(1).write.mode("overwrite").parquet(uri)


def recompute_items(spark, root: str, dt: str, settings: Settings):
    """Day ``dt``'s features/items with the statistics (popularity, interactions, heat, first and last seen)
    recomputed from the clean days its features read (the manifest's ``clean_days``, now without the erased
    users); index, content and ``available`` as they were. The same code as featurize (``transform_items``)."""
    from pyspark.sql import functions as F

    from jobs.featurize import ITEM_COLUMNS, params_from, transform_items

    params = params_from(settings, dt)
    manifest = lake.read_json(lake.join(lake.partition(root, lake.FEATURE_SEQUENCES, dt), lake.FEATURES_MANIFEST))
    days = [d["dt"] for d in manifest["clean_days"]]
    old = spark.read.parquet(lake.partition(root, lake.FEATURE_ITEMS, dt))
    events = spark.read.parquet(*(lake.partition(root, lake.CLEAN_EVENTS, d) for d in days))
    vocab = old.select("item_id", "item_idx", "available")
    stats = transform_items(events, None, vocab, params)
    stat_columns = [c for c in ITEM_COLUMNS if c not in ("item_idx", "item_id", "title", "categories", "year")]
    stat_columns.remove("available")
    fresh = old.drop(*stat_columns).join(stats.select("item_id", *stat_columns), "item_id", "left")
    return fresh.select(*(F.col(c) for c in ITEM_COLUMNS))


# ---------------------------------------------------------------- reconciliation


def _published_rows(uri: str) -> int:
    import pyarrow.dataset as ds

    filesystem, path = lake.filesystem_for(uri)
    return ds.dataset(path, format="parquet", filesystem=filesystem, exclude_invalid_files=True).count_rows()


def _reasons(uri: str) -> dict[str, int]:
    import pyarrow.dataset as ds

    filesystem, path = lake.filesystem_for(uri)
    table = ds.dataset(path, format="parquet", filesystem=filesystem).to_table(columns=["reason"])
    return {r["values"]: r["counts"] for r in table.column("reason").value_counts().to_pylist()}


def recount(old: dict, raw_lines: int | None, clean: int, by_reason: dict[str, int]) -> dict:
    """Day D's reconciliation recounted from the data left after an erasure, with what left since recorded under
    ``erased`` (cumulative over erasures). ``raw_lines`` None: retention deleted the raw partition, so the
    duplicates cannot be recounted and stay; otherwise duplicates = raw - clean - quarantined, as clean counted."""
    quarantined = sum(by_reason.values())
    duplicates = old["duplicates"] if raw_lines is None else raw_lines - clean - quarantined
    raw = clean + quarantined + duplicates if raw_lines is None else raw_lines
    new = {
        **old,
        "raw_lines": raw,
        "clean": clean,
        "quarantined": quarantined,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "duplicates": duplicates,
    }
    erased = dict(old.get("erased") or {})
    for k in ("raw_lines", "clean", "quarantined", "duplicates"):
        erased[k] = erased.get(k, 0) + old[k] - new[k]
    gone = dict(erased.get("quarantined_by_reason") or {})
    for reason, n in old["quarantined_by_reason"].items():
        if n - by_reason.get(reason, 0):
            gone[reason] = gone.get(reason, 0) + n - by_reason.get(reason, 0)
    erased["quarantined_by_reason"] = dict(sorted(gone.items()))
    new["erased"] = erased
    if duplicates < 0 or new["raw_lines"] != clean + quarantined + duplicates:
        raise RuntimeError(
            f"reconciliation of dt={old['dt']} does not add up after the erasure (raw {raw}, clean {clean}, "
            f"quarantined {quarantined}, duplicates {duplicates}); re-run behavior_etl for {old['dt']}"
        )
    return new


def _write_json_atomic(uri: str, payload: dict) -> None:
    filesystem, path = lake.filesystem_for(uri)
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}"
    with filesystem.open_output_stream(tmp) as out:
        out.write(json.dumps(payload, indent=2, sort_keys=True).encode())
    filesystem.move(tmp, path)


# ---------------------------------------------------------------- the erasure


def run(spark, settings: Settings, request: Request, key: SecretBytes) -> dict:
    """Erase ``request``'s users from the lake at ``settings.data_root`` (``key``: checked by the caller with
    :func:`attnrec.privacy.lake_key`). Returns the audit entry (also written to ``erasure/log/``)."""
    from pyspark.sql import functions as F

    from attnrec.privacy import add_erased, erased_tag, key_fingerprint, pseudonymizer
    from jobs.clean import write_clean

    root = settings.data_root
    started = dt_.datetime.now(dt_.timezone.utc)
    ids = set(request.user_ids)
    to_pseudonym = pseudonymizer(key)
    pseudonyms = sorted({to_pseudonym(u) for u in ids})
    removed: dict[str, dict[str, int]] = {}  # dataset -> {dt: rows}

    def note(dataset: str, dt: str, n: int) -> None:
        if n:
            removed.setdefault(dataset, {})[dt] = removed.setdefault(dataset, {}).get(dt, 0) + n

    def log(step: str) -> None:
        print(f"erase {request.request_id}: {step}", flush=True)

    # 1. the erased-users list first: from now on clean quarantines their new events, whatever happens below
    add_erased(root, {erased_tag(p) for p in pseudonyms}, key_fingerprint(key))

    # 2. raw files (text), one file at a time
    raw_left: dict[str, int] = {}
    for dt, uri in _raw_files(root):
        gone, left = erase_raw_file(uri, ids)
        note(lake.RAW_EVENTS, dt, gone)
        raw_left[dt] = raw_left.get(dt, 0) + left
    log(f"raw files: {sum(removed.get(lake.RAW_EVENTS, {}).values())} lines removed")

    # 3. quarantine rows: the same test on the raw line (pyarrow: one small file per day, as clean writes it)
    for dt in lake.list_partitions(root, lake.QUARANTINE_EVENTS):
        note(lake.QUARANTINE_EVENTS, dt, erase_quarantine(root, request.request_id, dt, ids))

    # 4. clean events, features, candidates, identity: rows of the pseudonym (the raw id in candidates, identity)
    clean_days = _affected_days(spark, root, lake.CLEAN_EVENTS, "user_id", pseudonyms)
    for dt, n in sorted(clean_days.items()):
        _rewrite(spark, root, request.request_id, lake.CLEAN_EVENTS, dt,
                 lambda d: d.where(~F.col("user_id").isin(pseudonyms)), write_clean)  # fmt: skip
        note(lake.CLEAN_EVENTS, dt, n)
    log(f"clean events: {sum(clean_days.values())} rows removed")

    # reconciliation of every clean day whose counts changed (recounted, so a retried erasure still adds up)
    quarantine_days = set(lake.list_partitions(root, lake.QUARANTINE_EVENTS))
    for dt in lake.list_partitions(root, lake.CLEAN_EVENTS):
        recon_uri = lake.join(lake.partition(root, lake.CLEAN_EVENTS, dt), lake.RECONCILIATION_FILE)
        if not lake.exists(recon_uri):
            continue
        old = lake.read_json(recon_uri)
        by_reason = (
            _reasons(lake.partition(root, lake.QUARANTINE_EVENTS, dt))
            if dt in quarantine_days
            else dict(old["quarantined_by_reason"])
        )
        new = recount(old, raw_left.get(dt), _published_rows(lake.partition(root, lake.CLEAN_EVENTS, dt)), by_reason)
        if {k: new[k] for k in old if k != "erased"} != {k: old[k] for k in old if k != "erased"}:
            _write_json_atomic(recon_uri, new)

    sequence_days = _affected_days(spark, root, lake.FEATURE_SEQUENCES, "user_id", pseudonyms)
    items_recomputed: list[str] = []
    for dt, n in sorted(sequence_days.items()):
        _rewrite(spark, root, request.request_id, lake.FEATURE_SEQUENCES, dt,
                 lambda d: d.where(~F.col("user_id").isin(pseudonyms)), _write_sequences)  # fmt: skip
        note(lake.FEATURE_SEQUENCES, dt, n)
        items = lake.partition(root, lake.FEATURE_ITEMS, dt)
        if lake.is_complete(items):  # their events counted in the item statistics: recounted without them
            _rewrite(spark, root, request.request_id, lake.FEATURE_ITEMS, dt,
                     lambda _: recompute_items(spark, root, dt, settings), _write_items)  # fmt: skip
            items_recomputed.append(dt)
    log(f"features: {sum(sequence_days.values())} sequences removed")

    for dt in lake.list_partitions(root, lake.CANDIDATES):
        n = erase_candidates(root, request.request_id, dt, ids)
        note(lake.CANDIDATES, dt, n)

    identity_days = _affected_days(spark, root, lake.IDENTITY_USERS, "pseudonym", pseudonyms)
    for dt, n in sorted(identity_days.items()):
        _rewrite(spark, root, request.request_id, lake.IDENTITY_USERS, dt,
                 lambda d: d.where(~F.col("pseudonym").isin(pseudonyms)), _write_one_file)  # fmt: skip
        note(lake.IDENTITY_USERS, dt, n)
    lake.remove_dir(lake.join(root, lake.STAGING, ERASURE_STAGING, request.request_id))

    # 5. the request files: deleted once everything above is done (they hold the raw ids)
    for uri in request.files:
        filesystem, path = lake.filesystem_for(uri)
        filesystem.delete_file(path)

    newest_features = max(sequence_days, default=None)
    entry = {
        "request_id": request.request_id,
        "source": request.source,
        "request_files": len(request.files),
        "users": len(ids),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt_.datetime.now(dt_.timezone.utc).isoformat(timespec="seconds"),
        "rows_removed": {d: sum(days.values()) for d, days in sorted(removed.items())},
        "rows_removed_by_day": {d: dict(sorted(days.items())) for d, days in sorted(removed.items())},
        "item_statistics_recomputed": items_recomputed,
        "retrain_features_dt": newest_features and max(lake.list_partitions(root, lake.FEATURE_SEQUENCES)),
    }
    lake.write_json(lake.join(root, LOG_DIR, f"{request.request_id}.json"), entry)
    log(f"done: {entry['rows_removed']}")
    return entry


def erase_quarantine(root: str, request_id: str, dt: str, user_ids: set[str]) -> int:
    """Remove the rows whose raw line is one of the users' (:func:`line_user`, the test raw files get) from
    ``quarantine/events/dt``, with pyarrow: the partition is small (clean writes one file) and the test is Python.
    Returns the rows removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    published = lake.partition(root, lake.QUARANTINE_EVENTS, dt)
    filesystem, path = lake.filesystem_for(published)
    table = pq.read_table(path, filesystem=filesystem)
    theirs = [line is not None and line_user(line) in user_ids for line in table.column("raw_line").to_pylist()]
    n = sum(theirs)
    if not n:
        return 0
    kept = table.filter(pa.array([not t for t in theirs]))
    _stage_table(root, request_id, lake.QUARANTINE_EVENTS, dt, kept, "part-00000.zstd.parquet", "zstd")
    return n


def _stage_table(root: str, request_id: str, dataset: str, dt: str, table, name: str, compression: str, edit=None):
    """Write ``table`` as the one file of ``dataset``'s partition ``dt`` (with its sidecars, which ``edit`` may
    change: it gets the staged uri), then move it into place whole."""
    import pyarrow.parquet as pq

    published = lake.partition(root, dataset, dt)
    staged = _stage(root, request_id, dataset, dt)
    filesystem, staged_path = lake.filesystem_for(staged)
    filesystem.create_dir(staged_path, recursive=True)
    pq.write_table(table, f"{staged_path}/{name}", filesystem=filesystem, compression=compression)
    _copy_sidecars(published, staged)
    if edit:
        edit(staged)
    with filesystem.open_output_stream(f"{staged_path}/{lake.SUCCESS_MARKER}"):
        pass
    lake.replace_dir(staged, published)


def erase_candidates(root: str, request_id: str, dt: str, user_ids: set[str]) -> int:
    """Remove the users' rows from ``candidates/dt``, with pyarrow (nightly_candidates writes it that way, one
    file); the manifest's ``rows``, ``users`` and ``users_by_arm`` are recounted. Returns the rows removed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    published = lake.partition(root, lake.CANDIDATES, dt)
    filesystem, path = lake.filesystem_for(published)
    table = pq.read_table(path, filesystem=filesystem)
    theirs = pc.is_in(table.column("user_id"), value_set=pa.array(sorted(user_ids), pa.string()))
    n = pc.sum(theirs).as_py() or 0
    if not n:
        return 0
    kept = table.filter(pc.invert(theirs))

    def recount_manifest(staged: str) -> None:
        manifest_uri = lake.join(staged, lake.CANDIDATES_MANIFEST)
        if lake.exists(manifest_uri):
            manifest = lake.read_json(manifest_uri)
            arms = kept.group_by(["user_id", "arm"]).aggregate([]).column("arm").to_pylist()
            manifest.update(
                rows=kept.num_rows,
                users=len(arms),
                users_by_arm={arm: arms.count(arm) for arm in manifest.get("users_by_arm", {})},
            )
            lake.write_json(manifest_uri, manifest)

    _stage_table(root, request_id, lake.CANDIDATES, dt, kept, "part-00000.parquet", "snappy", recount_manifest)
    return n


def erase(settings: Settings, conf: dict | None, request_id: str | None = None, spark=None) -> dict:
    """Resolve the request (conf or request files), check the key, erase, return the audit entry. Raises
    ValueError (a bad request, a wrong or missing key) before anything is written."""
    from attnrec.privacy import lake_key

    request = resolve_request(settings.data_root, conf, request_id)
    key = lake_key(settings)  # a wrong or missing key fails here, having written nothing
    own = spark is None
    if own:
        from attnrec.spark import get_spark

        spark = get_spark("attnrec-erase")
    try:
        return run(spark, settings, request, key)
    finally:
        if own:
            spark.stop()
