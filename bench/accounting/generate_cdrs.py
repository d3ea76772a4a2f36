"""Generate realistic call records: about a year of a 30-extension office in Portugal.

    .venv/bin/python bench/accounting/generate_cdrs.py OUT/cdr.sqlite3 [--calls 1000000]
        [--seed 1] [--start 2025-01-01] [--days 365] [--no-rate]

Shape (numpy, deterministic for a seed): working days busy, Saturdays quiet, Sundays and
Portuguese public holidays nearly silent; within a day a morning and an afternoon peak with
a lunch dip. Direction mix internal 25 % / outgoing 45 % / incoming 30 %. Outside numbers
as dialled in Portugal (no trunk prefix): Lisbon/Porto/other geographic 2x, mobiles
91/92/93/96, freephone 800, premium 760, international 00 + country code. Dispositions per
direction, ring times and a log-normal talk time (median about 1.5 min, a long tail capped
at 2 h). Account codes on some outgoing calls, blind transfers of incoming calls by
reception, a few calls to the Porto sibling with a correlation id.

Rows are written with executemany in large transactions into a database created at the
current schema (firmware.calls.cdr._migrate), ids in start order as the core writes them,
then rated month by month with the tariff engine (firmware.accounting.rating.rerate) and
the bench office's config (bench/accounting/office.py), which is saved next to it.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from office import EXTENSIONS, LINES, NAMES, office_config, office_config_text

from firmware.calls.cdr import _migrate

ZONE = ZoneInfo("Europe/Lisbon")
SITE = "office"
CHUNK = 50_000

# Relative call volume per quarter hour of a working day (local time), 00:00 first.
_HOURLY = {
    0: 0.02, 1: 0.01, 2: 0.01, 3: 0.01, 4: 0.01, 5: 0.02, 6: 0.05, 7: 0.2, 8: 1.2, 9: 3.2,
    10: 4.2, 11: 4.0, 12: 2.6, 13: 1.3, 14: 3.0, 15: 3.8, 16: 3.5, 17: 2.4, 18: 1.0,
    19: 0.4, 20: 0.2, 21: 0.1, 22: 0.05, 23: 0.03,
}  # fmt: skip
QUARTER_WEIGHTS = np.repeat([_HOURLY[hour] for hour in range(24)], 4)
QUARTER_WEIGHTS[13 * 4 : 13 * 4 + 2] *= 0.7  # the lunch dip is deepest 13:00-13:30

WEEKDAY_WEIGHTS = np.array([1.0, 1.02, 1.0, 0.98, 0.9, 0.08, 0.03])
HOLIDAY_WEIGHT = 0.04

DIRECTIONS = np.array(["internal", "outgoing", "incoming"])
DIRECTION_P = [0.25, 0.45, 0.30]

OUTGOING_DISPOSITIONS = (
    ("answered", 0.70), ("no_answer", 0.12), ("busy", 0.08), ("abandoned", 0.06),
    ("congestion", 0.01), ("failed", 0.01), ("rejected", 0.01), ("invalid", 0.01),
)  # fmt: skip
INTERNAL_DISPOSITIONS = (
    ("answered", 0.75),
    ("no_answer", 0.12),
    ("busy", 0.08),
    ("abandoned", 0.05),
)
INCOMING_DISPOSITIONS = (("answered", 0.85), ("abandoned", 0.10), ("busy", 0.05))
CAUSES = {
    "answered": "normal_clearing", "no_answer": "no_answer", "busy": "busy",
    "abandoned": "abandoned", "congestion": "all_lines_busy", "failed": "no_dial_tone",
    "rejected": "class_of_service", "invalid": "unknown_number",
}  # fmt: skip

# Outside numbers: (kind, destination_kind, share, generator of the digits after the prefix)
GEOGRAPHIC = ("21", "22", "231", "232", "234", "239", "244", "249", "253", "258", "261", "289")
MOBILE = ("91", "92", "93", "96")
COUNTRIES = ("34", "33", "44", "49", "1", "55", "244", "41", "39", "31")
COUNTRY_P = [0.3, 0.15, 0.15, 0.12, 0.06, 0.07, 0.05, 0.04, 0.04, 0.02]
NUMBER_KINDS = ("local", "mobile", "national", "free", "premium", "international")
NUMBER_KIND_P = [0.34, 0.44, 0.03, 0.04, 0.005, 0.145]

GENERATED_COLUMNS = (
    "call_id", "start_utc", "answer_utc", "end_utc", "duration_s", "billable_s",
    "caller_number", "caller_name", "dialled", "called_extension", "answered_extension", "line",
    "line_group", "direction", "disposition", "hangup_side", "cause", "destination_kind", "site",
    "correlation_id", "transferred_by", "account_code", "external_number",
)  # fmt: skip
"""What each generated row holds, in order; later schema columns keep their defaults."""
INSERT_SQL = (
    f"INSERT INTO cdr ({', '.join(GENERATED_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(GENERATED_COLUMNS))})"
)

ACCOUNT_CODES = tuple(f"{1001 + index}" for index in range(12))


def _day_weights(start: date, days: int) -> tuple[list[date], np.ndarray]:
    import holidays

    dates = [start + timedelta(days=offset) for offset in range(days)]
    public = holidays.country_holidays("PT", years=range(start.year, dates[-1].year + 1))
    weights = np.array(
        [HOLIDAY_WEIGHT if day in public else WEEKDAY_WEIGHTS[day.weekday()] for day in dates]
    )
    return dates, weights / weights.sum()


def _pick(rng: np.random.Generator, table: tuple[tuple[str, float], ...], size: int) -> np.ndarray:
    names = np.array([name for name, _ in table])
    return names[rng.choice(len(table), size=size, p=[share for _, share in table])]


def _digits(rng: np.random.Generator, count: int, width: int) -> np.ndarray:
    return np.char.zfill(rng.integers(0, 10**width, size=count).astype(str), width)


def _outside_numbers(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """National-format numbers (as dialled after the access code) and their destination kind."""
    kinds = np.array(NUMBER_KINDS)[rng.choice(len(NUMBER_KINDS), size=count, p=NUMBER_KIND_P)]
    numbers = np.empty(count, dtype=object)
    for kind in NUMBER_KINDS:
        where = np.flatnonzero(kinds == kind)
        n = where.size
        if kind == "local":
            prefixes = np.array(GEOGRAPHIC)[rng.integers(0, len(GEOGRAPHIC), n)]
            rest = [_digits(rng, n, 9 - width) for width in (2, 3)]
            values = np.where(np.char.str_len(prefixes) == 2, rest[0], rest[1])
            made = np.char.add(prefixes, values)
        elif kind == "mobile":
            made = np.char.add(np.array(MOBILE)[rng.integers(0, 4, n)], _digits(rng, n, 7))
        elif kind == "national":
            made = np.char.add("30", _digits(rng, n, 7))
        elif kind == "free":
            made = np.char.add("800", _digits(rng, n, 6))
        elif kind == "premium":
            made = np.char.add("760", _digits(rng, n, 6))
        else:
            countries = np.array(COUNTRIES)[rng.choice(len(COUNTRIES), size=n, p=COUNTRY_P)]
            made = np.char.add(np.char.add("00", countries), _digits(rng, n, 9))
        numbers[where] = made
    destination = np.where(kinds == "premium", "premium", kinds)
    return numbers, destination


def _stamp(values: np.ndarray) -> np.ndarray:
    """datetime64[ms] (UTC) to the stored text, 2025-01-02T09:10:11.123Z."""
    return np.char.add(np.datetime_as_string(values, unit="ms"), "Z")


def generate(calls: int, seed: int, start: date, days: int) -> Iterator[list[tuple[Any, ...]]]:
    """Chunks of cdr rows (the values of GENERATED_COLUMNS), oldest first."""
    rng = np.random.default_rng(seed)
    dates, day_p = _day_weights(start, days)
    day_index = np.sort(rng.choice(len(dates), size=calls, p=day_p))
    quarter = rng.choice(96, size=calls, p=QUARTER_WEIGHTS / QUARTER_WEIGHTS.sum())
    second_of_day = quarter * 900 + rng.uniform(0, 900, calls)
    # Local midnight of each day in UTC (the offset is that of noon: no calls at 01:00-02:00
    # to speak of on the two days the clocks change).
    midnights = np.array(
        [
            np.datetime64(
                datetime.combine(day, datetime.min.time(), ZONE)
                .astimezone(UTC)
                .replace(tzinfo=None),
                "ms",
            )
            for day in dates
        ]
    )
    start_ms = midnights[day_index] + (second_of_day * 1000).astype("timedelta64[ms]")
    order = np.argsort(start_ms, kind="stable")
    start_ms = start_ms[order]

    direction = DIRECTIONS[rng.choice(3, size=calls, p=DIRECTION_P)]
    disposition = np.empty(calls, dtype=object)
    for name, table in (
        ("internal", INTERNAL_DISPOSITIONS),
        ("outgoing", OUTGOING_DISPOSITIONS),
        ("incoming", INCOMING_DISPOSITIONS),
    ):
        where = np.flatnonzero(direction == name)
        disposition[where] = _pick(rng, table, where.size)
    answered = disposition == "answered"

    # Who: a few heavy users (reception, sales, support), the rest ordinary.
    activity = np.ones(EXTENSIONS)
    activity[[0, 1, 2, 3, 9, 10, 11]] = [4, 2.5, 2.5, 2, 2, 2, 2]
    activity[[19, 28, 29]] = 0.2  # meeting room, lobby, kitchen
    extension_numbers = np.array([str(201 + index) for index in range(EXTENSIONS)])
    own = extension_numbers[rng.choice(EXTENSIONS, size=calls, p=activity / activity.sum())]
    other = extension_numbers[rng.integers(0, EXTENSIONS, calls)]
    other = np.where(other == own, np.where(own == "201", "202", "201"), other)
    outside, outside_kind = _outside_numbers(rng, calls)

    # When: set-up, ring and talk times (seconds).
    setup = np.where(
        direction == "outgoing", rng.uniform(3, 9, calls), rng.uniform(0.3, 1.5, calls)
    )
    ring = rng.gamma(2.0, 4.0, calls).clip(1.0, 29.0)
    ring = np.where(disposition == "no_answer", 30.0, ring)
    ring = np.where(disposition == "busy", rng.uniform(0.5, 2.0, calls), ring)
    ring = np.where(
        np.isin(disposition, ["congestion", "failed", "rejected", "invalid"]), 0.2, ring
    )
    talk = np.minimum(rng.lognormal(np.log(90.0), 1.15, calls), 7200.0)
    talk = np.where(answered, np.maximum(talk, 1.0), 0.0)
    setup_ms = (setup * 1000).astype("timedelta64[ms]")
    ring_ms = (ring * 1000).astype("timedelta64[ms]")
    talk_ms = (talk * 1000).astype("timedelta64[ms]")
    answer_ms = start_ms + setup_ms + ring_ms
    end_ms = answer_ms + talk_ms
    start_text, answer_text, end_text = _stamp(start_ms), _stamp(answer_ms), _stamp(end_ms)
    duration = (end_ms - start_ms).astype(np.int64) / 1000.0
    billable = np.where(answered, talk_ms.astype(np.int64) / 1000.0, 0.0)

    hangup = np.where(rng.random(calls) < 0.55, "caller", "callee")
    hangup = np.where(answered, hangup, np.where(disposition == "abandoned", "caller", "system"))
    account = (direction == "outgoing") & (rng.random(calls) < 0.08)
    account_code = np.array(ACCOUNT_CODES)[rng.integers(0, len(ACCOUNT_CODES), calls)]
    transferred = (direction == "incoming") & answered & (rng.random(calls) < 0.04)
    sibling = (direction == "internal") & (rng.random(calls) < 0.012)
    line = np.array(LINES)[rng.choice(len(LINES), size=calls, p=[0.4, 0.3, 0.2, 0.1])]
    did = np.char.add("21300", _digits(rng, calls, 4))
    has_name = rng.random(calls) < 0.15
    call_ids = rng.integers(0, 2**63, size=(calls, 2), dtype=np.int64)
    correlation = rng.integers(0, 2**63, size=(calls, 2), dtype=np.int64)
    names = dict(zip(extension_numbers, NAMES, strict=True))

    for first in range(0, calls, CHUNK):
        rows = []
        for index in range(first, min(first + CHUNK, calls)):
            kind = direction[index]
            outcome = disposition[index]
            is_answered = outcome == "answered"
            me, them = own[index], other[index]
            call_id = f"{call_ids[index, 0]:016x}{call_ids[index, 1]:016x}"
            correlation_id = ""
            line_name = line_group = external = destination = None
            called = answered_by = transferred_by = code = None
            if kind == "internal":
                caller, caller_name = me, names[me]
                if sibling[index]:
                    dialled = f"3{them[1:]}"
                    line_name, destination = "sibling:porto", "sibling"
                    correlation_id = f"{correlation[index, 0]:016x}{correlation[index, 1]:016x}"
                else:
                    dialled, called, destination = them, them, "internal"
                    answered_by = them if is_answered else None
            elif kind == "outgoing":
                caller, caller_name = me, names[me]
                external = outside[index]
                dialled = "9" + external
                line_name, line_group = line[index], "city"
                destination = outside_kind[index]
                code = account_code[index] if account[index] else None
            else:
                number = outside[index]
                caller = number if not number.startswith(("800", "760")) else "2" + number[1:]
                caller_name = "Cliente" if has_name[index] else ""
                external = dialled = did[index]
                line_name, line_group = line[index], "city"
                called = "201"
                if is_answered:
                    answered_by = "201"
                    if transferred[index]:
                        answered_by, transferred_by = them if them != "201" else "202", "201"
            rows.append(
                (
                    call_id,
                    start_text[index],
                    answer_text[index] if is_answered else None,
                    end_text[index],
                    float(duration[index]),
                    float(billable[index]),
                    caller,
                    caller_name,
                    dialled,
                    called,
                    answered_by,
                    line_name,
                    line_group,
                    kind,
                    outcome,
                    hangup[index],
                    CAUSES[outcome],
                    destination,
                    SITE,
                    correlation_id,
                    transferred_by,
                    code,
                    external,
                )
            )
        yield rows


def create_database(path: Path) -> sqlite3.Connection:
    """A new database at the current CDR schema, tuned for bulk loading."""
    if path.exists():
        raise FileExistsError(f"{path} exists; the generator writes a new database")
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    _migrate(connection)
    connection.execute("PRAGMA synchronous=OFF")  # a benchmark fixture, rebuilt if lost
    return connection


def write(path: Path, calls: int, seed: int, start: date, days: int) -> int:
    connection = create_database(path)
    written = 0
    try:
        for rows in generate(calls, seed, start, days):
            connection.execute("BEGIN")
            connection.executemany(INSERT_SQL, rows)
            connection.execute("COMMIT")
            written += len(rows)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return written


def rate(path: Path, start: date, days: int) -> list[tuple[str, float, int]]:
    """Rate every month with the tariff engine; (month, seconds, calls) per month."""
    from dateutil.relativedelta import relativedelta

    from firmware.accounting.rating import rerate

    config = office_config()
    end = start + timedelta(days=days - 1)
    month = start.replace(day=1)
    timings = []
    while month <= end:
        last = min(month + relativedelta(months=1) - timedelta(days=1), end)
        began = time.perf_counter()
        summary = rerate(path, config, max(month, start), last)
        timings.append((f"{month:%Y-%m}", time.perf_counter() - began, summary.calls))
        month += relativedelta(months=1)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the cdr.sqlite3 to create")
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1))
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--no-rate", action="store_true", help="leave the rating columns NULL")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    written = write(args.out, args.calls, args.seed, args.start, args.days)
    generated = time.perf_counter() - began
    (args.out.parent / "office.toml").write_text(office_config_text(), encoding="utf-8")
    print(f"generated {written} call records in {generated:.1f} s -> {args.out}")
    if not args.no_rate:
        began = time.perf_counter()
        months = rate(args.out, args.start, args.days)
        print(f"rated {sum(m[2] for m in months)} calls in {time.perf_counter() - began:.1f} s")
    print(
        f"database {args.out.stat().st_size / 2**20:.0f} MiB; config {args.out.parent / 'office.toml'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
