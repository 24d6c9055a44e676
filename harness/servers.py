"""Start a real Mosquitto and a real influxd on loopback, for the demo, tests and benchmarks.

Each server gets its own config and data under one folder and a free port; it is
stopped (or killed, or restarted on the same port and data) by the caller. Nothing
here is a stand-in: these are the Debian ``mosquitto`` and ``influxdb`` servers.

"""

from __future__ import annotations

import contextlib
import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from homecare.errors import ServiceError
from homecare.influx import quote_literal
from homecare.runtime import stop_process


class ServerError(ServiceError):
    """A local server could not be started; the message carries the tail of its log."""


LOWEST_PORT = 10000
_PORTS_GIVEN: set[int] = set()
_PORTS_LOCK = threading.Lock()


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections' source ports."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: any outgoing connection may take it as
    its source port before the server binds it, or while a server restarts on it
    ("Address already in use", seen in CI). Below the range only our servers bind, and
    a port is handed out once per process: servers started in parallel threads, or one
    stopped for an outage and about to restart on its port, never get each other's.
    """
    low = _ephemeral_low()
    with _PORTS_LOCK:
        if low - 1 > LOWEST_PORT:
            for _ in range(100):
                port = random.randint(LOWEST_PORT, low - 1)
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
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        try:
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


class LocalBroker(_LocalServer):
    """Mosquitto on a loopback port, with persistence so sessions survive a restart.

    ``max_queued_messages 0`` and ``max_inflight_messages 0`` lift Mosquitto's
    defaults (1,000 queued, 20 in flight), which would otherwise drop QoS 1 readings
    for a slow subscriber and throttle ingest's acknowledged stream.
    """

    name = "mosquitto"

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        extra_config: str = "",
        *,
        tls: tuple[Path, Path] | None = None,
        access: Path | None = None,
        autosave_s: int = 5,
    ) -> None:
        super().__init__(root)
        self.port = port or free_port()
        self.autosave_s = autosave_s
        """Seconds between saves of the whole database; 0: only on exit. Short for the
        fault tests (a kill -9 loses less); 0 in the benchmarks, where a save (it rewrites
        every queued message, and deliveries wait meanwhile) would land in one phase and
        not another and skew the ratios between them."""
        self.extra_config = extra_config
        self.tls = tls
        """(certificate, key): also listen with TLS on :attr:`tls_port`."""
        self.tls_port = free_port() if tls else None
        self.access = access
        """A :class:`~devices.access.BrokerAccess` folder: accounts and ACL, no anonymous."""
        (root / "data").mkdir(exist_ok=True)

    def _command(self) -> list[str]:
        conf = self.root / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # As root Mosquitto would switch to user "mosquitto", who cannot write our folder.
            f"user {getpass.getuser()}\n"
            + (
                f"allow_anonymous false\npassword_file {self.access.resolve() / 'passwd'}\n"
                f"acl_file {self.access.resolve() / 'acl'}\n"
                # A client's id is its user name: no account can take over another's session.
                # (A listener's option: repeated for the TLS listener.)
                "use_username_as_clientid true\n"
                if self.access
                else "allow_anonymous true\n"
            )
            + "persistence true\n"
            f"persistence_location {self.root / 'data'}/\n"
            f"autosave_interval {self.autosave_s}\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "max_packet_size 1048576\n"
            "set_tcp_nodelay true\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + (
                f"listener {self.tls_port} 127.0.0.1\n"
                f"certfile {self.tls[0].resolve()}\nkeyfile {self.tls[1].resolve()}\n"
                + ("use_username_as_clientid true\n" if self.access else "")
                if self.tls
                else ""
            )
            + f"{self.extra_config}"
        )
        return [_require("mosquitto", "mosquitto"), "-c", str(conf)]

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def reload(self) -> None:
        """Re-read the password file and ACL (SIGHUP), as ``homecare devices revoke`` asks."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)


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
