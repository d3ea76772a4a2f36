"""`minipbx report KIND --from --to [filters] --format ... --out FILE` (see docs/reports.md).

Reads DATA_DIR/cdr.sqlite3 read-only, so it runs safely next to the appliance; the
reports themselves are in reports.py and the file formats in exports.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.accounting.reports import (
    REPORTS,
    Filters,
    Report,
    ReportError,
    ReportSettings,
    run_report,
)

if TYPE_CHECKING:
    from firmware.config.schema import Config

FORMATS = ("text", "csv", "csv-comma", "csv-semicolon", "xlsx", "pdf")
_SUFFIX_FORMATS = {".csv": "csv", ".xlsx": "xlsx", ".pdf": "pdf", ".txt": "text"}


def _local_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write YYYY-MM-DD") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must not be negative")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _listed(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `report` to the `minipbx` parser."""
    kinds = "\n".join(f"  {name:<17} {kind.summary}" for name, kind in REPORTS.items())
    parser = sub.add_parser(
        "report",
        help="call-accounting reports: CSV, XLSX, PDF or a table",
        description="Report on the call records of a period (local dates of site.timezone).",
        epilog=f"kinds:\n{kinds}\n\nnumber patterns: * any digits, ? one digit, [0-4] a range",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=list(REPORTS), metavar="KIND", help="see the list below")
    parser.add_argument("--from", dest="start", type=_local_date, required=True, help="first day")
    parser.add_argument("--to", dest="end", type=_local_date, required=True, help="last day")
    parser.add_argument("--ext", help="extensions, comma-separated (the call's own extension)")
    parser.add_argument("--department", help="a department of [reports.departments]")
    parser.add_argument("--direction", help="incoming, outgoing, internal (comma-separated)")
    parser.add_argument("--disposition", help="answered, busy, no_answer, ... (comma-separated)")
    parser.add_argument("--min-duration", type=_seconds, default=0.0, help="least talk time, s")
    parser.add_argument("--number", help="outside number pattern, e.g. '00351*' or '21?????'")
    parser.add_argument("--account", help="account code")
    parser.add_argument("--top", type=_positive, help="top-numbers: how many")
    parser.add_argument("--other-site", help="cross-site: the sibling site's cdr.sqlite3")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="csv: the site's dialect ([reports] csv_dialect); default: from --out's suffix",
    )
    parser.add_argument("--out", default="-", help="output file, or - for the terminal")
    parser.add_argument("--config", help="TOML config (default: the embedded default office)")
    parser.add_argument("--data-dir", help="folder of cdr.sqlite3")
    parser.add_argument("--database", help="a CDR database file instead of DATA_DIR/cdr.sqlite3")
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from firmware.app import default_data_dir
    from firmware.calls.cdr import open_readonly
    from firmware.config.load import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    output_format = args.format or _SUFFIX_FORMATS.get(Path(args.out).suffix.lower(), "text")
    if output_format in ("xlsx", "pdf") and args.out == "-":
        return _fail(f"--format {output_format} needs a file: add --out FILE")
    if args.database:
        database = Path(args.database)
    else:
        data_dir = Path(args.data_dir) if args.data_dir else default_data_dir(config)
        database = data_dir / "cdr.sqlite3"
    if not database.is_file():
        return _fail(f"no CDR database at {database} (give --data-dir or --database)", 1)
    try:
        filters = Filters(
            start=args.start,
            end=args.end,
            extensions=_listed(args.ext),
            department=args.department,
            directions=_listed(args.direction),
            dispositions=_listed(args.disposition),
            min_talk_s=args.min_duration,
            number=args.number,
            account_code=args.account,
            top=args.top,
            other_site_database=Path(args.other_site) if args.other_site else None,
        )
        settings = ReportSettings.from_config(config)
        connection = open_readonly(database)
        try:
            report = run_report(connection, args.kind, filters, settings)
            count = _export(report, output_format, args.out, config)
        finally:
            connection.close()
    except ReportError as error:
        return _fail(str(error))
    if args.out != "-":
        print(f"minipbx report: {count} rows written to {args.out}", file=sys.stderr)
    return 0


def _fail(message: str, code: int = 2) -> int:
    print(f"minipbx report: {message}", file=sys.stderr)
    return code


def _export(report: Report, output_format: str, out: str, config: Config) -> int:
    """Write the report; a file appears only once complete (written beside it, then renamed)."""
    from firmware.accounting import exports

    site_dialect = config.reports.dialect_for(config.site.country)
    decimal_comma = site_dialect == "semicolon"
    dialect = {"csv-comma": "comma", "csv-semicolon": "semicolon"}.get(output_format, site_dialect)
    if out == "-":
        if output_format == "text":
            return exports.write_text(report, sys.stdout, decimal_comma)
        return exports.write_csv(report, sys.stdout, dialect)
    target = Path(out)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    os.close(handle)
    try:
        if output_format == "xlsx":
            count = exports.write_xlsx(report, temporary)
        elif output_format == "pdf":
            font = config.reports.pdf_font or None
            count = exports.write_pdf(report, temporary, font, decimal_comma)
        elif output_format == "text":
            with open(temporary, "w", encoding="utf-8") as stream:
                count = exports.write_text(report, stream, decimal_comma)
        else:
            count = exports.write_csv(report, temporary, dialect)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count
