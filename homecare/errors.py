"""One exception base for the project, and a small tree per layer.

``except HomecareError`` catches every failure the project raises on purpose; a layer's
base catches one kind of failure wherever it comes from (a command line turns a
:class:`ConfigError` into "fix your settings", a service retries a :class:`StorageError`).
Each concrete error lives beside the code that raises it and derives from one of these:

* :class:`DataError`: input that breaks the contract (a message, a trace file):
  ``homecare.contract.ContractError``, ``evaluation.replay.TraceError``;
* :class:`ConfigError`: settings, a registry, an account or a certificate that cannot be
  used: ``escalation.registry.RegistryError``, ``devices.access.AccessError``,
  ``devices.claims.ClaimsError``, ``devices.tls.TlsError``;
* :class:`StorageError`: a store refused or failed: ``homecare.influx.InfluxError`` (and
  ``InfluxUnavailable``), ``ingest.rollups.RollupError``, ``ingest.service.IngestError``;
* :class:`BrokerError`: the broker could not be reached, refused us or did not
  acknowledge: ``homecare.consumer.ConsumerError`` (and ``homecare.jetstream.SourceMissing``),
  ``homecare.mqtt_publish.MqttPublishError``, ``device_sim.publisher.MqttError``,
  ``device_sim.fleet.FleetError``, ``certify.observer.ObserverError``;
* :class:`DeliveryError`: a message to a person or a peer did not go (call centre,
  webhook, e-mail, Grafana): ``escalation.channels.transport.TransportError``,
  ``dashboards.publish.PushError``;
* :class:`ServiceError`: a process the project starts did not start:
  ``harness.servers.ServerError``.

The layer bases keep the standard base each error had (``ValueError`` for bad input or
configuration, ``RuntimeError`` for the rest), so an existing ``except ValueError`` still
catches what it did. A foreign exception (httpx, paho, sqlite3, YAML…) is converted where
it enters, with ``raise ... from exc``, and the message names what failed: the device, the
topic, the elder, the server, and the reason.

>>> from homecare.contract import ContractError
>>> topic = "homecare/v1/s/e1/bed/b1/reading"
>>> err = ContractError("not_json", "unexpected end of data", topic=topic)
>>> isinstance(err, DataError), isinstance(err, HomecareError), isinstance(err, ValueError)
(True, True, True)
>>> print(err)
homecare/v1/s/e1/bed/b1/reading: not_json: unexpected end of data
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "ConfigError",
    "DataError",
    "DeliveryError",
    "HomecareError",
    "ServiceError",
    "StorageError",
]


class HomecareError(Exception):
    """Every failure the project raises on purpose."""


class DataError(HomecareError, ValueError):
    """Input that breaks the contract: a device's message, a trace file."""


class ConfigError(HomecareError, ValueError):
    """Settings, a registry, an account or a certificate that cannot be used as given."""


class StorageError(HomecareError, RuntimeError):
    """A store (InfluxDB, the spool) refused or failed."""


class BrokerError(HomecareError, RuntimeError):
    """The MQTT broker could not be reached, refused us, or did not acknowledge in time."""


class DeliveryError(HomecareError, RuntimeError):
    """A message to a person or a peer (call centre, webhook, e-mail, Grafana) did not go."""


class ServiceError(HomecareError, RuntimeError):
    """A process the project starts (a local server, a service) did not start."""
