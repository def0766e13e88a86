"""The MLflow tier of the cluster: ``mlflow server`` on a PostgreSQL backend store with proxied artifacts
(as in docker-compose.yml), and the project's training, registration, champion alias and loading all
going through that server over HTTP."""

from __future__ import annotations

import os

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
    """(tracking URL, artifacts dir, backend URL, (user, password)) of a running server with basic-auth, as in
    docker-compose.yml: users and permissions in their own PostgreSQL database, the admin from the environment
    (no default password). Stopped afterwards."""
    import secrets

    tmp_path = tmp_path_factory.mktemp("mlflow")
    backend = postgres.create_db("mlflow")
    auth_db = postgres.create_db("mlflow_auth")
    artifacts = tmp_path / "mlartifacts"
    port = free_port()
    log = tmp_path / "mlflow.log"
    auth_ini = tmp_path / "basic_auth.ini"
    auth_ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {auth_db}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"  # PBKDF2 once a minute per credential, not on every request
    )
    admin = ("attnrec-admin", secrets.token_urlsafe(16))
    env = {
        **os.environ,
        "MLFLOW_SERVER_ALLOWED_HOSTS": f"mlflow:{port},localhost:{port},127.0.0.1:{port}",
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    proc = start(
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            backend,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--serve-artifacts",
            "--artifacts-destination",
            str(artifacts),
        ],
        log,
        env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 150, proc, log)
        yield f"http://127.0.0.1:{port}", artifacts, backend, admin
    finally:
        stop(proc)


def _status(url: str, host: str | None = None, auth: tuple[str, str] | None = None) -> int:
    import base64
    import urllib.error
    import urllib.request

    headers = {"Host": host} if host else {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_train_register_promote_and_load_through_the_server(mlflow_server, postgres, tmp_path, monkeypatch):
    import torch

    from attnrec.settings import get_settings
    from models import registry, train
    from tests.test_models_pipeline import write_features

    url, artifacts, _, admin = mlflow_server
    monkeypatch.setenv("ATTNREC_DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    # the standard MLflow client credentials, as the compose services get them from .env
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
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
        "challenger|1",
        "champion|1",
    ]

    rec, version = registry.load_champion(settings)
    assert version == "1"
    assert rec.vocab.n_items == 30
    tags = client.get_model_version("attention-recommender", "1").tags
    assert tags["promotion_decision"] == "forced" and tags["feature_dt"] == DT


def test_server_requires_credentials_and_refuses_unlisted_host_headers(mlflow_server):
    """Basic-auth: no credentials or a wrong password is 401, the admin from the environment gets in. The
    DNS-rebinding guard the compose file configures with MLFLOW_SERVER_ALLOWED_HOSTS: the service name is
    accepted once listed, any other Host header is refused."""
    url, _, _, admin = mlflow_server
    port = url.rsplit(":", 1)[1]

    assert _status(url) == 401
    assert _status(url, auth=(admin[0], "password1234")) == 401
    assert _status(url, auth=admin) == 200
    assert _status(url, host=f"mlflow:{port}", auth=admin) == 200
    assert _status(url, host=f"evil.example:{port}", auth=admin) in (400, 403)


def test_a_registry_error_is_never_read_as_no_champion(mlflow_server, monkeypatch):
    """The gate's read of ``champion`` answered with an error (a wrong password: 401) fails with the server's
    message; it never reads as "no champion" (which would promote the challenger), and nothing is written."""
    from attnrec.settings import get_settings
    from models import registry

    url, _, _, admin = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    settings = get_settings()
    before = registry.alias_version(settings, "champion")  # "1" after the test above, None when run alone
    versions = [(v.version, dict(v.tags)) for v in registry.client(settings).search_model_versions()]

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(RuntimeError) as err:
        registry.alias_version(settings, "champion")
    message = str(err.value)
    assert message.startswith(
        f"MLflow registry at {url} failed to read alias 'champion' of model 'attention-recommender': "
    )
    assert "401" in message and "nothing was promoted" in message and "MLFLOW_TRACKING_PASSWORD" in message
    with pytest.raises(RuntimeError, match="failed to read alias 'champion'.*401"):
        registry.gate(settings, "1", 1.0, [], DT)
    with pytest.raises(RuntimeError, match="failed to read alias 'champion'.*401"):
        registry.load_champion(settings)  # not "run the train_recommender DAG first"
    with pytest.raises(RuntimeError, match="failed to read version '1'.*401"):
        registry.promote(settings, "1")  # not "has no version '1'"

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    assert registry.alias_version(settings, "champion") == before
    assert [(v.version, dict(v.tags)) for v in registry.client(settings).search_model_versions()] == versions
