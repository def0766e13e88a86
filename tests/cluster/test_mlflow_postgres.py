"""The MLflow tier of the cluster: ``mlflow server`` on a PostgreSQL backend store with proxied artifacts
(as in docker-compose.yml), and the project's training, registration, champion alias and loading all
going through that server over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import VENV_BIN, free_port, start, stop, wait_http

DT = "2026-01-31"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def restore_mlflow_uris(monkeypatch):
    """models.registry.client() sets MLflow's process-wide tracking/registry URIs and their env vars; clear both
    afterwards so later tests in the run do not talk to the stopped server. ``mlflow.set_registry_uri(None)``
    leaves MLFLOW_REGISTRY_URI set, and monkeypatch only restores variables it saw, hence the explicit pops."""
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI")}
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """(tracking URL, artifacts dir, backend URL) of a running server; stopped afterwards."""
    tmp_path = tmp_path_factory.mktemp("mlflow")
    backend = postgres.create_db("mlflow")
    artifacts = tmp_path / "mlartifacts"
    port = free_port()
    log = tmp_path / "mlflow.log"
    env = {**os.environ, "MLFLOW_SERVER_ALLOWED_HOSTS": f"mlflow:{port},localhost:{port},127.0.0.1:{port}"}
    proc = start([str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
                  "--port", str(port), "--workers", "1", "--serve-artifacts",
                  "--artifacts-destination", str(artifacts)], log, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 150, proc, log)
        yield f"http://127.0.0.1:{port}", artifacts, backend
    finally:
        stop(proc)


def test_train_register_promote_and_load_through_the_server(mlflow_server, postgres, tmp_path, monkeypatch):
    import torch

    from attnrec.settings import get_settings
    from models import registry, train
    from tests.test_models_pipeline import write_features

    url, artifacts, _ = mlflow_server
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    # as in docker-compose.yml: artifacts go through the server into its volume, so every container can load them
    monkeypatch.setenv("ATTNREC_MLFLOW_ARTIFACTS", "mlflow-artifacts:/attnrec")
    monkeypatch.setenv("ATTNREC_TRAIN_EPOCHS", "2")
    monkeypatch.setenv("ATTNREC_TOP_K", "5")
    monkeypatch.setenv("ATTNREC_MAX_SEQ_LEN", "32")
    write_features(str(tmp_path / "lake"), DT)
    settings = get_settings()
    assert settings.mlflow_tracking_uri == url

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train.run(DT, settings)
    finally:
        torch.set_num_threads(threads)

    # the version is registered in PostgreSQL (read back over SQL, not only through the API)
    assert result["model_version"] == "1" and result["promoted"] is True
    rows = postgres.psql("SELECT name, version FROM model_versions ORDER BY version", db="mlflow").split()
    assert rows == ["attention-recommender|1"]
    client = registry.client(settings)
    assert [v.version for v in client.search_model_versions("name='attention-recommender'")] == ["1"]
    # the model files sit in the server's artifact store, not on the client
    assert sorted(p.name for p in artifacts.rglob("MLmodel")) == ["MLmodel"]

    # move champion through the server: to nothing, then back by a forced promotion
    client.delete_registered_model_alias("attention-recommender", "champion")
    assert registry.alias_version(settings, "champion") is None
    with pytest.raises(RuntimeError, match="no 'champion' version"):
        registry.load_champion(settings)
    registry.promote(settings, "1", reason="cluster test")
    assert registry.alias_version(settings, "champion") == "1"
    assert postgres.psql("SELECT alias, version FROM registered_model_aliases ORDER BY alias", db="mlflow").split() == [
        "challenger|1", "champion|1"]

    rec, version = registry.load_champion(settings)
    assert version == "1"
    assert rec.vocab.n_items == 30
    tags = client.get_model_version("attention-recommender", "1").tags
    assert tags["promotion_decision"] == "forced" and tags["feature_dt"] == DT


def test_server_refuses_unlisted_host_headers(mlflow_server):
    """The DNS-rebinding guard the compose file configures with MLFLOW_SERVER_ALLOWED_HOSTS: the service name
    is accepted once listed, any other Host header is refused."""
    import urllib.error
    import urllib.request

    url, _, _ = mlflow_server
    port = url.rsplit(":", 1)[1]

    def status(host: str) -> int:
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                                     headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    assert status(f"mlflow:{port}") == 200
    assert status(f"evil.example:{port}") in (400, 403)
