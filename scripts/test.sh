#!/usr/bin/env bash
# The whole test suite, against real Mosquitto and influxd that the tests start themselves.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
.venv/bin/ruff check .
.venv/bin/pytest -q -p no:cacheprovider --doctest-modules homecare ingest detectors device_sim dashboards tests "$@"
