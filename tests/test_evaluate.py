"""`homecare evaluate` on a small simulated cohort: labels written, every kind scored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

import pytest
from typer.testing import CliRunner

from cli.main import app
from evaluation.cohort import default_start

COHORT_START = "2026-03-01"
"""The cohort's first day: with seed 3, its 6 × 2 days draw an SOS among eight kinds. The
mix depends on the days simulated (a start taken from the wall clock drew no SOS on
2026-12-06), so the test names its days."""


@pytest.mark.slow  # the whole evaluation: 12 elder-days through every detector
def test_cohort_evaluation_scores_injected_scenarios(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--elders", "6", "--days", "2", "--seed", "3",
                                      "--start", COHORT_START, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert report["start"] == f"{COHORT_START}T00:00:00+00:00"
    assert report["scenarios"] == len(labels) > 0
    per_kind = report["per_kind"]
    # What the scenario mix put in is counted back, per kind, against the labels.
    for kind in {label["kind"] for label in labels} - {"none"}:
        assert per_kind[kind]["events"] == sum(label["kind"] == kind for label in labels)
    assert per_kind["sos"]["recall"] == 1.0
    assert per_kind["sos"]["delay_max_s"] <= 1.0
    assert "recall" in result.output


def test_without_a_start_the_cohort_ends_yesterday_whatever_the_hour(travel, tmp_path):
    # The command's default: the days before today, by the (faked) wall clock.
    result = CliRunner().invoke(app, ["evaluate", "--elders", "1", "--days", "0.1",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    end = datetime.fromisoformat(report["start"]) + timedelta(days=0.1)
    yesterday = datetime.fromtimestamp(travel, UTC).date() - timedelta(days=1)
    assert end == datetime.combine(yesterday, time.min, UTC)  # the days end at a midnight
    assert end.timestamp() - 0.1 * 86400 == default_start(0.1, travel)
    assert f"from {report['start']}" in result.output


@pytest.mark.slow
def test_the_cohort_is_judged_with_baselines_fitted_on_its_own_past():
    # Cold detectors judged a whole month on the care defaults: a 22:00-06:00 sleep window
    # made an early riser's getting up a night trip (bed_exit) and a wandering at 06:30 by
    # a late riser invisible. The live service fits each elder's baselines daily.
    import numpy as np

    from detectors.care import Care
    from detectors.service import default_detectors
    from device_sim.homes import SimConfig, Simulation
    from evaluation.cohort import fit_history

    config = SimConfig(elders=4, seed=5, start=19723 * 86400.0)
    care = Care()
    fit_history(config, 7, default_detectors(care), care)
    wake_h = np.array([e.profile.wake_h for e in Simulation(config).elders])
    sleep_end_h = care.sleep_end_s[:4] / 3600.0
    assert np.all(np.abs(sleep_end_h - (wake_h - 0.25)) < 1.0)  # an early wake-up, less 15 min


def test_the_detectors_get_the_mag_std_that_ingest_computes():
    from device_sim.homes import SimConfig, Simulation
    from device_sim.scenarios import iter_streams
    from evaluation.cohort import _batches

    sim = Simulation(SimConfig(elders=2, seed=5, start=19723 * 86400.0 + 9 * 3600))
    chunk = next(iter_streams(sim, [], 0.01))
    wearable = next(b for b in _batches(chunk) if b.stream == "wearable")
    assert (wearable.column("mag_std") == chunk.wearable["mag_std"]).all()
    assert {"gx", "gy", "gz"} <= set(wearable.values)
