#!/usr/bin/env bash
# The main job: simulated elders → Mosquitto → ingest → InfluxDB, with a summary at the end.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec .venv/bin/homecare demo "$@"
