"""Benchmark candidate ranking: top-K unseen items for N users over a catalogue of M items.

It times the ranking stage of ``models.recommender.recommend`` / ``models.candidates`` (given each user's state
vector): ``models.ranking.model_scorer`` (dot products with the item table plus the item bias, with the
cold-user fallback) driven by ``models.ranking.rank_catalogue`` (user batches x item chunks, the user's
seen items and the padding row masked, running top-K). The model is an ``AttentionRecommender`` with M
items and random weights; user vectors and seen items are random (``--seen`` distinct items per user).

Beside it, the roofline: the bare matmul of the same shapes ((batch, d) @ (d, M) for every user batch),
which any exact full-catalogue ranking must do. It prints users/s for both and their ratio
(ranking time / matmul time); on CUDA too when a GPU is present. Optionally (``--encode-users``) it also
times the transformer encoding of user sequences of ``--seq-len`` events, the other half of candidates.

Run: ``python benchmarks/candidates.py [--users 100000] [--items 50000] [--k 100] [--seen 50] [--dim 128]
[--user-batch 256] [--threads N] [--devices cpu,cuda] [--repeat 1] [--encode-users 0]``

Times are the fastest of ``--repeat`` runs (use 3 or more on a machine shared with other work).
"""

from __future__ import annotations

import argparse
import math
import os
import time


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(n_items: int, dim: int, seed: int):
    """A Recommender over ``n_items`` synthetic items (random weights, a few categories, no popularity)."""
    import torch

    from attnrec.settings import get_settings
    from models.config import build_model, train_config
    from models.recommender import Recommender
    from models.vocab import ItemVocab

    rows = [
        {"item_idx": i, "item_id": f"i{i}", "categories": [f"c{i % 20}"], "year": 1950 + i % 70}
        for i in range(1, n_items + 1)
    ]
    vocab = ItemVocab.from_items(rows)
    torch.manual_seed(seed)
    tcfg = train_config(get_settings(), [f"d_model={dim}", "n_heads=2", "n_layers=2", "dropout=0.0", "max_seq_len=200"])
    model = build_model(vocab, tcfg).eval()
    with torch.no_grad():
        model.item_bias.normal_(0, 0.1)
    return Recommender(model, vocab, {}, torch.zeros(n_items + 1, dtype=torch.float64))


def time_ranking(
    rec, n_users: int, k: int, seen_per_user: int, user_batch: int, device, seed: int, repeat: int = 1
) -> dict[str, float]:
    """Best of ``repeat`` timings of the ranking stage and of the bare matmul, with users/s and their ratio."""
    import torch

    from models.ranking import model_scorer, rank_catalogue

    g = torch.Generator().manual_seed(seed)
    n_items, dim = rec.vocab.n_items, rec.model.cfg.d_model
    vecs = torch.randn(n_users, dim, generator=g).to(device)
    # distinct seen items per user: the first columns of a random key's argsort would cost U x M; offsets do not
    base = torch.randint(1, n_items + 1, (n_users, 1), generator=g)
    steps = torch.randint(1, max(2, n_items // max(seen_per_user, 1)), (n_users, seen_per_user), generator=g).cumsum(1)
    seen = ((base + steps - 1) % n_items + 1).tolist()
    rec.model.to(device)
    has_history = [True] * n_users

    with torch.no_grad():
        # warm-up on one batch (allocator, kernels), not timed
        warm = model_scorer(rec.model, rec.popularity, vecs[:user_batch], has_history[:user_batch])
        rank_catalogue(
            warm, min(user_batch, n_users), n_items + 1, seen[:user_batch], k, user_batch=user_batch, device=device
        )
        rank_s = math.inf
        for _ in range(repeat):
            _sync(device)
            t0 = time.perf_counter()
            scorer = model_scorer(rec.model, rec.popularity, vecs, has_history)
            top, _, _ = rank_catalogue(scorer, n_users, n_items + 1, seen, k, user_batch=user_batch, device=device)
            _sync(device)
            rank_s = min(rank_s, time.perf_counter() - t0)

        table = rec.model.item_table().to(device)  # (M+1, d)
        out = torch.empty(min(user_batch, n_users), n_items + 1, device=device)
        torch.matmul(vecs[:user_batch], table.T, out=out[: min(user_batch, n_users)])
        matmul_s = math.inf
        for _ in range(repeat):
            _sync(device)
            t0 = time.perf_counter()
            for s in range(0, n_users, user_batch):
                b = min(user_batch, n_users - s)
                torch.matmul(vecs[s : s + b], table.T, out=out[:b])
            _sync(device)
            matmul_s = min(matmul_s, time.perf_counter() - t0)

    # correctness spot check: no seen item and no padding row in the first users' top-K
    for u in range(min(100, n_users)):
        row = set(top[u].tolist())
        if row & set(seen[u]) or 0 in row:
            raise AssertionError(f"user {u}: top-{k} contains a seen item or the padding row")
    flops = 2.0 * n_users * (n_items + 1) * dim
    return {
        "rank_s": rank_s,
        "matmul_s": matmul_s,
        "users_per_s": n_users / rank_s,
        "matmul_users_per_s": n_users / matmul_s,
        "ratio": rank_s / matmul_s,
        "matmul_gflops": flops / matmul_s / 1e9,
    }


def time_encoding(rec, n_users: int, seq_len: int, device, seed: int, batch: int = 256) -> float:
    """Users/s of ``models.recommender.user_vectors`` on random sequences of ``seq_len`` events."""
    import torch

    from models.encoding import Events
    from models.recommender import user_vectors

    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, rec.vocab.n_items + 1, (n_users, seq_len), generator=g).tolist()
    users = [
        Events(
            f"u{u}",
            [f"i{i}" for i in row],
            ["click"] * seq_len,
            list(range(0, 60_000 * seq_len, 60_000)),
            [1000] * seq_len,
        )
        for u, row in enumerate(items)
    ]
    rec.model.to(device)
    user_vectors(rec, users[:batch], device, batch)
    _sync(device)
    t0 = time.perf_counter()
    user_vectors(rec, users, device, batch)
    _sync(device)
    return n_users / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    from models.config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seen", type=int, default=50, help="seen items masked per user")
    parser.add_argument(
        "--dim",
        type=int,
        default=TrainConfig.d_model,
        help=f"model width d (TrainConfig default: {TrainConfig.d_model})",
    )
    parser.add_argument(
        "--user-batch",
        type=int,
        default=256,
        help="users per scoring batch (models.recommender.recommend's default, which candidates uses: 256)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: every core)")
    parser.add_argument("--devices", default="cpu,cuda", help="comma list; cuda is skipped when there is no GPU")
    parser.add_argument("--encode-users", type=int, default=0, help="also time encoding this many user sequences")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="time each part this many times, report the fastest")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    devices = []
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda: no GPU here, skipped")
            continue
        devices.append(torch.device(name))
    rec = build(args.items, args.dim, args.seed)
    print(
        f"{args.users:,} users x {args.items:,} items, top-{args.k}, {args.seen} seen items masked per user, "
        f"d={args.dim}, user batch {args.user_batch}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    for device in devices:
        r = time_ranking(rec, args.users, args.k, args.seen, args.user_batch, device, args.seed, args.repeat)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
        print(
            f"[{label}] ranking: {r['rank_s']:.2f} s = {r['users_per_s']:,.0f} users/s | "
            f"bare matmul: {r['matmul_s']:.2f} s = {r['matmul_users_per_s']:,.0f} users/s "
            f"({r['matmul_gflops']:.1f} GFLOP/s) | ranking / matmul = {r['ratio']:.2f}x"
        )
        if args.encode_users:
            ups = time_encoding(rec, args.encode_users, args.seq_len, device, args.seed)
            print(f"[{label}] encoding {args.encode_users:,} sequences of {args.seq_len} events: {ups:,.0f} users/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
