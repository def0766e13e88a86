"""``attnrec`` command line: the entry points of each stage, and a summary of where results are.

    attnrec movielens --data-root DIR          land MovieLens-100K as raw logs
    attnrec generate --data-root DIR ...       synthetic behaviour logs
    attnrec train --dt D                       models.train (what train_recommender runs)
    attnrec candidates --dt D                  models.candidates (what nightly_candidates runs)
    attnrec summary --dt D                     where the candidates, Data Docs and MLflow store are
"""

from __future__ import annotations

import argparse
import sys


SCORERS = (("attention model", "test_"), ("transition kNN", "knn_test_"), ("plain SASRec", "sasrec_plain_test_"),
           ("popularity", "pop_test_"))
METRICS = ("hr_at_10", "ndcg_at_10", "mrr_at_10", "recall_at_50", "coverage_at_10")


def metrics_table(metrics: dict[str, float]) -> list[str]:
    """The champion run's test metrics beside its baselines, one aligned row per scorer that was evaluated."""
    rows = [f"  {'':<16}" + "".join(f"{m:>16}" for m in METRICS)]
    for label, prefix in SCORERS:
        if any(f"{prefix}{m}" in metrics for m in METRICS):
            cells = "".join(f"{metrics[f'{prefix}{m}']:>16.4f}" if f"{prefix}{m}" in metrics else f"{'-':>16}" for m in METRICS)
            rows.append(f"  {label:<16}{cells}")
    return rows


def summary(dt: str) -> str:
    """A human summary of day ``dt``: candidates, validation report, MLflow registry."""
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    from attnrec import lake
    from attnrec.settings import get_settings

    s = get_settings()
    lines = []
    cand = lake.partition(s.data_root, lake.CANDIDATES, dt)
    if lake.is_complete(cand):
        table = pq.read_table(cand, columns=["user_id", "rank", "model_version"])
        users = len(set(table.column("user_id").to_pylist()))
        version = table.column("model_version")[0].as_py() if table.num_rows else "?"
        lines.append(f"Candidates    : {cand}  ({table.num_rows} rows, {users} users, model version {version})")
    else:
        lines.append(f"Candidates    : none published yet at {cand}")
    for name, dataset in (("Clean events", lake.CLEAN_EVENTS), ("Quarantine", lake.QUARANTINE_EVENTS)):
        lines.append(f"{name:<14}: {lake.partition(s.data_root, dataset, dt)}")
    recon = lake.join(lake.partition(s.data_root, lake.CLEAN_EVENTS, dt), lake.RECONCILIATION_FILE)
    if lake.exists(recon):
        r = lake.read_json(recon)
        lines.append(
            f"Reconciliation: raw {r['raw_lines']} = clean {r['clean']} + quarantined {r['quarantined']} "
            f"+ duplicates {r['duplicates']}"
        )
    lines.append(f"Data Docs     : {lake.join(lake.data_docs_dir(s.data_root), 'index.html')}")
    lines.append(f"MLflow store  : {s.mlflow_tracking_uri} (artifacts {s.mlflow_artifact_root})")
    client = MlflowClient(tracking_uri=s.mlflow_tracking_uri)
    try:
        champion = client.get_model_version_by_alias(s.model_name, "champion")
    except Exception as err:  # noqa: BLE001 - MLflow raises a generic MlflowException when absent
        lines.append(f"Registry      : no champion of {s.model_name!r} yet ({type(err).__name__})")
    else:
        metrics = client.get_run(champion.run_id).data.metrics
        lines.append(f"Registry      : {s.model_name} champion = version {champion.version} (run {champion.run_id})")
        lines.append("Test metrics (same leave-one-out split, full catalogue):")
        lines += metrics_table(metrics)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnrec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("movielens", "generate"):
        sub.add_parser(name, add_help=False, help=f"see: python -m attnrec.{name} --help")
    for name in ("train", "candidates"):
        sub.add_parser(name, add_help=False, help=f"see: python -m models.{name} --help")
    p_sum = sub.add_parser("summary", help="where the day's results are")
    p_sum.add_argument("--dt", required=True)
    args, rest = parser.parse_known_args(argv)
    if args.command == "movielens":
        from attnrec.movielens import main as run
    elif args.command == "generate":
        from attnrec.generate import main as run
    elif args.command == "train":
        from models.train import main as run
    elif args.command == "candidates":
        from models.candidates import main as run
    else:
        from attnrec.contracts import check_dt

        try:
            print(summary(check_dt(args.dt)))
        except ValueError as err:
            print(f"attnrec summary: {err}", file=sys.stderr)
            return 2
        return 0
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
