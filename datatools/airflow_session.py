"""Airflow CLI commands (``airflow dags test ...``) run one after another in one long-lived Airflow process.

Every ``airflow dags test`` started as a new process pays the same fixed costs before its first task does any
work: importing Airflow and building its command line (about 5 s on 2 cores), starting the in-process execution API
for its first task (about 4 s), and importing what the tasks import (torch, MLflow, Great Expectations). A driver
that runs many DAG runs in a row (the closed loop, ``datatools/loop.py``) pays them once with :class:`AirflowSession`:
a child process imports Airflow once, then runs each command through Airflow's own CLI parser and the same command
function the ``airflow`` executable calls (for ``dags test``: ``dag_test``, which parses the DAG folder again and
calls ``dag.test()``). Each command gets its own environment additions and its own log file (the process's stdout
and stderr are pointed at it for the command, so Spark and task output land there too), and a non-zero exit code
when the command ends in ``SystemExit`` (``dag_test`` raises ``SystemExit("DagRun failed")``) or an exception.

The protocol is one JSON line per command on the child's stdin and one JSON line per answer on its stdout (a
duplicate of fd 1 taken before fd 1 is redirected); between commands fd 1 and 2 go to the session's own log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


class AirflowSession:
    """The parent side: starts the child with ``env`` in ``cwd`` and runs commands in it, one at a time."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datatools.airflow_session", str(log)],
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._answer("starting the Airflow session")  # {"ready": true} once Airflow is imported

    def _answer(self, what: str) -> dict:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            code = self.proc.wait()
            tail = self.log.read_text(encoding="utf-8", errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"the Airflow session process ended (exit code {code}) while {what}; log {self.log}:\n{tail}"
            )
        return json.loads(line)

    def run(self, argv: list[str], log: Path, extra_env: dict[str, str]) -> int:
        """Runs ``airflow <argv>`` with ``extra_env`` added, its output in ``log``; returns its exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "env": extra_env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        return int(self._answer(f"running airflow {' '.join(argv)}")["rc"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the child's loop ends at EOF
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _point_output_at(path: str) -> None:
    """fd 1 and 2 (and so print, logging, structlog and child processes) write to ``path`` from now on."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _run_one(parser, request: dict, session_log: str) -> int:
    import traceback

    saved = dict(os.environ)
    os.environ.update(request["env"])
    Path(request["log"]).write_text("", encoding="utf-8")
    _point_output_at(request["log"])
    started, rc = time.perf_counter(), 1
    try:
        args = parser.parse_args(request["argv"])
        args.func(args)
        rc = 0
    except SystemExit as exc:  # what the airflow executable would have exited with
        rc = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except Exception:
        traceback.print_exc()
    finally:
        took = time.perf_counter() - started
        print(f"[airflow session] airflow {' '.join(request['argv'])}: exit code {rc} in {took:.1f} s", file=sys.stderr)
        os.environ.clear()
        os.environ.update(saved)
        _point_output_at(session_log)
    return rc


def serve(session_log: str) -> None:
    """The child side: import Airflow once, then run each request line of stdin until EOF."""
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    _point_output_at(session_log)
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        rc = _run_one(parser, json.loads(line), session_log)
        answers.write(json.dumps({"rc": rc}) + "\n")
    # every command has finished and answered; after DAG runs the interpreter's own teardown (the exit handlers of
    # what the runs imported; only a daemon thread is left) took another 10-12 s in the tests, so flush the logs and
    # leave now
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    serve(sys.argv[1])
