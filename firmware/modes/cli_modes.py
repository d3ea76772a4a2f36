"""`minipbx mode`: show the office mode, force one (optionally for a while), back to auto.

The CLI needs no running core: it computes the mode from the config file and writes the
override straight into DATA_DIR/modes.sqlite3. A running core notices the change within
`service.POLL_S` seconds (it watches `PRAGMA data_version`) and logs it. The mode shown
here is computed from the file given (or the embedded default): if the core runs an
older config that was not reloaded, `minipbx status` is what the core actually uses.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware.config.schema import Config
from firmware.modes.override import DB_NAME, Override, OverrideStore, format_time
from firmware.modes.schedule import ModeSchedule, decide, local_text
from firmware.modes.service import POLL_S, describe, mode_status

LONGEST_OVERRIDE = timedelta(days=366)
COMING_DAYS = 60


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `minipbx mode [show|set|auto|holidays]` to the `minipbx` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML file (default: embedded)")
    common.add_argument("--data-dir", default=argparse.SUPPRESS, help="folder of modes.sqlite3")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    mode = sub.add_parser(
        "mode", parents=[common], help="office mode (day, lunch, night, holiday): show or force"
    )
    mode.set_defaults(func=cmd_mode, mode_action="show", config=None, data_dir=None, json=False,
                      at=None)  # fmt: skip
    actions = mode.add_subparsers(dest="mode_action")

    show = actions.add_parser("show", parents=[common], help="the mode now, today, what is coming")
    show.add_argument(
        "--at", help="show the mode at this local time instead (ISO, e.g. 2026-12-25T10:00)"
    )

    force = actions.add_parser("set", parents=[common], help="force a mode until `mode auto`")
    force.add_argument("name", help="the mode to force (see `minipbx mode`)")
    lasting = force.add_mutually_exclusive_group()
    lasting.add_argument("--for", dest="duration", help="for a while: 2h, 90m, 1h30m, 3d")
    lasting.add_argument("--until", help="until this local time (ISO, e.g. 2026-06-08T08:30)")
    lasting.add_argument("--until-next-change", action="store_true",
                         help="until the schedule next changes mode")  # fmt: skip
    force.add_argument("--by", help="who forced it, for the history (default: cli:USER)")

    auto = actions.add_parser("auto", parents=[common], help="back to the schedule")
    auto.add_argument("--by", help="who, for the history (default: cli:USER)")

    calendar = actions.add_parser(
        "holidays", parents=[common], help="public holidays and closures of a year, with modes"
    )
    calendar.add_argument("--year", type=int, help="default: this year")


def cmd_mode(args: argparse.Namespace) -> int:
    from firmware.config.load import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        handler = _HANDLERS[args.mode_action or "show"]
        return handler(args, config, _database(args, config))
    except _UsageError as error:
        print(f"minipbx mode: {error}", file=sys.stderr)
        return 2


class _UsageError(Exception):
    """Bad input on the command line: printed, exit status 2."""


def _database(args: argparse.Namespace, config: Config) -> Path:
    from firmware.app import default_data_dir

    folder = Path(args.data_dir) if args.data_dir else default_data_dir(config)
    return folder / DB_NAME


def _user() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


# ----- show ----------------------------------------------------------------------------------


def _show(args: argparse.Namespace, config: Config, path: Path) -> int:
    schedule = ModeSchedule.from_config(config)
    now = _parse_local(args.at, schedule) if args.at else datetime.now(UTC)
    override, history = None, []
    if path.exists():
        store = OverrideStore(path, readonly=True)
        try:
            override, history = store.load(), store.history(5)
        finally:
            store.close()
    status = mode_status(schedule, now, override)
    today = schedule.local(now).date()
    segments = [
        {"from": s.start.strftime("%H:%M"), "to": _end_text(s.end, today), "mode": s.name,
         "reason": s.reason}
        for s in schedule.day_segments(today)
    ]  # fmt: skip
    coming = _coming(schedule, today + timedelta(days=1), today + timedelta(days=COMING_DAYS))
    if args.json:
        history_json = [entry.to_json() for entry in history]
        shown = {**status, "at": format_time(now), "today": segments, "coming": coming}
        print(json.dumps({**shown, "history": history_json}, indent=2))
        return 0
    print(describe(status))
    ranges = ", ".join(f"{s['from']}-{s['to']} {s['mode']}" for s in segments)
    print(f"today ({today:%a %Y-%m-%d}, {status['timezone']}): {ranges}")
    if coming:
        print(f"closures and holidays in the next {COMING_DAYS} days:")
        for entry in coming:
            print(f"  {_span_text(entry)}  {entry['mode']}  {entry['reason']}")
    if history:
        print("recent changes:")
        for entry in history:
            at = entry.at.astimezone(schedule.zone).strftime("%Y-%m-%d %H:%M")
            by = f" by {entry.by}" if entry.by else ""
            print(f"  {at}  {entry.event} {entry.mode}{by} {entry.reason}".rstrip())
    return 0


def _end_text(end: datetime, today: date) -> str:
    return "24:00" if end.date() > today else end.strftime("%H:%M")


def _coming(schedule: ModeSchedule, first: date, last: date) -> list[dict[str, Any]]:
    """Special days joined into spans: a vacation is one line, not fourteen."""
    spans: list[dict[str, Any]] = []
    for day, mode, reason in schedule.special_days(first, last):
        previous = spans[-1] if spans else None
        if (previous and previous["mode"] == mode and previous["reason"] == reason
                and date.fromisoformat(previous["to"]) == day - timedelta(days=1)):  # fmt: skip
            previous["to"] = day.isoformat()
        else:
            spans.append({"from": day.isoformat(), "to": day.isoformat(), "mode": mode,
                          "reason": reason})  # fmt: skip
    return spans


def _span_text(entry: dict[str, Any]) -> str:
    first = date.fromisoformat(entry["from"])
    if entry["from"] == entry["to"]:
        return f"{first:%a %Y-%m-%d}"
    return f"{first:%a %Y-%m-%d} to {date.fromisoformat(entry['to']):%a %Y-%m-%d}"


# ----- set / auto ----------------------------------------------------------------------------


def _set(args: argparse.Namespace, config: Config, path: Path) -> int:
    schedule = ModeSchedule.from_config(config)
    if args.name not in config.modes.all_names:
        raise _UsageError(
            f"{args.name!r} is not a mode; modes are {', '.join(config.modes.all_names)}"
        )
    now = datetime.now(UTC)
    expires = _expiry(args, schedule, now)
    by = args.by or _user()
    store = OverrideStore(path)
    try:
        previous = decide(schedule, now, store.load()).name
        store.save(Override(args.name, by, now, expires), previous)
    finally:
        store.close()
    lasting = "until `minipbx mode auto`"
    if expires is not None:
        lasting = f"until {local_text(expires, schedule.zone, now)} ({format_time(expires)})"
    if args.json:
        print(json.dumps({"mode": args.name, "set_by": by,
                          "expires_at": format_time(expires) if expires else None}))  # fmt: skip
    else:
        print(f"mode {args.name} forced by {by} {lasting}; a running core applies it "
              f"within {POLL_S:.0f} s")  # fmt: skip
    return 0


def _expiry(args: argparse.Namespace, schedule: ModeSchedule, now: datetime) -> datetime | None:
    if args.duration:
        expires = now + parse_duration(args.duration)
    elif args.until:
        expires = _parse_local(args.until, schedule)
        if expires <= now:
            raise _UsageError(f"--until {args.until} is already past")
    elif args.until_next_change:
        expires = schedule.decide(now).until
        if expires is None:
            raise _UsageError(
                "the schedule does not change mode within a year; use --for or --until"
            )
    else:
        return None
    if expires - now > LONGEST_OVERRIDE:
        raise _UsageError("an override lasts at most 366 days; use no expiry and `mode auto`")
    return expires


def _auto(args: argparse.Namespace, config: Config, path: Path) -> int:
    schedule = ModeSchedule.from_config(config)
    now = datetime.now(UTC)
    cleared: Override | None = None
    if path.exists():
        store = OverrideStore(path)
        try:
            cleared = store.clear(now, args.by or _user())
        finally:
            store.close()
    status = mode_status(schedule, now, None)
    if args.json:
        print(json.dumps({"cleared": cleared.to_json() if cleared else None, **status}))
        return 0
    first = f"override {cleared.mode} cleared" if cleared else "no override was set"
    print(f"{first}; back to automatic: {describe(status)}")
    return 0


# ----- holidays ------------------------------------------------------------------------------


def _holidays(args: argparse.Namespace, config: Config, path: Path) -> int:
    schedule = ModeSchedule.from_config(config)
    year = args.year or schedule.local(datetime.now(UTC)).year
    if not 1900 < year < 2200:
        raise _UsageError(f"--year {year} is not a plausible year")
    spans = _coming(schedule, date(year, 1, 1), date(year, 12, 31))
    if args.json:
        print(json.dumps({"year": year, "days": spans}, indent=2))
        return 0
    where = config.modes.country or "no country set"
    if config.modes.subdivision:
        where += f"/{config.modes.subdivision}"
    print(f"{year} ({where}): {len(spans)} closures and holidays")
    for entry in spans:
        print(f"  {_span_text(entry)}  {entry['mode']}  {entry['reason']}")
    return 0


_HANDLERS = {"show": _show, "set": _set, "auto": _auto, "holidays": _holidays}


# ----- parsing -------------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """'2h', '90m', '1h30m', '3d' -> a positive timedelta (clear error otherwise)."""
    match = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?", text.strip().lower())
    if not text.strip() or match is None:
        raise _UsageError(f"--for {text!r}: write a duration like 2h, 90m, 1h30m or 3d")
    days, hours, minutes = (int(part) if part else 0 for part in match.groups())
    duration = timedelta(days=days, hours=hours, minutes=minutes)
    if duration <= timedelta(0):
        raise _UsageError(f"--for {text!r} is no time at all")
    return duration


def _parse_local(text: str, schedule: ModeSchedule) -> datetime:
    """ISO time; without an offset it is local time in the site's zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _UsageError(f"{text!r} is not an ISO time like 2026-06-08T08:30") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=schedule.zone)
    return value.astimezone(UTC)
