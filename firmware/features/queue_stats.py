"""Queue statistics: the rows of `queue_calls` added up per queue, for `minipbx queue stats`.

Per queue: offered (every call that came to it), answered, abandoned (the caller hung up
while waiting) with their average wait, overflowed (queue full on arrival, or `max_wait_s`
reached), left by key, and the average and longest wait of the callers who waited (every
outcome except an overflow on arrival, which never waited). Waits are kept in milliseconds.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass

from firmware.features.queue_store import (
    ABANDONED,
    ANSWERED,
    LEFT,
    OVERFLOW_FULL,
    OVERFLOW_TIMEOUT,
)


@dataclass(frozen=True)
class QueueStats:
    queue: str
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    overflowed: int = 0
    left: int = 0
    abandoned_wait_avg_ms: int | None = None
    answered_wait_avg_ms: int | None = None
    wait_avg_ms: int | None = None
    wait_max_ms: int | None = None

    def to_json(self) -> dict[str, object]:
        """Counts, and waits in seconds with one decimal (None where nobody waited)."""
        data: dict[str, object] = {}
        for key, value in asdict(self).items():
            if key.endswith("_ms"):
                data[key.removesuffix("_ms") + "_s"] = None if value is None else tenths(value)
            else:
                data[key] = value
        return data


_QUERY = f"""
SELECT queue,
       COUNT(*),
       SUM(outcome = '{ANSWERED}'),
       SUM(outcome = '{ABANDONED}'),
       SUM(outcome IN ('{OVERFLOW_FULL}', '{OVERFLOW_TIMEOUT}')),
       SUM(outcome = '{LEFT}'),
       SUM(CASE WHEN outcome = '{ABANDONED}' THEN wait_ms END),
       SUM(CASE WHEN outcome = '{ANSWERED}' THEN wait_ms END),
       SUM(CASE WHEN outcome != '{OVERFLOW_FULL}' THEN wait_ms END),
       SUM(outcome != '{OVERFLOW_FULL}'),
       MAX(CASE WHEN outcome != '{OVERFLOW_FULL}' THEN wait_ms END)
FROM queue_calls
WHERE arrival_utc >= ? AND arrival_utc < ? {{queue_filter}}
GROUP BY queue
ORDER BY queue
"""


def _average(total: int | None, count: int) -> int | None:
    """Whole milliseconds, halves rounded up (exact integer arithmetic)."""
    if not count or total is None:
        return None
    return (2 * total + count) // (2 * count)


def queue_stats(
    connection: sqlite3.Connection,
    start_utc: str = "",
    end_utc: str = "9999",
    queue: str | None = None,
    configured: tuple[str, ...] = (),
) -> list[QueueStats]:
    """Per queue, by name; `configured` queues with no call in the period appear with zeros.

    `start_utc`/`end_utc`: UTC text bounds [start, end) on the arrival time."""
    sql = _QUERY.format(queue_filter="AND queue = ?" if queue else "")
    parameters: tuple[str, ...] = (start_utc, end_utc) + ((queue,) if queue else ())
    found: dict[str, QueueStats] = {}
    for row in connection.execute(sql, parameters):
        name, offered, answered, abandoned, overflowed, left = row[:6]
        abandoned_total, answered_total, waited_total, waited_count, wait_max = row[6:]
        found[name] = QueueStats(
            name, offered, answered, abandoned, overflowed, left,
            _average(abandoned_total, abandoned), _average(answered_total, answered),
            _average(waited_total, waited_count), wait_max,
        )  # fmt: skip
    for name in configured:
        if (queue is None or name == queue) and name not in found:
            found[name] = QueueStats(name)
    return [found[name] for name in sorted(found)]


def tenths(milliseconds: int) -> float:
    """Seconds with one decimal, halves up (150350 ms -> 150.4), as the text table rounds."""
    return ((milliseconds + 50) // 100) / 10


def minutes_seconds(milliseconds: int | None) -> str:
    """m:ss (whole seconds, halves up), or '-' where nobody waited."""
    if milliseconds is None:
        return "-"
    seconds = (milliseconds + 500) // 1000
    return f"{seconds // 60}:{seconds % 60:02d}"


_COLUMNS = (
    ("queue", "queue"),
    ("offered", "offered"),
    ("answered", "answered"),
    ("abandoned", "abandoned"),
    ("abandoned_wait_avg_ms", "aband. wait"),
    ("overflowed", "overflowed"),
    ("left", "left"),
    ("answered_wait_avg_ms", "answer wait"),
    ("wait_avg_ms", "avg wait"),
    ("wait_max_ms", "max wait"),
)


def stats_table(stats: list[QueueStats]) -> str:
    """A plain text table, numbers right-aligned, waits as m:ss."""
    rows = [[title for _, title in _COLUMNS]]
    for entry in stats:
        values = asdict(entry)
        rows.append([
            minutes_seconds(values[key]) if key.endswith("_ms") else str(values[key])
            for key, _ in _COLUMNS
        ])  # fmt: skip
    widths = [max(len(row[index]) for row in rows) for index in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
