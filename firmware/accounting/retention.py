"""CDR retention: archive old records to a gzip CSV, prove the file, then prune them.

Nothing is deleted that is not in a file already read back and checked:

1. The records that started before the cutoff are written, oldest id first, to a hidden
   ``.partial`` file (every column, UTF-8, a header line; NULL is an empty field, which
   is unambiguous for the NOT NULL columns; in a nullable one an empty text reads back as
   NULL, the one thing an archive does not keep), then fsynced and renamed to
   ``cdr-FIRST_LAST.csv.gz`` (UTC dates of the first and last start; ``-2``... if taken).
2. The file is read back with an independent gzip/CSV reader, each field converted by its
   column's declared type, and its rows counted and hashed in batches of ids. Count and
   hashes must equal those taken from the database while writing.
3. The records are deleted batch by batch, each batch in its own short ``BEGIN
   IMMEDIATE`` transaction that first reads the batch's rows again and compares them with
   the file's hash for that batch (a re-rating in between, or a late record with an old
   start time, stops the prune there). Short transactions with a pause between them mean
   the core's CDR writer waits milliseconds, never the whole prune.
4. Space: with ``auto_vacuum = INCREMENTAL`` the freed pages are given back a step at a
   time; otherwise they stay on the free list and the next months' records reuse them
   (the file stops growing), unless a full VACUUM is asked for (only with the core
   stopped: it locks the database for as long as it takes to copy it). Last, the WAL is
   checkpointed and truncated so the deletes do not linger in it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BATCH_ROWS = 500
"""Records per verify-and-delete transaction. Each deleted record touches a random page of
the call_id index, so a batch costs about that many WAL pages: 500 keep one transaction
(and the core writer's longest wait) near 50 ms on an SD-card-class disk; 2000 took 0.2-0.6 s."""


class ArchiveError(RuntimeError):
    """The archive could not be written or proven; the message says what was (not) done."""


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # "integer", "real" or "text", from the declared type
    nullable: bool


@dataclass(frozen=True)
class _Batch:
    first_id: int
    last_id: int
    rows: int
    digest: bytes


@dataclass
class ArchiveResult:
    """What one archive run did (or, with dry_run, would do)."""

    cutoff_utc: str
    rows: int = 0
    file: Path | None = None
    first_start_utc: str | None = None
    last_start_utc: str | None = None
    deleted: int = 0
    file_bytes: int = 0
    sha256: str = ""  # of the archive file
    free_pages: int = 0  # unused pages left in the database afterwards
    database_bytes_before: int = 0
    database_bytes_after: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        values = dict(self.__dict__)
        values["file"] = None if self.file is None else str(self.file)
        return values


def format_cutoff(before_utc: datetime) -> str:
    """The cutoff as stored CDR time text ('...T00:00:00.000Z'), compared as text."""
    if before_utc.tzinfo is None:
        raise ValueError("the cutoff must be timezone-aware")
    moment = before_utc.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----- canonical values: what is hashed on both sides --------------------------------------


def _row_hash(hasher: Any, row: Sequence[Any]) -> None:
    """repr of the tuple: types are told apart (None, 'None', 1, 1.0) and floats round-trip."""
    hasher.update(repr(tuple(row)).encode("utf-8"))
    hasher.update(b"\n")


def _canonical(columns: list[_Column], row: Sequence[Any]) -> tuple[Any, ...]:
    """The row as the archive can state it: '' and NULL are one in a nullable column."""
    return tuple(
        None if value == "" and column.nullable else value
        for column, value in zip(columns, row, strict=True)
    )


def _batches(rows: Iterable[Sequence[Any]], size: int) -> Iterator[_Batch]:
    """Hash rows (id first) in consecutive batches of `size`."""
    hasher = hashlib.sha256()
    count = 0
    first_id = last_id = 0
    for row in rows:
        if count == 0:
            first_id = row[0]
        last_id = row[0]
        _row_hash(hasher, row)
        count += 1
        if count == size:
            yield _Batch(first_id, last_id, count, hasher.digest())
            hasher, count = hashlib.sha256(), 0
    if count:
        yield _Batch(first_id, last_id, count, hasher.digest())


def _kind(declared: str) -> str:
    declared = declared.upper()
    if "INT" in declared:
        return "integer"
    if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "text"


def _columns(connection: sqlite3.Connection) -> list[_Column]:
    info = connection.execute("PRAGMA table_info(cdr)").fetchall()
    if not info:
        raise ArchiveError("the database has no cdr table")
    # (cid, name, type, notnull, default, pk); the integer primary key is never NULL.
    return [
        _Column(name, _kind(kind), not (notnull or pk)) for _, name, kind, notnull, _, pk in info
    ]


def _from_text(column: _Column, text: str, line: int) -> Any:
    if text == "":
        return None if column.nullable else ""
    try:
        if column.kind == "integer":
            return int(text)
        if column.kind == "real":
            return float(text)
    except ValueError:
        raise ArchiveError(f"line {line}: {column.name} {text!r} is not a number") from None
    return text


# ----- the three steps ---------------------------------------------------------------------


def _connect(db_path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    if not db_path.is_file():
        raise ArchiveError(f"no CDR database at {db_path}")
    connection = sqlite3.connect(db_path, timeout=busy_timeout_s, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    return connection


def _archive_name(folder: Path, first_start: str, last_start: str) -> Path:
    stem = f"cdr-{first_start[:10]}_{last_start[:10]}"
    candidate = folder / f"{stem}.csv.gz"
    number = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{number}.csv.gz"
        number += 1
    return candidate


def _write(
    connection: sqlite3.Connection,
    columns: list[_Column],
    cutoff: str,
    partial: Path,
    batch_rows: int,
) -> list[_Batch]:
    """Write the records before the cutoff from one read snapshot; hash them as written."""
    names = [column.name for column in columns]
    select = f"SELECT {', '.join(names)} FROM cdr WHERE start_utc < ? ORDER BY id"

    def rows() -> Iterator[tuple[Any, ...]]:
        cursor = connection.execute(select, (cutoff,))
        while chunk := cursor.fetchmany(5000):
            for row in chunk:
                writer.writerow(row)
                yield _canonical(columns, row)
            text.flush()

    with open(partial, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as zipped:
            text = io.TextIOWrapper(zipped, encoding="utf-8", newline="")
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(names)
            connection.execute("BEGIN")  # one snapshot for the whole file
            try:
                batches = list(_batches(rows(), batch_rows))
            finally:
                connection.execute("COMMIT")
            text.flush()
            text.detach()
        raw.flush()
        os.fsync(raw.fileno())
    return batches


def _read_back(path: Path, columns: list[_Column], batch_rows: int) -> list[_Batch]:
    """Read the file as a stranger would, and hash what it says."""
    names = [column.name for column in columns]
    with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
        reader = csv.reader(text)
        header = next(reader, None)
        if header != names:
            raise ArchiveError(f"{path}: the header does not list the cdr columns")

        def rows() -> Iterator[list[Any]]:
            for line, fields in enumerate(reader, start=2):
                if len(fields) != len(columns):
                    raise ArchiveError(
                        f"{path} line {line}: {len(fields)} fields, not {len(columns)}"
                    )
                yield [_from_text(c, f, line) for c, f in zip(columns, fields, strict=True)]

        return list(_batches(rows(), batch_rows))


def _prune(
    connection: sqlite3.Connection,
    columns: list[_Column],
    cutoff: str,
    batches: list[_Batch],
    pause_s: float,
) -> int:
    """Delete batch by batch, each checked against the archive inside its transaction."""
    names = ", ".join(column.name for column in columns)
    where = "id BETWEEN ? AND ? AND start_utc < ?"
    deleted = 0
    for batch in batches:
        bounds = (batch.first_id, batch.last_id, cutoff)
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = connection.execute(
                f"SELECT {names} FROM cdr WHERE {where} ORDER BY id", bounds
            ).fetchall()
            now = list(_batches([_canonical(columns, row) for row in current], len(current) or 1))
            if len(current) != batch.rows or now[0].digest != batch.digest:
                raise ArchiveError(
                    f"records with ids {batch.first_id}-{batch.last_id} changed after they were "
                    f"archived; stopped after deleting {deleted} (the archive file is kept, run "
                    "again to archive the rest)"
                )
            removed = connection.execute(f"DELETE FROM cdr WHERE {where}", bounds).rowcount
            if removed != batch.rows:
                raise ArchiveError(
                    f"deleting ids {batch.first_id}-{batch.last_id} removed {removed}"
                )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        deleted += removed
        time.sleep(pause_s)  # let the core's writer in between batches
    return deleted


def _reclaim(connection: sqlite3.Connection, vacuum: bool, pause_s: float) -> None:
    mode = connection.execute("PRAGMA auto_vacuum").fetchone()[0]
    if mode == 2:  # incremental: give pages back a step at a time
        while connection.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            # executescript steps the pragma to the end; execute() frees one page per call.
            connection.executescript("PRAGMA incremental_vacuum(2000);")
            time.sleep(pause_s)
    elif vacuum:
        connection.execute("VACUUM")
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.OperationalError as error:  # busy: the core checkpoints it later
        log.info("event=cdr_archive_checkpoint_skipped reason=%r", str(error))


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _database_bytes(db_path: Path) -> int:
    return sum(path.stat().st_size for path in (db_path, Path(f"{db_path}-wal")) if path.exists())


def archive_and_prune(
    db_path: str | os.PathLike[str],
    before_utc: datetime,
    folder: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    vacuum: bool = False,
    batch_rows: int = BATCH_ROWS,
    pause_s: float = 0.005,
    busy_timeout_s: float = 10.0,
) -> ArchiveResult:
    """Archive the CDRs that started before `before_utc` into `folder`, verify, prune.

    Blocking (SQLite and disk): run it in a thread or a child process. Raises
    ArchiveError when it stops; whatever was deleted by then is in a verified file.
    """
    started = time.monotonic()
    db_path, folder = Path(db_path), Path(folder)
    cutoff = format_cutoff(before_utc)
    result = ArchiveResult(cutoff_utc=cutoff, dry_run=dry_run)
    connection = _connect(db_path, busy_timeout_s)
    try:
        columns = _columns(connection)
        count, first, last = connection.execute(
            "SELECT count(*), min(start_utc), max(start_utc) FROM cdr WHERE start_utc < ?",
            (cutoff,),
        ).fetchone()
        result.rows, result.first_start_utc, result.last_start_utc = count, first, last
        result.database_bytes_before = result.database_bytes_after = _database_bytes(db_path)
        if count == 0:
            return result
        folder.mkdir(parents=True, exist_ok=True)
        final = _archive_name(folder, first, last)
        result.file = final
        if dry_run:
            return result
        partial = final.with_name(f".{final.name}.partial")
        step = time.monotonic()
        written = _write(connection, columns, cutoff, partial, batch_rows)
        result.steps["write_s"] = time.monotonic() - step
        step = time.monotonic()
        try:
            read = _read_back(partial, columns, batch_rows)
            if sum(batch.rows for batch in written) != count or read != written:
                raise ArchiveError(
                    f"the archive read back does not match the database ({sum(b.rows for b in read)} "
                    f"rows read, {count} expected); nothing deleted"
                )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, final)
        _fsync_folder(folder)
        result.steps["verify_s"] = time.monotonic() - step
        result.file_bytes = final.stat().st_size
        result.sha256 = _file_sha256(final)
        step = time.monotonic()
        result.deleted = _prune(connection, columns, cutoff, written, pause_s)
        result.steps["prune_s"] = time.monotonic() - step
        step = time.monotonic()
        _reclaim(connection, vacuum, pause_s)
        result.steps["reclaim_s"] = time.monotonic() - step
        result.free_pages = connection.execute("PRAGMA freelist_count").fetchone()[0]
        result.database_bytes_after = _database_bytes(db_path)
    finally:
        connection.close()
        result.seconds = time.monotonic() - started
    log.info(
        "event=cdr_archived file=%s rows=%d deleted=%d seconds=%.1f",
        result.file,
        result.rows,
        result.deleted,
        result.seconds,
    )
    return result


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
