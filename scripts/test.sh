#!/usr/bin/env bash
# The whole test suite, against real Mosquitto and influxd that the tests start themselves.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
.venv/bin/mypy
.venv/bin/pytest -q -p no:cacheprovider --doctest-modules homecare cli ingest detectors escalation dashboards device_sim certify evaluation devices privacy bench harness tests "$@"
