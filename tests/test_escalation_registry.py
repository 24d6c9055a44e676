"""The elder registry: validation naming the field, reload on change, a bad file changes nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from escalation.registry import (
    RegistryError,
    RegistryFile,
    ack_token,
    load_registry,
    remove_elder,
    token_valid,
)

EXAMPLE = Path(__file__).parent.parent / "deploy" / "registry" / "registry.yaml"


@pytest.fixture
def reg_path(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    shutil.copy(EXAMPLE, path)
    return path


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    st = path.stat()  # make the change visible even within one mtime tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_the_example_registry_is_valid():
    reg = load_registry(EXAMPLE)
    assert reg.elder("e0001").care_level == 3
    assert reg.ladder("critical", 3).repeat_s == 60
    assert reg.ladder("warning", 4).steps[1].after_s == 180
    assert reg.ladder("warning", 2).steps[1].after_s == 600
    assert reg.may_acknowledge("c-anna", "e0001", "north")
    assert reg.may_acknowledge("arc", "e0001", "north")
    assert not reg.may_acknowledge("c-anna", "e0002", "north")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["elders"][0].update(care_level=5), "elders.0.care_level"),
        (lambda d: d["elders"][0].update(timezone="Mars/Olympus"), "elders.0.timezone"),
        (lambda d: d["elders"][0].update(contacts=["nobody"]), "unknown contact 'nobody'"),
        (lambda d: d["contacts"][3].update(quiet_hours="10pm-7am"), "contacts.3.quiet_hours"),
        (lambda d: d["contacts"][0]["channels"][0].update(kind="pigeon"), "channels.0.kind"),
        (lambda d: d["elders"][0].update(shoe_size=9), "elders.0.shoe_size"),
        (lambda d: d["provider"].update(call_centre="ghost"), "provider.call_centre"),
        (lambda d: d["policy"]["critical"]["steps"].reverse(), "policy.critical"),
        (lambda d: d["elders"][0].update(id="has space"), "elders.0.id"),
    ],
)
def test_an_invalid_registry_is_refused_naming_the_field(reg_path, change, named):
    edit(reg_path, change)
    with pytest.raises(RegistryError) as err:
        load_registry(reg_path)
    assert named in str(err.value)
    assert str(reg_path) in str(err.value)


def test_reload_on_change_and_a_bad_file_keeps_the_previous(reg_path, caplog):
    file = RegistryFile(reg_path)
    assert not file.poll()
    edit(reg_path, lambda d: d["elders"][0].update(care_level=4))
    assert file.poll()
    assert file.current.elder("e0001").care_level == 4
    reg_path.write_text("elders: [unclosed\n")
    assert not file.poll()
    assert "not valid YAML" in file.error
    assert file.current.elder("e0001").care_level == 4
    assert "previous registry stays in force" in caplog.text
    shutil.copy(EXAMPLE, reg_path)  # valid again
    assert file.poll()
    assert file.error is None
    assert file.current.elder("e0001").care_level == 3


def test_remove_elder_erases_them_and_their_own_contacts(reg_path):
    assert remove_elder(reg_path, "e0001")
    reg = load_registry(reg_path)
    assert reg.elder("e0001") is None
    assert reg.contact("c-anna") is None
    assert reg.contact("arc") is not None  # the provider's contacts stay
    assert not remove_elder(reg_path, "e0001")


def test_tokens_are_per_contact_and_not_in_the_file():
    token = ack_token(b"secret", "c-anna")
    assert token_valid(b"secret", "c-anna", token)
    assert not token_valid(b"secret", "c-ben", token)
    assert not token_valid(b"other", "c-anna", token)
    assert token not in EXAMPLE.read_text()


def test_registry_token_refuses_without_a_secret_and_makes_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("HOMECARE_ESCALATE__SECRET", raising=False)
    monkeypatch.delenv("HOMECARE_ESCALATE__SECRET_FILE", raising=False)
    monkeypatch.setenv("HOMECARE_STATE_DIR", str(tmp_path / "state"))
    refused = CliRunner().invoke(app, ["registry", "token", "c-anna"])
    assert refused.exit_code == 1
    assert "HOMECARE_ESCALATE__SECRET" in refused.output
    assert not (tmp_path / "state").exists()
    monkeypatch.setenv("HOMECARE_ESCALATE__SECRET", "s3cret")
    printed = CliRunner().invoke(app, ["registry", "token", "c-anna"])
    assert printed.exit_code == 0, printed.output
    assert printed.output.strip() == ack_token(b"s3cret", "c-anna")


def test_remove_elder_keeps_a_contact_the_provider_or_a_site_names(reg_path):
    """The last elder whose family member is also the site's supervisor: the contact
    stays, so the rewritten registry is still valid."""
    elder = load_registry(reg_path).elders[0]
    [own] = elder.contacts[:1]

    def share(data: dict) -> None:
        data["elders"] = [e for e in data["elders"] if e["id"] == elder.id]
        data["sites"] = {elder.site: {"call_centre": "arc", "supervisor": own}}

    edit(reg_path, share)
    assert remove_elder(reg_path, elder.id)
    reg = load_registry(reg_path)  # still valid
    assert reg.elder(elder.id) is None
    assert reg.contact(own) is not None


def test_acknowledgement_links_carry_tokens_only_over_https_or_on_this_host():
    from pydantic import ValidationError

    from homecare.settings import EscalateSettings

    assert EscalateSettings(public_url="https://care.example.org/ack").public_url
    assert EscalateSettings(public_url="http://localhost:8480").public_url
    for bad in ("http://care.example.org", "ftp://care.example.org"):
        with pytest.raises(ValidationError, match="must be https://"):
            EscalateSettings(public_url=bad)
