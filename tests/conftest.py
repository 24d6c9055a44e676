"""Fixtures that start the real servers (nats-server and influxd on free loopback ports), the
tests' clock, and the lanes every test is sorted into.

Lanes (markers set here, at collection, so a new test cannot be forgotten):

* ``integration`` (alias ``servers``): the test starts a real server or a ``homecare``
  process — through a fixture (``broker``, ``influx``, ``week_influx``...) or in its own
  code. Found by reading the source of the test, of the module functions it calls and of
  every fixture it uses, for :data:`STARTS_SERVERS`.
  Or marked ``slow``: seconds of CPU without a server (a whole simulation, thousands of
  fuzz examples), which would take the unit lane past its 30 s.
* ``unit``: everything else, doctests included. A unit test that starts a server anyway
  fails at once (:func:`_no_server_in_the_unit_lane`).
* ``clock``: the test reads the tests' clock (the ``wall_clock`` fixture, directly or through
  another fixture such as ``week_influx``). ``scripts/test.sh`` reruns these at fixed fake
  instants (``--clock``), so a test that passes only at some hours or on some days fails.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import time_machine

from broker.provision import provision
from devices.access import BrokerAccess
from devices.tls import Ca, make_ca
from harness import servers
from harness.servers import LocalInflux, LocalNats
from homecare.influx import InfluxClient
from homecare.settings import InfluxSettings, NatsSettings

if TYPE_CHECKING:
    from week import Week

CLOCK_ENV = "HOMECARE_TEST_CLOCK"
STARTS_SERVERS = re.compile(
    r"\b(LocalNats|LocalNatsCluster|LocalInflux|subprocess|Popen|IngestProcess)\b"
)
"""What in a test's source (or a fixture's, or a helper's) means it starts a server or a
process of its own."""
_clock_key = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--clock",
        default=os.environ.get(CLOCK_ENV) or None,
        metavar="ISO",
        help="The instant (ISO 8601, UTC unless an offset is given) the clock-sensitive tests "
        f"run at, e.g. 2027-01-31T23:58:00Z (default: ${CLOCK_ENV}, else now).",
    )


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, … under pytest -n N
    if worker:  # each worker, and the servers it starts, takes ports from a band of its own
        os.environ[servers.PORT_BAND_ENV] = (
            f"{int(worker.removeprefix('gw'))}/{os.environ['PYTEST_XDIST_WORKER_COUNT']}"
        )
    text = config.getoption("clock")
    if text is None:
        now = float(int(time.time()))  # the one read of the real clock
        config.stash[_clock_key] = now
        if config.getoption("numprocesses", None):  # the workers read the same instant
            os.environ[CLOCK_ENV] = datetime.fromtimestamp(now, UTC).isoformat()
        return
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--clock {text!r} is not an ISO 8601 instant") from exc
    config.stash[_clock_key] = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def pytest_report_header(config: pytest.Config) -> str:
    iso = datetime.fromtimestamp(config.stash[_clock_key], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"tests' clock: {iso} (rerun at the same instant with --clock={iso})"


@pytest.fixture(scope="session")
def wall_clock(pytestconfig: pytest.Config) -> float:
    """The tests' "now" (unix seconds): ``--clock`` or ``$HOMECARE_TEST_CLOCK``, else the
    real time at the start of the session. Data that a test places in time is placed
    from here, never from ``time.time()``."""
    return pytestconfig.stash[_clock_key]


@pytest.fixture
def travel(wall_clock: float) -> Iterator[float]:
    """The code under test reads the tests' clock too: ``time.time()``, ``datetime.now()``
    and ``date.today()`` start at ``wall_clock`` and tick on (time-machine). Pure Python only:
    influxd and Mosquitto keep the real time, so server tests place data from ``wall_clock``
    instead."""
    with time_machine.travel(wall_clock, tick=True):
        yield wall_clock


def _sources(item: pytest.Item) -> Iterator[str]:
    """The source of the test, of every fixture it uses, and of the functions of their
    modules that they call (transitively)."""
    func = getattr(item, "function", None)
    if func is None:  # a doctest
        return
    todo: list[Any] = [func]
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures is not None:
        todo += [d.func for defs in fixtures.name2fixturedefs.values() for d in defs]
    seen: set[Any] = set()
    while todo:
        f = inspect.unwrap(todo.pop())
        if f in seen or not inspect.isfunction(f):
            continue
        seen.add(f)
        try:
            yield inspect.getsource(f)
        except (OSError, TypeError):
            continue
        home = inspect.getmodule(f)
        codes = [f.__code__]
        while codes:  # the function's own names, and its nested functions' and lambdas'
            code = codes.pop()
            codes += [c for c in code.co_consts if inspect.iscode(c)]
            for name in code.co_names:
                called = getattr(home, name, None)
                if inspect.isfunction(called) and inspect.getmodule(called) is home:
                    todo.append(called)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        explicit = {m.name for m in item.iter_markers()} & {"servers", "integration", "slow"}
        if explicit or any(STARTS_SERVERS.search(src) for src in _sources(item)):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.servers)
        else:
            item.add_marker(pytest.mark.unit)
        if "wall_clock" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.clock)


@pytest.fixture(autouse=True)
def _no_server_in_the_unit_lane(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit test that starts Mosquitto or influxd fails with what to do about it."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(self: object) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts a server ({type(self).__name__}) but was sorted into "
            "the unit lane: take the server from a fixture (nats_broker, influx) or mark it "
            "@pytest.mark.integration"
        )

    monkeypatch.setattr(servers._LocalServer, "start", refuse)


@pytest.fixture
def nats_broker(tmp_path: Path) -> Iterator[LocalNats]:
    """A fresh NATS Server (JetStream file store in a temp folder, MQTT listener), provisioned
    as ``homecare broker provision`` does before any device connects (8 partitions, a short
    ack wait so a test sees redelivery within seconds)."""
    with LocalNats(tmp_path / "nats") as server:
        done = provision(server.url, mqtt_url=server.mqtt_url, partitions=8, ack_wait_s=5.0)
        assert done.source.ok, done.source.detail
        yield server


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Ca, Path, Path]:
    """A CA and the MQTT listener's certificate for 127.0.0.1 (devices.tls)."""
    ca = make_ca(tmp_path / "ca")
    cert, key = ca.issue_server(tmp_path / "broker-tls", ["127.0.0.1", "localhost"])
    return ca, cert, key


@pytest.fixture
def access(tmp_path: Path) -> BrokerAccess:
    """An operator, its accounts and an empty device registry (devices.access)."""
    access = BrokerAccess(tmp_path / "access")
    access.init(resolver_dir=str(tmp_path / "jwt"))
    return access


@pytest.fixture
def secure_nats(
    tmp_path: Path, pki: tuple[Ca, Path, Path], access: BrokerAccess
) -> Iterator[LocalNats]:
    """NATS Server in operator mode with ``access``'s accounts, its MQTT listener on TLS,
    provisioned by the ``provision`` service user before any device connects."""
    ca, cert, key = pki
    provisioner = access.service("provision")
    with LocalNats(tmp_path / "nats", auth=access.conf_path, tls=(cert, key)) as server:
        done = provision(server.url, mqtt_url=server.mqtt_url, partitions=8, ack_wait_s=5.0,
                         settings=NatsSettings(url=server.url, creds_file=provisioner.creds),
                         mqtt_user="provision", mqtt_password=provisioner.password,
                         mqtt_ca_file=ca.cert)  # fmt: skip
        assert done.source.ok, done.source.detail
        yield server


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[LocalInflux]:
    """A fresh influxd for one test (its data in a temp folder)."""
    with LocalInflux(tmp_path / "influxd") as server:
        yield server


@pytest.fixture
def influx_db(influx: LocalInflux) -> Iterator[InfluxClient]:
    """A client of ``influx``'s database ``homecare``, closed after the test whether it passed
    or not (a socket left open is reported, as an error, in whichever later test the
    collector happens to run)."""
    with InfluxClient(InfluxSettings(url=influx.url, database="homecare")) as client:
        yield client


@pytest.fixture(scope="session")
def week_influx(
    tmp_path_factory: pytest.TempPathFactory, wall_clock: float
) -> Iterator[tuple[LocalInflux, Week]]:
    """One influxd for the session holding a simulated week of three elders (tests/week.py),
    ending at the tests' clock. Eight days: the usual heart-rate band averages the seven
    days before the board's week, each with 12 worn hours; with seven days, the week's
    last day had too few of them at some hours (17:10 UTC, for one)."""
    from week import write_week  # only the tests that use the week pay for its imports

    with LocalInflux(tmp_path_factory.mktemp("week") / "influxd") as server:
        with InfluxClient(InfluxSettings(url=server.url, database="homecare")) as client:
            client.create_database()
            week = write_week(client, end=wall_clock, days=8)
        yield server, week
