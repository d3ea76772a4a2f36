"""`minipbx queue stats`: per queue, calls offered, answered, abandoned, overflowed, waits.

Reads DATA_DIR/queues.sqlite3 read-only, with or without a running core. Dates are the
site's local days (`site.timezone`); a day given to --to is included whole. Queues in the
config with no call in the period are listed with zeros.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from firmware.config.queue_schema import QueueNode
from firmware.features.queue_stats import queue_stats, stats_table
from firmware.features.queue_store import DB_NAME, QueueStoreError, open_readonly

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class _UsageError(Exception):
    """Bad input on the command line: printed, exit status 2."""


def utc_bound(text: str, zone: ZoneInfo, *, end: bool) -> str:
    """UTC text of a local day (YYYY-MM-DD) or moment (YYYY-MM-DDTHH:MM); a day given as
    the end of a period means the end of that day."""
    try:
        if _DAY.fullmatch(text):
            moment = datetime.combine(datetime.strptime(text, "%Y-%m-%d").date(), time())
            if end:
                moment += timedelta(days=1)
        else:
            moment = datetime.strptime(text, "%Y-%m-%dT%H:%M")
    except ValueError:
        raise _UsageError(
            f"{text!r} is not a date (YYYY-MM-DD) or a moment (YYYY-MM-DDTHH:MM)"
        ) from None
    utc = moment.replace(tzinfo=zone).astimezone(UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cmd_stats(args: argparse.Namespace) -> int:
    from firmware.app import default_data_dir
    from firmware.config.load import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"minipbx: {error.source}: " + "; ".join(error.errors), file=sys.stderr)
        return 1
    zone = ZoneInfo(config.site.timezone)
    try:
        start = utc_bound(args.start, zone, end=False) if args.start else ""
        end = utc_bound(args.end, zone, end=True) if args.end else "9999"
        if start >= end:
            raise _UsageError(f"--from {args.start} is not before --to {args.end}")
    except _UsageError as error:
        print(f"minipbx queue stats: {error}", file=sys.stderr)
        return 2
    configured = tuple(node.name for node in config.routing.nodes if isinstance(node, QueueNode))
    database = (Path(args.data_dir) if args.data_dir else default_data_dir(config)) / DB_NAME
    if not database.exists():
        print(f"minipbx: no queue calls recorded yet ({database} does not exist)", file=sys.stderr)
        return 1
    try:
        connection = open_readonly(database)
        try:
            stats = queue_stats(connection, start, end, args.queue, configured)
        finally:
            connection.close()
    except (sqlite3.Error, QueueStoreError) as error:
        print(f"minipbx: reading {database}: {error}", file=sys.stderr)
        return 1
    if args.queue and not stats:
        known = ", ".join(configured) or "none configured"
        print(f"minipbx: no queue named {args.queue!r} ({known})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([entry.to_json() for entry in stats], indent=2))
    else:
        sys.stdout.write(stats_table(stats))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `minipbx queue stats` to the `minipbx` parser."""
    queue = sub.add_parser("queue", help="call queues: statistics")
    actions = queue.add_subparsers(dest="queue_command", required=True)
    stats = actions.add_parser(
        "stats",
        help="per queue: offered, answered, abandoned, overflowed, left by key, waits",
        description="Dates and moments are in the site's local time; a day given to --to is "
        "included whole. Without --from/--to every recorded call counts.",
    )
    stats.add_argument("--from", dest="start", metavar="DATE",
                       help="first day YYYY-MM-DD or moment YYYY-MM-DDTHH:MM")  # fmt: skip
    stats.add_argument("--to", dest="end", metavar="DATE",
                       help="last day (included) or moment (excluded)")  # fmt: skip
    stats.add_argument("--queue", help="only this queue")
    stats.add_argument("--json", action="store_true")
    stats.add_argument("--config", help="TOML file (default: the embedded default office)")
    stats.add_argument("--data-dir", help="folder holding queues.sqlite3")
    stats.set_defaults(func=cmd_stats)


def main(argv: list[str] | None = None) -> int:
    """Run the queue commands on their own (`python -m firmware.features.cli_queue stats`)."""
    parser = argparse.ArgumentParser(prog="minipbx")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["queue", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
