"""What the view shows, read from published lake partitions with plain pyarrow: the days, a day's users, a user's
history as the model saw it (features/sequences of D), the list served on D (candidates of D), what the user then
engaged with (clean events of the KPI window, once kpis/dt=D exists), and the day's reconciliation, Data Docs
pages and KPIs.

Only complete published partitions (``<dataset>/dt=D`` with ``_SUCCESS``) are read, never ``_staging``. Per-day
tables that every request needs (the user list, item titles) are cached, keyed by the ``_SUCCESS`` marker's
modification time, so a re-published partition is read afresh.
"""

from __future__ import annotations

import bisect
import datetime as dt_
import functools
from pathlib import Path
from typing import Any

from attnrec import lake
from attnrec.contracts import EVENT_TYPES, check_dt
from attnrec.settings import Settings
from expectations.runner import SUITE_NAMES

#: KPI figures the chart draws per arm over the last measured days.
KPI_CHART_DAYS = 14
#: Users a prefix search returns at most.
SEARCH_LIMIT = 20


class NotFound(LookupError):
    """A day, a partition or a user the view cannot show; the message names what is missing and where."""


def parse_day(value: str) -> str:
    """``value`` as a partition day, or ValueError naming the format (the API answers 400 with it)."""
    try:
        return check_dt(value.strip())
    except ValueError:
        raise ValueError(f"day {value!r} is not a date in the form YYYY-MM-DD, e.g. 1998-04-23") from None


def _published(root: str, dataset: str, dt: str) -> str | None:
    path = lake.partition(root, dataset, dt)
    return path if lake.is_complete(path) else None


def _require(root: str, dataset: str, dt: str) -> str:
    path = _published(root, dataset, dt)
    if path is None:
        raise NotFound(
            f"{dataset}/dt={dt} is not published (no {lake.SUCCESS_MARKER} at {lake.partition(root, dataset, dt)}); "
            f"published days: {', '.join(lake.list_partitions(root, dataset)[-5:]) or 'none'}"
        )
    return path


def _stamp(path: str) -> int:
    """Changes whenever the partition is published again (the move puts a new ``_SUCCESS`` in place)."""
    filesystem, local = lake.filesystem_for(lake.join(path, lake.SUCCESS_MARKER))
    return filesystem.get_file_info(local).mtime_ns or 0


def _read(path: str, columns: list[str] | None = None, where=None):
    """The parquet files of a partition as one Arrow table (``_``/``.`` files skipped); absent columns left out."""
    import pyarrow.dataset as ds

    filesystem, local = lake.filesystem_for(path)
    dataset = ds.dataset(local, filesystem=filesystem, format="parquet", ignore_prefixes=["_", "."])
    names = set(dataset.schema.names)
    return dataset.to_table(columns=[c for c in columns if c in names] if columns else None, filter=where)


def _user_is(user_id: str):
    import pyarrow.dataset as ds

    return ds.field("user_id") == user_id


def pseudonym(root: str, user_id: str) -> str:
    """The pseudonym under which features and clean events hold the (raw) ``user_id`` the page is asked for: its
    row in the published ``identity/users`` partitions. Raises NotFound when no published day has the user."""
    for day in sorted(lake.list_partitions(root, lake.IDENTITY_USERS), reverse=True):
        found = _read(lake.partition(root, lake.IDENTITY_USERS, day), ["pseudonym"], _user_is(user_id))
        if found.num_rows:
            return found.column("pseudonym")[0].as_py()
    raise NotFound(
        f"user {user_id!r} has no row in {lake.IDENTITY_USERS} (the pseudonyms of clean users); check the id, or "
        "re-run behavior_etl for the days the user was active"
    )


@functools.lru_cache(maxsize=8)
def _day_users(path: str, stamp: int) -> tuple[str, ...]:
    import pyarrow.compute as pc

    return tuple(sorted(pc.unique(_read(path, ["user_id"]).column("user_id")).to_pylist()))


@functools.lru_cache(maxsize=4)
def _day_items(path: str, stamp: int) -> dict[str, tuple[str | None, list[str]]]:
    table = _read(path, ["item_id", "title", "categories"])
    titles = table.column("title").to_pylist() if "title" in table.column_names else [None] * table.num_rows
    cats = table.column("categories").to_pylist() if "categories" in table.column_names else [[]] * table.num_rows
    return {i: (t, list(c or [])) for i, t, c in zip(table.column("item_id").to_pylist(), titles, cats)}


def days(root: str) -> list[str]:
    """Days with published candidates, newest first."""
    return sorted(lake.list_partitions(root, lake.CANDIDATES), reverse=True)


def users(root: str, dt: str) -> tuple[str, ...]:
    """The users served on ``dt`` (candidates of the day), sorted."""
    path = _require(root, lake.CANDIDATES, dt)
    return _day_users(path, _stamp(path))


def search_users(root: str, dt: str, prefix: str, limit: int = SEARCH_LIMIT) -> list[str]:
    """Users served on ``dt`` whose id starts with ``prefix`` (sorted; at most ``limit``)."""
    found = users(root, dt)
    start = bisect.bisect_left(found, prefix)
    out = []
    for user_id in found[start:]:
        if not user_id.startswith(prefix) or len(out) == limit:
            break
        out.append(user_id)
    return out


def _items(root: str, dt: str) -> dict[str, tuple[str | None, list[str]]]:
    path = _published(root, lake.FEATURE_ITEMS, dt)
    return _day_items(path, _stamp(path)) if path else {}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt_.datetime.fromtimestamp(ms / 1000, tz=dt_.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def history(root: str, dt: str, user_id: str, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """The user's events in features/sequences of ``dt`` (what the model saw), newest first, one page of them.

    ``rating`` and ``attention_strength`` are arrays of later feature versions: None while the partition has none.
    """
    path = _require(root, lake.FEATURE_SEQUENCES, dt)
    alias = pseudonym(root, user_id)  # features carry the pseudonym
    arrays = ["item_ids", "event_types", "event_times_ms", "dwell_ms", "ratings", "attention_strength", "interest"]
    rows = _read(path, ["user_id", *arrays, "events_total", "seen_item_ids"], _user_is(alias)).to_pylist()
    if not rows:
        raise NotFound(f"user {user_id!r} has no sequence in features/sequences/dt={dt}")
    row = rows[0]
    n = len(row["item_ids"])
    items = _items(root, dt)
    page = []
    for i in range(n - 1 - offset, max(n - 1 - offset - limit, -1), -1):  # newest first
        item_id = row["item_ids"][i]
        title, categories = items.get(item_id, (None, []))
        page.append(
            {
                "time": _iso(row["event_times_ms"][i]),
                "event_type": row["event_types"][i],
                "item_id": item_id,
                "title": title,
                "categories": categories,
                "dwell_ms": row["dwell_ms"][i],
                "rating": row["ratings"][i] if row.get("ratings") else None,
                "attention_strength": row["attention_strength"][i] if row.get("attention_strength") else None,
                "interest": row["interest"][i] if row.get("interest") else None,
            }
        )
    return {
        "total": n,
        "events_total": row.get("events_total"),
        "offset": offset,
        "limit": limit,
        "rows": page,
    }


def positive_event_types(settings: Settings) -> tuple[str, ...]:
    """Event types that count as engagement: neither exposure nor negative (the same split as ``interest``)."""
    skip = set(settings.exposure_event_types) | set(settings.negative_event_types)
    return tuple(t for t in EVENT_TYPES if t not in skip)


def outcome(settings: Settings, dt: str, user_id: str) -> dict[str, Any]:
    """What the user engaged with in the KPI window of ``dt`` (clean events of D+1 .. D+H), once kpi_report has
    measured the day (kpis/dt=D published); ``measured`` False and no items before that."""
    import pyarrow.dataset as ds

    root = settings.data_root
    if _published(root, lake.KPIS, dt) is None:
        return {"measured": False, "days": [], "items": []}
    first = dt_.date.fromisoformat(dt)
    window = [str(first + dt_.timedelta(days=d)) for d in range(1, settings.kpi_horizon_days + 1)]
    alias = pseudonym(root, user_id)  # clean events carry the pseudonym
    engaged: set[str] = set()
    read = []
    for day in window:
        path = _published(root, lake.CLEAN_EVENTS, day)
        if path is None:
            continue
        read.append(day)
        where = _user_is(alias) & ds.field("event_type").isin(list(positive_event_types(settings)))
        engaged.update(_read(path, ["item_id"], where).column("item_id").to_pylist())
    return {"measured": True, "days": read, "items": sorted(engaged)}


def served(settings: Settings, dt: str, user_id: str) -> dict[str, Any]:
    """The user's list in candidates of ``dt``, by rank, each row marked ``engaged`` when the user then engaged
    with the item in the KPI window."""
    root = settings.data_root
    path = _require(root, lake.CANDIDATES, dt)
    columns = ["rank", "item_id", "score", "model_name", "model_version", "arm", "experiment_id"]
    table = _read(path, ["user_id", *columns], _user_is(user_id)).sort_by("rank")
    if table.num_rows == 0:
        raise NotFound(
            f"user {user_id!r} was not served on {dt} (no rows in candidates/dt={dt}); search by id prefix or pick "
            "a random user"
        )
    after = outcome(settings, dt, user_id)
    engaged = set(after["items"])
    items = _items(root, dt)
    rows = []
    for row in table.to_pylist():
        title, categories = items.get(row["item_id"], (None, []))
        rows.append(
            {
                "rank": row["rank"],
                "item_id": row["item_id"],
                "title": title,
                "categories": categories,
                "score": row["score"],
                "model_version": row["model_version"],
                "arm": row.get("arm"),
                "experiment_id": row.get("experiment_id"),
                "engaged": row["item_id"] in engaged,
            }
        )
    return {"rows": rows, "outcome": after}


def manifest(root: str, dt: str) -> dict[str, Any]:
    """candidates/dt=D/_manifest.json: the serving plan; a manifest from before experiments reads as control only."""
    path = _require(root, lake.CANDIDATES, dt)
    plan = (
        lake.read_json(lake.join(path, lake.CANDIDATES_MANIFEST))
        if lake.exists(lake.join(path, lake.CANDIDATES_MANIFEST))
        else {}
    )
    plan.setdefault("model_versions", {"control": plan["model_version"]} if plan.get("model_version") else {})
    return plan


def reconciliation(root: str, dt: str) -> dict[str, Any] | None:
    path = _published(root, lake.CLEAN_EVENTS, dt)
    recon = lake.join(path, lake.RECONCILIATION_FILE) if path else None
    return lake.read_json(recon) if recon and lake.exists(recon) else None


def data_docs_pages(settings: Settings, dt: str) -> dict[str, str | None]:
    """Per gate, the newest Data Docs page of its run for ``dt``, relative to the Data Docs folder (None: no run for
    the day, or a lake root that is a URI, where Data Docs are not built)."""
    pages: dict[str, str | None] = {suite: None for suite in SUITE_NAMES}
    if not settings.is_local_lake:
        return pages
    base = Path(lake.data_docs_dir(str(settings.local_data_root)))
    for suite in SUITE_NAMES:
        found = sorted((base / "validations" / suite).glob(f"{suite}-{dt}-*/*/*.html"))
        if found:  # the run name ends in its UTC start time, so the last one is the newest
            pages[suite] = found[-1].relative_to(base).as_posix()
    return pages


def data_docs_file(settings: Settings, name: str) -> Path:
    """The Data Docs file ``name`` (a path relative to the Data Docs folder), only from inside that folder."""
    if not settings.is_local_lake:
        raise NotFound(f"no Data Docs: the lake root {settings.data_root} is not a local path, where none are built")
    base = Path(lake.data_docs_dir(str(settings.local_data_root))).resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise NotFound(f"no Data Docs page {name!r} under {base}")
    return path


def kpis(root: str, dt: str) -> dict[str, Any]:
    """KPI rows of ``dt`` (None when the day is not measured yet) and the chart's series over the last days."""
    path = _published(root, lake.KPIS, dt)
    today = _read(path).to_pylist() if path else None
    measured = [d for d in lake.list_partitions(root, lake.KPIS) if d <= dt][-KPI_CHART_DAYS:]
    series: dict[str, list[dict[str, Any]]] = {}
    for day in measured:
        columns = ["arm", "model_version", "users", "active_users", "hit_rate_at_10", "ctr"]
        for row in _read(lake.partition(root, lake.KPIS, day), columns).to_pylist():
            series.setdefault(row["arm"], []).append({"dt": day, **row})
    return {"rows": today, "series": series}
