"""The input ablation table of a registered model: what each input signal is worth on a day's features.

Loads a version of ``attention-recommender`` from the MLflow registry (the champion unless ``--version``), reads
the published features of ``--dt``, builds the same leave-one-out test holdout training builds, evaluates the model
on it once as it is and once per input signal with that signal read as unknown (``models.ablation``: no
retraining), prints the table (signal, NDCG@10 / HR@10 / MRR@10 with and without it, the difference) and logs it
to a new MLflow run ``ablation-<dt>`` in the project's experiment (artifacts ``ablation/input_ablation.md`` and
``.json``, metrics ``ablation_<signal>_test_<metric>``). Every ``train_recommender`` run already logs the same
table for the model it trains; this runs it again for any version on any day.

Run (with the same ``ATTNREC_DATA_ROOT`` and ``MLFLOW_TRACKING_URI`` as the DAGs, e.g. after ``make demo``):
``python benchmarks/ablation.py --dt 1998-04-23 [--version 3]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time


def run(dt: str, version: str | None = None) -> tuple[str, dict[str, float], dict[str, dict[str, float]]]:
    """(table, full metrics, {signal: metrics with it unknown}) of model ``version`` (champion: None) on ``dt``."""
    import mlflow

    from attnrec.settings import get_settings
    from models import registry
    from models.ablation import input_ablation, log_table
    from models.config import train_config
    from models.dataset import read_split
    from models.evaluate import evaluate_recommender
    from models.features import load_features

    settings = get_settings()
    rec, version = (registry.load_version(settings, version), version) if version else registry.load_champion(settings)
    paths, _, data_version = load_features(settings.data_root, dt)
    positive = train_config(settings).positive_types
    with tempfile.TemporaryDirectory(prefix="attnrec-ablation-") as spill:
        split = read_split(paths["sequences"], rec.vocab, positive, settings.holdout_max_users or None, spill_dir=spill)
        if not split.test:
            raise ValueError(f"features for dt={dt} have no user with 3 or more positive events: no holdout")
        started = time.monotonic()
        full = evaluate_recommender(rec, split.test)
        ablated = input_ablation(rec, split.test)
        seconds = time.monotonic() - started
    with mlflow.start_run(experiment_id=registry.ensure_experiment(settings), run_name=f"ablation-{dt}"):
        mlflow.set_tags(
            {
                "model_version": version,
                "feature_dt": dt,
                "feature_snapshot_hash": data_version["snapshot_hash"],
                "kind": "input_ablation",
            }
        )
        mlflow.log_metrics(
            {
                "ablation_seconds": seconds,
                **{f"test_{k}": v for k, v in full.items() if k != "n_users"},
                **{
                    f"ablation_{s}_test_{k}": v
                    for s, metrics in ablated.items()
                    for k, v in metrics.items()
                    if k != "n_users"
                },
            }
        )
        table = log_table(full, ablated)
    print(
        f"Input ablation of {settings.model_name} version {version} on features dt={dt} ({len(split.test)} test "
        f"users, {len(ablated)} signals, {seconds:.0f} s); delta = with - without:"
    )
    print(table, end="")
    return table, full, ablated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dt", required=True, help="the features partition to evaluate on (YYYY-MM-DD)")
    parser.add_argument("--version", help="the registered model version (default: the champion)")
    args = parser.parse_args(argv)
    run(args.dt, args.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
