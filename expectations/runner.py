"""Validation gates: run a versioned expectation suite on one partition and fail loudly.

The suites are the JSON files in ``expectations/suites/`` (GX 1.x suite format, one per dataset, reviewed in git).
Each suite runs in an *ephemeral* Great Expectations context (a gate's suites side by side, one context each,
:func:`validate_spark_suites`), so GX writes nothing into the checkout: validation results and the HTML Data Docs go
under the lake (``<data_root>/validation/results`` and :func:`attnrec.lake.data_docs_dir`), one Data Docs page per
run, built once after the gate's last suite. When the lake root is a URI (``s3a://``, ``hdfs://``) the results stay
in memory and Data Docs are skipped (logged), because GX's filesystem site builder only writes local paths.

Spark DataFrames are validated on Spark (GX Spark datasource, whole-DataFrame batch), never collected
to pandas; pandas DataFrames (candidates, kpis) on pandas. A failed suite raises :class:`GateFailed`
naming the suite, the partition, every failed expectation with what was observed, and the Data Docs
page to open; the Airflow task fails and nothing downstream runs.

Suite values that depend on settings are written in the JSON as ``{"$PARAMETER": name}`` and filled
in here from :func:`attnrec.settings.get_settings` (see :func:`expectation_parameters`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnrec import lake
from attnrec.contracts import check_dt
from expectations import spark_metrics

if TYPE_CHECKING:
    from attnrec.settings import Settings

log = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITE_NAMES: tuple[str, ...] = (
    "raw_events_sample",
    "clean_events",
    "quarantine_events",
    "user_sequences",
    "item_table",
    "item_text",
    "candidates",
    "kpis",
)

_SITE_NAME = "attnrec_lake"
#: GX's page views with jinja's bytecode cache: the templates are compiled once, not in every build (docs_views.py).
_VIEWS = "expectations.docs_views"
#: The Data Docs index lists the newest this many validation runs (about 16 days of behavior_etl's six suites a day;
#: every run's own page stays). GX rebuilds the index after every run by reading each run it lists: uncapped, a year
#: of daily runs (~2,200) would add seconds to every suite of a backfill's later days (docs/contracts.md).
DATA_DOCS_INDEX_RESULTS = 100
#: A failed run's result: observed values and a few unexpected ones per failed expectation, for the message.
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
#: Every run first: pass or fail per expectation from the aggregate metrics alone. SUMMARY adds, for every
#: column-map expectation, a query for its unexpected values, which on Spark is one more scan of the frame per
#: expectation even when nothing is unexpected; only a failed run needs them, so only a failed run is re-run
#: with :data:`_RESULT_FORMAT` (same run id: its result and Data Docs page replace the first run's).
_FIRST_RESULT_FORMAT = {"result_format": "BOOLEAN_ONLY"}
_MAX_SHOWN_VALUES = 5


class GateFailed(RuntimeError):
    """A validation gate failed; the message says which expectations, what was seen and where the docs are.

    ``summary`` holds the same dict a passing run returns (``success`` False, ``failed`` listing one
    line per failed expectation) for callers that report it elsewhere; None for reconciliation.
    """

    def __init__(self, message: str, summary: dict | None = None) -> None:
        super().__init__(message)
        self.summary = summary


# --------------------------------------------------------------------------------------------- suites


def _quiet_gx() -> None:
    """GX logs every public-API registration at INFO ("Skipping registering function ..."); keep WARNING+."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def suite_path(suite_name: str) -> Path:
    """The versioned JSON file of ``suite_name``; ValueError naming the known suites otherwise."""
    if suite_name not in SUITE_NAMES:
        raise ValueError(f"unknown expectation suite {suite_name!r}; use one of {', '.join(SUITE_NAMES)}")
    return SUITES_DIR / f"{suite_name}.json"


def load_suite(suite_name: str):
    """Build a ``gx.ExpectationSuite`` from its JSON file.

    GX drops an invalid expectation with only a log line; a gate silently losing a check is worse than
    no gate, so a count mismatch is an error naming the file.
    """
    _quiet_gx()
    import great_expectations as gx

    path = suite_path(suite_name)
    payload = json.loads(path.read_text())
    if payload.get("name") != suite_name:
        raise ValueError(f'{path} holds suite {payload.get("name")!r}, expected {suite_name!r}; fix its "name"')
    suite = gx.ExpectationSuite(**payload)
    if len(suite.expectations) != len(payload.get("expectations", [])):
        raise ValueError(
            f"{path}: GX accepted {len(suite.expectations)} of {len(payload['expectations'])} expectations; "
            "fix the invalid ones (see the great_expectations error log above)"
        )
    return suite


def expectation_parameters(settings: Settings) -> dict[str, Any]:
    """Values for the ``{"$PARAMETER": ...}`` placeholders in the suites, from settings."""
    return {
        "max_seq_len": settings.max_seq_len,
        "top_k": settings.top_k,
        "max_dwell_ms": settings.max_dwell_ms,
    }


def _uses_parameter(suite_name: str, name: str) -> bool:
    return json.dumps({"$PARAMETER": name}) in json.dumps(json.loads(suite_path(suite_name).read_text()))


def _suite_parameters(suite_name: str, settings: Settings, row_count) -> dict[str, Any]:
    """:func:`expectation_parameters` for ``suite_name`` (which must exist), with ``row_count()`` when it uses one."""
    suite_path(suite_name)
    params = expectation_parameters(settings)
    if _uses_parameter(suite_name, "row_count"):
        params["row_count"] = row_count()
    return params


# -------------------------------------------------------------------------------------------- context


def _context(settings: Settings):
    """An ephemeral GX context whose results store and Data Docs site live under a local lake.

    Returns ``(context, site_name or None)``.
    """
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),  # no tqdm bars in task logs
    )
    site_name = None
    if settings.is_local_lake:
        root = str(settings.local_data_root)
        results_dir = lake.join(root, "validation", "results")
        config.stores[config.validation_results_store_name] = {
            "class_name": "ValidationResultsStore",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": results_dir,
                # no store id file (GX's Data Docs stores keep none either; nothing here reads the id): a gate's
                # suites build their contexts side by side, and on a fresh lake one read the file while another was
                # writing it, and GX logged "Invalid store configuration" in a healthy run
                "suppress_store_backend_id": True,
            },
        }
        config.data_docs_sites = {
            _SITE_NAME: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": lake.data_docs_dir(root),
                },
                "site_index_builder": {
                    "class_name": "DefaultSiteIndexBuilder",
                    "validation_results_limit": DATA_DOCS_INDEX_RESULTS,
                    "view": {"module_name": _VIEWS, "class_name": "CachedJinjaIndexPageView"},
                },
                "site_section_builders": {
                    "expectations": {"view": {"module_name": _VIEWS, "class_name": "CachedJinjaPageView"}},
                    "validations": {"view": {"module_name": _VIEWS, "class_name": "CachedJinjaPageView"}},
                    # no gate writes profiling runs; the section would list every stored result for none
                    "profiling": "None",
                },
            }
        }
        site_name = _SITE_NAME
    else:
        log.warning(
            "lake root %s is not a local path: Data Docs are not built and validation results are not kept "
            "(GX writes Data Docs to a local directory only)",
            settings.data_root,
        )
    return gx.get_context(mode="ephemeral", project_config=config), site_name


def _run_checkpoint(context, suite_name: str, dt: str, data_source, batch_parameters: dict, params: dict[str, Any]):
    """Run ``suite_name`` through a Checkpoint on the batch; return ``(result identifier, suite result)``. The result
    is stored (the results store); its Data Docs page is built by :func:`_build_docs`."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    asset = data_source.add_dataframe_asset(name=suite_name)
    batch_definition = asset.add_batch_definition_whole_dataframe(f"{suite_name}_whole")
    suite = context.suites.add(load_suite(suite_name))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}_{dt}", data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite_name}_gate", validation_definitions=[validation], result_format=_FIRST_RESULT_FORMAT
        )
    )
    now = _dt.datetime.now(_dt.timezone.utc)
    run_id = RunIdentifier(run_name=f"{suite_name}-{dt}-{now:%Y%m%dT%H%M%SZ}", run_time=now)
    result = checkpoint.run(batch_parameters=batch_parameters, expectation_parameters=params, run_id=run_id)
    if not result.success:  # again with the details the message and the Data Docs page show
        checkpoint.result_format = _RESULT_FORMAT
        checkpoint.save()  # GX runs only a checkpoint whose stored copy is current
        result = checkpoint.run(batch_parameters=batch_parameters, expectation_parameters=params, run_id=run_id)
    [(identifier, suite_result)] = result.run_results.items()
    return identifier, suite_result


def _build_docs(context, site_name, runs) -> None:
    """One Data Docs build for ``runs`` (``(identifier, suite result)`` pairs of :func:`_run_checkpoint`): each run's
    page, its suite's page and the index. GX's own action builds after every checkpoint, and an index build reads
    every stored result it lists; a gate of several suites builds once (docs/benchmarks.md#etl)."""
    if not site_name or not runs:
        return
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    identifiers = []
    for identifier, suite_result in runs:
        identifiers += [identifier, ExpectationSuiteIdentifier(name=suite_result.suite_name)]
    context.build_data_docs(site_names=[site_name], resource_identifiers=identifiers, dry_run=False, build_index=True)


def _summary(context, site_name, suite_name: str, dt: str, identifier, suite_result) -> dict:
    """A run's summary; a failed run's has ``message``, the text :class:`GateFailed` carries."""
    docs = _docs_page(context, site_name, identifier)
    failed = [_describe_failure(r) for r in suite_result.results if not r.success]
    summary = {
        "suite": suite_name,
        "dt": dt,
        "success": bool(suite_result.success),
        "evaluated": len(suite_result.results),
        "failed": failed,
        "data_docs": docs,
    }
    if not suite_result.success:
        total = len(suite_result.results)
        lines = [f"validation gate {suite_name} FAILED for dt={dt}: {len(failed)} of {total} expectations failed"]
        lines += [f"  - {f}" for f in failed]
        lines.append(f"  Data Docs: {docs}" if docs else "  Data Docs: not built (lake root is not a local path)")
        summary["message"] = "\n".join(lines)
        return summary
    log.info(
        "validation gate %s passed for dt=%s (%d expectations); Data Docs: %s",
        suite_name,
        dt,
        len(suite_result.results),
        docs,
    )
    return summary


def _validate(context, site_name, suite_runs, dt: str) -> list[dict]:
    """Run each ``(suite name, data source, batch parameters, expectation parameters)``, build the Data Docs once,
    and return the summaries in the same order."""
    runs = [_run_checkpoint(context, name, dt, source, batch, params) for name, source, batch, params in suite_runs]
    _build_docs(context, site_name, runs)
    return [
        _summary(context, site_name, name, dt, identifier, result)
        for (name, *_), (identifier, result) in zip(suite_runs, runs)
    ]


def _raise_if_failed(summary: dict) -> dict:
    if not summary["success"]:
        raise GateFailed(summary["message"], summary)
    return summary


def _docs_page(context, site_name, identifier) -> str | None:
    """The local path of this run's Data Docs page (falls back to the site's index.html)."""
    if not site_name:
        return None
    for site in context.get_docs_sites_urls(resource_identifier=identifier, site_names=[site_name]):
        path = (site.get("site_url") or "").removeprefix("file://")
        if path and Path(path).exists():
            return path
    base = context.variables.data_docs_sites[site_name]["store_backend"]["base_directory"]
    return str(Path(base) / "index.html")


def _plain(value):
    """GX stores bounds as floats; show ``1`` rather than ``1.0``."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _python(value):
    """numpy scalars (and tuples of them, as pair expectations report) as plain Python values for messages."""
    if isinstance(value, (tuple, list)):
        return type(value)(_python(v) for v in value)
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _condition_text(condition) -> str:
    """``event_type != 'rate'`` for a serialized GX comparison condition; ``str()`` of anything else."""
    if isinstance(condition, dict) and condition.get("type") == "comparison":
        return f"{condition['column']['name']} {condition['operator']} {condition['parameter']!r}"
    return str(condition)


def _exception_message(info) -> str | None:
    """The error GX caught while evaluating an expectation (flat, or keyed by metric as on a missing column)."""
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for nested in info.values():
        if isinstance(nested, dict) and nested.get("raised_exception"):
            return nested.get("exception_message")
    return None


def _describe_failure(r) -> str:
    """One line per failed expectation: type, column(s), and what was observed."""
    config = r.expectation_config
    kwargs = config.kwargs
    where = ""
    for key in ("column", "column_list", "column_set"):
        if key in kwargs:
            where = f" {key}={kwargs[key]}"
            break
    if "column_A" in kwargs:
        where = f" column_A={kwargs['column_A']} column_B={kwargs['column_B']}"
    bounds = {
        k: _plain(kwargs[k]) for k in ("min_value", "max_value", "value_set", "or_equal") if kwargs.get(k) is not None
    }
    if kwargs.get("row_condition") is not None:
        bounds["where"] = _condition_text(kwargs["row_condition"])
    text = f"{config.type}{where}"
    if bounds:
        text += f" ({', '.join(f'{k}={v}' for k, v in bounds.items())})"
    error = _exception_message(r.exception_info)
    if error:
        return f"{text}: raised {error}"
    res = r.result or {}
    if "observed_value" in res:
        text += f": observed {res['observed_value']}"
    mismatched = (res.get("details") or {}).get("mismatched")
    if mismatched:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(mismatched.items())) + ")"
    if res.get("unexpected_count") is not None:
        shown = [_python(v) for v in list(res.get("partial_unexpected_list") or [])[:_MAX_SHOWN_VALUES]]
        pct = res.get("unexpected_percent")
        pct_text = f" ({pct:.2f}% of non-null)" if isinstance(pct, (int, float)) else ""
        text += f": {res['unexpected_count']} unexpected{pct_text}, e.g. {shown}"
    return text


# ------------------------------------------------------------------------------------------ public API


def validate_spark(suite_name: str, df, dt: str, settings: Settings | None = None) -> dict:
    """Validate a pyspark DataFrame with ``suite_name`` on Spark; return the summary or raise GateFailed.

    The DataFrame is never collected: GX's Spark engine computes the metrics as Spark jobs. GX's Spark data source
    would persist the frame first (every column, in memory, in the first metric job); it does not here
    (``persist=False``): the gates validate parquet reads, which each metric job reads again with only its columns,
    cheaper on a large partition than caching every column (docs/benchmarks.md#etl). A caller whose frame is
    expensive to compute caches it before.
    """
    [summary] = validate_spark_suites([(suite_name, df)], dt, settings)
    return _raise_if_failed(summary)


def validate_spark_suites(frames, dt: str, settings: Settings | None = None) -> list[dict]:
    """Validate each ``(suite name, pyspark DataFrame)`` of ``frames`` as :func:`validate_spark` does, side by side,
    with one Data Docs build after the last; return every summary (raises nothing for a failed suite: a failed one
    has ``success`` False and ``message``, the text :class:`GateFailed` would carry), so one report lists every
    problem of a gate.

    Each suite runs in its own thread and its own GX context: a suite's time is mostly small Spark jobs and the
    driver's round trips to the JVM, which overlap (a gate of three suites about halves, docs/benchmarks.md#etl); a
    context's Spark engine holds one active batch, so suites cannot share one. A suite that cannot run at all (its
    frame cannot be read, a GX error; not a failed expectation) is a failed summary whose message names the suite,
    the error and where it was raised; the other suites are validated and get their Data Docs all the same."""
    from concurrent.futures import ThreadPoolExecutor

    from attnrec.settings import get_settings

    settings = settings or get_settings()
    check_dt(dt)
    _quiet_gx()
    spark_metrics.register()  # uniqueness counted from sorted hashes, not GX's window over every row

    def run(suite_name: str, df):
        try:
            context, site_name = _context(settings)
            data_source = context.data_sources.add_spark(name="attnrec_spark", persist=False)
            params = _suite_parameters(suite_name, settings, df.count)
            return context, site_name, _run_checkpoint(context, suite_name, dt, data_source, {"dataframe": df}, params)
        except Exception as err:  # noqa: BLE001 - this suite's failure, reported with the others' results
            return err

    with ThreadPoolExecutor(max_workers=max(1, len(frames)), thread_name_prefix="gate-suite") as pool:
        done = [future.result() for future in [pool.submit(run, name, df) for name, df in frames]]
    ran = [outcome for outcome in done if not isinstance(outcome, Exception)]
    if ran:  # the Data Docs are built from the first suite's context, holding every suite that ran
        context, site_name, _ = ran[0]
        for _, _, (_, suite_result) in ran[1:]:
            context.suites.add(load_suite(suite_result.suite_name))
        _build_docs(context, site_name, [suite_run for _, _, suite_run in ran])
    return [
        _error_summary(name, dt, outcome)
        if isinstance(outcome, Exception)
        else _summary(context, site_name, name, dt, *outcome[2])
        for (name, _), outcome in zip(frames, done)
    ]


def _root_cause(err: Exception) -> str:
    """What went wrong, in one line: for an error from the JVM (py4j's, whose own first line only names the call) the
    innermost Java cause, e.g. ``java.io.FileNotFoundException: File file:/... does not exist``."""
    java = getattr(err, "java_exception", None)
    if java is not None:
        try:
            cause = java
            while cause.getCause() is not None and not cause.getCause().equals(cause):
                cause = cause.getCause()
            return " ".join(str(cause.toString()).split())
        except Exception:  # noqa: BLE001 - the JVM is gone: fall back to the Python text
            pass
    return next((line.strip() for line in str(err).splitlines() if line.strip()), repr(err))


def _error_summary(suite_name: str, dt: str, err: Exception) -> dict:
    """The failed summary of a suite that raised ``err`` before it could be evaluated: no results, no Data Docs page,
    a message with the error and the innermost of attnrec's frames it came through."""
    import traceback

    error = f"{type(err).__name__}: {_root_cause(err)[:500]}"
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename] or frames  # attnrec's frames, not the libraries'
    where = "".join(traceback.format_list(ours[-3:])).rstrip()
    message = (
        f"validation gate {suite_name} could not run for dt={dt}: {error}\n"
        f"  the dataset could not be read or GX failed before evaluating its expectations; fix that and re-run the "
        f"task (the gate's other suites ran and have their Data Docs)\n  raised at:\n{where}"
    )
    return {
        "suite": suite_name,
        "dt": dt,
        "success": False,
        "evaluated": 0,
        "failed": [f"raised {error}"],
        "data_docs": None,
        "message": message,
    }


def validate_pandas(suite_name: str, df, dt: str, settings: Settings | None = None) -> dict:
    """Validate a pandas DataFrame with ``suite_name``; return the summary or raise GateFailed."""
    from attnrec.settings import get_settings

    settings = settings or get_settings()
    check_dt(dt)
    params = _suite_parameters(suite_name, settings, lambda: len(df))
    context, site_name = _context(settings)
    data_source = context.data_sources.add_pandas(name="attnrec_pandas")
    [summary] = _validate(context, site_name, [(suite_name, data_source, {"dataframe": df}, params)], dt)
    return _raise_if_failed(summary)


def validate_kpis(kpis, dt: str, settings: Settings | None = None) -> dict:
    """The kpis gate (pandas: a few rows a day): the ``kpis`` suite, whose ordered column list is
    ``attnrec.contracts.KPI_COLUMNS``. Returns the suite summary; raises GateFailed."""
    return validate_pandas("kpis", kpis, dt, settings)
