"""docker-compose.yml stays valid and matched to the code (Debian's docker-compose validates it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from typer.main import get_command

from homecare.cli import app

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
