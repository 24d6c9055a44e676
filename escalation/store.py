"""The escalation's durable state: SQLite in WAL mode, ``<state_dir>/escalation.db``.

Why SQLite: one process owns the ladder, its state is small (alerts, deliveries,
events), and what matters is that a decision and its consequences are committed
together. Every change the ladder makes — an alert's state, the next rung's time, the
notifications it decided to send (each with its idempotency key ``ref``), the events
to publish and store — is one transaction, committed with ``synchronous=FULL`` before
anything leaves the process. So after a kill -9 the ladder resumes from the file:
timers are absolute times, undelivered notifications are re-sent with the same ref
(the call centre de-duplicates on it), and an acknowledgement once answered is kept.
MQTT and InfluxDB are fed from the ``events`` table (an outbox), so neither misses a
transition made while it was away.

>>> store = Store(Path(":memory:"))
>>> with store.tx() as db:
...     _ = db.execute("INSERT INTO events (alert_id, ts, event, state) "
...                    "VALUES ('a', 1, 'grace', 'open')")
>>> store.count("events")
1
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

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
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    detail TEXT,
    delivered REAL,
    created REAL NOT NULL
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


def store_path(state_dir: Path) -> Path:
    return state_dir / "escalation.db"


class Store:
    """The one connection of the escalation process (readers may open their own)."""

    def __init__(self, path: Path) -> None:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout=10000")  # `elder forget` may write beside us
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything in it is on disk together, or none of it."""
        if self.db.in_transaction:  # nested: part of the enclosing transaction
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def count(self, table: str, where: str = "1", *args: object) -> int:
        return int(
            self.db.execute(f"SELECT count(*) FROM {table} WHERE {where}", args).fetchone()[0]
        )

    def close(self) -> None:
        self.db.close()


def open_readonly(path: Path) -> sqlite3.Connection:
    """A reader beside the running process (the demo's summary, tests)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db
