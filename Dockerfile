# One image for Airflow, Spark (master, workers, driver) and the trainer, so versions cannot drift.
# Installs exactly requirements.lock, hash-checked. On a GPU host the trainer gets the device via compose device
# reservations; torch from PyPI is the CUDA build there. Its CUDA libraries (nvidia-*, triton) are the one set that
# is not hash-pinned: pip resolves them from torch's own exact pins (see docs/development.md, "Supply chain").
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless procps curl tini \
 && rm -rf /var/lib/apt/lists/*

ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    ATTNREC_HOME=/opt/attnrec \
    PATH=/opt/attnrec/.venv/bin:$PATH

WORKDIR /opt/attnrec
COPY requirements.lock pyproject.toml README.md ./
# torch itself hash-checked (PyPI's CUDA build), then its CUDA libraries by torch's own pins, then the whole lock
RUN python -m venv .venv \
 && awk '/^torch==/{p=1} p{print} p&&!/\\$/{exit}' requirements.lock > /tmp/torch.lock \
 && .venv/bin/pip install --require-hashes --no-deps -r /tmp/torch.lock \
 && .venv/bin/pip install "$(head -1 /tmp/torch.lock | cut -d' ' -f1)" \
 && .venv/bin/pip install --require-hashes -r requirements.lock \
 && .venv/bin/pip check

COPY attnrec ./attnrec
COPY jobs ./jobs
COPY models ./models
COPY expectations ./expectations
COPY datatools ./datatools
COPY dags ./dags
COPY docker/entrypoint.sh /usr/local/bin/attnrec-entrypoint
RUN .venv/bin/pip install --no-deps --no-build-isolation -e . \
 && useradd --create-home --uid 50000 attnrec \
 && mkdir -p /data /checkpoints /mlartifacts /opt/airflow /opt/airflow-auth /opt/spark-conf \
 && chown -R attnrec /data /checkpoints /mlartifacts /opt/airflow /opt/airflow-auth /opt/spark-conf /opt/attnrec

USER attnrec
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/attnrec/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    ATTNREC_DATA_ROOT=/data \
    SPARK_CONF_DIR=/opt/spark-conf
# writes $SPARK_CONF_DIR/spark-defaults.conf (spark.authenticate, the secret from SPARK_AUTH_SECRET), then the command
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/attnrec-entrypoint"]
