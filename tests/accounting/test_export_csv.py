"""CSV exports read back with the csv module, in both dialects."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from firmware.accounting.exports import csv_text, write_csv, write_text
from firmware.accounting.reports import run_report
from firmware.calls.cdr import open_readonly
from tests.accounting.test_report_sample import MAY, SETTINGS, build_sample


@pytest.fixture(scope="module")
def sample_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = open_readonly(build_sample(tmp_path_factory.mktemp("sample")))
    yield connection
    connection.close()


def read_csv(path: Path, delimiter: str) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as stream:
        return list(csv.reader(stream, delimiter=delimiter))


def test_extension_report_comma_dialect(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    report = run_report(sample_connection, "extension", MAY, SETTINGS)
    path = tmp_path / "extensions.csv"
    assert write_csv(report, path, "comma") == 4
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")  # no BOM for programs
    assert b"\r\n" in raw
    rows = read_csv(path, ",")
    assert rows[0] == [
        "Extension",
        "Name",
        "Calls",
        "Outgoing",
        "Incoming",
        "Internal",
        "Answered",
        "Talk time (s)",
        "Cost EUR (net)",
        "Unrated",
    ]
    assert rows[1] == ["201", "Zé Conceição", "4", "4", "0", "0", "3", "183", "1.50", "0"]
    assert rows[2][1] == "Иван Петров"
    assert rows[3][1] == "Jiří Dvořák"
    assert rows[-1] == ["Total", "", "14", "9", "3", "2", "12", "948", "1.65", "1"]


def test_semicolon_dialect_has_bom_and_decimal_comma(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    report = run_report(sample_connection, "extension", MAY, SETTINGS)
    path = tmp_path / "extensions.csv"
    write_csv(report, path, "semicolon")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfExtension;Name;")
    rows = read_csv(path, ";")
    assert rows[1] == ["201", "Zé Conceição", "4", "4", "0", "0", "3", "183", "1,50", "0"]
    assert rows[2][:2] == ["202", "Иван Петров"]
    assert rows[-1][-2] == "1,65"


def test_blank_cost_is_an_empty_field(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "line", MAY, SETTINGS)
    rows = list(csv.reader(io.StringIO(csv_text(report))))
    fxo2 = next(row for row in rows if row[0] == "fxo:2")
    assert fxo2[-2] == ""  # incoming calls only: no cost, not 0.00


def test_statement_csv_has_net_vat_gross(sample_connection: sqlite3.Connection) -> None:
    filters = replace(MAY, extensions=("201",))
    report = run_report(sample_connection, "statement", filters, SETTINGS)
    rows = list(
        csv.reader(io.StringIO(csv_text(report, "semicolon").lstrip("\ufeff")), delimiter=";")
    )
    assert rows[0][-1] == "Cost EUR (net)"
    assert [row[-1] for row in rows[1:4]] == ["0,4995", "1,0000", "0,0005"]
    assert rows[1][0] == "2024-05-02 09:00:00"  # local time
    assert rows[-4] == ["Total: 3 calls", "", "", "", "", "183", "1,50"]
    assert rows[-3][0] == "Net total" and rows[-3][-1] == "1,50"
    assert rows[-2][0] == "VAT 23 %" and rows[-2][-1] == "0,35"
    assert rows[-1][0] == "Gross total" and rows[-1][-1] == "1,85"


def test_text_that_would_run_as_a_formula_is_neutralised(
    sample_connection: sqlite3.Connection,
) -> None:
    report = run_report(sample_connection, "incoming", MAY, SETTINGS)
    rows = list(csv.reader(io.StringIO(csv_text(report))))
    names = [row[2] for row in rows[1:4]]
    assert names == ["Müller GmbH", '\'=HYPERLINK("http://x")', ""]
    assert rows[1][1] == "+351211111111"  # phone numbers keep their plus sign


def test_detail_export_to_a_stream_with_dates_and_seconds(
    sample_connection: sqlite3.Connection,
) -> None:
    report = run_report(sample_connection, "calls", MAY, SETTINGS)
    buffer = io.StringIO(newline="")
    assert write_csv(report, buffer) == 14
    rows = list(csv.reader(io.StringIO(buffer.getvalue())))
    header = rows[0]
    first = dict(zip(header, rows[1], strict=True))
    assert first["Start"] == "2024-05-01 00:30:00"
    assert first["Talk time (s)"] == "20"
    assert first["Cost EUR (net)"] == "0.0200"
    assert rows[-1][0] == "Total: 14 calls"
    assert rows[-1][-1] == "1.65"


def test_percent_columns_are_numbers_of_percent(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "incoming-summary", MAY, SETTINGS)
    rows = list(
        csv.reader(io.StringIO(csv_text(report, "semicolon").lstrip("\ufeff")), delimiter=";")
    )
    header = rows[0]
    assert "Answer rate (%)" in header
    index = header.index("Answer rate (%)")
    assert [row[index] for row in rows[1:]] == ["100,0", "50,0", "66,7"]


def test_unknown_dialect(sample_connection: sqlite3.Connection, tmp_path: Path) -> None:
    report = run_report(sample_connection, "hourly", MAY, SETTINGS)
    with pytest.raises(ValueError, match="dialect 'tab' is unknown"):
        write_csv(report, tmp_path / "x.csv", "tab")  # type: ignore[arg-type]


def test_text_table(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "extension", MAY, SETTINGS)
    buffer = io.StringIO()
    write_text(report, buffer)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "Calls by extension — Lisboa HQ"
    assert lines[1] == "Period 2024-05-01 to 2024-05-31 (Europe/Lisbon)"
    row_201 = next(line for line in lines if line.startswith("201 "))
    assert "Zé Conceição" in row_201 and row_201.split()[-3:] == ["0:03:03", "1.50", "0"]
    total = next(line for line in lines if line.startswith("Total"))
    assert total.split()[-3:] == ["0:15:48", "1.65", "1"]
    assert any(line.startswith("Note: 1 answered outgoing call(s)") for line in lines)
