"""A certification session: observe the device, stage the steps, collect the evidence.

The session runs in this order: passive observation for ``duration_s``; a power cycle
(last will and availability); a broker outage when the kit runs the broker itself
(``outage_s``; events staged while it is down); for wearables an SOS press and the
staged test falls and look-alike movements. Everything the device publishes during
the whole session is kept for the checks (:mod:`certify.checks`); the
times when the device was meant to be offline are recorded, so their gaps and late
deliveries are not held against it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.provision import provision
from certify import prompts
from certify.observer import Observed, Observer
from certify.prompts import FALL_MOTIONS, LOOKALIKE_MOTIONS, Operator, StepKind
from certify.reference import Fault, SimulatedDevice
from harness.servers import LocalNats, ServerError
from homecare.contract import OFFLINE, ONLINE, DeviceKind
from homecare.i18n import N_
from homecare.settings import MqttSettings

Log = Callable[[str], None]
PARTITIONS = 4
"""TELEMETRY's partitions on the kit's own broker: one device, nothing to spread."""
PROCEDURE_OUTAGE_S = 30.0
"""The broker outage of the certification procedure; shorter ones are noted in the report."""


@dataclass(frozen=True)
class CertifyOptions:
    """What to certify and how long each part lasts (defaults: the full procedure)."""

    device: str
    kind: DeviceKind
    duration_s: float = 600.0
    """Passive observation before the staged steps."""
    outage_s: float = PROCEDURE_OUTAGE_S
    falls: int = 3
    lookalikes: int = 3
    stage_s: float = 20.0
    """Recording time of each staged fall or look-alike."""
    will_timeout_s: float = 90.0
    """Wait for the last will: the broker notices a dead link after 1.5 × keepalive."""
    online_timeout_s: float = 120.0
    sos_timeout_s: float = 30.0
    reconnect_timeout_s: float = 60.0
    settle_s: float = 3.0
    """Extra time for re-sent messages after a reconnect, and at the end."""


@dataclass(frozen=True, slots=True)
class Window:
    """A time (kit's clock) when the device was meant to be offline, or catching up."""

    start: float
    end: float
    why: str


@dataclass
class PowerCycle:
    asked_off: float
    offline: Observed | None = None
    asked_on: float | None = None
    online: Observed | None = None


@dataclass(frozen=True, slots=True)
class SosPrompt:
    asked: float
    event: Observed | None


@dataclass(frozen=True, slots=True)
class Stage:
    kind: StepKind
    motion: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Outage:
    stopped: float
    restarted: float
    back: Observed | None
    events_asked: int


@dataclass
class Evidence:
    """Everything a session saw and did; the checks judge it afterwards."""

    options: CertifyOptions
    broker: str
    mode: str
    started: float
    ended: float = 0.0
    messages: list[Observed] = field(default_factory=list)
    offline: list[Window] = field(default_factory=list)
    power: PowerCycle | None = None
    sos: SosPrompt | None = None
    stages: list[Stage] = field(default_factory=list)
    outage: Outage | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """Check id → why its step did not run."""
    notes: list[str] = field(default_factory=list)


def _availability(state: str) -> Callable[[Observed], bool]:
    return lambda seen: seen.stream == "availability" and seen.payload.strip() == state.encode()


def _declined(operator: Operator) -> str:
    if operator.interactive:
        return N_("skipped by the operator")
    return N_("operator step: skipped in non-interactive mode")


class Session:
    """One device, one observer, one operator; the broker too when the kit runs it."""

    def __init__(self, options: CertifyOptions, observer: Observer, operator: Operator, *,
                 broker: LocalNats | None, broker_url: str, mode: str, log: Log) -> None:
        self.o = options
        self.observer = observer
        self.operator = operator
        self.broker = broker
        self.log = log
        self.ev = Evidence(options, broker_url, mode, time.time())

    def run(self) -> Evidence:
        o = self.o
        self.log(f"observing {o.device} ({o.kind}) for {o.duration_s:g} s")
        time.sleep(o.duration_s)
        self._power_cycle()
        self._outage()
        if o.kind is DeviceKind.WEARABLE:
            self._sos()
            self._stages()
        else:
            self.ev.skipped |= {"sos_latency": f"a {o.kind} has no SOS button",
                                "fall_test": f"a {o.kind} is not worn"}
        time.sleep(o.settle_s)
        self.ev.ended = time.time()
        self.ev.messages = self.observer.snapshot()
        self.log(f"session over: {len(self.ev.messages)} messages observed")
        return self.ev

    def _power_cycle(self) -> None:
        off, on = prompts.power_off(), prompts.power_on()
        if not self.operator.ready(off):
            self.ev.skipped["availability"] = _declined(self.operator)
            return
        cycle = self.ev.power = PowerCycle(time.time())
        self.operator.go(off)
        self.log(f"waiting up to {self.o.will_timeout_s:g} s for 'offline' (last will)")
        cycle.offline = self.observer.wait(_availability(OFFLINE), since=cycle.asked_off,
                                           timeout_s=self.o.will_timeout_s)
        self.operator.ready(on)
        cycle.asked_on = time.time()
        self.operator.go(on)
        cycle.online = self.observer.wait(_availability(ONLINE), since=cycle.asked_on,
                                          timeout_s=self.o.online_timeout_s)
        back = cycle.online.received if cycle.online else time.time()
        self.ev.offline.append(Window(cycle.asked_off - 1.0, back + self.o.settle_s,
                                      "power cycle"))

    def _outage(self) -> None:
        if self.broker is None:
            self.ev.skipped["outage"] = N_("the kit does not run this broker; run with a "
                                            "local broker (no --broker) to include the outage")
            return
        o = self.o
        step = prompts.outage_events(o.kind, o.outage_s)
        staged = o.kind is not DeviceKind.BED and self.operator.ready(step)
        self.log(f"stopping the broker for {o.outage_s:g} s")
        stopped = time.time()
        self.broker.stop()
        if staged:
            self.operator.go(step)
        time.sleep(max(0.0, stopped + o.outage_s - time.time()))
        self.broker.start()
        restarted = time.time()
        # Back means its 'online' after reconnecting (what the kit had queued may come first);
        # a device that does not announce itself is back with its first message.
        back = self.observer.wait(_availability(ONLINE), since=restarted,
                                  timeout_s=o.reconnect_timeout_s)
        if back is None:
            back = self.observer.wait(lambda _seen: True, since=restarted, timeout_s=0)
        time.sleep(o.settle_s)
        end = (back.received if back else time.time()) + o.settle_s
        self.ev.offline.append(Window(stopped - 1.0, end, "broker outage"))
        self.ev.outage = Outage(stopped, restarted, back, 1 if staged else 0)
        if o.outage_s < PROCEDURE_OUTAGE_S:
            self.ev.notes.append(f"broker outage shortened to {o.outage_s:g} s (the procedure "
                                 f"uses {PROCEDURE_OUTAGE_S:g} s)")

    def _sos(self) -> None:
        step = prompts.sos()
        if not self.operator.ready(step):
            self.ev.skipped["sos_latency"] = _declined(self.operator)
            return
        asked = time.time()
        self.operator.go(step)
        event = self.observer.wait(lambda seen: seen.stream == "sos", since=asked,
                                   timeout_s=self.o.sos_timeout_s)
        self.ev.sos = SosPrompt(asked, event)

    def _stages(self) -> None:
        o = self.o
        plan = [(StepKind.FALL, FALL_MOTIONS[i % len(FALL_MOTIONS)], i, o.falls)
                for i in range(o.falls)]
        plan += [(StepKind.LOOKALIKE, LOOKALIKE_MOTIONS[i % len(LOOKALIKE_MOTIONS)], i,
                  o.lookalikes) for i in range(o.lookalikes)]
        if not plan:
            self.ev.skipped["fall_test"] = N_("no test falls or look-alikes asked (--falls 0 "
                                              "--lookalikes 0)")
            return
        for kind, motion, i, of in plan:
            step = prompts.staged_motion(kind, motion, i + 1, of, o.stage_s)
            if not self.operator.ready(step):
                continue
            start = time.time()
            self.operator.go(step)
            self.log(f"recording {kind} {i + 1} of {of} ({motion}) for {o.stage_s:g} s")
            time.sleep(o.stage_s)
            self.ev.stages.append(Stage(kind, motion, start, start + o.stage_s))
        if not self.ev.stages:
            self.ev.skipped["fall_test"] = _declined(self.operator)


def certify(options: CertifyOptions, *, mqtt: MqttSettings | None = None,
            operator: Operator | None = None, simulate: Fault | None = None, seed: int = 0,
            listen: str | None = None, log: Log = lambda _line: None) -> Evidence:
    """Run one certification session and return its evidence.

    Without ``mqtt.url`` the kit starts its own NATS Server, provisioned as production's
    is before any device connects (``homecare broker provision``), with its MQTT listener
    on loopback (or on ``listen`` ``host:port``, for a device on the network), and can
    stage a broker outage. With ``simulate`` a simulated device (the reference, or a
    faulty one) is the device under test and performs the operator steps itself.
    """
    with contextlib.ExitStack() as stack:
        broker = None
        if mqtt is None or not mqtt.url:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="certify-")))
            where: dict[str, Any] = {}
            if listen:
                host, _, port = listen.rpartition(":")
                where = {"mqtt_host": host or "0.0.0.0", "mqtt_port": int(port)}
            broker = stack.enter_context(LocalNats(root / "nats", **where))
            done = provision(broker.url, mqtt_url=broker.mqtt_url, partitions=PARTITIONS)
            if not done.source.ok:
                raise ServerError(f"the kit's NATS Server is not ready: {done.source.detail}")
            mqtt = MqttSettings(url=broker.mqtt_url)
            log(f"started a local NATS Server, MQTT at {broker.mqtt_url}"
                + (f" (listening on {listen})" if listen else ""))
        device = None
        if simulate is not None:
            password = mqtt.password.get_secret_value() if mqtt.password else None
            device = SimulatedDevice(options.kind, mqtt.url, fault=simulate, seed=seed,
                                     username=mqtt.username, password=password)
            options = replace(options, device=device.device.device)
            operator = device
            mode = f"simulated device ({simulate.name})"
        elif operator is None or not operator.interactive:
            operator = operator or prompts.NoOperator()
            mode = "non-interactive"
        else:
            mode = "interactive"
        observer = Observer(mqtt, options.device,
                            client_id=f"certify-{options.device}-{os.getpid()}-{time.time_ns()}")
        observer.start()
        stack.callback(observer.stop)
        if device is not None:
            device.start()
            stack.callback(device.stop)
        evidence = Session(options, observer, operator, broker=broker, broker_url=mqtt.url,
                           mode=mode, log=log).run()
        if mode == "non-interactive":
            evidence.notes.append("non-interactive: the operator steps (power cycle, SOS, "
                                  "staged falls, events during the outage) were skipped")
    return evidence
