"""`minipbx smdr replay`: the SMDR lines of a period, read back from the CDR store.

The lines are byte for byte what the live outputs sent (same formatter, same headers), so
a call-accounting package can be fed again after an outage it did not notice.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import BinaryIO

from firmware.accounting.smdr import SmdrFormatter
from firmware.calls.cdr import open_readonly
from firmware.config.load import ConfigError, load_config

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _moment(text: str) -> tuple[datetime, bool]:
    """A naive local moment, and whether it was a whole day (YYYY-MM-DD)."""
    try:
        if _DAY.fullmatch(text):
            return datetime.combine(datetime.strptime(text, "%Y-%m-%d").date(), time()), True
        return datetime.strptime(text, "%Y-%m-%dT%H:%M"), False
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or a moment (YYYY-MM-DDTHH:MM)"
        ) from None


def period_utc(start: str, end: str, zone: tzinfo) -> tuple[str, str]:
    """The UTC text bounds [from, to) of a local period; a day given as `end` is included."""
    first, _ = _moment(start)
    last, whole_day = _moment(end)
    if whole_day:
        last += timedelta(days=1)
    bounds = [
        moment.replace(tzinfo=zone).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        for moment in (first, last)
    ]
    if bounds[0] >= bounds[1]:
        raise argparse.ArgumentTypeError(f"--from {start} is not before --to {end}")
    return bounds[0], bounds[1]


def write_replay(
    connection: sqlite3.Connection,
    formatter: SmdrFormatter,
    start_utc: str,
    end_utc: str,
    out: BinaryIO,
    header_every: int,
    header: bool = True,
) -> int:
    """Write the period's records (by start time, in stored order) as the live stream did."""
    cursor = connection.execute(
        "SELECT * FROM cdr WHERE start_utc >= ? AND start_utc < ? ORDER BY id",
        (start_utc, end_utc),
    )
    count = 0
    since_header = 0
    if header:
        out.write(formatter.header())
    while rows := cursor.fetchmany(1000):
        for row in rows:
            if header and header_every and since_header >= header_every:
                out.write(formatter.header())
                since_header = 0
            out.write(formatter.line(dict(row)))
            since_header += 1
            count += 1
    return count


def cmd_replay(args: argparse.Namespace) -> int:
    from firmware.app import default_data_dir

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"minipbx: {error.source}: " + "; ".join(error.errors), file=sys.stderr)
        return 1
    formatter = SmdrFormatter.from_config(config)
    try:
        start_utc, end_utc = period_utc(args.start, args.end, formatter.timezone)
    except argparse.ArgumentTypeError as error:
        print(f"minipbx: {error}", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir(config)
    database = data_dir / "cdr.sqlite3"
    if not database.exists():
        print(f"minipbx: no call records at {database}", file=sys.stderr)
        return 1
    connection = open_readonly(database)
    try:
        if args.out:
            with open(args.out, "wb") as out:
                count = write_replay(connection, formatter, start_utc, end_utc, out,
                                     config.smdr.header_every, not args.no_header)  # fmt: skip
        else:
            count = write_replay(connection, formatter, start_utc, end_utc, sys.stdout.buffer,
                                 config.smdr.header_every, not args.no_header)  # fmt: skip
            sys.stdout.buffer.flush()
    except sqlite3.Error as error:
        print(f"minipbx: reading {database}: {error}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    print(f"minipbx: {count} records from {args.start} to {args.end}"
          + (f" written to {args.out}" if args.out else ""), file=sys.stderr)  # fmt: skip
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `minipbx smdr replay` to the `minipbx` parser."""
    smdr = sub.add_parser("smdr", help="SMDR call records in the fixed-width live layout")
    actions = smdr.add_subparsers(dest="smdr_command", required=True)
    replay = actions.add_parser(
        "replay",
        help="print the SMDR lines of a period exactly as the live stream sent them",
        description="Dates and moments are in the site's local time; a day given to --to is "
        "included whole. Records are chosen by start time and printed in stored order.",
    )
    replay.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="first day YYYY-MM-DD or moment YYYY-MM-DDTHH:MM")  # fmt: skip
    replay.add_argument("--to", dest="end", required=True, metavar="DATE",
                        help="last day (included) or moment (excluded)")  # fmt: skip
    replay.add_argument("--out", help="write to this file instead of standard output")
    replay.add_argument("--no-header", action="store_true", help="records only")
    replay.add_argument("--config", help="TOML file (default: the embedded default office)")
    replay.add_argument("--data-dir", help="folder holding cdr.sqlite3")
    replay.set_defaults(func=cmd_replay)
