#!/usr/bin/env bash
# Energy gate as a CI step: promote a freshly trained model version only if the
# run that produced it stayed within the registered model's energy/carbon budget.
#
#   MLFLOW_TRACKING_URI=http://mlflow.internal:5000 examples/ci_gate.sh my-model 7 champion
#
# `mlflow-green gate` exits 0 within budget, 1 over budget or energy unknown
# (fail closed), 2 on errors (unknown model/version, server unreachable).
# This client-side gate is advisory; a server started with
# `--registry-store-uri green+<uri>` enforces the same rule for every client.
set -euo pipefail

MODEL="${1:?usage: ci_gate.sh MODEL VERSION [ALIAS]}"
VERSION="${2:?usage: ci_gate.sh MODEL VERSION [ALIAS]}"
ALIAS="${3:-champion}"
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI to the tracking server}"

# Optional: (re)state the budget from the pipeline's configuration, e.g.
#   mlflow-green budget set "$MODEL" --max-kwh 2.5 --max-co2eq-kg 0.5

# Capture the exit code ourselves: under `set -e` a failing command would end the
# script before we could tell "over budget" (1) from "could not check" (2).
status=0
mlflow-green gate "$MODEL" "$VERSION" || status=$?

case "$status" in
  0)
    # Within budget: point the alias at it (the server re-checks if it is gated).
    mlflow-green promote "$MODEL" "$VERSION" --alias "$ALIAS"
    ;;
  1)
    echo "::error::$MODEL version $VERSION is over its energy budget (or its energy is unknown); not promoted" >&2
    exit 1
    ;;
  *)
    echo "::error::energy gate could not run (exit $status); not promoted" >&2
    exit "$status"
    ;;
esac
