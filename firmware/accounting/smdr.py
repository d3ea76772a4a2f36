"""The SMDR line: one stored CDR row in, one fixed-width ASCII line out (and the header).

Pure: no I/O, no clock, safe to call from any thread. The layout (column positions,
widths, condition codes) is documented in docs/smdr.md, and the tests check it byte for
byte; change both together. Modelled on the hybrid-PBX SMDR printouts (Panasonic KX-TDA/NS:
Date, Time, Ext, CO, Dial Number, Ring, Duration, Cost, Acc code, CD).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.config.schema import Config

LINE_END = b"\r\n"  # printers and call-accounting software expect CR LF


class Column(NamedTuple):
    title: str
    start: int  # 1-based, as printed in docs/smdr.md
    width: int
    align: str  # "<" left or ">" right


COLUMNS = (
    Column("Date", 1, 8, "<"),
    Column("Time", 10, 7, "<"),
    Column("Ext", 18, 5, "<"),
    Column("CO", 24, 6, "<"),
    Column("Dial Number", 31, 25, "<"),
    Column("Ring", 57, 5, ">"),
    Column("Duration", 63, 8, "<"),
    Column("Cost", 72, 9, ">"),
    Column("Acc code", 82, 12, "<"),
    Column("CD", 95, 2, "<"),
)
LINE_WIDTH = COLUMNS[-1].start + COLUMNS[-1].width - 1  # 96 characters before CR LF

INCOMING_MARK = "<I>"

# Condition codes (CD column); docs/smdr.md explains each.
UNANSWERED_CODES = {
    "busy": "BY",
    "no_answer": "NA",
    "abandoned": "NA",
    "rejected": "RJ",
    "invalid": "IV",
    "congestion": "CG",
    "failed": "FL",
}

# ISO 4217 minor units that are not 2 (the cost column shows the currency's minor unit).
_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_CURRENCY_DECIMALS = dict.fromkeys(_ZERO_DECIMALS.split(), 0) | dict.fromkeys(
    _THREE_DECIMALS.split(), 3
)


def currency_decimals(currency: str) -> int:
    """Digits after the point in the currency's minor unit (2 unless ISO 4217 says otherwise)."""
    return _CURRENCY_DECIMALS.get(currency.upper(), 2)


def ascii_text(value: object) -> str:
    """Printable ASCII only: spaces and control or non-ASCII characters become '?'."""
    text = "" if value is None else str(value).strip()
    return "".join(char if "\x21" <= char <= "\x7e" else "?" for char in text)


def _fit(text: str, column: Column) -> str:
    text = text[: column.width]
    return text.ljust(column.width) if column.align == "<" else text.rjust(column.width)


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _milliseconds(start: str, end: str) -> int:
    return (_parse_utc(end) - _parse_utc(start)) // timedelta(milliseconds=1)


def ring_text(seconds: int) -> str:
    """Whole minutes and seconds, m'ss (capped at 99'59)."""
    seconds = min(max(seconds, 0), 99 * 60 + 59)
    return f"{seconds // 60}'{seconds % 60:02d}"


def duration_text(seconds: int) -> str:
    """HH:MM'SS (capped at 99:59'59)."""
    seconds = min(max(seconds, 0), 99 * 3600 + 59 * 60 + 59)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}'{seconds % 60:02d}"


def cost_text(cost_e4: int | None, decimals: int, width: int) -> str:
    """Net cost rounded half up to the minor unit; blank when unrated, asterisks if too wide."""
    if cost_e4 is None:
        return ""
    amount = Decimal(int(cost_e4)).scaleb(-4).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP)
    text = f"{amount:.{decimals}f}"
    return text if len(text) <= width else "*" * width


def timezone_of(config: Config) -> tzinfo:
    """The site's zone; raises ValueError naming the setting when it does not exist."""
    try:
        return ZoneInfo(config.site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"site.timezone {config.site.timezone!r} is not a known time zone "
            "(use an IANA name such as 'Europe/Lisbon')"
        ) from None


@dataclass(frozen=True)
class SmdrFormatter:
    """Formats rows for one site's settings; build it once with :meth:`from_config`."""

    timezone: tzinfo = UTC
    date_format: str = "dd/mm/yy"
    twelve_hour: bool = False
    currency: str = "EUR"
    # Minor-unit digits of `currency` from the config (None: the ISO 4217 table).
    decimals: int | None = None
    line_labels: Mapping[str, str] = field(default_factory=dict)
    # Line name -> extensions its incoming calls ring at once (answering any is no forward).
    ring_groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config, timezone: tzinfo | None = None) -> SmdrFormatter:
        smdr = config.smdr
        american = config.site.country.lower() == "us"
        date_format = smdr.date_format
        if date_format == "auto":
            date_format = "mm/dd/yy" if american else "dd/mm/yy"
        time_format = smdr.time_format
        if time_format == "auto":
            time_format = "12h" if american else "24h"
        return cls(
            timezone=timezone if timezone is not None else timezone_of(config),
            date_format=date_format,
            twelve_hour=time_format == "12h",
            currency=config.accounting.currency,
            decimals=getattr(config.accounting, "decimals", None),
            line_labels=dict(smdr.line_labels),
            ring_groups={line.name: frozenset(line.incoming) for line in config.lines},
        )

    # ----- the header -------------------------------------------------------------------

    def header(self) -> bytes:
        """Column titles aligned as their columns, then a rule: two lines of 96 characters + CR LF."""
        titles = " ".join(_fit(column.title, column) for column in COLUMNS)
        return (titles + "\r\n" + "-" * LINE_WIDTH + "\r\n").encode("ascii")

    # ----- one record -------------------------------------------------------------------

    def line(self, row: Mapping[str, Any]) -> bytes:
        """The record as one fixed-width line ending CR LF (ASCII bytes)."""
        values = self.fields(row)
        text = " ".join(_fit(values[index], column) for index, column in enumerate(COLUMNS))
        return text.encode("ascii") + LINE_END

    def fields(self, row: Mapping[str, Any]) -> list[str]:
        """The ten column texts, unpadded, in COLUMNS order."""
        start = _parse_utc(row["start_utc"]).astimezone(self.timezone)
        answered = row["answer_utc"] is not None
        ring_ms = _milliseconds(row["start_utc"], row["answer_utc"] or row["end_utc"])
        billed_ms = _milliseconds(row["answer_utc"], row["end_utc"]) if answered else 0
        currency = row.get("currency") or self.currency
        return [
            self._date(start),
            self._time(start),
            ascii_text(self._extension(row)),
            ascii_text(self._line_label(row.get("line"), row["direction"])),
            self._dial_number(row),
            ring_text(ring_ms // 1000),
            duration_text(-(-billed_ms // 1000)),  # billed time: whole seconds, rounded up
            cost_text(row.get("cost_e4"), self._decimals(currency), COLUMNS[7].width),
            ascii_text(row.get("account_code")),
            self.condition_code(row),
        ]

    def _decimals(self, currency: str) -> int:
        if self.decimals is not None and currency.upper() == self.currency.upper():
            return self.decimals
        return currency_decimals(currency)

    def _date(self, moment: datetime) -> str:
        day, month, year = f"{moment.day:02d}", f"{moment.month:02d}", f"{moment.year % 100:02d}"
        if self.date_format == "mm/dd/yy":
            return f"{month}/{day}/{year}"
        if self.date_format == "yy/mm/dd":
            return f"{year}/{month}/{day}"
        return f"{day}/{month}/{year}"

    def _time(self, moment: datetime) -> str:
        if not self.twelve_hour:
            return f"{moment.hour:02d}:{moment.minute:02d}"
        hour = moment.hour % 12 or 12
        return f"{hour:02d}:{moment.minute:02d}{'AM' if moment.hour < 12 else 'PM'}"

    @staticmethod
    def _extension(row: Mapping[str, Any]) -> str:
        if row["direction"] == "incoming":
            return row.get("answered_extension") or row.get("called_extension") or ""
        return row.get("caller_number") or ""

    def _line_label(self, line: str | None, direction: str) -> str:
        if not line or direction == "internal":
            return ""
        return self.line_labels.get(line, line)

    @staticmethod
    def _dial_number(row: Mapping[str, Any]) -> str:
        if row["direction"] == "incoming":
            return INCOMING_MARK + ascii_text(row.get("caller_number"))
        if row["direction"] == "outgoing":
            return ascii_text(row.get("external_number") or row.get("dialled"))
        return ascii_text(row.get("dialled"))

    def condition_code(self, row: Mapping[str, Any]) -> str:
        """TR, FW, IN, the unanswered codes, or blank; docs/smdr.md has the table."""
        if row["disposition"] != "answered":
            return UNANSWERED_CODES.get(row["disposition"], "FL")
        if row.get("transferred_by"):
            return "TR"
        called, answered = row.get("called_extension"), row.get("answered_extension")
        offered = self.ring_groups.get(row.get("line") or "", frozenset())
        if called and answered and answered != called and answered not in offered:
            return "FW"
        return "IN" if row["direction"] == "incoming" else ""
