"""``attnrec``: one command line for every stage, the model registry, the data tools and a day's summary.

The top layer: each command imports its stage (``jobs``, ``models``, ``datatools``) when it runs, so ``attnrec
--help`` loads no Spark, torch or MLflow. The options every entry point shares (``--dt``, ``--data-root``,
``--dataset``) come from :mod:`attnrec.args`. A stage's ValueError or FileNotFoundError (a bad value, a missing
partition) is one line ``attnrec <command>: <message>`` on stderr and exit code 2; any other error keeps its
traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any

import typer

from attnrec.args import DataRoot, Dataset, Dt, Validate, dt_option, one_line_errors

HELP = """Batch pipeline of an attention-based (SASRec-family) recommender, one command per stage.

The DAGs run these stages each day D (behavior_etl, train_recommender, nightly_candidates, kpi_report); the same
commands run one stage by hand, e.g. to debug a failed task or to backfill a day:

\b
  attnrec movielens --data-root data --print-dt       land MovieLens-100K as raw logs, print its day D
  attnrec generate --data-root data --start D         or synthetic behaviour logs
  attnrec simulate --data-root data --dt D            synthetic users' day D+1, responding to candidates of D
  attnrec loop --workdir .loop                        the whole loop on synthetic users (make demo-loop)
  attnrec clean --dt D                                raw/events/dt=D -> staged clean events + quarantine
  attnrec validate --dataset clean_events --dt D      the gate on the staged clean events
  attnrec featurize --dt D                            staged features/sequences, features/items of D
  attnrec validate --dataset features --dt D          the gate on the staged features
  attnrec train --dt D                                train, log to MLflow, register, promote if better
  attnrec candidates --dt D                           top-K per user from the champion (challenger: treatment)
  attnrec kpis --dt D                                 what D's lists did over the next days: kpis/dt=D,
                                                      MLflow, bandit allocation, online promotion
  attnrec registry show                               versions and aliases of attention-recommender
  attnrec pseudonym USER_ID                           the pseudonym of a raw user id (support)
  attnrec summary --dt D                              where the day's results are
  attnrec spark-archive                               the Spark driver's class archive (quicker job starts)

The DAGs publish a staged partition only after its gate passes; by hand, publish through the DAG
(airflow dags test behavior_etl D). Configuration comes from ATTNREC_* environment variables
(attnrec/settings.py lists every one with its default).
"""

app = typer.Typer(
    name="attnrec",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # plain tracebacks in task logs, never local variables
    rich_markup_mode=None,
)
registry = typer.Typer(
    help="The MLflow registry of attention-recommender: versions, aliases and promotions.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(registry, name="registry")


def stage_errors(command: str):
    """``attnrec <command>: <message>`` and exit code 2 for a stage's ValueError / FileNotFoundError."""
    return one_line_errors(f"attnrec {command}")


def _print_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, indent=2, default=str))


def _log_progress() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


# ------------------------------------------------------------------------------------------- data tools


@app.command()
def movielens(
    data_root: Annotated[str, typer.Option(metavar="DIR", help="Lake root to land raw/events and raw/items under.")],
    cache_dir: Annotated[
        str | None, typer.Option(metavar="DIR", help="Where the recbole wheel is kept (default: .cache/ml-100k).")
    ] = None,
    dt: Annotated[str | None, dt_option("The landing day (default: the day after the last rating).")] = None,
    print_dt: Annotated[
        bool, typer.Option("--print-dt", help="Print only the landing day on stdout, the summary on stderr.")
    ] = False,
) -> None:
    """Land MovieLens-100K (from the recbole==1.2.1 wheel on PyPI) as raw logs: one partition of 100,000
    rate events and the 1,682-movie catalogue."""
    from datatools.movielens import default_cache_dir, fetch, land

    with stage_errors("movielens"):
        result = land(data_root, fetch(cache_dir or default_cache_dir()), dt)
    summary = f"dt={result['dt']}: {result['events']} events, {result['users']} users, {result['items']} items"
    if print_dt:
        print(summary, file=sys.stderr)
        print(result["dt"])
    else:
        print(summary)


@app.command()
def generate(
    data_root: Annotated[str, typer.Option(metavar="DIR", help="Lake root to write raw/events and raw/items under.")],
    start: Annotated[str, dt_option("The first landing day.", name="--start")],
    days: Annotated[int, typer.Option(help="Landing days.")] = 1,
    users: Annotated[int, typer.Option(help="Users.")] = 1000,
    items: Annotated[int, typer.Option(help="Catalogue size.")] = 500,
    events_per_day: Annotated[int, typer.Option(help="Lines per landing day, bad ones included.")] = 20_000,
    bad_fraction: Annotated[
        float, typer.Option(help="Share of bad lines (duplicates, malformed JSON, missing ids, ...).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Everything derives from it: same arguments, same bytes.")] = 42,
    files_per_day: Annotated[int, typer.Option(help="gzip files per landing day.")] = 1,
) -> None:
    """Write seeded synthetic behaviour logs in the raw contract: drifting Zipf popularity, sessions down a
    funnel, bots, and with --bad-fraction the real world's bad lines, each kind counted."""
    from datatools.generate import generate as write_days

    with stage_errors("generate"):
        result = write_days(
            data_root, start, days, users, items, events_per_day,
            seed=seed, bad_fraction=bad_fraction, files_per_day=files_per_day,
            log=lambda msg: print(msg, file=sys.stderr, flush=True),
        )  # fmt: skip
    print(f"items: {result['items']['count']} -> {result['items']['path']}")
    for dt, day in result["days"].items():
        bad = ", ".join(f"{k}={v}" for k, v in day["bad"].items() if v) or "none"
        print(f"dt={dt}: {day['lines']} lines, {day['good']} good, bad: {bad}")
    print(f"{result['events']:,} lines in {result['seconds']:.1f}s ({result['events_per_second']:,.0f} events/s)")


@app.command()
def simulate(
    data_root: Annotated[str, typer.Option(metavar="DIR", help="Lake root made by 'attnrec generate'.")],
    dt: Annotated[str, dt_option("The day the lists were served: candidates/dt=D; writes raw/events of D+1.")],
    top_n: Annotated[int, typer.Option(help="Items of each served list the user is shown (ranks 1..N).")] = 10,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the users' responses (default: the world's seed); same seed, same bytes."),
    ] = None,
) -> None:
    """Write the synthetic users' day D+1: the generator's organic browsing plus impressions of each user's top-N
    served items of candidates/dt=D, clicked, viewed and bought by the user's hidden taste (the world recorded in
    DIR/_synthetic/world.json; the pipeline never reads it)."""
    from datatools.simulate import simulate as simulate_day

    with stage_errors("simulate"):
        result = simulate_day(data_root, dt, top_n=top_n, seed=seed)
    print(
        f"dt={result['dt']}: {result['organic_lines']} organic lines; served lists of dt={dt}: "
        f"{result['served_users']} users, {result['visitors']} visited, {result['impressions']} impressions, "
        f"{result['clicks']} clicks, {result['users_with_a_click']} users with a click -> {result['path']}"
    )


@app.command()
def loop(
    workdir: Annotated[
        str, typer.Option(metavar="DIR", help="An empty or new directory: the loop's Airflow home, lake and MLflow.")
    ],
    loop_days: Annotated[int, typer.Option(help="Days served, answered by the simulated users and measured.")] = 3,
    history_days: Annotated[int, typer.Option(help="Days of synthetic history before the first served day.")] = 2,
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 1000,
    events_per_day: Annotated[int, typer.Option(help="Organic events a day (~16 per user).")] = 16000,
    min_share: Annotated[float, typer.Option(help="Least share each arm keeps (ATTNREC_AB_MIN_SHARE).")] = 0.2,
    strong_epochs: Annotated[int, typer.Option(help="Epochs of the strong model (the weak one gets 1).")] = 12,
    seed: Annotated[int, typer.Option(help="Seed of the world, the training and the users' answers.")] = 7,
) -> None:
    """Close the loop on synthetic users: history -> behavior_etl -> a weak model (champion) and a strong one
    (challenger) -> each day: nightly_candidates in a thompson A/B experiment -> simulate the next day ->
    behavior_etl -> kpi_report; prints the daily table (share, hit rate per arm, p-value, champion) and saves
    DIR/loop.json and DIR/loop.png. Every stage runs through 'airflow dags test'."""
    from pathlib import Path

    from datatools.loop import LoopConfig, run

    cfg = LoopConfig(
        workdir=Path(workdir).resolve(), loop_days=loop_days, history_days=history_days, users=users,
        events_per_day=events_per_day, min_share=min_share, strong_epochs=strong_epochs, seed=seed,
    )  # fmt: skip
    # a failed DAG run (RuntimeError) is one message with its log's path and tail, not a traceback
    with one_line_errors("attnrec loop", (ValueError, FileNotFoundError, RuntimeError)):
        run(cfg, log=lambda msg: print(msg, flush=True))


# ------------------------------------------------------------------------------------------ Spark jobs


@app.command()
def clean(dt: Dt, data_root: DataRoot = None) -> None:
    """Clean one landing day (Spark, in this process): raw/events/dt=D -> staged clean events, quarantine (a
    reason per line) and the reconciliation raw = clean + quarantined + duplicates."""
    from jobs.clean import main

    with stage_errors("clean"):
        _exit(main(dt, data_root))


@app.command()
def featurize(dt: Dt, data_root: DataRoot = None) -> None:
    """Build day D's features (Spark, in this process) from the clean events up to D: staged user sequences
    and item table."""
    from jobs.featurize import main

    with stage_errors("featurize"):
        _exit(main(dt, data_root))


@app.command("item-text")
def item_text(dt: Dt, data_root: DataRoot = None, validate: Validate = False) -> None:
    """Embed day D's item titles (the pretrained sentence encoder, offline) into staged features/item_text, reusing
    the vectors of titles already embedded; with --validate, then its gate."""
    from jobs.item_text import main

    with stage_errors("item-text"):
        _exit(main(dt, data_root, validate))


@app.command()
def validate(dataset: Dataset, dt: Dt, data_root: DataRoot = None) -> None:
    """Run a gate on day D's staged partitions (Great Expectations on Spark, in this process). Exit code 0
    when every check passes, 1 when one fails (the failures on stderr), 2 when a partition is missing."""
    from jobs.validate import main

    with stage_errors("validate"):
        _exit(main(dataset, dt, data_root))


# ------------------------------------------------------------------------------------------ model stages


@app.command()
def train(
    dt: Dt,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="NAME=VALUE", help="Override a training-config field, e.g. --set dropout=0.3 (repeatable)."
        ),
    ] = None,
) -> None:
    """Train the attention recommender on features/*/dt=D beside its baselines, log the run to MLflow and
    register the version; it becomes champion only when it beats the current one on the same holdout.

    Several processes: torchrun --nproc_per_node=N -m attnrec train --dt D (only rank 0 logs, registers and
    prints the result).
    """
    from attnrec.settings import get_settings
    from models.config import train_config
    from models.train import run

    _log_progress()
    with stage_errors("train"):
        settings = get_settings()
        result = run(dt, settings, train_config(settings, overrides or []))
    if "rank" not in result:
        _print_json(result)


@app.command()
def candidates(
    dt: Dt,
    re_resolve: Annotated[
        bool,
        typer.Option(
            "--re-resolve",
            help="Serve the current champion, challenger and treatment share even when day D's published "
            "candidates record another plan.",
        ),
    ] = False,
) -> None:
    """Write day D's top-K unseen items per user to staging (what nightly_candidates validates and publishes),
    from the same serving plan the DAG would resolve: the champion, and while an A/B experiment runs
    (ATTNREC_AB_TREATMENT_SHARE above 0) the challenger for the treatment arm; a day already published re-serves
    the plan it records unless --re-resolve."""
    from attnrec.settings import get_settings
    from models.candidates import run

    _log_progress()
    with stage_errors("candidates"):
        result = run(dt, get_settings(), re_resolve=re_resolve)
    _print_json(result)


@app.command()
def kpis(dt: Dt, data_root: DataRoot = None) -> None:
    """Measure the lists served on D against the clean events of D+1 .. D+ATTNREC_KPI_HORIZON_DAYS (Spark, in this
    process), validate and publish kpis/dt=D, then log them to MLflow, write the bandit allocation (thompson) and
    apply the online promotion rule: what kpi_report does, without waiting for missing days. Exit code 1 when the
    gate fails (nothing published), 2 when an input is not published."""
    from attnrec.settings import get_settings
    from jobs.kpis import gate_and_publish, main
    from models.online import report

    _log_progress()
    with stage_errors("kpis"):
        settings = get_settings(data_root=data_root)
        _exit(main(dt, data_root) or gate_and_publish(settings, dt))
        result = report(settings, dt)
    _print_json(result)


@registry.command("show")
def registry_show() -> None:
    """Print the aliases (champion, challenger) and every version with its promotion tags, as JSON."""
    from attnrec.settings import get_settings
    from models.registry import describe

    with stage_errors("registry show"):
        _print_json(describe(get_settings()))


@registry.command("promote")
def registry_promote(
    version: Annotated[str, typer.Option(metavar="N", help="The registered version to point the alias at, e.g. 3.")],
    reason: Annotated[str, typer.Option(help="Why; recorded on the version.")] = "manual promotion",
    alias: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="champion (what everyone, or an experiment's control arm, is served) or challenger (what an "
            "experiment's treatment arm is served).",
        ),
    ] = "champion",
) -> None:
    """Move an alias to an existing version (champion: a manual promotion or a roll-back; challenger: the version an
    A/B experiment's treatment arm gets), then print the registry."""
    from attnrec.settings import get_settings
    from models.registry import describe, promote

    with stage_errors("registry promote"):
        settings = get_settings()
        promote(settings, version, reason, alias)
        _print_json(describe(settings))


# --------------------------------------------------------------------------------------------- personal data


@app.command()
def pseudonym(
    user_id: Annotated[str, typer.Argument(metavar="USER_ID", help="A raw user id, as it appears in raw/events.")],
    data_root: DataRoot = None,
) -> None:
    """Print the pseudonym of a raw user id, for support: what pseudonymous datasets carry instead of the id
    (docs/privacy.md). The key is ATTNREC_PSEUDONYM_KEY, else the lake's key file; this command never creates one."""
    from attnrec.privacy import pseudonym as pseudonym_of
    from attnrec.privacy import pseudonym_key
    from attnrec.settings import get_settings

    with stage_errors("pseudonym"):
        if not user_id.strip(" "):
            raise ValueError("USER_ID is empty; pass the raw id, e.g. attnrec pseudonym u42")
        print(pseudonym_of(user_id, pseudonym_key(get_settings(data_root=data_root), create=False)))


# ----------------------------------------------------------------------------------------------- summary

SCORERS = (
    ("attention model", "test_"),
    ("transition kNN", "knn_test_"),
    ("ALS (MF)", "mf_test_"),
    ("plain SASRec", "sasrec_plain_test_"),
    ("popularity", "pop_test_"),
)
METRICS = ("hr_at_10", "ndcg_at_10", "mrr_at_10", "recall_at_50", "coverage_at_10")


def metrics_table(metrics: dict[str, float]) -> list[str]:
    """The champion run's test metrics beside its baselines, one aligned row per scorer that was evaluated."""
    rows = [f"  {'':<16}" + "".join(f"{m:>16}" for m in METRICS)]
    for label, prefix in SCORERS:
        if any(f"{prefix}{m}" in metrics for m in METRICS):
            cells = "".join(
                f"{metrics[f'{prefix}{m}']:>16.4f}" if f"{prefix}{m}" in metrics else f"{'-':>16}" for m in METRICS
            )
            rows.append(f"  {label:<16}{cells}")
    return rows


def summary_lines(dt: str) -> list[str]:
    """Day ``dt`` in a few lines: candidates, clean and quarantine, reconciliation, Data Docs, MLflow registry."""
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    from attnrec import lake
    from attnrec.settings import get_settings
    from models.registry import CHAMPION, alias_version
    from models.serving_plan import describe_plan, plan_of

    s = get_settings()
    lines = []
    cand = lake.partition(s.data_root, lake.CANDIDATES, dt)
    if lake.is_complete(cand):
        table = pq.read_table(cand, columns=["user_id", "model_version"])
        users = len(set(table.column("user_id").to_pylist()))
        manifest = lake.join(cand, lake.CANDIDATES_MANIFEST)
        served = describe_plan(plan_of(lake.read_json(manifest))) if lake.exists(manifest) else "model version ?"
        lines.append(f"Candidates    : {cand}  ({table.num_rows} rows, {users} users, {served})")
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
    version = alias_version(s, CHAMPION)  # None only when there is none; any other registry error raises
    if version is None:
        lines.append(f"Registry      : no champion of {s.model_name!r} yet (no such model or alias in the registry)")
    else:
        champion = client.get_model_version(s.model_name, version)
        metrics = client.get_run(champion.run_id).data.metrics
        lines.append(f"Registry      : {s.model_name} champion = version {champion.version} (run {champion.run_id})")
        lines.append("Test metrics (same leave-one-out split, full catalogue):")
        lines += metrics_table(metrics)
        lines += ablation_lines(metrics)
    return lines


def ablation_lines(metrics: dict[str, float]) -> list[str]:
    """The run's input ablation (models.ablation): the model's test NDCG@10 with each signal read as unknown."""
    signals = sorted(k[len("ablation_") : -len("_test_ndcg_at_10")] for k in metrics if k.startswith("ablation_"))
    signals = [s for s in signals if f"ablation_{s}_test_ndcg_at_10" in metrics]
    if not signals or "test_ndcg_at_10" not in metrics:
        return []
    full = metrics["test_ndcg_at_10"]
    cells = [
        f"{s} {metrics[f'ablation_{s}_test_ndcg_at_10']:.4f} ({metrics[f'ablation_{s}_test_ndcg_at_10'] - full:+.4f})"
        for s in signals
    ]
    return [
        f"Input ablation (attention recommender, test NDCG@10 {full:.4f}; with one input unknown): " + ", ".join(cells)
    ]


@app.command("spark-archive")
def spark_archive(
    output: Annotated[
        str,
        typer.Option(metavar="PATH", help="Where to write it; default: ATTNREC_SPARK_CLASS_ARCHIVE (this Python's)."),
    ] = "",
) -> None:
    """Write the class archive every job's Spark driver maps at start (seconds less per job): records the classes
    of clean, its gate and the features on a small synthetic day (about a minute or two). Run it again after
    upgrading Java or pyspark; `make test` runs it when the lock changes."""
    from attnrec.settings import get_settings
    from datatools.spark_archive import build

    target = output or get_settings().spark_class_archive
    if not target:
        print("attnrec spark-archive: ATTNREC_SPARK_CLASS_ARCHIVE is none; pass --output PATH", file=sys.stderr)
        raise typer.Exit(2)
    with stage_errors("spark-archive"):
        try:
            build(target, log=lambda msg: print(msg, flush=True))
        except RuntimeError as err:
            print(f"attnrec {err}", file=sys.stderr)
            raise typer.Exit(1) from None


@app.command()
def summary(dt: Dt) -> None:
    """Where day D's results are: candidates, clean events, quarantine, reconciliation, Data Docs, the MLflow
    store and the champion's test metrics beside its baselines."""
    with stage_errors("summary"):
        print("\n".join(summary_lines(dt)))


def main() -> None:
    """The ``attnrec`` console script and ``python -m attnrec`` (also under torchrun)."""
    app(prog_name="attnrec")
