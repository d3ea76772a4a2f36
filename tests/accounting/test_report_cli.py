"""`minipbx report` end to end, as a subprocess against the sample office's database."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import openpyxl
import pypdf
import pytest

from tests.accounting.test_report_sample import build_sample

REPO_ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[site]
name = "lisboa"
country = "pt"
timezone = "Europe/Lisbon"

[accounting]
currency = "EUR"
vat_percent = "23"

[[extensions]]
number = "201"
name = "Zé Conceição"
port = 1

[[extensions]]
number = "202"
name = "Иван Петров"
port = 2

[reports.departments]
sales = ["201", "202"]
"""


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("office")
    build_sample(folder)
    (folder / "office.toml").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    return folder


def minipbx(office: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware.cli",
            "report",
            *arguments,
            "--config",
            str(office / "office.toml"),
            "--data-dir",
            str(office),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_text_table_on_the_terminal(office: Path) -> None:
    result = minipbx(office, "department", "--from", "2024-05-01", "--to", "2024-05-31")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Calls by department — lisboa"
    sales = next(line for line in lines if line.startswith("sales"))
    assert sales.split()[-2:] == ["1,63", "1"]  # Portugal: decimal comma
    assert next(line for line in lines if line.startswith("Total")).split()[-2:] == ["1,65", "1"]


def test_csv_follows_the_site_country_and_can_be_told(office: Path, tmp_path: Path) -> None:
    out = tmp_path / "extensions.csv"
    result = minipbx(
        office, "extension", "--from", "2024-05-01", "--to", "2024-05-31", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"minipbx report: 4 rows written to {out}"
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfExtension;")  # pt: the semicolon dialect
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[1][:2] == ["201", "Zé Conceição"] and rows[1][-2] == "1,50"
    result = minipbx(
        office,
        "extension",
        "--from",
        "2024-05-01",
        "--to",
        "2024-05-31",
        "--format",
        "csv-comma",
        "--ext",
        "201,202",
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert [row[0] for row in rows] == ["Extension", "201", "202", "Total"]
    assert rows[-1][-2] == "1.63"


def test_filters_from_the_command_line(office: Path) -> None:
    result = minipbx(
        office,
        "calls",
        "--from",
        "2024-05-01",
        "--to",
        "2024-05-31",
        "--format",
        "csv-comma",
        "--direction",
        "outgoing",
        "--disposition",
        "answered",
        "--min-duration",
        "50",
        "--number",
        "9*",
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert [row[3] for row in rows[1:-1]] == ["912345678"]  # A only
    result = minipbx(
        office, "calls", "--from", "2024-05-01", "--to", "2024-05-31", "--account", "ACME"
    )
    assert result.returncode == 0, result.stderr
    assert "Total: 2 calls" in result.stdout


def test_xlsx_statement(office: Path, tmp_path: Path) -> None:
    out = tmp_path / "statement.xlsx"
    result = minipbx(
        office, "statement", "--from", "2024-05-01", "--to", "2024-05-31", "--ext", "201",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sheet = openpyxl.load_workbook(out).active
    assert sheet["A1"].value == "Statement for extension 201 (Zé Conceição) — lisboa"
    tail = [[cell.value for cell in row][-2:] for row in sheet.iter_rows(min_row=10, max_row=12)]
    assert tail == [["Net total", 1.5], ["VAT 23 %", 0.35], ["Gross total", 1.85]]


def test_pdf_statement(office: Path, tmp_path: Path) -> None:
    out = tmp_path / "statement.pdf"
    result = minipbx(
        office, "statement", "--from", "2024-05-01", "--to", "2024-05-31", "--ext", "201",
        "--format", "pdf", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = pypdf.PdfReader(out).pages[0].extract_text()
    assert "Net total 1,50 EUR" in text
    assert "VAT 23 % 0,35 EUR" in text
    assert "Gross total 1,85 EUR" in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["extension", "--from", "2024-13-01", "--to", "2024-05-31"],
         "is not a date; write YYYY-MM-DD"),
        (["bogus", "--from", "2024-05-01", "--to", "2024-05-31"], "invalid choice: 'bogus'"),
        (["extension", "--from", "2024-05-31", "--to", "2024-05-01"], "ends (2024-05-01) before"),
        (["extension", "--from", "2024-05-01", "--to", "2024-05-31", "--department", "legal"],
         "department 'legal' is unknown (sales)"),
        (["extension", "--from", "2024-05-01", "--to", "2024-05-31", "--format", "xlsx"],
         "--format xlsx needs a file"),
        (["statement", "--from", "2024-05-01", "--to", "2024-05-31"], "needs one extension"),
        (["calls", "--from", "2024-05-01", "--to", "2024-05-31", "--direction", "up"],
         "direction 'up' is unknown"),
        (["calls", "--from", "2024-05-01", "--to", "2024-05-31", "--min-duration", "x"],
         "'x' is not a number of seconds"),
    ],
)  # fmt: skip
def test_clear_errors(office: Path, arguments: list[str], message: str) -> None:
    result = minipbx(office, *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_database_and_failed_export_leave_no_file(office: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "firmware.cli", "report", "extension", "--from", "2024-05-01",
            "--to", "2024-05-31", "--data-dir", str(tmp_path),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"no CDR database at {tmp_path / 'cdr.sqlite3'}" in result.stderr
    out = tmp_path / "cross.csv"
    result = minipbx(
        office, "cross-site", "--from", "2024-05-01", "--to", "2024-05-31",
        "--other-site", str(tmp_path / "missing.sqlite3"), "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []
