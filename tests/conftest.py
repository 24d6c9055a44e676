"""Fixtures that start the real servers: Mosquitto and influxd on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness.servers import LocalBroker, LocalInflux
from homecare.influx import InfluxClient
from homecare.settings import InfluxSettings

if TYPE_CHECKING:
    from week import Week


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


@pytest.fixture(scope="session")
def week_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalInflux, Week]]:
    """One influxd for the session holding a simulated week of three elders (tests/week.py)."""
    from week import write_week  # only the tests that use the week pay for its imports

    with LocalInflux(tmp_path_factory.mktemp("week") / "influxd") as server:
        with InfluxClient(InfluxSettings(url=server.url, database="homecare")) as client:
            client.create_database()
            week = write_week(client)
        yield server, week
