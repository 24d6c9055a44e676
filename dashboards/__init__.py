"""Grafana dashboards as code (built from the storage schema in :mod:`ingest.points`).

:mod:`dashboards.boards` defines the four dashboards with the grafana-foundation-sdk,
:mod:`dashboards.influxql` the InfluxQL targets the SDK lacks, :mod:`dashboards.publish`
renders them to JSON and pushes them to a Grafana, :mod:`dashboards.cli` is
``homecare dashboards``; :mod:`dashboards.report` is the families' weekly picture.
"""

__all__ = ["cli", "report"]
"""Modules the rest of the project imports; the others are this package's own."""
