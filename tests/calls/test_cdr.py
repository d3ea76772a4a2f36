"""Call records: exactly one durable row per call, written without blocking the event loop."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from firmware.calls import cdr
from firmware.calls.cdr import (
    SCHEMA_VERSION,
    CallRecord,
    CdrStore,
    CdrStoreClosedError,
    CdrWriteError,
    Direction,
    Disposition,
    HangupSide,
    open_readonly,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, 9, 30, 0, 123000, tzinfo=UTC)


def make_record(**overrides: Any) -> CallRecord:
    values: dict[str, Any] = {
        "start": T0,
        "answer": T0 + timedelta(seconds=4.5),
        "end": T0 + timedelta(seconds=64.5),
        "caller_number": "201",
        "caller_name": "Reception",
        "dialled": "90612345678",
        "called_extension": None,
        "answered_extension": None,
        "line": "fxo:1",
        "line_group": "pstn",
        "direction": Direction.OUTGOING,
        "disposition": Disposition.ANSWERED,
        "hangup_side": HangupSide.CALLER,
        "cause": "normal",
        "destination_kind": "mobile",
        "site": "hq",
    }
    values.update(overrides)
    return CallRecord(**values)


def count_rows(path: Path) -> int:
    connection = open_readonly(path)
    try:
        return connection.execute("SELECT count(*) FROM cdr").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cdr.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[CdrStore]:
    cdr_store = CdrStore(db_path)
    yield cdr_store
    cdr_store.close()


# -- CallRecord ---------------------------------------------------------------


def test_record_durations_and_defaults() -> None:
    record = make_record()
    assert record.duration_s == pytest.approx(64.5)
    assert record.billable_s == pytest.approx(60.0)
    assert len(record.call_id) == 32
    assert make_record().call_id != record.call_id
    unanswered = make_record(answer=None, disposition=Disposition.NO_ANSWER)
    assert unanswered.billable_s == 0.0


def test_record_normalises_to_utc_milliseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    record = make_record(
        start=datetime(2024, 5, 1, 11, 30, 0, 123456, tzinfo=plus_two),
        answer=None,
        disposition="busy",
    )
    assert record.start == datetime(2024, 5, 1, 9, 30, 0, 123000, tzinfo=UTC)
    assert record.start.tzinfo is UTC
    assert record.disposition is Disposition.BUSY


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"start": datetime(2024, 5, 1, 9, 30)}, "timezone-aware"),
        ({"end": T0 - timedelta(seconds=1), "answer": None, "disposition": "busy"}, "before"),
        ({"answer": T0 + timedelta(hours=1)}, "outside"),
        ({"answer": None}, "needs answer set"),
        ({"disposition": Disposition.BUSY}, "needs answer None"),
    ],
)
def test_record_rejects_inconsistent_times(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_record(**overrides)


# -- writing and reading -------------------------------------------------------


async def test_write_and_read_back_all_fields(store: CdrStore) -> None:
    answered = make_record()
    internal = make_record(
        start=T0 + timedelta(minutes=1),
        answer=None,
        end=T0 + timedelta(minutes=1, seconds=20),
        caller_number="202",
        caller_name="",
        dialled="203",
        called_extension="203",
        line=None,
        line_group=None,
        direction=Direction.INTERNAL,
        disposition=Disposition.NO_ANSWER,
        hangup_side=HangupSide.SYSTEM,
        cause="ring_timeout",
        destination_kind=None,
        site="",
    )
    await store.async_write(answered)
    await store.async_write(internal)

    recent = await store.async_recent()
    assert recent == [internal, answered]  # newest first
    for record in recent:
        assert record.start.tzinfo is not None
        assert record.end.utcoffset() == timedelta(0)
    assert await store.async_recent(limit=1) == [internal]
    assert await store.async_recent(limit=0) == []


async def test_stored_columns_for_reports(store: CdrStore, db_path: Path) -> None:
    await store.async_write(make_record(call_id="abc"))
    connection = open_readonly(db_path)
    try:
        row = connection.execute("SELECT * FROM cdr WHERE call_id = 'abc'").fetchone()
    finally:
        connection.close()
    assert row["start_utc"] == "2024-05-01T09:30:00.123Z"
    assert row["answer_utc"] == "2024-05-01T09:30:04.623Z"
    assert row["end_utc"] == "2024-05-01T09:31:04.623Z"
    assert row["duration_s"] == pytest.approx(64.5)
    assert row["billable_s"] == pytest.approx(60.0)
    assert row["direction"] == "outgoing"
    assert row["disposition"] == "answered"
    assert row["hangup_side"] == "caller"


async def test_row_visible_to_another_connection_when_write_returns(
    store: CdrStore, db_path: Path
) -> None:
    for expected in range(1, 4):
        await store.async_write(make_record())
        assert count_rows(db_path) == expected


async def test_concurrent_writes_are_group_committed(store: CdrStore, db_path: Path) -> None:
    records = [make_record(caller_number=str(number)) for number in range(200)]
    await asyncio.gather(*(store.async_write(record) for record in records))
    assert count_rows(db_path) == 200
    counters = store.counters
    assert counters["written"] == 200
    assert counters["failed"] == 0
    assert counters["queued"] == 0
    assert counters["batches"] < 200


def test_write_blocking(store: CdrStore, db_path: Path) -> None:
    store.write_blocking(make_record())
    assert count_rows(db_path) == 1


async def test_async_recent_rejects_bad_limit(store: CdrStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.async_recent(-1)


# -- schema ---------------------------------------------------------------------


async def test_version_1_database_is_migrated_keeping_its_rows(db_path: Path) -> None:
    """A unit upgraded in the field keeps every record it had and gains the new columns."""
    connection = sqlite3.connect(db_path)
    cdr.MIGRATIONS[0](connection)
    connection.execute("PRAGMA user_version = 1")
    newer = ("correlation_id", "transferred_by", "account_code", "external_number", "mode")
    columns = [c for c in cdr._COLUMNS if c not in newer]
    old_row = cdr._record_to_row(make_record(call_id="old-1"))[: len(columns)]
    connection.execute(
        f"INSERT INTO cdr ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", old_row
    )
    connection.commit()
    connection.close()
    upgraded = CdrStore(db_path)
    try:
        upgraded.write_blocking(make_record(call_id="new-1", correlation_id="c0ffee", transferred_by="205"))
        records = {r.call_id: r for r in await upgraded.async_recent(10)}
    finally:
        upgraded.close()
    assert records["old-1"].correlation_id == "" and records["old-1"].transferred_by is None
    assert records["new-1"].correlation_id == "c0ffee" and records["new-1"].transferred_by == "205"


def test_schema_version_and_pragmas(store: CdrStore, db_path: Path) -> None:
    store.write_blocking(make_record())
    connection = sqlite3.connect(db_path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2, "incremental"
        indexes = {
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'cdr'"
            )
        }
    finally:
        connection.close()
    assert {"cdr_start", "cdr_caller", "cdr_called"} <= indexes


def test_reopening_keeps_rows_and_schema(db_path: Path) -> None:
    first = CdrStore(db_path)
    first.write_blocking(make_record())
    first.close()
    second = CdrStore(db_path)
    try:
        second.write_blocking(make_record())
    finally:
        second.close()
    assert count_rows(db_path) == 2


def test_database_from_newer_firmware_is_refused(db_path: Path) -> None:
    connection = sqlite3.connect(db_path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    newer = CdrStore(db_path)
    try:
        with pytest.raises(CdrWriteError, match="newer than this firmware"):
            newer.write_blocking(make_record())
    finally:
        newer.close()


def test_constructor_does_no_io_on_callers_thread(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "cdr.sqlite3"
    lazy = CdrStore(path)  # the directory does not exist: must not raise here
    lazy.close()
    assert not path.parent.exists()


# -- durability -------------------------------------------------------------------


def test_records_survive_kill_9(db_path: Path) -> None:
    count = 25
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from datetime import UTC, datetime
        from firmware.calls.cdr import CallRecord, CdrStore

        store = CdrStore({str(db_path)!r})
        now = datetime.now(UTC)
        for number in range({count}):
            store.write_blocking(CallRecord(
                start=now, answer=None, end=now, caller_number=str(number), caller_name="",
                dialled="200", called_extension="200", answered_extension=None, line=None,
                line_group=None, direction="internal", disposition="busy",
                hangup_side="callee", cause="busy",
            ))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert count_rows(db_path) == count


# -- closing ----------------------------------------------------------------------


async def test_close_flushes_queued_writes(db_path: Path) -> None:
    closing = CdrStore(db_path)
    tasks = [asyncio.create_task(closing.async_write(make_record())) for _ in range(50)]
    await asyncio.sleep(0)  # let every task queue its record
    closing.close()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert count_rows(db_path) == 50


async def test_close_is_idempotent_and_rejects_new_work(db_path: Path) -> None:
    closing = CdrStore(db_path)
    closing.write_blocking(make_record())
    closing.close()
    closing.close()
    with pytest.raises(CdrStoreClosedError):
        await closing.async_write(make_record())
    with pytest.raises(CdrStoreClosedError):
        closing.write_blocking(make_record())
    with pytest.raises(CdrStoreClosedError):
        await closing.async_recent()
    assert closing.counters["written"] == 1


# -- failures -----------------------------------------------------------------------


async def test_failed_write_raises_and_writer_keeps_going(
    store: CdrStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_insert = cdr._insert_row
    poisoned = make_record()

    def insert_or_fail(connection: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        if row[0] == poisoned.call_id:
            raise sqlite3.OperationalError("disk I/O error")
        real_insert(connection, row)

    monkeypatch.setattr(cdr, "_insert_row", insert_or_fail)
    with pytest.raises(CdrWriteError, match="disk I/O error") as caught:
        await store.async_write(poisoned)
    assert caught.value.call_id == poisoned.call_id
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert store.counters["failed"] == 1

    await store.async_write(make_record())
    assert store.counters["written"] == 1
    assert store.counters["queued"] == 0
    assert count_rows(db_path) == 1


async def test_one_bad_record_does_not_fail_its_batch(store: CdrStore, db_path: Path) -> None:
    """A duplicate call_id is refused; the records committed alongside it are not."""
    duplicate = make_record()
    await store.async_write(duplicate)
    others = [make_record() for _ in range(20)]
    results = await asyncio.gather(
        *(store.async_write(record) for record in [*others[:10], duplicate, *others[10:]]),
        return_exceptions=True,
    )
    failures = [result for result in results if isinstance(result, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], CdrWriteError)
    assert isinstance(failures[0].__cause__, sqlite3.IntegrityError)
    assert count_rows(db_path) == 21
    counters = store.counters
    assert (counters["written"], counters["failed"], counters["queued"]) == (21, 1, 0)


async def test_writer_recovers_when_the_disk_comes_back(tmp_path: Path) -> None:
    """An unwritable location fails each write loudly, and the next write retries it."""
    directory = tmp_path / "not_yet_mounted"
    recovering = CdrStore(directory / "cdr.sqlite3")
    try:
        with pytest.raises(CdrWriteError, match="unable to open"):
            await recovering.async_write(make_record())
        directory.mkdir()
        await recovering.async_write(make_record())
        assert recovering.counters["failed"] == 1
        assert recovering.counters["written"] == 1
    finally:
        recovering.close()
    assert count_rows(directory / "cdr.sqlite3") == 1


async def test_cancelled_wait_still_writes(store: CdrStore, db_path: Path) -> None:
    task = asyncio.create_task(store.async_write(make_record()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A later write is committed after the cancelled one: queue order is kept.
    await store.async_write(make_record())
    assert count_rows(db_path) == 2
