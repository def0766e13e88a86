"""The attnrec command line and the Spark jobs' entry points: commands, the shared --dt, errors, the stage calls.

The model stages are called through their agreed interface (models.config.train_config, models.train.run,
models.candidates.run, models.registry.describe/promote), replaced here by fakes that record the call.
"""

from __future__ import annotations

import datetime as dt_
import json
import subprocess
import sys
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
    for name in ("movielens", "generate", "clean", "featurize", "validate", "train", "candidates", "kpis",
                 "registry", "summary", "pseudonym"):  # fmt: skip
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
    [
        ["clean"],
        ["featurize"],
        ["item-text"],
        ["validate", "--dataset", "features"],
        ["train"],
        ["candidates"],
        ["summary"],
    ],
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
def lake_env(tmp_path, monkeypatch):
    """An empty lake and MLflow store of the test's own."""
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ATTNREC_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())
    return tmp_path


def test_train_builds_the_config_with_the_overrides_and_prints_on_rank_0_only(lake_env, monkeypatch):
    """The real train_config applies --set; the training itself (models.train.run, tested in test_models_pipeline
    and through torchrun in test_model_distributed) is replaced by a recorder here."""
    import models.train

    seen, rank = [], {"rank": 0}

    def record(dt, settings, tcfg):
        seen.append((dt, tcfg))
        return {"rank": 1} if rank["rank"] else {"run_id": "r1", "trained_at": dt_.datetime(2026, 1, 31, 3, 0)}

    monkeypatch.setattr(models.train, "run", record)
    result = invoke("train", "--dt", "2026-01-31", "--set", "dropout=0.25", "--set", "n_layers=3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"run_id": "r1", "trained_at": "2026-01-31 03:00:00"}
    assert [(dt, tcfg.dropout, tcfg.n_layers) for dt, tcfg in seen] == [("2026-01-31", 0.25, 3)]
    rank["rank"] = 1
    result = invoke("train", "--dt", "2026-01-31")
    assert result.exit_code == 0 and result.stdout == ""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dropout", "--set 'dropout': expected NAME=VALUE with NAME one of"),
        ("mask_seen=perhaps", "--set 'mask_seen=perhaps': 'perhaps' is not a boolean"),
    ],
)
def test_a_bad_override_is_one_line_and_exit_code_2(lake_env, override, message):
    result = invoke("train", "--dt", "2026-01-31", "--set", override)
    assert result.exit_code == 2 and result.stderr.startswith(f"attnrec train: {message}"), result.output
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert not (lake_env / "mlflow.db").exists()  # nothing trained, nothing logged


def test_candidates_without_features_is_one_line_and_exit_code_2(lake_env):
    result = invoke("candidates", "--dt", "2026-01-31")
    assert result.exit_code == 2 and result.stderr.startswith(
        "attnrec candidates: features/sequences for dt=2026-01-31 is not published"
    ), result.output


def test_other_errors_keep_their_traceback(lake_env):
    from tests.test_models_pipeline import write_features

    write_features(str(lake_env / "lake"))  # the features are there, the registry is empty
    result = invoke("candidates", "--dt", "2026-01-31")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    assert "run the train_recommender DAG first" in str(result.exception)


def test_registry_promote_of_a_missing_version_is_one_line(lake_env):
    result = invoke("registry", "promote", "--version", "9")
    last = result.stderr.splitlines()[-1]  # MLflow logs its database set-up first
    assert result.exit_code == 2 and last.startswith("attnrec registry promote: ") and "'9'" in last, result.output


def test_summary_of_a_day_with_nothing_published(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = invoke("summary", "--dt", "2026-01-31")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Candidates    : none published yet at {tmp_path}/lake/candidates/dt=2026-01-31"
    assert lines[-1].startswith("Registry      : no champion of 'attention-recommender' yet (")
