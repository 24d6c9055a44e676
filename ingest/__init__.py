"""Ingest: TELEMETRY (NATS JetStream) → validate against the wire contract → InfluxDB,
acknowledged only once stored."""

from homecare.edge import RawMessage
from ingest.points import Converter, Points
from ingest.service import IngestService, IngestStats

__all__ = ["Converter", "IngestService", "IngestStats", "Points", "RawMessage"]
