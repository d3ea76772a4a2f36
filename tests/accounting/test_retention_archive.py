"""CDR retention: the archive holds every column of every old record, read back with an
independent reader; nothing is deleted that the archive does not hold."""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware.accounting import cli_schedule, retention
from firmware.accounting.retention import ArchiveError, archive_and_prune
from firmware.calls.cdr import (
    _COLUMNS,
    _INSERT_SQL,
    RATING_COLUMNS,
    CallRecord,
    CdrStore,
    Direction,
    Disposition,
    HangupSide,
    _migrate,
    _record_to_row,
)

CUTOFF = datetime(2026, 2, 1, tzinfo=UTC)


def record(start: str, **changes: object) -> CallRecord:
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    values: dict[str, object] = dict(
        start=begin,
        answer=begin + timedelta(seconds=5),
        end=begin + timedelta(seconds=65.25),
        caller_number="201",
        caller_name="Reception",
        dialled="9212345678",
        called_extension=None,
        answered_extension=None,
        line="city1",
        line_group="city",
        direction=Direction.OUTGOING,
        disposition=Disposition.ANSWERED,
        hangup_side=HangupSide.CALLER,
        cause="normal_clearing",
        destination_kind="local",
        site="lisbon",
        external_number="212345678",
    )
    values.update(changes)
    return CallRecord(**values)  # type: ignore[arg-type]


OLD = [
    record("2026-01-05T09:00:00", caller_name='João "Jó" Conceição, Lda'),
    record(
        "2026-01-20T14:30:00",
        answer=None,
        disposition=Disposition.NO_ANSWER,
        external_number=None,
        account_code="PROJ-7",
    ),
    record("2026-01-31T23:59:59.999", direction=Direction.INTERNAL, dialled="203", line=None),
]
NEW = [
    record("2026-02-01T00:00:00"),  # exactly at the cutoff: kept
    record("2026-03-10T10:00:00"),
]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "cdr.sqlite3"
    store = CdrStore(path)
    for call in [*OLD, *NEW]:
        store.write_blocking(call)
    store.close()
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE cdr SET dest_class = 'local', tariff = 'pt', cost_e4 = 1234, currency = 'EUR', "
            "rated_utc = '2026-01-05T09:01:05.250Z' WHERE answer_utc IS NOT NULL"
        )
    return path


def table(path: Path) -> tuple[list[str], list[tuple[object, ...]]]:
    with sqlite3.connect(path) as connection:
        cursor = connection.execute("SELECT * FROM cdr ORDER BY id")
        return [d[0] for d in cursor.description], cursor.fetchall()


def as_text(value: object) -> str:
    return "" if value is None else str(value)


def test_old_records_are_archived_with_every_column_and_deleted(
    database: Path, tmp_path: Path
) -> None:
    columns, before = table(database)
    folder = tmp_path / "archive"

    result = archive_and_prune(database, CUTOFF, folder)

    assert result.file == folder / "cdr-2026-01-05_2026-01-31.csv.gz"
    assert (result.rows, result.deleted) == (3, 3)
    with gzip.open(result.file, "rt", encoding="utf-8", newline="") as text:
        lines = list(csv.reader(text))
    assert lines[0] == columns
    assert set(columns) == {"id", *_COLUMNS, *RATING_COLUMNS}  # every column
    assert lines[1:] == [[as_text(value) for value in row] for row in before[:3]]
    assert lines[1][columns.index("caller_name")] == 'João "Jó" Conceição, Lda'
    assert lines[1][columns.index("cost_e4")] == "1234"
    assert lines[1][columns.index("duration_s")] == "65.25"
    assert lines[2][columns.index("answer_utc")] == ""
    _, after = table(database)
    assert after == before[3:]
    assert not list(folder.glob(".*"))  # no partial file left


def test_dry_run_names_the_file_and_changes_nothing(database: Path, tmp_path: Path) -> None:
    _, before = table(database)
    result = archive_and_prune(database, CUTOFF, tmp_path / "archive", dry_run=True)
    assert (result.rows, result.deleted, result.dry_run) == (3, 0, True)
    assert result.file is not None and result.file.name == "cdr-2026-01-05_2026-01-31.csv.gz"
    assert not result.file.exists()
    assert table(database)[1] == before


def test_nothing_old_means_no_file(database: Path, tmp_path: Path) -> None:
    result = archive_and_prune(database, datetime(2025, 1, 1, tzinfo=UTC), tmp_path / "a")
    assert (result.rows, result.file, result.deleted) == (0, None, 0)
    assert not (tmp_path / "a").exists()


def test_an_existing_archive_is_never_overwritten(database: Path, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "cdr-2026-01-05_2026-01-31.csv.gz").write_bytes(b"an older archive")
    result = archive_and_prune(database, CUTOFF, folder)
    assert result.file == folder / "cdr-2026-01-05_2026-01-31-2.csv.gz"
    assert (folder / "cdr-2026-01-05_2026-01-31.csv.gz").read_bytes() == b"an older archive"


def test_an_archive_that_reads_back_wrong_deletes_nothing(
    database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, before = table(database)
    real = retention._from_text

    def misread(column: retention._Column, text: str, line: int) -> object:
        value = real(column, text, line)
        return "someone else" if column.name == "caller_name" and line == 3 else value

    monkeypatch.setattr(retention, "_from_text", misread)
    folder = tmp_path / "archive"
    with pytest.raises(ArchiveError, match="does not match the database"):
        archive_and_prune(database, CUTOFF, folder)
    assert table(database)[1] == before
    assert list(folder.iterdir()) == []  # neither the archive nor its partial file


def test_a_record_rerated_after_archiving_is_not_deleted(
    database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-rating between writing and pruning: the prune stops at the changed batch."""
    real = retention._read_back

    def read_back_then_rerate(*args: object) -> object:
        batches = real(*args)  # type: ignore[arg-type]
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE cdr SET cost_e4 = 999 WHERE id = 3")
        return batches

    monkeypatch.setattr(retention, "_read_back", read_back_then_rerate)
    with pytest.raises(ArchiveError, match="ids 3-3 changed after they were archived"):
        archive_and_prune(database, CUTOFF, tmp_path / "archive", batch_rows=1)
    _, after = table(database)
    assert [row[0] for row in after] == [3, 4, 5]  # ids 1 and 2 archived and deleted
    assert (tmp_path / "archive" / "cdr-2026-01-05_2026-01-31.csv.gz").exists()


def test_a_late_record_with_an_old_start_is_kept_for_the_next_archive(
    database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = retention._read_back
    late = record("2026-01-15T12:00:00", caller_number="299")

    def read_back_then_late_write(*args: object) -> object:
        batches = real(*args)  # type: ignore[arg-type]
        store = CdrStore(database)
        store.write_blocking(late)
        store.close()
        return batches

    monkeypatch.setattr(retention, "_read_back", read_back_then_late_write)
    result = archive_and_prune(database, CUTOFF, tmp_path / "archive")
    assert result.deleted == 3
    _, after = table(database)
    assert [row[1] for row in after] == [NEW[0].call_id, NEW[1].call_id, late.call_id]
    monkeypatch.setattr(retention, "_read_back", real)
    second = archive_and_prune(database, CUTOFF, tmp_path / "archive")
    assert (second.rows, second.deleted) == (1, 1)
    assert second.file is not None and second.file.name == "cdr-2026-01-15_2026-01-15.csv.gz"


def bulk_insert(path: Path, count: int) -> None:
    """`count` January records, one a minute, in one transaction (the store fsyncs each)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        _record_to_row(
            record((base + timedelta(minutes=index)).isoformat()[:19], caller_name="x" * 200)
        )
        for index in range(count)
    ]
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    _migrate(connection)
    connection.execute("BEGIN")
    connection.executemany(_INSERT_SQL, rows)
    connection.execute("COMMIT")
    connection.close()


def test_incremental_vacuum_gives_the_space_back(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    connection.execute("PRAGMA journal_mode = WAL")
    _migrate(connection)
    connection.close()
    bulk_insert(path, 3000)
    size_before = path.stat().st_size
    result = archive_and_prune(path, CUTOFF, tmp_path / "archive")
    assert result.deleted == 3000
    assert result.free_pages == 0
    assert path.stat().st_size < size_before / 4


def test_without_auto_vacuum_the_pages_stay_free_for_new_records(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    bulk_insert(path, 1000)
    result = archive_and_prune(path, CUTOFF, tmp_path / "archive")
    assert result.deleted == 1000 and result.free_pages > 50


# ----- the command -------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="minipbx")
    cli_schedule.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_cli_archives_before_a_local_date(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The embedded default office is in Europe/Lisbon: 2026-02-01 00:00 there is 00:00 UTC.
    folder = tmp_path / "out"
    code = run_cli(
        "cdr", "archive", "--before", "2026-02-01", "--folder", str(folder),
        "--data-dir", str(database.parent), "--json",
    )  # fmt: skip
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["rows"], shown["deleted"]) == (3, 3)
    assert shown["file"] == str(folder / "cdr-2026-01-05_2026-01-31.csv.gz")


@pytest.mark.parametrize(
    ("before", "message"),
    [("2026-13-01", "must be a date, YYYY-MM-DD"), ("2999-01-01", "is after today")],
)
def test_cli_refuses_a_bad_date(
    database: Path, before: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, rows = table(database)
    assert run_cli("cdr", "archive", "--before", before, "--data-dir", str(database.parent)) == 2
    assert message in capsys.readouterr().err
    assert table(database)[1] == rows


def test_cli_dry_run_says_what_it_would_do(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        "cdr", "archive", "--before", "2026-02-01", "--dry-run", "--data-dir", str(database.parent)
    )
    assert code == 0
    assert capsys.readouterr().out == (
        "would archive 3 call records (2026-01-05T09:00:00.000Z .. 2026-01-31T23:59:59.999Z) to "
        f"{database.parent / 'archive' / 'cdr-2026-01-05_2026-01-31.csv.gz'} and delete them\n"
    )
