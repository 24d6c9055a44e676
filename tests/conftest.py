"""Fixtures that start the real servers: Mosquitto and influxd on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from homecare.servers import LocalBroker, LocalInflux


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A fresh Mosquitto for one test (persistence on, in a temp folder)."""
    with LocalBroker(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[LocalInflux]:
    """A fresh influxd for one test (its data in a temp folder)."""
    with LocalInflux(tmp_path / "influxd") as server:
        yield server
