#!/usr/bin/env bash
# make demo-loop: the closed loop on synthetic users (datatools/loop.py), in a fresh .loop/ of its own: its Airflow
# home, lake and MLflow store, so it never touches the demo's data/, .airflow/ or .mlflow/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH="$ROOT/.venv/bin:$PATH"
WORKDIR="${LOOP_WORKDIR:-$ROOT/.loop}"
rm -rf "$WORKDIR"
start=$(date +%s)
attnrec loop --workdir "$WORKDIR" --loop-days "${LOOP_DAYS:-3}"
echo "make demo-loop: $(( $(date +%s) - start )) s; logs of every DAG run in $WORKDIR/logs/"
