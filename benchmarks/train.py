"""Benchmark training: sequences/s, time to the best epoch, and the test metrics it reaches.

On a published features partition (``--data-root DIR --dt D``, e.g. MovieLens-100K after behavior_etl) or,
without one, on a generated synthetic set (users walk item clusters forward with random jumps, so there
is order to learn). It runs ``models.fit.fit`` exactly as ``models.train.run`` does (TrainConfig
defaults, the same leave-one-out split, early stopping on validation NDCG@10) but without MLflow, and
prints per epoch and in total:

* sequences/s: training sequences per second of optimizer steps (validation excluded), and target
  positions/s (every position with a next positive event is one softmax row);
* time to best epoch: wall seconds, validation included, until the epoch whose weights are kept;
* test HR@10 / NDCG@10 of the kept weights, beside popularity, the transition kNN and ALS matrix factorisation
  (and plain SASRec with ``--ablation``).

Run: ``python benchmarks/train.py [--data-root DIR --dt YYYY-MM-DD] [--users 2000 --items 1000 --mean-len 40]
[--epochs 30] [--max-minutes 10] [--threads N] [--ablation] [--device cpu|cuda] [--seed 42] [--set NAME=VALUE ...]``
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time


def synthetic(n_users: int, n_items: int, mean_len: int, seed: int):
    """(users, item rows): items sit on a hidden cycle; a user steps 1-2 items along it 70% of the time,
    else jumps anywhere; sequence lengths are log-normal around ``mean_len``."""
    from models.encoding import Events

    rng = random.Random(seed)
    cycle = list(range(1, n_items + 1))
    rng.shuffle(cycle)
    users = []
    for u in range(n_users):
        n = max(5, int(rng.lognormvariate(math.log(mean_len), 0.6)))
        pos = rng.randrange(n_items)
        items, times, t = [], [], 1_700_000_000_000 + u * 1000
        for _ in range(n):
            pos = (pos + 1 + (rng.random() < 0.3)) % n_items if rng.random() < 0.7 else rng.randrange(n_items)
            t += int(rng.expovariate(1 / 600_000))
            items.append(f"s{cycle[pos]}")
            times.append(t)
        users.append(Events(f"u{u}", items, ["click"] * n, times, [int(rng.expovariate(1 / 30_000)) for _ in range(n)]))
    rows = [
        {"item_idx": i, "item_id": f"s{i}", "categories": [f"g{i % 18}"], "year": 1960 + i % 60}
        for i in range(1, n_items + 1)
    ]
    return users, rows


def bench_fit(name: str, rec, examples, split, tcfg, device, amp_dtype) -> dict:
    from models.evaluate import evaluate_recommender
    from models.fit import fit

    positions = int(examples.target_counts(rec.vocab.n_items).sum())

    def show(row: dict) -> None:
        print(
            f"  [{name}] epoch {int(row['epoch']):>2}: loss {row['train_loss']:.4f}  "
            f"val NDCG@10 {row.get('val_ndcg_at_10', float('nan')):.4f}  "
            f"{len(examples) / row['epoch_train_seconds']:,.0f} seq/s  ({row['epoch_seconds']:.1f} s with validation)",
            flush=True,
        )

    t0 = time.perf_counter()
    history = fit(rec, examples, split.valid, tcfg, device=device, amp_dtype=amp_dtype, on_epoch=show)
    total_s = time.perf_counter() - t0
    train_s = sum(h["epoch_train_seconds"] for h in history)
    best = max(range(len(history)), key=lambda i: history[i].get("val_ndcg_at_10", i))
    rec.model = rec.model.cpu()
    test = evaluate_recommender(rec, split.test)
    return {
        "name": name,
        "epochs": len(history),
        "total_s": total_s,
        "seq_per_s": len(examples) * len(history) / train_s,
        "pos_per_s": positions * len(history) / train_s,
        "best_epoch": best + 1,
        "time_to_best_s": sum(h["epoch_seconds"] for h in history[: best + 1]),
        "best_val_ndcg": history[best].get("val_ndcg_at_10", float("nan")),
        "test": test,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="lake root with a published features partition")
    parser.add_argument("--dt", help="features partition date, YYYY-MM-DD")
    parser.add_argument("--users", type=int, default=2000, help="synthetic set: users")
    parser.add_argument("--items", type=int, default=1000, help="synthetic set: items")
    parser.add_argument("--mean-len", type=int, default=40, help="synthetic set: typical sequence length")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-minutes", type=float, default=10.0, help="wall-clock budget per model")
    parser.add_argument("--max-seq-len", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: every core)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when there is a GPU)")
    parser.add_argument("--ablation", action="store_true", help="also train plain SASRec (item ids only)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a TrainConfig field, e.g. --set dropout=0.3 (repeatable), as attnrec train --set",
    )
    args = parser.parse_args(argv)

    import torch

    from attnrec.settings import get_settings
    from models.baselines import evaluate_knn, evaluate_mf, evaluate_popularity, tune_knn, tune_mf
    from models.config import build_model, train_config
    from models.dataset import TrainingSet, leave_one_out, positive_counts, read_split
    from models.features import load_features
    from models.recommender import Recommender
    from models.runtime import seed_everything
    from models.vocab import ItemVocab

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    amp = torch.bfloat16 if device.type == "cuda" else None  # as models.runtime.choose_device
    try:  # the settings' config, with this benchmark's budget and then --set on top
        tcfg = train_config(
            get_settings(),
            [
                f"epochs={args.epochs}",
                f"max_minutes={args.max_minutes}",
                f"seed={args.seed}",
                f"max_seq_len={args.max_seq_len}",
                *args.set,
            ],
        )
    except ValueError as err:
        parser.error(str(err))
    if args.data_root and args.dt:
        paths, rows, version = load_features(args.data_root, args.dt)
        vocab = ItemVocab.from_items(rows)
        split = read_split(paths["sequences"], vocab, tcfg.positive_types)  # every holdout user, as the DAG on ML-100K
        source = f"features dt={args.dt} under {args.data_root} (snapshot {version['snapshot_hash']})"
    else:
        users, rows = synthetic(args.users, args.items, args.mean_len, args.seed)
        vocab = ItemVocab.from_items(rows)
        split = leave_one_out(users, vocab, tcfg.positive_types)
        source = f"synthetic: {args.users} users, {args.items} items, mean length ~{args.mean_len}, seed {args.seed}"
    examples = TrainingSet(split.train, tcfg.max_seq_len, tcfg.positive_types)
    counts = positive_counts(split.train, vocab, tcfg.positive_types)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    overrides = f", overrides {' '.join(args.set)}" if args.set else ""
    print(
        f"data: {source}\n  {split.n_users:,} users, {vocab.n_items:,} items, "
        f"{split.train.n_events:,} training events, "
        f"{len(examples):,} training sequences, {len(split.test):,} holdout users\n"
        f"device: {label}; torch {torch.__version__}; TrainConfig (d={tcfg.d_model}, "
        f"{tcfg.n_layers} layers, batch {tcfg.batch_size}, dropout {tcfg.dropout}, lr {tcfg.lr}{overrides}); "
        f"up to {tcfg.epochs} epochs, {tcfg.max_minutes} min per model",
        flush=True,
    )

    results = []
    for name, id_only in [("attention recommender", False)] + ([("plain SASRec", True)] if args.ablation else []):
        seed_everything(tcfg.seed)
        rec = Recommender(build_model(vocab, tcfg, id_only=id_only), vocab, {}, counts)
        results.append(bench_fit(name, rec, examples, split, tcfg, device, amp))

    pop = evaluate_popularity(counts, vocab, split.test)
    knn_model, choice = tune_knn(split.train, vocab, counts, split.valid, tcfg.positive_types)
    knn = evaluate_knn(knn_model, split.test)
    mf_model, mf_choice = tune_mf(split.train, vocab, counts, split.valid, tcfg.positive_types, seed=tcfg.seed)
    mf = evaluate_mf(mf_model, split.test)
    print("\nresults")
    for r in results:
        print(
            f"  {r['name']}: {r['seq_per_s']:,.0f} sequences/s, {r['pos_per_s']:,.0f} target positions/s; "
            f"{r['epochs']} epochs in {r['total_s']:.1f} s; best epoch {r['best_epoch']} "
            f"(val NDCG@10 {r['best_val_ndcg']:.4f}) reached after {r['time_to_best_s']:.1f} s; "
            f"test HR@10 {r['test']['hr_at_10']:.4f} NDCG@10 {r['test']['ndcg_at_10']:.4f}"
        )
    print(f"  popularity: test HR@10 {pop['hr_at_10']:.4f} NDCG@10 {pop['ndcg_at_10']:.4f}")
    print(
        f"  transition kNN (window {choice['window']}, last {choice['last_n']} items, decay {choice['decay']}, "
        f"chosen on validation NDCG@10 {choice['val_ndcg_at_10']:.4f}): "
        f"test HR@10 {knn['hr_at_10']:.4f} NDCG@10 {knn['ndcg_at_10']:.4f}"
    )
    print(
        f"  ALS matrix factorisation ({mf_choice['factors']} factors, regularization {mf_choice['regularization']}, "
        f"alpha {mf_choice['alpha']}, chosen on validation NDCG@10 {mf_choice['val_ndcg_at_10']:.4f}): "
        f"test HR@10 {mf['hr_at_10']:.4f} NDCG@10 {mf['ndcg_at_10']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
