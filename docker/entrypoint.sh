#!/usr/bin/env bash
# Entry point of the attnrec image: turns on Spark's shared-secret authentication, then runs the command.
#
# Spark standalone has no per-application secret: the master, every worker and every driver (spark-submit from the
# Airflow containers) must hold the same spark.authenticate.secret, and a peer without it is refused. Every Spark
# process reads $SPARK_CONF_DIR/spark-defaults.conf, so the secret goes there, from SPARK_AUTH_SECRET (.env), in a
# file only this user can read, never on a command line. Workers hand it to their executors themselves.
set -euo pipefail
if [[ -n "${SPARK_AUTH_SECRET:-}" ]]; then
  # spark-defaults.conf is a Java properties file: a backslash, a newline or a leading blank would change the value
  if [[ ! "$SPARK_AUTH_SECRET" =~ ^[A-Za-z0-9_.~+/=-]{16,}$ ]]; then
    echo "SPARK_AUTH_SECRET (${#SPARK_AUTH_SECRET} characters) must be 16 or more of A-Z a-z 0-9 _ . ~ + / = -;" \
      "set one in .env made with: python -c 'import secrets; print(secrets.token_urlsafe(32))'" >&2
    exit 2
  fi
  : "${SPARK_CONF_DIR:?SPARK_CONF_DIR must name the directory for spark-defaults.conf (the image sets it)}"
  mkdir -p "$SPARK_CONF_DIR"
  (
    umask 077
    printf 'spark.authenticate true\nspark.authenticate.secret %s\n' "$SPARK_AUTH_SECRET" \
      >"$SPARK_CONF_DIR/spark-defaults.conf"
  )
fi
exec "$@"
