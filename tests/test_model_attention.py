"""Planted attention: the nightly candidates must follow what users engage with, not what they bounce from.

Every user has two topics: one they engage with (long dwell, or ratings 4-5) and a decoy they bounce from (dwell
under 2 s, or ratings 1-2); the two are interleaved in random order, so neither order nor counts tell them apart.
The next item the user engages with (an unseen item of the engaged topic) is held out of the log. The events go the
real way: clean events -> ``jobs.featurize.run`` (Spark) -> published features -> ``models.train.run`` (MLflow
registry) -> ``models.candidates.run``; HR@10 is the share of users whose held-out item is among their 10
candidates. The same pipeline with the dwell- and rating-blind model (``TrainConfig.attention = False``: no dwell
or attention input, every positive event a target of weight 1) is measured beside it: it cannot tell the topics
apart, so it reaches about half (it splits its list between the two topics).

Full size: ``python benchmarks/attention.py`` (docs/model.md#attention-strength).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import pytest

from attnrec import lake
from attnrec.settings import get_settings

DT = "2026-02-10"
DAY_MS = 1_770_681_600_000  # 2026-02-10 00:00 UTC

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


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
    for dataset in (lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS):
        lake.publish(root, dataset, DT)


def hit_rate(root: str, base: Path, monkeypatch, held_out: dict[str, str], attention: bool, epochs: int) -> float:
    """Train (attention or blind) on the published features under ``root``, write the nightly candidates and return
    their HR@10 on the held-out items."""
    import pyarrow.parquet as pq

    from models import candidates, train
    from models.config import train_config

    monkeypatch.setenv("ATTNREC_DATA_ROOT", root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
    monkeypatch.setenv("ATTNREC_MLFLOW_ARTIFACTS", (base / "artifacts").as_uri())
    monkeypatch.setenv("ATTNREC_CHECKPOINT_DIR", str(base / "checkpoints"))
    monkeypatch.setenv("ATTNREC_TRAIN_EPOCHS", str(epochs))
    monkeypatch.setenv("ATTNREC_TRAIN_ABLATION", "false")
    monkeypatch.setenv("ATTNREC_TOP_K", "10")
    monkeypatch.setenv("ATTNREC_MAX_SEQ_LEN", "32")
    settings = get_settings()
    tcfg = dataclasses.replace(
        train_config(settings),
        d_model=32,
        dropout=0.1,
        batch_size=16,
        patience=epochs,
        lr=5e-3,
        warmup_steps=10,
        attention=attention,
    )
    train.run(DT, settings, tcfg)
    out = candidates.run(DT, settings)
    cands = pq.read_table(out["path"]).to_pandas()
    lists = cands[cands["rank"] <= 10].groupby("user_id")["item_id"].apply(set)
    return sum(held_out[u] in lists.get(u, set()) for u in held_out) / len(held_out)


@pytest.mark.parametrize("signal", ["dwell", "rating"])
def test_candidates_follow_engagement_not_bounces(signal, spark, tmp_path, monkeypatch):
    rows, held_out = planted_events(signal, users=160, topics=6, per_topic=24, engaged=6, seed=1)
    root = str(tmp_path / "lake")
    publish_features(spark, root, rows, held_out)
    blind_root = str(tmp_path / "lake-blind")  # the same features, a lake and registry of its own
    for dataset in (lake.FEATURE_SEQUENCES, lake.FEATURE_ITEMS):
        shutil.copytree(lake.partition(root, dataset, DT), lake.partition(blind_root, dataset, DT))

    aware = hit_rate(root, tmp_path / "aware", monkeypatch, held_out, attention=True, epochs=15)
    blind = hit_rate(blind_root, tmp_path / "blind", monkeypatch, held_out, attention=False, epochs=15)
    print(f"planted {signal}: HR@10 attention {aware:.3f}, blind {blind:.3f}")
    # 18 unseen items of the engaged topic: a list that is all of it holds the next one 10/18 of the time; a list
    # split between the two topics about half of that
    assert aware >= 0.4
    assert aware >= 1.5 * blind
