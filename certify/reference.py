"""The reference device: one of the simulator's devices, performing the kit's staged steps.

:class:`SimulatedDevice` publishes one device of a :class:`~device_sim.homes.Simulation`
in real time on its own :class:`~device_sim.publisher.MqttLink` (QoS 1, last will,
persistent session, re-sending after a broker outage), and is also the kit's
:class:`~certify.prompts.Operator`: asked to power off it drops its
connection without a goodbye (the broker publishes its will), to power on it
reconnects, it presses SOS, opens the door, walks past the living room's motion sensor,
sits on the chair mat and gets up, and performs test falls and look-alike movements from
:mod:`device_sim.motions`. The elder is kept sitting with the
wearable on (whatever the hour of the simulated routine), so frames always flow.

A :class:`Fault` changes what goes on the wire; the reference has none.
:mod:`certify.faulty` holds the deliberately faulty ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from certify.prompts import Step, StepKind
from device_sim.fleet import link_options
from device_sim.homes import Away, Motion, SimConfig, SimDevice, Simulation, SosPress
from device_sim.motions import motion
from device_sim.publisher import MqttLink
from device_sim.routine import Activity, Posture
from homecare.contract import EVENT_STREAMS, OFFLINE, ONLINE, DeviceKind, DoorRole, Topic

T = TypeVar("T")
WEEK_S = 7 * 86400.0
MOTION_BEFORE_S = 4.0
"""A staged movement is played from this long before its impact ..."""
MOTION_AFTER_S = 14.0
"""... to this long after it: the fall detector decides within 13 s of an impact."""
PIR_TIMEOUT_S = 5.0
"""The reference motion sensor clears this long after the motion it saw: short, so each
staged walk-past (seconds apart) is a detection of its own."""
AMBIENT = frozenset({DeviceKind.MOTION, DeviceKind.MAT})
"""The kinds fitted to a home's rooms and furniture, not to the elder."""


@dataclass(frozen=True)
class Fault:
    """How a device departs from the contract; this base departs in nothing (the reference)."""

    name: str = "reference"
    will: bool = True
    event_qos: int = 1
    rate: int = 50
    retain_online: bool = True
    """Whether ``online`` goes out retained (apps read presence from the retained state)."""

    def topic(self, topic: Topic) -> str:
        """The topic the device publishes ``topic``'s messages on."""
        return str(topic)

    def payload(self, topic: Topic, payload: bytes) -> bytes | None:
        """What the device sends instead of ``payload`` (None: nothing)."""
        return payload


class SimulatedDevice:
    """One simulated device on its own connection, driven from the kit's thread."""

    interactive = False

    def __init__(self, kind: DeviceKind, url: str, *, fault: Fault | None = None, seed: int = 0,
                 site: str = "cert", status_period_s: int = 10, keepalive_s: int = 30,
                 username: str | None = None, password: str | None = None) -> None:
        self.fault = fault or Fault()
        self.sim = Simulation(SimConfig(
            elders=1, seed=seed, site=site, start=float(math.floor(time.time())),
            rate=self.fault.rate, status_period_s=status_period_s,
            ambient=1.0 if kind in AMBIENT else 0.0,
        ))
        elder = self.sim.elders[0]
        self.device: SimDevice = {
            DeviceKind.WEARABLE: elder.wearable, DeviceKind.BED: elder.bed,
            DeviceKind.DOOR: elder.door, **{d.kind: d for d in elder.ambient
                                            if d.room == "living_room"},
        }[kind]
        self.options = link_options(url, keepalive_s=keepalive_s, username=username,
                                    password=password)
        self.rng = np.random.default_rng([seed, 0xCE])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"sim-{self.device.device}")
        self._link: MqttLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        # The elder sits with the wearable on; a door hub sees one trip to the bathroom.
        self._away(doors=((2.0, DoorRole.BATHROOM),) if kind is DeviceKind.DOOR else ())

    # -- the device's life ----------------------------------------------------------

    def start(self) -> None:
        """Connect (announcing ``online``) and publish every second, until :meth:`stop`."""
        self._thread.start()
        self._call(self._power_on())
        self._call(self._start_publishing())
        if self.device.kind in AMBIENT:
            self._touch(2.0)  # someone walks past, or sits down, once while it is observed

    def stop(self) -> None:
        """Publish ``offline`` and disconnect cleanly, as a device shut down properly."""
        async def shutdown() -> None:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            link = self._link
            if link is not None and link.connected:
                self._drained.clear()
                self._send(self.device.availability, OFFLINE.encode(), retain=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await self._drained.wait()
            if link is not None:
                await link.close()

        try:
            self._call(shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def _do(self, fn: Callable[[], None]) -> None:
        async def run() -> None:
            fn()

        self._call(run())

    async def _start_publishing(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._publish_seconds())

    async def _publish_seconds(self) -> None:
        """Each wall-clock second, the simulated second that just ended, as a device would."""
        t = self.sim.clock
        me = self.device.device
        while True:
            delay = t + 1.0 - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for topic, payload in self.sim.step(t, 1.0):
                if topic.device == me:
                    self._send(topic, payload)
            t += 1.0

    def _send(self, topic: Topic, payload: bytes, *, retain: bool = False) -> None:
        link = self._link
        if link is None or link.killed:
            return  # powered off: nothing is measured, nothing is sent
        out = self.fault.payload(topic, payload)
        if out is None:
            return
        qos = self.fault.event_qos if topic.stream in EVENT_STREAMS else 1
        link.publish(self.fault.topic(topic).encode(), out, 0, retain=retain, qos=qos)

    def _online(self) -> None:
        self._send(self.device.availability, ONLINE.encode(), retain=self.fault.retain_online)

    async def _power_on(self) -> None:
        will = None
        if self.fault.will:
            will = (self.fault.topic(self.device.availability), OFFLINE.encode())
        link = MqttLink(f"cert-{self.device.site}-{self.device.device}", self.options,
                        self._on_ack, will=will, on_reconnect=self._online)
        await link.start()
        self._link = link
        self._online()

    def _on_ack(self, _token: int) -> None:
        if self._link is not None and not self._link.inflight:
            self._drained.set()

    async def _power_off(self) -> None:
        if self._link is not None:
            self._link.kill()  # no DISCONNECT: the broker publishes the will

    # -- the staged steps (Operator) ------------------------------------------------

    def ready(self, step: Step) -> bool:
        return step.kind in self.steps

    @property
    def steps(self) -> frozenset[StepKind]:
        common = {StepKind.POWER_OFF, StepKind.POWER_ON, StepKind.OUTAGE_EVENTS}
        if self.device.kind is DeviceKind.WEARABLE:
            common |= {StepKind.SOS, StepKind.FALL, StepKind.LOOKALIKE}
        return frozenset(common)

    def go(self, step: Step) -> None:
        if step.kind is StepKind.POWER_OFF:
            self._call(self._power_off())
        elif step.kind is StepKind.POWER_ON:
            self._call(self._power_on())
        elif step.kind is StepKind.SOS or (
            step.kind is StepKind.OUTAGE_EVENTS and self.device.kind is DeviceKind.WEARABLE
        ):
            now = time.time()
            self._do(lambda: self.sim.inject(0, now, SosPress()))
        elif step.kind is StepKind.OUTAGE_EVENTS and self.device.kind is DeviceKind.DOOR:
            self._away(doors=((0.0, DoorRole.FRONT),))
        elif step.kind is StepKind.OUTAGE_EVENTS and self.device.kind in AMBIENT:
            self._touch(0.0)
        elif step.kind in (StepKind.FALL, StepKind.LOOKALIKE) and step.motion:
            self._perform(step.motion)

    def _away(self, doors: tuple[tuple[float, DoorRole], ...]) -> None:
        """Sit with the wearable on from now (doors opening at the given offsets)."""
        sim, now = self.sim, max(self.sim.clock, time.time())
        event = Away(WEEK_S, Activity.SIT, Posture.SEATED, worn=True, doors=doors)
        if self._thread.is_alive():
            self._do(lambda: sim.inject(0, now, event))
        else:
            sim.inject(0, now, event)

    def _touch(self, after_s: float) -> None:
        """Walk past the motion sensor (detected, cleared after its timeout), or sit on the
        chair mat for 8 s, starting ``after_s`` from now."""
        sim, now = self.sim, max(self.sim.clock, time.time()) + after_s
        device = self.device
        kind, place = ("motion", "living_room") if device.kind is DeviceKind.MOTION \
            else ("mat", "chair")
        sensor = "pir-living_room" if kind == "motion" else "chair-mat"
        hold = PIR_TIMEOUT_S if kind == "motion" else 8.0

        def touch() -> None:
            sim.sense(0, (now, sensor, kind, place, 1.0))
            sim.sense(0, (now + hold, sensor, kind, place, 0.0))

        if self._thread.is_alive():
            self._do(touch)
        else:
            touch()

    def _perform(self, name: str) -> None:
        _, xyz, info = motion(name, self.rng, rate=self.fault.rate)
        rate = self.fault.rate
        at = info["impact_t"] if info["impact_t"] is not None else MOTION_BEFORE_S + 1.0
        lo = max(0, round((at - MOTION_BEFORE_S) * rate))
        samples = xyz[lo : round((at + MOTION_AFTER_S) * rate)].astype(np.float64)
        now = time.time()
        self._do(lambda: self.sim.inject(0, now, Motion(samples)))
