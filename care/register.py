"""The visit register: community workers, their sessions, visits and calls, follow-ups.

One SQLite file under ``state_dir`` (``care.db``, WAL, each write one transaction):
durable across restarts, and the elder's history is one indexed query. Passwords are
hashed with Argon2id (argon2-cffi's defaults); a session is a random token of which only
the SHA-256 is stored, with its expiry and its own CSRF token. ``erase_elder`` removes
everything about one elder (``homecare elder forget``).

>>> import tempfile, pathlib
>>> reg = Register(pathlib.Path(tempfile.mkdtemp()) / "care.db")
>>> reg.add_worker("maria", "north", "a long passphrase")
>>> reg.check_password("maria", "a long passphrase").site
'north'
>>> reg.check_password("maria", "wrong") is None
True
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from care import texts
from care.policy import CONTACTS
from homecare.contract import ID_PATTERN
from homecare.i18n import Translator

SCHEMA = """
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY, site TEXT NOT NULL, password TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY, worker TEXT NOT NULL REFERENCES workers(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, elder TEXT NOT NULL,
    worker TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, outcome TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT '', follow_up INTEGER NOT NULL DEFAULT 0,
    follow_up_closed REAL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS contacts_elder ON contacts (site, elder, at);
CREATE INDEX IF NOT EXISTS contacts_open ON contacts (site, follow_up, follow_up_closed);
CREATE TABLE IF NOT EXISTS signs (
    site TEXT NOT NULL, elder TEXT NOT NULL, computed REAL NOT NULL, score REAL NOT NULL,
    reasons TEXT NOT NULL, PRIMARY KEY (site, elder)
);
CREATE TABLE IF NOT EXISTS notices (
    ref TEXT PRIMARY KEY, site TEXT NOT NULL, elder TEXT NOT NULL, sent REAL NOT NULL
);
"""
NOTES_MAX = 2000


class RegisterError(ValueError):
    """A record the register refuses (unknown outcome, a note too long); says why, in
    English (``str``) or in a reader's words (:meth:`words`)."""

    def __init__(self, template: str, **params: object) -> None:
        super().__init__(template.format(**params) if params else template)
        self.template = template
        self.params = params

    def words(self, tr: Translator) -> str:
        words = tr.gettext(self.template)
        return words.format(**self.params) if self.params else words


@dataclass(frozen=True, slots=True)
class Worker:
    name: str
    site: str
    language: str | None = None
    """What the worker reads (``zh-CN``); ``None``: their registry contact's, else the site's."""


@dataclass(frozen=True, slots=True)
class Session:
    worker: Worker
    csrf: str
    expires: float


@dataclass(frozen=True, slots=True)
class ContactRecord:
    """One visit or call."""

    id: int
    site: str
    elder: str
    worker: str
    at: float
    kind: str
    outcome: str
    notes: str
    follow_up: bool
    follow_up_closed: float | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Register:
    def __init__(self, path: Path, *, hasher: PasswordHasher | None = None) -> None:
        """``hasher``: Argon2id with argon2-cffi's defaults (RFC 9106's low-memory
        choice: 64 MiB, 3 passes), unless given (tests take a cheaper one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(workers)")}
        if "language" not in columns:  # a register made before workers had a language
            self._db.execute("ALTER TABLE workers ADD COLUMN language TEXT")
        self._lock = threading.Lock()
        self._hasher = hasher or PasswordHasher()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- Workers and sessions -----------------------------------------------------------------

    def add_worker(self, name: str, site: str, password: str, language: str | None = None) -> None:
        """Create or reset a worker's account (a new password ends their sessions);
        ``language``: a shipped one (:func:`homecare.i18n.valid_language`), or none."""
        import re

        from homecare.i18n import LanguageError, valid_language

        if language is not None:
            try:
                language = valid_language(language)
            except LanguageError as exc:
                raise RegisterError(str(exc)) from exc

        for what, value in (("worker", name), ("site", site)):
            if not re.fullmatch(ID_PATTERN, value):
                raise RegisterError(f"{what} {value!r} is not {ID_PATTERN}")
        if len(password) < 10:
            raise RegisterError(texts.PASSWORD_SHORT, n=10)
        hashed = self._hasher.hash(password)
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE worker = ?", (name,))
            db.execute(
                "INSERT INTO workers (name, site, password, created, language) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "site = excluded.site, password = excluded.password, "
                "language = excluded.language",
                (name, site, hashed, time.time(), language),
            )

    def check_password(self, name: str, password: str) -> Worker | None:
        row = self._db.execute(
            "SELECT name, site, password, language FROM workers WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            self._hasher.hash(password)  # the same time for an unknown name
            return None
        try:
            self._hasher.verify(row[2], password)
        except (VerificationError, InvalidHashError):
            return None
        return Worker(row[0], row[1], row[3])

    def open_session(self, worker: Worker, ttl_s: float) -> tuple[str, Session]:
        """A new session: (the token for the cookie, the session)."""
        token = secrets.token_urlsafe(32)
        session = Session(worker, secrets.token_urlsafe(32), time.time() + ttl_s)
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                       (_digest(token), worker.name, session.csrf, session.expires))  # fmt: skip
        return token, session

    def session(self, token: str) -> Session | None:
        """The live session of a cookie's token; ``None`` if unknown or expired."""
        row = self._db.execute(
            "SELECT w.name, w.site, s.csrf, s.expires, w.language FROM sessions s JOIN workers w "
            "ON w.name = s.worker WHERE s.token = ?", (_digest(token),),
        ).fetchone()  # fmt: skip
        if row is None or row[3] < time.time():
            return None
        return Session(Worker(row[0], row[1], row[4]), row[2], row[3])

    def close_session(self, token: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE token = ?", (_digest(token),))

    # -- Visits and calls -----------------------------------------------------------------------

    def record(
        self, *, site: str, elder: str, worker: str, kind: str, outcome: str, notes: str = "",
        follow_up: bool = False, at: float | None = None,
    ) -> int:  # fmt: skip
        """Store a visit or call; its id."""
        if kind not in CONTACTS:
            raise RegisterError(texts.BAD_KIND, known=", ".join(CONTACTS), given=repr(kind))
        if outcome not in texts.OUTCOMES:
            raise RegisterError(
                texts.BAD_OUTCOME, known=", ".join(texts.OUTCOMES), given=repr(outcome)
            )
        if len(notes) > NOTES_MAX:
            raise RegisterError(texts.NOTES_LONG, n=NOTES_MAX)
        now = time.time()
        when = now if at is None else at
        if when > now + 300:
            raise RegisterError(texts.IN_FUTURE)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO contacts (site, elder, worker, at, kind, outcome, notes, "
                "follow_up, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (site, elder, worker, when, kind, outcome, notes, int(follow_up), now),
            )
            return int(cur.lastrowid or 0)

    def close_follow_up(self, site: str, contact_id: int) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE contacts SET follow_up_closed = ? WHERE id = ? AND site = ? AND "
                "follow_up = 1 AND follow_up_closed IS NULL", (time.time(), contact_id, site),
            )  # fmt: skip
            return cur.rowcount == 1

    def history(self, site: str, elder: str, limit: int = 50) -> list[ContactRecord]:
        rows = self._db.execute(
            "SELECT * FROM contacts WHERE site = ? AND elder = ? ORDER BY at DESC LIMIT ?",
            (site, elder, limit),
        ).fetchall()
        return [self._contact(r) for r in rows]

    def last_contacts(self, site: str) -> dict[str, dict[str, float]]:
        """Elder → kind → when the last one was (one grouped query for the whole site)."""
        out: dict[str, dict[str, float]] = {}
        for elder, kind, at in self._db.execute(
            "SELECT DISTINCT elder, kind, max(at) OVER (PARTITION BY elder, kind) "
            "FROM contacts WHERE site = ?",
            (site,),
        ):
            out.setdefault(elder, {})[kind] = at
        return out

    def contacts_between(self, site: str | None, start: float, end: float) -> list[ContactRecord]:
        q = "SELECT * FROM contacts WHERE at >= ? AND at < ?"
        args: tuple[object, ...] = (start, end)
        if site is not None:
            q += " AND site = ?"
            args += (site,)
        return [self._contact(r) for r in self._db.execute(q + " ORDER BY at", args)]

    def open_follow_ups(self, site: str | None = None) -> list[ContactRecord]:
        q = "SELECT * FROM contacts WHERE follow_up = 1 AND follow_up_closed IS NULL"
        args: tuple[object, ...] = ()
        if site is not None:
            q += " AND site = ?"
            args = (site,)
        return [self._contact(r) for r in self._db.execute(q + " ORDER BY at", args)]

    def sites(self) -> list[str]:
        rows = self._db.execute(
            "SELECT site FROM contacts UNION SELECT site FROM workers UNION SELECT site FROM signs"
        )
        return sorted(r[0] for r in rows)

    @staticmethod
    def _contact(r: tuple[Any, ...]) -> ContactRecord:
        return ContactRecord(int(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4]),
                             str(r[5]), str(r[6]), str(r[7]), bool(r[8]),
                             None if r[9] is None else float(r[9]))  # fmt: skip

    # -- The week's signs (cached for the page) ---------------------------------------------

    def store_signs(self, site: str, computed: float, rows: dict[str, tuple[float, str]]) -> None:
        """Replace the site's signs: elder → (score, reasons as JSON)."""
        with self._tx() as db:
            db.execute("DELETE FROM signs WHERE site = ?", (site,))
            db.executemany(
                "INSERT INTO signs VALUES (?, ?, ?, ?, ?)",
                [(site, e, computed, s, r) for e, (s, r) in rows.items()],
            )

    def signs(self, site: str) -> dict[str, tuple[float, str]]:
        return {
            e: (s, r)
            for e, s, r in self._db.execute(
                "SELECT elder, score, reasons FROM signs WHERE site = ?", (site,)
            )
        }

    # -- Notices to the coordinator, each sent once ---------------------------------------

    def noticed(self, ref: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM notices WHERE ref = ?", (ref,)).fetchone() is not None
        )

    def mark_noticed(self, ref: str, site: str, elder: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO notices VALUES (?, ?, ?, ?)",
                       (ref, site, elder, time.time()))  # fmt: skip

    # -- Erasure --------------------------------------------------------------------------------

    def erase_elder(self, elder: str, site: str | None = None) -> dict[str, int]:
        """Delete every row about the elder; rows removed per table."""
        where, args = "elder = ?", [elder]
        if site is not None:
            where += " AND site = ?"
            args.append(site)
        out = {}
        with self._tx() as db:
            for table in ("contacts", "signs", "notices"):
                out[table] = db.execute(f"DELETE FROM {table} WHERE {where}", args).rowcount
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")  # the deleted notes must not linger in free pages
        return out


def register_path(state_dir: Path) -> Path:
    return state_dir / "care.db"
