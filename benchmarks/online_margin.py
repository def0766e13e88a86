"""How much better one served list is than another for the simulated users, before running the whole loop.

Given a lake made by ``attnrec generate`` (or the loop) and a published ``candidates/dt=D``, it prints, per arm and
model version, the share of the top-10 items that lie in the user's hidden favourite cluster and the hit rate (share
of returning users who click an item of their top 10) of :func:`datatools.simulate.responses` drawn with several
seeds, beside a heuristic list: the unseen items of the user's most clicked or viewed cluster (from
features/sequences of D), then the most clicked items. A hit-rate gap of a few points needs thousands of users per
arm; the loop's sizes (1,000 users, control kept at >= 20%) need a gap of about 0.15 or more.

Run: ``python benchmarks/online_margin.py --data-root DIR --dt D [--seeds 5]``
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from attnrec import lake
from datatools.simulate import _indices, load_world, responses


def _score(world, users, ranks, items, seeds: int) -> tuple[float, list[float]]:
    fav = float((world.cluster_of[items] == world.fav_cluster[users]).mean())
    rates = []
    for seed in range(seeds):
        cols = responses(world, np.random.default_rng([seed, 9]), users, ranks, items)
        rates.append(cols["hits"] / max(cols["visitors"], 1))
    return fav, rates


def heuristic(world, seq, inverse, k: int = 10):
    """(users, ranks, items): per user the unseen items of their most interacted clusters, then popular ones."""

    def index(item_id: str) -> int:
        return int(inverse[int(item_id[1:]) - 1])

    popular = collections.Counter(
        index(i) for row in seq.itertuples() for i, t in zip(row.item_ids, row.event_types) if t == "click"
    )
    users, ranks, items = [], [], []
    for row in seq.itertuples():
        seen = {index(i) for i in row.seen_item_ids}
        clusters = collections.Counter(
            world.cluster_of[index(i)] for i, t in zip(row.item_ids, row.event_types) if t in ("click", "view")
        )
        top: list[int] = []
        for c, _ in clusters.most_common():
            start = int(world.cluster_start[c])
            top += [j for j in range(start, start + int(world.cluster_size[c])) if j not in seen]
        top += [j for j, _ in popular.most_common() if j not in seen and j not in top]
        top = top[:k]
        users += [int(row.user_id[1:]) - 1] * len(top)
        ranks += list(range(1, len(top) + 1))
        items += top
    return np.array(users), np.array(ranks), np.array(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--dt", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    world, _ = load_world(args.data_root)
    table = pq.read_table(lake.partition(args.data_root, lake.CANDIDATES, args.dt)).to_pandas()
    table = table[table["rank"] <= 10].sort_values(["user_id", "rank"])
    if "arm" not in table.columns:
        table["arm"] = "control"
    print(f"{'lists':<40}{'users':>7}{'fav share':>11}  hit rate per seed")
    for (arm, version), group in table.groupby(["arm", "model_version"]):
        users, ranks, items = _indices(world, pa.Table.from_pandas(group[["user_id", "rank", "item_id"]]))
        fav, rates = _score(world, users, ranks, items, args.seeds)
        label = f"{arm} (model version {version})"
        print(f"{label:<40}{group['user_id'].nunique():>7}{fav:>11.3f}  {' '.join(f'{r:.3f}' for r in rates)}")
    inverse = np.empty(world.n_items, dtype=np.int64)
    inverse[world.public_id - 1] = np.arange(world.n_items)
    from attnrec.identity import load_identity, raw_user_ids

    seq = pq.read_table(lake.partition(args.data_root, lake.FEATURE_SEQUENCES, args.dt))
    raw = raw_user_ids(seq["user_id"].combine_chunks(), load_identity(args.data_root), args.dt)  # features: pseudonyms
    seq = seq.set_column(seq.schema.get_field_index("user_id"), "user_id", raw).to_pandas().sort_values("user_id")
    users, ranks, items = heuristic(world, seq, inverse)
    fav, rates = _score(world, users, ranks, items, args.seeds)
    label = "heuristic: most clicked cluster"
    print(f"{label:<40}{len(set(users.tolist())):>7}{fav:>11.3f}  {' '.join(f'{r:.3f}' for r in rates)}")


if __name__ == "__main__":
    main()
