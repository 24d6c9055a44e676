"""Escalation's store owns every SQL statement against its file: nothing else speaks SQL to it."""

from __future__ import annotations

import re
from pathlib import Path

from escalation.store import Store

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "escalation" / "store.py"
TABLES = r"(alerts|deliveries|events)"
ESCALATION_SQL = re.compile(
    rf"\b(SELECT\b[^\"']*\bFROM\s+{TABLES}\b|INSERT\s+(OR\s+\w+\s+)?INTO\s+{TABLES}\b"
    rf"|UPDATE\s+{TABLES}\s+SET\b|DELETE\s+FROM\s+{TABLES}\b)",
    re.IGNORECASE,
)


def production_files() -> list[Path]:
    skip = {"tests", ".venv", ".git", "node_modules"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def test_no_sql_against_escalations_store_outside_the_store() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in production_files() if p != STORE
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if ESCALATION_SQL.search(line)
        or (p.parent.name == "escalation" and re.match(r"\s*(import|from) sqlite3\b", line))
    ]  # fmt: skip
    assert offenders == []


def test_the_pattern_finds_the_store_s_own_statements() -> None:
    """The check above can fail: the store's own SQL matches it."""
    text = STORE.read_text()
    for statement in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        assert any(ESCALATION_SQL.search(line) and statement in line.upper()
                   for line in text.splitlines()), statement  # fmt: skip


def test_erasure_removes_an_elders_alerts_deliveries_and_events(tmp_path: Path) -> None:
    from homecare.contract import Alert, AlertState

    store = Store(tmp_path / "escalation.db")
    with store.tx():
        for elder in ("gone", "kept"):
            a = Alert(id=f"a-{elder}", site="s", elder=elder, kind="sos", severity="critical",
                      ts=1.0, updated=1.0)  # fmt: skip
            store.insert_alert(a, 1.0, start_at=1.0, next_at=None, state=AlertState.OPEN)
            store.add_delivery(f"r-{elder}", a.id, "arc", "call_centre", "alarm", 0, "{}", 1, 1)
            store.add_event(a.id, 1.0, "delivered_alarm", AlertState.NOTIFIED)
    assert store.erase_elder("gone") == {"deliveries": 1, "events": 1, "alerts": 1}
    assert store.count_alerts() == 1
    assert [e["event"] for e in store.story("a-kept")] == ["delivered_alarm"]
    store.close()
