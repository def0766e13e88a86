"""Data tests: the expectation suites on small fixtures, on pandas and on Spark, and the validate job.

Real Great Expectations, real local Spark (one shared ``local[1]`` session), real subprocess runs of
``jobs/validate.py``. Each suite must pass on a small valid frame and fail on a broken one with the
failing expectation, its column and the unexpected values named in the GateFailed message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attnrec import lake
from attnrec.contracts import CANDIDATE_COLUMNS, EVENT_TYPES, KPI_COLUMNS
from attnrec.settings import get_settings
from expectations.checks import check_lookback, check_reconciliation
from expectations.runner import (
    SUITE_NAMES,
    GateFailed,
    load_suite,
    suite_path,
    validate_pandas,
    validate_spark,
    validate_spark_suites,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DT = "2026-01-31"
T0 = dt.datetime(2026, 1, 31, 8, 0, tzinfo=dt.timezone.utc)
MS0 = int(T0.timestamp() * 1000)

# Per suite: (Spark DDL schema, valid rows, broken rows, the exact failure lines the broken rows give).
# Settings in these tests: max_seq_len=3, top_k=3, max_dwell_ms=60000.
RAW_OK = ("STRING", "STRING", "STRING", "STRING", "BIGINT")
CASES = {
    "raw_events_sample": (
        "raw_line string, is_object boolean, t_event_id string, t_user_id string, t_item_id string, "
        "t_event_type string, t_event_time string",
        [(f'{{"event_id": "e{k}"}}', True, *RAW_OK) for k in range(19)]
        + [("not json", False, None, None, None, None, None)],
        [(f'{{"event_id": "e{k}"}}', True, *RAW_OK) for k in range(7)]
        + [
            ("[1]", False, None, None, None, None, None),
            ("x", False, None, None, None, None, None),
            ('{"user_id": 7}', True, "STRING", "BIGINT", "STRING", "STRING", "DECIMAL(3,1)"),
        ],
        [
            "expect_column_value_lengths_to_be_between column=raw_line (min_value=2, max_value=65536): "
            "1 unexpected (10.00% of non-null), e.g. ['x']",
            "expect_column_values_to_be_in_set column=is_object (value_set=[True]): "
            "2 unexpected (20.00% of non-null), e.g. [False, False]",
            "expect_column_values_to_be_in_set column=t_user_id (value_set=['STRING']): "
            "1 unexpected (12.50% of non-null), e.g. ['BIGINT']",
            "expect_column_values_to_be_in_set column=t_event_time (value_set=['STRING', 'TINYINT', 'SMALLINT', "
            "'INT', 'BIGINT']): 1 unexpected (12.50% of non-null), e.g. ['DECIMAL(3,1)']",
        ],
    ),
    "clean_events": (
        "event_id string, user_id string, item_id string, event_type string, event_time timestamp, "
        "event_time_ms long, dwell_ms long, rating double, session_id string, device string",
        [
            ("e1", "u1", "i1", "view", T0, MS0, 1200, None, "s1", "web"),
            ("e2", "u1", "i2", "rate", T0, MS0 + 1, None, 4.5, "s1", "web"),
            ("e3", "u2", "i1", "click", T0, MS0 + 2, 0, None, None, None),
        ],
        [
            ("e1", "u1", "i1", "view", T0, MS0, 1200, None, "s1", "web"),
            ("e1", "u2", "i2", "teleport", T0, MS0 + 1, -5, None, None, None),
            ("e3", "u2", "i1", "click", T0, MS0 + 2, 90000, 3.0, None, None),
        ],
        [
            "expect_column_values_to_be_unique column=event_id: 2 unexpected (66.67% of non-null), e.g. ['e1', 'e1']",
            "expect_column_values_to_be_in_set column=event_type (value_set=['impression', 'click', 'view', "
            "'add_to_cart', 'purchase', 'rate', 'like', 'dislike', 'share', 'skip']): 1 unexpected "
            "(33.33% of non-null), e.g. ['teleport']",
            "expect_column_values_to_be_between column=dwell_ms (min_value=0, max_value=60000): "
            "2 unexpected (66.67% of non-null), e.g. [-5, 90000]",
            "expect_column_values_to_be_null column=rating (where=event_type != 'rate'): "
            "1 unexpected (33.33% of non-null), e.g. [3.0]",
        ],
    ),
    "quarantine_events": (
        "raw_line string, reason string, source_file string",
        [("{not json", "invalid_json", "part-0.jsonl"), ('{"event_id": "e9"}', "missing_user_id", "part-0.jsonl")],
        [("{not json", None, "part-0.jsonl"), ('{"event_id": "e9"}', "", "part-0.jsonl")],
        [
            "expect_column_values_to_not_be_null column=reason: 1 unexpected (50.00% of non-null), e.g. [None]",
            "expect_column_value_lengths_to_be_between column=reason (min_value=1): "
            "1 unexpected (100.00% of non-null), e.g. ['']",
        ],
    ),
    "user_sequences": (
        "user_id string, item_ids array<string>, event_types array<string>, event_times_ms array<long>, "
        "dwell_ms array<long>, time_gaps_ms array<long>, dwell_strength array<float>, interest array<tinyint>, "
        "ratings array<float>, attention array<float>, hours array<tinyint>, weekdays array<tinyint>, "
        "session_starts array<boolean>, item_heats array<float>, item_counts_7d array<int>, user_events_7d array<int>, "
        "devices array<string>, "
        "length int, events_total long, active_days int, first_event_ms long, last_event_ms long, "
        "seen_item_ids array<string>",
        [
            (
                "u1",
                ["i1", "i2"],
                ["view", "click"],
                [MS0, MS0 + 5],
                [None, 500],
                [None, 5],
                [None, 0.1],
                [1, 1],
                [None, None],
                [1.0, 0.0],
                [0, 0],
                [3, 3],
                [True, False],
                [0.0, 1.0],
                [0, 1],
                [0, 1],
                ["phone", None],
                2,
                2,
                1,
                MS0,
                MS0 + 5,
                ["i1", "i2"],
            ),
            (
                "u2",
                ["i1"],
                ["rate"],
                [MS0],
                [None],
                [None],
                [None],
                [1],
                [4.0],
                [0.8],
                [0],
                [3],
                [None],
                [2.5],
                [3],
                [6],
                [None],
                1,
                7,
                3,
                MS0 - 86_400_000,
                MS0,
                ["i0", "i1"],
            ),
        ],
        [
            (
                "u1",
                ["i1", "i2"],
                ["view", "click"],
                [MS0, MS0 + 5],
                [None, 500],
                [None, 5],
                [None, 0.1],
                [1, 1],
                [None, None],
                [1.0, 0.0],
                [0, 0],
                [3, 3],
                [True, False],
                [0.0, 1.0],
                [0, 1],
                [0, 1],
                ["phone", None],
                2,
                2,
                1,
                MS0,
                MS0 + 5,
                ["i1", "i2"],
            ),
            (
                "u1",
                ["i1"],
                ["rate"],
                [MS0],
                [None],
                [None],
                [None],
                [1],
                [4.0],
                [0.8],
                [0],
                [3],
                [None],
                [0.0],
                [0],
                [0],
                ["tv"],
                1,
                1,
                1,
                MS0,
                MS0,
                None,
            ),
            (
                "u3",
                ["i1", "i2", "i1", "i2"],
                ["view"] * 4,
                [MS0 + k for k in range(4)],
                [1, 2, 3, 4],
                [None, 1, 1, 1],
                [0.0] * 4,
                [1] * 4,
                [None] * 4,
                None,
                [1] * 4,
                [3] * 4,
                [None] * 4,
                None,
                [0, 0, 1, 1],
                [0, 1, 2, 3],
                [None] * 4,
                4,
                3,
                0,
                MS0 + 3,
                MS0,
                ["i1", "i2"],
            ),
        ],
        [
            "expect_column_values_to_not_be_null column=seen_item_ids: 1 unexpected (33.33% of non-null), e.g. [None]",
            "expect_column_values_to_not_be_null column=attention: 1 unexpected (33.33% of non-null), e.g. [None]",
            "expect_column_values_to_not_be_null column=item_heats: 1 unexpected (33.33% of non-null), e.g. [None]",
            "expect_column_values_to_be_unique column=user_id: 2 unexpected (66.67% of non-null), e.g. ['u1', 'u1']",
            "expect_column_values_to_be_between column=length (min_value=1, max_value=3): "
            "1 unexpected (33.33% of non-null), e.g. [4]",
            "expect_column_values_to_be_between column=active_days (min_value=1): "
            "1 unexpected (33.33% of non-null), e.g. [0]",
            "expect_column_pair_values_a_to_be_greater_than_b column_A=events_total column_B=length (or_equal=True): "
            "1 unexpected (33.33% of non-null), e.g. [(3, 4)]",
            "expect_column_pair_values_a_to_be_greater_than_b column_A=last_event_ms column_B=first_event_ms "
            "(or_equal=True): 1 unexpected (33.33% of non-null), e.g. [(1769846400000, 1769846400003)]",
        ],
    ),
    "item_table": (
        "item_idx int, item_id string, title string, categories array<string>, year int, popularity long, "
        "interactions_1d long, interactions_7d long, interactions_30d long, heat double, first_seen_ms long, "
        "last_seen_ms long, available boolean",
        [
            (1, "i1", "Alpha", ["drama"], 1999, 5, 1, 2, 3, 1.5, MS0, MS0, True),
            (2, "i2", None, [], None, 0, 0, 0, 0, 0.0, None, None, False),
        ],
        [
            (1, "i1", "Alpha", ["drama"], 1999, 5, 1, 2, 3, 1.5, MS0, MS0, True),
            (3, "i1", None, [], None, -1, 2, 1, 1, -0.5, None, None, None),
        ],
        [
            "expect_column_values_to_not_be_null column=available: 1 unexpected (50.00% of non-null), e.g. [None]",
            "expect_column_values_to_be_unique column=item_id: 2 unexpected (100.00% of non-null), e.g. ['i1', 'i1']",
            "expect_column_values_to_be_between column=item_idx (min_value=1, max_value=2): "
            "1 unexpected (50.00% of non-null), e.g. [3]",
            "expect_column_values_to_be_between column=popularity (min_value=0): "
            "1 unexpected (50.00% of non-null), e.g. [-1]",
            "expect_column_values_to_be_between column=heat (min_value=0): "
            "1 unexpected (50.00% of non-null), e.g. [-0.5]",
            "expect_column_pair_values_a_to_be_greater_than_b column_A=interactions_7d column_B=interactions_1d "
            "(or_equal=True): 1 unexpected (50.00% of non-null), e.g. [(1, 2)]",
        ],
    ),
    "item_text": (
        "item_id string, item_idx int, text_hash string, dim int, norm double",
        [
            ("i1", 1, "0123456789abcdef", 384, 1.0),
            ("i3", 3, "fedcba9876543210", 384, 0.9999),
        ],
        [
            ("i1", 1, "0123456789abcdef", 384, 1.0),
            ("i1", 0, "short", 383, 0.5),
        ],
        [
            "expect_column_values_to_be_unique column=item_id: 2 unexpected (100.00% of non-null), e.g. ['i1', 'i1']",
            "expect_column_values_to_be_between column=item_idx (min_value=1): "
            "1 unexpected (50.00% of non-null), e.g. [0]",
            "expect_column_value_lengths_to_equal column=text_hash: 1 unexpected (50.00% of non-null), e.g. ['short']",
            "expect_column_values_to_be_in_set column=dim (value_set=[384]): "
            "1 unexpected (50.00% of non-null), e.g. [383]",
            "expect_column_values_to_be_between column=norm (min_value=0.999, max_value=1.001): "
            "1 unexpected (50.00% of non-null), e.g. [0.5]",
        ],
    ),
    "candidates": (
        "user_id string, rank int, item_id string, score float, model_name string, model_version string, "
        "arm string, experiment_id string",
        [
            ("u1", 1, "i3", 0.9, "attention-recommender", "4", "control", "exp-1"),
            ("u1", 2, "i4", 0.5, "attention-recommender", "4", "control", "exp-1"),
            ("u2", 1, "i3", 0.8, "attention-recommender", "5", "treatment", "exp-1"),
        ],
        [
            ("u1", 1, "i3", 0.9, "attention-recommender", "4", "control", ""),
            ("u1", 1, "i3", 0.5, "attention-recommender", "4", "control", ""),
            ("u2", 4, "i3", 0.8, "attention-recommender", "4", "placebo", None),
        ],
        [
            "expect_column_values_to_not_be_null column=experiment_id: 1 unexpected (33.33% of non-null), e.g. [None]",
            "expect_column_values_to_be_in_set column=arm (value_set=['control', 'treatment']): 1 unexpected "
            "(33.33% of non-null), e.g. ['placebo']",
            "expect_column_values_to_be_between column=rank (min_value=1, max_value=3): "
            "1 unexpected (33.33% of non-null), e.g. [4]",
            "expect_compound_columns_to_be_unique column_list=['user_id', 'rank']: 2 unexpected "
            "(66.67% of non-null), e.g. [{'user_id': 'u1', 'rank': 1}, {'user_id': 'u1', 'rank': 1}]",
            "expect_compound_columns_to_be_unique column_list=['user_id', 'item_id']: 2 unexpected "
            "(66.67% of non-null), e.g. [{'user_id': 'u1', 'item_id': 'i3'}, {'user_id': 'u1', 'item_id': 'i3'}]",
        ],
    ),
    "kpis": (
        ", ".join(f"{name} {'bigint' if kind == 'int64' else kind}" for name, kind in KPI_COLUMNS),
        [
            ("e1", "control", "1", 4, 3, 3, 1, 1 / 3, 1 / 3, 2 / 3, 1 / 3, 0.1, 0.8, None, None, 0.9, 5.0, 0.5),
            ("e1", "treatment", "2", 4, 3, 3, 2, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 0.2, 0.9, 1.0, 0.2, 0.75, 5.5, 0.6),
        ],
        [  # more active users than users, a p-value on control; a CTR of 1.5, fewer hits in K than in 10
            ("e1", "control", "1", 4, 5, 3, 1, 1 / 3, 1 / 3, 2 / 3, 1 / 3, 0.1, 0.8, None, 0.3, 0.9, 5.0, 0.5),
            ("e1", "treatment", "2", 4, 3, 3, 2, 1.5, 2 / 3, 0.5, 1 / 3, 0.2, 0.9, 1.0, 0.2, 0.75, 5.5, 0.6),
        ],
        [
            "expect_column_pair_values_a_to_be_greater_than_b column_A=users column_B=active_users (or_equal=True): "
            "1 unexpected (50.00% of non-null), e.g. [(4, 5)]",
            "expect_column_pair_values_a_to_be_greater_than_b column_A=hit_rate_at_k column_B=hit_rate_at_10 "
            "(or_equal=True): 1 unexpected (50.00% of non-null), e.g. [(0.5, 0.6666666666666666)]",
            "expect_column_values_to_be_between column=ctr (min_value=0, max_value=1): 1 unexpected "
            "(50.00% of non-null), e.g. [1.5]",
            "expect_column_values_to_be_null column=p_value (where=arm == 'control'): 1 unexpected "
            "(100.00% of non-null), e.g. [0.3]",
        ],
    ),
}
SPARK_SUITES = ("raw_events_sample", "clean_events", "quarantine_events", "user_sequences", "item_table")
# Tiny data on a shared 2-core box: Spark's code generation and the JVM's C2 JIT cost far more than
# they save here (measured: the first validation 28 s -> 16 s).
from tests.conftest import FAST_SPARK_CONF  # noqa: E402  (the test session settings, also used by subprocesses)


def _columns(ddl: str) -> list[str]:
    return [part.strip().split(" ")[0] for part in ddl.split(", ")]


def _pandas(suite: str, rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=_columns(CASES[suite][0]))


@pytest.fixture
def settings(tmp_path):
    return get_settings().model_copy(
        update={"data_root": str(tmp_path / "lake"), "max_seq_len": 3, "top_k": 3, "max_dwell_ms": 60000}
    )


def _docs_root(settings) -> Path:
    return Path(lake.data_docs_dir(settings.data_root))


# ----------------------------------------------------------------------------------------- suite files


def test_suite_files_are_gx_suites_that_follow_the_contracts():
    for name in SUITE_NAMES:
        payload = json.loads(suite_path(name).read_text())
        suite = load_suite(name)
        assert suite.name == name
        assert len(suite.expectations) == len(payload["expectations"]) > 0
    clean = json.loads(suite_path("clean_events").read_text())
    (in_set,) = [e for e in clean["expectations"] if e["type"] == "expect_column_values_to_be_in_set"]
    assert in_set["kwargs"] == {"column": "event_type", "value_set": list(EVENT_TYPES)}
    candidates = json.loads(suite_path("candidates").read_text())
    (columns,) = [e for e in candidates["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
    assert columns["kwargs"]["column_set"] == [name for name, _ in CANDIDATE_COLUMNS]
    kpis = json.loads(suite_path("kpis").read_text())
    (ordered,) = [e for e in kpis["expectations"] if e["type"] == "expect_table_columns_to_match_ordered_list"]
    assert ordered["kwargs"]["column_list"] == [name for name, _ in KPI_COLUMNS]
    with pytest.raises(
        ValueError, match="unknown expectation suite 'events'; use one of raw_events_sample, clean_events"
    ):
        suite_path("events")


# ------------------------------------------------------------------------------------------------ pandas


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_suite_on_pandas_passes_valid_and_names_failures(suite, settings):
    _, valid, broken, expected = CASES[suite]
    summary = validate_pandas(suite, _pandas(suite, valid), DT, settings)
    n = len(load_suite(suite).expectations)
    assert {k: summary[k] for k in ("suite", "dt", "success", "evaluated", "failed")} == {
        "suite": suite,
        "dt": DT,
        "success": True,
        "evaluated": n,
        "failed": [],
    }
    assert Path(summary["data_docs"]).is_file()

    with pytest.raises(GateFailed) as failed:
        validate_pandas(suite, _pandas(suite, broken), DT, settings)
    assert sorted(failed.value.summary["failed"]) == sorted(expected)
    message = str(failed.value)
    assert message.startswith(f"validation gate {suite} FAILED for dt={DT}: {len(expected)} of {n} expectations failed")
    for line in expected:
        assert f"  - {line}" in message


def test_missing_column_is_named_with_the_columns_seen(settings):
    frame = _pandas("candidates", CASES["candidates"][1]).drop(columns=["score"])
    with pytest.raises(GateFailed) as failed:
        validate_pandas("candidates", frame, DT, settings)
    assert sorted(failed.value.summary["failed"]) == [
        "expect_column_values_to_not_be_null column=score: raised Error: "
        'The column "score" in BatchData does not exist.',
        "expect_table_columns_to_match_set column_set=['user_id', 'rank', 'item_id', 'score', 'model_name', "
        "'model_version', 'arm', 'experiment_id']: observed ['arm', 'experiment_id', 'item_id', 'model_name', "
        "'model_version', 'rank', 'user_id'] (missing ['score'])",
    ]


def test_data_docs_page_per_run_under_the_lake_and_nothing_in_cwd(settings, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _, valid, broken, _ = CASES["candidates"]
    first = validate_pandas("candidates", _pandas("candidates", valid), DT, settings)
    with pytest.raises(GateFailed) as failed:
        validate_pandas("candidates", _pandas("candidates", broken), DT, settings)
    page = failed.value.summary["data_docs"]
    assert str(failed.value).endswith(f"  Data Docs: {page}")
    docs = _docs_root(settings)
    for path in (first["data_docs"], page):
        assert Path(path).is_file() and Path(path).is_relative_to(docs / "validations" / "candidates")
        assert f"/candidates-{DT}-" in path  # run name: suite + dt + timestamp
    assert first["data_docs"] != page
    index = (docs / "index.html").read_text()
    assert index.count(f"candidates-{DT}-") >= 2  # the index lists both runs
    status = re.compile(r"Status:(?:\s|<[^>]*>)*(\w+)")  # the page's "Status: Succeeded/Failed" header
    assert status.search(Path(first["data_docs"]).read_text()).group(1) == "Succeeded"
    assert status.search(Path(page).read_text()).group(1) == "Failed"
    assert list(cwd.iterdir()) == []  # GX wrote nothing where it was run from


def test_the_data_docs_index_lists_the_newest_runs_and_keeps_every_page(settings, monkeypatch):
    from expectations import runner

    monkeypatch.setattr(runner, "DATA_DOCS_INDEX_RESULTS", 2)
    days = ["2026-01-03", "2026-01-04", "2026-01-05"]
    pages = [validate_pandas("candidates", _pandas("candidates", CASES["candidates"][1]), d, settings) for d in days]
    index = (_docs_root(settings) / "index.html").read_text()
    assert f"candidates-{days[0]}-" not in index  # the oldest run left the index ...
    assert all(f"candidates-{d}-" in index for d in days[1:])  # ... the two newest are listed
    assert all(Path(p["data_docs"]).is_file() for p in pages)  # and every run keeps its page


def test_uri_lake_skips_data_docs(settings, caplog):
    remote = settings.model_copy(update={"data_root": "s3a://attnrec-lake/prod"})
    summary = validate_pandas("candidates", _pandas("candidates", CASES["candidates"][1]), DT, remote)
    assert summary["success"] is True and summary["data_docs"] is None
    assert "lake root s3a://attnrec-lake/prod is not a local path: Data Docs are not built" in caplog.text
    with pytest.raises(GateFailed, match="Data Docs: not built \\(lake root is not a local path\\)"):
        validate_pandas("candidates", _pandas("candidates", CASES["candidates"][2]), DT, remote)


# ------------------------------------------------------------------------------------------------- Spark


@pytest.mark.parametrize("suite", SPARK_SUITES)
def test_suite_on_spark_passes_valid_and_names_failures(suite, spark, settings):
    ddl, valid, broken, expected = CASES[suite]
    summary = validate_spark(suite, spark.createDataFrame(valid, ddl), DT, settings)
    assert summary["success"] is True and summary["failed"] == []
    assert summary["evaluated"] == len(load_suite(suite).expectations)
    assert Path(summary["data_docs"]).is_relative_to(_docs_root(settings))

    broken_df = spark.createDataFrame(broken, ddl)
    with pytest.raises(GateFailed) as failed:
        validate_spark(suite, broken_df, DT, settings)
    assert sorted(failed.value.summary["failed"]) == sorted(expected)
    assert not broken_df.is_cached  # GX does not persist the frame (persist=False: re-reads are cheaper)


def test_uniqueness_on_spark_counts_by_hashes_what_the_window_counts(spark):
    """expectations/spark_metrics.py replaces GX's window plan of the uniqueness count on Spark: the same rows are
    unexpected (every copy of a repeated value; nulls and rows outside the row condition not counted), so the same
    pass or fail, with GX's own unexpected values in the details."""
    import great_expectations as gx
    from great_expectations.expectations.registry import get_metric_provider
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from expectations import spark_metrics

    spark_metrics.register()
    engine = gx.get_context(mode="ephemeral").data_sources.add_spark(name="u", persist=False).get_execution_engine()
    provider = get_metric_provider(spark_metrics.UNIQUE_UNEXPECTED_COUNT, engine)[1]
    assert provider is spark_metrics.unique_unexpected_count
    # 3,000 rows: from row 2,000 on every 7th repeats the id of the row 2,000 before it; every 11th id is null; the
    # types alternate, so the row condition keeps some pairs whole and cuts others
    ids = [None if i % 11 == 0 else f"e{i % 2000 if i % 7 == 0 else i}" for i in range(3000)]
    rows = [(event_id, "rate" if i % 2 else "click") for i, event_id in enumerate(ids)]
    frame = spark.createDataFrame(rows, "event_id string, event_type string")
    by_window = F.count(F.lit(1)).over(Window.partitionBy("event_id")) > 1

    def unexpected(df):
        return df.where(F.col("event_id").isNotNull()).withColumn("dup", by_window).where("dup").count()

    def validate(df, **kwargs):
        context = gx.get_context(mode="ephemeral")
        batch = (
            context.data_sources.add_spark(name="s", persist=False)
            .add_dataframe_asset(name="a")
            .add_batch_definition_whole_dataframe("w")
            .get_batch(batch_parameters={"dataframe": df})
        )
        expectation = gx.expectations.ExpectColumnValuesToBeUnique(column="event_id", **kwargs)
        return batch.validate(expectation, result_format="SUMMARY")

    expected = unexpected(frame)
    assert expected > 0
    result = validate(frame)
    assert (result.success, result.result["unexpected_count"]) == (False, expected)
    assert pd.Series(ids, dtype=object).dropna().duplicated(keep=False).sum() == expected
    rated = validate(frame, row_condition='event_type=="rate"', condition_parser="spark")
    assert rated.result["unexpected_count"] == unexpected(frame.where("event_type = 'rate'"))
    distinct = frame.dropDuplicates(["event_id"])
    assert validate(distinct).success is True and validate(distinct).result["unexpected_count"] == 0
    # distinct values whose hashes collide are counted by value: a key as weak as the id's length collides everywhere
    assert spark_metrics.repeated_rows(distinct, "event_id", F.length) == 0
    with_nulls = frame.where(F.col("event_id").isNull() | (F.col("event_type") == "rate"))
    assert spark_metrics.repeated_rows(with_nulls, "event_id", F.length) == (
        with_nulls.withColumn("dup", by_window).where("dup").count()
    )


def test_column_pair_counts_are_gx_s_counts_and_join_the_suite_s_one_aggregation(spark, tmp_path):
    """expectations/spark_metrics.py computes a column-pair expectation's unexpected and filtered row counts inside
    the suite's aggregation instead of two count() jobs each: the counts are GX's (its filter of the ignored rows,
    then of a true condition) for each ignore_row_if, with and without or_equal and a row condition, and a suite of
    four pair expectations runs no more Spark jobs than a suite of one."""
    import great_expectations as gx
    from pyspark.sql import functions as F

    from expectations import spark_metrics

    spark_metrics.register()
    # every (a, b) combination of smaller / equal / larger / missing for each k, in skewed numbers (1 to 48 rows)
    values = [None, 1, 2, 3]
    combinations = [(a, b, k) for a in values for b in values for k in range(3)]
    rows = [row for n, row in enumerate(combinations, start=1) for _ in range(n)]
    spark.createDataFrame(rows, "a int, b int, k int").write.parquet(str(tmp_path / "pairs"))
    frame = spark.read.parquet(str(tmp_path / "pairs"))  # a file read, as the gates validate (counted by jobs)

    def batch(df):
        context = gx.get_context(mode="ephemeral")
        source = context.data_sources.add_spark(name="s", persist=False).add_dataframe_asset(name="t")
        return source.add_batch_definition_whole_dataframe("w").get_batch(batch_parameters={"dataframe": df})

    ignored = {
        "both_values_are_missing": "a IS NULL AND b IS NULL",
        "either_value_is_missing": "a IS NULL OR b IS NULL",
        "neither": "false",
    }
    for ignore_row_if, ignore in ignored.items():
        for or_equal, expected_condition in ((False, F.expr("a > b")), (True, F.expr("a >= b OR a <=> b"))):
            for where in (None, "k = 1"):
                domain = frame.where(where) if where else frame
                kept = domain.where(f"NOT ({ignore})")
                unexpected = kept.where((~expected_condition) == True).count()  # noqa: E712 - GX's own filter
                kwargs = {"row_condition": where, "condition_parser": "spark"} if where else {}
                expectation = gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="a", column_B="b", or_equal=or_equal, ignore_row_if=ignore_row_if, **kwargs
                )
                result = batch(frame).validate(expectation, result_format="SUMMARY").result
                case = (ignore_row_if, or_equal, where)
                assert 0 < unexpected < kept.count(), case
                assert result["unexpected_count"] == unexpected, case
                assert result["element_count"] == domain.count(), case
                assert result["missing_count"] == domain.count() - kept.count(), case
                assert len(result["partial_unexpected_list"]) > 0, case

    def jobs(pairs: int) -> int:
        tracker = spark.sparkContext.statusTracker()
        before = max(tracker.getJobIdsForGroup(None) or [-1])
        suite = gx.ExpectationSuite(name=f"pairs{pairs}")
        suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="k"))
        for column_b, or_equal in [("a", False), ("b", False), ("a", True), ("b", True)][:pairs]:
            suite.add_expectation(
                gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="k", column_B=column_b, or_equal=or_equal
                )
            )
        assert batch(frame).validate(suite, result_format="BOOLEAN_ONLY").success is False
        return max(tracker.getJobIdsForGroup(None) or [-1]) - before

    assert jobs(4) == jobs(1)


def test_a_gate_s_suites_run_side_by_side_and_each_run_gets_its_page(spark, settings, caplog):
    """validate_spark_suites (a gate's suites in threads, one Data Docs build after the last): every suite is evaluated
    on its own frame, a failed one does not stop the others, each run and each suite has its own page with its status,
    and the index lists them all. On a fresh lake the suites' results stores keep no id file, which they read and
    wrote side by side before ("Invalid store configuration" in the log of a healthy gate)."""
    frames = []
    for suite, kind in (("clean_events", 2), ("quarantine_events", 1), ("item_table", 2)):  # broken, valid, broken
        ddl, rows = CASES[suite][0], CASES[suite][kind]
        frames.append((suite, spark.createDataFrame(rows, ddl)))
    summaries = validate_spark_suites(frames, DT, settings)
    results = Path(settings.local_data_root) / "validation" / "results"
    assert results.is_dir() and not (results / ".ge_store_backend_id").exists()
    assert "Invalid store configuration" not in caplog.text
    assert [s["suite"] for s in summaries] == ["clean_events", "quarantine_events", "item_table"]
    assert [s["success"] for s in summaries] == [False, True, False]
    for summary in (summaries[0], summaries[2]):
        assert sorted(summary["failed"]) == sorted(CASES[summary["suite"]][3])
        assert summary["message"].startswith(f"validation gate {summary['suite']} FAILED for dt={DT}: ")
        assert summary["message"].endswith(f"  Data Docs: {summary['data_docs']}")
    assert "message" not in summaries[1]
    status = re.compile(r"Status:(?:\s|<[^>]*>)*(\w+)")
    index = (_docs_root(settings) / "index.html").read_text()
    for summary, expected in zip(summaries, ("Failed", "Succeeded", "Failed")):
        page = Path(summary["data_docs"])
        assert page.is_file() and page.is_relative_to(_docs_root(settings) / "validations" / summary["suite"])
        assert status.search(page.read_text()).group(1) == expected
        assert f"{summary['suite']}-{DT}-" in index
        assert (_docs_root(settings) / "expectations" / f"{summary['suite']}.html").is_file()


def test_a_suite_that_cannot_run_fails_alone_and_the_others_still_get_their_pages(spark, settings, tmp_path):
    """A suite that cannot run (item_table counts its frame before GX starts, and the frame's files were deleted after
    it was made) is a failed summary naming the suite and the error, raised nowhere; the gate's other suite is
    validated and gets its page. Alone (validate_spark), the same is a GateFailed with that message. (An error inside
    GX's metric jobs is GX's: a failed expectation that says "raised".)"""
    import shutil

    ddl, valid_rows = CASES["quarantine_events"][0], CASES["quarantine_events"][1]
    gone = tmp_path / "gone_partition"
    spark.createDataFrame(CASES["item_table"][1], CASES["item_table"][0]).write.parquet(str(gone))
    unreadable = spark.read.parquet(str(gone))
    shutil.rmtree(gone)
    broken, valid = validate_spark_suites(
        [("item_table", unreadable), ("quarantine_events", spark.createDataFrame(valid_rows, ddl))], DT, settings
    )
    assert (broken["suite"], broken["success"], broken["evaluated"], broken["data_docs"]) == (
        "item_table",
        False,
        0,
        None,
    )
    assert broken["message"].startswith(f"validation gate item_table could not run for dt={DT}: "), broken["message"]
    assert "gone_partition" in broken["message"].splitlines()[0]  # the error names what could not be read
    assert "raised at:" in broken["message"] and broken["failed"][0].startswith("raised ")
    assert valid["success"] and Path(valid["data_docs"]).is_file()
    assert "quarantine_events" in (_docs_root(settings) / "index.html").read_text()
    with pytest.raises(GateFailed, match=f"validation gate item_table could not run for dt={DT}"):
        validate_spark("item_table", unreadable, DT, settings)


# ---------------------------------------------------------------------------------------- reconciliation


def _recon(**overrides) -> dict:
    recon = {
        "dt": DT,
        "raw_lines": 1000,
        "clean": 960,
        "quarantined": 30,
        "duplicates": 10,
        "quarantined_by_reason": {"invalid_json": 20, "unknown_event_type": 10},
    }
    recon.update(overrides)
    return recon


def test_reconciliation_passes_when_counts_add_up(settings):
    assert check_reconciliation(_recon(), settings) is None
    assert check_reconciliation(_recon(raw_lines=0, clean=0, quarantined=0, duplicates=0), settings) is None


def test_reconciliation_fails_when_rows_go_missing(settings):
    with pytest.raises(GateFailed) as failed:
        check_reconciliation(_recon(clean=950), settings)
    assert str(failed.value) == (
        f"reconciliation FAILED for dt={DT}: raw_lines=1000 != clean=950 + quarantined=30 + duplicates=10 "
        "(= 990); the clean job lost or invented rows. Top quarantine reasons: invalid_json=20, unknown_event_type=10"
    )


def test_reconciliation_fails_when_quarantine_share_is_too_high(settings):
    recon = _recon(clean=900, quarantined=90, quarantined_by_reason={"invalid_json": 70, "bad_rating": 20})
    with pytest.raises(GateFailed) as failed:
        check_reconciliation(recon, settings)
    assert str(failed.value) == (
        f"reconciliation FAILED for dt={DT}: quarantined=90 of raw_lines=1000 is 9.00%, above the threshold "
        "5.00% (ATTNREC_MAX_QUARANTINE_SHARE=0.05). Top quarantine reasons: invalid_json=70, bad_rating=20. "
        "Fix the producer, or raise ATTNREC_MAX_QUARANTINE_SHARE if this share is expected"
    )
    assert check_reconciliation(recon, settings.model_copy(update={"max_quarantine_share": 0.1})) is None


# ------------------------------------------------------------------------------------ jobs/validate.py


def _write_staged(root: Path, dataset: str, suite: str, rows: list[tuple]) -> Path:
    """Write rows as a staged parquet partition (pyarrow, as a Spark job would lay it out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "string": pa.string(),
        "long": pa.int64(),
        "int": pa.int32(),
        "double": pa.float64(),
        "float": pa.float32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "array<string>": pa.list_(pa.string()),
        "array<long>": pa.list_(pa.int64()),
        "array<int>": pa.list_(pa.int32()),
        "array<float>": pa.list_(pa.float32()),
        "array<tinyint>": pa.list_(pa.int8()),
        "array<boolean>": pa.list_(pa.bool_()),
        "boolean": pa.bool_(),
    }
    fields = [(p.strip().split(" ", 1)[0], types[p.strip().split(" ", 1)[1]]) for p in CASES[suite][0].split(", ")]
    schema = pa.schema(fields)
    table = pa.Table.from_pylist([dict(zip(schema.names, row)) for row in rows], schema=schema)
    path = Path(lake.staging(str(root), dataset, DT))
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-00000.parquet")
    (path / lake.SUCCESS_MARKER).touch()
    return path


def _job_command(args: list[str], root: Path, spark_submit: bool) -> tuple[list[str], dict[str, str]]:
    """jobs/validate.py by spark-submit or as plain python, with the fast test Spark settings.

    Under spark-submit ATTNREC_SPARK_MASTER says local[2] and --master says local[1]: --master must win.
    """
    conf = [arg for key, value in FAST_SPARK_CONF.items() for arg in ("--conf", f"{key}={value}")]
    env = {**os.environ, "ATTNREC_SPARK_MASTER": "local[1]", "ATTNREC_MAX_DWELL_MS": "60000"}
    env.pop("ATTNREC_DATA_ROOT", None)
    script = str(REPO_ROOT / "jobs" / "validate.py")
    if spark_submit:
        env["ATTNREC_SPARK_MASTER"] = "local[2]"
        command = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]", *conf, script]
    else:
        # pyspark hands PYSPARK_SUBMIT_ARGS to the spark-submit that starts the JVM of a plain python run
        env["PYSPARK_SUBMIT_ARGS"] = " ".join(f"'{arg}'" for arg in conf) + " pyspark-shell"
        command = [sys.executable, script]
    return [*command, *args, "--dt", DT, "--data-root", str(root)], env


@pytest.fixture(scope="module")
def job_runs(tmp_path_factory):
    """Both end-to-end runs of jobs/validate.py, started together (each pays a JVM start), from a
    working directory outside the checkout. Returns {name: (lake root, cwd, CompletedProcess)}."""
    base = tmp_path_factory.mktemp("validate_job")
    passing, failing = base / "pass", base / "fail"
    sequences = _write_staged(passing / "lake", lake.FEATURE_SEQUENCES, "user_sequences", CASES["user_sequences"][1])
    lake.write_json(str(sequences / lake.FEATURES_MANIFEST), lookback_manifest(DT, read=[DT]))
    _write_staged(passing / "lake", lake.FEATURE_ITEMS, "item_table", CASES["item_table"][1])
    raw_day = failing / "lake" / "raw" / "events" / f"dt={DT}"
    raw_day.mkdir(parents=True)
    (raw_day / "part-0.jsonl").write_text(
        "".join(
            f'{{"event_id": "e{k}", "user_id": "u1", "item_id": "i1", "event_type": "view", "event_time": {MS0}}}\n'
            for k in range(6)
        )
    )
    clean = _write_staged(failing / "lake", lake.CLEAN_EVENTS, "clean_events", CASES["clean_events"][2])
    _write_staged(failing / "lake", lake.QUARANTINE_EVENTS, "quarantine_events", CASES["quarantine_events"][1])
    lake.write_json(
        str(clean / lake.RECONCILIATION_FILE),
        {
            "dt": DT,
            "raw_lines": 6,
            "clean": 3,
            "quarantined": 2,
            "duplicates": 1,
            "quarantined_by_reason": {"invalid_json": 1, "missing_user_id": 1},
        },
    )
    runs = {
        "pass": (passing, _job_command(["--dataset", "features"], passing / "lake", spark_submit=True)),
        "fail": (failing, _job_command(["--dataset", "clean_events"], failing / "lake", spark_submit=False)),
    }
    procs = {
        name: subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (cwd, (cmd, env)) in runs.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        cwd = runs[name][0]
        results[name] = (cwd / "lake", cwd, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_validate_job_passes_staged_features_via_spark_submit(job_runs):
    root, cwd, result = job_runs["pass"]
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if f"dt={DT}" in line]
    assert lines[0] == f"features gate dt={DT}: Spark master local[1]"  # spark-submit's --master, not the env
    assert lines[1].startswith(f"user_sequences dt={DT}: PASSED 22/22 expectations; Data Docs: {root}/validation/")
    assert lines[2].startswith(f"item_table dt={DT}: PASSED 14/14 expectations; Data Docs: {root}/validation/")
    assert lines[3] == f"look-back dt={DT}: PASSED 1 clean days read"
    assert lines[4] == f"features gate dt={DT}: all checks passed"
    assert len(lines) == 5
    assert sorted(p.name for p in cwd.iterdir()) == ["lake"]  # nothing written into the working directory


def test_validate_job_fails_on_broken_clean_events(job_runs):
    root, cwd, result = job_runs["fail"]
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert f"clean_events gate dt={DT}: Spark master local[1]" in result.stdout  # from ATTNREC_SPARK_MASTER
    assert f"reconciliation dt={DT}: FAILED" in result.stdout  # 2 of 6 lines quarantined > 5%
    assert f"clean_events dt={DT}: FAILED (details on stderr)" in result.stdout
    assert f"quarantine_events dt={DT}: PASSED 5/5 expectations" in result.stdout
    assert f"raw_events_sample dt={DT}: PASSED 8/8 expectations" in result.stdout  # the raw lines themselves are fine
    assert f"validation gate clean_events FAILED for dt={DT}: 4 of 13 expectations failed" in result.stderr
    for line in CASES["clean_events"][3]:
        assert f"  - {line}" in result.stderr
    assert "quarantined=2 of raw_lines=6 is 33.33%, above the threshold 5.00%" in result.stderr
    assert f"  Data Docs: {root}/validation/data_docs/validations/clean_events/" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["lake"]


def _run_job(args: list[str], root: Path, cwd: Path) -> subprocess.CompletedProcess:
    command, env = _job_command(args, root, spark_submit=False)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_validate_job_names_the_missing_staged_partition(tmp_path):
    root = tmp_path / "lake"
    result = _run_job(["--dataset", "features"], root, cwd=tmp_path)
    assert result.returncode == 2
    expected = lake.staging(str(root), lake.FEATURE_SEQUENCES, DT)
    assert result.stderr.strip() == (
        f"validate: no staged partition for user_sequences dt={DT}: looked in {expected}; "
        f"run the job that writes it for {DT} first"
    )


def test_validate_job_refuses_an_incomplete_staged_partition(tmp_path):
    from jobs.validate import check_inputs

    root = tmp_path / "lake"
    clean = _write_staged(root, lake.CLEAN_EVENTS, "clean_events", CASES["clean_events"][1])
    quarantine = _write_staged(root, lake.QUARANTINE_EVENTS, "quarantine_events", CASES["quarantine_events"][1])
    with pytest.raises(FileNotFoundError) as missing_recon:
        check_inputs("clean_events", DT, str(root))
    assert str(missing_recon.value) == (
        f"no reconciliation for clean_events dt={DT}: looked for {clean}/_reconciliation.json; the clean job writes it"
    )
    (quarantine / lake.SUCCESS_MARKER).unlink()
    with pytest.raises(FileNotFoundError) as incomplete:
        check_inputs("clean_events", DT, str(root))
    assert str(incomplete.value) == (
        f"staged partition for quarantine_events dt={DT} at {quarantine} is incomplete (no _SUCCESS); "
        "re-run the job that writes it"
    )


# --------------------------------------------------------------------------- candidates vs the features


def _publish_features(root: str, seen: dict[str, list[str]], available: dict[str, bool]) -> None:
    """Published features/sequences (user_id, seen_item_ids) and features/items (item_id, available) for DT; the
    sequences carry pseudonyms (``p-`` + the raw id), mapped back by a published identity/users."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = {
        lake.FEATURE_SEQUENCES: pa.table(
            {"user_id": [f"p-{u}" for u in seen], "seen_item_ids": pa.array(list(seen.values()), pa.list_(pa.string()))}
        ),
        lake.IDENTITY_USERS: pa.table({"pseudonym": [f"p-{u}" for u in seen], "user_id": list(seen)}),
        lake.FEATURE_ITEMS: pa.table({"item_id": list(available), "available": list(available.values())}),
    }
    for dataset, table in tables.items():
        path = Path(lake.partition(root, dataset, DT))
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path / "part-00000.parquet")
        (path / lake.SUCCESS_MARKER).touch()


#: The plan of a day without an experiment: version 4 serves everyone.
NO_EXPERIMENT = {"model_version": "4", "model_versions": {"control": "4"}, "experiment_id": "", "treatment_share": 0.0}


def _candidates(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])
    return frame.assign(model_name="attention-recommender", model_version="4", arm="control", experiment_id="").astype(
        {"rank": "int32", "score": "float32"}
    )


def test_candidates_gate_checks_rank_order_available_items_and_seen_items_against_the_features(settings):
    from expectations.candidates import check_candidates, validate_candidates

    # "heavy" saw 30 items over the look-back; its sequence (max_seq_len=3 here) kept only the last 3 of them
    _publish_features(
        settings.data_root,
        {"heavy": [f"i{k:02d}" for k in range(30)], "light": []},
        {**{f"i{k:02d}": True for k in range(39)}, "i39": False},
    )
    good = _candidates(
        [("heavy", 1, "i30", 0.9), ("heavy", 2, "i31", 0.5), ("heavy", 3, "i32", 0.5), ("light", 1, "i00", 2.0)]
    )
    summary = validate_candidates(good, DT, settings, NO_EXPERIMENT)
    assert summary["success"] is True
    assert summary["checks"] == ["rank_order_and_scores", "available_items", "seen_items_excluded", "arms_and_versions"]

    bad = _candidates(
        [
            ("heavy", 1, "i05", 0.9),  # seen 25 events before the end of the sequence
            ("heavy", 2, "i39", 0.95),  # retired, and scored above rank 1
            ("heavy", 3, "zz", 0.1),  # not in features/items at all
            ("light", 1, "i00", 2.0),
            ("light", 3, "i01", 1.0),  # rank 2 is missing
        ]
    )
    with pytest.raises(GateFailed) as failed:
        check_candidates(bad, DT, settings, NO_EXPERIMENT)
    assert failed.value.summary["failed"] == [
        "rank does not run 1, 2, ... for 1 users, e.g. ['light']; models/candidates.py writes ranks 1..K per user",
        "score increases with rank in 1 rows of 1 users, e.g. (user_id, rank, score) "
        "[('heavy', 2, 0.949999988079071)]; scores must be non-increasing with rank",
        f"1 rows serve items retired (available false) in features/items dt={DT}, e.g. ['i39']; candidates may only "
        "serve available catalogue items",
        f"1 rows serve items not in features/items in features/items dt={DT}, e.g. ['zz']; candidates may only serve "
        "available catalogue items",
        "1 (user, item) pairs serve an item the user has already seen (features/sequences seen_item_ids, event types "
        "click,view,add_to_cart,purchase,rate,like,dislike,share,skip), e.g. (user_id, item_id, rank) "
        "[('heavy', 'i05', 1)]; candidates must exclude every seen item",
    ]
    assert str(failed.value).startswith(
        f"candidates gate FAILED for dt={DT}: 5 check(s) against the features and the plan failed"
    )
    # the whole gate: the GX suite passes these rows, the checks against the features do not
    with pytest.raises(GateFailed, match="already seen"):
        validate_candidates(bad.assign(rank=[1, 2, 3, 1, 2]), DT, settings, NO_EXPERIMENT)


def test_candidates_gate_needs_the_features_it_checks_against(settings):
    from expectations.candidates import check_candidates

    good = _candidates([("u1", 1, "i1", 0.5)])
    with pytest.raises(
        GateFailed,
        match=f"features/items is not published at .*; the gate checks the candidates "
        f"against it. Run behavior_etl for {DT} first",
    ):
        check_candidates(good, DT, settings, NO_EXPERIMENT)
    import pyarrow as pa
    import pyarrow.parquet as pq

    _publish_features(settings.data_root, {"u1": []}, {"i1": True})
    path = Path(lake.partition(settings.data_root, lake.FEATURE_SEQUENCES, DT))
    pq.write_table(pa.table({"user_id": ["u1"]}), path / "part-00000.parquet")  # features from before seen_item_ids
    with pytest.raises(GateFailed, match=r"lacks \['seen_item_ids'\].*re-run behavior_etl for 2026-01-31"):
        check_candidates(good, DT, settings, NO_EXPERIMENT)


def _served(users: list[str], experiment_id: str, share: float, versions: dict[str, str]) -> pd.DataFrame:
    """Two rows per user, each user in the arm attnrec.experiments.arm gives them, from that arm's version."""
    from attnrec.experiments import arm

    rows = [(u, r, f"i{r}", 1.0 / r) for u in users for r in (1, 2)]
    frame = _candidates(rows)
    frame["arm"] = [arm(experiment_id, u, share) for u in frame["user_id"]]
    return frame.assign(model_version=frame["arm"].map(versions), experiment_id=experiment_id)


def test_candidates_gate_checks_arms_versions_and_the_experiment_against_the_recorded_plan(settings):
    from attnrec.experiments import arm
    from expectations.candidates import check_candidates

    users = [f"u{k:02d}" for k in range(40)]
    _publish_features(settings.data_root, dict.fromkeys(users, []), {"i1": True, "i2": True})
    plan = {
        "model_version": "4",
        "model_versions": {"control": "4", "treatment": "7"},
        "experiment_id": "exp-1",
        "treatment_share": 0.5,
    }
    good = _served(users, "exp-1", 0.5, {"control": "4", "treatment": "7"})
    assert set(good["arm"]) == {"control", "treatment"}  # both arms are served
    assert check_candidates(good, DT, settings, plan)["checks"][-1] == "arms_and_versions"

    treated = next(u for u in users if arm("exp-1", u, 0.5) == "treatment")
    controlled = next(u for u in users if arm("exp-1", u, 0.5) == "control")
    bad = good.copy()
    swap = bad["user_id"] == treated
    bad.loc[swap, ["arm", "model_version"]] = ["control", "4"]  # the wrong arm (with that arm's version)
    first = (bad["user_id"] == controlled) & (bad["rank"] == 1)
    bad.loc[first, "arm"] = "treatment"  # one user with rows of both arms
    assert arm("exp-1", users[-1], 0.5) == "treatment"
    bad.loc[(bad["user_id"] == users[-1]) & (bad["rank"] == 2), "model_version"] = "5"  # a version of no arm
    with pytest.raises(GateFailed) as failed:
        check_candidates(bad, DT, settings, plan)
    assert failed.value.summary["failed"] == [
        f"1 users have rows of more than one arm, e.g. ['{controlled}']; a user is in one arm "
        "(attnrec.experiments.arm)",
        "1 users are served an arm other than attnrec.experiments.arm('exp-1', user_id, 0.5), e.g. (user_id, arm) "
        f"[('{treated}', 'control')]; the assignment is a pure function of experiment and user",
        f"2 rows carry a model_version other than their arm's in the manifest {plan['model_versions']}, e.g. "
        "(arm, model_version) [('treatment', '4'), ('treatment', '5')]; "
        "each arm is served by its own version",
    ]

    # the same rows under another experiment, or with no experiment recorded: wrong arms and experiment ids
    with pytest.raises(GateFailed, match="rows carry experiment_id other than the manifest's ''"):
        check_candidates(good, DT, settings, NO_EXPERIMENT)
    none = _served(users, "", 0.0, {"control": "4"})
    assert set(none["arm"]) == {"control"} and check_candidates(none, DT, settings, NO_EXPERIMENT)
    with pytest.raises(GateFailed, match="the manifest's plan is inconsistent: experiment_id '', treatment_share 0.5"):
        check_candidates(none, DT, settings, {**plan, "experiment_id": ""})
    # without a manifest given, the staged partition's is read; none there is a failure naming the fix
    with pytest.raises(GateFailed, match=r"no .*/_staging/candidates/dt=2026-01-31/_manifest.json; .* Re-run"):
        check_candidates(good, DT, settings)
    staged = lake.staging(settings.data_root, lake.CANDIDATES, DT)
    lake.write_json(lake.join(staged, lake.CANDIDATES_MANIFEST), plan)
    assert check_candidates(good, DT, settings)["rows"] == len(good)


# ------------------------------------------------------------------------------------ look-back gate (features)


def lookback_manifest(dt: str, read: list[str], items_from: str | None = None, first_dt: str = "2026-01-01") -> dict:
    """featurize's ``_manifest.json`` for ``dt``: the clean days it read and the vocabulary day it carried over."""
    return {
        "dt": dt,
        "first_dt": first_dt,
        "lookback_days": 30,
        "clean_days": [{"dt": d, "path": f"/lake/clean/events/dt={d}", "raw_lines": 10, "clean": 10} for d in read],
        "items_vocabulary_from": items_from and {"dt": items_from, "path": f"/lake/features/items/dt={items_from}"},
    }


def test_lookback_passes_when_every_raw_day_was_read():
    raw = ["2025-12-31", "2026-01-29", "2026-01-30", DT, "2026-02-01"]  # outside the window or D itself: not asked
    assert check_lookback(lookback_manifest(DT, ["2026-01-29", "2026-01-30", DT], "2026-01-30"), raw) is None


def test_lookback_names_the_day_featurize_did_not_read_and_the_fix():
    manifest = lookback_manifest(DT, ["2026-01-29", DT], items_from="2026-01-29")
    with pytest.raises(GateFailed) as failed:
        check_lookback(manifest, ["2026-01-29", "2026-01-30", DT])
    assert str(failed.value) == (
        f"look-back FAILED for features dt={DT}: dt=2026-01-30 has raw events but no published clean/events "
        "partition was read. Run behavior_etl for 2026-01-30 first (and each later day with raw events, oldest "
        f"first), then re-run behavior_etl for {DT}"
    )


def test_lookback_fails_when_the_vocabulary_skips_a_day_whose_features_are_missing():
    manifest = lookback_manifest(DT, ["2026-01-29", "2026-01-30", DT], items_from="2026-01-29")
    with pytest.raises(
        GateFailed,
        match=r"dt=2026-01-30 has raw events but its features were not published .*"
        r"carried over from 2026-01-29\)\. Run behavior_etl for 2026-01-30 first",
    ):
        check_lookback(manifest, ["2026-01-29", "2026-01-30", DT])


def test_validate_job_requires_the_lookback_manifest(tmp_path):
    from jobs.validate import check_inputs

    root = tmp_path / "lake"
    sequences = _write_staged(root, lake.FEATURE_SEQUENCES, "user_sequences", CASES["user_sequences"][1])
    _write_staged(root, lake.FEATURE_ITEMS, "item_table", CASES["item_table"][1])
    with pytest.raises(FileNotFoundError) as missing:
        check_inputs("features", DT, str(root))
    assert str(missing.value) == (
        f"no look-back manifest for features dt={DT}: looked for {sequences}/_manifest.json; re-run featurize for {DT}"
    )
