"""attnrec/args.py: a Spark job's command line (``spark_submit_main``)."""

from __future__ import annotations

import gc

import pytest

from attnrec.args import Dt, spark_submit_main


@pytest.fixture
def unfrozen():
    """No object frozen before the test, none left frozen after it."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def run_job(monkeypatch, command, *argv: str) -> int:
    monkeypatch.setattr("sys.argv", ["job", *argv])
    with pytest.raises(SystemExit) as exit_:
        spark_submit_main(command, "job")
    return exit_.value.code


def test_a_job_exits_with_its_code_and_leaves_its_objects_to_the_process_end(monkeypatch, unfrozen):
    seen = []

    def job(dt: Dt) -> int:
        seen.append((dt, gc.get_freeze_count()))
        return 3

    assert run_job(monkeypatch, job, "--dt", "2026-01-31") == 3
    assert seen == [("2026-01-31", 0)]
    assert gc.get_freeze_count() > 0  # the interpreter's exit does not collect what the job made


def test_a_missing_input_is_one_line_and_exit_code_2(monkeypatch, capsys, unfrozen):
    def job(dt: Dt) -> int:
        raise FileNotFoundError(f"no raw events partition for {dt}")

    assert run_job(monkeypatch, job, "--dt", "2026-01-31") == 2
    assert capsys.readouterr().err.strip() == "job: no raw events partition for 2026-01-31"
    assert gc.get_freeze_count() > 0
