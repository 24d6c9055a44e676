"""`homecare demo`, the README's first command, end to end on its own servers (NATS Server,
provisioned before any device connects, and influxd) — twice in a row."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_twice_and_loses_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMECARE_")}
    env["HOMECARE_STATE_DIR"] = str(tmp_path / "state")
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "cli", "demo", "--elders", "3", "--hours", "0.25"],
            env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = " ".join(result.stdout.split())
        assert "lost: 0" in out
        assert "dead-lettered: 5 of 5 bad messages" in out
        for reason in ("not_json", "out_of_range", "timestamp", "id_mismatch", "unknown_stream"):
            assert f"{reason}: 1" in out
        assert "e0003" in out
        assert "injected scenarios raised their alert" in out
        assert "escalation: " in out  # escalate ran beside them
    # The servers it started are gone.
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "state") not in procs
