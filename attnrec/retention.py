"""Retention: the partitions of raw/events and quarantine/ older than their settings allow are deleted.

``ATTNREC_RAW_RETENTION_DAYS`` and ``ATTNREC_QUARANTINE_RETENTION_DAYS`` (default 0: keep forever). Run for day D
with N days, every partition ``dt < D - N`` of the dataset goes (a day D - N is kept). Raw lines hold raw user ids
and quarantine rows the raw line, so these two datasets are the ones that expire; clean events and features
(pseudonymous) are never touched. Deleting is idempotent: a re-run or a backfill of an earlier day deletes nothing
more than the newest run already did.
"""

from __future__ import annotations

import datetime as dt_

from attnrec import lake
from attnrec.contracts import check_dt
from attnrec.settings import Settings

#: (dataset, the settings field with its retention in days)
RETAINED = (
    (lake.RAW_EVENTS, "raw_retention_days"),
    (lake.QUARANTINE_EVENTS, "quarantine_retention_days"),
    (lake.QUARANTINE_ITEMS, "quarantine_retention_days"),
)


def _days_on_disk(root: str, dataset: str) -> list[str]:
    """Every ``dt=`` partition of ``dataset``, complete or not (raw days have no completion marker)."""
    from pyarrow import fs

    base = lake.join(root, dataset)
    if not lake.exists(base):
        return []
    filesystem, path = lake.filesystem_for(base)
    names = [i.base_name for i in filesystem.get_file_info(fs.FileSelector(path)) if i.type == fs.FileType.Directory]
    return sorted(n.removeprefix("dt=") for n in names if lake.is_partition_name(n))


def expire(settings: Settings, dt: str) -> dict[str, list[str]]:
    """Delete the partitions that fell out of retention as of day ``dt``; returns {dataset: [deleted days]}
    (only datasets with a retention set), and prints one line per deleted partition for the task log."""
    day = dt_.date.fromisoformat(check_dt(dt))
    deleted: dict[str, list[str]] = {}
    for dataset, field in RETAINED:
        days = getattr(settings, field)
        if days <= 0:
            continue
        oldest_kept = (day - dt_.timedelta(days=days)).isoformat()
        gone = [d for d in _days_on_disk(settings.data_root, dataset) if d < oldest_kept]
        for d in gone:
            lake.remove_dir(lake.partition(settings.data_root, dataset, d))
            print(f"retention: deleted {dataset}/dt={d} (older than {days} days before {dt}: {field})", flush=True)
        deleted[dataset] = gone
    return deleted
