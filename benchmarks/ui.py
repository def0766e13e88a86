"""Benchmark the Recommendations view: how long a user page takes on a real lake (e.g. the one ``make demo`` leaves).

It times what the api-server does for ``GET /attnrec/recommendations?dt=D&user=U`` minus HTTP and the token check:
the day's summary (plan, MLflow versions and links, Data Docs, reconciliation, KPIs), the user's history and served
list from the published partitions, and the HTML. First it does what the api-server does at start
(attnrec_ui.app.warm_up: import MLflow, open the registry, read the newest day's users); the first page is still
reported apart from the rest (the item table, the first reads), then one page per user of ``--users`` users
chosen with a fixed seed.

Run: ``ATTNREC_DATA_ROOT=... MLFLOW_TRACKING_URI=... python benchmarks/ui.py --dt 1998-04-23 [--users 50]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from urllib.parse import quote


def page_once(settings, dt: str, user_id: str) -> float:
    from attnrec_ui import app, lakeview, page

    started = time.perf_counter()
    context = {
        "dt": dt,
        "user": user_id,
        "q": "",
        "offset": 0,
        "quote": quote,
        "days": lakeview.days(settings.data_root),
    }
    context["summary"] = app.day_summary(settings, dt)
    context["page"] = app.user_page(settings, dt, user_id, 0, app.HISTORY_PAGE)
    page.render(context)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dt", required=True)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import airflow.configuration  # noqa: F401  (loaded in the api-server before any page)

    from attnrec.settings import get_settings
    from attnrec_ui import app, lakeview

    settings = get_settings()
    app.warm_up()
    users = lakeview.users(settings.data_root, args.dt)
    chosen = random.Random(args.seed).sample(users, min(args.users, len(users)))
    first = page_once(settings, args.dt, chosen[0])
    times = [page_once(settings, args.dt, u) for u in chosen[1:]]
    print(f"lake {settings.data_root}, dt={args.dt}: {len(users)} users served")
    print(f"first page (cold): {first * 1000:.0f} ms")
    if times:
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(
            f"next {len(times)} pages: median {statistics.median(times) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
            f"max {times[-1] * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
