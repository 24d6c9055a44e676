"""The live bridge: Zigbee2MQTT's broker in, the platform's MQTT listener out.

Subscribes to ``<base_topic>/#`` on the broker Zigbee2MQTT publishes to (usually its own
Mosquitto in the home's gateway), translates every message (:class:`Adapter`) and
publishes the contract messages at QoS 1 (availability retained) to the platform's MQTT
listener with :class:`homecare.mqtt_publish.MqttPublisher`. Dead letters are logged at
WARNING and, with ``dead_letters``, appended to a JSON-lines file; the bridge carries on.

The account it publishes with must be allowed the topics of every mapped device (on the
secured broker: one account per home gateway; ``homecare devices`` provisions per device).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from homecare.errors import BrokerError
from homecare.mqtt_publish import MqttPublisher
from homecare.settings import MqttSettings
from zigbee.adapter import Adapter, DeadLetter

__all__ = ["Bridge", "BridgeCounts"]

log = logging.getLogger(__name__)


class BridgeCounts:
    """What the bridge did, for its log and tests."""

    def __init__(self) -> None:
        self.received = 0
        self.published = 0
        self.dead = 0
        self.lock = threading.Lock()


class Bridge:
    """Zigbee2MQTT → contract, live; ``run`` until ``stop``."""

    def __init__(
        self,
        adapter: Adapter,
        source: MqttSettings,
        target: MqttSettings,
        *,
        client_id: str = "homecare-zigbee",
        dead_letters: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.adapter = adapter
        self.source = source
        self.target = target
        self.client_id = client_id
        self.dead_letters = dead_letters
        self.clock = clock
        self.counts = BridgeCounts()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._publisher: MqttPublisher | None = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def run(self) -> None:
        """Connect both sides and bridge until :meth:`stop`."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{self.client_id}-in",
            protocol=mqtt.MQTTv311, clean_session=True,
        )  # fmt: skip
        if self.source.username:
            password = self.source.password.get_secret_value() if self.source.password else None
            client.username_pw_set(self.source.username, password)
        if self.source.tls:
            client.tls_set(ca_certs=str(self.source.ca_file) if self.source.ca_file else None)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 5)
        with MqttPublisher(self.target, client_id=f"{self.client_id}-out") as publisher:
            self._publisher = publisher
            try:
                client.connect(self.source.host, self.source.port, self.source.keepalive_s)
            except OSError as exc:
                raise BrokerError(f"Zigbee2MQTT's broker {self.source.url}: {exc}") from exc
            client.loop_start()
            try:
                while not self._stop.wait(0.2):
                    pass
            finally:
                client.disconnect()
                client.loop_stop()
                self._publisher = None

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("Zigbee2MQTT's broker %s refused the bridge: %s", self.source.url, reason)
            return
        c.subscribe(self.adapter.subscription(), qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: Any, _r: Any, _p: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        out, dead = self.adapter.translate(msg.topic, bytes(msg.payload), received=self.clock())
        publisher = self._publisher
        with self.counts.lock:
            self.counts.received += 1
            self.counts.dead += len(dead)
        for message in out:
            if publisher is not None:
                publisher.publish(message.topic, message.payload, retain=message.retain)
                with self.counts.lock:
                    self.counts.published += 1
        for letter in dead:
            self._dead(letter)

    def _dead(self, letter: DeadLetter) -> None:
        log.warning("dead letter from %s: %s: %s", letter.topic[:200], letter.reason,
                    letter.detail)  # fmt: skip
        if self.dead_letters is not None:
            with self.dead_letters.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"ts": self.clock(), **letter.as_dict()}) + "\n")
