"""`minipbx cdr archive` and `minipbx schedule list|run-now` (registered by firmware/cli.py).

They work on the files of the data folder directly, with or without a running core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from firmware.config.load import ConfigError, load_config
from firmware.config.schema import Config


def _config_and_data_dir(args: argparse.Namespace) -> tuple[Config, Path]:
    from firmware.app import default_data_dir

    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise SystemExit(f"minipbx: {error}") from None
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir(config)
    return config, data_dir


def _core_is_running(data_dir: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(data_dir / "control.sock"))
        except OSError:
            return False
    return True


def cmd_cdr_archive(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from firmware.accounting.retention import ArchiveError, archive_and_prune
    from firmware.accounting.schedule_times import local_midnight_utc

    config, data_dir = _config_and_data_dir(args)
    try:
        before = date.fromisoformat(args.before)
    except ValueError:
        print(f"minipbx: --before {args.before!r} must be a date, YYYY-MM-DD", file=sys.stderr)
        return 2
    timezone = config.site.timezone
    today = datetime.now(ZoneInfo(timezone)).date()
    if before > today:
        print(
            f"minipbx: --before {before} is after today ({today}): that would archive calls "
            "still being made",
            file=sys.stderr,
        )
        return 2
    if args.vacuum and _core_is_running(data_dir):
        print(
            "minipbx: --vacuum copies the whole database under an exclusive lock; stop the core "
            "first (the freed space is reused by new records without it)",
            file=sys.stderr,
        )
        return 2
    folder = Path(args.folder or config.schedule.retention.folder or data_dir / "archive")
    try:
        result = archive_and_prune(
            data_dir / "cdr.sqlite3",
            local_midnight_utc(before, timezone),
            folder,
            dry_run=args.dry_run,
            vacuum=args.vacuum,
        )
    except (ArchiveError, OSError) as error:
        print(f"minipbx: archive failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_json(), default=str))
        return 0
    local_cutoff = f"{before} 00:00 {timezone}"
    if result.rows == 0:
        print(f"no call records before {local_cutoff} ({result.cutoff_utc}): nothing to do")
    elif result.dry_run:
        print(
            f"would archive {result.rows} call records ({result.first_start_utc} .. "
            f"{result.last_start_utc}) to {result.file} and delete them"
        )
    else:
        print(
            f"archived {result.rows} call records before {local_cutoff} to {result.file} "
            f"({result.file_bytes} bytes, sha256 {result.sha256}), verified, and deleted "
            f"{result.deleted}; database {result.database_bytes_before} -> "
            f"{result.database_bytes_after} bytes, {result.free_pages} free pages for new "
            f"records ({result.seconds:.1f} s)"
        )
    return 0


def cmd_schedule_list(args: argparse.Namespace) -> int:
    from firmware.accounting.schedule import STATE_FILE
    from firmware.accounting.schedule_run import jobs_from_config
    from firmware.accounting.schedule_state import ScheduleState, format_utc
    from firmware.accounting.schedule_times import next_due

    config, data_dir = _config_and_data_dir(args)
    jobs = jobs_from_config(config)
    state_file = data_dir / STATE_FILE
    states = {s.name: s for s in ScheduleState(state_file).all()} if state_file.exists() else {}
    now = datetime.now(UTC)
    listing = []
    for job in jobs:
        state = states.get(job.name)
        report = job.report
        listing.append(
            {
                "name": job.name,
                "kind": job.kind,
                "what": f"{report.report} {report.period} {report.format}"
                if report
                else f"archive CDRs older than {config.schedule.retention.months} months",
                "next_due": format_utc(next_due(job.timing, now)),
                **(state.as_json() if state else {}),
            }
        )
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    if not listing:
        print("no scheduled jobs ([[schedule.reports]] and [schedule.retention] are empty)")
    for entry in listing:
        print(f"{entry['name']}: {entry['what']}; next {entry['next_due']}")
        if entry.get("last_success"):
            print(f"  last success {entry['last_success']}: {entry['last_file'] or '-'}")
        if entry.get("consecutive_failures"):
            print(
                f"  FAILING ({entry['consecutive_failures']} in a row, {entry['failures']} in "
                f"all): {entry['last_error']}"
            )
    return 0


def cmd_schedule_run_now(args: argparse.Namespace) -> int:
    """Run one job now, for the period a run today would cover; the schedule is unchanged."""
    from firmware.accounting.schedule_run import JobRunner, jobs_from_config

    config, data_dir = _config_and_data_dir(args)
    job = next((job for job in jobs_from_config(config) if job.name == args.name), None)
    if job is None:
        names = ", ".join(job.name for job in jobs_from_config(config)) or "none configured"
        print(f"minipbx: no scheduled job {args.name!r} (jobs: {names})", file=sys.stderr)
        return 2
    runner = JobRunner(config, data_dir, args.config)
    result = asyncio.run(runner.run(job, datetime.now(UTC)))
    if not result.ok:
        print(f"minipbx: {job.name} failed: {result.error}", file=sys.stderr)
        return 1
    print(f"{job.name}: done in {result.seconds:.1f} s {result.file}".rstrip())
    if result.output:
        print(result.output)
    return 0


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument("--config", help="TOML file (default: the embedded default office)")
    command.add_argument("--data-dir", help="the core's data folder (default: from the config)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `cdr archive` and `schedule list|run-now` to the `minipbx` parser."""
    cdr = sub.add_parser("cdr", help="call record maintenance")
    cdr_sub = cdr.add_subparsers(dest="cdr_command", required=True)
    archive = cdr_sub.add_parser(
        "archive",
        help="write the call records before a date to a gzip CSV, verify it, delete them",
    )
    archive.add_argument("--before", required=True, help="local date YYYY-MM-DD (not included)")
    archive.add_argument("--folder", help="where archives go (default: [schedule.retention])")
    archive.add_argument("--dry-run", action="store_true", help="say what would be done")
    archive.add_argument(
        "--vacuum", action="store_true", help="then shrink the file (only with the core stopped)"
    )
    archive.add_argument("--json", action="store_true")
    _common(archive)
    archive.set_defaults(func=cmd_cdr_archive)

    schedule = sub.add_parser("schedule", help="scheduled reports and retention")
    schedule_sub = schedule.add_subparsers(dest="schedule_command", required=True)
    listing = schedule_sub.add_parser("list", help="jobs, next run, last result")
    listing.add_argument("--json", action="store_true")
    _common(listing)
    listing.set_defaults(func=cmd_schedule_list)
    run_now = schedule_sub.add_parser("run-now", help="run a job now for the last full period")
    run_now.add_argument("name")
    _common(run_now)
    run_now.set_defaults(func=cmd_schedule_run_now)
