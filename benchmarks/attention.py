"""Benchmark the attention strength on planted logs: the nightly candidates' HR@10, attention-aware beside blind.

Every user has two topics: one they engage with (long dwell, or ratings 4-5) and a decoy they bounce from (dwell
under 2 s, or ratings 1-2), interleaved in random order, so neither order nor counts tell them apart; each item's
topic is its catalogue category, so both variants know the topics. The next item the user engages with (an unseen
item of the engaged topic) is held out of the log. The events go the real way: clean events -> ``jobs.featurize.run``
(Spark) -> published features -> ``models.train.run`` (MLflow registry) -> ``models.candidates.run``; HR@10 is the
share of users whose held-out item is among their 10 candidates. The dwell- and rating-blind model
(``TrainConfig.attention = False``: no dwell or attention input, every positive event a target of weight 1) goes
through the same pipeline on the same features. ``tests/test_model_attention.py`` runs this small.

Run: ``python benchmarks/attention.py [--signal dwell|rating|both] [--users 1000] [--topics 10] [--per-topic 40]
[--engaged 8] [--epochs 20] [--seed 0]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from attnrec import lake
from attnrec.settings import get_settings

DT = "2026-02-10"
DAY_MS = 1_770_681_600_000  # 2026-02-10 00:00 UTC


def planted_events(signal: str, users: int, topics: int, per_topic: int, engaged: int, seed: int = 0):
    """(clean event rows, {user: held-out item}): ``engaged`` items of the user's topic and as many of the decoy,
    interleaved at random; ``signal`` "dwell" (views of 1-10 min against views under 2 s) or "rating"
    (rates 4-5 against 1-2, no dwell)."""
    rng = random.Random(seed)
    rows, held_out = [], {}
    for u in range(users):
        liked, decoy = rng.sample(range(topics), 2)
        pool_l = rng.sample(range(per_topic), engaged + 1)
        pool_d = rng.sample(range(per_topic), engaged)
        held_out[f"u{u:03d}"] = f"t{liked}-{pool_l[-1]}"
        events = [(f"t{liked}-{i}", True) for i in pool_l[:-1]] + [(f"t{decoy}-{i}", False) for i in pool_d]
        rng.shuffle(events)
        t = DAY_MS + u * 1000
        for k, (item, good) in enumerate(events):
            t += rng.randint(30_000, 900_000)
            if signal == "dwell":
                etype, rating = "view", None
                dwell = rng.randint(60_000, 600_000) if good else rng.randint(100, 1_900)
            else:
                etype, dwell = "rate", None
                rating = float(rng.choice([4, 5] if good else [1, 2]))
            rows.append((f"e{u}-{k}", f"u{u:03d}", item, etype, t, dwell, rating))
    return rows, held_out


def publish_features(spark, root: str, rows, held_out: dict[str, str]) -> None:
    """The rows as the clean partition of DT, then featurize and publish its features, as behavior_etl does."""
    from pyspark.sql import functions as F

    from jobs.featurize import FeatureParams, run

    ddl = "event_id string, user_id string, item_id string, event_type string, event_time_ms long, dwell_ms long, "
    ddl += "rating double"
    clean = spark.createDataFrame(rows, ddl).withColumn("event_time", F.timestamp_millis("event_time_ms"))
    clean.coalesce(1).write.mode("overwrite").parquet(lake.partition(root, lake.CLEAN_EVENTS, DT))
    catalogue = Path(lake.raw_items(root))  # each item's topic is its category: both variants know the topics
    catalogue.mkdir(parents=True)
    items = sorted({r[2] for r in rows} | set(held_out))
    lines = [json.dumps({"item_id": i, "title": i, "categories": [i.split("-")[0]]}) for i in items]
    (catalogue / "items.jsonl").write_text("\n".join(lines) + "\n")
    settings = get_settings(data_root=root)
    run(spark, root, FeatureParams(DT, low_rating_max=settings.low_rating_max, bounce_dwell_s=settings.bounce_dwell_s))
    # the planted ids stand in for pseudonyms (clean's job); identity/users maps them back for the candidates
    users = sorted({r[1] for r in rows})
    identity = spark.createDataFrame([(u, u) for u in users], "pseudonym string, user_id string")
    identity.coalesce(1).write.mode("overwrite").parquet(lake.staging(root, lake.IDENTITY_USERS, DT))
    for dataset in (lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS, lake.IDENTITY_USERS):
        lake.publish(root, dataset, DT)


def hit_rate(root: str, base: Path, held_out: dict[str, str], attention: bool, epochs: int, **train_fields) -> float:
    """Train (attention-aware, or blind with ``attention=False``) on the published features under ``root`` with an
    MLflow registry of its own under ``base``, write the nightly candidates and return their HR@10 on the held-out
    items. ``train_fields`` override the small model below (TrainConfig fields)."""
    import pyarrow.parquet as pq

    from models import candidates, train
    from models.config import train_config

    settings = get_settings(
        data_root=root,
        mlflow_tracking_uri=f"sqlite:///{base / 'mlflow.db'}",
        mlflow_artifact_root=(base / "artifacts").as_uri(),
        checkpoint_dir=str(base / "checkpoints"),
        train_epochs=epochs,
        train_ablation=False,
        top_k=10,
        max_seq_len=32,
    )
    fields = dict(d_model=32, dropout=0.1, batch_size=16, patience=epochs, lr=5e-3, warmup_steps=10)
    tcfg = dataclasses.replace(train_config(settings), **{**fields, **train_fields}, attention=attention)
    train.run(DT, settings, tcfg)
    out = candidates.run(DT, settings)
    cands = pq.read_table(out["path"]).to_pandas()
    lists = cands[cands["rank"] <= 10].groupby("user_id")["item_id"].apply(set)
    return sum(held_out[u] in lists.get(u, set()) for u in held_out) / len(held_out)


def both_variants(spark, signal: str, base: Path, epochs: int, **sizes) -> tuple[float, float]:
    """(HR@10 attention-aware, HR@10 blind) of the nightly candidates on one planted data set."""
    rows, held_out = planted_events(signal, **sizes)
    root = str(base / "lake")
    publish_features(spark, root, rows, held_out)
    blind_root = str(base / "lake-blind")  # the same features, a lake and registry of its own
    for dataset in (lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS, lake.IDENTITY_USERS):
        shutil.copytree(lake.partition(root, dataset, DT), lake.partition(blind_root, dataset, DT))
    aware = hit_rate(root, base / "aware", held_out, attention=True, epochs=epochs)
    blind = hit_rate(blind_root, base / "blind", held_out, attention=False, epochs=epochs)
    return aware, blind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", choices=["dwell", "rating", "both"], default="both")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--per-topic", type=int, default=40)
    parser.add_argument("--engaged", type=int, default=8, help="engaged (and decoy) items in each user's log")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from attnrec.spark import get_spark

    spark = get_spark("attnrec-benchmark-attention")
    try:
        for signal in ["dwell", "rating"] if args.signal == "both" else [args.signal]:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                aware, blind = both_variants(
                    spark,
                    signal,
                    Path(tmp),
                    args.epochs,
                    users=args.users,
                    topics=args.topics,
                    per_topic=args.per_topic,
                    engaged=args.engaged,
                    seed=args.seed,
                )
            ceiling = 10 / (args.per_topic - args.engaged)
            print(
                f"planted {signal}: {args.users} users, {args.topics} topics of {args.per_topic} items, "
                f"{args.engaged} engaged + {args.engaged} decoy events each, {args.epochs} epochs, seed {args.seed}: "
                f"nightly candidates HR@10 attention {aware:.3f}, blind {blind:.3f} "
                f"(a list all of the engaged topic: {min(1.0, ceiling):.3f}) in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
