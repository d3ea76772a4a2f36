"""DISA PIN attempts and lock-outs, kept in SQLite so a restart does not forgive a guesser.

Every attempt is a row (when, node, source, result, user on success; never the PIN).
Wrong PINs from one source since the later of the window's start and its last success or
lock-out count towards its lock-out; wrong PINs from every source count towards locking
the whole node (source "*"), against a caller that changes its shown number on each try.
The methods are blocking: call them through `asyncio.to_thread` (`DisaLockouts.run`).
The time is always passed in, so the rules are tested without waiting.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

ALL_SOURCES = "*"
FILE_NAME = "disa.sqlite3"
_KEEP = timedelta(days=90)  # attempts older than this are pruned (the log keeps them too)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS disa_attempt (
    id INTEGER PRIMARY KEY,
    at_utc TEXT NOT NULL,
    node TEXT NOT NULL,
    source TEXT NOT NULL,
    result TEXT NOT NULL CHECK (result IN ('ok', 'wrong', 'lockout')),
    user TEXT
);
CREATE INDEX IF NOT EXISTS disa_attempt_by_source ON disa_attempt (node, source, at_utc);
CREATE TABLE IF NOT EXISTS disa_lockout (
    node TEXT NOT NULL,
    source TEXT NOT NULL,
    until_utc TEXT NOT NULL,
    PRIMARY KEY (node, source)
);
"""

T = TypeVar("T")


def format_time(value: datetime) -> str:
    """UTC ISO text with milliseconds and 'Z' (as the cdr table): sorts as it compares."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Limits:
    """A DISA node's lock-out settings (from its config)."""

    failures: int
    window_s: float
    lockout_s: float
    failures_all: int


@dataclass(frozen=True)
class Verdict:
    """After a wrong PIN: the source's wrong PINs counted so far and who is now locked."""

    failures: int
    source_locked: bool
    node_locked: bool


class DisaLockouts:
    """One SQLite file (or memory, without a data folder), one operation at a time."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        """A file is opened per operation (DISA calls are rare; nothing stays open at
        shutdown); memory, having nothing else to keep it, stays open."""
        if self._connection is not None:
            return self._connection
        target = str(self.path) if self.path is not None else ":memory:"
        connection = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        try:
            connection.executescript(_SCHEMA)
        except sqlite3.Error:
            connection.close()
            raise
        if self.path is None:
            self._connection = connection
        return connection

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            connection = self._connect()
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = work(connection)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
                return result
            finally:
                if connection is not self._connection:
                    connection.close()

    async def run(self, method: Callable[..., T], *args: object) -> T:
        """Run one of the blocking methods below off the event loop."""
        return await asyncio.to_thread(method, *args)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # ----- the rules (blocking) ----------------------------------------------------------

    def locked_until(self, node: str, source: str, now: datetime) -> datetime | None:
        """When the lock-out on `source` (or on the whole node) ends; None: not locked."""

        def work(connection: sqlite3.Connection) -> datetime | None:
            row = connection.execute(
                "SELECT MAX(until_utc) FROM disa_lockout WHERE node = ? AND source IN (?, ?)"
                " AND until_utc > ?",
                (node, source, ALL_SOURCES, format_time(now)),
            ).fetchone()
            return datetime.fromisoformat(row[0]).astimezone(UTC) if row[0] else None

        return self._transaction(work)

    def record_success(self, node: str, source: str, user: str, now: datetime) -> None:
        """A good PIN: the source's earlier wrong ones no longer count."""
        self._transaction(lambda c: _insert(c, now, node, source, "ok", user))

    def record_failure(self, node: str, source: str, now: datetime, limits: Limits) -> Verdict:
        """A wrong PIN; locks the source, or the whole node, when it reaches the limit."""

        def work(connection: sqlite3.Connection) -> Verdict:
            _insert(connection, now, node, source, "wrong", None)
            connection.execute(
                "DELETE FROM disa_attempt WHERE at_utc < ?", (format_time(now - _KEEP),)
            )
            connection.execute("DELETE FROM disa_lockout WHERE until_utc <= ?", (format_time(now),))
            since = format_time(now - timedelta(seconds=limits.window_s))
            failures = _wrong_since(connection, node, source, since)
            source_locked = failures >= limits.failures
            if source_locked:
                _lock(connection, node, source, now, limits.lockout_s)
            node_locked = _wrong_since(connection, node, None, since) >= limits.failures_all
            if node_locked:
                _lock(connection, node, ALL_SOURCES, now, limits.lockout_s)
            return Verdict(failures, source_locked, node_locked)

        return self._transaction(work)


def _insert(
    connection: sqlite3.Connection,
    now: datetime,
    node: str,
    source: str,
    result: str,
    user: str | None,
) -> None:
    connection.execute(
        "INSERT INTO disa_attempt (at_utc, node, source, result, user) VALUES (?, ?, ?, ?, ?)",
        (format_time(now), node, source, result, user),
    )


def _wrong_since(connection: sqlite3.Connection, node: str, source: str | None, since: str) -> int:
    """Wrong PINs after `since` and after the last success or lock-out that resets them
    (for the whole node, `source` None: only its own lock-outs reset the count)."""
    if source is None:
        reset_sql = "SELECT MAX(at_utc) FROM disa_attempt WHERE node = ? AND source = ?"
        reset_args: tuple[str, ...] = (node, ALL_SOURCES)
        count_sql = "SELECT COUNT(*) FROM disa_attempt WHERE node = ? AND result = 'wrong'"
        count_args: tuple[str, ...] = (node,)
    else:
        reset_sql = (
            "SELECT MAX(at_utc) FROM disa_attempt WHERE node = ? AND source = ?"
            " AND result IN ('ok', 'lockout')"
        )
        reset_args = (node, source)
        count_sql = (
            "SELECT COUNT(*) FROM disa_attempt WHERE node = ? AND source = ? AND result = 'wrong'"
        )
        count_args = (node, source)
    reset = connection.execute(reset_sql, reset_args).fetchone()[0]
    start = max(since, reset) if reset else since
    return int(
        connection.execute(f"{count_sql} AND at_utc > ?", (*count_args, start)).fetchone()[0]
    )


def _lock(
    connection: sqlite3.Connection, node: str, source: str, now: datetime, lockout_s: float
) -> None:
    until = format_time(now + timedelta(seconds=lockout_s))
    connection.execute(
        "INSERT INTO disa_lockout (node, source, until_utc) VALUES (?, ?, ?)"
        " ON CONFLICT (node, source) DO UPDATE SET until_utc = excluded.until_utc",
        (node, source, until),
    )
    _insert(connection, now, node, source, "lockout", None)
