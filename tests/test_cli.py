"""The attnrec command line and the Spark jobs' entry points: commands, the shared --dt, errors, the stage calls.

The model stages are called through their agreed interface (models.config.train_config, models.train.run,
models.candidates.run, models.registry.describe/promote), replaced here by fakes that record the call.
"""

from __future__ import annotations

import datetime as dt_
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnrec.cli import app

REPO = Path(__file__).resolve().parent.parent
BAD_DT_MESSAGE = "--dt: partition date '2026-13-01' is not a real calendar date; pass YYYY-MM-DD, e.g. 2026-01-31"


def invoke(*argv: str):
    return CliRunner().invoke(app, list(argv))


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    commands = result.stdout.split("Commands:")[1].split()
    for name in ("movielens", "generate", "clean", "featurize", "validate", "train", "candidates", "registry",
                 "summary"):  # fmt: skip
        assert name in commands
    registry = invoke("registry", "--help")
    assert registry.exit_code == 0 and {"show", "promote"} <= set(registry.stdout.split("Commands:")[1].split())


def test_the_cli_imports_no_stage_until_a_command_runs():
    probe = (
        "import sys, attnrec.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jobs', 'models', 'datatools', 'dags', 'torch', "
        "'pyspark', 'mlflow', 'great_expectations', 'pandas'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "argv",
    [["clean"], ["featurize"], ["validate", "--dataset", "features"], ["train"], ["candidates"], ["summary"]],
)
def test_a_bad_dt_is_one_line_and_exit_code_2(argv):
    result = invoke(*argv, "--dt", "2026-13-01")
    assert result.exit_code == 2
    assert result.stderr == f"attnrec {argv[0]}: {BAD_DT_MESSAGE}\n"


def test_the_real_entry_points_refuse_a_bad_dt_without_a_traceback():
    """``python -m attnrec`` (what torchrun runs) and a Spark job's spark-submit entry point, as processes."""
    for command, prog in (([sys.executable, "-m", "attnrec", "candidates"], "attnrec candidates"),
                          ([sys.executable, str(REPO / "jobs" / "clean.py")], "clean")):  # fmt: skip
        proc = subprocess.run([*command, "--dt", "2026-13-01"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert proc.stderr == f"{prog}: {BAD_DT_MESSAGE}\n"


def test_the_validate_job_in_process_names_a_missing_partition(tmp_path):
    result = invoke("validate", "--dataset", "features", "--dt", "2026-01-31", "--data-root", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.startswith("attnrec validate: no staged partition for user_sequences dt=2026-01-31: ")
    assert result.stderr.count("\n") == 1


def test_generate_refuses_bad_arguments_in_one_line(tmp_path):
    result = invoke("generate", "--data-root", str(tmp_path), "--start", "2026-01-01", "--days", "0")
    assert (result.exit_code, result.stderr) == (2, "attnrec generate: days=0 must be an integer >= 1\n")
    result = invoke("generate", "--data-root", str(tmp_path), "--start", "2026-02-30")
    assert result.exit_code == 2 and result.stderr.startswith("attnrec generate: --start: partition date '2026-02-30'")


@pytest.fixture
def fake_models(monkeypatch):
    """Fakes of the model stages' interface, recording every call in ``calls``."""
    calls: list[tuple] = []
    state = {"rank": 0, "error": None}

    def train_config(settings, overrides):
        calls.append(("train_config", list(overrides)))
        if any("=" not in pair for pair in overrides):
            raise ValueError(f"--set {overrides[0]!r}: expected NAME=VALUE")
        return {"overrides": list(overrides)}

    def train_run(dt, settings, tcfg):
        calls.append(("train.run", dt, tcfg))
        if state["rank"]:
            return {"rank": state["rank"]}
        return {"run_id": "r1", "model_version": "2", "trained_at": dt_.datetime(2026, 1, 31, 3, 0)}

    def candidates_run(dt, settings):
        calls.append(("candidates.run", dt))
        if state["error"]:
            raise state["error"]
        return {"path": f"/lake/_staging/candidates/dt={dt}", "users": 3, "rows": 9, "model_version": "2"}

    def describe(settings):
        calls.append(("describe",))
        return {"model": settings.model_name, "aliases": {"champion": "3", "challenger": None}, "versions": []}

    def promote(settings, version, reason):
        calls.append(("promote", version, reason))

    fakes = {
        "models.config": {"train_config": train_config},
        "models.train": {"run": train_run},
        "models.candidates": {"run": candidates_run},
        "models.registry": {"describe": describe, "promote": promote},
    }
    for name, attrs in fakes.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    return calls, state


def test_train_passes_the_overrides_and_prints_the_result_on_rank_0_only(fake_models):
    calls, state = fake_models
    result = invoke("train", "--dt", "2026-01-31", "--set", "dropout=0.3", "--set", "n_layers=3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"run_id": "r1", "model_version": "2", "trained_at": "2026-01-31 03:00:00"}
    assert calls == [("train_config", ["dropout=0.3", "n_layers=3"]),
                     ("train.run", "2026-01-31", {"overrides": ["dropout=0.3", "n_layers=3"]})]  # fmt: skip
    state["rank"] = 1
    result = invoke("train", "--dt", "2026-01-31")
    assert result.exit_code == 0 and result.stdout == ""


def test_a_bad_override_is_one_line_and_exit_code_2(fake_models):
    calls, _ = fake_models
    result = invoke("train", "--dt", "2026-01-31", "--set", "dropout")
    assert (result.exit_code, result.stderr) == (2, "attnrec train: --set 'dropout': expected NAME=VALUE\n")
    assert [c[0] for c in calls] == ["train_config"]  # nothing trained


def test_candidates_prints_the_summary_and_a_missing_input_is_exit_code_2(fake_models):
    calls, state = fake_models
    result = invoke("candidates", "--dt", "2026-01-31")
    assert result.exit_code == 0 and json.loads(result.stdout)["rows"] == 9
    state["error"] = FileNotFoundError("no features for dt=2026-01-31")
    result = invoke("candidates", "--dt", "2026-01-31")
    assert (result.exit_code, result.stderr) == (2, "attnrec candidates: no features for dt=2026-01-31\n")


def test_other_errors_keep_their_traceback(fake_models):
    _, state = fake_models
    state["error"] = RuntimeError("CUDA error: out of memory")
    result = invoke("candidates", "--dt", "2026-01-31")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_registry_show_and_promote(fake_models):
    calls, _ = fake_models
    result = invoke("registry", "show")
    assert result.exit_code == 0 and json.loads(result.stdout)["aliases"]["champion"] == "3"
    result = invoke("registry", "promote", "--version", "3", "--reason", "roll back: v4 candidates look wrong")
    assert result.exit_code == 0 and json.loads(result.stdout)["model"] == "attention-recommender"
    assert calls[-2:] == [("promote", "3", "roll back: v4 candidates look wrong"), ("describe",)]


def test_summary_of_a_day_with_nothing_published(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = invoke("summary", "--dt", "2026-01-31")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Candidates    : none published yet at {tmp_path}/lake/candidates/dt=2026-01-31"
    assert lines[-1].startswith("Registry      : no champion of 'attention-recommender' yet (")
