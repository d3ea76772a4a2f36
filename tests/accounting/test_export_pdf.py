"""PDF exports: the text pypdf extracts shows the right totals, VAT, gross and names."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pypdf
import pytest

from firmware.accounting import exports
from firmware.accounting.exports import DEFAULT_FONT, transliterate, write_pdf
from firmware.accounting.reports import ReportError, run_report
from firmware.calls.cdr import open_readonly
from tests.accounting.test_report_sample import (
    MAY,
    RATING,
    SAMPLE_CALLS,
    SETTINGS,
    _out,
    build_sample,
    write_calls,
)

needs_unicode_font = pytest.mark.skipif(
    not DEFAULT_FONT.is_file(), reason=f"{DEFAULT_FONT} is not installed"
)


@pytest.fixture(scope="module")
def sample_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = open_readonly(build_sample(tmp_path_factory.mktemp("sample")))
    yield connection
    connection.close()


def pdf_pages(path: Path) -> list[str]:
    reader = pypdf.PdfReader(path)
    assert reader.pages[0].mediabox.width == pytest.approx(595.28, abs=0.5) or reader.pages[
        0
    ].mediabox.width == pytest.approx(841.89, abs=0.5)  # A4, portrait or landscape
    return [page.extract_text() for page in reader.pages]


def test_statement_totals_vat_and_gross(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    report = run_report(sample_connection, "statement", replace(MAY, extensions=("201",)), SETTINGS)
    path = tmp_path / "statement.pdf"
    assert write_pdf(report, path) == 3
    (text,) = pdf_pages(path)
    lines = text.splitlines()
    assert "Net total 1.50 EUR" in lines
    assert "VAT 23 % 0.35 EUR" in lines
    assert "Gross total 1.85 EUR" in lines
    assert "Total: 3 calls 0:03:03 1.50" in lines
    assert "2024-05-02 09:00:00 201 912345678 mobile ACME 0:02:00 0.4995" in lines
    assert "Period 2024-05-01 to 2024-05-31 (Europe/Lisbon)   Filters: extensions 201" in lines
    assert re.search(r"Page 1/1$", lines[-1])


def test_statement_with_decimal_comma(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    report = run_report(sample_connection, "statement", replace(MAY, extensions=("202",)), SETTINGS)
    path = tmp_path / "statement.pdf"
    write_pdf(report, path, decimal_comma=True)
    (text,) = pdf_pages(path)
    assert "Net total 0,13 EUR" in text
    assert "VAT 23 % 0,03 EUR" in text
    assert "Gross total 0,16 EUR" in text
    assert "1 answered outgoing call(s) have no cost" in text


@needs_unicode_font
def test_names_keep_their_letters_with_a_unicode_font(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "extensions.pdf"
    write_pdf(run_report(sample_connection, "extension", MAY, SETTINGS), path)
    (text,) = pdf_pages(path)
    assert "Lisboa HQ — Calls by extension" in text
    assert "201 Zé Conceição 4 4 0 0 3 0:03:03 1.50 0" in text
    assert "Иван Петров" in text
    assert "Jiří Dvořák" in text
    assert "Total 14 9 3 2 12 0:15:48 1.65 1" in text


def test_without_a_unicode_font_names_are_transliterated(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "extensions.pdf"
    report = run_report(sample_connection, "extension", MAY, SETTINGS)
    write_pdf(report, path, font_path=tmp_path / "no-such-font.ttf")
    (text,) = pdf_pages(path)
    assert "Lisboa HQ - Calls by extension" in text
    assert "Zé Conceição" in text  # Latin-1 letters survive in the built-in font
    assert "Ivan Petrov" in text
    assert "Jirí Dvorák" in text  # í and á are Latin-1; ř loses its caron
    assert "1.65" in text


def test_transliteration() -> None:
    assert transliterate("Иван Петров") == "Ivan Petrov"
    assert transliterate("Щукин Ёж") == "Shchukin Ezh"
    assert transliterate("Jiří Dvořák — Zé") == "Jirí Dvorák - Zé"
    assert transliterate("☎") == "?"


def test_long_report_repeats_header_and_numbers_pages(tmp_path: Path) -> None:
    calls = SAMPLE_CALLS + tuple(
        _out(
            f"x{index}",
            f"2024-05-20T{8 + index // 60:02d}:{index % 60:02d}:00",
            "201",
            "212345678",
            30,
        )
        for index in range(120)
    )
    rating = RATING | {f"x{index}": ("local", 100, "EUR") for index in range(120)}
    connection = open_readonly(write_calls(tmp_path / "cdr.sqlite3", calls, rating))
    report = run_report(connection, "calls", MAY, SETTINGS)
    path = tmp_path / "calls.pdf"
    assert write_pdf(report, path) == 134
    pages = pdf_pages(path)
    assert len(pages) >= 2
    for number, text in enumerate(pages, start=1):
        assert "Lisboa HQ — Call list" in text or "Lisboa HQ - Call list" in text
        assert "Start Direction Extension" in text  # the table header on every page
        assert f"Page {number}/{len(pages)}" in text
    assert "Total: 134 calls" in pages[-1]
    total_line = next(line for line in pages[-1].splitlines() if line.startswith("Total: 134"))
    assert total_line.endswith(" 2.85")  # 1.6450 + 120 x 0.0100 = 2.845, half up
    connection.close()


def test_a_detail_report_too_long_for_paper_is_refused(
    sample_connection: sqlite3.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "PDF_MAX_ROWS", 10)
    report = run_report(sample_connection, "calls", MAY, SETTINGS)
    with pytest.raises(ReportError, match=r"14 rows would make a PDF .* at most 10 rows"):
        write_pdf(report, tmp_path / "calls.pdf")
    assert not (tmp_path / "calls.pdf").exists()
    grouped = run_report(sample_connection, "daily", MAY, SETTINGS)  # 31 rows, not a detail list
    assert write_pdf(grouped, tmp_path / "daily.pdf") == 31
