"""What the scheduler has done, kept in DATA_DIR/schedule.sqlite3 so a restart repeats nothing.

Blocking SQLite: call it from a thread (the scheduler uses asyncio.to_thread) or the CLI.
One short connection per call, so the core and `minipbx schedule list` may use it at once.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_CREATE = """
CREATE TABLE IF NOT EXISTS schedule_job (
    name                 TEXT PRIMARY KEY,
    first_seen_utc       TEXT NOT NULL,
    last_due_utc         TEXT,
    last_success_utc     TEXT,
    last_file            TEXT NOT NULL DEFAULT '',
    last_attempt_utc     TEXT,
    failures             INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT NOT NULL DEFAULT ''
)
"""

_COLUMNS = (
    "name",
    "first_seen_utc",
    "last_due_utc",
    "last_success_utc",
    "last_file",
    "last_attempt_utc",
    "failures",
    "consecutive_failures",
    "last_error",
)


def format_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class JobState:
    """A job's history; `last_due` is the occurrence its last successful run was for."""

    name: str
    first_seen: datetime
    last_due: datetime | None = None
    last_success: datetime | None = None
    last_file: str = ""
    last_attempt: datetime | None = None
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""

    def done_through(self) -> datetime:
        """Occurrences at or before this are not owed: done, or before the job existed."""
        if self.last_due is None:
            return self.first_seen
        return max(self.last_due, self.first_seen)

    def as_json(self) -> dict[str, object]:
        def text(moment: datetime | None) -> str | None:
            return None if moment is None else format_utc(moment)

        return {
            "first_seen": text(self.first_seen),
            "last_due": text(self.last_due),
            "last_success": text(self.last_success),
            "last_file": self.last_file,
            "last_attempt": text(self.last_attempt),
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
        }


def _from_row(row: tuple[object, ...]) -> JobState:
    values = dict(zip(_COLUMNS, row, strict=True))
    first_seen = parse_utc(values["first_seen_utc"])  # type: ignore[arg-type]
    assert first_seen is not None
    return JobState(
        name=str(values["name"]),
        first_seen=first_seen,
        last_due=parse_utc(values["last_due_utc"]),  # type: ignore[arg-type]
        last_success=parse_utc(values["last_success_utc"]),  # type: ignore[arg-type]
        last_file=str(values["last_file"]),
        last_attempt=parse_utc(values["last_attempt_utc"]),  # type: ignore[arg-type]
        failures=int(values["failures"]),  # type: ignore[call-overload]
        consecutive_failures=int(values["consecutive_failures"]),  # type: ignore[call-overload]
        last_error=str(values["last_error"]),
    )


class ScheduleState:
    """The schedule_job table: one row per job name."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(_CREATE)
        return connection

    def ensure(self, names: list[str], now: datetime) -> dict[str, JobState]:
        """Every named job's state; a job seen for the first time is owed nothing before now."""
        with closing(self._connect()) as connection:
            connection.executemany(
                "INSERT OR IGNORE INTO schedule_job (name, first_seen_utc) VALUES (?, ?)",
                [(name, format_utc(now)) for name in names],
            )
            return {state.name: state for state in self._select(connection, names)}

    def all(self) -> list[JobState]:
        with closing(self._connect()) as connection:
            rows = connection.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM schedule_job ORDER BY name"
            ).fetchall()
        return [_from_row(row) for row in rows]

    def record_success(self, name: str, due: datetime, finished: datetime, file: str) -> JobState:
        with closing(self._connect()) as connection:
            connection.execute(
                "UPDATE schedule_job SET last_due_utc = ?, last_success_utc = ?, last_file = ?, "
                "last_attempt_utc = ?, consecutive_failures = 0, last_error = '' WHERE name = ?",
                (format_utc(due), format_utc(finished), file, format_utc(finished), name),
            )
            return self._select(connection, [name])[0]

    def record_failure(self, name: str, finished: datetime, error: str) -> JobState:
        with closing(self._connect()) as connection:
            connection.execute(
                "UPDATE schedule_job SET last_attempt_utc = ?, failures = failures + 1, "
                "consecutive_failures = consecutive_failures + 1, last_error = ? WHERE name = ?",
                (format_utc(finished), error[-2000:], name),
            )
            return self._select(connection, [name])[0]

    @staticmethod
    def _select(connection: sqlite3.Connection, names: list[str]) -> list[JobState]:
        marks = ", ".join("?" * len(names))
        rows = connection.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM schedule_job WHERE name IN ({marks})", names
        ).fetchall()
        return [_from_row(row) for row in rows]
