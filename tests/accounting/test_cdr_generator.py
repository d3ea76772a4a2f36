"""The benchmark's CDR generator: deterministic for a seed, at the current schema, and shaped
like an office's year (working hours, weekends, direction mix, Portuguese numbers)."""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest

from firmware.calls.cdr import _COLUMNS, SCHEMA_VERSION, _record_from_row

GENERATOR = Path(__file__).resolve().parents[2] / "bench" / "accounting" / "generate_cdrs.py"
CALLS = 6000


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_cdrs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_cdrs", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_generator()


@pytest.fixture(scope="module")
def database(generator: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "cdr.sqlite3"
    assert generator.write(path, CALLS, 7, date(2025, 1, 1), 365) == CALLS
    generator.rate(path, date(2025, 1, 1), 365)
    return path


def rows(path: Path) -> list[sqlite3.Row]:
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute("SELECT * FROM cdr ORDER BY id").fetchall()
    finally:
        connection.close()


def test_the_same_seed_gives_the_same_records(generator: ModuleType) -> None:
    first = [row for chunk in generator.generate(500, 3, date(2025, 3, 1), 30) for row in chunk]
    again = [row for chunk in generator.generate(500, 3, date(2025, 3, 1), 30) for row in chunk]
    other = [row for chunk in generator.generate(500, 4, date(2025, 3, 1), 30) for row in chunk]
    assert first == again
    assert first != other
    assert len({row[0] for row in first}) == 500  # call ids unique


def test_the_database_is_at_the_current_schema_and_every_row_is_a_valid_record(
    database: Path, generator: ModuleType
) -> None:
    assert set(generator.GENERATED_COLUMNS) <= set(_COLUMNS)
    connection = sqlite3.connect(database)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.close()
    stored = rows(database)
    assert len(stored) == CALLS
    starts = [row["start_utc"] for row in stored]
    assert starts == sorted(starts)  # ids in start order, as the core writes them
    assert starts[0][:10] >= "2025-01-01" and starts[-1][:10] <= "2025-12-31"
    for row in stored:
        record = _record_from_row([row[name] for name in _COLUMNS])  # checks time order etc.
        assert abs(record.billable_s - row["billable_s"]) < 0.002
        assert record.duration_s <= 7200 + 60


def test_working_hours_and_days_dominate(database: Path) -> None:
    zone = ZoneInfo("Europe/Lisbon")
    local = [datetime.fromisoformat(row["start_utc"]).astimezone(zone) for row in rows(database)]
    weekdays = Counter(moment.weekday() for moment in local)
    assert weekdays[6] / CALLS < 0.015  # Sundays nearly silent
    assert weekdays[5] / CALLS < 0.03
    assert sum(weekdays[day] for day in range(5)) / CALLS > 0.95
    hours = Counter(moment.hour for moment in local)
    assert hours[10] > 2 * hours[13] and hours[15] > 2 * hours[13]  # lunch dip
    assert hours[3] < CALLS * 0.002
    assert sum(hours[hour] for hour in range(8, 19)) / CALLS > 0.9


def test_direction_and_disposition_mix(database: Path) -> None:
    stored = rows(database)
    directions = Counter(row["direction"] for row in stored)
    assert directions["internal"] / CALLS == pytest.approx(0.25, abs=0.02)
    assert directions["outgoing"] / CALLS == pytest.approx(0.45, abs=0.02)
    assert directions["incoming"] / CALLS == pytest.approx(0.30, abs=0.02)
    outgoing = [row for row in stored if row["direction"] == "outgoing"]
    answered = sum(row["disposition"] == "answered" for row in outgoing)
    assert answered / len(outgoing) == pytest.approx(0.70, abs=0.03)
    talk = sorted(row["billable_s"] for row in stored if row["disposition"] == "answered")
    median = talk[len(talk) // 2]
    assert 60 < median < 130  # about a minute and a half
    assert talk[int(len(talk) * 0.99)] > 5 * median  # a long tail


def test_outside_numbers_look_portuguese_and_are_rated(database: Path) -> None:
    patterns = {
        "local": r"2\d{8}",
        "mobile": r"9[1236]\d{7}",
        "national": r"30\d{7}",
        "free": r"800\d{6}",
        "premium": r"760\d{6}",
        "international": r"00(34|33|44|49|1|55|244|41|39|31)\d{9}",
    }
    outgoing = [row for row in rows(database) if row["direction"] == "outgoing"]
    kinds = Counter(row["destination_kind"] for row in outgoing)
    assert set(kinds) == set(patterns)
    for row in outgoing:
        assert re.fullmatch(patterns[row["destination_kind"]], row["external_number"])
        assert row["dialled"] == "9" + row["external_number"]
        assert row["dest_class"] == row["destination_kind"]  # the tariff agrees with the dial plan
        if row["disposition"] == "answered" and row["destination_kind"] != "free":
            assert row["cost_e4"] > 0
        else:
            assert row["cost_e4"] == 0


def test_account_codes_transfers_and_sibling_calls_appear(database: Path) -> None:
    stored = rows(database)
    coded = [row for row in stored if row["account_code"] is not None]
    assert 0.05 < len(coded) / sum(row["direction"] == "outgoing" for row in stored) < 0.11
    assert {row["direction"] for row in coded} == {"outgoing"}
    transfers = [row for row in stored if row["transferred_by"] is not None]
    assert transfers and all(
        row["transferred_by"] == "201" and row["answered_extension"] != "201" for row in transfers
    )
    siblings = [row for row in stored if row["correlation_id"]]
    assert siblings and all(row["line"] == "sibling:porto" for row in siblings)
    assert len({row["correlation_id"] for row in siblings}) == len(siblings)
