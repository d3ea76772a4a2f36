"""Write a :class:`~firmware.accounting.reports.Report` as CSV, XLSX, PDF or a text table.

Each writer reads ``report.rows`` once, row by row, so a detail report of a whole year
streams from SQLite into the file without being held in memory (XLSX in xlsxwriter's
constant-memory mode). The cell type follows the column kind: money, counts and
durations are numbers, times are real date cells, never text that looks like them.

CSV comes in two dialects (docs/reports.md):

* ``comma``: ``,`` between fields, decimal point, UTF-8 without BOM (for programs).
* ``semicolon``: ``;`` between fields, decimal comma, UTF-8 with a BOM, which is what
  spreadsheets set to Portuguese, Russian, Czech (and most continental) conventions
  open correctly by double-click.

Text cells that a spreadsheet would run as a formula (starting with ``=``, ``@``, or
``+``/``-`` followed by something other than a phone number) get a leading ``'`` in CSV,
because caller names come from outside the office.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal

import xlsxwriter
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from firmware.accounting.reports import Column, ColumnKind, Report, ReportError

__all__ = [
    "CSV_DIALECTS",
    "DEFAULT_FONT",
    "write_csv",
    "write_pdf",
    "write_text",
    "write_xlsx",
]

CsvDialect = Literal["comma", "semicolon"]
CSV_DIALECTS: tuple[CsvDialect, ...] = ("comma", "semicolon")

DEFAULT_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
"""The Unicode font PDFs use when none is configured (Debian's fonts-dejavu-core)."""

PDF_MAX_ROWS = 20_000
"""Most rows a PDF export takes (about 500 pages, some 150 MB while it is built)."""

XLSX_MAX_ROWS = 1_048_576
"""Rows of one Excel worksheet; longer reports continue on another sheet."""


# ---------------------------------------------------------------------------
# Values as text (CSV, PDF, terminal)


def _duration_text(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _grouped(text: str, separator: str) -> str:
    """Thousands separators in the integer part of a plain number text."""
    sign = "-" if text.startswith("-") else ""
    digits, _, fraction = text.lstrip("-").partition(".")
    groups = []
    while len(digits) > 3:
        groups.insert(0, digits[-3:])
        digits = digits[:-3]
    groups.insert(0, digits)
    return sign + separator.join(groups) + ("." + fraction if fraction else "")


def _number_text(text: str, decimal_comma: bool, grouping: bool) -> str:
    if grouping:
        text = _grouped(text, "\u00a0" if decimal_comma else ",")
    return text.replace(".", ",") if decimal_comma else text


def _cell_text(
    column: Column, value: Any, decimal_comma: bool = False, for_reading: bool = False
) -> str:
    """One value as text: plain for CSV, with grouping and h:mm:ss when `for_reading`."""
    if value is None:
        return ""
    kind = column.kind
    if kind is ColumnKind.MONEY:
        return _number_text(f"{value:.{column.places}f}", decimal_comma, for_reading)
    if kind is ColumnKind.INTEGER:
        return _number_text(str(value), decimal_comma, for_reading)
    if kind is ColumnKind.DURATION:
        return _duration_text(value) if for_reading else str(value)
    if kind is ColumnKind.PERCENT:
        text = _number_text(f"{value * 100:.1f}", decimal_comma, False)
        return f"{text} %" if for_reading else text
    if kind is ColumnKind.DATETIME:
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if kind is ColumnKind.DATE:
        return value.isoformat()
    return str(value)


def _title_with_unit(column: Column) -> str:
    if column.kind is ColumnKind.DURATION:
        return f"{column.title} (s)"
    if column.kind is ColumnKind.PERCENT:
        return f"{column.title} (%)"
    return column.title


def _period_text(report: Report) -> str:
    return f"{report.start.isoformat()} to {report.end.isoformat()} ({report.timezone})"


def _statement_lines(report: Report) -> list[tuple[str, Decimal]]:
    if report.statement is None:
        return []
    totals = report.statement
    return [
        ("Net total", totals.net),
        (f"VAT {totals.vat_percent.normalize():f} %", totals.vat),
        ("Gross total", totals.gross),
    ]


def _totals_columns(report: Report) -> tuple[Column, ...]:
    """The columns as the totals row shows them: summed money in the currency's minor unit."""
    return tuple(
        replace(column, places=report.decimals) if column.kind is ColumnKind.MONEY else column
        for column in report.columns
    )


def _totals_text(report: Report, decimal_comma: bool, for_reading: bool = True) -> list[str]:
    label, *rest = report.totals or ()
    cells = zip(_totals_columns(report)[1:], rest, strict=True)
    return [str(label), *(_cell_text(c, v, decimal_comma, for_reading) for c, v in cells)]


def _amount_text(
    report: Report, amount: Decimal, decimal_comma: bool, for_reading: bool = True
) -> str:
    return _number_text(f"{amount:.{report.decimals}f}", decimal_comma, for_reading)


def _money_column(report: Report) -> int:
    """Where statement lines put their amounts: the cost column, else the last one."""
    for index, column in enumerate(report.columns):
        if column.kind is ColumnKind.MONEY:
            return index
    return len(report.columns) - 1


# ---------------------------------------------------------------------------
# CSV

_FORMULA_START = re.compile(r"[=@\t\r]|[+-](?![0-9 ()]*$)")


def _csv_safe(text: str) -> str:
    """Neutralise text a spreadsheet would run as a formula; phone numbers stay as they are."""
    return "'" + text if text and _FORMULA_START.match(text) else text


def write_csv(
    report: Report, target: str | os.PathLike[str] | IO[str], dialect: CsvDialect = "comma"
) -> int:
    """Header, rows, a totals row (first cell "Total…"), statement lines; returns data rows.

    `target` is a path or an open text stream (opened with ``newline=""``).
    """
    if dialect not in CSV_DIALECTS:
        raise ValueError(f"CSV dialect {dialect!r} is unknown; use {' or '.join(CSV_DIALECTS)}")
    if isinstance(target, str | os.PathLike):
        encoding = "utf-8-sig" if dialect == "semicolon" else "utf-8"
        with open(target, "w", encoding=encoding, newline="") as stream:
            return _write_csv_rows(report, stream, dialect)
    if dialect == "semicolon":
        target.write("\ufeff")
    return _write_csv_rows(report, target, dialect)


def _write_csv_rows(report: Report, stream: IO[str], dialect: CsvDialect) -> int:
    semicolon = dialect == "semicolon"
    writer = csv.writer(stream, delimiter=";" if semicolon else ",", lineterminator="\r\n")
    columns = report.columns
    writer.writerow([_title_with_unit(column) for column in columns])
    text_columns = {i for i, column in enumerate(columns) if column.kind is ColumnKind.TEXT}

    def cells(row: Sequence[Any]) -> list[str]:
        out = []
        for index, (column, value) in enumerate(zip(columns, row, strict=True)):
            text = _cell_text(column, value, semicolon)
            out.append(_csv_safe(text) if index in text_columns else text)
        return out

    count = 0
    for row in report.rows:
        writer.writerow(cells(row))
        count += 1
    if report.totals is not None:
        writer.writerow(_totals_text(report, semicolon, for_reading=False))
    money = _money_column(report)
    for label, amount in _statement_lines(report):
        line = [""] * len(columns)
        line[0] = label
        line[money] = _amount_text(report, amount, semicolon, for_reading=False)
        writer.writerow(line)
    return count


# ---------------------------------------------------------------------------
# XLSX


def _xlsx_width(column: Column, rows: Sequence[Sequence[Any]] | None, index: int) -> float:
    width = max(len(_sample(column)), len(column.title)) + 2
    if rows is not None and column.kind is ColumnKind.TEXT:
        longest = max((len(str(row[index] or "")) for row in rows), default=0)
        width = max(len(column.title), min(longest, 40)) + 2
    return width


def write_xlsx(report: Report, path: str | os.PathLike[str]) -> int:
    """One worksheet (more past Excel's row limit) with typed cells; returns data rows.

    Title, period and filters on top, a frozen header with filters, money with the
    currency in its number format, times as date cells in the site's local time,
    durations as [h]:mm:ss, then a bold totals row (values, the same figures as the
    other exports) and, for statements, net, VAT and gross.
    """
    workbook = xlsxwriter.Workbook(
        os.fspath(path), {"constant_memory": True, "strings_to_numbers": False}
    )
    try:
        writer = _XlsxWriter(workbook, report)
        return writer.write()
    finally:
        workbook.close()


class _XlsxWriter:
    """Formats and the row loop of one XLSX export."""

    HEADER_ROW = 4

    def __init__(self, workbook: Any, report: Report) -> None:
        self.workbook = workbook
        self.report = report
        self.title_format = workbook.add_format({"bold": True, "font_size": 14})
        self.header_format = workbook.add_format(
            {"bold": True, "bottom": 1, "text_wrap": True, "valign": "top", "bg_color": "#DDDDDD"}
        )
        self.label_format = workbook.add_format({"bold": True})
        self.cell_formats = [self._format(column, totals=False) for column in report.columns]
        # Plain text needs no format of its own: a cell without a style attribute is smaller.
        for index, column in enumerate(report.columns):
            if column.kind is ColumnKind.TEXT:
                self.cell_formats[index] = None
        self.total_formats = [
            self._format(column, totals=True) for column in _totals_columns(report)
        ]
        self.sheets = 0

    def _format(self, column: Column, totals: bool) -> Any:
        properties: dict[str, Any] = {"bold": True, "top": 1} if totals else {}
        kind = column.kind
        if kind is ColumnKind.MONEY:
            properties["num_format"] = _xlsx_money_format(column.places, self.report.currency)
        elif kind is ColumnKind.INTEGER:
            properties["num_format"] = "#,##0"
        elif kind is ColumnKind.DATETIME:
            properties["num_format"] = "yyyy-mm-dd hh:mm:ss"
        elif kind is ColumnKind.DATE:
            properties["num_format"] = "yyyy-mm-dd"
        elif kind is ColumnKind.DURATION:
            properties["num_format"] = "[h]:mm:ss"
        elif kind is ColumnKind.PERCENT:
            properties["num_format"] = "0.0%"
        return self.workbook.add_format(properties)

    def _new_sheet(self) -> Any:
        self.sheets += 1
        name = "Report" if self.sheets == 1 else f"Report ({self.sheets})"
        sheet = self.workbook.add_worksheet(name)
        report = self.report
        rows = report.rows if isinstance(report.rows, Sequence) else None
        for index, column in enumerate(report.columns):
            sheet.set_column(index, index, _xlsx_width(column, rows, index))
        sheet.write_string(0, 0, f"{report.title} — {report.site}", self.title_format)
        sheet.write_string(1, 0, f"Period {_period_text(report)}")
        filters = report.filters.describe()
        sheet.write_string(2, 0, "Filters: " + ("; ".join(filters) if filters else "none"))
        for index, column in enumerate(report.columns):
            sheet.write_string(self.HEADER_ROW, index, column.title, self.header_format)
        sheet.freeze_panes(self.HEADER_ROW + 1, 0)
        return sheet

    def _cell_writers(
        self, sheet: Any, formats: Sequence[Any]
    ) -> list[Callable[[int, int, Any], None]]:
        """One function per column writing its value with the right cell type."""
        writers = []
        for column, cell_format in zip(self.report.columns, formats, strict=True):
            writers.append(_xlsx_cell_writer(sheet, column.kind, cell_format))
        return writers

    def write(self) -> int:
        report = self.report
        last_column = len(report.columns) - 1
        tail = 6 + len(report.notes)
        sheet = self._new_sheet()
        row_number = self.HEADER_ROW
        count = 0
        # The hot loop of a year-long export: one typed call per non-empty cell, no layers.
        cells = [
            (index, _XLSX_KIND[column.kind], cell_format)
            for index, (column, cell_format) in enumerate(
                zip(report.columns, self.cell_formats, strict=True)
            )
        ]
        write_string, write_number = sheet.write_string, sheet.write_number
        write_datetime = sheet.write_datetime
        for row in report.rows:
            if row_number + 1 >= XLSX_MAX_ROWS - tail:
                sheet.autofilter(self.HEADER_ROW, 0, row_number, last_column)
                sheet = self._new_sheet()
                write_string, write_number = sheet.write_string, sheet.write_number
                write_datetime = sheet.write_datetime
                row_number = self.HEADER_ROW
            row_number += 1
            count += 1
            for index, kind, cell_format in cells:
                value = row[index]
                if value is None or value == "":
                    continue
                if kind == _TEXT:
                    write_string(row_number, index, value, cell_format)
                elif kind == _NUMBER:
                    write_number(row_number, index, float(value), cell_format)
                elif kind == _DURATION:
                    write_number(row_number, index, value / 86400, cell_format)
                else:
                    if isinstance(value, datetime):
                        value = value.replace(tzinfo=None)  # the site's wall time, as titled
                    write_datetime(row_number, index, value, cell_format)
        sheet.autofilter(self.HEADER_ROW, 0, row_number, last_column)
        if report.totals is not None:
            row_number += 1
            total_writers = self._cell_writers(sheet, self.total_formats)
            label, *rest = report.totals
            sheet.write_string(row_number, 0, str(label), self.total_formats[0])
            for index, value in enumerate(rest, start=1):
                total_writers[index](row_number, index, value)
        money = _money_column(report)
        money_format = self.workbook.add_format(
            {"bold": True, "num_format": _xlsx_money_format(report.decimals, report.currency)}
        )
        for label, amount in _statement_lines(report):
            row_number += 1
            sheet.write_string(row_number, max(0, money - 1), label, self.label_format)
            sheet.write_number(row_number, money, float(amount), money_format)
        row_number += 1
        for note in report.notes:
            row_number += 1
            sheet.write_string(row_number, 0, note)
        return count


_TEXT, _NUMBER, _DURATION, _MOMENT = range(4)
_XLSX_KIND = {
    ColumnKind.TEXT: _TEXT,
    ColumnKind.INTEGER: _NUMBER,
    ColumnKind.MONEY: _NUMBER,
    ColumnKind.PERCENT: _NUMBER,
    ColumnKind.DURATION: _DURATION,
    ColumnKind.DATETIME: _MOMENT,
    ColumnKind.DATE: _MOMENT,
}


def _xlsx_money_format(places: int, currency: str) -> str:
    decimals = "." + "0" * places if places else ""
    return f'#,##0{decimals} "{currency}"'


def _xlsx_cell_writer(
    sheet: Any, kind: ColumnKind, cell_format: Any
) -> Callable[[int, int, Any], None]:
    """A writer for one column's cells; None writes nothing (no empty cell elements)."""
    if kind is ColumnKind.TEXT:

        def text(row: int, column: int, value: Any) -> None:
            if value:
                sheet.write_string(row, column, value, cell_format)

        return text
    if kind in (ColumnKind.DATETIME, ColumnKind.DATE):

        def moment(row: int, column: int, value: Any) -> None:
            if value is not None:
                if isinstance(value, datetime):
                    value = value.replace(tzinfo=None)  # the site's wall time, as titled
                sheet.write_datetime(row, column, value, cell_format)

        return moment
    scale = 86400.0 if kind is ColumnKind.DURATION else 1.0

    def number(row: int, column: int, value: Any) -> None:
        if value is not None:
            sheet.write_number(row, column, float(value) / scale, cell_format)

    return number


# ---------------------------------------------------------------------------
# Text table (terminal)


_SAMPLE_TEXT = {
    ColumnKind.DATETIME: "2024-12-31 23:59:59",
    ColumnKind.DATE: "2024-12-31",
    ColumnKind.DURATION: "100:00:00",
    ColumnKind.INTEGER: "100,000",
    ColumnKind.PERCENT: "100.0 %",
}


def _sample(column: Column) -> str:
    """Text as wide as a typical value of the column, for layouts that cannot look ahead."""
    if column.kind is ColumnKind.MONEY:
        return "10,000." + "0" * column.places
    if column.kind is ColumnKind.TEXT:
        return "0" * column.width
    return _SAMPLE_TEXT[column.kind]


def _text_width(column: Column) -> int:
    return max(len(_sample(column)), len(column.title))


def _right_aligned(column: Column) -> bool:
    return column.kind not in (ColumnKind.TEXT, ColumnKind.DATE, ColumnKind.DATETIME)


def write_text(report: Report, stream: IO[str], decimal_comma: bool = False) -> int:
    """An aligned table for a terminal: title, period, rows, totals, statement, notes."""
    columns = report.columns
    rows: Iterable[Sequence[Any]] = report.rows
    widths = [_text_width(column) for column in columns]
    if isinstance(rows, Sequence):
        for row in rows:
            for index, (column, value) in enumerate(zip(columns, row, strict=True)):
                widths[index] = max(
                    widths[index], len(_cell_text(column, value, decimal_comma, True))
                )
    if report.totals is not None:
        for index, text in enumerate(_totals_text(report, decimal_comma)[1:], start=1):
            widths[index] = max(widths[index], len(text))
    widths = [min(width, 40) for width in widths]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for column, width, text in zip(columns, widths, cells, strict=True):
            text = text if len(text) <= width else text[: width - 1] + "…"
            parts.append(text.rjust(width) if _right_aligned(column) else text.ljust(width))
        return "  ".join(parts).rstrip()

    stream.write(f"{report.title} — {report.site}\nPeriod {_period_text(report)}\n")
    filters = report.filters.describe()
    if filters:
        stream.write("Filters: " + "; ".join(filters) + "\n")
    stream.write("\n" + line([column.title for column in columns]) + "\n")
    stream.write("  ".join("-" * width for width in widths) + "\n")
    count = 0
    for row in rows:
        stream.write(
            line([_cell_text(c, v, decimal_comma, True) for c, v in zip(columns, row, strict=True)])
            + "\n"
        )
        count += 1
    if report.totals is not None:
        stream.write("  ".join("-" * width for width in widths) + "\n")
        stream.write(line(_totals_text(report, decimal_comma)) + "\n")
    for label, amount in _statement_lines(report):
        amount_text = _amount_text(report, amount, decimal_comma)
        stream.write(f"{label}: {amount_text} {report.currency}\n")
    for note in report.notes:
        stream.write(f"Note: {note}\n")
    return count


# ---------------------------------------------------------------------------
# PDF

# fmt: off
_CYRILLIC_LATIN = (
    "a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o", "p",
    "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya",
)
# fmt: on
_CYRILLIC = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя", _CYRILLIC_LATIN, strict=True))


_PUNCTUATION = {"—": "-", "–": "-", "…": "...", "‘": "'", "’": "'", "“": '"', "”": '"', "€": "EUR"}


def transliterate(text: str) -> str:
    """Latin-1 text for the PDF built-in font: accents dropped, Cyrillic in Latin letters."""
    out = []
    for character in text:
        if ord(character) < 256:
            out.append(character)
            continue
        if character in _PUNCTUATION:
            out.append(_PUNCTUATION[character])
            continue
        lower = character.lower()
        if lower in _CYRILLIC:
            latin = _CYRILLIC[lower]
            out.append(latin.capitalize() if character != lower else latin)
            continue
        stripped = "".join(
            c for c in unicodedata.normalize("NFKD", character) if not unicodedata.combining(c)
        )
        out.append(stripped if stripped and all(ord(c) < 256 for c in stripped) else "?")
    return "".join(out)


_PORTRAIT_WIDTH = 190.0
_LANDSCAPE_WIDTH = 277.0


def write_pdf(
    report: Report,
    path: str | os.PathLike[str],
    font_path: str | os.PathLike[str] | None = None,
    decimal_comma: bool = False,
) -> int:
    """A4 for printing: header with site, title, period; the table; totals; net/VAT/gross.

    Portrait when the columns fit, else landscape, else a smaller type. Names keep their
    letters with a Unicode TrueType font (`font_path`, else DEFAULT_FONT when installed);
    without one the built-in font is used and names are transliterated. Returns data rows.

    A PDF is built in memory (about a quarter of a megabyte per page), so a detail report
    of more than PDF_MAX_ROWS rows is refused with ReportError: that is a job for XLSX.
    """
    if report.streamed and report.calls > PDF_MAX_ROWS:
        raise ReportError(
            f"{report.calls} rows would make a PDF of some {report.calls // 40} pages; a PDF "
            f"takes at most {PDF_MAX_ROWS} rows: choose xlsx or csv, or narrow the filters"
        )
    pdf = _ReportPdf(report, Path(font_path) if font_path else DEFAULT_FONT, decimal_comma)
    count = pdf.write_report()
    pdf.output(os.fspath(path))
    return count


class _ReportPdf(FPDF):
    """One report on A4 pages; the table header repeats on every page."""

    def __init__(self, report: Report, font: Path, decimal_comma: bool) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.report = report
        self.decimal_comma = decimal_comma
        self.unicode_font = font.is_file()
        if self.unicode_font:
            self.family = "ReportFont"
            self.add_font(self.family, "", str(font))
            bold = font.with_name(font.stem + "-Bold" + font.suffix)
            self.add_font(self.family, "B", str(bold if bold.is_file() else font))
        else:
            self.family = "helvetica"
        self.set_margins(10, 10, 10)
        self.set_auto_page_break(True, margin=15)
        self.table_started = False
        self.font_size_table = 8.0
        self.widths = self._measure()
        self.orientation_chosen = "P"
        if sum(self.widths) > _PORTRAIT_WIDTH:
            self.orientation_chosen = "L"
            if sum(self.widths) > _LANDSCAPE_WIDTH:
                self.font_size_table = max(5.0, 8.0 * _LANDSCAPE_WIDTH / sum(self.widths))
                self.widths = self._measure()
                scale = min(1.0, _LANDSCAPE_WIDTH / sum(self.widths))
                self.widths = [width * scale for width in self.widths]
        self._spread(_LANDSCAPE_WIDTH if self.orientation_chosen == "L" else _PORTRAIT_WIDTH)
        self.line_height = self.font_size_table * 0.55

    def _spread(self, page_width: float) -> None:
        """Give the room left on the page to the text columns, where values vary most."""
        spare = page_width - sum(self.widths)
        text = [i for i, c in enumerate(self.report.columns) if c.kind is ColumnKind.TEXT]
        if spare <= 0 or not text:
            return
        share = spare / len(text)
        for index in text:
            self.widths[index] += min(share, self.widths[index])

    def clean(self, text: str) -> str:
        return text if self.unicode_font else transliterate(text)

    def _measure(self) -> list[float]:
        """Column widths from titles and typical values, or the rows of a short report."""
        size = self.font_size_table
        rows = self.report.rows if isinstance(self.report.rows, Sequence) else None
        widths = []
        for index, column in enumerate(self.report.columns):
            self.set_font(self.family, "B", size)
            title = self.get_string_width(self.clean(column.title))
            self.set_font(self.family, "", size)
            if rows is not None and column.kind is ColumnKind.TEXT:
                texts = (self.clean(str(row[index] or "")) for row in rows)
                value = min(max((self.get_string_width(t) for t in texts), default=0.0), 60.0)
            else:
                value = self.get_string_width(_sample(column))
            widths.append(max(title, value) + 3)
        return widths

    def header(self) -> None:
        report = self.report
        self.set_font(self.family, "B", 11)
        self.cell(
            0, 6, self.clean(f"{report.site} — {report.title}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        self.set_font(self.family, "", 8)
        period = f"Period {_period_text(report)}"
        filters = report.filters.describe()
        if filters:
            period += "   Filters: " + "; ".join(filters)
        self.cell(0, 5, self.clean(period), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)
        if self.table_started:
            self._table_header()

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.family, "", 7)
        self.cell(0, 5, f"Generated {self.report.generated:%Y-%m-%d %H:%M} UTC", align="L")
        self.set_x(self.l_margin)
        self.cell(0, 5, f"Page {self.page_no()}/{{nb}}", align="R")

    def _fit(self, text: str, width: float) -> str:
        """The text, cut with an ellipsis when it would overflow its column."""
        text = self.clean(text)
        room = width - 1.5
        if self.get_string_width(text) <= room:
            return text
        mark = "…" if self.unicode_font else "."
        while text and self.get_string_width(text + mark) > room:
            text = text[:-1]
        return text + mark

    def _table_header(self) -> None:
        self.set_font(self.family, "B", self.font_size_table)
        self.set_fill_color(221, 221, 221)
        for column, width in zip(self.report.columns, self.widths, strict=True):
            align = "R" if _right_aligned(column) else "L"
            self.cell(
                width,
                self.line_height + 1,
                self._fit(column.title, width),
                border="B",
                align=align,
                fill=True,
            )
        self.ln()

    def _table_row(self, cells: Sequence[str], bold: bool = False) -> None:
        self.set_font(self.family, "B" if bold else "", self.font_size_table)
        for column, width, text in zip(self.report.columns, self.widths, cells, strict=True):
            align = "R" if _right_aligned(column) else "L"
            self.cell(
                width,
                self.line_height,
                self._fit(text, width),
                border="T" if bold else 0,
                align=align,
            )
        self.ln()

    def write_report(self) -> int:
        report = self.report
        self.add_page(orientation=self.orientation_chosen)
        self._table_header()
        self.table_started = True
        count = 0
        for cells in iter_text_rows(report, self.decimal_comma, totals=False):
            self._table_row(cells)
            count += 1
        if report.totals is not None:
            self._table_row(_totals_text(report, self.decimal_comma), bold=True)
        self.table_started = False
        self._statement()
        if report.notes:
            self.ln(3)
            self.set_font(self.family, "", 7)
            for note in report.notes:
                self.multi_cell(
                    0, 4, self.clean(f"Note: {note}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT
                )
        return count

    def _statement(self) -> None:
        """Net, VAT and gross in a block at the right, kept on one page."""
        lines = _statement_lines(self.report)
        if not lines:
            return
        if self.get_y() + 30 > self.h - self.b_margin:
            self.add_page(orientation=self.orientation_chosen)
        self.ln(4)
        left = self.w - self.r_margin - 80
        for index, (label, amount) in enumerate(lines):
            gross = index == len(lines) - 1
            border = "T" if gross else 0
            self.set_font(self.family, "B" if gross else "", 10)
            self.set_x(left)
            self.cell(45, 6, self.clean(label), border=border)
            amount_text = _amount_text(self.report, amount, self.decimal_comma)
            self.cell(
                35,
                6,
                f"{amount_text} {self.report.currency}",
                border=border,
                align="R",
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )


def csv_text(report: Report, dialect: CsvDialect = "comma") -> str:
    """The CSV as a string (small reports, tests, e-mail bodies)."""
    buffer = io.StringIO(newline="")
    write_csv(report, buffer, dialect)
    return buffer.getvalue()


def iter_text_rows(
    report: Report, decimal_comma: bool = False, totals: bool = True
) -> Iterator[list[str]]:
    """Rows as display text (a web table, a terminal, the PDF), then the totals row."""
    columns = report.columns
    for row in report.rows:
        yield [_cell_text(c, v, decimal_comma, True) for c, v in zip(columns, row, strict=True)]
    if totals and report.totals is not None:
        yield _totals_text(report, decimal_comma)
