"""The manual mode override and a short mode history, in DATA_DIR/modes.sqlite3.

One row holds the override in force (mode, who set it, when, optional expiry), so it
survives restarts; `mode_history` keeps the last changes (overrides set, cleared and
expired, and the automatic changes the core saw) for `minipbx mode`.

The CLI writes here directly while the core runs. The core notices through
`PRAGMA data_version`, which changes when *another* connection commits: one cheap
query, no file watching. Every method blocks: the core calls them from its own
single database thread, the CLI from its main thread.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware.sqlite_schema import migrate

DB_NAME = "modes.sqlite3"
HISTORY_KEPT = 1000


@dataclass(frozen=True, slots=True)
class Override:
    """A mode forced by hand; `expires_at` None lasts until cleared ("mode auto")."""

    mode: str
    set_by: str
    set_at: datetime
    expires_at: datetime | None = None

    def active_at(self, when: datetime) -> bool:
        return self.expires_at is None or when < self.expires_at

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "set_by": self.set_by,
            "set_at": format_time(self.set_at),
            "expires_at": None if self.expires_at is None else format_time(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of the mode history: `event` is override_set, override_cleared,
    override_expired or mode_changed."""

    at: datetime
    event: str
    mode: str
    previous: str
    reason: str
    by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": format_time(self.at),
            "event": self.event,
            "mode": self.mode,
            "previous": self.previous,
            "reason": self.reason,
            "by": self.by,
        }


def format_time(value: datetime) -> str:
    """UTC ISO text with milliseconds and Z, as the CDR table stores times."""
    if value.tzinfo is None:
        raise ValueError(f"time {value.isoformat()} must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _migration_1(connection: sqlite3.Connection) -> None:
    connection.execute(
        """
        CREATE TABLE mode_override (
            id          INTEGER PRIMARY KEY CHECK (id = 1),
            mode        TEXT NOT NULL,
            set_by      TEXT NOT NULL,
            set_at_utc  TEXT NOT NULL,
            expires_utc TEXT
        )
        """
    )
    connection.execute(
        """
        CREATE TABLE mode_history (
            id       INTEGER PRIMARY KEY,
            at_utc   TEXT NOT NULL,
            event    TEXT NOT NULL,
            mode     TEXT NOT NULL,
            previous TEXT NOT NULL DEFAULT '',
            reason   TEXT NOT NULL DEFAULT '',
            by       TEXT NOT NULL DEFAULT ''
        )
        """
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_1,)
SCHEMA_VERSION = len(MIGRATIONS)


class ModeStoreError(RuntimeError):
    """The modes database cannot be used (newer schema, unreadable file)."""


class OverrideStore:
    """Blocking access to modes.sqlite3; use one store from one thread only."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._connection: sqlite3.Connection | None = None
        self._data_version: int | None = None

    # ----- connection ----------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating and migrating unless read-only); idempotent."""
        if self._connection is not None:
            return
        if self.readonly:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            if not self.readonly:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                _migrate(connection)
            else:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version != SCHEMA_VERSION:
                    raise ModeStoreError(
                        f"{self.path}: schema version {version}, this firmware reads "
                        f"{SCHEMA_VERSION}"
                    )
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._data_version = None  # the first `changed()` after opening says yes: reread

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            self.open()
        assert self._connection is not None
        return self._connection

    def _read_data_version(self) -> int:
        return int(self.connection.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        """True once after another connection (the CLI) committed a change, and on the
        first call after opening (changes made while it was closed are not known)."""
        version = self._read_data_version()
        changed = version != self._data_version
        self._data_version = version
        return changed

    # ----- override ------------------------------------------------------------------------

    def load(self) -> Override | None:
        row = self.connection.execute(
            "SELECT mode, set_by, set_at_utc, expires_utc FROM mode_override WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        mode, set_by, set_at, expires = row
        return Override(mode, set_by, parse_time(set_at),
                        None if expires is None else parse_time(expires))  # fmt: skip

    def save(self, override: Override, previous_mode: str) -> None:
        """Put `override` in force (replacing any) and note it in the history."""
        expires = None if override.expires_at is None else format_time(override.expires_at)
        with self._transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO mode_override (id, mode, set_by, set_at_utc, expires_utc)"
                " VALUES (1, ?, ?, ?, ?)",
                (override.mode, override.set_by, format_time(override.set_at), expires),
            )
            reason = "until " + expires if expires else "until cancelled"
            self._add_history(connection, HistoryEntry(
                override.set_at, "override_set", override.mode, previous_mode, reason,
                override.set_by))  # fmt: skip

    def clear(
        self, at: datetime, by: str, event: str = "override_cleared", only: Override | None = None
    ) -> Override | None:
        """Remove the override (only if it is still `only`, when given); return what went."""
        with self._transaction() as connection:
            current = self.load()
            if current is None or (only is not None and current != only):
                return None
            connection.execute("DELETE FROM mode_override WHERE id = 1")
            self._add_history(connection, HistoryEntry(at, event, current.mode, current.mode,
                                                       "", by))  # fmt: skip
        return current

    # ----- history -------------------------------------------------------------------------

    def add_history(self, entry: HistoryEntry) -> None:
        with self._transaction() as connection:
            self._add_history(connection, entry)

    def history(self, limit: int = 20) -> list[HistoryEntry]:
        """The latest entries, newest first."""
        rows = self.connection.execute(
            "SELECT at_utc, event, mode, previous, reason, by FROM mode_history"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [HistoryEntry(parse_time(row[0]), *row[1:]) for row in rows]

    @staticmethod
    def _add_history(connection: sqlite3.Connection, entry: HistoryEntry) -> None:
        connection.execute(
            "INSERT INTO mode_history (at_utc, event, mode, previous, reason, by)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                format_time(entry.at),
                entry.event,
                entry.mode,
                entry.previous,
                entry.reason,
                entry.by,
            ),
        )
        connection.execute(
            "DELETE FROM mode_history WHERE id <= (SELECT max(id) FROM mode_history) - ?",
            (HISTORY_KEPT,),
        )

    def _transaction(self) -> _Transaction:
        if self.readonly:
            raise ModeStoreError(f"{self.path} is open read-only")
        return _Transaction(self.connection)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is None:
            self.connection.execute("COMMIT")
        elif self.connection.in_transaction:
            self.connection.execute("ROLLBACK")


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION, one locked transaction per step."""
    migrate(connection, MIGRATIONS, "modes database", ModeStoreError)

