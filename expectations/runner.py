"""Validation gates: run a versioned expectation suite on one partition and fail loudly.

The suites are the JSON files in ``expectations/suites/`` (GX 1.x suite format, one per dataset,
reviewed in git). Each run builds an *ephemeral* Great Expectations context, so GX writes nothing
into the checkout: validation results and the HTML Data Docs go under the lake
(``<data_root>/validation/results`` and :func:`attnrec.lake.data_docs_dir`), one Data Docs page per
run. When the lake root is a URI (``s3a://``, ``hdfs://``) the results stay in memory and Data Docs
are skipped (logged), because GX's filesystem site builder only writes local paths.

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
    "candidates",
    "kpis",
)

_SITE_NAME = "attnrec_lake"
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
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
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": results_dir},
        }
        config.data_docs_sites = {
            _SITE_NAME: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": lake.data_docs_dir(root),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
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


def _run_checkpoint(
    context, site_name, suite_name: str, dt: str, data_source, batch_parameters: dict, params: dict[str, Any]
) -> dict:
    """Run ``suite_name`` through a Checkpoint on the batch; return the summary or raise GateFailed."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    asset = data_source.add_dataframe_asset(name=suite_name)
    batch_definition = asset.add_batch_definition_whole_dataframe(f"{suite_name}_whole")
    suite = context.suites.add(load_suite(suite_name))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}_{dt}", data=batch_definition, suite=suite)
    )
    actions = [UpdateDataDocsAction(name="data_docs", site_names=[site_name])] if site_name else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite_name}_gate",
            validation_definitions=[validation],
            actions=actions,
            result_format=_RESULT_FORMAT,
        )
    )
    now = _dt.datetime.now(_dt.timezone.utc)
    run_id = RunIdentifier(run_name=f"{suite_name}-{dt}-{now:%Y%m%dT%H%M%SZ}", run_time=now)
    result = checkpoint.run(batch_parameters=batch_parameters, expectation_parameters=params, run_id=run_id)

    [(identifier, suite_result)] = result.run_results.items()
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
        raise GateFailed("\n".join(lines), summary)
    log.info(
        "validation gate %s passed for dt=%s (%d expectations); Data Docs: %s",
        suite_name,
        dt,
        len(suite_result.results),
        docs,
    )
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

    The DataFrame is never collected: GX's Spark engine computes the metrics as Spark jobs. GX persists
    the frame while it validates; it is unpersisted afterwards unless the caller had cached it.
    """
    from attnrec.settings import get_settings

    settings = settings or get_settings()
    check_dt(dt)
    suite_path(suite_name)
    params = expectation_parameters(settings)
    if _uses_parameter(suite_name, "row_count"):
        params["row_count"] = df.count()
    context, site_name = _context(settings)
    data_source = context.data_sources.add_spark(name="attnrec_spark")
    was_cached = df.is_cached
    try:
        return _run_checkpoint(context, site_name, suite_name, dt, data_source, {"dataframe": df}, params)
    finally:
        if not was_cached and df.is_cached:
            df.unpersist()


def validate_pandas(suite_name: str, df, dt: str, settings: Settings | None = None) -> dict:
    """Validate a pandas DataFrame with ``suite_name``; return the summary or raise GateFailed."""
    from attnrec.settings import get_settings

    settings = settings or get_settings()
    check_dt(dt)
    suite_path(suite_name)
    params = expectation_parameters(settings)
    if _uses_parameter(suite_name, "row_count"):
        params["row_count"] = len(df)
    context, site_name = _context(settings)
    data_source = context.data_sources.add_pandas(name="attnrec_pandas")
    return _run_checkpoint(context, site_name, suite_name, dt, data_source, {"dataframe": df}, params)


def check_reconciliation(recon: dict, settings: Settings | None = None) -> None:
    """Gate on the clean job's ``_reconciliation.json``: counts add up and quarantine stays small.

    Raises GateFailed when ``raw_lines != clean + quarantined + duplicates`` (rows lost or invented) or
    when ``quarantined / raw_lines`` exceeds ``settings.max_quarantine_share`` (a broken producer).
    """
    from attnrec.settings import get_settings

    settings = settings or get_settings()
    missing = [k for k in ("raw_lines", "clean", "quarantined", "duplicates") if k not in recon]
    if missing:
        raise GateFailed(f"reconciliation for dt={recon.get('dt')} lacks {missing}; the clean job must write them")
    dt = recon.get("dt")
    raw, clean, quarantined, dups = (int(recon[k]) for k in ("raw_lines", "clean", "quarantined", "duplicates"))
    reasons = sorted((recon.get("quarantined_by_reason") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    top = ", ".join(f"{reason}={count}" for reason, count in reasons[:5]) or "none recorded"
    if raw != clean + quarantined + dups:
        raise GateFailed(
            f"reconciliation FAILED for dt={dt}: raw_lines={raw} != clean={clean} + quarantined={quarantined} "
            f"+ duplicates={dups} (= {clean + quarantined + dups}); the clean job lost or invented rows. "
            f"Top quarantine reasons: {top}"
        )
    share = quarantined / raw if raw else 0.0
    if share > settings.max_quarantine_share:
        raise GateFailed(
            f"reconciliation FAILED for dt={dt}: quarantined={quarantined} of raw_lines={raw} is {share:.2%}, "
            f"above the threshold {settings.max_quarantine_share:.2%} (ATTNREC_MAX_QUARANTINE_SHARE="
            f"{settings.max_quarantine_share}). Top quarantine reasons: {top}. Fix the producer, or raise "
            "ATTNREC_MAX_QUARANTINE_SHARE if this share is expected"
        )


# ------------------------------------------------------------------------------ candidates vs features

_SHOWN = 5


def _features_table(root: str, dataset: str, dt: str, columns: list[str]):
    """``columns`` of the published features partition ``dataset`` for ``dt`` as an Arrow table; GateFailed
    naming the fix when the partition or a column is missing."""
    import pyarrow.dataset as ds

    path = lake.partition(root, dataset, dt)
    if not lake.is_complete(path):
        raise GateFailed(
            f"candidates gate FAILED for dt={dt}: {dataset} is not published at {path}; the gate checks the "
            f"candidates against it. Run behavior_etl for {dt} first"
        )
    filesystem, base = lake.filesystem_for(path)
    data = ds.dataset(base, format="parquet", filesystem=filesystem)
    missing = [c for c in columns if c not in data.schema.names]
    if missing:
        raise GateFailed(
            f"candidates gate FAILED for dt={dt}: {path} lacks {missing} (written by featurize since items carry "
            f"`available` and sequences `seen_item_ids`); re-run behavior_etl for {dt}, then nightly_candidates"
        )
    return data.to_table(columns=columns)


#: The keys of a candidates ``_manifest.json`` the arm checks read (models/serving_plan.py writes them).
_PLAN_KEYS = ("model_versions", "experiment_id", "treatment_share")


def staged_manifest(dt: str, settings: Settings) -> dict:
    """The ``_manifest.json`` of the staged candidates of ``dt`` (what nightly_candidates' generate wrote);
    GateFailed naming the fix when there is none."""
    uri = lake.join(lake.staging(settings.data_root, lake.CANDIDATES, dt), lake.CANDIDATES_MANIFEST)
    if not lake.exists(uri):
        raise GateFailed(
            f"candidates gate FAILED for dt={dt}: no {uri}; models/candidates.py writes the serving plan there "
            f"beside the rows. Re-run nightly_candidates (or `attnrec candidates --dt {dt}`) for {dt}"
        )
    return lake.read_json(uri)


def _plan_failures(frame, manifest: dict, dt: str) -> list[str]:
    """The arm checks of :func:`check_candidates` against the serving plan the manifest records."""
    from attnrec import experiments
    from attnrec.contracts import ARMS, CONTROL

    missing = [k for k in _PLAN_KEYS if k not in manifest]
    if missing:
        return [
            f"the candidates manifest lacks {missing} (written before A/B experiments); re-run nightly_candidates "
            f"for {dt} so it records the serving plan"
        ]
    versions, experiment_id = manifest["model_versions"], manifest["experiment_id"]
    share = float(manifest["treatment_share"])
    failures: list[str] = []
    if (experiment_id == "") != (share <= 0) or CONTROL not in versions or (share > 0) != (len(versions) == 2):
        failures.append(
            f"the manifest's plan is inconsistent: experiment_id {experiment_id!r}, treatment_share {share}, "
            f"model_versions {versions}; experiment_id is empty and only control is served exactly when the share is "
            "0. models/candidates.py writes it from models.serving_plan.check_plan"
        )
    other = frame[frame["experiment_id"] != experiment_id]
    if len(other):
        failures.append(
            f"{len(other)} rows carry experiment_id other than the manifest's {experiment_id!r}, e.g. "
            f"{sorted(set(other['experiment_id'].tolist()))[:_SHOWN]}; every row of a day carries the day's experiment"
        )
    per_user = frame.groupby("user_id", sort=True)["arm"].agg(["nunique", "first"])
    mixed = per_user[per_user["nunique"] > 1]
    if len(mixed):
        failures.append(
            f"{len(mixed)} users have rows of more than one arm, e.g. {mixed.index.tolist()[:_SHOWN]}; a user is in "
            "one arm (attnrec.experiments.arm)"
        )
    single = per_user[per_user["nunique"] == 1]
    expected = experiments.arms(experiment_id, single.index.tolist(), share)
    wrong = single[single["first"].to_numpy() != expected]
    if len(wrong):
        shown = list(zip(wrong.index.tolist(), wrong["first"].tolist()))[:_SHOWN]
        failures.append(
            f"{len(wrong)} users are served an arm other than attnrec.experiments.arm({experiment_id!r}, user_id, "
            f"{share:g}), e.g. (user_id, arm) {shown}; the assignment is a pure function of experiment and user"
        )
    expected_version = frame["arm"].map({a: str(v) for a, v in versions.items() if a in ARMS})
    off = frame[frame["model_version"] != expected_version]
    if len(off):
        shown = sorted(set(zip(off["arm"], off["model_version"])))[:_SHOWN]
        failures.append(
            f"{len(off)} rows carry a model_version other than their arm's in the manifest {versions}, e.g. "
            f"(arm, model_version) {shown}; each arm is served by its own version"
        )
    return failures


def check_candidates(candidates, dt: str, settings: Settings | None = None, manifest: dict | None = None) -> dict:
    """Checks of a candidates partition (pandas) that no GX expectation expresses, over the whole partition:

    - ``score`` is non-increasing with ``rank``, and ranks run 1, 2, ... without gaps, for every user;
    - every item is in the published features/items of ``dt`` with ``available`` true (a retired item is never
      served);
    - no user gets an item in their features/sequences ``seen_item_ids`` (every item they had a seen-type event
      with in the look-back, ``ATTNREC_SEEN_EVENT_TYPES``);
    - against the serving plan in ``manifest`` (default: the staged partition's ``_manifest.json``): every user's
      rows carry one arm, equal to :func:`attnrec.experiments.arm` of (the manifest's ``experiment_id``, user,
      ``treatment_share``); each arm's rows carry that arm's version of ``model_versions``; every row carries the
      manifest's ``experiment_id``, which is empty exactly when the share is 0.

    Returns ``{"checks": [...], "rows": n}``; raises GateFailed listing every failed check with counts and examples.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from attnrec.settings import get_settings

    settings = settings or get_settings()
    check_dt(dt)
    missing = [c for c in ("model_version", "arm", "experiment_id") if c not in candidates.columns]
    if missing:
        raise GateFailed(
            f"candidates gate FAILED for dt={dt}: the candidates lack the columns {missing} (attnrec.contracts."
            f"CANDIDATE_COLUMNS); re-run nightly_candidates for {dt}"
        )
    failures: list[str] = []
    frame = candidates[["user_id", "rank", "item_id", "score"]].sort_values(["user_id", "rank"], kind="stable")
    users = frame["user_id"].to_numpy()
    same_user = np.r_[False, users[1:] == users[:-1]]  # (R,) the row before is the same user's
    position = frame.groupby("user_id", sort=False).cumcount().to_numpy() + 1
    gaps = frame[frame["rank"].to_numpy() != position]
    if len(gaps):
        shown = sorted(set(gaps["user_id"].tolist()))[:_SHOWN]
        failures.append(
            f"rank does not run 1, 2, ... for {gaps['user_id'].nunique()} users, e.g. {shown}; "
            "models/candidates.py writes ranks 1..K per user"
        )
    scores = frame["score"].to_numpy()
    rising = same_user & np.r_[False, scores[1:] > scores[:-1]]
    if rising.any():
        rows = frame[rising]
        shown = [(u, int(r), float(s)) for u, r, s in rows[["user_id", "rank", "score"]].head(_SHOWN).itertuples(False)]
        failures.append(
            f"score increases with rank in {int(rising.sum())} rows of {rows['user_id'].nunique()} users, e.g. "
            f"(user_id, rank, score) {shown}; scores must be non-increasing with rank"
        )

    items = _features_table(settings.data_root, lake.FEATURE_ITEMS, dt, ["item_id", "available"]).to_pandas()
    servable = set(items.loc[items["available"].fillna(True).astype(bool), "item_id"])
    retired = set(items["item_id"]) - servable
    bad = frame[~frame["item_id"].isin(servable)]
    if len(bad):
        gone = bad[bad["item_id"].isin(retired)]
        unknown = bad[~bad["item_id"].isin(retired)]
        for rows, what in ((gone, "retired (available false)"), (unknown, "not in features/items")):
            if len(rows):
                shown = sorted(set(rows["item_id"].tolist()))[:_SHOWN]
                failures.append(
                    f"{len(rows)} rows serve items {what} in features/items dt={dt}, e.g. {shown}; candidates "
                    "may only serve available catalogue items"
                )

    seqs = _features_table(settings.data_root, lake.FEATURE_SEQUENCES, dt, ["user_id", "seen_item_ids"])
    seen = seqs.column("seen_item_ids").combine_chunks()
    pairs = pa.table(
        {
            "user_id": pc.take(seqs.column("user_id"), pc.list_parent_indices(seen)),
            "item_id": pc.list_flatten(seen),
        }
    )
    served = pa.Table.from_pandas(frame[["user_id", "item_id", "rank"]], preserve_index=False)
    repeated = served.join(pairs, keys=["user_id", "item_id"], join_type="inner")
    if repeated.num_rows:
        shown = sorted(zip(*(repeated.column(c).to_pylist() for c in ("user_id", "item_id", "rank"))))[:_SHOWN]
        failures.append(
            f"{repeated.num_rows} (user, item) pairs serve an item the user has already seen (features/sequences "
            f"seen_item_ids, event types {','.join(settings.seen_event_types) or 'none'}), e.g. (user_id, item_id, "
            f"rank) {shown}; candidates must exclude every seen item"
        )
    manifest = staged_manifest(dt, settings) if manifest is None else manifest
    failures += _plan_failures(candidates[["user_id", "model_version", "arm", "experiment_id"]], manifest, dt)
    checks = ["rank_order_and_scores", "available_items", "seen_items_excluded", "arms_and_versions"]
    if failures:
        message = "\n".join(
            [f"candidates gate FAILED for dt={dt}: {len(failures)} check(s) against the features and the plan failed"]
            + [f"  - {f}" for f in failures]
        )
        raise GateFailed(message, {"dt": dt, "success": False, "failed": failures, "checks": checks})
    log.info("candidates checks passed for dt=%s (%d rows): %s", dt, len(frame), ", ".join(checks))
    return {"checks": checks, "rows": len(frame)}


def validate_candidates(candidates, dt: str, settings: Settings | None = None, manifest: dict | None = None) -> dict:
    """The candidates gate: the ``candidates`` suite (GX, pandas), then :func:`check_candidates` against the
    published features of ``dt`` and the serving plan in ``manifest`` (default: the staged partition's
    ``_manifest.json``). Returns the suite summary with ``checks`` added; raises GateFailed."""
    summary = validate_pandas("candidates", candidates, dt, settings)
    summary["checks"] = check_candidates(candidates, dt, settings, manifest)["checks"]
    return summary


def check_lookback(manifest: dict, raw_days: list[str]) -> None:
    """Gate on featurize's ``_manifest.json``: the features of day D were built from every day before it.

    ``raw_days``: the landing days that have raw events. Raises GateFailed when a day of the look-back window
    (``first_dt`` <= d < D) has raw events but its clean partition was not among those featurize read, or when
    the item vocabulary was carried over from a features day older than such a day (its features were not
    published yet): the features of D would silently miss that day. The message names each day and the fix.
    """
    dt, first_dt = manifest["dt"], manifest["first_dt"]
    window = sorted(d for d in raw_days if first_dt <= d < dt)
    read = {day["dt"] for day in manifest["clean_days"]}
    vocab_dt = (manifest.get("items_vocabulary_from") or {}).get("dt") or ""
    problems = [
        f"dt={d} has raw events but no published clean/events partition was read" for d in window if d not in read
    ]
    problems += [
        f"dt={d} has raw events but its features were not published (item vocabulary carried over from "
        f"{vocab_dt or 'no earlier day'})"
        for d in window
        if d > vocab_dt and d in read
    ]
    if problems:
        first = min(d for d in window if d not in read or d > vocab_dt)
        raise GateFailed(
            f"look-back FAILED for features dt={dt}: " + "; ".join(problems) + f". Run behavior_etl for {first} "
            f"first (and each later day with raw events, oldest first), then re-run behavior_etl for {dt}"
        )


def validate_kpis(kpis, dt: str, settings: Settings | None = None) -> dict:
    """The kpis gate (pandas: a few rows a day): the ``kpis`` suite, whose ordered column list is
    ``attnrec.contracts.KPI_COLUMNS``. Returns the suite summary; raises GateFailed."""
    return validate_pandas("kpis", kpis, dt, settings)
