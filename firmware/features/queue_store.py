"""Queue state that outlives the process, in DATA_DIR/queues.sqlite3.

- `queue_calls`: one row per call that came to a queue, written when its outcome is known
  (answered, abandoned, overflowed, left by key): what `minipbx queue stats` adds up.
- `queue_agents`: per queue and agent, the log-in state (when the agent ever used the
  feature codes) and the calls answered on the last day counted (for fewest_calls).
- `queue_agent_activity`: per agent, when the last queue call ended (longest idle).
- `queue_memory`: per queue, the agent who answered last (round robin).

Every method blocks: the core calls them from the queue service's one database thread,
the CLI from its main thread. Each method opens its own short connection, so nothing stays
open between calls and the CLI can read while the core writes (WAL).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from firmware.sqlite_schema import migrate

DB_NAME = "queues.sqlite3"

ANSWERED = "answered"
ABANDONED = "abandoned"
OVERFLOW_FULL = "overflow_full"
OVERFLOW_TIMEOUT = "overflow_timeout"
LEFT = "left"
OUTCOMES = (ANSWERED, ABANDONED, OVERFLOW_FULL, OVERFLOW_TIMEOUT, LEFT)

_RECENT_WAITS = 10  # answered waits read back at start to seed the expected-wait average


def format_time(value: datetime) -> str:
    """UTC ISO text with milliseconds and Z, as the CDR table stores times."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class QueueCallRow:
    """The outcome of one call that came to a queue."""

    queue: str
    caller: str
    arrival: datetime
    outcome: str
    wait_ms: int
    agent: str | None = None


@dataclass
class StoredState:
    """What the queue service reads back at start."""

    logins: dict[tuple[str, str], bool] = field(default_factory=dict)
    calls_today: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    last_end: dict[str, float] = field(default_factory=dict)  # agent -> epoch seconds
    last_answered: dict[str, str] = field(default_factory=dict)  # queue -> agent
    answered_waits: dict[str, list[int]] = field(default_factory=dict)  # queue -> ms, oldest first


def _migration_1(connection: sqlite3.Connection) -> None:
    connection.execute(
        """
        CREATE TABLE queue_calls (
            id          INTEGER PRIMARY KEY,
            queue       TEXT NOT NULL,
            caller      TEXT NOT NULL DEFAULT '',
            arrival_utc TEXT NOT NULL,
            outcome     TEXT NOT NULL,
            wait_ms     INTEGER NOT NULL,
            agent       TEXT
        )
        """
    )
    connection.execute("CREATE INDEX queue_calls_arrival ON queue_calls (arrival_utc)")
    connection.execute(
        """
        CREATE TABLE queue_agents (
            queue       TEXT NOT NULL,
            agent       TEXT NOT NULL,
            logged_in   INTEGER,
            changed_utc TEXT,
            calls_day   TEXT NOT NULL DEFAULT '',
            calls       INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (queue, agent)
        )
        """
    )
    connection.execute(
        "CREATE TABLE queue_agent_activity (agent TEXT PRIMARY KEY, last_end_utc TEXT NOT NULL)"
    )
    connection.execute(
        "CREATE TABLE queue_memory (queue TEXT PRIMARY KEY, last_answered TEXT NOT NULL)"
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_1,)
SCHEMA_VERSION = len(MIGRATIONS)


class QueueStoreError(RuntimeError):
    """The queue database cannot be used (a newer schema, an unreadable file)."""


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    migrate(connection, MIGRATIONS, str(path), QueueStoreError)


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """The statistics for reports; refuses a schema this firmware does not know."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=5.0)
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        connection.close()
        raise QueueStoreError(
            f"{path}: schema version {version}, this firmware reads {SCHEMA_VERSION}"
        )
    return connection


class QueueStore:
    """Blocking access to queues.sqlite3 (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._migrated = False

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (each statement commits on its own)."""
        if not self._migrated:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            if not self._migrated:
                connection.execute("PRAGMA journal_mode=WAL")
                _migrate(connection, self.path)
                self._migrated = True
            yield connection
        finally:
            connection.close()

    def load(self) -> StoredState:
        state = StoredState()
        with self._connect() as connection:
            for queue, agent, logged_in, day, calls in connection.execute(
                "SELECT queue, agent, logged_in, calls_day, calls FROM queue_agents"
            ):
                if logged_in is not None:
                    state.logins[(queue, agent)] = bool(logged_in)
                if day:
                    state.calls_today[(queue, agent)] = (day, calls)
            for agent, last_end in connection.execute(
                "SELECT agent, last_end_utc FROM queue_agent_activity"
            ):
                state.last_end[agent] = parse_time(last_end).timestamp()
            for queue, agent in connection.execute("SELECT queue, last_answered FROM queue_memory"):
                state.last_answered[queue] = agent
            rows = connection.execute(
                "SELECT queue, wait_ms FROM ("
                " SELECT queue, wait_ms, id, ROW_NUMBER() OVER"
                "  (PARTITION BY queue ORDER BY id DESC) AS recent"
                " FROM queue_calls WHERE outcome = ?) WHERE recent <= ? ORDER BY id",
                (ANSWERED, _RECENT_WAITS),
            )
            for queue, wait_ms in rows:
                state.answered_waits.setdefault(queue, []).append(wait_ms)
        return state

    def add_call(self, row: QueueCallRow) -> None:
        if row.outcome not in OUTCOMES:
            raise ValueError(f"unknown queue call outcome {row.outcome!r}")
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO queue_calls (queue, caller, arrival_utc, outcome, wait_ms, agent)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row.queue, row.caller, format_time(row.arrival), row.outcome, row.wait_ms,
                 row.agent),
            )  # fmt: skip

    def set_login(self, queue: str, agent: str, logged_in: bool, at: datetime) -> None:
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO queue_agents (queue, agent, logged_in, changed_utc)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (queue, agent) DO UPDATE SET logged_in = excluded.logged_in,"
                " changed_utc = excluded.changed_utc",
                (queue, agent, int(logged_in), format_time(at)),
            )

    def agent_answered(self, queue: str, agent: str, day: str, calls: int) -> None:
        """The agent took a call of `queue`: its count for `day` and the round-robin memory."""
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT INTO queue_agents (queue, agent, calls_day, calls) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (queue, agent) DO UPDATE SET calls_day = excluded.calls_day,"
                " calls = excluded.calls",
                (queue, agent, day, calls),
            )
            connection.execute(
                "INSERT OR REPLACE INTO queue_memory (queue, last_answered) VALUES (?, ?)",
                (queue, agent),
            )
            connection.execute("COMMIT")

    def agent_call_ended(self, agent: str, at: datetime) -> None:
        with self._connect() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO queue_agent_activity (agent, last_end_utc) VALUES (?, ?)",
                (agent, format_time(at)),
            )
