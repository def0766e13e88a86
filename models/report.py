"""What a training run records in MLflow: tags, parameters, per-epoch curves, test metrics beside the
baselines, and two plots (training curves, model vs baselines). Called on rank 0 inside an active run."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Callable

from attnrec.settings import Settings
from models.config import TrainConfig
from models.dataset import Split
from models.vocab import ItemVocab

log = logging.getLogger(__name__)

#: MLflow metric prefixes of the scorers every run reports (test metrics are "<prefix>test_<metric>").
MODEL, POPULARITY, KNN, MF, SASREC_PLAIN = "", "pop_", "knn_", "mf_", "sasrec_plain_"
#: How the plots and the log name each scorer, in the order they are shown.
LABELS = {
    MODEL: "attention recommender",
    POPULARITY: "popularity",
    KNN: "item kNN (transitions)",
    MF: "matrix factorisation (ALS)",
    SASREC_PLAIN: "plain SASRec (ids only)",
}


def log_setup(
    tags: dict[str, str], tcfg: TrainConfig, settings: Settings, vocab: ItemVocab, split: Split, n_sequences: int
) -> None:
    """The run's tags, and as parameters the training config and the size of the data it saw."""
    import mlflow

    mlflow.set_tags(tags)
    mlflow.log_params(
        {
            **{k: v for k, v in asdict(tcfg).items() if k != "positive_types"},
            "positive_types": ",".join(tcfg.positive_types),
            "n_items": vocab.n_items,
            "n_categories": len(vocab.categories),
            "n_users": split.n_users,
            "n_train_events": split.train.n_events,
            "n_train_sequences": n_sequences,
            "n_holdout_users": len(split.test),
            "n_holdout_eligible_users": split.n_holdout_users,
            "loss": ("sampled_softmax_logq" if vocab.n_items > tcfg.full_softmax_max_items else "full_softmax"),
            "train_ablation": settings.train_ablation,
        }
    )


def epoch_logger(prefix: str) -> Callable[[dict[str, float]], None]:
    """An ``on_epoch`` callback for models.fit.fit: the epoch's row as metrics ``<prefix><name>``."""
    import mlflow

    def log_epoch(row: dict[str, float]) -> None:
        mlflow.log_metrics({f"{prefix}{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    return log_epoch


def log_results(
    results: dict[str, dict[str, float] | None],
    choices: dict[str, dict[str, float]],
    histories: dict[str, list[dict[str, float]]],
    train_seconds: float,
    ablation: dict[str, dict[str, float]] | None = None,
    slices: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Test metrics of every scorer ({MODEL, POPULARITY, KNN, MF, SASREC_PLAIN} prefix -> metrics, None when not
    trained), the settings each tuned baseline chose on validation ({KNN, MF} prefix -> settings and their
    "val_ndcg_at_10": params ``<prefix><setting>``, metric ``<prefix>val_ndcg_at_10``), the input ablation
    ({signal: test metrics with it unknown}, models.ablation: metrics ``ablation_<signal>_test_<metric>``), the
    cold slices ({slice name -> {"n_users": count, prefix -> metrics}}: metrics ``<prefix>test_<slice>_<metric>``
    and ``test_<slice>_n_users``, models.evaluate.cold_slices), and the plots."""
    import mlflow

    mlflow.log_params(
        {f"{prefix}{k}": v for prefix, choice in choices.items() for k, v in choice.items() if k != "val_ndcg_at_10"}
    )
    model_history = next(iter(histories.values()))
    mlflow.log_metrics(
        {
            "train_seconds": train_seconds,
            "epochs_run": float(len(model_history)),
            **{f"{prefix}test_{k}": v for prefix, m in results.items() for k, v in (m or {}).items()},
            **{f"{prefix}val_ndcg_at_10": choice["val_ndcg_at_10"] for prefix, choice in choices.items()},
            **{
                f"ablation_{signal}_test_{k}": v
                for signal, m in (ablation or {}).items()
                for k, v in m.items()
                if k != "n_users"
            },
            **slice_metrics(slices or {}),
        }
    )
    if ablation and results.get(MODEL):
        from models.ablation import log_table

        log_table(results[MODEL], ablation)
    named = {name: results[prefix] for prefix, name in LABELS.items() if results.get(prefix) is not None}
    mlflow.log_figure(curve_figure(histories), "plots/training_curves.png")
    mlflow.log_figure(bar_figure(named), "plots/model_vs_baselines.png")
    for name, m in named.items():
        log.info("test %s: %s", name, fmt(m))
    for signal, m in (ablation or {}).items():
        log.info("test attention recommender with %s unknown: %s", signal, fmt(m))
    for slice_name, by_scorer in (slices or {}).items():
        log.info("test slice %s: %d holdout users", slice_name, by_scorer["n_users"])
        for prefix, label in LABELS.items():
            if by_scorer.get(prefix) is not None:
                log.info("test slice %s, %s: %s", slice_name, label, fmt(by_scorer[prefix]))


def slice_metrics(slices: dict[str, dict[str, Any]]) -> dict[str, float]:
    """MLflow metrics of the cold slices: ``test_<slice>_n_users`` and ``<prefix>test_<slice>_<metric>``."""
    out = {}
    for slice_name, by_scorer in slices.items():
        out[f"test_{slice_name}_n_users"] = float(by_scorer["n_users"])
        for prefix in LABELS:
            for k, v in (by_scorer.get(prefix) or {}).items():
                if k != "n_users":
                    out[f"{prefix}test_{slice_name}_{k}"] = v
    return out


def curve_figure(histories: dict[str, list[dict[str, float]]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        a.plot(epochs, [h["train_loss"] for h in history], marker="o", label=name)
        if history and "val_ndcg_at_10" in history[0]:
            b.plot(epochs, [h["val_ndcg_at_10"] for h in history], marker="o", label=f"{name} NDCG@10")
            b.plot(epochs, [h["val_hr_at_10"] for h in history], marker=".", linestyle="--", label=f"{name} HR@10")
    a.set(title="training loss", xlabel="epoch", ylabel="loss")
    a.legend()
    b.set(title="validation", xlabel="epoch")
    if b.lines:
        b.legend()
    fig.tight_layout()
    return fig


def bar_figure(results: dict[str, dict[str, float]]):
    """Grouped bars: one group per metric, one bar per scorer (the model first, then the baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results.values()))
    names = [k for k in first if k != "n_users"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(results)
    for j, (label, metrics) in enumerate(results.items()):
        offset = (j - (len(results) - 1) / 2) * width
        ax.bar([i + offset for i in range(len(names))], [metrics[k] for k in names], width=width, label=label)
    ax.set_xticks(list(range(len(names))), names, rotation=20)
    ax.set(title="test holdout (leave-one-out, full catalogue)")
    ax.legend()
    fig.tight_layout()
    return fig


def fmt(m: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "n_users")
