"""Which member answered a circular hunt group last: the next call starts after them.

Kept in memory for the running core and in SQLite (`DATA_DIR/hunt.sqlite3`) so the turn
survives a restart. The database is only touched through `asyncio.to_thread`, with a
connection per operation (a few a minute at most): the event loop never waits on disk.
Without a data folder (bare tests) the memory lasts as long as the process.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("firmware.features")

DB_NAME = "hunt.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hunt_last_answered (
    hunt_group TEXT PRIMARY KEY,
    member TEXT NOT NULL,
    answered_utc TEXT NOT NULL
)
"""


def _utc_text(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


class HuntMemory:
    """Last answering member per hunt group name; one per core (`calls.features["hunt"]`)."""

    def __init__(self, data_dir: Path | None) -> None:
        self.path = data_dir / DB_NAME if data_dir is not None else None
        self._last: dict[str, str] = {}
        self._loaded = False
        self._lock = asyncio.Lock()  # one load, and writes in the order they were made

    async def last(self, group: str) -> str | None:
        """The member who answered `group` last (None: never, or forgotten)."""
        if not self._loaded:
            async with self._lock:
                if not self._loaded:
                    self._last.update(await self._read_all())
                    self._loaded = True
        return self._last.get(group)

    async def remember(self, group: str, member: str) -> None:
        """Record the answer; a failed write is logged and the memory still moves on."""
        self._last[group] = member
        if self.path is None:
            return
        async with self._lock:
            try:
                await asyncio.to_thread(
                    _write, self.path, group, member, _utc_text(datetime.now(UTC))
                )
            except (OSError, sqlite3.Error) as error:
                log.error(
                    "event=hunt_memory_write_failed group=%s member=%s error=%r",
                    group,
                    member,
                    str(error),
                )

    async def _read_all(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            return await asyncio.to_thread(_read, self.path)
        except (OSError, sqlite3.Error) as error:
            log.error("event=hunt_memory_read_failed path=%s error=%r", self.path, str(error))
            return {}


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    connection.execute(_SCHEMA)
    return connection


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    connection = _connect(path)
    try:
        rows = connection.execute("SELECT hunt_group, member FROM hunt_last_answered").fetchall()
    finally:
        connection.close()
    return {group: member for group, member in rows}


def _write(path: Path, group: str, member: str, when: str) -> None:
    connection = _connect(path)
    try:
        connection.execute(
            "INSERT INTO hunt_last_answered (hunt_group, member, answered_utc) VALUES (?, ?, ?) "
            "ON CONFLICT (hunt_group) DO UPDATE SET member = excluded.member, "
            "answered_utc = excluded.answered_utc",
            (group, member, when),
        )
    finally:
        connection.close()


def memory_of(features: dict[str, object], data_dir: Path | None) -> HuntMemory:
    """The core's one memory, made on first use."""
    memory = features.get("hunt")
    if not isinstance(memory, HuntMemory):
        memory = HuntMemory(data_dir)
        features["hunt"] = memory
    return memory
