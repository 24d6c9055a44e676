"""The certification kit through a real NATS Server (its MQTT listener): the simulator's
reference devices pass
every check, each faulty device fails exactly its checks for the right reason, both report
forms are written, and the non-interactive mode says what it skipped.

Every session runs at once in a thread pool (each kit starts its own broker, so each
can stage its own outage), with CI-short timings: a 2.5 s outage instead of 30 s, one
staged fall and one look-alike, 3 s for a last will. The module takes about a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from broker.provision import provision
from certify.checks import CHECKS
from certify.faulty import FAULTY
from certify.kit import CertifyOptions, certify
from certify.prompts import NoOperator
from certify.reference import Fault, SimulatedDevice
from certify.report import Report, build_report, write_report
from harness.servers import LocalNats
from homecare.contract import DeviceKind
from homecare.settings import MqttSettings

pytestmark = pytest.mark.servers

CI = {"outage_s": 2.5, "stage_s": 18.0, "will_timeout_s": 3.0, "settle_s": 2.0}
REFERENCE = {
    DeviceKind.WEARABLE: {"duration_s": 4.0, "falls": 1, "lookalikes": 1},
    DeviceKind.BED: {"duration_s": 12.0},
    DeviceKind.DOOR: {"duration_s": 12.0},
    DeviceKind.MOTION: {"duration_s": 12.0},
    DeviceKind.MAT: {"duration_s": 12.0},
}


def _simulated(kind: DeviceKind, fault: Fault, **timing: Any) -> Report:
    options = CertifyOptions(device="", kind=kind, **{**CI, **timing})
    return build_report(certify(options, simulate=fault))


def _provisioned(broker: LocalNats) -> LocalNats:
    assert provision(broker.url, mqtt_url=broker.mqtt_url, partitions=4).source.ok
    return broker


def _non_interactive(root: Path) -> Report:
    """A device the kit cannot prompt, on a broker the kit does not run."""
    with LocalNats(root / "nats") as broker:
        device = SimulatedDevice(DeviceKind.WEARABLE, _provisioned(broker).mqtt_url)
        device.start()
        try:
            options = CertifyOptions(device=device.device.device, kind=DeviceKind.WEARABLE,
                                     duration_s=12.0, settle_s=1.0)
            evidence = certify(options, mqtt=MqttSettings(url=broker.mqtt_url),
                               operator=NoOperator())
        finally:
            device.stop()
    return build_report(evidence)


def _interactive(root: Path) -> subprocess.CompletedProcess[str]:
    """``homecare certify`` at a console where the operator declines every step."""
    with LocalNats(root / "nats") as broker:
        device = SimulatedDevice(DeviceKind.DOOR, _provisioned(broker).mqtt_url)
        device.start()
        try:
            return subprocess.run(
                [sys.executable, "-m", "cli", "certify", "--kind", "door", "--device",
                 device.device.device, "--broker", broker.mqtt_url, "--duration", "6",
                 "--out", str(root / "out")],
                input="s\n" * 5, capture_output=True, text=True, timeout=120, check=False,
            )
        finally:
            device.stop()


def _cli(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "certify", "--kind", "bed", "--simulate",
         "reference", "--non-interactive", "--duration", "10", "--outage", "2.5",
         "--will-timeout", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=180, check=False,
    )


SESSIONS_AT_ONCE = 6


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("certify")
    # At most six sessions at once: each runs its own nats-server, device and observer,
    # and with all 19 at once on CI's 2 cores the observers received the reference
    # devices' messages over 2 s late (clock_skew failed in 2 of 6 runs).
    with ThreadPoolExecutor(max_workers=SESSIONS_AT_ONCE) as pool:
        jobs = {f"reference-{kind}": pool.submit(_simulated, kind, Fault(), **timing)
                for kind, timing in REFERENCE.items()}
        jobs |= {name: pool.submit(_simulated, bad.kind, bad.fault, falls=bad.falls,
                                   lookalikes=0,
                                   duration_s=12.0)
                 for name, bad in FAULTY.items()}
        jobs["non-interactive"] = pool.submit(_non_interactive, root / "plain")
        jobs["cli"] = pool.submit(_cli, root / "cli")
        jobs["interactive"] = pool.submit(_interactive, root / "interactive")
        results = {name: job.result(timeout=300) for name, job in jobs.items()}
    results["cli-out"] = root / "cli"
    return results


@pytest.mark.parametrize("kind", list(DeviceKind))
def test_reference_device_passes_every_check(sessions: dict[str, Any], kind: DeviceKind) -> None:
    report: Report = sessions[f"reference-{kind}"]
    verdicts = {c.id: (c.status, c.summary) for c in report.checks}
    assert {c.id for c in CHECKS if kind in c.kinds} == set(verdicts)
    assert all(status == "pass" for status, _ in verdicts.values()), verdicts
    if kind is DeviceKind.WEARABLE:  # it streams frames and leaves fall detection to us
        assert "does not detect falls itself" in verdicts["device_fall"][1]
    assert report.result == "pass"
    assert (report.model, report.firmware) != (None, None)
    assert report.notes == ["broker outage shortened to 2.5 s (the procedure uses 30 s)"]


@pytest.mark.parametrize("name", sorted(FAULTY))
def test_faulty_device_fails_exactly_its_checks(sessions: dict[str, Any], name: str) -> None:
    report: Report = sessions[name]
    bad = FAULTY[name]
    verdicts = {c.id: c for c in report.checks}
    assert set(report.failed) == bad.fails, {c.id: c.summary for c in report.checks}
    for check_id, phrase in bad.explanation.items():
        assert phrase in verdicts[check_id].summary, verdicts[check_id].summary
        assert verdicts[check_id].fix
    skipped = {c.id for c in report.checks if c.status == "skipped"}
    # fall_test only where CI asked for no staged falls; none detects falls itself
    assert skipped <= {"fall_test", "device_fall"}, skipped
    assert report.result == "fail"


def test_both_report_forms_are_written(sessions: dict[str, Any], tmp_path: Path) -> None:
    for name in ("reference-wearable", "qos0_events"):
        report: Report = sessions[name]
        json_path, html_path = write_report(report, tmp_path / name)
        data = json.loads(json_path.read_text())
        assert Report.model_validate(data) == report
        assert data["contract_version"] == "1"
        assert {"device", "model", "firmware", "date", "result"} <= set(data)
        page = html_path.read_text()
        for check in report.checks:
            assert f'id="{check.id}"' in page
            assert check.title in page
        assert report.device in page
        assert report.firmware is not None
        assert report.firmware in page
    page = (tmp_path / "qos0_events" / "certificate.html").read_text()
    assert "NOT CERTIFIED" in page
    assert "QoS 0" in page


def test_non_interactive_mode_skips_operator_steps_and_says_so(
    sessions: dict[str, Any],
) -> None:
    report: Report = sessions["non-interactive"]
    verdicts = {c.id: c for c in report.checks}
    for check_id in ("availability", "sos_latency", "fall_test"):
        assert verdicts[check_id].status == "skipped"
        assert "non-interactive" in verdicts[check_id].summary
    assert verdicts["outage"].status == "skipped"
    assert "does not run this broker" in verdicts["outage"].summary
    assert any("non-interactive" in note for note in report.notes)
    assert report.result == "incomplete"
    assert not report.failed, {c.id: c.summary for c in report.checks}


def test_cli_certifies_the_reference_bed(sessions: dict[str, Any]) -> None:
    done: subprocess.CompletedProcess[str] = sessions["cli"]
    assert done.returncode == 0, done.stdout + done.stderr
    out: Path = sessions["cli-out"]
    data = json.loads((out / "report.json").read_text())
    assert data["result"] == "pass"
    assert data["kind"] == "bed"
    assert data["model"] == "SleepPad S"
    assert "CERTIFIED" in (out / "certificate.html").read_text()
    assert "PASS: b0001" in done.stdout


def test_interactive_operator_is_prompted_and_may_decline(sessions: dict[str, Any]) -> None:
    done: subprocess.CompletedProcess[str] = sessions["interactive"]
    assert done.returncode == 3, done.stdout + done.stderr  # incomplete: not a certificate
    assert "switch the device off" in done.stdout
    assert "SKIPPED  availability    skipped by the operator" in done.stdout
    assert "INCOMPLETE: d0001" in done.stdout


def test_cli_refuses_an_unknown_simulated_device() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "certify", "--kind", "bed", "--simulate", "nope",
         "--non-interactive"], capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "unknown device 'nope'" in done.stderr
