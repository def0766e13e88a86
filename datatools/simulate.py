"""The synthetic users' next day: how they respond to the lists they were served, from their hidden taste.

``simulate(data_root, dt)`` rebuilds the hidden world of :mod:`datatools.generate` from the parameters it recorded
in ``<data_root>/_synthetic/world.json`` (a sidecar outside every lake dataset: no job, gate or DAG reads it) and
writes the raw events of day ``dt + 1`` to ``raw/events/dt=<dt+1>/`` in the RAW contract:

* ``part-NNNNN.jsonl.gz``: organic browsing, exactly the lines ``generate`` would have written for that day had the
  history been one day longer (same seed, same day index, the popularity drift replayed), so history continues;
* ``served-00000.jsonl.gz``: the response to ``candidates/dt=<dt>``. Each human user with a served list visits
  with probability :data:`VISIT_P` and is shown their top-N items (one ``impression`` each, in rank order). The
  user examines rank r with probability ``1 / log2(r + 1)`` and clicks an examined item with probability
  :data:`CLICK_P` (0.60 when the item is in the user's true favourite cluster, 0.05 otherwise); a click goes down
  the funnel view (dwell median 60 s in the favourite cluster, 8 s elsewhere) -> like / dislike / rate / share /
  add_to_cart -> purchase with probabilities that again depend on the favourite cluster (see :data:`FUNNEL`). An
  unclicked examined item may be skipped. Bots do not respond to lists. Event ids ``e<yyyymmdd>-r<n>`` and session
  ids ``s<yyyymmdd>-r<n>`` never collide with the organic ones; times fall inside day ``dt + 1`` (UTC).

So a list with more items from the user's favourite cluster earns more clicks, dwell and purchases: the ground
truth is the favourite cluster, which no event carries. Everything is seeded: the organic part by the world's
seed, the responses by ``seed`` (default: the world's); the same inputs give byte-identical files. The partition is
written aside and renamed into place with a ``_simulated.json`` marker (ignored by Spark and by clean), so a re-run
replaces it whole; a day that the history generator wrote (no marker) is never overwritten.

CLI: ``attnrec simulate --data-root DIR --dt D [--top-n 10] [--seed N]``.
"""

from __future__ import annotations

import datetime as dt_
import json
import uuid
from pathlib import Path
from typing import Any

from attnrec import lake
from attnrec.contracts import EVENT_TYPES, check_dt
from datatools.generate import (
    _DAY_MS,
    _HOURLY,
    _STEP_ORDER,
    WORLD_FILE,
    _gzip_writer,
    _local_root,
    _render,
    _rng,
    _World,
    day_sampler,
    day_start_ms,
    write_day,
)

#: In a simulated raw partition: what it was simulated from (the pipeline ignores ``_`` files).
MARKER = "_simulated.json"
SERVED_FILE = "served-00000.jsonl.gz"
ID_TAG = "r"  # event and session ids of responses to served lists: e<yyyymmdd>-r<n>, s<yyyymmdd>-r<n>

#: A human user with a served list comes back on D+1 with this probability.
VISIT_P = 0.85
#: Click probability of an examined item: (in the favourite cluster, elsewhere).
CLICK_P = (0.60, 0.05)
#: Funnel probabilities (in the favourite cluster, elsewhere): each step given the one before it.
FUNNEL: dict[str, tuple[float, float]] = {
    "skip": (0.05, 0.30),  # examined, not clicked
    "view": (0.95, 0.70),  # clicked
    "like": (0.30, 0.02),  # viewed
    "dislike": (0.01, 0.20),  # viewed, not liked
    "rate": (0.08, 0.08),  # viewed
    "share": (0.04, 0.01),  # viewed
    "add_to_cart": (0.25, 0.02),  # viewed
    "purchase": (0.50, 0.20),  # carted
}
VIEW_DWELL_MEDIAN_MS = (60_000, 8_000)
_RESPONSE_STREAM = 2  # random stream of the responses (generate uses 0: the world, 1: the days)


def load_world(data_root: str) -> tuple[_World, dict[str, Any]]:
    """The hidden world of ``data_root`` and its recorded parameters; FileNotFoundError naming the fix when the
    sidecar is missing (the lake was not made by ``attnrec generate``, or by a version before the sidecar)."""
    path = _local_root(data_root) / WORLD_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no synthetic world at {path}: simulate only continues a history made by the generator; run "
            f"'attnrec generate --data-root {data_root} --start YYYY-MM-DD ...' first (it records the world there)"
        )
    params = json.loads(path.read_text(encoding="utf-8"))
    start = dt_.date.fromisoformat(params["start"])
    return _World(int(params["seed"]), int(params["users"]), int(params["items"]), start), params


def read_served(data_root: str, dt: str, top_n: int):
    """(user_id, rank, item_id) columns of the published ``candidates/dt=dt`` with rank <= top_n, sorted by user
    and rank; FileNotFoundError naming the fix when the partition is not published."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = lake.partition(data_root, lake.CANDIDATES, dt)
    if not lake.is_complete(path):
        raise FileNotFoundError(
            f"no published candidates at {path} (no {lake.SUCCESS_MARKER}); serve day {dt} first: "
            f"airflow dags test nightly_candidates {dt}"
        )
    table = pq.read_table(path, columns=["user_id", "rank", "item_id"])
    table = table.filter(pc.less_equal(table["rank"], top_n))
    return table.sort_by([("user_id", "ascending"), ("rank", "ascending")])


def _indices(world: _World, table) -> tuple[Any, Any, Any]:
    """(user index, rank, internal item index) arrays of the served rows; ValueError for ids not of this world."""
    import numpy as np

    users = np.array([u[1:] if u[:1] == "u" else "" for u in table["user_id"].to_pylist()])
    items = np.array([i[1:] if i[:1] == "i" else "" for i in table["item_id"].to_pylist()])
    for name, values, n in (("user_id", users, world.n_users), ("item_id", items, world.n_items)):
        ok = np.char.isdigit(values) if len(values) else np.zeros(0, dtype=bool)
        num = np.where(ok, values, "0").astype(np.int64)
        ok &= (num >= 1) & (num <= n)
        if not ok.all():
            bad = table[name][int(np.flatnonzero(~ok)[0])].as_py()
            raise ValueError(
                f"served {name} {bad!r} is not in the synthetic world of this lake ({n} {name[:4]}s); the "
                "candidates must come from a pipeline run on this lake's generated history"
            )
    inverse = np.empty(world.n_items, dtype=np.int64)
    inverse[world.public_id - 1] = np.arange(world.n_items)
    item_index = inverse[items.astype(np.int64) - 1]
    return users.astype(np.int64) - 1, np.asarray(table["rank"].to_numpy(), dtype=np.int64), item_index


def responses(world: _World, rng, user, rank, item) -> dict[str, Any]:
    """Event columns (as :func:`datatools.generate._render` takes them) of every visiting user's response to their
    served rows ``user``, ``rank``, ``item`` (sorted by user, then rank), plus ``"hits"``: users who clicked."""
    import numpy as np

    T = len(user)
    visit_user = rng.random(world.n_users) < VISIT_P
    keep = visit_user[user] & ~world.is_bot[user]
    fav = world.cluster_of[item] == world.fav_cluster[user]  # (T,) the hidden truth
    r = rng.random((T, 10))

    def p(name: str):
        return np.where(fav, *FUNNEL[name])

    examined = keep & (r[:, 0] < 1.0 / np.log2(rank + 1.0))
    click = examined & (r[:, 1] < np.where(fav, *CLICK_P))
    skip = examined & ~click & (r[:, 2] < p("skip"))
    view = click & (r[:, 3] < p("view"))
    like = view & (r[:, 4] < p("like"))
    dislike = view & ~like & (r[:, 5] < p("dislike"))
    rate = view & (r[:, 6] < p("rate"))
    share = view & (r[:, 7] < p("share"))
    cart = view & (r[:, 8] < p("add_to_cart"))
    purchase = cart & (r[:, 9] < p("purchase"))
    by_name = {"impression": keep, "skip": skip, "click": click, "view": view, "like": like, "dislike": dislike,
               "rate": rate, "share": share, "add_to_cart": cart, "purchase": purchase}  # fmt: skip
    M = np.column_stack([by_name[t] for t in _STEP_ORDER])
    step_of, col = np.nonzero(M)  # (E,) row-major: a user's events in rank order, each step in funnel order
    E = len(step_of)
    type_index = np.array([EVENT_TYPES.index(t) for t in _STEP_ORDER])
    ev_user = user[step_of]
    ev_fav = fav[step_of]

    dwell = np.full(E, -1, dtype=np.int64)
    is_view, is_click = col == _STEP_ORDER.index("view"), col == _STEP_ORDER.index("click")
    dv = rng.lognormal(np.log(np.where(ev_fav, *VIEW_DWELL_MEDIAN_MS)), 0.8)
    dc = rng.lognormal(np.log(4_000), 0.7, size=E)
    dwell[is_view] = dv[is_view]
    dwell[is_click] = dc[is_click]
    np.minimum(dwell, 3 * 3600 * 1000, out=dwell)

    # One session per visiting user: gaps of a couple of seconds, a view's dwell before the next event.
    gap = np.maximum(rng.lognormal(np.log(2_000), 0.8, size=E).astype(np.int64), 50)
    after_view = np.zeros(E, dtype=bool)
    after_view[1:] = is_view[:-1]
    gap[after_view] += dwell[np.flatnonzero(after_view) - 1]
    ev_first = np.ones(E, dtype=bool)
    ev_first[1:] = ev_user[1:] != ev_user[:-1]
    gap[ev_first] = 0
    csum = np.cumsum(gap)
    first_idx = np.maximum.accumulate(np.where(ev_first, np.arange(E), 0))
    t_rel = csum - csum[first_idx]
    session = np.cumsum(ev_first) - 1  # (E,) 0.. per visiting user
    S = int(ev_first.sum())
    duration = np.zeros(S, dtype=np.int64)
    np.maximum.at(duration, session, t_rel)
    hourly = np.array(_HOURLY) / sum(_HOURLY)
    start = ((rng.choice(24, size=S, p=hourly) + rng.random(S)) * 3_600_000).astype(np.int64)
    start = np.clip(np.minimum(start, _DAY_MS - 1 - duration), 0, None)
    t_day = np.minimum(start[session] + t_rel, _DAY_MS - 1)
    rating = np.clip(np.round((np.where(ev_fav, 4.2, 2.6) + rng.normal(0, 0.7, size=E)) * 2) / 2, 0.5, 5.0)
    return {
        "user": ev_user,
        "item": world.public_id[item[step_of]],
        "etype": type_index[col],
        "t_day": t_day,
        "dwell": dwell,
        "rating": rating,
        "session": session,
        "device": world.device[ev_user],
        "offset": world.offset_min[ev_user],
        "served_users": int(len(np.unique(user))),
        "visitors": S,
        "clicks": int(click.sum()),
        "hits": int(len(np.unique(user[click]))),
    }


def simulate(data_root: str, dt: str, top_n: int = 10, seed: int | None = None) -> dict[str, Any]:
    """Write ``raw/events/dt=<dt+1>``: the next day's organic browsing plus every user's response to their top
    ``top_n`` served items of ``candidates/dt=dt``. Returns the counts (served users, visitors, impressions,
    clicks, users with a click) and the files written."""
    import numpy as np

    check_dt(dt)
    if not isinstance(top_n, int) or top_n < 1:
        raise ValueError(f"top_n={top_n!r} must be an integer >= 1, e.g. 10 (the list a user sees)")
    world, params = load_world(data_root)
    seed = int(params["seed"]) if seed is None else seed
    start = dt_.date.fromisoformat(params["start"])
    date = dt_.date.fromisoformat(dt) + dt_.timedelta(days=1)
    day = (date - start).days
    if day < 0:
        raise ValueError(f"dt={dt} is before the synthetic history, which starts on {params['start']}; simulate a day "
                         "on or after it")  # fmt: skip
    final = _local_root(lake.join(data_root, lake.RAW_EVENTS, f"dt={date.isoformat()}"))
    if final.exists() and not (final / MARKER).exists():
        raise ValueError(
            f"{final} holds events the history generator wrote (no {MARKER}); simulate would overwrite them: "
            f"simulate a dt whose next day is after the last generated day, or regenerate with fewer --days"
        )
    served = read_served(data_root, dt, top_n)

    logw = world.base_logw.copy()
    for d in range(1, day):  # replay the popularity drift up to the day before
        day_sampler(world, int(params["seed"]), d, logw)
    rng, cdf = day_sampler(world, int(params["seed"]), day, logw)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    organic = write_day(
        tmp, world, rng, cdf, day, date, int(params["events_per_day"]), float(params["bad_fraction"]),
        int(params["files_per_day"]),
    )  # fmt: skip

    user, rank, item = _indices(world, served)
    cols = responses(world, _rng(seed, _RESPONSE_STREAM, day), user, rank, item)
    order = np.argsort(cols["t_day"], kind="stable")
    ordered = {k: (v[order] if isinstance(v, np.ndarray) else v) for k, v in cols.items()}
    lines = _render(ordered, day_start_ms(date), date.strftime("%Y%m%d"), 0, tag=ID_TAG)
    raw, gz = _gzip_writer(tmp / SERVED_FILE)
    try:
        if lines:
            gz.write(("\n".join(lines) + "\n").encode())
    finally:
        gz.close()
        raw.close()
    summary = {
        "dt": date.isoformat(),
        "served_dt": dt,
        "top_n": top_n,
        "seed": seed,
        "organic_lines": organic["lines"],
        "served_users": cols["served_users"],
        "visitors": cols["visitors"],
        "impressions": int((cols["etype"] == EVENT_TYPES.index("impression")).sum()),
        "clicks": cols["clicks"],
        "users_with_a_click": cols["hits"],
        "served_lines": len(lines),
    }
    (tmp / MARKER).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    lake.replace_dir(str(tmp), str(final))
    files = [str(final / Path(p).name) for p in organic["files"]] + [str(final / SERVED_FILE)]
    return {**summary, "path": str(final), "files": files}
