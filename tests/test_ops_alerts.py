"""Operations alerts: a broken stream source is told to the call centre and the supervisor.

When TELEMETRY's source (``$MQTT_msgs``) stays broken, devices are still acknowledged but
ingest and detect see nothing. The watchdog (``homecare broker watch``) raises an
operations alert into ALERTS after ``alert_s``, resolves it when the source flows again,
and escalation routes it to provider contacts only, never to an elder's family.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import nats
import pytest
import yaml
from support import wait_for

from broker.watchdog import SourceWatchdog
from devices.access import BrokerAccess
from escalation.channels import default_channels
from escalation.ladder import EscalationPolicy
from escalation.messages import family_message
from escalation.notification import MessageType, Notification
from escalation.registry import Registry
from escalation.service import run_service
from harness.servers import LocalNats, free_port
from harness.standins import CallCentreStandIn, HttpStandIn
from homecare.alerts import OPERATIONS_SITE, SOURCE_BROKEN, source_broken_alert
from homecare.contract import Alert, AlertState
from homecare.jetstream import ALERTS_STREAM, TELEMETRY_STREAM, SourceStatus
from homecare.settings import EscalateSettings, InfluxSettings, MqttSettings, NatsSettings, Settings

BROKEN = SourceStatus(False, "TELEMETRY does not source $MQTT_msgs")
FLOWING = SourceStatus(True, "TELEMETRY sources $MQTT_msgs (lag 0)", 0)


def registry(centre_url: str, family_url: str) -> dict:
    """A provider with a call centre and a supervisor, and one elder with a family contact
    named ``TELEMETRY`` in nothing but id: an operations alert must still not reach them."""
    return {
        "provider": {"call_centre": "arc", "supervisor": "sup"},
        "contacts": [
            {"id": "arc", "name": "ARC", "role": "call_centre",
             "channels": [{"kind": "call_centre", "address": centre_url}]},
            {"id": "sup", "name": "Supervisor", "role": "supervisor", "language": "zh-CN",
             "channels": [{"kind": "call_centre", "address": centre_url + "/supervisor"}]},
            {"id": "fam", "name": "Family", "role": "family",
             "channels": [{"kind": "webhook", "address": family_url}]},
        ],
        "elders": [{"id": TELEMETRY_STREAM, "display_name": "Elder", "site": "t",
                    "address": "1 Test Street", "contacts": ["fam"]}],
        "digest_hour": None,
    }  # fmt: skip


# the decisions, on a timeline ---------------------------------------------------------------
def test_the_alert_is_raised_after_the_threshold_once_and_resolved_with_the_same_id():
    watchdog = SourceWatchdog("nats://127.0.0.1:1", alert_s=30)
    assert watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 1000.0) is None
    assert watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 1029.0) is None
    raised = watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 1030.0)
    assert raised is not None
    assert (raised.site, raised.elder, raised.kind, raised.ts, raised.state) == (
        OPERATIONS_SITE, TELEMETRY_STREAM, SOURCE_BROKEN, 1000.0, AlertState.OPEN)  # fmt: skip
    # not stored yet (ALERTS did not answer): due again, the same alert
    assert watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 1031.0).id == raised.id
    watchdog.published(TELEMETRY_STREAM, raised)
    assert watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 1200.0) is None
    assert watchdog.alert_due(ALERTS_STREAM, FLOWING, 1200.0) is None  # never broken
    resolved = watchdog.alert_due(TELEMETRY_STREAM, FLOWING, 1201.0)
    assert resolved is not None
    assert (resolved.id, resolved.state, resolved.updated) == (raised.id, AlertState.RESOLVED,
                                                               1201.0)  # fmt: skip
    watchdog.published(TELEMETRY_STREAM, resolved)
    assert watchdog.alert_due(TELEMETRY_STREAM, FLOWING, 1202.0) is None
    assert watchdog.stats.raised == watchdog.stats.resolved == {TELEMETRY_STREAM: 1}
    # a brief break, mended within the threshold, tells nobody; a new break is a new alert
    assert watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 1300.0) is None
    assert watchdog.alert_due(TELEMETRY_STREAM, FLOWING, 1310.0) is None
    assert watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 1400.0) is None
    again = watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 1430.0)
    assert again is not None
    assert again.id != raised.id
    assert again.ts == 1400.0


def test_a_restarted_watchdog_takes_over_the_open_alert_instead_of_raising_another():
    left_open = source_broken_alert(TELEMETRY_STREAM, 1000.0, 1030.0)
    watchdog = SourceWatchdog("nats://127.0.0.1:1", alert_s=30)
    watchdog.adopt(TELEMETRY_STREAM, left_open)
    assert watchdog.alert_due(TELEMETRY_STREAM, BROKEN, 5000.0) is None
    resolved = watchdog.alert_due(TELEMETRY_STREAM, FLOWING, 5001.0)
    assert resolved is not None
    assert resolved.id == left_open.id
    done = SourceWatchdog("nats://127.0.0.1:1", alert_s=30)
    done.adopt(TELEMETRY_STREAM, resolved)  # resolved already: nothing to take over
    assert done.alert_due(TELEMETRY_STREAM, FLOWING, 5002.0) is None


def test_operations_alerts_go_to_provider_contacts_only_in_their_language():
    reg = Registry.model_validate(registry("https://arc/alarm", "https://push/fam"))
    alert = source_broken_alert(TELEMETRY_STREAM, 1000.0, 1031.0)
    policy = EscalationPolicy(secret=b"k")
    opening = policy.opening(reg, alert, now=1031.0)
    rung = policy.rung(reg, alert, 0, opening.start_at, 1031.0, told=frozenset())
    assert [d.note.recipient.id for d in rung.decided] == ["arc", "sup"]
    # every later rung, too: the elder named like the stream has a family who hears nothing
    later = policy.rung(reg, alert, 1, opening.start_at, 1031.0 + 900, told=frozenset())
    assert [d.note.recipient.id for d in later.decided] == ["sup"]
    sup = rung.decided[1].note
    words = family_message(sup)
    assert "TELEMETRY" in words.subject
    assert "值班工程师" in words.body
    english = Notification(ref="r", type=MessageType.ALARM, alert=alert, created=1031.0,
                           recipient=sup.recipient.model_copy(update={"language": "en"}),
                           elder=sup.elder)  # fmt: skip
    message = family_message(english)
    assert message.subject == (
        "Urgent: The TELEMETRY stream has received nothing from the homes' devices for about "
        "a minute: no alarm from a home is being detected"
    )
    assert "engineer on duty" in message.body
    assert "Please call" not in message.body
    with pytest.raises(ValueError, match="provider contacts only"):
        Registry.model_validate(
            registry("https://arc/alarm", "https://push/fam")
            | {"policy": {"operations": {"steps": [{"after_s": 0, "to": ["first_contact"]}]}}}
        )


# against the real server ----------------------------------------------------------------------
async def _set_source(url: str, sources: list | None, **options: str) -> list:
    """Replace TELEMETRY's sources (``None``: leave them); answer the ones it had."""
    nc = await nats.connect(url, **options)
    try:
        js = nc.jetstream()
        config = (await js.stream_info(TELEMETRY_STREAM)).config
        before = list(config.sources or [])
        if sources is not None:
            config.sources = sources
            await js.update_stream(config)
        return before
    finally:
        await nc.close()


async def _ops_alerts(url: str, **options: str) -> list[Alert]:
    """Every operations alert ALERTS holds, in order."""
    nc = await nats.connect(url, **options)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"alerts.raised.{OPERATIONS_SITE}.>", ordered_consumer=True)
        out: list[Alert] = []
        try:
            while True:
                msg = await sub.next_msg(timeout=1.0)
                out.append(Alert.model_validate_json(msg.data))
        except nats.errors.TimeoutError:
            return out
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def test_a_broken_source_reaches_the_call_centre_not_the_family_and_resolves(
    nats_broker: LocalNats, tmp_path: Path
):
    alert_s = 2.0
    with CallCentreStandIn() as centre, HttpStandIn(path="/") as family:
        reg = tmp_path / "registry.yaml"
        reg.write_text(yaml.safe_dump(registry(centre.url, f"{family.url}push/fam")))
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            state_dir=tmp_path / "state", registry=reg,
            nats=NatsSettings(url=nats_broker.url, source_alert_s=alert_s),
            mqtt=MqttSettings(url=nats_broker.mqtt_url),
            influx=InfluxSettings(url=f"http://127.0.0.1:{free_port()}"),
            escalate=EscalateSettings(http_port=0, secret="ops-test-secret"),
        )  # fmt: skip
        stop = threading.Event()
        escalate = threading.Thread(target=run_service, args=(settings, default_channels, stop),
                                    daemon=True)  # fmt: skip
        watchdog = SourceWatchdog(nats_broker.url, interval_s=0.25, settings=settings.nats)
        watching = threading.Thread(target=watchdog.run, args=(stop,), daemon=True)
        escalate.start()
        watching.start()
        try:
            wait_for(lambda: watchdog.stats.checks >= 2, 20, "the watchdog checking")
            assert watchdog.stats.raised == {}  # provisioned: it flows
            sources = asyncio.run(_set_source(nats_broker.url, []))
            broke = time.monotonic()
            wait_for(lambda: watchdog.stats.raised, 20, "an operations alert")
            took = time.monotonic() - broke
            assert alert_s <= took <= alert_s + 8, took
            [incident, to_sup] = centre.wait_incidents(2, timeout_s=20)
            [raised] = asyncio.run(_ops_alerts(nats_broker.url))
            assert (raised.kind, raised.site, raised.elder) == (
                SOURCE_BROKEN, OPERATIONS_SITE, TELEMETRY_STREAM)  # fmt: skip
            assert {incident.alert_id, to_sup.alert_id} == {raised.id}
            time.sleep(1.0)  # more checks while still broken raise nothing more
            assert watchdog.stats.raised == {TELEMETRY_STREAM: 1}
            assert len(asyncio.run(_ops_alerts(nats_broker.url))) == 1
            asyncio.run(_set_source(nats_broker.url, sources))
            wait_for(lambda: watchdog.stats.resolved, 20, "the alert resolved")
            wait_for(lambda: all(i.closed for i in centre.incidents), 20, "the incidents reset")
            states = [(a.id, a.state) for a in asyncio.run(_ops_alerts(nats_broker.url))]
            assert states == [(raised.id, AlertState.OPEN), (raised.id, AlertState.RESOLVED)]
            assert family.requests == []  # the elder's family heard nothing
            assert len(centre.incidents) == 2
        finally:
            stop.set()
            watching.join(10)
            escalate.join(20)


def test_the_watchdog_user_may_do_its_work_and_a_restart_takes_the_open_alert_over(
    secure_nats: LocalNats, access: BrokerAccess
):
    """On the deployed broker (operator mode) as the `watchdog` service user of `homecare
    devices service`: it reads the streams, raises the alert and reads it back; a
    watchdog started while the source is still broken takes the alert over (no second
    one) and resolves it."""
    admin = {"user_credentials": str(access.service("provision").creds)}
    settings = NatsSettings(url=secure_nats.url, creds_file=access.service("watchdog").creds,
                            source_alert_s=1.0)  # fmt: skip
    stop = threading.Event()
    first = SourceWatchdog(secure_nats.url, interval_s=0.25, settings=settings)
    running = threading.Thread(target=first.run, args=(stop,), daemon=True)
    running.start()
    try:
        wait_for(lambda: first.stats.checks >= 2, 20, "the watchdog checking")
        sources = asyncio.run(_set_source(secure_nats.url, [], **admin))
        wait_for(lambda: first.stats.raised, 20, "an operations alert")
    finally:
        stop.set()
        running.join(10)
    second = SourceWatchdog(secure_nats.url, interval_s=0.25, settings=settings)
    stop = threading.Event()
    running = threading.Thread(target=second.run, args=(stop,), daemon=True)
    running.start()
    try:
        wait_for(lambda: second.stats.checks >= 8, 20, "the new watchdog checking")
        assert second.stats.raised == {}  # still broken, 2 s past alert_s: taken over
        asyncio.run(_set_source(secure_nats.url, sources, **admin))
        wait_for(lambda: second.stats.resolved, 20, "the alert resolved")
    finally:
        stop.set()
        running.join(10)
    states = [(a.id, a.state) for a in asyncio.run(_ops_alerts(secure_nats.url, **admin))]
    [raised] = {a for a, _ in states}
    assert states == [(raised, AlertState.OPEN), (raised, AlertState.RESOLVED)]
