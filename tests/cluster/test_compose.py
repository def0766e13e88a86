"""Static checks of the cluster stack definition (docker-compose.yml, Dockerfile, .env.example).

There is no Docker engine on the CI machine, so these read the files as data and assert the properties the
README promises: every service of the topology, health checks, loopback-only ports, named volumes, no default
passwords, a GPU reservation for the trainer, the trainer as the Edge worker of the training queue, and an image
built from requirements.lock. (test_airflow_cluster.py runs the Airflow and Edge worker configuration for real.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = (
    "postgres",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "mlflow",
    "spark-master",
    "spark-worker",
    "trainer",
)
#: Services that run once and exit (no health check expected): the DB migration.
ONE_SHOT = {"airflow-init"}
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
EDGE_EXECUTOR = "airflow.providers.edge3.executors.EdgeExecutor"
REQUIRED_VAR = re.compile(r"\$\{(\w+):\?[^}]+\}")
ANY_VAR = re.compile(r"(?<!\$)\$\{(\w+)(?::?[-?+][^}]*)?\}")

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def compose(text) -> dict:
    return yaml.safe_load(text)


def test_declares_every_service_of_the_topology(compose):
    services = compose["services"]
    assert sorted(set(SERVICES) - set(services)) == []
    assert services["spark-worker"]["deploy"]["replicas"] == 2


def test_trainer_reserves_one_nvidia_gpu(compose):
    devices = compose["services"]["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_every_long_running_service_has_a_healthcheck(compose):
    missing = [
        name
        for name, svc in compose["services"].items()
        if name not in ONE_SHOT and not svc.get("healthcheck", {}).get("test")
    ]
    assert missing == []


def test_dependents_wait_for_healthy_or_completed_dependencies(compose):
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on undeclared {dep}"
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond["condition"] == expected, f"{name} -> {dep}"


def test_every_published_port_is_bound_to_loopback(compose):
    published = []
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert isinstance(port, str), f"{name}: use the 'IP:host:container' string form, got {port!r}"
            published.append(port)
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert sorted(published) == [
        "127.0.0.1:5000:5000",
        "127.0.0.1:5432:5432",
        "127.0.0.1:8080:8080",
        "127.0.0.1:8081:8081",
    ]


def test_state_lives_in_named_volumes(compose):
    declared = set(compose["volumes"])
    assert declared == {"postgres", "lake", "mlartifacts", "airflow-auth", "checkpoints"}
    used = set()
    for svc in compose["services"].values():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if not source.startswith(("./", "/")):
                used.add(source)
    assert used == declared
    assert compose["services"]["postgres"]["volumes"][0] == "postgres:/var/lib/postgresql/data"


def test_no_default_passwords_every_secret_comes_from_env(text, compose):
    """Every ${VAR} is required (`:?`), never defaulted, and no literal secret sits in the file."""
    for match in ANY_VAR.finditer(text):
        assert REQUIRED_VAR.fullmatch(match.group(0)), f"{match.group(0)} must be ${{VAR:?message}}"
    required = set(REQUIRED_VAR.findall(text))
    assert {"POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "AIRFLOW_JWT_SECRET"} <= required

    def walk(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                # a *_FILE setting is the path of a secret file, not a secret
                if (
                    re.search(r"PASSWORD|SECRET", str(key))
                    and not str(key).endswith("_FILE")
                    and isinstance(value, str)
                ):
                    assert REQUIRED_VAR.fullmatch(value), f"{path}{key} is a literal: {value!r}"
                walk(value, f"{path}{key}.")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(compose["services"])
    # connection strings carry the password only by reference
    for url in re.findall(r"postgresql\+psycopg2://[^\s\"']+", text):
        assert re.match(r"postgresql\+psycopg2://\w+:\$\$?\{\w+", url), url


def test_env_example_lists_every_required_variable_with_no_value_for_secrets(text):
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    assert sorted(set(REQUIRED_VAR.findall(text)) - set(env)) == []
    filled = [k for k, v in env.items() if re.search(r"PASSWORD|SECRET", k) and v]
    assert filled == []


def test_dockerfile_installs_exactly_the_lock_file_hash_checked():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements\.lock\b", dockerfile, re.M)
    installs = sorted(i.strip() for i in re.findall(r"pip install ([^\n\\&]+)", dockerfile))
    # the lock and torch's own entry of it, hash-checked; torch's CUDA libraries by torch's pins (the one unhashed
    # step, see the Dockerfile); the project's own code without dependencies
    assert installs == sorted(
        [
            "--require-hashes --no-deps -r /tmp/torch.lock",
            "\"$(head -1 /tmp/torch.lock | cut -d' ' -f1)\"",
            "--require-hashes -r requirements.lock",
            "--no-deps --no-build-isolation -e .",
        ]
    )
    assert "pip check" in dockerfile
    lock = (ROOT / "requirements.lock").read_text()
    pins = re.findall(r"^[A-Za-z0-9][^\s=]*==\S+ \\\n(?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+", lock, re.M)
    assert len(pins) == len(re.findall(r"^[^#\s]\S*==", lock, re.M)) > 10  # every pin carries its hashes
    assert "USER attnrec" in dockerfile


def test_image_user_owns_every_volume_mount_point(compose):
    """A new named volume takes the owner of its mount point in the image; a path the image lacks is created as
    root, and the services run as the unprivileged attnrec user, so each mount point must be made and chowned."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    mkdir = re.search(r"mkdir -p ([^&\\\n]+)", dockerfile).group(1).split()
    chown = re.search(r"chown -R attnrec ([^&\\\n]+)", dockerfile).group(1).split()
    for name, svc in compose["services"].items():
        if svc.get("image") != "attnrec:local":
            continue
        for vol in svc.get("volumes", []):
            source, target = vol.split(":")[:2]
            if not source.startswith(("./", "/")):
                assert target in mkdir and target in chown, f"{name}: {target} is not created and chowned in Dockerfile"


def test_spark_authenticates_with_the_secret_from_env(compose):
    """Every service of the image (Spark master, workers, and the Airflow containers that spark-submit) gets
    SPARK_AUTH_SECRET from .env, and the image's entry point turns it into spark.authenticate in the
    spark-defaults.conf of SPARK_CONF_DIR (tests/cluster/test_entrypoint.py, test_spark_standalone.py run it)."""
    image_services = [n for n, svc in compose["services"].items() if svc.get("image") == "attnrec:local"]
    assert {"spark-master", "spark-worker", "airflow-scheduler", "trainer"} <= set(image_services)
    for name in image_services:
        env = compose["services"][name]["environment"]
        assert env["SPARK_AUTH_SECRET"] == "${SPARK_AUTH_SECRET:?set SPARK_AUTH_SECRET in .env}", name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY docker/entrypoint.sh /usr/local/bin/attnrec-entrypoint" in dockerfile
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/attnrec-entrypoint"]' in dockerfile
    conf_dir = re.search(r"SPARK_CONF_DIR=(\S+)", dockerfile).group(1)
    mkdir = re.search(r"mkdir -p ([^&\\\n]+)", dockerfile).group(1).split()
    chown = re.search(r"chown -R attnrec ([^&\\\n]+)", dockerfile).group(1).split()
    assert conf_dir in mkdir and conf_dir in chown  # the unprivileged user writes the file at start
    assert os.access(ROOT / "docker" / "entrypoint.sh", os.X_OK)
    # the Spark services are started by the command alone: the entry point stays in place
    for name in ("spark-master", "spark-worker"):
        assert "entrypoint" not in compose["services"][name], name


def test_postgres_init_creates_the_databases_the_services_use(text):
    init = (ROOT / "docker" / "postgres-init.sh").read_text()
    for db in ("airflow", "mlflow"):
        assert f"CREATE DATABASE {db} OWNER {db};" in init
        assert f"@postgres:5432/{db}" in text


def test_mlflow_accepts_its_service_name_as_host(compose):
    """MLflow 3's Host-header guard only admits localhost and private IPs by default; clients in the other
    containers use http://mlflow:5000, so the service name must be allowed (and the shared env kept)."""
    env = compose["services"]["mlflow"]["environment"]
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")


def test_model_artifacts_are_proxied_through_the_mlflow_server(compose):
    """A file:// artifact root would leave the model inside the trainer container; every service logs and
    loads through the server instead, which keeps the files in the mlartifacts volume
    (tests/cluster/test_mlflow_postgres.py runs this configuration)."""
    for name, svc in compose["services"].items():
        if name != "postgres":
            assert svc["environment"]["ATTNREC_MLFLOW_ARTIFACTS"] == "mlflow-artifacts:/attnrec", name
    command = " ".join(compose["services"]["mlflow"]["command"])
    assert "--serve-artifacts" in command and "--artifacts-destination /mlartifacts" in command
    assert "mlartifacts:/mlartifacts" in compose["services"]["mlflow"]["volumes"]


def test_mlflow_runs_basic_auth_and_every_client_signs_in(compose, text):
    """The server starts the basic-auth app with its admin from .env and users in their own database; every
    attnrec service carries the client credentials (tests/cluster/test_mlflow_postgres.py runs this setup)."""
    mlflow = compose["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--app-name basic-auth" in command and "@postgres:5432/mlflow_auth" in command
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/tmp/basic_auth.ini"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_TRACKING_PASSWORD:?")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_SECRET_KEY:?")
    for name, svc in compose["services"].items():
        if svc.get("image") == "attnrec:local":
            assert svc["environment"]["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_TRACKING_PASSWORD:?"), name
    assert "CREATE DATABASE mlflow_auth OWNER mlflow;" in (ROOT / "docker" / "postgres-init.sh").read_text()


def test_airflow_logs_in_with_the_admin_from_env_and_no_generated_password(compose):
    """Simple auth manager users from .env; airflow-init writes the password file before any server starts."""
    init = compose["services"]["airflow-init"]
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    command = " ".join(init["command"])
    assert "/opt/airflow-auth/passwords.json" in command and command.rstrip().endswith("airflow db migrate")
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        env = compose["services"][name]["environment"]
        assert (
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
            == "${AIRFLOW_ADMIN_USER:?set AIRFLOW_ADMIN_USER in .env}:admin"
        )
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == "/opt/airflow-auth/passwords.json"
        assert "airflow-auth:/opt/airflow-auth" in compose["services"][name]["volumes"]


def test_trainer_is_the_edge_worker_of_the_training_queue(compose):
    """Every Airflow component runs LocalExecutor (the default) and the EdgeExecutor; the api-server serves the
    Edge worker API; the trainer runs ``airflow edge worker`` on the queue the train task is routed to."""
    services = compose["services"]
    for name in (*AIRFLOW_SERVICES, "trainer"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == f"LocalExecutor,{EDGE_EXECUTOR}", name
        assert env["AIRFLOW__EDGE__API_URL"] == "http://airflow-apiserver:8080/edge_worker/v1/rpcapi", name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?"), name  # signs worker calls
    assert services["airflow-apiserver"]["environment"]["AIRFLOW__EDGE__API_ENABLED"] == "True"
    trainer = services["trainer"]
    queue = trainer["environment"]["ATTNREC_TRAIN_QUEUE"]
    assert trainer["command"] == ["airflow", "edge", "worker", "--queues", queue, "--concurrency", "1"]
    assert trainer["healthcheck"]["test"] == ["CMD", "airflow", "edge", "status"]
    assert trainer["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}
    assert trainer["profiles"] == ["gpu"] and trainer["image"] == "attnrec:local"
    assert trainer["environment"]["ATTNREC_CHECKPOINT_DIR"] == "/checkpoints"
    assert "checkpoints:/checkpoints" in trainer["volumes"] and "lake:/data" in trainer["volumes"]


def test_training_goes_to_the_trainer_only_when_env_says_so(compose):
    """The compose file never routes the train task itself: without ATTNREC_TRAIN_EXECUTOR in .env it runs on the
    default LocalExecutor (a host without a GPU); .env.example shows the two lines a GPU host uncomments."""
    for name, svc in compose["services"].items():
        assert "ATTNREC_TRAIN_EXECUTOR" not in (svc.get("environment") or {}), name
    lines = (ROOT / ".env.example").read_text().splitlines()
    assert "#COMPOSE_PROFILES=gpu" in lines and "#ATTNREC_TRAIN_EXECUTOR=EdgeExecutor" in lines


def test_the_cluster_test_runs_the_same_edge_configuration(tmp_path, compose):
    """tests/cluster/airflow_stack.py configures its processes as compose does (only hosts and ports differ)."""
    from .airflow_stack import AirflowStack

    env = AirflowStack(tmp_path, "postgresql+psycopg2://unused", edge_queue="gpu").env
    shared = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == shared["AIRFLOW__CORE__EXECUTOR"]
    assert env["AIRFLOW__EDGE__API_ENABLED"] == shared["AIRFLOW__EDGE__API_ENABLED"]
    assert (
        env["AIRFLOW__EDGE__API_URL"].split(":", 2)[2].split("/", 1)[1]
        == shared["AIRFLOW__EDGE__API_URL"].split(":", 2)[2].split("/", 1)[1]
    )  # the path after host:port
    assert (env["ATTNREC_TRAIN_EXECUTOR"], env["ATTNREC_TRAIN_QUEUE"]) == (
        "EdgeExecutor",
        shared["ATTNREC_TRAIN_QUEUE"],
    )
