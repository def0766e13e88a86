"""attnrec.lake: paths, staged publish, partition listing; attnrec.contracts.check_dt."""

from __future__ import annotations

import pytest

from attnrec import lake
from attnrec.contracts import check_dt

DT = "2026-01-31"


def stage(root: str, dataset: str, dt: str, content: str, complete: bool = True) -> None:
    from pathlib import Path

    path = Path(lake.staging(root, dataset, dt))
    path.mkdir(parents=True, exist_ok=True)
    (path / "part-0.parquet").write_text(content)
    if complete:
        (path / lake.SUCCESS_MARKER).write_text("")


def test_paths():
    assert lake.partition("/lake", lake.CLEAN_EVENTS, DT) == "/lake/clean/events/dt=2026-01-31"
    assert lake.staging("s3a://b/x/", lake.CANDIDATES, DT) == "s3a://b/x/_staging/candidates/dt=2026-01-31"


def test_publish_replaces_the_partition_whole(tmp_path):
    root = str(tmp_path)
    stage(root, lake.CANDIDATES, DT, "v1")
    lake.publish(root, lake.CANDIDATES, DT)
    stage(root, lake.CANDIDATES, DT, "v2")
    published = lake.publish(root, lake.CANDIDATES, DT)
    assert (tmp_path / "candidates" / f"dt={DT}" / "part-0.parquet").read_text() == "v2"
    assert published == lake.partition(root, lake.CANDIDATES, DT)
    assert sorted(p.name for p in (tmp_path / "candidates").iterdir()) == [f"dt={DT}"]  # no leftovers
    assert not (tmp_path / "_staging" / "candidates" / f"dt={DT}").exists()
    assert lake.list_partitions(root, lake.CANDIDATES) == [DT]


def test_publish_refuses_an_incomplete_partition_and_keeps_the_old_one(tmp_path):
    root = str(tmp_path)
    stage(root, lake.CANDIDATES, DT, "good")
    lake.publish(root, lake.CANDIDATES, DT)
    stage(root, lake.CANDIDATES, DT, "half", complete=False)
    with pytest.raises(FileNotFoundError, match="no _SUCCESS"):
        lake.publish(root, lake.CANDIDATES, DT)
    assert (tmp_path / "candidates" / f"dt={DT}" / "part-0.parquet").read_text() == "good"


def test_written_dir_replaces_whole_on_success_and_leaves_the_old_copy_on_an_error(tmp_path):
    dst = lake.staging(str(tmp_path), lake.CANDIDATES, DT)
    with lake.written_dir(dst) as (filesystem, tmp, _):
        with filesystem.open_output_stream(f"{tmp}/part-0.parquet") as out:
            out.write(b"first")
    assert lake.is_complete(dst)
    with pytest.raises(RuntimeError, match="killed"):
        with lake.written_dir(dst) as (filesystem, tmp, _):
            with filesystem.open_output_stream(f"{tmp}/part-0.parquet") as out:
                out.write(b"half")
            raise RuntimeError("killed mid-write")
    parent = tmp_path / "_staging" / "candidates"
    assert (parent / f"dt={DT}" / "part-0.parquet").read_text() == "first"
    assert sorted(p.name for p in parent.iterdir()) == [f"dt={DT}"]  # the half-written copy is gone


def test_list_partitions_skips_incomplete(tmp_path):
    (tmp_path / "clean" / "events" / "dt=2026-01-01").mkdir(parents=True)
    done = tmp_path / "clean" / "events" / "dt=2026-01-02"
    done.mkdir(parents=True)
    (done / lake.SUCCESS_MARKER).write_text("")
    assert lake.list_partitions(str(tmp_path), lake.CLEAN_EVENTS) == ["2026-01-02"]


def test_require_raw_events(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/raw/events/dt={DT}"):
        lake.require_raw_events(str(tmp_path), DT)
    day = tmp_path / "raw" / "events" / f"dt={DT}"
    day.mkdir(parents=True)
    (day / "_SUCCESS").write_text("")  # markers are not data
    with pytest.raises(FileNotFoundError, match="found no files"):
        lake.require_raw_events(str(tmp_path), DT)
    (day / "a.jsonl.gz").write_bytes(b"")
    assert lake.require_raw_events(str(tmp_path), DT) == str(day)


@pytest.mark.parametrize("bad", ["2026-1-31", "2026-02-30", "yesterday", ""])
def test_check_dt_names_the_bad_value(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        check_dt(bad)


def test_remove_dir_removes_a_tree_and_ignores_a_missing_one(tmp_path):
    (tmp_path / "work" / "a").mkdir(parents=True)
    (tmp_path / "work" / "a" / "f.parquet").write_bytes(b"x")
    lake.remove_dir(str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()
    lake.remove_dir(str(tmp_path / "work"))  # nothing there: no error


def run_publish_task(task_id: str, dt: str) -> list[str]:
    """Call behavior_etl's publish task ``task_id`` as Airflow does (its body, with the run's ``ds``)."""
    from dags.behavior_etl import behavior_etl

    result = behavior_etl().get_task(task_id).python_callable(ds=dt)
    if task_id == "publish_features":  # a generator: it yields the Asset event's metadata
        return [p for metadata in result for p in metadata.extra["paths"]]
    return result


FEATURE_TASK_OUTPUTS = (lake.FEATURE_ITEMS, lake.FEATURE_SEQUENCES, lake.QUARANTINE_ITEMS)


@pytest.mark.parametrize(
    "task_id, datasets, blocked",
    [
        ("publish_clean", lake.CLEAN_OUTPUTS, lake.CLEAN_EVENTS),
        ("publish_features", FEATURE_TASK_OUTPUTS, lake.FEATURE_SEQUENCES),
        ("publish_features", FEATURE_TASK_OUTPUTS, lake.QUARANTINE_ITEMS),
    ],
)
def test_publish_task_failing_between_its_moves_succeeds_on_retry(tmp_path, monkeypatch, task_id, datasets, blocked):
    root = str(tmp_path)
    monkeypatch.setenv("ATTNREC_DATA_ROOT", root)
    for dataset in datasets:
        stage(root, dataset, DT, f"staged {dataset}")
    # a real filesystem failure on the move of `blocked`: a file where its dataset directory must be
    block = tmp_path / blocked
    block.parent.mkdir(parents=True, exist_ok=True)
    block.write_text("in the way")
    with pytest.raises(OSError):
        run_publish_task(task_id, DT)
    moved_first = datasets[: datasets.index(blocked)]
    assert all(lake.is_complete(lake.partition(root, d, DT)) for d in moved_first)  # the failure came after a move

    block.unlink()
    paths = run_publish_task(task_id, DT)  # the retry finishes the rest

    assert sorted(paths) == sorted(lake.partition(root, d, DT) for d in datasets)
    for dataset in datasets:
        assert (tmp_path / dataset / f"dt={DT}" / "part-0.parquet").read_text() == f"staged {dataset}"
        assert lake.list_partitions(root, dataset) == [DT]
        assert not lake.exists(lake.staging(root, dataset, DT))
    assert run_publish_task(task_id, DT) == paths  # a retry after a publish that finished is a no-op


def test_publish_retry_refuses_a_partition_this_publish_did_not_stage(tmp_path):
    root = str(tmp_path)
    for dataset in lake.CLEAN_OUTPUTS:
        stage(root, dataset, DT, "first run")
    lake.publish_all(root, lake.CLEAN_OUTPUTS, DT)
    stage(root, lake.CLEAN_EVENTS, DT, "re-run")  # the re-run staged clean events, and no quarantine
    with pytest.raises(
        FileNotFoundError, match=f"cannot finish publishing {', '.join(lake.CLEAN_OUTPUTS)} .*re-run the"
    ):
        lake.publish_all(root, lake.CLEAN_OUTPUTS, DT)
    assert (tmp_path / lake.CLEAN_EVENTS / f"dt={DT}" / "part-0.parquet").read_text() == "first run"  # nothing moved
    assert lake.is_complete(lake.staging(root, lake.CLEAN_EVENTS, DT))


def test_publish_cleans_up_a_copy_an_interrupted_replace_left_aside(tmp_path):
    root = str(tmp_path)
    stage(root, lake.CANDIDATES, DT, "v1")
    published = tmp_path / "candidates" / f"dt={DT}"
    lake.publish(root, lake.CANDIDATES, DT)
    published.rename(published.with_name(f"dt={DT}.replaced-0badf00d"))  # killed between replace_dir's renames
    assert lake.list_partitions(root, lake.CANDIDATES) == []
    stage(root, lake.CANDIDATES, DT, "v2")
    lake.publish(root, lake.CANDIDATES, DT)
    assert sorted(p.name for p in (tmp_path / "candidates").iterdir()) == [f"dt={DT}"]
    assert (published / "part-0.parquet").read_text() == "v2"
