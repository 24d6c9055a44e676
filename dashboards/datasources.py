"""Grafana's InfluxDB datasources, one per InfluxDB, as a provisioning file.

Grafana's InfluxDB datasource takes one URL and has no failover of its own (in server
mode a comma-separated list is refused with a 502: grafana/grafana#18001; failover was
left to a proxy such as HAProxy: #7443, #1496). So each InfluxDB of a district's pair is
its own datasource (``homecare-influxdb-<district>-<primary|replica>``), and every
dashboard's ``InfluxDB`` drop-down (its ``$datasource`` variable) lists them all: when a
district's primary does not answer, a monitor picks its replica there, which holds the
same readings (fed by its own ingest consumer). Without districts there is one
datasource, ``homecare-influxdb``, as before.

>>> from homecare.settings import Settings
>>> doc = datasources(Settings(_env_file=None, districts={"north": {"sites": ["s1"],
...     "primary": "http://influx-n1:8086", "replica": "http://influx-n2:8086"}}))
>>> for d in doc["datasources"]:
...     print(d["uid"], d["url"], d["isDefault"])
homecare-influxdb-north-primary http://influx-n1:8086 True
homecare-influxdb-north-replica http://influx-n2:8086 False
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dashboards.influxql import DATASOURCE_UID
from homecare.settings import REPLICAS, Settings

__all__ = ["DEFAULT_URL", "datasource_uid", "datasources", "write"]

DEFAULT_URL = "http://influxdb:8086"
"""The single store's address in docker compose, when HOMECARE_INFLUX__URL is not set."""


def datasource_uid(district: str | None = None, replica: str = "primary") -> str:
    """The datasource of one InfluxDB (of a district's pair, or the single store).

    >>> datasource_uid(), datasource_uid("north", "replica")
    ('homecare-influxdb', 'homecare-influxdb-north-replica')
    """
    return DATASOURCE_UID if district is None else f"{DATASOURCE_UID}-{district}-{replica}"


def _source(uid: str, name: str, url: str, database: str, default: bool) -> dict[str, Any]:
    return {
        "name": name, "uid": uid, "type": "influxdb", "access": "proxy", "url": url,
        "isDefault": default, "editable": False, "user": "homecare_reader",
        "database": database,
        "jsonData": {"version": "InfluxQL", "dbName": database, "httpMode": "POST",
                     "timeInterval": "10s"},
        "secureJsonData": {"password": "$INFLUXDB_READ_PASSWORD"},
    }  # fmt: skip


def datasources(settings: Settings) -> dict[str, Any]:
    """The provisioning document: every district's pair, or the single store."""
    database = settings.influx.database
    if not settings.districts:
        url = settings.influx.url or DEFAULT_URL
        sources = [_source(datasource_uid(), "InfluxDB (homecare)", url, database, True)]
    else:
        pairs = [(n, d, r) for n, d in settings.districts.items() for r in REPLICAS
                 if r == "primary" or d.replica]  # fmt: skip
        sources = [
            _source(datasource_uid(name, replica), f"InfluxDB {name} ({replica})",
                    district.url(replica), database, default=i == 0)
            for i, (name, district, replica) in enumerate(pairs)
        ]  # fmt: skip
    return {"apiVersion": 1, "datasources": sources}


def write(settings: Settings, path: Path) -> Path:
    """Write :func:`datasources` to ``path`` (Grafana's provisioning/datasources folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (
        "# Made by `homecare dashboards datasources` from HOMECARE_INFLUX__* and "
        "HOMECARE_DISTRICTS.\n# One datasource per InfluxDB: Grafana has no failover "
        "between two URLs; a monitor picks\n# the replica in each dashboard's InfluxDB "
        "drop-down when the primary does not answer.\n"
    )
    path.write_text(head + yaml.safe_dump(datasources(settings), sort_keys=False))
    return path
