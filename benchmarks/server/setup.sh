#!/usr/bin/env bash
# Setup of the feature-server load test (benchmarks/server_load.py):
#   wrk from Debian packages, and Feast in a SEPARATE venv (never the project's) as the reference.
# Usage: bash benchmarks/server/setup.sh [FEAST_VENV]   (default /tmp/feast-venv)
set -euo pipefail
if ! command -v wrk >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq wrk
fi
FEAST_VENV="${1:-/tmp/feast-venv}"
if [ ! -x "$FEAST_VENV/bin/feast" ]; then
    python3 -m venv "$FEAST_VENV"
    "$FEAST_VENV/bin/pip" install --quiet feast
fi
wrk --version | head -1 || true
"$FEAST_VENV/bin/feast" version
