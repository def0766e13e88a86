"""The command-line arguments every attnrec entry point shares, declared once.

``attnrec`` (the CLI) and the Spark jobs' ``spark-submit`` entry points take the same ``--dt``, ``--data-root`` and
``--dataset`` options, with the same checks and help. A bad ``--dt`` ends the program with one line on stderr that
names the value and the expected form, and exit code 2 (a usage error), never a traceback.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Literal, NoReturn

import typer

from attnrec.contracts import check_dt

#: The gates of ``jobs/validate.py``: what behavior_etl's validate tasks pass as ``--dataset``.
Gate = Literal["clean_events", "features"]


def _check_dt(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    if value is None or ctx.resilient_parsing:
        return value
    try:
        return check_dt(value)
    except ValueError as err:
        typer.echo(f"{ctx.command_path}: {param.opts[0]}: {err}", err=True)
        raise typer.Exit(2) from None


def dt_option(help: str, name: str = "--dt") -> typer.models.OptionInfo:
    """A partition-date option (``YYYY-MM-DD``, a real calendar date): what :data:`Dt` is made of; for a date option
    with other help or name, e.g. ``Annotated[str | None, dt_option("The landing day ...")] = None``."""
    return typer.Option(name, callback=_check_dt, metavar="YYYY-MM-DD", show_default=False, help=help)


Dt = Annotated[str, dt_option("The partition date: the DAG run's logical date, e.g. 2026-01-31.")]
DataRoot = Annotated[
    str | None,
    typer.Option("--data-root", metavar="PATH|URI", help="Lake root (default: ATTNREC_DATA_ROOT, else ./data)."),
]
Dataset = Annotated[
    Gate,
    typer.Option(
        "--dataset",
        help="Which gate: clean_events (raw sample, clean, quarantine, reconciliation) or features.",
    ),
]

Validate = Annotated[
    bool,
    typer.Option(
        "--validate/--no-validate",
        help="Then run the dataset's gate (jobs/validate.py) on the staged output in the same Spark application; "
        "exit 1 when it fails. behavior_etl passes it, so a day starts one Spark application per job, not per gate.",
    ),
]


@contextmanager
def one_line_errors(prog: str, kinds: tuple[type[Exception], ...] = (ValueError, FileNotFoundError)) -> Iterator[None]:
    """Turn an error of ``kinds`` (bad input, a missing partition) into ``<prog>: <message>`` on stderr and exit
    code 2; anything else propagates with its traceback."""
    try:
        yield
    except kinds as err:
        typer.echo(f"{prog}: {err}", err=True)
        raise typer.Exit(2) from None


def spark_submit_main(command: Callable[..., int], prog: str) -> NoReturn:
    """Run a Spark job's ``command`` as a program (``spark-submit jobs/<job>.py --dt D ...``).

    Its typed options (``--dt`` and the others above) are parsed from ``sys.argv``; its return value is the exit
    code; a missing input (FileNotFoundError) is one line on stderr and exit code 2.
    """

    @functools.wraps(command)
    def run(*args, **kwargs) -> None:
        try:
            with one_line_errors(prog, (FileNotFoundError,)):
                code = command(*args, **kwargs)
        finally:
            # the job is done: what is left is the interpreter's exit, whose collections would walk every object GX,
            # pandas and PySpark made (a second of a gated job's exit on 2 cores, docs/benchmarks.md#etl); frozen,
            # they are left to the process's end
            gc.freeze()
        raise typer.Exit(code or 0)

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(run)
    app(prog_name=prog)
    raise SystemExit(0)  # not reached: app() exits
