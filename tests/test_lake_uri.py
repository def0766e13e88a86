"""attnrec.lake.filesystem_for: the lake URIs README names map to a pyarrow filesystem (no server is contacted)."""

from __future__ import annotations

import pytest
from pyarrow import fs

from attnrec import lake


def test_local_paths_and_file_uris():
    filesystem, path = lake.filesystem_for("/lake/clean/events")
    assert isinstance(filesystem, fs.LocalFileSystem) and path == "/lake/clean/events"
    filesystem, path = lake.filesystem_for("file:///lake/clean/events")
    assert isinstance(filesystem, fs.LocalFileSystem) and path == "/lake/clean/events"


def test_s3a_is_pyarrows_s3_filesystem_configured_from_the_aws_environment(monkeypatch):
    """Spark names S3 ``s3a://`` (hadoop-aws); pyarrow knows only ``s3://`` and would refuse the lake root."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    partition = lake.partition("s3a://my-bucket/attnrec", lake.CLEAN_EVENTS, "2026-01-31")
    filesystem, path = lake.filesystem_for(partition)
    assert isinstance(filesystem, fs.S3FileSystem)
    assert path == "my-bucket/attnrec/clean/events/dt=2026-01-31"
    assert filesystem.region == "eu-west-1"
    assert lake.filesystem_for("s3a://my-bucket/")[1] == "my-bucket"


def test_s3a_without_a_bucket_names_the_fix():
    with pytest.raises(ValueError, match=r"names no bucket; write the lake root as s3a://<bucket>/<prefix>"):
        lake.filesystem_for("s3a:///attnrec")


def test_an_unknown_scheme_is_refused_by_pyarrow():
    with pytest.raises(Exception, match="Unrecognized filesystem type in URI"):
        lake.filesystem_for("gopher://host/lake")
