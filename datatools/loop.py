"""The closed loop on synthetic users: serve two models in a bandit A/B test, let the users answer, measure, repeat.

``run(LoopConfig(workdir=...))`` (``attnrec loop``, ``make demo-loop``) works in a fresh Airflow home, lake and
MLflow store under ``workdir`` and drives every stage through ``airflow dags test <dag_id> <date>`` with environment
variables only (the DAG ids and ATTNREC_* settings are the contract), as an operator would; the commands run one
after another in one Airflow process (:mod:`datatools.airflow_session`: Airflow's own ``dags test`` command, its
start-up paid once instead of once per DAG run), each with its own settings and its own log under ``workdir/logs``:

1. ``attnrec generate``: ``history_days`` of synthetic history (the hidden world recorded for the simulator);
   ``behavior_etl`` for each day;
2. ``train_recommender`` twice under ATTNREC_PROMOTION_RULE=online: a deliberately weak model first (``weak_epochs``
   on the first day's features only; the first version becomes ``champion``), then a strong one (``strong_epochs``
   on the whole history; it becomes ``challenger``); with one history day both train on it;
3. for each of ``loop_days`` days D: ``nightly_candidates`` D in experiment ``experiment_id`` (control: champion,
   treatment: challenger; share ``treatment_share`` on the first day, then the thompson allocation) ->
   ``attnrec simulate`` D (the users' day D+1) -> ``behavior_etl`` D+1 -> ``kpi_report`` D (the KPIs of D's lists,
   the next day's share in experiments/dt=D/allocation.json);
4. the daily table (share, hit rate per arm with its users, lift, p-value, champion) printed and written to
   ``workdir/loop.json`` and ``workdir/loop.png``, then the seconds of every step (also in ``loop.json``); the
   whole printed output is kept in ``workdir/loop.log``.

The experiment runs for a fixed number of days and is decided on the last: kpi_report runs under
ATTNREC_PROMOTION_RULE=online only for the last day (before it, ``offline``: it measures and moves the share but
leaves ``champion`` alone), so every day compares the two models and the decision uses the whole run's traffic
shape. ATTNREC_AB_MIN_USERS is lowered to ``min_users`` because the bandit leaves the control arm small.
"""

from __future__ import annotations

import dataclasses
import datetime as dt_
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnrec import lake
from attnrec.contracts import CONTROL, TREATMENT
from attnrec.settings import MODEL_NAME, PROJECT_ROOT
from datatools.airflow_session import AirflowSession

DAGS = PROJECT_ROOT / "dags"
#: The DAG ids the loop drives (DESIGN.md): a missing one fails the loop before it starts.
DAG_IDS = ("behavior_etl", "train_recommender", "nightly_candidates", "kpi_report")
_FAILED = ("DagRun failed", "state=failed", "DagRunState.FAILED")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Sizes of one loop run. The defaults take a few minutes per loop day on 2 cores; the effect they produce
    (weak vs strong model under the simulator) is large: see docs/operations.md."""

    workdir: Path
    start: str = "2026-02-01"  # first history day
    history_days: int = 2
    loop_days: int = 3
    users: int = 1000
    items: int = 300
    events_per_day: int = 16000  # about 16 per user: enough history for the strong model to find each user's taste
    seed: int = 7
    weak_epochs: int = 1
    strong_epochs: int = 12
    top_k: int = 20  # candidates per user
    top_n: int = 10  # items of each list the simulated user is shown
    experiment_id: str = "loop-weak-vs-strong"
    treatment_share: float = 0.5  # the first day's; thompson moves it after
    min_share: float = 0.2  # control keeps ~170 active users: the last day's test stays far from a coin flip
    min_users: int = 20

    @property
    def history(self) -> list[str]:
        first = dt_.date.fromisoformat(self.start)
        return [(first + dt_.timedelta(days=k)).isoformat() for k in range(self.history_days)]

    @property
    def serve_days(self) -> list[str]:
        last = dt_.date.fromisoformat(self.history[-1])
        return [(last + dt_.timedelta(days=k)).isoformat() for k in range(self.loop_days)]

    @property
    def data_root(self) -> str:
        return str(self.workdir / "data")


def small_config(workdir: Path, seed: int = 7) -> LoopConfig:
    """The loop at the size of ``tests/test_loop.py`` (part of ``make test``): one history day (both models train on
    its features: the weak one 1 epoch, still warming up, the strong one 8), two loop days (the 50/50 day, then the
    thompson share), 1,000 users with 24 events a day each so the strong model finds their taste in one day. Nine
    DAG runs instead of the defaults' fourteen; the margins per seed are in docs/operations.md
    (``python benchmarks/loop_margins.py``)."""
    return LoopConfig(
        workdir=workdir, history_days=1, loop_days=2, users=1000, items=300, events_per_day=24000, strong_epochs=8,
        seed=seed,
    )  # fmt: skip


def check_config(cfg: LoopConfig) -> None:
    for name in ("history_days", "loop_days", "users", "items", "events_per_day", "weak_epochs", "strong_epochs"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)!r} must be >= 1")
    missing = [d for d in DAG_IDS if not (DAGS / f"{d}.py").is_file()]
    if missing:
        raise FileNotFoundError(
            f"the loop needs DAG(s) {', '.join(missing)} and {DAGS} has no "
            f"{', '.join(f'{d}.py' for d in missing)}; kpi_report (online KPIs, the thompson allocation, online "
            "promotion) comes with issue 12: merge it into this checkout, then run the loop again"
        )


def base_env(cfg: LoopConfig) -> dict[str, str]:
    """A fresh Airflow home, lake and MLflow store under ``cfg.workdir``; nothing of the caller's ATTNREC_*, MLFLOW_*
    or AIRFLOW* settings leaks in. The loop's settings are added per step (:func:`step_env`)."""
    work = cfg.workdir.resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ATTNREC_", "MLFLOW_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # spark-submit of this venv
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        ATTNREC_DATA_ROOT=str(work / "data"),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        ATTNREC_MLFLOW_ARTIFACTS=(work / "mlartifacts").as_uri(),
        ATTNREC_CHECKPOINT_DIR=str(work / "checkpoints"),
        ATTNREC_SPARK_DRIVER_MEMORY="1g",
        ATTNREC_SEED=str(cfg.seed),
        ATTNREC_TOP_K=str(cfg.top_k),
        ATTNREC_TRAIN_ABLATION="false",
        ATTNREC_PROMOTION_RULE="online",
        ATTNREC_AB_EXPERIMENT_ID=cfg.experiment_id,
        ATTNREC_AB_TREATMENT_SHARE=str(cfg.treatment_share),
        ATTNREC_AB_ALLOCATION="thompson",
        ATTNREC_AB_MIN_SHARE=str(cfg.min_share),
        ATTNREC_AB_MIN_USERS=str(cfg.min_users),
    )
    return env


class Runner:
    """Runs ``airflow dags test`` in the loop's Airflow home (in one :class:`AirflowSession`), one log file per run,
    and fails loudly; :meth:`close` ends the session."""

    def __init__(self, cfg: LoopConfig, log: Callable[[str], None]):
        self.cfg, self.log, self.env = cfg, log, base_env(cfg)
        self.logs = cfg.workdir / "logs"
        self.seconds: dict[str, float] = {}  # step (e.g. behavior_etl-2026-02-01) -> its wall seconds
        self.kinds: dict[str, str] = {}  # step -> its kind (behavior_etl, simulate, ...)
        self.session: AirflowSession | None = None

    def setup(self) -> None:
        home = Path(self.env["AIRFLOW_HOME"])
        if self.cfg.workdir.exists() and any(self.cfg.workdir.iterdir()):
            raise ValueError(
                f"workdir {self.cfg.workdir} is not empty; the loop starts from nothing: remove it or pick another"
            )
        home.mkdir(parents=True)
        self.logs.mkdir()
        (home / "dags").symlink_to(DAGS)  # Airflow's default dags folder, $AIRFLOW_HOME/dags
        self.command(["airflow", "db", "migrate"], "airflow-db-migrate")
        self.start_session()

    def command(self, argv: list[str], name: str, kind: str = "", **extra_env: str) -> None:
        """``python -m <argv>`` as a process of its own (``airflow db migrate``, before the session starts)."""
        self.kinds[name] = kind or name
        log = self.logs / f"{name}.log"
        started = time.perf_counter()
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.run(
                [sys.executable, "-m", *argv],
                env={**self.env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.env["AIRFLOW_HOME"],
            )
        self.seconds[name] = time.perf_counter() - started
        self._check(argv, proc.returncode, log)

    def _check(self, argv: list[str], code: int, log: Path) -> None:
        text = log.read_text(encoding="utf-8", errors="replace")
        if code != 0 or any(mark in text[-20000:] for mark in _FAILED):
            raise RuntimeError(f"{' '.join(argv)} failed (exit code {code}); log {log}:\n{text[-3000:]}")

    def start_session(self) -> None:
        """One Airflow process for every DAG run of the loop (:mod:`datatools.airflow_session`): Airflow's start-up
        is paid once, not once per ``airflow dags test``."""
        self.kinds["airflow-session"] = "airflow-session"
        started = time.perf_counter()
        # this checkout's code in the session (the DAG folder is this checkout's dags/, whatever the editable
        # install of the venv points at)
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), self.env.get("PYTHONPATH", "")) if p)
        self.session = AirflowSession(
            {**self.env, "PYTHONPATH": path}, Path(self.env["AIRFLOW_HOME"]), self.logs / "airflow-session.log"
        )
        self.seconds["airflow-session"] = time.perf_counter() - started

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def dag(self, dag_id: str, dt: str, name: str = "", **extra_env: str) -> None:
        """``airflow dags test dag_id dt`` in the session, with ``extra_env`` added for this run only."""
        name = name or f"{dag_id}-{dt}"
        if self.session is None:
            raise RuntimeError("the Airflow session is not started: call start_session() first")
        self.kinds[name] = dag_id
        argv = ["dags", "test", dag_id, dt]
        log = self.logs / f"{name}.log"
        started = time.perf_counter()
        code = self.session.run(argv, log, extra_env)
        self.seconds[name] = time.perf_counter() - started
        self._check(["airflow", *argv], code, log)
        self.log(f"  {dag_id} {dt}: ok in {self.seconds[name]:.0f} s")

    def timed(self, name: str, kind: str, fn: Callable[[], Any]) -> Any:
        """Runs an in-process step (generate, simulate) and records its seconds beside the DAG runs'."""
        self.kinds[name] = kind
        started = time.perf_counter()
        out = fn()
        self.seconds[name] = time.perf_counter() - started
        return out


def champion_version(env: dict[str, str]) -> str | None:
    """The version alias ``champion`` points at in the loop's registry (None when there is none)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    try:
        return str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    except MlflowException:
        return None


def day_row(root: str, dt: str, experiment_id: str) -> dict[str, Any]:
    """Day ``dt`` of the experiment: the arms served (users, model version) from candidates/dt, the KPIs of kpis/dt
    (hit rate at 10 per arm with its active users, lift, p-value) and the share kpi_report set for the next day."""
    import pyarrow.parquet as pq

    cands = pq.read_table(lake.partition(root, lake.CANDIDATES, dt)).to_pandas()
    if "arm" not in cands.columns:
        raise ValueError(
            f"candidates/dt={dt} has no 'arm' column: nightly_candidates predates issue 12's experiments; merge it"
        )
    served = cands.drop_duplicates("user_id")
    row: dict[str, Any] = {"dt": dt, "served_share": float((served["arm"] == TREATMENT).mean())}
    for arm in (CONTROL, TREATMENT):
        versions = sorted(set(served.loc[served["arm"] == arm, "model_version"]))
        row[f"{arm}_version"] = ",".join(versions)
    kpis = pq.read_table(lake.partition(root, lake.KPIS, dt)).to_pandas()
    kpis = kpis[kpis["experiment_id"] == experiment_id]
    for arm in (CONTROL, TREATMENT):
        rows = kpis[kpis["arm"] == arm]
        if rows.empty:
            raise ValueError(f"kpis/dt={dt} has no row for experiment {experiment_id!r}, arm {arm!r}")
        active = int(rows["active_users"].sum())  # hit rates are over the users active in the outcome window
        row[f"{arm}_users"] = active
        row[f"{arm}_hit_rate_at_10"] = float(
            (rows["hit_rate_at_10"].fillna(0) * rows["active_users"]).sum() / max(active, 1)
        )
    treatment = kpis[kpis["arm"] == TREATMENT].iloc[0]
    row["lift_hit_rate_at_10"] = float(treatment["lift_hit_rate_at_10"])
    row["p_value"] = float(treatment["p_value"])
    allocation = lake.join(lake.partition(root, lake.EXPERIMENTS, dt), lake.ALLOCATION_FILE)
    row["next_share"] = float(lake.read_json(allocation)["treatment_share"]) if lake.exists(allocation) else None
    return row


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The daily table, one aligned line per loop day."""
    head = (f"{'day':<11}{'share':>7}{'ctl ver':>8}{'ctl activ':>10}{'ctl HR@10':>10}{'trt ver':>8}{'trt activ':>10}"
            f"{'trt HR@10':>10}{'lift':>8}{'p-value':>10}{'next share':>11}{'champion':>9}")  # fmt: skip
    lines = [head]
    for r in rows:
        nxt = "-" if r["next_share"] is None else f"{r['next_share']:.3f}"
        lines.append(
            f"{r['dt']:<11}{r['served_share']:>7.3f}{r['control_version']:>8}{r['control_users']:>10}"
            f"{r['control_hit_rate_at_10']:>10.3f}{r['treatment_version']:>8}{r['treatment_users']:>10}"
            f"{r['treatment_hit_rate_at_10']:>10.3f}{r['lift_hit_rate_at_10']:>+8.3f}{r['p_value']:>10.2g}"
            f"{nxt:>11}{r['champion']:>9}"
        )
    return lines


def seconds_lines(seconds: dict[str, float], kinds: dict[str, str]) -> list[str]:
    """Where the loop's time went: every step in the order it ran, then the total per kind of step (behavior_etl,
    train_recommender, simulate, ...), largest first."""
    lines = [f"  {name:<38}{s:>7.0f} s" for name, s in seconds.items()]
    by_kind: dict[str, list[float]] = {}
    for name, s in seconds.items():
        by_kind.setdefault(kinds.get(name, name), []).append(s)
    lines.append("per kind of step:")
    for kind, values in sorted(by_kind.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"  {kind:<24}{len(values):>3} x {sum(values) / len(values):>5.0f} s = {sum(values):>5.0f} s")
    lines.append(f"  {'all steps':<38}{sum(seconds.values()):>7.0f} s")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Hit rate at 10 per arm and the treatment share, by day, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [r["dt"] for r in rows]
    fig, (ax_hr, ax_share) = plt.subplots(1, 2, figsize=(10, 4))
    for arm, style in ((CONTROL, "o--"), (TREATMENT, "s-")):
        ax_hr.plot(days, [r[f"{arm}_hit_rate_at_10"] for r in rows], style, label=arm)
    ax_hr.set_title("hit rate at 10 of the day's lists")
    ax_hr.set_ylim(0, 1)
    ax_hr.legend()
    ax_share.plot(days, [r["served_share"] for r in rows], "s-", label="served")
    ax_share.plot(days, [r["next_share"] for r in rows], "^:", label="next (thompson)")
    ax_share.set_title("treatment share")
    ax_share.set_ylim(0, 1)
    ax_share.legend()
    for ax in (ax_hr, ax_share):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def prepare(cfg: LoopConfig, runner: Runner, log: Callable[[str], None]) -> None:
    """The synthetic history through behavior_etl, the weak model (champion), the strong one (challenger)."""
    from datatools.generate import generate

    first, last = cfg.history[0], cfg.history[-1]
    log(f"history: {cfg.history_days} days from {first}, {cfg.users} users, {cfg.items} items")
    runner.timed(
        "generate",
        "generate",
        lambda: generate(
            cfg.data_root, first, cfg.history_days, cfg.users, cfg.items, cfg.events_per_day, seed=cfg.seed
        ),
    )
    runner.dag("behavior_etl", first)
    log(f"weak model: {cfg.weak_epochs} epoch(s) on the features of {first}")
    runner.dag(
        "train_recommender", first, name=f"train_recommender-weak-{first}", ATTNREC_TRAIN_EPOCHS=str(cfg.weak_epochs)
    )
    for dt in cfg.history[1:]:
        runner.dag("behavior_etl", dt)
    log(f"strong model: {cfg.strong_epochs} epochs on the features of {last}")
    runner.dag(
        "train_recommender", last, name=f"train_recommender-strong-{last}", ATTNREC_TRAIN_EPOCHS=str(cfg.strong_epochs)
    )


def turn(cfg: LoopConfig, runner: Runner, dt: str, decide: bool) -> dict[str, Any]:
    """One loop day: serve D, the users' D+1, its ETL, D's KPIs (and the decision when ``decide``)."""
    from datatools.simulate import simulate

    runner.dag("nightly_candidates", dt)
    sim = runner.timed(f"simulate-{dt}", "simulate", lambda: simulate(cfg.data_root, dt, top_n=cfg.top_n))
    runner.log(
        f"  simulate {dt}: {sim['visitors']} of {sim['served_users']} users came back, {sim['clicks']} clicks "
        f"in {runner.seconds[f'simulate-{dt}']:.0f} s"
    )
    runner.dag("behavior_etl", sim["dt"])
    runner.dag("kpi_report", dt, ATTNREC_PROMOTION_RULE="online" if decide else "offline")
    row = day_row(cfg.data_root, dt, cfg.experiment_id)
    row["champion"] = champion_version(runner.env) or "-"
    return row


def _tee(log: Callable[[str], None], path: Path) -> Callable[[str], None]:
    """``log`` that also appends every message to ``path``."""

    def both(msg: str) -> None:
        log(msg)
        with open(path, "a", encoding="utf-8") as out:
            out.write(msg + "\n")

    return both


def run(cfg: LoopConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole loop (see the module docstring). Returns ``{"rows": [...], "table": path, "plot": path,
    "seconds": {step: s}}`` and writes ``loop.json`` and ``loop.png`` under ``cfg.workdir``."""
    check_config(cfg)
    started = time.perf_counter()
    runner = Runner(cfg, log)
    try:
        runner.setup()
        log = _tee(log, cfg.workdir / "loop.log")
        runner.log = log
        prepare(cfg, runner, log)
        rows = []
        for k, dt in enumerate(cfg.serve_days):
            log(f"loop day {k + 1}/{cfg.loop_days}: {dt}")
            rows.append(turn(cfg, runner, dt, decide=k == cfg.loop_days - 1))
            log(table_lines(rows)[-1])
    finally:
        runner.close()
    lines = table_lines(rows)
    log("\n".join(["", f"experiment {cfg.experiment_id}: control = champion, treatment = challenger", *lines]))
    result = {
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
        "rows": rows,
        "seconds": {**runner.seconds, "total": time.perf_counter() - started},
    }
    log("\n".join(["", "seconds per step:", *seconds_lines(runner.seconds, runner.kinds)]))
    (cfg.workdir / "loop.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["plot"] = str(plot(rows, cfg.workdir / "loop.png"))
    result["table"] = str(cfg.workdir / "loop.json")
    log(f"daily table: {result['table']}; plot: {result['plot']}; {result['seconds']['total']:.0f} s in all")
    return result
