"""Train the attention recommender on one features partition, track it in MLflow, register it, gate it.

``run(dt)`` is what the train_recommender DAG calls; ``attnrec train --dt YYYY-MM-DD`` does the
same from a shell. Steps: read features/items for ``dt`` -> stream features/sequences into the leave-one-out
split by time (models.dataset; training events in memory-mapped files under the checkpoint directory, the
holdout capped at ``ATTNREC_HOLDOUT_MAX_USERS`` users) -> :func:`models.fit.fit` (models.losses: full softmax, or
sampled softmax with a logQ correction above ``ATTNREC_FULL_SOFTMAX_MAX_ITEMS`` items; AdamW, warm-up +
cosine decay, gradient clipping, early stopping on validation NDCG@10, bounded by epochs and wall clock; a
resumable checkpoint after every epoch, models.checkpoints) -> the plain SASRec ablation (item ids only)
with the same budget -> the test holdout beside the baselines (models.baselines: popularity, transition kNN, ALS
matrix factorisation) -> MLflow (models.report) and the model as a pyfunc -> register a version, alias
"challenger" -> under ATTNREC_PROMOTION_RULE=offline (the default) promote it to "champion" only if it beats the
current champion on this run's validation holdout; under ``online`` leave it "challenger" for an A/B experiment
(kpi_report promotes on online results), unless there is no champion yet (models.registry).

Which holdout decides what: validation (each user's second-to-last positive event) chooses the epoch (early
stopping), the kNN's and the ALS factorisation's settings and the promotion; the test holdout (the last positive
event) chooses nothing and is only reported (``test_*`` metrics), so it stays an untouched estimate.

Several processes: ``torchrun --nproc_per_node=N -m attnrec train --dt YYYY-MM-DD`` (NCCL on GPUs, gloo on
CPU). Every rank reads the same data and trains on its share of every batch, with DistributedDataParallel
averaging the gradients; only rank 0 logs to MLflow, writes checkpoints and registers the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from typing import Any

import torch.distributed as dist

from attnrec.settings import Settings, get_settings
from models import checkpoints, report
from models.ablation import input_ablation
from models.baselines import evaluate_knn, evaluate_mf, evaluate_popularity, tune_knn, tune_mf
from models.config import TrainConfig, build_model, train_config
from models.dataset import TrainingSet, positive_counts, read_split
from models.evaluate import cold_slices, evaluate_recommender
from models.features import load_features, read_item_text
from models.fit import fit
from models.recommender import Recommender
from models.runtime import DistContext, choose_device, git_commit, init_distributed, seed_everything
from models.vocab import ItemVocab

log = logging.getLogger(__name__)


def run(dt: str, settings: Settings | None = None, tcfg: TrainConfig | None = None) -> dict[str, Any]:
    """Train on features for ``dt``, log to MLflow, register a version and apply the promotion gate.

    ``tcfg`` defaults to :func:`models.config.train_config` of ``settings``. Returns {"run_id", "model_version",
    "metrics", "baseline_metrics", "knn_metrics", "mf_metrics", "sasrec_plain_metrics" (None when
    ATTNREC_TRAIN_ABLATION is false), "slices" ({"cold_items", "cold_users"} -> {"n_users", scorer prefix ->
    metrics}), "promoted", "reason"}; under torchrun, ranks other than 0 train only and return
    {"rank": rank}.
    """
    settings = settings or get_settings()
    tcfg = tcfg or train_config(settings)
    ctx, created = init_distributed()
    try:
        return _run(dt, settings, tcfg, ctx)
    finally:
        if created:
            dist.destroy_process_group()


def _run(dt: str, settings: Settings, tcfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    import mlflow

    from models import registry

    seed_everything(tcfg.seed)
    device, amp_dtype = choose_device()
    paths, item_rows, data_version = load_features(settings.data_root, dt)
    vocab = ItemVocab.from_items(item_rows)
    ckpt_dir = checkpoints.directory(settings, dt, data_version, tcfg)
    t_read = time.monotonic()
    split = read_split(
        paths["sequences"],
        vocab,
        tcfg.positive_types,
        settings.holdout_max_users or None,
        spill_dir=os.path.join(ckpt_dir, f"sequences-rank{ctx.rank}"),
    )
    if not split.test:
        raise ValueError(
            f"features for dt={dt} have no user with 3 or more positive events ({', '.join(tcfg.positive_types)}); "
            "the leave-one-out holdout would be empty, so there is nothing to evaluate or gate on"
        )
    examples = TrainingSet(split.train, tcfg.max_seq_len, tcfg.positive_types, attention=tcfg.attention)
    counts = positive_counts(split.train, vocab, tcfg.positive_types)
    item_text = read_item_text(paths["item_text"], vocab) if settings.item_text and "item_text" in paths else None
    if settings.item_text and item_text is None:
        log.warning(
            "dt=%s: no published features/item_text partition; training without item text (items with no events "
            "have no content but categories and year). Run behavior_etl (task item_text) or attnrec item-text --dt "
            "%s --validate and publish it, or set ATTNREC_ITEM_TEXT=false to say so",
            dt,
            dt,
        )
    rec = Recommender(build_model(vocab, tcfg, item_text=item_text), vocab, data_version, counts)
    rec.model.items.set_warm(counts > 0)
    log.info(
        "dt=%s: %d users, %d items, %d training events in %d training sequences (read in %.1fs, kept on "
        "disk under %s), %d holdout users evaluated of %d, device %s, rank %d of %d",
        dt,
        split.n_users,
        vocab.n_items,
        split.train.n_events,
        len(examples),
        time.monotonic() - t_read,
        ckpt_dir,
        len(split.test),
        split.n_holdout_users,
        device,
        ctx.rank,
        ctx.world,
    )

    main = ctx.is_main  # rank 0 logs, writes checkpoints and registers; other ranks only train
    experiment_id = registry.ensure_experiment(settings) if main else None
    active_run = (
        mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{dt}") if main else contextlib.nullcontext()
    )
    with active_run as active:
        if main:
            report.log_setup(
                {
                    "feature_dt": dt,
                    "feature_snapshot_hash": data_version["snapshot_hash"],
                    "git_commit": git_commit(),
                    "device": str(device),
                    "world_size": str(ctx.world),
                    "item_text_dim": str(0 if item_text is None else item_text.shape[1]),
                },
                tcfg,
                settings,
                vocab,
                split,
                len(examples),
            )
        t0 = time.monotonic()
        history = fit(
            rec,
            examples,
            split.valid,
            tcfg,
            device=device,
            amp_dtype=amp_dtype,
            on_epoch=report.epoch_logger(report.MODEL) if main else None,
            checkpoint_path=os.path.join(ckpt_dir, "model.pt"),
        )
        train_seconds = time.monotonic() - t0
        histories = {"attention recommender": history}
        plain = None
        if settings.train_ablation:  # the same budget, batches and seed; item ids and positions only
            seed_everything(tcfg.seed)
            plain = Recommender(build_model(vocab, tcfg, id_only=True), vocab, data_version, counts)
            t1 = time.monotonic()
            histories["plain SASRec"] = fit(
                plain,
                examples,
                split.valid,
                tcfg,
                device=device,
                amp_dtype=amp_dtype,
                on_epoch=report.epoch_logger(report.SASREC_PLAIN) if main else None,
                checkpoint_path=os.path.join(ckpt_dir, "sasrec_plain.pt"),
            )
            if main:
                mlflow.log_metrics(
                    {
                        f"{report.SASREC_PLAIN}train_seconds": time.monotonic() - t1,
                        f"{report.SASREC_PLAIN}epochs_run": float(len(histories["plain SASRec"])),
                    }
                )
        if not main:  # rank 0 removes the checkpoint directory once the run is registered
            shutil.rmtree(os.path.join(ckpt_dir, f"sequences-rank{ctx.rank}"), ignore_errors=True)
            return {"rank": ctx.rank}

        rec.model = rec.model.cpu()
        metrics = evaluate_recommender(rec, split.test)  # reported only: no choice below looks at it
        ablation = input_ablation(rec, split.test)  # each input signal unknown in turn: no retraining
        val_ndcg = evaluate_recommender(rec, split.valid)["ndcg_at_10"]  # the gate's figure, as for the champion
        baseline = evaluate_popularity(counts, vocab, split.test)
        knn, knn_choice = tune_knn(split.train, vocab, counts, split.valid, tcfg.positive_types)
        knn_metrics = evaluate_knn(knn, split.test)
        mf, mf_choice = tune_mf(split.train, vocab, counts, split.valid, tcfg.positive_types, seed=tcfg.seed)
        mf_metrics = evaluate_mf(mf, split.test)
        plain_metrics = None
        if plain is not None:
            plain.model = plain.model.cpu()
            plain_metrics = evaluate_recommender(plain, split.test)
        scorers = {
            report.MODEL: lambda h: evaluate_recommender(rec, h),
            report.POPULARITY: lambda h: evaluate_popularity(counts, vocab, h),
            report.KNN: lambda h: evaluate_knn(knn, h),
            report.MF: lambda h: evaluate_mf(mf, h),
            **({report.SASREC_PLAIN: lambda h: evaluate_recommender(plain, h)} if plain is not None else {}),
        }
        slices = {
            name: {"n_users": len(users), **({p: f(users) for p, f in scorers.items()} if users else {})}
            for name, users in cold_slices(
                split.test, counts, vocab, settings.cold_item_max_events, settings.cold_user_max_events
            ).items()
        }
        report.log_results(
            {
                report.MODEL: metrics,
                report.POPULARITY: baseline,
                report.KNN: knn_metrics,
                report.MF: mf_metrics,
                report.SASREC_PLAIN: plain_metrics,
            },
            {report.KNN: knn_choice, report.MF: mf_choice},
            histories,
            train_seconds,
            ablation,
            slices,
        )

        with tempfile.TemporaryDirectory() as tmp:
            model_uri = registry.log_recommender(rec, tmp, split.test[:2])
        version = registry.register(
            settings,
            model_uri,
            active.info.run_id,
            {
                "feature_dt": dt,
                "feature_snapshot_hash": data_version["snapshot_hash"],
                "test_ndcg_at_10": f"{metrics['ndcg_at_10']:.6f}",
            },
        )
        promoted, reason = registry.gate(settings, version, val_ndcg, split.valid, dt)
        mlflow.set_tags({"model_version": version, "promoted": str(promoted), "promotion_reason": reason})
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the run is recorded; a re-run of dt trains afresh
    return {
        "run_id": active.info.run_id,
        "model_version": version,
        "metrics": metrics,
        "baseline_metrics": baseline,
        "knn_metrics": knn_metrics,
        "mf_metrics": mf_metrics,
        "sasrec_plain_metrics": plain_metrics,
        "slices": slices,
        "promoted": promoted,
        "reason": reason,
    }
