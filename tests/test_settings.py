"""Settings do what the README says: every detector's thresholds come from the environment
or ``.env`` (nested), an invalid value stops a command at start, and the README's table is
the one the settings models generate."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import typer

from detectors.care import CARE_TABLE, CARE_TABLE_FILE, Care
from detectors.service import Detect, default_detectors
from homecare.runtime import load_settings
from homecare.settings import Settings, setting_rows, with_settings_table
from homecare.thresholds import CareLimits, CareTable, DetectorSettings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No HOMECARE_ variable from the caller's environment, and no .env but the test's."""
    for name in list(os.environ):
        if name.startswith("HOMECARE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_settings_table_is_generated_from_the_models() -> None:
    readme = (ROOT / "README.md").read_text()
    assert with_settings_table(readme) == readme, (
        "README's settings table differs from the models: run "
        "`homecare settings table --readme README.md`"
    )


def test_every_homecare_variable_in_the_deployment_files_is_a_setting() -> None:
    known = {row[0] for row in setting_rows()}
    for name in (".env.example", "docker-compose.yml"):
        used = set(re.findall(r"\b(HOMECARE_[A-Z0-9_]+)", (ROOT / name).read_text()))
        assert used <= known, f"{name} names unknown settings: {sorted(used - known)}"


def test_detector_thresholds_come_from_the_environment_nested(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMECARE_DETECTORS__FALL__IMPACT_G", "2.8")
    monkeypatch.setenv("HOMECARE_DETECTORS__VITALS__EXIT_MARGIN", '{"hr": 8}')
    (clean_env / ".env").write_text("HOMECARE_DETECTORS__BED_EXIT__MARGIN=2.5\n")
    settings = load_settings()
    assert settings.detectors.fall.impact_g == 2.8
    assert settings.detectors.vitals.exit_margin == {"hr": 8.0}
    assert settings.detectors.bed_exit.margin == 2.5
    by_kind = {d.kind: d for d in Detect(settings).detectors}
    assert by_kind["fall"].settings.impact_g == 2.8  # type: ignore[attr-defined]
    assert by_kind["bed_exit"].settings.margin == 2.5  # type: ignore[attr-defined]


def test_default_detectors_take_every_detectors_settings() -> None:
    ours = DetectorSettings.model_validate(
        {name: {} for name in DetectorSettings.model_fields if name != "care_table"}
    )
    detectors = default_detectors(Care(), ours)
    given = {id(getattr(ours, name)) for name in DetectorSettings.model_fields}
    assert {id(d.settings) for d in detectors} <= given  # type: ignore[attr-defined]
    assert len({id(d.settings) for d in detectors}) == len(detectors)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("HOMECARE_DETECTORS__FALL__IMPACT_G", "0.5", "detectors.fall.impact_g"),
        ("HOMECARE_DETECTORS__FALL__IMPACT", "2.0", "detectors.fall.impact"),  # misspelt
        ("HOMECARE_DETECTORS__DEVICE_HEALTH__BATTERY_OK", "10", "battery_ok"),
        ("HOMECARE_DETECTORS__SOS__MEMORY", "many", "detectors.sos.memory"),
    ],
)
def test_an_invalid_threshold_stops_the_command_naming_it(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(typer.BadParameter, match=re.escape(named)):
        load_settings()


def _table_text(**changes: list[float]) -> str:
    lines = []
    for name in CareLimits.model_fields:
        values = changes.get(name, [getattr(CARE_TABLE[k], name) for k in (1, 2, 3, 4)])
        lines.append(f"{name} = {list(values)}")
    return "[limits]\n" + "\n".join(lines) + "\n"


def test_a_care_table_from_settings_replaces_the_shipped_one(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = clean_env / "care.toml"
    path.write_text(_table_text(lying_s=[1800, 1200, 600, 240]))
    monkeypatch.setenv("HOMECARE_DETECTORS__CARE_TABLE", str(path))
    detect = Detect(load_settings())
    assert detect.care.limit("lying_s", np.array([0])).tolist() == [1200.0]  # level 2
    detect.care.set_care_levels(np.array([0]), np.array([4]))
    assert detect.care.limit("lying_s", np.array([0])).tolist() == [240.0]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (_table_text(lying_s=[300, 900, 600, 300]), "lying_s must fall"),  # looser at 2
        (_table_text(hr_low=[40, 40, 45, 40]), "hr_low must rise"),
        (_table_text(inactivity_min_s=[99999, 14400, 10800, 7200]), "inactivity_min_s <="),
        (_table_text(lying_s=[1200, 900, 600]), "4 values"),
        ("[limits]\nlying_s = [1, 1, 1, 1]\n", "hr_high"),  # a limit missing
        ("[limits\n", "care table"),  # not TOML
    ],
)
def test_a_bad_care_table_stops_the_command(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, text: str, named: str
) -> None:
    path = clean_env / "care.toml"
    path.write_text(text)
    monkeypatch.setenv("HOMECARE_DETECTORS__CARE_TABLE", str(path))
    with pytest.raises(typer.BadParameter, match=re.escape(named)):
        load_settings()


def test_the_shipped_care_table_is_the_documented_one() -> None:
    assert CareTable.from_toml(CARE_TABLE_FILE) == CARE_TABLE
    assert "NEWS2" in CARE_TABLE_FILE.read_text()  # the source of the vital-sign limits
    assert Settings().detectors.care is None  # no override: the shipped table


def test_the_settings_table_command_prints_and_rewrites_the_table(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from homecare.settings import TABLE_END, TABLE_START, settings_table

    printed = CliRunner().invoke(app, ["settings", "table"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == settings_table()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{TABLE_START}\n| stale |\n{TABLE_END}\n\nafter\n")
    wrote = CliRunner().invoke(app, ["settings", "table", "--readme", str(readme)])
    assert wrote.exit_code == 0, wrote.output
    text = readme.read_text()
    assert "| stale |" not in text
    assert text == f"# x\n\n{TABLE_START}\n{settings_table()}{TABLE_END}\n\nafter\n"
