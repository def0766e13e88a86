"""Synthetic behaviour logs in the RAW contract (DESIGN.md), for tests, demos and load tests.

Writes ``raw/events/dt=D/part-NNNNN.jsonl.gz`` (one JSON event per line) for each landing day and
``raw/items/synthetic-items.jsonl`` (the catalogue). The data has the shapes the pipeline must cope with:

* Zipf item popularity that drifts from day to day, and new items that go live on later days;
* users with log-normal activity, plus a few heavy "bot" users (long, sub-second sessions of
  impressions and clicks on random items);
* sessions of a few steps; each step shows an item (impression) and may go down a funnel
  click -> view (log-normal dwell) -> like / dislike / rate / share / add_to_cart -> purchase, or be
  skipped; a purchase always follows an add_to_cart of the same item in the same session;
* sequential taste: items sit in clusters (each with a main genre), a session walks forward through a
  cluster (the next item is usually the next one or two along) and sometimes jumps, and users prefer one
  cluster (more clicks, carts and higher ratings there), so an order-aware model has something to learn;
* event_time inside the landing day (UTC), as epoch milliseconds (android/tv clients) or ISO-8601
  with the user's UTC offset (ios/web clients).

With ``bad_fraction > 0`` the real world's bad input is mixed in, each line with exactly one defect and
each kind counted (see :data:`BAD_KINDS`). Bad lines other than exact duplicates carry fresh event ids
(``e<yyyymmdd>-x<n>``), so they never collide with a good event.

Streaming: events are generated in vectorised numpy chunks and written as they are made, so memory
stays bounded however many events a day has. Everything derives from ``seed``: the same arguments give
byte-identical files (gzip with no name or mtime in the header), and day ``k`` does not depend on how
many days follow it.

CLI::

    attnrec generate --data-root DIR --start 2026-01-01 --days 3 --users 1000 --items 500 \\
        --events-per-day 20000 [--bad-fraction 0.02] [--seed 42] [--files-per-day 1]
"""

from __future__ import annotations

import datetime as dt_
import gzip
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnrec import lake
from attnrec.contracts import EVENT_TYPES, check_dt

#: Kinds of bad line that ``bad_fraction`` mixes in, with their share of the bad lines.
BAD_KINDS: dict[str, float] = {
    "duplicate": 0.30,  # an exact copy of a good line (at-least-once delivery)
    "malformed_json": 0.10,  # a good line cut short (unterminated object)
    "not_object": 0.10,  # valid JSON that is not an object: [1,2,3], "text", 42, true, null, []
    "missing_id": 0.10,  # event_id, user_id or item_id absent or null
    "unknown_event_type": 0.10,  # hover, purchse, checkout, scroll, unknown
    "bad_event_time": 0.10,  # year 1900, year 2999/3000, or a garbage string
    "negative_dwell": 0.10,  # dwell_ms < 0
    "bad_rating": 0.10,  # a rate event with rating outside 0.5..5 (0, -1, 5.5, 6, 10)
}

ITEMS_FILE = "synthetic-items.jsonl"
GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
    "Biography", "Sport",
)  # fmt: skip
DEVICES: tuple[str, ...] = ("ios", "android", "web", "tv")
_EPOCH_DEVICES = (1, 3)  # android and tv send epoch ms; ios and web send ISO-8601 with an offset
_OFFSETS_MIN: tuple[int, ...] = (0, 0, 60, 120, 330, -300, -480, 540, -180)
_OFFSET_TEXT = {o: f"{'+' if o >= 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}" for o in _OFFSETS_MIN}

CHUNK_EVENTS = 20_000  # events generated (and held) at a time; bounds memory
_WRITE_BATCH = 10_000  # lines joined per gzip write
_DAY_MS = 86_400_000
_CLUSTER_SIZE = 25  # items per taste cluster
_BOT_EVENT_SHARE = 0.03  # share of a day's events that bots make
_LATE_ITEM_SHARE = 0.10  # share of the catalogue that goes live after the first day
_HOURLY = (2, 1.5, 1, 1, 1, 1.5, 2.5, 3.5, 4.5, 5, 5, 5, 5, 5, 5, 5, 5.5, 6, 6.5, 7, 7, 6, 4.5, 3)

# Within a step, event columns in the order they happen; index into EVENT_TYPES.
_STEP_ORDER = ("impression", "skip", "click", "view", "like", "dislike", "rate", "share", "add_to_cart", "purchase")
_HUMAN_STEPS_P = 0.25  # steps per session ~ 1 + Geometric(0.25): mean 4
_HUMAN_EVENTS_PER_STEP = 1.85  # rough expectation, used to size chunks (adapted as we go)
_BOT_STEPS = (50, 300)


def _rng(seed: int, *stream: int):
    import numpy as np

    return np.random.default_rng([seed, *stream])


class _World:
    """Everything that is fixed for a seed: the catalogue, the clusters, the users."""

    def __init__(self, seed: int, users: int, items: int, start: dt_.date):
        import numpy as np

        rng = _rng(seed, 0)
        self.n_users, self.n_items = users, items
        # Internal item index j: contiguous per cluster; public id is a shuffled number.
        self.n_clusters = max(1, items // _CLUSTER_SIZE)
        j = np.arange(items)
        self.cluster_of = (j * self.n_clusters) // items  # (N,)
        self.cluster_start = np.searchsorted(self.cluster_of, np.arange(self.n_clusters))  # (C,)
        self.cluster_size = np.diff(np.append(self.cluster_start, items))  # (C,)
        self.public_id = rng.permutation(items) + 1  # item "i<public_id>"
        cluster_genre = rng.integers(len(GENRES), size=self.n_clusters)
        # Zipf popularity over a random ranking.
        rank = rng.permutation(items)
        self.base_logw = -1.05 * np.log1p(rank)
        # Most items are live from day 0; the rest go live on day 1..30.
        late = rng.random(items) < (_LATE_ITEM_SHARE if items > 1 else 0.0)
        self.live_day = np.where(late, rng.integers(1, 31, size=items), 0)
        self.drift_sigma = 0.25

        # Users: log-normal activity, a favourite cluster, a device, a UTC offset; a few bots.
        self.fav_cluster = rng.integers(self.n_clusters, size=users)
        self.device = rng.choice(len(DEVICES), size=users, p=[0.35, 0.35, 0.25, 0.05])
        self.offset_min = rng.choice(np.array(_OFFSETS_MIN), size=users)
        activity = rng.lognormal(0.0, 1.0, size=users)
        n_bots = 0 if users < 20 else max(1, round(users * 0.002))
        self.is_bot = np.zeros(users, dtype=bool)
        self.is_bot[rng.choice(users, size=n_bots, replace=False)] = True
        if n_bots:
            # Session weights so that bots make about _BOT_EVENT_SHARE of the events.
            human_ev = (1 + (1 - _HUMAN_STEPS_P) / _HUMAN_STEPS_P) * _HUMAN_EVENTS_PER_STEP
            bot_ev = (sum(_BOT_STEPS) / 2) * 1.9
            bot_sessions = _BOT_EVENT_SHARE * human_ev / ((1 - _BOT_EVENT_SHARE) * bot_ev + _BOT_EVENT_SHARE * human_ev)
            activity[~self.is_bot] *= (1 - bot_sessions) / activity[~self.is_bot].sum()
            activity[self.is_bot] = bot_sessions / n_bots
        self.user_cdf = np.cumsum(activity / activity.sum())

        # Catalogue rows.
        self.items_rows: list[dict[str, Any]] = []
        adjectives = ("Silent", "Last", "Golden", "Broken", "Hidden", "Endless", "Red", "Lost", "Wild", "Final",
                      "Secret", "Burning", "Quiet", "Distant", "Electric", "Midnight")  # fmt: skip
        nouns = ("River", "Empire", "Garden", "Signal", "Harbor", "Winter", "Machine", "Promise", "Road", "Storm",
                 "Kingdom", "Mirror", "Summer", "Frontier", "Letter", "Orbit")  # fmt: skip
        n_extra = rng.choice(3, size=items, p=[0.45, 0.4, 0.15])
        extra = rng.integers(len(GENRES), size=(items, 2))
        adj = rng.integers(len(adjectives), size=items)
        noun = rng.integers(len(nouns), size=items)
        year = np.clip(np.round(start.year - rng.exponential(12.0, size=items)), 1920, start.year).astype(int)
        for k in range(items):
            cats = [GENRES[cluster_genre[self.cluster_of[k]]]]
            for g in extra[k, : n_extra[k]]:
                if GENRES[g] not in cats:
                    cats.append(GENRES[g])
            row: dict[str, Any] = {
                "item_id": f"i{self.public_id[k]}",
                "title": f"The {adjectives[adj[k]]} {nouns[noun[k]]} {self.public_id[k]}",
                "categories": cats,
                "release_year": int(start.year if self.live_day[k] > 0 else year[k]),
            }
            self.items_rows.append(row)
        self.items_rows.sort(key=lambda r: int(r["item_id"][1:]))

    def day_popularity(self, logw):
        """Per-day sampling table: the CDF over internal item index (zero weight for items not live)."""
        import numpy as np

        w = np.exp(logw - logw.max())
        return np.cumsum(w / w.sum())


def _sample_cdf(cdf, u):
    import numpy as np

    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _segment_start(flags):
    """For each position, the index of the most recent True in ``flags`` (flags[0] must be True)."""
    import numpy as np

    idx = np.where(flags, np.arange(len(flags)), 0)
    return np.maximum.accumulate(idx)


def _make_chunk(world: _World, rng, cdf, day: int, n_sessions: int, first_session: int):
    """Generate ``n_sessions`` sessions of one day. Returns event columns in session order."""
    import numpy as np

    S = n_sessions
    user = _sample_cdf(world.user_cdf, rng.random(S))  # (S,)
    bot_s = world.is_bot[user]
    steps = np.where(bot_s, rng.integers(*_BOT_STEPS, size=S), rng.geometric(_HUMAN_STEPS_P, size=S))  # (S,)
    T = int(steps.sum())
    sess = np.repeat(np.arange(S), steps)  # (T,) session of each step
    step_first = np.zeros(T, dtype=bool)
    step_first[np.cumsum(steps) - steps] = True
    bot = bot_s[sess]
    fav = world.fav_cluster[user[sess]]

    # Items: a walk that moves forward through a cluster and sometimes jumps to a new anchor.
    jump = step_first | bot | (rng.random(T) < 0.2)
    n_jump = int(jump.sum())
    u = rng.random(n_jump)
    to_fav = rng.random(n_jump) < 0.5
    jfav = fav[jump]
    lo = np.where(world.cluster_start[jfav] > 0, cdf[world.cluster_start[jfav] - 1], 0.0)
    hi = cdf[world.cluster_start[jfav] + world.cluster_size[jfav] - 1]
    anchor_pop = _sample_cdf(cdf, u)
    anchor_fav = _sample_cdf(cdf, lo + u * (hi - lo))
    anchor_bot = rng.integers(world.n_items, size=n_jump)
    anchor = np.where(bot[jump], anchor_bot, np.where(to_fav, anchor_fav, anchor_pop))
    inc = np.where(jump, 0, rng.choice(np.array([1, 2, 3]), size=T, p=[0.7, 0.2, 0.1]))
    csum = np.cumsum(inc)
    seg = _segment_start(jump)
    anchor_full = np.empty(T, dtype=np.int64)
    anchor_full[jump] = anchor
    anchor_full = anchor_full[seg]
    c = world.cluster_of[anchor_full]
    item = world.cluster_start[c] + (anchor_full - world.cluster_start[c] + csum - csum[seg]) % world.cluster_size[c]
    not_live = world.live_day[item] > day
    if not_live.any():
        item[not_live] = _sample_cdf(cdf, rng.random(int(not_live.sum())))

    # Funnel per step.
    liked = world.cluster_of[item] == fav
    r = rng.random((T, 9))
    click = np.where(bot, r[:, 0] < 0.9, r[:, 0] < np.where(liked, 0.45, 0.25))
    human = ~bot
    skip = human & ~click & (r[:, 1] < 0.2)
    view = human & click & (r[:, 2] < 0.85)
    like = view & (r[:, 3] < np.where(liked, 0.12, 0.04))
    dislike = view & ~like & (r[:, 4] < np.where(liked, 0.01, 0.05))
    rate = view & (r[:, 5] < 0.06)
    share = view & (r[:, 6] < 0.02)
    cart = view & (r[:, 7] < np.where(liked, 0.12, 0.05))
    purchase = cart & (r[:, 8] < 0.35)
    M = np.column_stack([np.ones(T, dtype=bool), skip, click, view, like, dislike, rate, share, cart, purchase])
    step_of, col = np.nonzero(M)  # (E,) row-major: events of a step in _STEP_ORDER
    E = len(step_of)
    type_index = np.array([EVENT_TYPES.index(t) for t in _STEP_ORDER])
    etype = type_index[col]  # (E,) index into EVENT_TYPES
    ev_sess = sess[step_of]
    ev_bot = bot[step_of]
    ev_user = user[ev_sess]

    # Dwell: log-normal on views (median 30 s) and clicks (median 4 s; bots 80 ms).
    is_view, is_click = col == 3, col == 2
    dwell = np.full(E, -1, dtype=np.int64)
    dv = rng.lognormal(np.log(30_000), 1.0, size=E)
    dc = np.where(ev_bot, rng.lognormal(np.log(80), 0.5, size=E), rng.lognormal(np.log(4_000), 0.7, size=E))
    dwell[is_view] = dv[is_view]
    dwell[is_click] = dc[is_click]
    np.minimum(dwell, 3 * 3600 * 1000, out=dwell)

    # Times: gaps by event kind, the view's dwell before the next event, sessions kept inside the day.
    median_gap = np.array([6_000, 1_500, 2_500, 800, 2_000, 2_000, 4_000, 2_000, 2_000, 20_000], dtype=float)
    gap = rng.lognormal(np.log(np.where(ev_bot, 300.0, median_gap[col])), np.where(ev_bot, 0.5, 0.8))
    gap = np.maximum(gap.astype(np.int64), 50)
    after_view = np.zeros(E, dtype=bool)
    after_view[1:] = is_view[:-1]
    gap[after_view] += dwell[np.flatnonzero(after_view) - 1]
    ev_first = np.zeros(E, dtype=bool)
    ev_first[0] = True
    ev_first[1:] = ev_sess[1:] != ev_sess[:-1]
    gap[ev_first] = 0
    csum = np.cumsum(gap)
    first_idx = _segment_start(ev_first)
    t_rel = csum - csum[first_idx]
    duration = np.zeros(S, dtype=np.int64)
    np.maximum.at(duration, ev_sess, t_rel)
    hourly = np.array(_HOURLY) / sum(_HOURLY)
    start = ((rng.choice(24, size=S, p=hourly) + rng.random(S)) * 3_600_000).astype(np.int64)
    start = np.clip(np.minimum(start, _DAY_MS - 1 - duration), 0, None)
    t_day = np.minimum(start[ev_sess] + t_rel, _DAY_MS - 1)

    # Ratings on rate events, by halves, higher in the favourite cluster.
    rating = np.clip(np.round((np.where(liked, 3.7, 3.0) + rng.normal(0, 1.0, size=T)) * 2) / 2, 0.5, 5.0)

    # Device per session: the user's own mostly; 1% of sessions send none.
    dev = np.where(rng.random(S) < 0.85, world.device[user], rng.integers(len(DEVICES), size=S))
    dev = np.where(rng.random(S) < 0.01, -1, dev)
    return {
        "user": ev_user,
        "item": world.public_id[item[step_of]],
        "etype": etype,
        "t_day": t_day,
        "dwell": dwell,
        "rating": rating[step_of],
        "session": ev_sess + first_session,
        "device": dev[ev_sess],
        "offset": world.offset_min[ev_user],
        "n_sessions": S,
    }


def _render(cols: dict[str, Any], day_start_ms: int, day_key: str, first_event: int, tag: str = "") -> list[str]:
    """Good events of a chunk as JSON lines (ids are plain ASCII, so no escaping is needed). ``tag`` goes in front
    of the event and session numbers (``e<yyyymmdd>-<tag><n>``), so another writer's ids never collide."""
    import numpy as np

    E = len(cols["user"])
    t_ms = cols["t_day"] + day_start_ms
    times: list[Any] = t_ms.tolist()  # epoch ms (android, tv) stay ints
    iso_idx = np.flatnonzero(~np.isin(cols["device"], _EPOCH_DEVICES))  # ios, web: ISO-8601 with an offset
    offset = cols["offset"][iso_idx]
    iso = np.datetime_as_string((t_ms[iso_idx] + offset * 60_000).astype("datetime64[ms]"), unit="ms")
    for k, local, o in zip(iso_idx.tolist(), iso.tolist(), offset.tolist()):
        times[k] = f'"{local}{_OFFSET_TEXT[o]}"'

    extra = [""] * E
    has_dwell = np.flatnonzero(cols["dwell"] >= 0)
    for k, v in zip(has_dwell.tolist(), cols["dwell"][has_dwell].tolist()):
        extra[k] = f',"dwell_ms":{v}'
    is_rate = np.flatnonzero(cols["etype"] == EVENT_TYPES.index("rate"))
    for k, v in zip(is_rate.tolist(), cols["rating"][is_rate].tolist()):
        extra[k] = f',"rating":{v}'
    dev_str = [f',"device":"{d}"}}' for d in DEVICES] + ["}"]  # index -1: no device
    type_str = [f'","event_type":"{t}","event_time":' for t in EVENT_TYPES]
    head, sess = f'{{"event_id":"e{day_key}-{tag}', f',"session_id":"s{day_key}-{tag}'
    return [
        f'{head}{n}","user_id":"u{u}","item_id":"i{i}{type_str[et]}{tm}{ex}{sess}{s}"{dev_str[d]}'
        for n, u, i, et, tm, ex, s, d in zip(
            range(first_event, first_event + E),
            (cols["user"] + 1).tolist(),
            cols["item"].tolist(),
            cols["etype"].tolist(),
            times,
            extra,
            cols["session"].tolist(),
            cols["device"].tolist(),
        )
    ]


def _bad_line(kind: str, good: str, rng, fresh_id: str) -> str:
    """One line with exactly one defect of ``kind``, derived from the good line ``good``."""
    if kind == "duplicate":
        return good
    if kind == "malformed_json":
        return good[: int(rng.integers(1, len(good) - 1))]  # a proper prefix never closes the object
    if kind == "not_object":
        return ("[1, 2, 3]", '"just a string"', "42", "true", "null", "[]")[int(rng.integers(6))]
    event = json.loads(good)
    event["event_id"] = fresh_id
    if kind == "missing_id":
        field = ("event_id", "user_id", "item_id")[int(rng.integers(3))]
        if rng.random() < 0.5:
            del event[field]
        else:
            event[field] = None
    elif kind == "unknown_event_type":
        event["event_type"] = ("hover", "purchse", "checkout", "scroll", "unknown")[int(rng.integers(5))]
    elif kind == "bad_event_time":
        event["event_time"] = (
            "1900-01-01T00:00:00+00:00",
            -2208988800000,  # 1900-01-01 in epoch ms
            "2999-12-31T23:59:59+00:00",
            32503680000000,  # 3000-01-01 in epoch ms
            "not-a-timestamp",
            "2026-13-45T99:99:99+00:00",
        )[int(rng.integers(6))]
    elif kind == "negative_dwell":
        event["dwell_ms"] = -int(rng.integers(1, 60_000))
    elif kind == "bad_rating":
        event["event_type"] = "rate"
        event.pop("dwell_ms", None)
        event["rating"] = (0.0, -1.0, 5.5, 6.0, 10.0)[int(rng.integers(5))]
    else:
        raise ValueError(f"unknown bad-line kind {kind!r}; use one of {sorted(BAD_KINDS)}")
    return json.dumps(event, separators=(",", ":"))


def _local_root(data_root: str) -> Path:
    if "://" in data_root and not data_root.startswith("file://"):
        raise ValueError(
            f"generate writes to a local lake, not {data_root!r}; generate into a local directory and copy it "
            "to the cluster store (e.g. hdfs dfs -put / aws s3 cp)"
        )
    return Path(data_root.removeprefix("file://"))


def _gzip_writer(path: Path):
    raw = open(path, "wb")
    return raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)


def write_items(data_root: str, rows: list[dict[str, Any]], name: str) -> Path:
    """Write a raw items file (JSON Lines) atomically; returns its path."""
    directory = _local_root(lake.raw_items(data_root))
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    tmp = directory / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, final)
    return final


def _check_args(start_dt, days, users, items, events_per_day, bad_fraction, files_per_day) -> None:
    check_dt(start_dt)
    for name, value, low in (("days", days, 1), ("users", users, 1), ("items", items, 1),
                             ("events_per_day", events_per_day, 0), ("files_per_day", files_per_day, 1)):  # fmt: skip
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError(f"bad_fraction={bad_fraction!r} must be in [0, 1), e.g. 0.02 for 2% bad lines")


#: Where :func:`generate` records the arguments its hidden world derives from, relative to the lake root: outside
#: every dataset (no job, gate or DAG lists it), read only by :mod:`datatools.simulate` to rebuild the same world.
WORLD_FILE = "_synthetic/world.json"


def write_world(data_root: str, params: dict[str, Any]) -> Path:
    """Record the world's parameters (seed, users, items, start, events_per_day, bad_fraction, files_per_day)."""
    path = _local_root(data_root) / WORLD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def day_sampler(world: _World, seed: int, day: int, logw):
    """(rng, cdf) of day index ``day``: its random stream and item-sampling table. ``logw`` is the previous day's
    log popularity and is updated in place (the day's drift is the first draw of its stream)."""
    import numpy as np

    rng = _rng(seed, 1, day)
    if day > 0:  # popularity drifts (a random walk in log space)
        logw += rng.normal(0.0, world.drift_sigma, size=world.n_items)
    boost = np.where((world.live_day <= day) & (world.live_day > 0) & (day - world.live_day < 3), 2.0, 0.0)
    cdf = world.day_popularity(np.where(world.live_day <= day, logw + boost, -np.inf))
    return rng, cdf


def day_start_ms(date: dt_.date) -> int:
    """Midnight UTC of ``date`` in epoch milliseconds."""
    return int(dt_.datetime(date.year, date.month, date.day, tzinfo=dt_.timezone.utc).timestamp() * 1000)


def write_day(
    directory: Path,
    world: _World,
    rng,
    cdf,
    day: int,
    date: dt_.date,
    events_per_day: int,
    bad_fraction: float,
    files_per_day: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write one landing day's lines into ``directory`` (``part-NNNNN.jsonl.gz``), drawing from ``rng`` and ``cdf``
    (:func:`day_sampler`). Returns ``{"lines", "good", "bad": {kind: n}, "files"}``; ``progress`` gets the lines
    written so far after each chunk."""
    import numpy as np

    kinds = list(BAD_KINDS)
    kind_p = np.array([BAD_KINDS[k] for k in kinds])
    kind_p = kind_p / kind_p.sum()
    day_key = date.strftime("%Y%m%d")
    start_ms = day_start_ms(date)
    n_bad = round(events_per_day * bad_fraction)
    n_good = events_per_day - n_bad
    if n_bad and not n_good:
        raise ValueError(
            f"events_per_day={events_per_day} with bad_fraction={bad_fraction} leaves no good events to "
            "derive bad lines from; raise events_per_day or lower bad_fraction"
        )
    files = [directory / f"part-{k:05d}.jsonl.gz" for k in range(files_per_day)]
    writers = [_gzip_writer(p) for p in files]
    bad_counts = dict.fromkeys(kinds, 0)
    good_done = bad_done = sessions_done = lines_done = 0
    events_per_session = (1 + (1 - _HUMAN_STEPS_P) / _HUMAN_STEPS_P) * _HUMAN_EVENTS_PER_STEP
    try:
        while good_done < n_good:
            need = n_good - good_done
            n_sess = max(1, int(min(need, CHUNK_EVENTS) / events_per_session) + 1)
            cols = _make_chunk(world, rng, cdf, day, n_sess, sessions_done)
            made = len(cols["user"])
            events_per_session = 0.8 * events_per_session + 0.2 * made / n_sess
            sessions_done += n_sess
            keep = min(made, need)
            if keep < made:  # keep a prefix in session order: a purchase still follows its cart
                cols = {k: (v[:keep] if isinstance(v, np.ndarray) else v) for k, v in cols.items()}
            order = np.argsort(cols["t_day"], kind="stable")
            cols = {k: (v[order] if isinstance(v, np.ndarray) else v) for k, v in cols.items()}
            lines = _render(cols, start_ms, day_key, good_done)
            good_done += keep
            # Bad lines for this chunk, each placed right after the good line it was made from.
            bad_target = n_bad if good_done == n_good else (n_bad * good_done) // max(n_good, 1)
            n_bad_chunk = bad_target - bad_done
            if n_bad_chunk:
                anchors = np.sort(rng.integers(keep, size=n_bad_chunk))
                chunk_kinds = rng.choice(len(kinds), size=n_bad_chunk, p=kind_p)
                bad_lines = []
                for a, kd in zip(anchors.tolist(), chunk_kinds.tolist()):
                    bad_lines.append(_bad_line(kinds[kd], lines[a], rng, f"e{day_key}-x{bad_done}"))
                    bad_counts[kinds[kd]] += 1
                    bad_done += 1
                merged: list[str] = []
                prev = 0
                for a, line in zip(anchors.tolist(), bad_lines):
                    merged.extend(lines[prev : a + 1])
                    merged.append(line)
                    prev = a + 1
                merged.extend(lines[prev:])
                lines = merged
            # Split the chunk into files_per_day contiguous slices.
            bounds = np.linspace(0, len(lines), files_per_day + 1).astype(int)
            for (_, gz), lo, hi in zip(writers, bounds[:-1], bounds[1:]):
                for b in range(lo, hi, _WRITE_BATCH):
                    gz.write(("\n".join(lines[b : min(b + _WRITE_BATCH, hi)]) + "\n").encode())
            lines_done += len(lines)
            del lines, cols
            if progress is not None:
                progress(lines_done)
    finally:
        for raw, gz in writers:
            gz.close()
            raw.close()
    return {"lines": good_done + bad_done, "good": good_done, "bad": bad_counts, "files": files}


def generate(
    data_root: str,
    start_dt: str,
    days: int,
    users: int,
    items: int,
    events_per_day: int,
    seed: int = 42,
    bad_fraction: float = 0.0,
    files_per_day: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write ``days`` landing days of synthetic raw events starting at ``start_dt``, plus the catalogue.

    Each day has exactly ``events_per_day`` lines, of which ``round(events_per_day * bad_fraction)``
    are bad (kinds drawn by :data:`BAD_KINDS` shares). Each partition ``raw/events/dt=D`` is written to
    a temporary directory beside it and renamed into place, replacing any earlier one whole. The world's
    parameters go to :data:`WORLD_FILE` (outside the lake's datasets) for :mod:`datatools.simulate`.

    Returns ``{"items": {"path", "count"}, "days": {dt: {"lines", "good", "bad": {kind: n}, "files"}},
    "events": total lines, "seconds": wall time, "events_per_second": ..., "world": sidecar path}``. ``log``
    (e.g. ``print``) gets progress lines with the generation rate.
    """
    _check_args(start_dt, days, users, items, events_per_day, bad_fraction, files_per_day)
    started = time.perf_counter()
    start = dt_.date.fromisoformat(start_dt)
    world = _World(seed, users, items, start)
    items_path = write_items(data_root, world.items_rows, ITEMS_FILE)
    world_path = write_world(
        data_root,
        {"seed": seed, "start": start_dt, "users": users, "items": items, "events_per_day": events_per_day,
         "bad_fraction": bad_fraction, "files_per_day": files_per_day},
    )  # fmt: skip

    logw = world.base_logw.copy()
    result_days: dict[str, Any] = {}
    total_lines = 0
    last_log = [started]
    for day in range(days):
        date = start + dt_.timedelta(days=day)
        dt = date.isoformat()
        rng, cdf = day_sampler(world, seed, day, logw)
        final = _local_root(lake.join(data_root, lake.RAW_EVENTS, f"dt={dt}"))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()

        def progress(done: int, dt: str = dt, before: int = total_lines) -> None:
            now = time.perf_counter()
            if log is not None and now - last_log[0] >= 5.0:
                last_log[0] = now
                log(f"  dt={dt}: {done:,}/{events_per_day:,} lines, {(before + done) / (now - started):,.0f} events/s")

        day_result = write_day(tmp, world, rng, cdf, day, date, events_per_day, bad_fraction, files_per_day, progress)
        lake.replace_dir(str(tmp), str(final))
        total_lines += day_result["lines"]
        n_bad = day_result["lines"] - day_result["good"]
        result_days[dt] = {**day_result, "files": [str(final / p.name) for p in day_result["files"]]}
        if log is not None:
            elapsed = time.perf_counter() - started
            log(f"dt={dt}: {day_result['lines']:,} lines ({n_bad:,} bad) -> {final} "
                f"[{total_lines / max(elapsed, 1e-9):,.0f} events/s overall]")  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "items": {"path": str(items_path), "count": items},
        "days": result_days,
        "events": total_lines,
        "seconds": seconds,
        "events_per_second": total_lines / max(seconds, 1e-9),
        "world": str(world_path),
    }
