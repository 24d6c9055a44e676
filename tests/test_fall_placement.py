"""Where a wearable is worn: contract, provisioning, status → detector, the device desk's
flag; the learned second stage: its array format, its decision per placement, training
and subject-wise cross-validation from small generated recordings."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.ensemble import GradientBoostingClassifier
from support import constant_model
from typer.testing import CliRunner

from cli.main import app
from detectors.base import AccelBatch, BatchStream
from detectors.batches import Batcher
from detectors.device_health import DeviceHealthDetector
from detectors.fall import FallDetector, decide
from detectors.fall_model import (
    FEATURES,
    MODEL_DIR,
    FallModels,
    ModelError,
    Placement,
    TreeModel,
    placement_code,
)
from detectors.snapshot import freeze, thaw
from device_sim.motions import JUDGED_ONLY, WRIST_MOTIONS, motion
from devices.access import AccessError, BrokerAccess
from evaluation.fall_train import day_threshold, export, gather
from evaluation.replay import Trace, replay
from evaluation.replay_eval import evaluate
from homecare.contract import DeviceStatus, Topic, json_schemas
from homecare.thresholds import FallSettings

NOW = 1_800_000_000.0


def _status(device: str, kind: str, placement: str | None) -> tuple[Topic, DeviceStatus]:
    topic = Topic.parse(f"homecare/v1/s1/e1/{kind}/{device}/status")
    body = {"elder": "e1", "device": device, "ts": NOW, "battery": 80, "firmware": "1",
            "rssi": -60}  # fmt: skip
    if placement is not None:
        body["placement"] = placement
    return topic, DeviceStatus.model_validate(body, context={"now": NOW})


def test_contract_takes_the_new_placements_and_the_old_words() -> None:
    for word in ("wrist", "chest", "waist", "unknown", "pendant", "belt", "bed", "door"):
        assert _status("w1", "wearable", word)[1].placement == word
    assert _status("w1", "wearable", None)[1].placement is None  # today's devices
    with pytest.raises(ValidationError):
        _status("w1", "wearable", "ankle")
    enum = json_schemas()["status"]["properties"]["placement"]["anyOf"][0]["enum"]
    assert {"wrist", "chest", "waist", "unknown"} <= set(enum)
    assert [placement_code(w) for w in ("pendant", "belt", "wrist", None, "bed")] == [
        Placement.CHEST, Placement.WAIST, Placement.WRIST, Placement.UNKNOWN, Placement.UNKNOWN,
    ]  # fmt: skip


def test_status_reports_set_the_placement_and_unknown_is_flagged_once() -> None:
    batcher = Batcher()
    fall, health = FallDetector(), DeviceHealthDetector()
    reports = [_status("w1", "wearable", "wrist"), _status("b1", "bed", "bed")]
    [batch] = batcher.build(reports).batches
    assert batch.stream == BatchStream.STATUS
    for det in (fall, health):
        assert det.update(batch) == []
    assert fall.placement[0] == Placement.WRIST
    # a wearable that does not say: unknown, flagged to the device desk once, then re-armed
    for expect in (1, 0):
        [batch] = batcher.build([_status("w1", "wearable", None)]).batches
        found = health.update(batch) + fall.update(batch)
        assert [d.kind for d in found] == ["placement_unknown"] * expect
    assert fall.placement[0] == Placement.UNKNOWN
    [batch] = batcher.build([_status("w1", "wearable", "pendant")]).batches
    assert health.update(batch) == []
    assert fall.update(batch) == []
    assert fall.placement[0] == Placement.CHEST
    [batch] = batcher.build([_status("w1", "wearable", "unknown")]).batches
    assert [d.kind for d in health.update(batch)] == ["placement_unknown"]


def test_provisioning_records_a_wearables_placement(tmp_path: Path) -> None:
    access = BrokerAccess(tmp_path)
    grant, _ = access.provision("w1", site="s1", elder="e1", kind="wearable", placement="wrist")
    assert grant.placement == "wrist"
    access.provision("w2", site="s1", elder="e1", kind="wearable")
    assert {g.device: g.placement for g in access.devices()} == {"w1": "wrist", "w2": None}
    with pytest.raises(AccessError, match="placement must be"):
        access.provision("w3", site="s1", elder="e1", kind="wearable", placement="ankle")
    with pytest.raises(AccessError, match="for wearables"):
        access.provision("b1", site="s1", elder="e1", kind="bed", placement="wrist")


def _toy_model(seed: int = 0) -> tuple[GradientBoostingClassifier, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, len(FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 3] - x[:, 7] + rng.normal(scale=0.3, size=300)) > 0
    model = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=seed)
    return model.fit(x, y), x


def test_exported_trees_score_as_scikit_learn_and_load_without_pickle(tmp_path: Path) -> None:
    model, x = _toy_model()
    trees = export(model, threshold=0.5)
    path = tmp_path / "fall-wrist.npz"
    trees.save(path)
    loaded = TreeModel.load(path)
    columns = {f: x[:, i] for i, f in enumerate(FEATURES)}
    expected = model.predict_proba(x)[:, 1]
    assert np.allclose(loaded.score(columns), expected, atol=1e-4)
    assert FallModels.load(tmp_path).by_placement.keys() == {Placement.WRIST}
    # an object array (what a pickle would hide in) is refused, as is a broken tree
    np.savez(tmp_path / "bad.npz", features=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ModelError):
        TreeModel.load(tmp_path / "bad.npz")
    with pytest.raises(ModelError, match="children"):
        TreeModel.from_arrays(
            features=("peak_g",), base=0, rate=1, threshold=0.5, left=np.array([[5]]),
            right=np.array([[6]]), feature=np.array([[0]]), split=np.array([[0.0]]),
            value=np.array([[0.0]]),
        )  # fmt: skip


def test_shipped_models_are_small_and_use_known_features() -> None:
    models = FallModels.load()
    assert Placement.WRIST in models.by_placement
    for p, m in models.by_placement.items():
        path = MODEL_DIR / f"fall-{p.name.lower()}.npz"
        assert path.stat().st_size < 1_000_000
        assert set(m.features) <= set(FEATURES)
        assert (MODEL_DIR / f"fall-{p.name.lower()}.md").is_file()  # its card


TWO_CANDIDATES = {
    "peak_g": np.array([3.0, 3.0]), "freefall_g": np.array([0.5, 0.5]),
    "flight_s": np.array([0.0, 0.0]), "posture_deg": np.array([80.0, 10.0]),
    "still_fraction": np.array([1.0, 1.0]), "activity_g": np.array([0.01, 0.01]),
}  # fmt: skip
"""Two candidates' evidence: the first passes the rules, the second does not."""


def test_each_placement_decides_by_its_own_model_and_unknown_by_any() -> None:
    s = FallSettings()
    evidence = TWO_CANDIDATES
    models = FallModels(
        {Placement.WRIST: constant_model(0.9), Placement.WAIST: constant_model(0.1)}
    )

    def verdict(p: Placement) -> list[bool]:
        ok, _ = decide(evidence, np.full(2, p, np.int8), models, s)
        return ok.tolist()

    assert verdict(Placement.WRIST) == [True, True]  # the wrist model says fall
    assert verdict(Placement.WAIST) == [False, False]  # the waist model says not
    assert verdict(Placement.CHEST) == [True, False]  # no model: the rules
    assert verdict(Placement.UNKNOWN) == [True, True]  # any of them
    off_body = evidence | {"activity_g": np.array([0.0, 0.0])}
    ok, score = decide(off_body, np.full(2, Placement.WRIST, np.int8), models, s)
    assert ok.tolist() == [False, False]
    assert np.allclose(score, 0.9)


def test_an_unknown_placement_with_a_model_of_its_own_asks_it_with_the_rules() -> None:
    # the wrist's model says fall to everything; the unknown placement's own model says
    # not: an unknown wearable is judged by the rules or its own model, never the wrist's
    s = FallSettings()
    evidence = TWO_CANDIDATES
    wrist = {Placement.WRIST: constant_model(0.9)}

    def verdict(models: FallModels, p: Placement) -> list[bool]:
        ok, _ = decide(evidence, np.full(2, p, np.int8), models, s)
        return ok.tolist()

    cautious = FallModels(wrist | {Placement.UNKNOWN: constant_model(0.1)})
    assert verdict(cautious, Placement.UNKNOWN) == [True, False]  # the rules' word stands
    assert verdict(cautious, Placement.WRIST) == [True, True]  # the wrist keeps its own
    sure = FallModels(wrist | {Placement.UNKNOWN: constant_model(0.95)})
    assert verdict(sure, Placement.UNKNOWN) == [True, True]  # its own model adds to them
    assert verdict(FallModels(wrist), Placement.UNKNOWN) == [True, True]  # none: any model


def _fall_frames(rate: int = 50) -> np.ndarray:
    _, xyz, _ = motion("fall_forward", np.random.default_rng(4), rate=rate)
    return xyz[: len(xyz) // rate * rate].reshape(-1, rate, 3).astype(np.float32)


def test_alert_evidence_keeps_the_rules_and_snapshot_skips_the_models() -> None:
    frames = _fall_frames()
    det = FallDetector(models=FallModels({Placement.CHEST: constant_model(0.8)}))
    det.place(np.array([0]), Placement.CHEST)
    found = []
    for k, f in enumerate(frames[: len(frames) // 2]):
        found += det.update(AccelBatch(np.array([0]), np.array([float(k)]), f[None], 50.0))
    fresh = FallDetector(models=FallModels({Placement.CHEST: constant_model(0.8)}))
    thaw({"fall": fresh}, freeze({"fall": det}))  # resumes without the models in the blob
    assert fresh.placement[0] == Placement.CHEST
    for k, f in enumerate(frames[len(frames) // 2 :], start=len(frames) // 2):
        found += fresh.update(AccelBatch(np.array([0]), np.array([float(k)]), f[None], 50.0))
    [d] = found
    assert d.evidence["model_score"] == pytest.approx(0.8)
    assert d.evidence["rules"] == 1.0
    assert d.evidence["posture_deg"] > 45
    assert {"peak_g", "freefall_g", "still_fraction", "placement"} <= d.evidence.keys()


def _write_dataset(folder: Path) -> None:
    """Generated recordings of four people, falls and look-alikes, with labels.csv."""
    folder.mkdir()
    lines = ["file,subject,code,label"]
    kinds = {"F01": "fall_forward", "F02": "fall_sideways", "D01": "sit_hard",
             "D02": "jump", "D03": "stumble"}  # fmt: skip
    for person in range(4):
        for code, name in kinds.items():
            for trial in range(2):
                rng = np.random.default_rng([person, trial, len(name)])
                t, xyz, _ = motion(name, rng, rate=50, orientation="random")
                file = f"{code}_P{person}_R{trial}.csv.gz"
                body = "t,ax,ay,az\n" + "\n".join(
                    f"{ti:.3f},{a:.4f},{b:.4f},{c:.4f}"
                    for ti, (a, b, c) in zip(t, xyz, strict=True)
                )
                (folder / file).write_bytes(gzip.compress(body.encode()))
                lines.append(f"{file},P{person},{code},{'fall' if code[0] == 'F' else 'adl'}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_the_unknown_placements_model_learns_the_wrists_movements(tmp_path: Path) -> None:
    # decided with the rules (which judge belts and pendants), it partners the wrist
    _, unknown, _ = gather(Placement.UNKNOWN, [], simulate=1, resample_hz=20)
    _, wrist, _ = gather(Placement.WRIST, [], simulate=1, resample_hz=20)
    taught = [n for n in WRIST_MOTIONS if n not in JUDGED_ONLY]
    assert [t.code for t in unknown] == [t.code for t in wrist] == taught
    data = tmp_path / "lab"
    _write_dataset(data)
    got = CliRunner().invoke(app, ["train-fall", "unknown", "--data", str(data), "--out",
                                   str(tmp_path), "--folds", "2", "--hold-end", "15"])  # fmt: skip
    assert got.exit_code == 0, got.output
    card = json.loads((tmp_path / "fall-unknown.json").read_text())
    assert (card["placement"], card["movements"]) == ("unknown", "wrist")
    assert "motion of the wrist" in (tmp_path / "fall-unknown.md").read_text()
    assert Placement.UNKNOWN in FallModels.load(tmp_path).by_placement


def test_train_fall_writes_a_model_and_card_and_evaluate_cross_validates(tmp_path: Path) -> None:
    data = tmp_path / "lab"
    _write_dataset(data)
    runner = CliRunner()
    out = tmp_path / "models"
    got = runner.invoke(app, ["train-fall", "chest", "--data", str(data), "--out", str(out),
                              "--folds", "2", "--hold-end", "15", "--get-up", "1"])  # fmt: skip
    assert got.exit_code == 0, got.output
    card = json.loads((out / "fall-chest.json").read_text())
    assert card["seed"]
    assert card["subjects"] == 4
    # the copies of the falls whose wearer gets up are trained on, not counted as trials
    assert (card["fall_trials"], card["got_up_copies"], card["trials"]) == (16, 16, 40)
    assert "--get-up 1" in card["command"]
    assert card["cross_validation"]["sensitivity"] >= 0.8
    assert "Subject-wise 2-fold" in (out / "fall-chest.md").read_text()
    model = TreeModel.load(out / "fall-chest.npz")
    assert 0 <= model.threshold <= 1
    assert model.features == FEATURES
    # the same command again gives the same model (fixed seed)
    runner.invoke(app, ["train-fall", "chest", "--data", str(data), "--out", str(tmp_path / "b"),
                        "--folds", "2", "--hold-end", "15", "--get-up", "1"])  # fmt: skip
    again = TreeModel.load(tmp_path / "b" / "fall-chest.npz")
    assert np.array_equal(again.split, model.split)
    assert again.threshold == model.threshold
    report = tmp_path / "cv.json"
    got = runner.invoke(app, ["evaluate", "--replay-dir", str(data), "--labels",
                              str(data / "labels.csv"), "--placement", "chest", "--cv", "2",
                              "--hold-end", "15", "--mine-days", "0.25", "--target-per-day",
                              "0.05", "--cut-after", "3", "--get-up", "1", "--wear-days", "1",
                              "--json", str(report)])  # fmt: skip
    assert got.exit_code == 0, got.output
    assert "trials 40 (16 falls, 24 ADL), 4 people, subject-wise 2-fold" in got.output
    cv = json.loads(report.read_text())
    assert cv["folds"] == 2
    # then every person's falls, got up from, through the detector with their fold's model
    assert "with their fold's model" in got.output
    assert cv["cut"]["options"]["models"] == "out of fold"
    assert cv["cut"]["options"]["cut_after_s"] == 3
    assert (cv["cut"]["falls"], cv["cut"]["adl"]) == (16, 24)
    # and every person's everyday trials back to back, each with their fold's model
    assert "everyday activities back to back, with their fold's model" in got.output
    assert (cv["wear_day"]["models"], cv["wear_day"]["trials"]) == ("out of fold", 24)
    assert cv["wear_day"]["people"] == 4
    # one mined sequence of a quarter wearer-day: its out-of-fold alarms, and the curve
    assert cv["mined"]["sequences"] == 1
    assert 0.1 < cv["mined"]["wearer_days"] < 0.5
    assert cv["threshold"] >= cv["threshold_by_specificity"]
    assert cv["mined"]["false_alarms"] <= 0.05 * cv["mined"]["wearer_days"]
    assert "wear" not in cv["per_code"]  # the mined sequences are not recorded activities
    assert cv["per_code"]["F01"]["trials"] == 8  # nor are the copies got up from
    assert len(cv["trade_off"]) > 2
    got = runner.invoke(app, ["replay", "accel", "--placement", "waist", "--hold-end", "15",
                              *sorted(str(p) for p in data.glob("F01_*"))])  # fmt: skip
    assert got.exit_code == 0
    assert got.output.count('"kind": "fall"') == 8


def test_threshold_for_false_alarms_per_wearer_day() -> None:
    scores = np.array([0.99, 0.9, 0.8, 0.2, 0.1])
    # ten wearer-days, at most 0.2 a day: two alarms may stay (0.99, 0.9), not a third
    th = day_threshold(scores, 10.0, 0.2)
    assert 0.8 < th <= 0.9
    assert day_threshold(scores, 10.0, 0.0) > 0.99
    assert day_threshold(scores, 100.0, 1.0) == 0.0  # more allowed than candidates


def test_mined_wear_is_a_day_of_movements_in_minutes() -> None:
    from evaluation.wear import AWAKE_S, GAP_S, mined_wear

    [(xyz, days)] = mined_wear(Placement.WRIST, 1, 3, rate=25.0, seed=1)
    seconds = len(xyz) / 25.0
    assert 3 * 15 < seconds < 3 * (40 + 40) + 20  # three movements 15–40 s apart
    # each movement stands for a day's mean gap plus its own length
    assert days == pytest.approx((3 * sum(GAP_S) / 2 + seconds) / AWAKE_S, rel=0.5)
    again = mined_wear(Placement.WRIST, 1, 3, rate=25.0, seed=1)[0][0]
    assert np.array_equal(again, xyz)


def _wrist_traces(name: str, seeds: int) -> list[Trace]:
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 99])  # not the seeds the shipped model saw
        rate = float(rng.choice([25.0, 50.0, 100.0]))
        _, xyz, _ = motion(name, rng, rate=rate, orientation="random")
        out.append(Trace(f"{name}-{seed}", xyz, rate))
    return out


@pytest.mark.slow
def test_the_shipped_wrist_model_on_simulated_wrist_motions() -> None:
    """No alert on clapping, hitting a table, waving (nor walking, gestures, dressing);
    most wrist falls found; all by the shipped model at any rate and orientation."""
    calm = [t for n in WRIST_MOTIONS if "fall" not in n for t in _wrist_traces(n, 8)]
    assert replay(calm, placement=Placement.WRIST, hold_end_s=5) == []
    falls = [t for n in WRIST_MOTIONS if "fall" in n for t in _wrist_traces(n, 10)]
    found = {e["file"] for e in replay(falls, placement=Placement.WRIST)}
    assert len(found) >= 0.8 * len(falls)
    # the rules alone (a chest device's) find almost none of them: the model is needed
    rules = {e["file"] for e in replay(falls, placement=Placement.CHEST)}
    assert len(rules) < len(found)


@pytest.mark.slow
def test_false_alarms_per_wearer_day_simulated_and_recorded(tmp_path: Path) -> None:
    from evaluation.wear import recorded_day, simulated_days

    quiet = simulated_days(Placement.WRIST, 2, day_s=900, seed=3)
    assert quiet["hours"] == 0.5
    assert quiet["false_alarms"] == 0
    # a model that calls everything a fall: every impact of the day is a false alarm
    eager = simulated_days(Placement.WRIST, 2, day_s=900, seed=3,
                           models=FallModels({Placement.WRIST: constant_model(0.99)}))  # fmt: skip
    assert eager["false_alarms"] > 0
    assert eager["per_wearer_day"] == pytest.approx(eager["false_alarms"] / (1800 / 86400))
    data = tmp_path / "lab"
    _write_dataset(data)
    day = recorded_day(data, data / "labels.csv", Placement.CHEST)
    assert day["people"] == 4
    assert day["trials"] == 24
    assert day["hours"] > 0.2
    assert day["per_wearer_day"] == pytest.approx(day["false_alarms"] / day["hours"] * 24)


def test_evaluate_judges_each_person_with_their_own_models(tmp_path: Path) -> None:
    """``evaluate --cv --cut-after`` replays each person with their fold's model: the models
    given per person are the ones that decide, and a person without one is an error."""
    data = tmp_path / "lab"
    _write_dataset(data)
    says_fall, says_none = (FallModels({Placement.WRIST: constant_model(p)}) for p in (0.9, 0.1))
    models = {"P0": says_fall, "P1": says_none, "P2": says_fall, "P3": says_none}
    report = evaluate(data, data / "labels.csv", hold_end_s=15, placement=Placement.WRIST,
                      cut_after_s=3, models_by_subject=models)  # fmt: skip
    assert report["options"]["models"] == "out of fold"
    per = report["per_subject"]
    # every fall of the people whose model says fall is found (got up or not), none of the others'
    assert per["P0"]["sensitivity"] == per["P2"]["sensitivity"] == 1.0
    assert per["P1"]["sensitivity"] == per["P3"]["sensitivity"] == 0.0
    assert per["P1"]["specificity"] == per["P3"]["specificity"] == 1.0
    assert {e["file"].split("_")[1] for e in report["detections"]} == {"P0", "P2"}
    with pytest.raises(ValueError, match="P3"):
        evaluate(data, data / "labels.csv", placement=Placement.WRIST,
                 models_by_subject={k: v for k, v in models.items() if k != "P3"})  # fmt: skip
