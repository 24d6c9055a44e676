#!/usr/bin/env bash
# The whole test suite, against real NATS Server, influxd, SMTP and HTTP servers that the tests start themselves.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
.venv/bin/mypy
# Two workers (pytest-xdist; CI has 2 cores): most tests wait on their servers. A test
# file stays on one worker (--dist loadfile: its module-wide servers start once), and each
# worker takes its servers' ports from a band of its own (tests/conftest.py).
.venv/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile --doctest-modules homecare cli ingest detectors escalation dashboards device_sim certify evaluation devices privacy bench harness broker care zigbee tests "$@"
# The tests that read the tests' clock (marked `clock` in tests/conftest.py) again, at fixed
# fake instants: a Sunday month end just before midnight UTC, a Monday just after midnight,
# a Saturday midday, a Wednesday month end in the small hours, and the Sunday hour at which
# a fresh clone once failed. A test that passes only at some hours or on some days fails here.
# The five runs go side by side, each with its own band of ports and its own temp folder
# (sharing pytest's, one run's clean-up of old folders raced another's files: a CI failure);
# their output follows.
clocks=(2027-01-31T23:58:00Z 2026-03-02T00:03:00Z 2026-06-13T12:00:00Z 2026-09-30T02:30:00Z
    2026-12-06T17:10:00Z)
sweep=$(mktemp -d)
trap 'rm -rf "$sweep"' EXIT
pids=()
for i in "${!clocks[@]}"; do
    HOMECARE_PORT_BAND="$i/${#clocks[@]}" .venv/bin/pytest -q -p no:cacheprovider -m clock \
        --basetemp="$sweep/tmp$i" --clock="${clocks[$i]}" tests >"$sweep/$i.log" 2>&1 &
    pids+=($!)
done
failed=0
for i in "${!clocks[@]}"; do
    wait "${pids[$i]}" || failed=1
    echo "clock sweep: ${clocks[$i]}"
    cat "$sweep/$i.log"
done
exit "$failed"
