"""`homecare evaluate` on a small simulated cohort: labels written, every kind scored."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from homecare.cli import app


def test_cohort_evaluation_scores_injected_scenarios(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--elders", "6", "--days", "2", "--seed", "3",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert report["scenarios"] == len(labels) > 0
    per_kind = report["per_kind"]
    # What the scenario mix put in is counted back, per kind, against the labels.
    for kind in {label["kind"] for label in labels} - {"none"}:
        assert per_kind[kind]["events"] == sum(label["kind"] == kind for label in labels)
    assert per_kind["sos"]["recall"] == 1.0
    assert per_kind["sos"]["delay_max_s"] <= 1.0
    assert "recall" in result.output
