#!/usr/bin/env bash
# The main job: simulated elders → NATS Server (MQTT listener, JetStream) → ingest → InfluxDB → detect → escalate, with a summary at the end.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec .venv/bin/homecare demo "$@"
