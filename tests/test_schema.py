"""One storage schema: names live in homecare/schema.py, queries come from homecare/query.py.

The guard walks the AST of every module of the production packages (docstrings excluded,
comments are not in the AST) and fails on:

- **query text** that spells a schema name: a string (or the constant parts of an f-string)
  that reads as InfluxQL (``SELECT``, ``SHOW``, ``DELETE``, ``DROP``, ``GROUP BY``) and
  names a measurement or field as a quoted identifier (``"mag_std"``) or after ``FROM`` /
  ``INTO``, or that starts a line-protocol point (``wearable,``). Everywhere.
- **a bare literal** equal to a storage name: a measurement or field name that nothing
  but storage uses (``device_status``, ``dead_letter``, ``mag_std``, ``active_s``…).

Names the wire contract also owns (device kinds, streams and payload attributes such as
``wearable``, ``bed``, ``hr``, ``battery``, ``seq``: introspected from
:mod:`homecare.contract`) and a few everyday words (:data:`GENERIC`) cannot be told apart
from the contract's or another layer's by looking at a literal: they are checked in query
text only. The modules in :data:`WIRE_ONLY` speak only the wire contract and are exempt
from the bare-literal rule, each with its reason.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from homecare import contract, schema
from homecare.query import call, select

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
    "root_packages"
]
SCHEMA_MODULE = Path("homecare/schema.py")

GENERIC = {
    "id": "alert ids everywhere (the contract's Alert.id, escalation's store, webhooks)",
    "state": "alert and delivery states (escalation's store, the contract's Alert.state)",
    "device": "a device id: topics, the contract's payloads, escalation's store",
    "detail": "error details of HTTP answers and stand-ins",
    "topic": "MQTT topics",
    "payload": "MQTT payloads",
    "size": "sizes of files and messages",
    "ref": "delivery references of escalation's channels",
    "step": "rungs of escalation's ladders",
    "x": "plot and vector axes",
    "y": "plot and vector axes",
    "z": "plot and vector axes",
    "rate": "sampling rates of the simulator and certification checks",
    "model": "device models in the registry and simulator",
    "readings": "counters of readings in service status",
    "opened": "the door event's wire state value",
    "detected": "the motion event's wire state value (and the cohort report's count)",
    "occupied": "the mat event's wire state value",
    "online": "the availability payload's wire value (contract.ONLINE)",
    "alert": "the alert message itself: escalation's store column, webhooks, the demo",
    "evidence": "the contract's Alert.evidence",
}
"""Field names that are also everyday words of other layers, with where else they mean."""

WIRE_ONLY = {
    "homecare/contract.py": "defines the wire: device kinds, streams, payload fields",
    "device_sim/": "simulated devices publish the wire contract; they never touch InfluxDB",
    "certify/": "the vendor kit checks devices' wire messages; it never touches InfluxDB",
    "devices/": "provisioning: device kinds and MQTT credentials",
}
"""Modules exempt from the bare-literal rule (query text is still checked)."""

QUERY_WORDS = re.compile(r"\b(SELECT|SHOW|DELETE|DROP|GROUP BY)\b")


def _wire_words() -> set[str]:
    """Every name the wire contract owns: kinds, streams and payload attributes."""
    words = {str(k) for k in contract.DeviceKind} | {str(s) for s in contract.Stream}
    for value in vars(contract).values():
        if isinstance(value, type) and issubclass(value, BaseModel):
            words |= set(value.model_fields)
    return words


NAMES = schema.measurement_names() | schema.field_names()
MEASUREMENT_NAMES = schema.measurement_names()
STORAGE_ONLY = NAMES - _wire_words() - set(GENERIC)


def _modules() -> list[Path]:
    return sorted(
        path.relative_to(ROOT)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.relative_to(ROOT) != SCHEMA_MODULE
    )


def _docstrings(tree: ast.AST) -> set[int]:
    """Ids of the docstring nodes: of modules, classes, functions and attributes."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for stmt in body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                found.add(id(stmt.value))
    return found


def _texts(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, text, bare) of every string: plain constants (bare) and f-strings, whose
    formatted parts read ``{}``."""
    docs = _docstrings(tree)
    in_fstring = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
            out.append((node.lineno, text, False))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and id(node) not in in_fstring
        ):
            out.append((node.lineno, node.value, True))
    return out


def query_text_names(text: str) -> set[str]:
    """Schema names a piece of InfluxQL or line protocol spells out.

    >>> sorted(query_text_names('SELECT mean("hr") FROM "wearable" WHERE $timeFilter'))
    ['hr', 'wearable']
    >>> sorted(query_text_names("SELECT * FROM {}.alert_escalation WHERE elder = 'e1'"))
    ['alert_escalation']
    >>> sorted(query_text_names("SELECT id FROM alerts WHERE state = ?"))  # escalation's SQL
    []
    >>> sorted(query_text_names("id, alert, site, elder"))  # SQL columns, not line protocol
    []
    >>> sorted(query_text_names("wearable,site=north mag_std=0.1 1"))  # line protocol
    ['wearable']
    """
    found = set()
    is_query = QUERY_WORDS.search(text) is not None
    for name in NAMES:
        if (name in MEASUREMENT_NAMES and text.startswith(f"{name},")) or (
            is_query
            and (
                f'"{name}"' in text
                or re.search(rf'\b(FROM|INTO)\s+([\w"{{}}]+\.)*"?{re.escape(name)}\b', text)
            )
        ):
            found.add(name)
    return found


def _violations(path: Path) -> list[str]:
    tree = ast.parse((ROOT / path).read_text(), filename=str(path))
    wire_only = any(str(path).startswith(prefix) for prefix in WIRE_ONLY)
    out = []
    for line, text, bare in _texts(tree):
        for name in sorted(query_text_names(text)):
            out.append(f"{path}:{line}: query text spells {name!r}: build it with homecare.query")
        if bare and not wire_only and text in STORAGE_ONLY:
            out.append(f"{path}:{line}: {text!r} is a storage name: use homecare.schema")
    return out


def test_no_module_spells_the_storage_schema():
    problems = [p for path in _modules() for p in _violations(path)]
    assert not problems, "\n".join(problems)


INFLUXQL_READ = re.compile(
    r"SHOW (TAG VALUES|SERIES|FIELD KEYS|MEASUREMENTS)|DELETE FROM \"|"
    r"SELECT\b.*(GROUP BY|\$timeFilter|fill\(|/\.\*/|FROM \"|\dms\b)"
)
"""InfluxQL that reads or deletes points (escalation's SQLite statements have none of
these marks; administration — databases, users, policies, continuous queries — is not
a read of the schema and stays where it is done)."""
BUILDER = Path("homecare/query.py")


def test_influxql_reads_are_built_in_one_place():
    found = [
        f"{path}:{line}: {text[:80]!r}"
        for path in _modules()
        if path != BUILDER
        for line, text, _ in _texts(ast.parse((ROOT / path).read_text()))
        if INFLUXQL_READ.search(text)
    ]
    assert not found, "InfluxQL written by hand (use homecare.query):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("text", "influxql"),
    [
        ("SELECT count(*) FROM {}./.*/", True),
        ('SELECT max("a") FROM ({}) GROUP BY time(1d)', True),
        ("SELECT * FROM alert WHERE time >= 5ms", True),
        ('SHOW TAG VALUES FROM "bed" WITH KEY = "elder"', True),
        ("SELECT * FROM alerts WHERE id = ? ORDER BY received", False),
        ("SHOW RETENTION POLICIES", False),
    ],
)
def test_the_read_guard_tells_influxql_from_sql(text, influxql):
    assert bool(INFLUXQL_READ.search(text)) is influxql


def test_the_guard_catches_spelled_names(tmp_path):
    """The guard is not vacuous: hand-written queries and storage names are found."""
    sample = (
        "import x\n"
        'Q = \'SELECT last("battery") FROM "device_status" WHERE $timeFilter\'\n'
        "R = f\"SELECT * FROM {x.rp}.alert_escalation WHERE elder = '{x.e}'\"\n"
        'LINE = f"wearable,{x.tags} mag_std={x.v}"\n'
        "COLUMN = x.column('mag_std')\n"
        "SQL = 'SELECT id FROM alerts WHERE state = ?'\n"
        'def f():\n    """Reads "device_status" (a docstring: fine)."""\n'
    )
    tree = ast.parse(sample)
    found = {
        (line, name, bare)
        for line, text, bare in _texts(tree)
        for name in (query_text_names(text) | ({text} & STORAGE_ONLY if bare else set()))
    }
    assert found == {
        (2, "battery", True),
        (2, "device_status", True),
        (3, "alert_escalation", False),
        (4, "wearable", False),
        (5, "mag_std", True),
    }


def test_storage_only_names_are_the_distinctive_ones():
    """What the bare-literal rule covers, so that a change to the split is visible."""
    assert {"device_status", "dead_letter", "alert_escalation", "mag_std", "sleep_1d"} <= (
        STORAGE_ONLY
    )
    assert {"wearable", "bed", "hr", "battery", "seq", "id"}.isdisjoint(STORAGE_ONLY)


def test_every_stream_has_a_measurement_and_rollups_name_real_fields():
    assert set(schema.STREAM_MEASUREMENTS) == set(contract.Stream)
    for rollup in schema.ROLLUPS:
        assert {alias for alias, _, _ in rollup.aggregates} <= set(rollup.target.fields)
        assert {src for _, _, src in rollup.aggregates} <= set(rollup.source.fields)
        if rollup.where is not None:
            assert rollup.where[0] in rollup.source.fields
    for measurement in schema.MEASUREMENTS:
        assert not measurement.always or measurement.always in measurement.fields


@pytest.mark.parametrize(
    ("query", "text"),
    [
        (
            select("bed", call("mean", "br")).equal(elder="it's").between(0, 1000),
            """SELECT mean("br") FROM "bed" WHERE "elder" = 'it\\'s' AND time >= 0ms AND """
            "time < 1000ms",
        ),
        (
            select("wearable", policy="history").equal(elder="$elder").newest_first().limit(5),
            """SELECT * FROM "history"."wearable" WHERE "elder" = '$elder' ORDER BY time DESC """
            "LIMIT 5",
        ),
    ],
)
def test_the_builder_quotes_identifiers_and_literals(query, text):
    assert str(query) == text
