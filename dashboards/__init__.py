"""Grafana dashboards as code (built from the storage schema in :mod:`ingest.points`)."""
