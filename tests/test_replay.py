"""``homecare replay accel`` and ``homecare evaluate`` on small generated trace files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from device_sim.motions import motion
from evaluation.cli import evaluate_command, replay_app
from evaluation.replay import G, TraceError, read_trace
from evaluation.replay_eval import evaluate, resample_trace

app = typer.Typer()
app.add_typer(replay_app, name="replay")
app.command("evaluate")(evaluate_command)
runner = CliRunner()


def write(path: Path, xyz: np.ndarray, rate: float, scale: float = 1.0, t=None) -> Path:
    t = np.arange(len(xyz)) / rate if t is None else t
    lines = ["t,ax,ay,az"] + [
        f"{ti:.4f},{x * scale:.5f},{y * scale:.5f},{z * scale:.5f}"
        for ti, (x, y, z) in zip(t, xyz, strict=True)
    ]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def trace(name: str, seed: int, rate: float = 50.0):
    _, xyz, info = motion(name, np.random.default_rng(seed), rate=rate, orientation="random")
    return xyz, info


def events(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_replay_plain_and_gz_prints_one_event_per_fall(tmp_path):
    fall, info = trace("fall_forward", 1)
    walk, _ = trace("walk", 2)
    f1 = write(tmp_path / "fall.csv.gz", fall, 50)
    f2 = write(tmp_path / "walk.csv", walk, 50)
    result = runner.invoke(app, ["replay", "accel", str(f1), str(f2)])
    assert result.exit_code == 0, result.output
    got = events(result)
    assert [(e["file"], e["kind"]) for e in got] == [(str(f1), "fall")]
    assert got[0]["t"] == pytest.approx(info["impact_t"], abs=0.5)
    assert got[0]["posture_deg"] >= 45


def test_units_ms2_and_other_rates_give_the_same_events(tmp_path):
    fall, info = trace("fall_sideways", 3)
    ms2 = write(tmp_path / "ms2.csv", fall, 50, scale=G)
    result = runner.invoke(app, ["replay", "accel", "--units", "ms2", str(ms2)])
    assert result.exit_code == 0
    assert len(events(result)) == 1
    wrong = runner.invoke(app, ["replay", "accel", str(ms2)])  # read as g: 9.8 "g" of gravity
    assert events(wrong) != events(result)
    files = []
    for rate in (20.0, 100.0, 25.0):
        xyz, info = trace("fall_backward", 4, rate)
        files.append((write(tmp_path / f"r{int(rate)}.csv", xyz, rate), info))
    result = runner.invoke(app, ["replay", "accel", *(str(f) for f, _ in files)])
    got = events(result)
    assert sorted(e["file"] for e in got) == sorted(str(f) for f, _ in files)
    for e in got:
        info = next(i for f, i in files if str(f) == e["file"])
        assert e["t"] == pytest.approx(info["impact_t"], abs=0.5)


def test_rate_option_overrides_the_time_column(tmp_path):
    fall, info = trace("fall_forward", 5)
    f = write(tmp_path / "index.csv", fall, 50, t=np.arange(len(fall), dtype=float))  # t = index
    result = runner.invoke(app, ["replay", "accel", "--rate", "50", str(f)])
    got = events(result)
    assert len(got) == 1
    assert got[0]["t"] == pytest.approx(info["impact_t"], abs=0.5)


def test_hold_end_extends_traces_that_stop_after_the_fall(tmp_path):
    fall, info = trace("fall_sideways", 6)
    cut = fall[: round((info["impact_t"] + 3) * 50)]
    f = write(tmp_path / "cut.csv", cut, 50)
    assert events(runner.invoke(app, ["replay", "accel", str(f)])) == []
    got = events(runner.invoke(app, ["replay", "accel", "--hold-end", "20", str(f)]))
    assert len(got) == 1
    assert got[0]["t"] == pytest.approx(info["impact_t"], abs=0.5)
    sit, _ = trace("sit_hard", 7)
    s = write(tmp_path / "sit.csv", sit[: 10 * 50], 50)
    assert events(runner.invoke(app, ["replay", "accel", "--hold-end", "30", str(s)])) == []


def test_a_malformed_file_is_named_with_its_line_and_the_others_still_run(tmp_path):
    fall, _ = trace("fall_forward", 8)
    good = write(tmp_path / "good.csv", fall, 50)
    bad = write(tmp_path / "bad.csv", fall[:100], 50)
    lines = bad.read_text().splitlines()
    lines[6] = "0.12,abc,0.1,0.9"
    bad.write_text("\n".join(lines) + "\n")
    header = tmp_path / "header.csv"
    header.write_text("time,x,y,z\n0,0,0,1\n")
    result = runner.invoke(app, ["replay", "accel", str(bad), str(good), str(header)])
    assert result.exit_code == 1
    assert f"{bad}:7" in result.stderr
    assert "ax is not a number" in result.stderr
    assert f"{header}:1" in result.stderr
    assert [e["file"] for e in events(result)] == [str(good)]


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("0,0,0,1\n0.02,0,0,1,5\n", 3, "expected 4 values"),
        ("0,0,0,1\n0,0,0,1\n", 3, "t must increase"),
        ("0,0,0,1\n0.02,nan,0,1\n", 3, "not finite"),
        ("0,0,0,1\n", None, "fewer than 2"),
    ],
)
def test_read_trace_rejects(tmp_path, body, line, message):
    path = tmp_path / "x.csv"
    path.write_text("t,ax,ay,az\n" + body)
    with pytest.raises(TraceError, match=message) as err:
        read_trace(path)
    assert err.value.line == line


def test_evaluate_counts_trials_and_writes_json(tmp_path):
    rows = ["file,subject,code,label"]
    for i, name in enumerate(["fall_forward", "fall_backward", "sit_hard", "walk", "jump"]):
        xyz, info = trace(name, 20 + i)
        write(tmp_path / f"{name}.csv.gz", xyz, 50)
        rows.append(f"{name}.csv.gz,S{i % 2},{name},{info['label']}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    report = evaluate(tmp_path, labels, rotate=3)
    assert (report["falls"], report["adl"]) == (2, 3)
    assert report["sensitivity"] == 1.0
    assert report["specificity"] == 1.0
    out = tmp_path / "report.json"
    result = runner.invoke(
        app,
        ["evaluate", "--replay-dir", str(tmp_path), "--labels", str(labels), "--resample", "20",
         "--hold-end", "10", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sensitivity 1.0000" in result.stdout
    saved = json.loads(out.read_text())
    assert saved["options"]["resample_hz"] == 20.0
    assert saved["per_subject"].keys() == {"S0", "S1"}


def test_resample_trace_keeps_duration_and_mean():
    xyz = np.tile(np.float32([0, 0, 1]), (500, 1)) + np.float32([0.1, 0, 0])
    for to in (20.0, 100.0):
        out = resample_trace(xyz, 50.0, to)
        assert len(out) == round(10 * to)
        assert np.allclose(out.mean(axis=0), [0.1, 0, 1], atol=1e-3)
