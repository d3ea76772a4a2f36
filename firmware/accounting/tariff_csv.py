"""The rate deck: prefix rows of a tariff read from a CSV file, and the overlap report.

A deck is all or nothing: every malformed row is reported with its line number and the
reason, and one bad row rejects the file, so a tariff is never half-loaded. See the
"Tariffs and rating" section of docs/accounting.md for the columns.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

__all__ = [
    "OVERRIDE_COLUMNS",
    "RateDeckError",
    "RateRow",
    "check_overlaps",
    "parse_amount",
    "parse_increments",
    "parse_rate_deck",
    "read_rate_deck",
]

PREFIX_PATTERN = re.compile(r"\+[0-9]{0,15}|[0-9*#]{1,20}")
CLASS_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
OVERRIDE_COLUMNS = (
    "connection_fee",
    "per_minute",
    "per_minute_offpeak",
    "per_minute_weekend",
    "increments",
    "minimum",
)
"""Optional per-row price columns: each one present overrides the class's value."""
REQUIRED_COLUMNS = ("prefix", "class")
KNOWN_COLUMNS = (*REQUIRED_COLUMNS, "description", *OVERRIDE_COLUMNS)
MAX_REPORTED = 50


class RateDeckError(ValueError):
    """A rate deck that must not be used; `errors` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        shown = errors[:MAX_REPORTED]
        more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        super().__init__(f"{source}: {len(errors)} error(s)\n  " + "\n  ".join(shown) + more)


@dataclass(frozen=True)
class RateRow:
    """One prefix of a tariff: which class a number starting with it belongs to.

    `overrides` holds the row's own prices (column name -> Decimal, or (first, next)
    seconds for `increments`); `source` says where the row came from, for messages.
    """

    prefix: str
    dest_class: str
    description: str = ""
    overrides: dict[str, object] = field(default_factory=dict, hash=False)
    source: str = ""

    @property
    def is_e164(self) -> bool:
        """A '+' prefix matches the number's E.164 form; any other the digits as dialled."""
        return self.prefix.startswith("+")


def parse_amount(text: str) -> Decimal:
    """A non-negative money amount, with a decimal point or a decimal comma ('0,12')."""
    cleaned = text.strip().replace(",", ".")
    if cleaned.count(".") > 1 or not re.fullmatch(r"[0-9]*\.?[0-9]+|[0-9]+\.", cleaned):
        raise ValueError(f"{text!r} is not an amount (e.g. 0.12 or 0,12)")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount (e.g. 0.12 or 0,12)") from None


def parse_increments(text: str) -> tuple[int, int]:
    """'60/60', '30/6', '1/1': seconds billed first, then the step beyond it."""
    match = re.fullmatch(r"\s*([0-9]{1,4})\s*/\s*([0-9]{1,4})\s*", text)
    if match is None:
        raise ValueError(f"increments {text!r} must be FIRST/NEXT seconds, e.g. '60/60' or '30/6'")
    first, step = int(match.group(1)), int(match.group(2))
    if first < 1 or step < 1:
        raise ValueError(f"increments {text!r}: both parts must be at least 1 second")
    return first, step


def _dialect(header_line: str) -> str:
    """Semicolon files (decimal comma countries) or comma files, told by the header."""
    return ";" if header_line.count(";") > header_line.count(",") else ","


def parse_rate_deck(text: str, source: str) -> tuple[RateRow, ...]:
    """Every row of a deck, or RateDeckError listing every bad line (nothing half-loaded)."""
    lines = text.lstrip("\ufeff").splitlines()
    errors: list[str] = []
    numbered = [(number, line) for number, line in enumerate(lines, 1)]
    content = [
        (n, line) for n, line in numbered if line.strip() and not line.lstrip().startswith("#")
    ]
    if not content:
        raise RateDeckError(source, ["the file has no header line (prefix, class, ...)"])
    header_number, header_line = content[0]
    delimiter = _dialect(header_line)
    header = [name.strip().lower() for name in next(csv.reader([header_line], delimiter=delimiter))]
    for name in header:
        if name not in KNOWN_COLUMNS:
            errors.append(
                f"line {header_number}: unknown column {name!r}; columns are {', '.join(KNOWN_COLUMNS)}"
            )
    for name in REQUIRED_COLUMNS:
        if name not in header:
            errors.append(f"line {header_number}: the header needs a {name!r} column")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        errors.append(f"line {header_number}: column(s) {', '.join(duplicated)} appear twice")
    if errors:
        raise RateDeckError(source, errors)
    rows: list[RateRow] = []
    for number, line in content[1:]:
        try:
            values = next(csv.reader([line], delimiter=delimiter, strict=True))
        except csv.Error as error:
            errors.append(f"line {number}: {error}")
            continue
        try:
            rows.append(_row(header, values, f"{source}:{number}"))
        except ValueError as error:
            errors.append(f"line {number}: {error}")
    errors += [problem for problem in _conflicts(rows)]
    if errors:
        raise RateDeckError(source, errors)
    return tuple(rows)


def _row(header: list[str], values: list[str], source: str) -> RateRow:
    if len(values) != len(header):
        raise ValueError(f"{len(values)} fields, the header has {len(header)}")
    cells = {name: value.strip() for name, value in zip(header, values, strict=True)}
    prefix = cells["prefix"].replace(" ", "")
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(
            f"prefix {cells['prefix']!r} must be '+' and up to 15 digits (E.164) or 1-20 of 0-9 * # "
            "(as dialled)"
        )
    dest_class = cells["class"]
    if not CLASS_PATTERN.fullmatch(dest_class):
        raise ValueError(
            f"class {dest_class!r} must start with a letter and use letters, digits, _ and -"
        )
    return RateRow(
        prefix=prefix,
        dest_class=dest_class,
        description=cells.get("description", ""),
        overrides=parse_overrides(cells),
        source=source,
    )


def parse_overrides(cells: dict[str, str]) -> dict[str, object]:
    """The row's non-empty price columns, parsed; ValueError names the bad one."""
    overrides: dict[str, object] = {}
    for name in OVERRIDE_COLUMNS:
        text = cells.get(name, "")
        if not text:
            continue
        try:
            overrides[name] = parse_increments(text) if name == "increments" else parse_amount(text)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    return overrides


def _conflicts(rows: Iterable[RateRow]) -> Iterator[str]:
    """The same prefix twice with another class or other prices: which one would apply?"""
    seen: dict[str, RateRow] = {}
    for row in rows:
        earlier = seen.get(row.prefix)
        if earlier is None:
            seen[row.prefix] = row
        elif (earlier.dest_class, earlier.overrides) != (row.dest_class, row.overrides):
            yield (
                f"{row.source}: prefix {row.prefix} is already {earlier.dest_class} at "
                f"{earlier.source} (a duplicate with another class or price: remove one)"
            )


def read_rate_deck(path: Path) -> tuple[RateRow, ...]:
    """Read and parse a deck file (UTF-8, a BOM is fine)."""
    try:
        text = path.read_text("utf-8-sig")
    except OSError as error:
        raise RateDeckError(str(path), [f"cannot read the file: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise RateDeckError(str(path), [f"not UTF-8 text: {error.reason}"]) from None
    return parse_rate_deck(text, path.name)


def conflicting_duplicates(rows: Iterable[RateRow]) -> list[str]:
    """Conflicts across a whole tariff (inline prefixes and deck together)."""
    return list(_conflicts(rows))


def check_overlaps(rows: Iterable[RateRow]) -> tuple[list[str], list[str]]:
    """(errors, notes) for `minipbx tariff check`.

    Errors: one prefix listed twice with another class or price. Notes: exact repeats,
    and each prefix that overrides a shorter one of the same kind for longer numbers
    (longest match wins, so the shorter row still prices every other number under it).
    """
    errors: list[str] = []
    notes: list[str] = []
    first: dict[str, RateRow] = {}
    for row in rows:
        earlier = first.get(row.prefix)
        if earlier is None:
            first[row.prefix] = row
        elif (earlier.dest_class, earlier.overrides) != (row.dest_class, row.overrides):
            errors.append(
                f"{row.source}: prefix {row.prefix} ({row.dest_class}) conflicts with "
                f"{earlier.source} ({earlier.dest_class})"
            )
        else:
            notes.append(f"{row.source}: prefix {row.prefix} repeats {earlier.source} (same class)")
    for prefix, row in first.items():
        shorter = _longest_shorter(prefix, first)
        if shorter is not None:
            notes.append(
                f"{row.source}: {prefix} ({row.dest_class}) overrides {shorter.prefix} "
                f"({shorter.dest_class}, {shorter.source}) for numbers starting {prefix}"
            )
    return errors, notes


def _longest_shorter(prefix: str, table: dict[str, RateRow]) -> RateRow | None:
    floor = 1 if prefix.startswith("+") else 0
    for length in range(len(prefix) - 1, floor, -1):
        found = table.get(prefix[:length])
        if found is not None:
            return found
    if floor == 1 and prefix != "+" and "+" in table:
        return table["+"]
    return None
