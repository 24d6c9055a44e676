"""docker-compose.yml stays valid and matched to the code (Debian's docker-compose validates it)."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app
from devices.access import SERVICE_RIGHTS
from harness.servers import LocalBroker

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_with_the_example_env(tmp_path):
    for name in ("docker-compose.yml", "deploy", ".env.example"):
        src = ROOT / name
        dst = tmp_path / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    result = subprocess.run(["docker-compose", "config", "-q"], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


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


def test_mosquitto_config_never_drops_queued_readings():
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert "max_queued_messages 0" in conf
    assert "allow_anonymous false" in conf


def test_grafana_is_pinned_provisioned_and_reads_with_the_read_only_account():
    services = _compose()["services"]
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana:11\.6\.\d+", grafana["image"])
    assert grafana["restart"] == "unless-stopped"
    assert "healthcheck" in grafana
    assert "grafana-data:/var/lib/grafana" in grafana["volumes"]
    assert "${GRAFANA_ADMIN_PASSWORD:?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/influxdb.yml").read_text()
    )["datasources"][0]
    influxdb = services["influxdb"]["environment"]
    assert datasource["user"] == influxdb["INFLUXDB_READ_USER"]
    assert datasource["secureJsonData"]["password"] == "$INFLUXDB_READ_PASSWORD"
    assert grafana["environment"]["INFLUXDB_READ_PASSWORD"] == (
        influxdb["INFLUXDB_READ_USER_PASSWORD"]
    )
    assert datasource["url"] == "http://influxdb:8086"


def test_homecare_services_use_tls_their_own_broker_account_and_no_literal_secret():
    services = _compose()["services"]
    accounts = {}
    for name in ("ingest", "detect", "escalate", "privacy", "sim"):
        env = services[name]["environment"]
        assert env["HOMECARE_MQTT__URL"] == "mqtts://mosquitto:8883", name
        assert env["HOMECARE_MQTT__CA_FILE"] == "/etc/homecare/ca.crt", name
        assert any(v.endswith(":/etc/homecare/ca.crt:ro") for v in services[name]["volumes"])
        accounts[name] = env["HOMECARE_MQTT__USERNAME"]
    assert len(set(accounts.values())) == len(accounts)  # nobody shares an account
    stack = ("ingest", "detect", "escalate", "privacy")  # the app backend is not in the stack
    assert {accounts[s] for s in stack} == set(stack) <= set(SERVICE_RIGHTS)
    command = services["mosquitto"]["command"][0]
    for account in stack:  # the broker learns every service password from .env
        assert f'/mosquitto/access/passwd {account} "$$MQTT_{account.upper()}_PASSWORD"' in (
            command)
    assert list(services["mosquitto"]["ports"]) == ["${MQTTS_PORT:-8883}:8883"]  # TLS only
    for name, service in services.items():
        env = service.get("environment") or {}
        for key, value in (env.items() if isinstance(env, dict) else []):
            if "PASSWORD" in key or "SECRET" in key:
                assert str(value).startswith("${"), (name, key)
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if "PASSWORD" in key or "SECRET" in key:
            assert value in ("",) or value.startswith("change-me"), key


class DeployedBroker(LocalBroker):
    """The real Mosquitto running deploy/mosquitto/mosquitto.conf, its paths moved here."""

    def _command(self) -> list[str]:
        conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
        conf = conf.replace("listener 8883", f"listener {self.port} 127.0.0.1")
        conf = conf.replace("/mosquitto/access/", f"{self.access}/")
        conf = conf.replace("/mosquitto/data/", f"{self.root / 'data'}/")
        conf = conf.replace("log_dest stdout", f"user {getpass.getuser()}")
        (self.root / "deployed.conf").write_text(conf)
        return ["mosquitto", "-c", str(self.root / "deployed.conf")]


def test_the_deployed_broker_config_serves_tls_to_accounts_only(tmp_path):
    """What docker-compose starts: `homecare devices ca init` writes the access folder, the
    entrypoint adds service passwords with the real mosquitto_passwd, Mosquitto serves TLS."""
    access = tmp_path / "access"
    env = {"PATH": os.environ["PATH"], "HOMECARE_STATE_DIR": str(tmp_path / "admin")}
    result = CliRunner().invoke(app, ["devices", "ca", "init", "--host", "127.0.0.1",
                                      "--host", "mosquitto", "--dir", str(access)], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "admin" / "ca" / "ca.key").exists()
    assert not (access / "ca.key").exists()  # the CA's key never goes to the broker
    subprocess.run(["mosquitto_passwd", "-b", str(access / "passwd"), "ingest", "pw-ingest"],
                   check=True)
    with DeployedBroker(tmp_path / "mosquitto", access=access) as broker:
        def connect(username: str | None, tls: bool) -> mqtt.ReasonCode | str:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            if username:
                client.username_pw_set(username, "pw-ingest")
            if tls:
                client.tls_set(ca_certs=str(access / "ca.crt"))
            outcome: list[mqtt.ReasonCode | str] = []
            client.on_connect = lambda _c, _u, _f, rc, _p: outcome.append(rc)
            client.on_disconnect = lambda *_a: outcome.append("dropped")
            try:
                client.connect("127.0.0.1", broker.port, keepalive=5)
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

        ok = connect("ingest", tls=True)
        assert isinstance(ok, mqtt.ReasonCode)
        assert not ok.is_failure
        anonymous = connect(None, tls=True)
        assert isinstance(anonymous, mqtt.ReasonCode)
        assert anonymous.is_failure
        assert not isinstance(connect("ingest", tls=False), mqtt.ReasonCode)  # no plain MQTT


def test_no_private_key_or_password_hash_in_the_repository():
    """Keys and password files are written by `homecare devices` into git-ignored folders."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    assert "docker-compose.yml" in files
    for name in files:
        path = ROOT / name
        if path.is_file() and path.stat().st_size < 5_000_000:
            text = path.read_bytes()
            assert not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", text), name
            assert not re.search(rb"^\w+:\$7\$\d+\$", text, re.M), name  # a passwd line
    ignored = subprocess.run(["git", "check-ignore", "deploy/mosquitto/access/passwd",
                              "deploy/admin/ca/ca.key", ".env"], cwd=ROOT,
                             capture_output=True, text=True, check=False).stdout.split()
    assert ignored == ["deploy/mosquitto/access/passwd", "deploy/admin/ca/ca.key", ".env"]
