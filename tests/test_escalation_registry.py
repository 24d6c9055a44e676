"""The elder registry: validation naming the field, reload on change, a bad file changes nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from detectors.escalation.registry import (
    RegistryError,
    RegistryFile,
    ack_token,
    load_registry,
    remove_elder,
    token_valid,
)

EXAMPLE = Path(__file__).parent.parent / "deploy" / "registry.example.yaml"


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
