"""How far from a coin flip the loop test is: the small loop (``datatools.loop.small_config``, what ``make test``
runs) with several seeds, each day's margins and each step's seconds.

For every seed it runs the whole loop through Airflow in ``WORKDIR/seed-N`` (or, with ``--read``, reads the
``loop.json`` a finished loop left there) and prints per day: the treatment share served, active users and hit rate
at 10 per arm, the lift, the p-value, the next share and the champion; then the weakest margins over all seeds
(largest p-value, smallest lift, per day) and the mean seconds per kind of step. ``tests/test_loop.py`` asserts
treatment > control every day, p < 0.05 on the last day, the share moving up, the strong model ending champion.

Run: ``python benchmarks/loop_margins.py --workdir DIR --seeds 7 11 23 [--read] [--full]``
(``--full``: LoopConfig's defaults, the size of ``make demo-loop``). One small loop is 5-10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datatools.loop import LoopConfig, run, small_config, table_lines


def _kind(step: str) -> str:
    for kind in ("behavior_etl", "train_recommender-weak", "train_recommender-strong", "nightly_candidates",
                 "kpi_report", "simulate"):  # fmt: skip
        if step.startswith(kind):
            return kind
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path, help="one seed-N directory per seed goes here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 23])
    parser.add_argument("--read", action="store_true", help="read the loop.json of loops already run, run nothing")
    parser.add_argument("--full", action="store_true", help="LoopConfig's defaults instead of small_config")
    args = parser.parse_args()

    results = {}
    for seed in args.seeds:
        workdir = args.workdir.resolve() / f"seed-{seed}"
        if args.read:
            results[seed] = json.loads((workdir / "loop.json").read_text(encoding="utf-8"))
        else:
            cfg = LoopConfig(workdir=workdir, seed=seed) if args.full else small_config(workdir, seed)
            results[seed] = run(cfg, log=lambda msg: print(msg, flush=True))
    print()
    worst: dict[int, dict[str, float]] = {}
    seconds: dict[str, list[float]] = {}
    for seed, result in results.items():
        print(f"seed {seed}: {result['seconds']['total']:.0f} s")
        print("\n".join(table_lines(result["rows"])))
        for k, row in enumerate(result["rows"]):
            w = worst.setdefault(k, {"p_value": 0.0, "lift": float("inf"), "gap": float("inf")})
            w["p_value"] = max(w["p_value"], row["p_value"])
            w["lift"] = min(w["lift"], row["lift_hit_rate_at_10"])
            w["gap"] = min(w["gap"], row["treatment_hit_rate_at_10"] - row["control_hit_rate_at_10"])
        for step, s in result["seconds"].items():
            if step != "total":
                seconds.setdefault(_kind(step), []).append(s)
    print(f"\nweakest margins over seeds {', '.join(map(str, results))}:")
    for k, w in worst.items():
        print(f"  loop day {k + 1}: largest p-value {w['p_value']:.2g}, smallest lift {w['lift']:+.3f}, "
              f"smallest hit-rate gap {w['gap']:+.3f}")  # fmt: skip
    totals = [r["seconds"]["total"] for r in results.values()]
    print(f"\nseconds per loop: {', '.join(f'{t:.0f}' for t in totals)}; mean per step of each kind:")
    for kind, values in sorted(seconds.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {kind:<26}{sum(values) / len(values):>6.0f} s  ({len(values)} runs)")


if __name__ == "__main__":
    main()
