#!/usr/bin/env bash
# Separate databases and users for Airflow and MLflow metadata.
# The passwords never become SQL or shell text: psql reads each one from the environment into a variable
# (\getenv, psql 15+; the postgres:16 image has 16) and :'name' sends it as a quoted literal, so a quote,
# backslash or semicolon in a password is just a character of it, and no password appears on a command line.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in .env}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env}"
psql -v ON_ERROR_STOP=1 --username postgres <<'SQL'
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
CREATE USER airflow WITH PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE USER mlflow WITH PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
SQL
