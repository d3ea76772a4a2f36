"""Each filter changes which calls a report covers, as documented in docs/reports.md."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from firmware.accounting.reports import Filters, ReportError, run_report
from firmware.calls.cdr import open_readonly
from tests.accounting.test_report_sample import MAY, SETTINGS, build_sample


@pytest.fixture(scope="module")
def sample_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = open_readonly(build_sample(tmp_path_factory.mktemp("sample")))
    yield connection
    connection.close()


def calls(connection: sqlite3.Connection, **filters: Any) -> list[dict[str, Any]]:
    """The calls report's rows as dicts, for the given filters over May."""
    report = run_report(connection, "calls", replace(MAY, **filters), SETTINGS)
    keys = [column.key for column in report.columns]
    rows = [dict(zip(keys, row, strict=True)) for row in report.rows]
    assert report.calls == len(rows)
    return rows


def numbers(rows: list[dict[str, Any]]) -> list[str]:
    return [row["number"] for row in rows]


def test_no_filter_gives_every_call_of_the_period(sample_connection: sqlite3.Connection) -> None:
    assert len(calls(sample_connection)) == 14


def test_one_day(sample_connection: sqlite3.Connection) -> None:
    rows = calls(sample_connection, start=date(2024, 5, 2), end=date(2024, 5, 2))
    assert numbers(rows) == ["912345678", "00441234567"]


def test_extensions_match_the_owner_of_the_call(sample_connection: sqlite3.Connection) -> None:
    # 201 made A-D; J rang 201 but was answered by 204, K rang 201 but 203 made it.
    assert len(calls(sample_connection, extensions=("201",))) == 4
    rows = calls(sample_connection, extensions=("203", "204"))
    assert {row["extension"] for row in rows} == {"203", "204"}
    assert len(rows) == 7


def test_department(sample_connection: sqlite3.Connection) -> None:
    rows = calls(sample_connection, department="sales")
    assert {row["extension"] for row in rows} == {"201", "202"}
    assert len(rows) == 7
    with pytest.raises(ReportError, match="department 'legal' is unknown"):
        calls(sample_connection, department="legal")


def test_department_and_extension_together_narrow(sample_connection: sqlite3.Connection) -> None:
    assert len(calls(sample_connection, department="sales", extensions=("202",))) == 3
    assert calls(sample_connection, department="sales", extensions=("203",)) == []


def test_direction(sample_connection: sqlite3.Connection) -> None:
    assert len(calls(sample_connection, directions=("incoming",))) == 3
    assert len(calls(sample_connection, directions=("internal",))) == 2
    assert len(calls(sample_connection, directions=("incoming", "internal"))) == 5


def test_disposition(sample_connection: sqlite3.Connection) -> None:
    rows = calls(sample_connection, dispositions=("no_answer",))
    assert numbers(rows) == ["212345678", "912000000"]  # D and I


def test_minimum_talk_time(sample_connection: sqlite3.Connection) -> None:
    rows = calls(sample_connection, min_talk_s=100)
    assert [row["talk_s"] for row in rows] == [120, 300, 200]  # A, E, H
    assert len(calls(sample_connection, min_talk_s=61.5)) == 5  # also B (61.5) and L (90)


def test_number_pattern(sample_connection: sqlite3.Connection) -> None:
    assert numbers(calls(sample_connection, number="2123*")) == ["212345678"] * 3
    # Incoming calls match on the caller's number too.
    incoming = calls(sample_connection, number="9120000??")
    assert numbers(incoming) == ["912000000", "912000000"]
    assert numbers(calls(sample_connection, number="0044*")) == ["00441234567"]
    assert numbers(calls(sample_connection, number="[78]0*")) == ["800123456", "707000000"]
    assert len(calls(sample_connection, number="+351*")) == 1  # H's caller
    assert calls(sample_connection, number="2123") == []  # a pattern is the whole number
    # Outgoing calls match without the access code ("9" + number was dialled) ...
    assert numbers(calls(sample_connection, number="9*")) == ["912345678", "912000000", "912000000"]
    # ... and incoming calls also on the DID they came in on.
    assert len(calls(sample_connection, number="210000001")) == 3


def test_account_code(sample_connection: sqlite3.Connection) -> None:
    rows = calls(sample_connection, account_code="ACME")
    assert numbers(rows) == ["912345678", "212345678"]


def test_filters_change_the_aggregate_reports_too(sample_connection: sqlite3.Connection) -> None:
    filters = replace(MAY, directions=("outgoing",), min_talk_s=50)
    report = run_report(sample_connection, "extension", filters, SETTINGS)
    rows = {row[0]: row for row in report.rows}
    assert list(rows) == ["201", "202"]  # A, B; E
    assert report.totals is not None
    assert report.totals[2] == 3
    assert report.totals[report.column_index("cost")] == Decimal("1.62")  # 4995+10000+1235


def test_filters_are_described_for_headers() -> None:
    filters = Filters(
        start=date(2024, 5, 1),
        end=date(2024, 5, 31),
        extensions=("201", "202"),
        directions=("outgoing",),
        min_talk_s=60,
        number="00*",
        account_code="ACME",
    )
    assert filters.describe() == (
        "extensions 201, 202",
        "direction outgoing",
        "talk time at least 60 s",
        "number 00*",
        "account ACME",
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"start": date(2024, 5, 2), "end": date(2024, 5, 1)}, "ends .* before it starts"),
        ({"directions": ("sideways",)}, "direction 'sideways' is unknown"),
        ({"dispositions": ("lost",)}, "disposition 'lost' is unknown"),
        ({"min_talk_s": -1}, "must not be negative"),
        ({"number": "21' OR 1=1"}, "may use digits"),
        ({"top": 0}, "at least 1"),
        ({"extensions": (" ",)}, "empty extension"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(arguments: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"start": date(2024, 5, 1), "end": date(2024, 5, 31)}
    values.update(arguments)
    with pytest.raises(ReportError, match=message):
        Filters(**values)
