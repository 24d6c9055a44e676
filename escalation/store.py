"""The escalation's durable state: SQLite in WAL mode, ``<state_dir>/escalation.db``.

Why SQLite: one process owns the ladder, its state is small (alerts, deliveries,
events), and what matters is that a decision and its consequences are committed
together. Every change the ladder decides — an alert's state, the next rung's time, the
notifications to send (each with its idempotency key ``ref``), the events to publish
and store — is one transaction, committed with ``synchronous=FULL`` before anything
leaves the process. So after a kill -9 the service resumes from the file: timers are
absolute times, undelivered notifications are re-sent with the same ref (the call
centre de-duplicates on it), and an acknowledgement once answered is kept. MQTT and
InfluxDB are fed from the ``events`` table (an outbox), so neither misses a transition
made while it was away.

This module holds every SQL statement against the file: the ladder decides on plain
records (:class:`AlertRecord`), the service, erasure (``homecare elder forget``) and the
demo's summary call the methods below.

>>> store = Store(Path(":memory:"))
>>> with store.tx():
...     store.add_event("a", 1.0, "grace", "open", transition=False)
>>> [e["event"] for e in store.story("a")], store.count_alerts()
(['grace'], 0)
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homecare.contract import Alert, AlertState

OPENED = "opened"
"""The event of an alert's arrival: not a state transition (detect stored the alert open),
but the one after which apps are shown it (retained on its MQTT topic)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    alert TEXT NOT NULL,            -- the Alert as last published (JSON)
    site TEXT NOT NULL,
    elder TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    received REAL NOT NULL,
    start_at REAL NOT NULL,         -- the ladder starts here (after any grace window)
    step INTEGER NOT NULL DEFAULT 0,-- the next rung
    next_at REAL,                   -- when the next rung is due; NULL: nothing pending
    batched INTEGER NOT NULL DEFAULT 0,
    duplicate_of TEXT,
    repeats INTEGER NOT NULL DEFAULT 0,
    acked_by TEXT,
    acked_channel TEXT,
    acked_at REAL,
    outcome TEXT,
    closed_at REAL
);
CREATE INDEX IF NOT EXISTS alerts_due ON alerts(next_at) WHERE next_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_condition ON alerts(elder, kind);
CREATE INDEX IF NOT EXISTS alerts_unbatched ON alerts(received)
    WHERE batched = 0 AND step = 0 AND next_at IS NULL AND state = 'open'
    AND duplicate_of IS NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    ref TEXT PRIMARY KEY,           -- idempotency key: the same on every re-send
    alert_id TEXT,
    contact TEXT NOT NULL,
    channel TEXT NOT NULL,
    type TEXT NOT NULL,
    step INTEGER NOT NULL,
    notification TEXT NOT NULL,     -- the Notification, frozen when decided (JSON)
    due REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', -- pending, ok, failed (for good), dropped
    attempts INTEGER NOT NULL DEFAULT 0,
    detail TEXT,
    delivered REAL,
    created REAL NOT NULL,
    sending REAL                    -- a try started then, no answer recorded yet
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(due) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_alert ON deliveries(alert_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL,
    transition INTEGER NOT NULL DEFAULT 0,
    who TEXT,
    channel TEXT,
    ref TEXT,
    step INTEGER,
    detail TEXT,
    published INTEGER NOT NULL DEFAULT 0,
    written INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_unpublished ON events(seq) WHERE published = 0;
CREATE INDEX IF NOT EXISTS events_unwritten ON events(seq) WHERE written = 0;
CREATE INDEX IF NOT EXISTS events_alert ON events(alert_id);
"""

_ALERT_COLUMNS = (
    "id, alert, site, elder, kind, severity, state, received, start_at, step, next_at, "
    "duplicate_of, outcome, closed_at"
)
_ONGOING = (
    "duplicate_of IS NULL AND (state IN ('open', 'notified', 'acknowledged') "
    "OR (severity != 'critical' AND closed_at >= ?))"
)
"""An alert a new one of the same kind and elder is folded into (the ? is the flap limit)."""
_IN_SLICE = 500
"""Values per ``IN (…)``: well under SQLite's limit on parameters."""


ROW_TABLES = {"a": ("alerts", "id"), "d": ("deliveries", "ref"), "e": ("events", "seq")}
"""The tables a mirror keeps, by a short prefix, with their primary key."""


def store_path(state_dir: Path) -> Path:
    return state_dir / "escalation.db"


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert as the store holds it: what the ladder decides on."""

    id: str
    alert: str
    """The alert as last published (JSON): parsed only when a decision needs it."""
    site: str
    elder: str
    kind: str
    severity: str
    state: AlertState
    received: float
    start_at: float
    step: int
    next_at: float | None
    duplicate_of: str | None
    outcome: str | None
    closed_at: float | None

    @classmethod
    def of(cls, row: Sequence[Any]) -> AlertRecord:
        """From a row of :data:`_ALERT_COLUMNS`."""
        r = tuple(row)
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], AlertState(r[6]), *r[7:])

    def parsed(self) -> Alert:
        return Alert.model_validate_json(self.alert)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event of the outbox, with its alert's JSON (for MQTT and InfluxDB)."""

    seq: int
    alert_id: str
    ts: float
    event: str
    state: str
    transition: bool
    who: str | None
    channel: str | None
    ref: str | None
    step: int | None
    detail: str | None
    alert: str

    def alert_at(self) -> Alert:
        """The alert as it stood at this event."""
        return Alert.model_validate_json(self.alert).model_copy(
            update={"state": AlertState(self.state), "updated": self.ts}
        )


class Store:
    """The one connection of the escalation process (erasure may open its own beside it)."""

    def __init__(self, path: Path) -> None:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=10000")  # `elder forget` may write beside us
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._tracking = False
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(deliveries)")}
        if "sending" not in columns:  # a file from before the column
            self.db.execute("ALTER TABLE deliveries ADD COLUMN sending REAL")

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything in it is on disk together, or none of it."""
        if self.db.in_transaction:  # nested: part of the enclosing transaction
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self._before_commit()
        except BaseException:
            self.db.execute("ROLLBACK")
            if self._tracking:
                self.db.execute("DELETE FROM temp.changed")
            raise
        self.db.execute("COMMIT")

    def _before_commit(self) -> None:
        """Where a mirror (:class:`~escalation.cluster.ClusterStore`) makes the transaction
        durable elsewhere before it commits; raising rolls it back."""

    def close(self) -> None:
        self.db.close()

    def _in(self, sql: str, values: Sequence[str], *first: object) -> list[tuple[Any, ...]]:
        """``sql`` with its ``IN ({})`` filled for ``values``, in slices SQLite accepts."""
        rows: list[tuple[Any, ...]] = []
        for i in range(0, len(values), _IN_SLICE):
            part = values[i : i + _IN_SLICE]
            marks = ",".join("?" * len(part))
            rows += self.db.execute(sql.format(marks), (*first, *part)).fetchall()
        return rows

    # alerts ----------------------------------------------------------------------------
    def known_ids(self, ids: Sequence[str]) -> set[str]:
        return {r[0] for r in self._in("SELECT id FROM alerts WHERE id IN ({})", ids)}

    def elders_ongoing(self, elders: Sequence[str], flap_from: float) -> set[str]:
        """Elders with an ongoing condition (an alert a new one may be folded into)."""
        sql = f"SELECT elder FROM alerts WHERE {_ONGOING} AND elder IN ({{}})"
        return {r[0] for r in self._in(sql, elders, flap_from)}

    def alert(self, alert_id: str) -> AlertRecord | None:
        row = self.db.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)
        ).fetchone()
        return AlertRecord.of(row) if row else None

    def ongoing(self, elder: str, kind: str, flap_from: float) -> AlertRecord | None:
        """The latest alert of this elder and kind that a new one is a repeat of."""
        row = self.db.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE elder = ? AND kind = ? AND {_ONGOING} "
            "ORDER BY received DESC LIMIT 1",
            (elder, kind, flap_from),
        ).fetchone()
        return AlertRecord.of(row) if row else None

    def state(self, alert_id: str) -> AlertState:
        row = self.db.execute("SELECT state FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return AlertState(row[0]) if row else AlertState.OPEN

    def insert_alert(
        self,
        alert: Alert,
        now: float,
        *,
        start_at: float,
        next_at: float | None,
        state: AlertState,
        duplicate_of: str | None = None,
        step: int = 0,
        outcome: str | None = None,
        closed: bool = False,
    ) -> None:
        self.db.execute(
            "INSERT INTO alerts (id, alert, site, elder, kind, severity, state, received, "
            "start_at, next_at, duplicate_of, closed_at, step, outcome) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                alert.id, alert.model_dump_json(), alert.site, alert.elder, alert.kind,
                str(alert.severity), str(state), now, start_at, next_at, duplicate_of,
                now if closed else None, step, outcome,
            ),
        )  # fmt: skip

    def count_repeat(self, alert_id: str) -> None:
        self.db.execute("UPDATE alerts SET repeats = repeats + 1 WHERE id = ?", (alert_id,))

    def due_alerts(self, now: float) -> list[AlertRecord]:
        """Alerts whose next rung is due."""
        rows = self.db.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE next_at <= ? ORDER BY next_at", (now,)
        ).fetchall()
        return [AlertRecord.of(r) for r in rows]

    def set_rung(self, alert_id: str, step: int, next_at: float | None) -> None:
        self.db.execute(
            "UPDATE alerts SET step = ?, next_at = ? WHERE id = ?", (step, next_at, alert_id)
        )

    def unbatched(self) -> list[AlertRecord]:
        """Open alerts whose ladder batches them, not yet in a batch."""
        rows = self.db.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE batched = 0 AND state = 'open' "
            "AND duplicate_of IS NULL AND next_at IS NULL AND step = 0"
        ).fetchall()
        return [AlertRecord.of(r) for r in rows]

    def mark_batched(self, ids: Iterable[str]) -> None:
        self.db.executemany(
            "UPDATE alerts SET batched = 1, step = 1 WHERE id = ?", [(i,) for i in ids]
        )

    def alerts_of_elder(self, elder: str, since: float) -> list[AlertRecord]:
        """An elder's alerts received since ``since`` (repeats left out), oldest first."""
        rows = self.db.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE elder = ? AND received >= ? "
            "AND duplicate_of IS NULL ORDER BY received",
            (elder, since),
        ).fetchall()
        return [AlertRecord.of(r) for r in rows]

    def promote_notified(self, alert_id: str) -> bool:
        """Open → notified; whether it changed."""
        cur = self.db.execute(
            "UPDATE alerts SET state = 'notified' WHERE id = ? AND state = 'open'", (alert_id,)
        )
        return bool(cur.rowcount)

    def set_acknowledged(self, alert_id: str, contact: str, channel: str, now: float) -> None:
        self.db.execute(
            "UPDATE alerts SET state = 'acknowledged', acked_by = ?, acked_channel = ?, "
            "acked_at = ?, next_at = NULL WHERE id = ?",
            (contact, channel, now, alert_id),
        )

    def set_closed(self, alert_id: str, state: AlertState, now: float, outcome: str | None) -> None:
        self.db.execute(
            "UPDATE alerts SET state = ?, outcome = ?, closed_at = ?, next_at = NULL WHERE id = ?",
            (str(state), outcome, now, alert_id),
        )

    def move_repeats(self, alert_id: str, state: AlertState) -> list[str]:
        """Put the repeats folded into an alert in its new state; answer their ids."""
        ids = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM alerts WHERE duplicate_of = ? AND state != ?",
                (alert_id, str(state)),
            ).fetchall()
        ]
        self.db.executemany(
            "UPDATE alerts SET state = ? WHERE id = ?", [(str(state), i) for i in ids]
        )
        return ids

    def count_alerts(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM alerts").fetchone()[0])

    # deliveries ------------------------------------------------------------------------
    def add_delivery(
        self,
        ref: str,
        alert_id: str | None,
        contact: str,
        channel: str,
        type_: str,
        step: int,
        notification: str,
        due: float,
        now: float,
    ) -> bool:
        """Record a decided notification; ``False`` if that ref was decided before."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO deliveries (ref, alert_id, contact, channel, type, step, "
            "notification, due, created) VALUES (?,?,?,?,?,?,?,?,?)",
            (ref, alert_id, contact, channel, type_, step, notification, due, now),
        )
        return bool(cur.rowcount)

    def recipients_told(self, alert_id: str) -> set[tuple[str, str]]:
        """(contact, channel) pairs anything about this alert was decided for."""
        rows = self.db.execute(
            "SELECT DISTINCT contact, channel FROM deliveries WHERE alert_id = ?", (alert_id,)
        ).fetchall()
        return {(r[0], r[1]) for r in rows}

    def decided(self, refs: Sequence[str]) -> set[str]:
        """Which of these refs were decided already."""
        rows = self.db.execute(
            "SELECT ref FROM deliveries WHERE ref IN (SELECT value FROM json_each(?))",
            (json.dumps(list(refs)),),
        ).fetchall()
        return {r[0] for r in rows}

    def due_refs(self, now: float, limit: int) -> list[str]:
        """Pending deliveries due by ``now``, the oldest first."""
        rows = self.db.execute(
            "SELECT ref FROM deliveries WHERE status = 'pending' AND due <= ? ORDER BY due LIMIT ?",
            (now, limit),
        ).fetchall()
        return [r[0] for r in rows]

    def notification(self, ref: str) -> str:
        """The notification decided under ``ref`` (JSON)."""
        row = self.db.execute("SELECT notification FROM deliveries WHERE ref = ?", (ref,))
        return str(row.fetchone()[0])

    def attempts(self, ref: str) -> int | None:
        """Sends so far of a pending delivery; ``None``: not pending any more."""
        row = self.db.execute(
            "SELECT attempts FROM deliveries WHERE ref = ? AND status = 'pending'", (ref,)
        ).fetchone()
        return int(row[0]) if row else None

    def mark_sending(self, refs: Sequence[str], now: float) -> set[str]:
        """Record that these pending deliveries are being tried (before they leave); answer
        those a try had started for with no answer recorded: a process stopped in the
        middle of sending them (in doubt: they may have arrived)."""
        doubt = {
            r[0]
            for r in self._in(
                "SELECT ref FROM deliveries WHERE sending IS NOT NULL AND status = 'pending' "
                "AND ref IN ({})",
                refs,
            )
        }
        self.db.executemany(
            "UPDATE deliveries SET sending = ? WHERE ref = ? AND status = 'pending'",
            [(now, r) for r in refs],
        )
        return doubt

    def delivery_ok(self, ref: str, attempts: int, delivered: float, detail: str) -> bool:
        """A pending delivery went through; ``False`` if it was dropped or recorded before."""
        cur = self.db.execute(
            "UPDATE deliveries SET status = 'ok', attempts = attempts + ?, delivered = ?, "
            "detail = ?, sending = NULL WHERE ref = ? AND status = 'pending'",
            (attempts, delivered, detail, ref),
        )
        return bool(cur.rowcount)

    def delivery_again(self, ref: str, attempts: int, due: float, detail: str) -> bool:
        """A pending delivery failed; tried again at ``due``."""
        cur = self.db.execute(
            "UPDATE deliveries SET attempts = attempts + ?, due = ?, detail = ?, "
            "sending = NULL WHERE ref = ? AND status = 'pending'",
            (attempts, due, detail, ref),
        )
        return bool(cur.rowcount)

    def delivery_failed(self, ref: str, attempts: int, detail: str) -> bool:
        """A pending delivery failed for good: its final state."""
        cur = self.db.execute(
            "UPDATE deliveries SET status = 'failed', attempts = attempts + ?, detail = ?, "
            "sending = NULL WHERE ref = ? AND status = 'pending'",
            (attempts, detail, ref),
        )
        return bool(cur.rowcount)

    def drop_held(self, alert_id: str, now: float, *, unsent_too: bool) -> None:
        """Drop pending, never-tried messages about an alert: those held past ``now``, or
        (``unsent_too``) every one but the call centre's, which may be on the wire."""
        attempted = "AND channel != 'call_centre' " if unsent_too else "AND due > ? "
        args: tuple[object, ...] = (alert_id,) if unsent_too else (alert_id, now)
        self.db.execute(
            "UPDATE deliveries SET status = 'dropped' WHERE alert_id = ? AND status = 'pending' "
            f"AND attempts = 0 AND type != 'reset' {attempted}",
            args,
        )

    def call_centres_told(self, alert_id: str) -> list[str]:
        """Contacts an alarm about this alert went (or is going) to on the call-centre
        channel: they get a reset when it closes."""
        rows = self.db.execute(
            "SELECT DISTINCT contact FROM deliveries WHERE alert_id = ? AND type = 'alarm' "
            "AND channel = 'call_centre' AND status IN ('ok', 'pending')",
            (alert_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def count_pending(self) -> int:
        row = self.db.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'")
        return int(row.fetchone()[0])

    # mirroring (the cluster store keeps every row elsewhere too) -------------------------
    def track_changes(self) -> None:
        """From now on, note the key of every row a transaction inserts, updates or deletes
        (:meth:`take_changes` reads them), with temporary triggers."""
        script = "CREATE TEMP TABLE IF NOT EXISTS changed (t TEXT, pk TEXT, PRIMARY KEY (t, pk));"
        for prefix, (table, pk) in ROW_TABLES.items():
            for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
                script += (
                    f"CREATE TEMP TRIGGER IF NOT EXISTS {table}_{op.lower()} AFTER {op} ON "
                    f"main.{table} BEGIN INSERT OR IGNORE INTO changed VALUES "
                    f"('{prefix}', {row}.{pk}); END;"
                )
        self.db.executescript(script)
        self._tracking = True

    def take_changes(self) -> dict[tuple[str, str], dict[str, Any] | None]:
        """The rows changed since the last call, by (table prefix, key): each as it is now
        (``None``: deleted)."""
        out: dict[tuple[str, str], dict[str, Any] | None] = {}
        for prefix, pk in self.db.execute("SELECT t, pk FROM temp.changed").fetchall():
            table, column = ROW_TABLES[prefix]
            cur = self.db.execute(f"SELECT * FROM {table} WHERE {column} = ?", (pk,))
            found = cur.fetchone()
            names = [d[0] for d in cur.description]
            out[(prefix, str(pk))] = dict(zip(names, found, strict=True)) if found else None
        self.db.execute("DELETE FROM temp.changed")
        return out

    def put_rows(self, rows: Iterable[tuple[str, str, dict[str, Any] | None]]) -> None:
        """Write rows as :meth:`take_changes` gave them (loading a mirror), in one
        transaction; they are not noted as changes."""
        columns = {
            p: {r[1] for r in self.db.execute(f"PRAGMA table_info({t})")}
            for p, (t, _) in ROW_TABLES.items()
        }
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for prefix, pk, row in rows:
                table, column = ROW_TABLES[prefix]
                if row is None:
                    self.db.execute(f"DELETE FROM {table} WHERE {column} = ?", (pk,))
                    continue
                cols = [c for c in row if c in columns[prefix]]
                self.db.execute(
                    f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
                    f"VALUES ({', '.join('?' * len(cols))})",
                    [row[c] for c in cols],
                )
            if self._tracking:
                self.db.execute("DELETE FROM temp.changed")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # events (the outbox) ---------------------------------------------------------------
    def add_event(
        self,
        alert_id: str,
        ts: float,
        event: str,
        state: AlertState | str,
        *,
        transition: bool = True,
        who: str | None = None,
        channel: str | None = None,
        ref: str | None = None,
        step: int | None = None,
        detail: str | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO events (alert_id, ts, event, state, transition, who, channel, ref, "
            "step, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (alert_id, ts, event, str(state), int(transition), who, channel, ref, step, detail),
        )

    def _outbox(self, flag: str, limit: int) -> list[EventRecord]:
        rows = self.db.execute(
            "SELECT e.seq, e.alert_id, e.ts, e.event, e.state, e.transition, e.who, e.channel, "
            f"e.ref, e.step, e.detail, a.alert FROM events e JOIN alerts a ON a.id = e.alert_id "
            f"WHERE e.{flag} = 0 ORDER BY e.seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [EventRecord(*r) for r in rows]

    def unpublished(self, limit: int = 5000) -> list[EventRecord]:
        return self._outbox("published", limit)

    def unwritten(self, limit: int = 5000) -> list[EventRecord]:
        return self._outbox("written", limit)

    def mark_published(self, seqs: Iterable[int]) -> None:
        with self.tx() as db:
            db.executemany("UPDATE events SET published = 1 WHERE seq = ?", [(s,) for s in seqs])

    def mark_written(self, seqs: Iterable[int]) -> None:
        with self.tx() as db:
            db.executemany("UPDATE events SET written = 1 WHERE seq = ?", [(s,) for s in seqs])

    def story(self, alert_id: str) -> list[dict[str, Any]]:
        """An alert's path up the ladder: each event, who, on which channel, when."""
        return story(self.db, alert_id)

    # erasure and the demo's summary ----------------------------------------------------
    def erase_elder(self, elder: str, site: str | None = None) -> dict[str, int]:
        """Delete an elder's alerts, with their deliveries (which carry the elder's name and
        address) and events, in one transaction; answer the rows removed per table."""
        where = "elder = ?" + (" AND site = ?" if site else "")
        args = (elder, site) if site else (elder,)
        mine = f"alert_id IN (SELECT id FROM alerts WHERE {where})"
        # Family digests and device-desk batches belong to no one alert (alert_id NULL) but
        # name the elder: in the notification's elder card, or in one of its batched alerts.
        named = (
            "json_extract(notification, '$.elder.id') = ? OR EXISTS (SELECT 1 FROM "
            "json_each(notification, '$.batch') WHERE json_extract(value, '$.elder') = ?)"
        )
        with self.tx() as db:
            removed = {
                "deliveries": db.execute(
                    f"DELETE FROM deliveries WHERE {mine} OR {named}", (*args, elder, elder)
                ).rowcount,
                "events": db.execute(f"DELETE FROM events WHERE {mine}", args).rowcount,
            }
            removed["alerts"] = db.execute(f"DELETE FROM alerts WHERE {where}", args).rowcount
        return removed


def story(db: sqlite3.Connection, alert_id: str) -> list[dict[str, Any]]:
    """An alert's events in order (``db``: the store's connection, or a read-only one)."""
    keys = ("ts", "event", "state", "who", "channel", "step", "detail")
    rows = db.execute(
        f"SELECT {', '.join(keys)} FROM events WHERE alert_id = ? ORDER BY seq", (alert_id,)
    ).fetchall()
    return [dict(zip(keys, r, strict=True)) for r in rows]


def ladder_paths(path: Path) -> list[dict[str, Any]]:
    """Each alert the store holds, oldest first, with its story (who was told, when, who
    acknowledged): the demo's summary, read beside the running service (read-only)."""
    if not path.exists():
        return []
    db = open_readonly(path)
    keys = ("id", "alert", "state", "received", "acked_by", "acked_channel", "outcome",
            "duplicate_of")  # fmt: skip
    try:
        rows = db.execute(f"SELECT {', '.join(keys)} FROM alerts ORDER BY received").fetchall()
        out: list[dict[str, Any]] = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["alert"] = Alert.model_validate_json(item["alert"])
            item["story"] = story(db, item["id"])
            out.append(item)
        return out
    finally:
        db.close()


def open_readonly(path: Path) -> sqlite3.Connection:
    """A reader beside the running process (the demo's summary, tests)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db
