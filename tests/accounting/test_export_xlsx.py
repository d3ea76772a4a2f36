"""XLSX exports read back with openpyxl: real numbers, dates, durations and totals."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from firmware.accounting import exports
from firmware.accounting.exports import write_xlsx
from firmware.accounting.reports import run_report
from firmware.calls.cdr import open_readonly
from tests.accounting.test_report_sample import MAY, SETTINGS, build_sample

HEADER_ROW = 5  # 1-based, as openpyxl counts: title, period, filters, blank, header


@pytest.fixture(scope="module")
def sample_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = open_readonly(build_sample(tmp_path_factory.mktemp("sample")))
    yield connection
    connection.close()


def load(path: Path) -> Any:
    return openpyxl.load_workbook(path).active


def values(sheet: Any, row: int) -> list[Any]:
    return [cell.value for cell in sheet[row]]


def test_extension_report_cells_are_typed(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    report = run_report(sample_connection, "extension", MAY, SETTINGS)
    path = tmp_path / "extensions.xlsx"
    assert write_xlsx(report, path) == 4
    sheet = load(path)
    assert sheet["A1"].value == "Calls by extension — Lisboa HQ"
    assert sheet["A2"].value == "Period 2024-05-01 to 2024-05-31 (Europe/Lisbon)"
    assert sheet["A3"].value == "Filters: none"
    assert values(sheet, HEADER_ROW)[:3] == ["Extension", "Name", "Calls"]
    assert sheet.freeze_panes == "A6"
    first = values(sheet, HEADER_ROW + 1)
    assert first == ["201", "Zé Conceição", 4, 4, 0, 0, 3, timedelta(seconds=183), 1.5, 0]
    assert values(sheet, HEADER_ROW + 2)[1] == "Иван Петров"
    cost = sheet.cell(row=HEADER_ROW + 1, column=9)
    assert isinstance(cost.value, float)
    assert cost.number_format == '#,##0.00 "EUR"'
    assert sheet.cell(row=HEADER_ROW + 1, column=8).number_format == "[h]:mm:ss"
    totals = values(sheet, HEADER_ROW + 5)
    assert totals == ["Total", None, 14, 9, 3, 2, 12, timedelta(seconds=948), 1.65, 1]
    assert sheet.cell(row=HEADER_ROW + 5, column=1).font.b
    assert sheet.auto_filter.ref == "A5:J9"


def test_blank_money_stays_blank(sample_connection: sqlite3.Connection, tmp_path: Path) -> None:
    report = run_report(sample_connection, "line", MAY, SETTINGS)
    path = tmp_path / "lines.xlsx"
    write_xlsx(report, path)
    sheet = load(path)
    rows = {
        values(sheet, row)[0]: values(sheet, row) for row in range(HEADER_ROW + 1, HEADER_ROW + 4)
    }
    assert rows["fxo:2"][7] is None
    assert rows["sib:porto"][7] == 0


def test_statement_has_dates_costs_and_net_vat_gross(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    report = run_report(sample_connection, "statement", replace(MAY, extensions=("201",)), SETTINGS)
    path = tmp_path / "statement.xlsx"
    assert write_xlsx(report, path) == 3
    sheet = load(path)
    assert sheet["A1"].value == "Statement for extension 201 (Zé Conceição) — Lisboa HQ"
    assert sheet["A3"].value == "Filters: extensions 201"
    first = values(sheet, HEADER_ROW + 1)
    assert first[0] == datetime(2024, 5, 2, 9, 0)  # a date cell, local wall time
    assert sheet.cell(row=HEADER_ROW + 1, column=1).is_date
    assert first[-1] == pytest.approx(0.4995)
    assert sheet.cell(row=HEADER_ROW + 1, column=7).number_format == '#,##0.0000 "EUR"'
    totals = values(sheet, HEADER_ROW + 4)
    assert totals[0] == "Total: 3 calls"
    assert totals[-1] == 1.5
    assert sheet.cell(row=HEADER_ROW + 4, column=7).number_format == '#,##0.00 "EUR"'
    lines = [values(sheet, row)[-2:] for row in range(HEADER_ROW + 5, HEADER_ROW + 8)]
    assert lines == [["Net total", 1.5], ["VAT 23 %", 0.35], ["Gross total", 1.85]]


def test_detail_report_streams_into_the_sheet(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    report = run_report(sample_connection, "calls", MAY, SETTINGS)
    path = tmp_path / "calls.xlsx"
    assert write_xlsx(report, path) == 14
    sheet = load(path)
    header = values(sheet, HEADER_ROW)
    rows = [dict(zip(header, values(sheet, row), strict=True)) for row in range(6, 20)]
    assert rows[0]["Start"] == datetime(2024, 5, 1, 0, 30)
    assert rows[0]["Talk time"] == timedelta(seconds=20)
    assert [row["Cost EUR (net)"] for row in rows[:3]] == pytest.approx([0.02, 0.4995, 1.0])
    names = {row["Caller name"] for row in rows}
    assert names == {None, "Müller GmbH", '=HYPERLINK("http://x")'}  # incoming calls only
    assert sheet.cell(row=HEADER_ROW + 1, column=6).value is None  # no empty cell written
    totals = values(sheet, HEADER_ROW + 15)
    assert totals[0] == "Total: 14 calls"
    assert totals[-1] == 1.65
    assert totals[-2] == timedelta(seconds=948)


def test_percent_and_date_columns(sample_connection: sqlite3.Connection, tmp_path: Path) -> None:
    path = tmp_path / "incoming.xlsx"
    write_xlsx(run_report(sample_connection, "incoming-summary", MAY, SETTINGS), path)
    sheet = load(path)
    rate = sheet.cell(row=HEADER_ROW + 2, column=8)
    assert (rate.value, rate.number_format) == (0.5, "0.0%")
    path = tmp_path / "daily.xlsx"
    write_xlsx(run_report(sample_connection, "daily", MAY, SETTINGS), path)
    sheet = load(path)
    day = sheet.cell(row=HEADER_ROW + 1, column=1)
    assert day.value == datetime(2024, 5, 1)
    assert day.number_format == "yyyy-mm-dd"


def test_long_reports_continue_on_another_sheet(
    sample_connection: sqlite3.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "XLSX_MAX_ROWS", 20)  # 20 rows, less the 5 on top and the tail
    report = run_report(sample_connection, "calls", MAY, SETTINGS)
    path = tmp_path / "calls.xlsx"
    assert write_xlsx(report, path) == 14
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Report", "Report (2)"]
    first, second = book["Report"], book["Report (2)"]
    data_rows = sum(1 for row in first.iter_rows(min_row=6) if row[0].value is not None)
    assert (
        data_rows
        + sum(1 for row in second.iter_rows(min_row=6) if isinstance(row[0].value, datetime))
        == 14
    )
    assert any(row[0].value == "Total: 14 calls" for row in second.iter_rows(min_row=6))
