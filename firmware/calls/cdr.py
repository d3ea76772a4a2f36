"""Call detail records: one durable SQLite row per call, never blocking the event loop.

Every call ends in exactly one :class:`CallRecord`.  The call code awaits
:meth:`CdrStore.async_write` *before* it releases the call's resources, and the
await only returns once the row is committed (WAL, ``synchronous=FULL``: the WAL
is fsynced on commit, so the row survives kill -9 and power loss).

One writer thread owns the only read-write connection.  It takes whatever is
queued at once and commits it as one transaction (group commit), so a burst of
hang-ups costs one fsync, not one each.  If that transaction fails, each record
is retried on its own so one bad record cannot take others down with it; a
record that still fails is logged in full, counted, and raised to whoever waits
for it as :class:`CdrWriteError`.  The thread keeps running and reopens the
database on the next write, so a transient disk problem does not stop later
records.

Dispositions (exactly one per call, decided by the call code):

``answered``   the callee (or a machine: voicemail, IVR) answered; ``answer`` is set.
``busy``       the callee or the far end signalled busy.
``no_answer``  it rang until the ring timeout without being answered.
``abandoned``  the caller hung up while dialling or while it was ringing.
``rejected``   refused by policy (class of service, blocked number, DND).
``invalid``    the dialled number matches no extension or route.
``congestion`` no free line, channel or other resource to place the call.
``failed``     any other error (line fault, protocol error, internal failure).

Times are stored as ISO-8601 UTC text with milliseconds and a ``Z``
(``2024-05-01T12:34:56.789Z``), which sorts chronologically as text;
``duration_s`` and ``billable_s`` are stored too so reports need no date maths.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from firmware.sqlite_schema import migrate

__all__ = [
    "MIGRATIONS",
    "RATING_COLUMNS",
    "SCHEMA_VERSION",
    "CallRecord",
    "CdrError",
    "CdrStore",
    "CdrStoreClosedError",
    "CdrWriteError",
    "Direction",
    "Disposition",
    "HangupSide",
    "Rater",
    "open_readonly",
    "record_to_json",
]

log = logging.getLogger(__name__)

MAX_BATCH = 500
"""Most records committed in one transaction, to bound the time one commit takes."""


class Direction(StrEnum):
    INTERNAL = "internal"
    INCOMING = "incoming"
    OUTGOING = "outgoing"


class Disposition(StrEnum):
    """How the call ended; see the module docstring for when each applies."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    ABANDONED = "abandoned"
    REJECTED = "rejected"
    INVALID = "invalid"
    CONGESTION = "congestion"
    FAILED = "failed"


class HangupSide(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    SYSTEM = "system"


class CdrError(RuntimeError):
    """Base class for call-record storage errors."""


class CdrWriteError(CdrError):
    """A record was not committed; ``__cause__`` holds the database error."""

    def __init__(self, call_id: str, error: BaseException) -> None:
        self.call_id = call_id
        super().__init__(f"call record {call_id} was not written: {error}")
        self.__cause__ = error


class CdrStoreClosedError(CdrError):
    """The store was closed, so it accepts no more work."""


def _to_utc_millis(value: datetime, name: str) -> datetime:
    """Normalise to tz-aware UTC at millisecond resolution, the stored resolution."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _new_call_id() -> str:
    return uuid.uuid4().hex


@dataclass(kw_only=True)
class CallRecord:
    """One finished call.

    Times are converted to UTC and truncated to milliseconds on construction, so
    a record compares equal to the one read back from the database.  Raises
    ValueError for naive times, times out of order, or an ``answered``
    disposition without an answer time (and vice versa): these are bugs in the
    call code and must show up in its tests, not in the billing report.
    """

    call_id: str = field(default_factory=_new_call_id)
    start: datetime
    answer: datetime | None
    end: datetime
    caller_number: str
    caller_name: str
    dialled: str
    called_extension: str | None
    answered_extension: str | None
    line: str | None
    line_group: str | None
    direction: Direction
    disposition: Disposition
    hangup_side: HangupSide
    cause: str = ""
    destination_kind: str | None = None
    site: str = ""
    # The same id on the records of both offices for a call across sites (reports join them).
    correlation_id: str = ""
    # The extension that transferred this call here (SIP REFER), if any.
    transferred_by: str | None = None
    # The client or project code entered for this call (call accounting), if any.
    account_code: str | None = None
    # The outside number: what was dialled after the access code, or the DID called in.
    external_number: str | None = None
    # The office mode (day, night, ...) in force when an incoming call arrived.
    mode: str | None = None

    def __post_init__(self) -> None:
        self.start = _to_utc_millis(self.start, "start")
        self.end = _to_utc_millis(self.end, "end")
        if self.answer is not None:
            self.answer = _to_utc_millis(self.answer, "answer")
        self.direction = Direction(self.direction)
        self.disposition = Disposition(self.disposition)
        self.hangup_side = HangupSide(self.hangup_side)
        if self.end < self.start:
            raise ValueError(f"call {self.call_id}: end {self.end} is before start {self.start}")
        if self.answer is not None and not self.start <= self.answer <= self.end:
            raise ValueError(f"call {self.call_id}: answer {self.answer} is outside start..end")
        answered = self.disposition is Disposition.ANSWERED
        if answered != (self.answer is not None):
            raise ValueError(
                f"call {self.call_id}: disposition {self.disposition} needs answer "
                f"{'set' if answered else 'None'}"
            )

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def billable_s(self) -> float:
        return 0.0 if self.answer is None else (self.end - self.answer).total_seconds()


# ---------------------------------------------------------------------------
# Schema


def _migration_1_create_cdr(connection: sqlite3.Connection) -> None:
    """Version 1: the cdr table.  Enum columns have no CHECK so new values need no rebuild."""
    connection.execute(
        """
        CREATE TABLE cdr (
            id                 INTEGER PRIMARY KEY,
            call_id            TEXT NOT NULL UNIQUE,
            start_utc          TEXT NOT NULL,
            answer_utc         TEXT,
            end_utc            TEXT NOT NULL,
            duration_s         REAL NOT NULL,
            billable_s         REAL NOT NULL,
            caller_number      TEXT NOT NULL,
            caller_name        TEXT NOT NULL,
            dialled            TEXT NOT NULL,
            called_extension   TEXT,
            answered_extension TEXT,
            line               TEXT,
            line_group         TEXT,
            direction          TEXT NOT NULL,
            disposition        TEXT NOT NULL,
            hangup_side        TEXT NOT NULL,
            cause              TEXT NOT NULL DEFAULT '',
            destination_kind   TEXT,
            site               TEXT NOT NULL DEFAULT ''
        )
        """
    )
    connection.execute("CREATE INDEX cdr_start ON cdr (start_utc)")
    connection.execute("CREATE INDEX cdr_caller ON cdr (caller_number, start_utc)")
    connection.execute("CREATE INDEX cdr_called ON cdr (called_extension, start_utc)")


def _migration_2_correlation_and_transfer(connection: sqlite3.Connection) -> None:
    """Version 2: cross-site correlation id and the transferring extension."""
    connection.execute("ALTER TABLE cdr ADD COLUMN correlation_id TEXT NOT NULL DEFAULT ''")
    connection.execute("ALTER TABLE cdr ADD COLUMN transferred_by TEXT")
    connection.execute("CREATE INDEX cdr_correlation ON cdr (correlation_id) WHERE correlation_id != ''")


def _migration_3_accounting(connection: sqlite3.Connection) -> None:
    """Version 3: account codes, the outside number, and the rating columns.

    The rating columns (``dest_class`` .. ``rated_utc``) are filled when the record is
    written, by the store's rater, and rewritten by a re-rating; NULL ``cost_e4`` means
    "not rated" (no tariff applies), 0 means free.  ``cost_e4`` is the net cost (before
    VAT) in ten-thousandths of ``currency``, an integer so sums in SQL stay exact.
    """
    for column in (
        "account_code TEXT",
        "external_number TEXT",
        "dest_class TEXT",
        "tariff TEXT",
        "cost_e4 INTEGER",
        "currency TEXT",
        "prepaid_account TEXT",
        "rated_utc TEXT",
    ):
        connection.execute(f"ALTER TABLE cdr ADD COLUMN {column}")
    connection.execute(
        "CREATE INDEX cdr_account ON cdr (account_code, start_utc) WHERE account_code IS NOT NULL"
    )


def _migration_4_mode(connection: sqlite3.Connection) -> None:
    """Version 4: the office mode in force for an incoming call."""
    connection.execute("ALTER TABLE cdr ADD COLUMN mode TEXT")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migration_1_create_cdr,
    _migration_2_correlation_and_transfer,
    _migration_3_accounting,
    _migration_4_mode,
)
"""Migration ``i`` (0-based) takes the schema from ``user_version`` i to i + 1.

Append only; never edit a released migration.  Each runs inside one transaction
with the version bump, so a crash leaves the old version intact.  Use
``connection.execute`` only: ``executescript`` would commit half-way.
"""

SCHEMA_VERSION = len(MIGRATIONS)


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION, one locked transaction per step."""
    migrate(connection, MIGRATIONS, "CDR database", CdrError)


def _rollback_quietly(connection: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; SQLite may already have rolled back itself."""
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    except sqlite3.Error as error:
        log.warning("CDR rollback failed: %s", error)


_COLUMNS = (
    "call_id",
    "start_utc",
    "answer_utc",
    "end_utc",
    "duration_s",
    "billable_s",
    "caller_number",
    "caller_name",
    "dialled",
    "called_extension",
    "answered_extension",
    "line",
    "line_group",
    "direction",
    "disposition",
    "hangup_side",
    "cause",
    "destination_kind",
    "site",
    "correlation_id",
    "transferred_by",
    "account_code",
    "external_number",
    "mode",
)
RATING_COLUMNS = ("dest_class", "tariff", "cost_e4", "currency", "prepaid_account", "rated_utc")
"""Columns a :data:`Rater` may fill; every other column comes from the CallRecord."""

_INSERT_SQL = f"INSERT INTO cdr ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_RECENT_SQL = f"SELECT {', '.join(_COLUMNS)} FROM cdr ORDER BY start_utc DESC, id DESC LIMIT ?"


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _record_to_row(record: CallRecord) -> tuple[Any, ...]:
    """Snapshot a record as a row on the caller's thread, so later mutation cannot race."""
    return (
        record.call_id,
        _format_time(record.start),
        None if record.answer is None else _format_time(record.answer),
        _format_time(record.end),
        record.duration_s,
        record.billable_s,
        record.caller_number,
        record.caller_name,
        record.dialled,
        record.called_extension,
        record.answered_extension,
        record.line,
        record.line_group,
        str(record.direction),
        str(record.disposition),
        str(record.hangup_side),
        record.cause,
        record.destination_kind,
        record.site,
        record.correlation_id,
        record.transferred_by,
        record.account_code,
        record.external_number,
        record.mode,
    )


def _record_from_row(row: Sequence[Any]) -> CallRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    return CallRecord(
        call_id=values["call_id"],
        start=_parse_time(values["start_utc"]),
        answer=None if values["answer_utc"] is None else _parse_time(values["answer_utc"]),
        end=_parse_time(values["end_utc"]),
        caller_number=values["caller_number"],
        caller_name=values["caller_name"],
        dialled=values["dialled"],
        called_extension=values["called_extension"],
        answered_extension=values["answered_extension"],
        line=values["line"],
        line_group=values["line_group"],
        direction=Direction(values["direction"]),
        disposition=Disposition(values["disposition"]),
        hangup_side=HangupSide(values["hangup_side"]),
        cause=values["cause"],
        destination_kind=values["destination_kind"],
        site=values["site"],
        correlation_id=values["correlation_id"],
        transferred_by=values["transferred_by"],
        account_code=values["account_code"],
        external_number=values["external_number"],
        mode=values["mode"],
    )


Rater = Callable[[sqlite3.Connection, dict[str, Any]], dict[str, Any] | None]
"""Prices a record in the writer thread, inside the transaction that inserts it.

Called with the writer's connection and the row as ``{column: value}`` (cdr column
names, times as stored text); returns values for some of :data:`RATING_COLUMNS`, or
None for "not rated".  It may also write its own tables (prepaid balances) on that
connection: they commit or roll back together with the record.  A rater that raises
leaves the record unrated, never unwritten: the error is logged and counted.
"""


def _insert_row(connection: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Insert one row (a separate function so tests can inject disk errors)."""
    connection.execute(_INSERT_SQL, row)


def _rate_row(
    connection: sqlite3.Connection, rater: Rater, row: tuple[Any, ...], failed: Callable[[], None]
) -> dict[str, Any]:
    """The stored row as a dict, with whatever the rater decided (in a savepoint)."""
    values = dict(zip(_COLUMNS, row, strict=True))
    connection.execute("SAVEPOINT rating")
    try:
        rating = rater(connection, dict(values)) or {}
        unknown = set(rating) - set(RATING_COLUMNS)
        if unknown:
            raise ValueError(f"rater returned unknown columns {sorted(unknown)}")
    except Exception:
        connection.execute("ROLLBACK TO rating")
        connection.execute("RELEASE rating")
        failed()
        log.exception("event=cdr_rating_failed call_id=%s", values["call_id"])
        return values
    connection.execute("RELEASE rating")
    values.update(rating)
    return values


def _insert_rated(connection: sqlite3.Connection, values: dict[str, Any]) -> None:
    names = [name for name in (*_COLUMNS, *RATING_COLUMNS) if name in values]
    connection.execute(
        f"INSERT INTO cdr ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [values[name] for name in names],
    )


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open the CDR database read-only (for reports), with rows addressable by column name.

    Safe next to a running CdrStore: WAL readers never block its writer.
    """
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True)
    connection.row_factory = sqlite3.Row
    return connection


# ---------------------------------------------------------------------------
# Writer thread

Settle = Callable[[BaseException | None, Any], None]
"""Hands a job's outcome (error, result) back to whoever waits for it."""


@dataclass(eq=False)
class _WriteJob:
    call_id: str
    row: tuple[Any, ...]
    settle: Settle


@dataclass(eq=False)
class _ReadJob:
    limit: int
    settle: Settle


_STOP = object()


def _loop_settler(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> Settle:
    """Settle an asyncio future from the writer thread, the only thread-safe way."""

    def settle(error: BaseException | None, result: Any) -> None:
        try:
            loop.call_soon_threadsafe(_settle_future, future, error, result)
        except RuntimeError:
            log.warning("CDR job finished after its event loop closed (error: %s)", error)

    return settle


def _settle_future(future: asyncio.Future[Any], error: BaseException | None, result: Any) -> None:
    if future.done():  # The awaiting task was cancelled; the work itself still happened.
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _blocking_settler(future: concurrent.futures.Future[Any]) -> Settle:
    def settle(error: BaseException | None, result: Any) -> None:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    return settle


class _Writer:
    """Owns the queue, the thread and its connection; holds no reference to the store.

    Keeping the store out of here lets the store be garbage-collected (and its
    finalizer flush the queue) while the thread is still running.
    """

    def __init__(self, path: str, rater: Rater | None = None) -> None:
        self.path = path
        self.rater = rater
        self.jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.closed = False
        self.counters = {"written": 0, "failed": 0, "queued": 0, "batches": 0, "rating_failed": 0}
        self.connection: sqlite3.Connection | None = None
        self.thread = threading.Thread(
            target=self.run, name=f"cdr-writer:{Path(path).name}", daemon=True
        )

    def submit(self, job: _WriteJob | _ReadJob) -> None:
        with self.lock:
            if self.closed:
                raise CdrStoreClosedError("the CDR store is closed")
            if isinstance(job, _WriteJob):
                self.counters["queued"] += 1
            self.jobs.put(job)

    def shutdown(self, timeout: float) -> None:
        """Let the thread finish what is queued, then stop it; safe to call repeatedly."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.jobs.put(_STOP)
        if threading.current_thread() is self.thread or not self.thread.is_alive():
            return
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning(
                "CDR writer still busy after %.1f s with %d records queued",
                timeout,
                self.counters["queued"],
            )

    # -- thread side -------------------------------------------------------

    def run(self) -> None:
        try:
            stopping = False
            while not stopping:
                job = self.jobs.get()
                if job is _STOP:
                    break
                batch = [job]
                while len(batch) < MAX_BATCH:
                    try:
                        job = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stopping = True
                        break
                    batch.append(job)
                self._process(batch)
        finally:
            self._close_connection()
            self._fail_leftovers()

    def _process(self, batch: list[object]) -> None:
        """Run the batch in queue order; consecutive writes share one transaction."""
        writes: list[_WriteJob] = []
        for job in batch:
            if isinstance(job, _WriteJob):
                writes.append(job)
                continue
            if writes:
                self._write(writes)
                writes = []
            if isinstance(job, _ReadJob):
                self._read(job)
        if writes:
            self._write(writes)

    def _write(self, jobs: list[_WriteJob]) -> None:
        try:
            connection = self._open_connection()
            connection.execute("BEGIN IMMEDIATE")
            stored: list[dict[str, Any]] = []
            try:
                for job in jobs:
                    if self.rater is None:
                        _insert_row(connection, job.row)
                        stored.append(dict(zip(_COLUMNS, job.row, strict=True)))
                    else:
                        values = _rate_row(connection, self.rater, job.row, self._rating_failed)
                        _insert_rated(connection, values)
                        stored.append(values)
                connection.execute("COMMIT")
            except BaseException:
                _rollback_quietly(connection)
                raise
        except Exception as error:
            if not isinstance(error, sqlite3.IntegrityError):
                self._close_connection()  # Reopen next time: the handle may be wedged.
            if len(jobs) > 1:
                log.warning(
                    "CDR group commit of %d records failed (%s); retrying one by one",
                    len(jobs),
                    error,
                )
                for job in jobs:
                    self._write([job])
            else:
                self._fail(jobs[0], error)
            return
        with self.lock:
            self.counters["written"] += len(jobs)
            self.counters["queued"] -= len(jobs)
            self.counters["batches"] += 1
        for job, values in zip(jobs, stored, strict=True):
            self._settle(job, None, values)

    def _rating_failed(self) -> None:
        with self.lock:
            self.counters["rating_failed"] += 1

    def _fail(self, job: _WriteJob, error: Exception) -> None:
        # Log the whole row: if the caller also fails to handle the error, the log
        # is the last place this call's record exists.
        log.error("CDR for call %s NOT written: %s; record: %r", job.call_id, error, job.row)
        with self.lock:
            self.counters["failed"] += 1
            self.counters["queued"] -= 1
        self._settle(job, CdrWriteError(job.call_id, error), None)

    def _read(self, job: _ReadJob) -> None:
        try:
            connection = self._open_connection()
            rows = connection.execute(_RECENT_SQL, (job.limit,)).fetchall()
            records = [_record_from_row(row) for row in rows]
        except Exception as error:
            self._settle(job, error, None)
            return
        self._settle(job, None, records)

    def _settle(self, job: _WriteJob | _ReadJob, error: Exception | None, result: Any) -> None:
        try:
            job.settle(error, result)
        except Exception:
            log.exception("CDR writer could not report a result")

    def _open_connection(self) -> sqlite3.Connection:
        if self.connection is not None:
            return self.connection
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            if connection.execute("PRAGMA user_version").fetchone()[0] == 0:
                # A new database: let retention give pruned pages back to the SD card.
                connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("CDR database %s is in %s mode, not WAL", self.path, mode)
            connection.execute("PRAGMA synchronous=FULL")
            _migrate(connection)
        except BaseException:
            connection.close()
            raise
        self.connection = connection
        return connection

    def _close_connection(self) -> None:
        if self.connection is None:
            return
        try:
            self.connection.close()
        except sqlite3.Error as error:
            log.warning("closing the CDR database failed: %s", error)
        self.connection = None

    def _fail_leftovers(self) -> None:
        """If the thread ever stops early, fail waiting jobs rather than hang their callers."""
        with self.lock:
            self.closed = True
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _WriteJob):
                self._fail(job, CdrStoreClosedError("the CDR writer stopped"))
            elif isinstance(job, _ReadJob):
                self._settle(job, CdrStoreClosedError("the CDR writer stopped"), None)


# ---------------------------------------------------------------------------
# Public store


class CdrStore:
    """The call-record database, written by one background thread.

    Construction does no I/O on the caller's thread; the database is opened and
    migrated by the writer on first use, so a bad path shows up as a
    CdrWriteError on the first write.  Call :meth:`close` on shutdown (it blocks
    while the queue drains, so from async code run it in a thread); a forgotten
    store is still flushed when collected or at interpreter exit.
    """

    def __init__(self, path: str | os.PathLike[str], rater: Rater | None = None) -> None:
        self._path = os.fspath(path)
        self._writer = _Writer(self._path, rater)
        self._writer.thread.start()
        self._finalizer = weakref.finalize(self, self._writer.shutdown, 5.0)

    @property
    def path(self) -> str:
        return self._path

    async def async_write(self, record: CallRecord) -> dict[str, Any]:
        """Return once the record is committed; raise CdrWriteError if it was not.

        Returns the stored row as ``{column: value}`` (cdr column names, times as stored
        text), including the rating when the store has a rater: what the SMDR prints.
        Cancelling the awaiting task does not cancel the write.
        """
        row = _record_to_row(record)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._writer.submit(_WriteJob(record.call_id, row, _loop_settler(loop, future)))
        return await future

    def write_blocking(self, record: CallRecord) -> dict[str, Any]:
        """As async_write, for threads and scripts; never call it on the event loop."""
        row = _record_to_row(record)
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._writer.submit(_WriteJob(record.call_id, row, _blocking_settler(future)))
        return future.result()

    async def async_recent(self, limit: int = 20) -> list[CallRecord]:
        """Newest calls first (by start time), read in queue order after earlier writes."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[CallRecord]] = loop.create_future()
        self._writer.submit(_ReadJob(limit, _loop_settler(loop, future)))
        return await future

    def close(self, timeout: float = 5.0) -> None:
        """Commit everything already queued, then stop the writer; idempotent."""
        self._writer.shutdown(timeout)
        self._finalizer.detach()

    @property
    def counters(self) -> dict[str, int]:
        """``written``/``failed`` records, ``queued`` not yet settled, commit ``batches``."""
        with self._writer.lock:
            return dict(self._writer.counters)

    def __repr__(self) -> str:
        return f"CdrStore({self._path!r})"


def record_to_json(record: CallRecord) -> dict[str, Any]:
    """The record as plain JSON types: for logs, the control API and exports."""
    return {
        "call_id": record.call_id,
        "start": record.start.isoformat(),
        "answer": record.answer.isoformat() if record.answer else None,
        "end": record.end.isoformat(),
        "duration_s": round(record.duration_s, 3),
        "billable_s": round(record.billable_s, 3),
        "caller_number": record.caller_number,
        "caller_name": record.caller_name,
        "dialled": record.dialled,
        "called_extension": record.called_extension,
        "answered_extension": record.answered_extension,
        "line": record.line,
        "line_group": record.line_group,
        "direction": str(record.direction),
        "disposition": str(record.disposition),
        "hangup_side": str(record.hangup_side),
        "cause": record.cause,
        "destination_kind": record.destination_kind,
        "correlation_id": record.correlation_id,
        "transferred_by": record.transferred_by,
        "account_code": record.account_code,
        "external_number": record.external_number,
        "mode": record.mode,
    }
