"""Call-accounting reports as plain data, for the CLI, scheduled delivery and the web UI.

Every report is ``REPORTS[kind].build(connection, filters, settings) -> Report`` (or
:func:`run_report`), on a read-only connection to the CDR database
(:func:`firmware.calls.cdr.open_readonly`). Nothing here prints, parses arguments or
knows about the web: exports (CSV, XLSX, PDF, text) live in ``exports.py``.

Why it is built this way:

* Sums are done by SQLite over integers (``cost_e4``) and converted to Decimal once, so
  a month of a busy office is one indexed range scan and money is exact.
* Detail reports (``calls``, ``incoming``, ``cross-site``, ``statement``) do not load
  their rows: ``Report.rows`` re-runs the query each time it is iterated and yields one
  tuple at a time, so a year of calls exports in constant memory.
* Each call belongs to exactly one extension (its *owner*: the caller of an outgoing
  or internal call, the answering, else the rung, extension of an incoming call), so
  the extension and department rows add up to the period's total.
* A report reads one snapshot: every query of a report stops at the highest row id seen
  when it was built, so calls written meanwhile cannot make rows disagree with totals.
* The period is a range of local dates of ``site.timezone``; days and hours are local
  too, computed in SQL from the UTC text with the offsets in force (daylight saving
  changes included), never with the server's own time zone.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.accounting.tariffs import money_from_e4, statement_totals
from firmware.calls.cdr import Direction, Disposition

__all__ = [
    "REPORTS",
    "Column",
    "ColumnKind",
    "Filters",
    "Report",
    "ReportError",
    "ReportKind",
    "ReportSettings",
    "StatementTotals",
    "run_report",
]

MINIMUM_SCHEMA_VERSION = 3
"""The CDR schema that has the accounting columns (account code, outside number, cost)."""


class ReportError(ValueError):
    """Filters, settings or database a report cannot work with; the message is for the user."""


class ColumnKind(StrEnum):
    """What a column's values are, so each export writes the right cell type.

    text: str or None; integer: int; money: Decimal or None (None = not rated, blank);
    datetime: aware datetime in the site's time zone; date: date; duration: whole
    seconds (int); percent: a fraction (Decimal, 0.25 = 25 %) or None.
    """

    TEXT = "text"
    INTEGER = "integer"
    MONEY = "money"
    DATETIME = "datetime"
    DATE = "date"
    DURATION = "duration"
    PERCENT = "percent"


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: ColumnKind
    places: int = 2
    """Money: the decimals kept and shown (4 for single calls, 2 for sums)."""
    width: int = 0
    """Text: the characters a typical value needs (layout hint for streamed reports)."""


@dataclass(frozen=True)
class StatementTotals:
    """What an invoice shows: net total rounded to the cent, VAT computed once on it, gross."""

    net: Decimal
    vat_percent: Decimal
    vat: Decimal
    gross: Decimal


@dataclass(frozen=True)
class Filters:
    """Which calls a report covers.

    ``start``..``end`` are local dates (both included). ``extensions`` and ``department``
    match the call's owner extension. ``number`` is a shell-style pattern (SQLite GLOB:
    ``*`` any digits, ``?`` one, ``[0-4]`` a range; ``[*]`` a literal star) matched
    against the number at the other end (the outside number dialled, without the access
    code; the caller's number of an incoming call; the digits of an internal call) and
    the DID an incoming call came in on. ``min_talk_s`` keeps calls with at least that
    much talk time (answer to hang-up). ``top`` is the length of the top-numbers list;
    ``other_site_database`` the CDR file of a sibling site for the cross-site report.
    """

    start: date
    end: date
    extensions: tuple[str, ...] = ()
    department: str | None = None
    directions: tuple[str, ...] = ()
    dispositions: tuple[str, ...] = ()
    min_talk_s: float = 0.0
    number: str | None = None
    account_code: str | None = None
    top: int | None = None
    other_site_database: Path | None = None

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ReportError(f"the period ends ({self.end}) before it starts ({self.start})")
        _check_choices("direction", self.directions, [str(d) for d in Direction])
        _check_choices("disposition", self.dispositions, [str(d) for d in Disposition])
        for number in self.extensions:
            if not number.strip():
                raise ReportError("an empty extension number was given")
        if self.min_talk_s < 0:
            raise ReportError(f"minimum talk time {self.min_talk_s} must not be negative")
        if self.number is not None and not re.fullmatch(r"[0-9*#+?\[\]^-]{1,32}", self.number):
            raise ReportError(
                f"number pattern {self.number!r} may use digits, + # and the wildcards * ? [ ]"
            )
        if self.top is not None and self.top < 1:
            raise ReportError(f"top {self.top}: ask for at least 1 number")

    def describe(self) -> tuple[str, ...]:
        """The filters in force, in words, for report headers."""
        parts = []
        if self.extensions:
            parts.append("extensions " + ", ".join(self.extensions))
        if self.department:
            parts.append(f"department {self.department}")
        if self.directions:
            parts.append("direction " + ", ".join(self.directions))
        if self.dispositions:
            parts.append("disposition " + ", ".join(self.dispositions))
        if self.min_talk_s:
            parts.append(f"talk time at least {self.min_talk_s:g} s")
        if self.number:
            parts.append(f"number {self.number}")
        if self.account_code is not None:
            parts.append(f"account {self.account_code}")
        return tuple(parts)


def _check_choices(name: str, given: Sequence[str], allowed: Sequence[str]) -> None:
    for value in given:
        if value not in allowed:
            raise ReportError(f"{name} {value!r} is unknown; use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class ReportSettings:
    """The configuration a report needs, so reports never see the whole Config."""

    site_name: str = "office"
    timezone: str = "UTC"
    currency: str = "EUR"
    vat_percent: Decimal = Decimal(0)
    decimals: int = 2
    departments: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    extension_names: Mapping[str, str] = field(default_factory=dict)
    top_numbers: int = 20

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ReportError(f"time zone {self.timezone!r} is unknown") from None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_config(cls, config: Any) -> ReportSettings:
        """Settings from a firmware.config.schema.Config."""
        accounting = config.accounting
        return cls(
            site_name=config.site.name,
            timezone=config.site.timezone,
            currency=accounting.currency,
            vat_percent=accounting.vat_percent,
            decimals=accounting.decimals,
            departments=dict(config.reports.departments),
            extension_names={e.number: e.name for e in config.extensions},
            top_numbers=config.reports.top_numbers,
        )


@dataclass
class Report:
    """A report ready to export: typed columns, rows, a totals row and money facts.

    ``rows`` yields tuples in column order; for detail reports it runs its query each
    time it is iterated (stream it, do not keep it). ``totals`` is aligned with the
    columns, its first cell a label; ``statement`` holds net, VAT and gross when the
    report is a statement. ``unrated_calls`` answered outgoing calls had no cost (blank
    cells, not in the totals); ``notes`` say so in words.
    """

    kind: str
    title: str
    site: str
    start: date
    end: date
    timezone: str
    filters: Filters
    columns: tuple[Column, ...]
    rows: Iterable[tuple[Any, ...]]
    totals: tuple[Any, ...] | None
    currency: str
    vat_percent: Decimal
    decimals: int
    """The currency's minor unit: the places of summed money (totals, group rows)."""
    calls: int
    statement: StatementTotals | None = None
    unrated_calls: int = 0
    notes: tuple[str, ...] = ()
    generated: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def streamed(self) -> bool:
        """True when rows come from a live query (unknown length until read)."""
        return isinstance(self.rows, _QueryRows)

    def column_index(self, key: str) -> int:
        for index, column in enumerate(self.columns):
            if column.key == key:
                return index
        raise KeyError(key)


# ---------------------------------------------------------------------------
# Money: the rules of docs/accounting.md (Rounding), from the tariff engine itself


def _round_half_up(value: Decimal, places: int = 2) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _statement_totals(net_e4: int, settings: ReportSettings) -> StatementTotals:
    """Net total rounded half up to the minor unit; VAT once on that rounded total, half up."""
    net, vat, gross = statement_totals(net_e4, settings)
    return StatementTotals(net=net, vat_percent=settings.vat_percent, vat=vat, gross=gross)


def _money(cost_e4: int | None, places: int = 2) -> Decimal | None:
    return None if cost_e4 is None else _round_half_up(money_from_e4(cost_e4), places)


def _seconds(value: float | None) -> int:
    """An average of whole seconds, rounded half up."""
    return 0 if value is None else int(value + 0.5)


# ---------------------------------------------------------------------------
# SQL building blocks

OWNER_SQL = (
    "(CASE WHEN direction = 'incoming' THEN coalesce(answered_extension, called_extension) "
    "ELSE caller_number END)"
)
"""The extension a call belongs to (see the module docstring)."""

FAR_NUMBER_SQL = (
    "(CASE WHEN direction = 'incoming' THEN caller_number "
    "ELSE coalesce(nullif(external_number, ''), dialled) END)"
)
"""The number at the other end: who called in, or what was called out."""

_NUMBER_MATCH_SQL = (
    f"({FAR_NUMBER_SQL} GLOB :number OR (direction = 'incoming' "
    "AND coalesce(external_number, '') GLOB :number))"
)
"""The number pattern: the number at the other end, or the DID an incoming call came in on."""

_IN_CURRENCY_SQL = "coalesce(currency, :currency) = :currency"
_COST_SQL = f"(CASE WHEN {_IN_CURRENCY_SQL} THEN cost_e4 END)"
# Stored times are whole milliseconds, so these offsets only absorb floating-point noise.
_TALK_SQL = "CAST(billable_s + 0.9995 AS INTEGER)"
"""Talk time in whole seconds rounded up, as billing starts from and as SMDR prints it."""
_RING_SQL = "CAST(duration_s - billable_s + 0.0005 AS INTEGER)"
"""Ring time (start to answer, or the whole call unanswered) in whole seconds rounded down."""

_TALLY_SQL = f"""
    count(*) AS calls,
    coalesce(sum(direction = 'outgoing'), 0) AS outgoing,
    coalesce(sum(direction = 'incoming'), 0) AS incoming,
    coalesce(sum(direction = 'internal'), 0) AS internal,
    coalesce(sum(disposition = 'answered'), 0) AS answered,
    coalesce(sum({_TALK_SQL}), 0) AS talk_s,
    sum({_COST_SQL}) AS cost_e4,
    coalesce(sum(cost_e4 IS NULL AND direction = 'outgoing' AND disposition = 'answered'), 0)
        AS unrated,
    coalesce(sum(cost_e4 IS NOT NULL AND NOT {_IN_CURRENCY_SQL}), 0) AS foreign_currency
"""


@dataclass
class _Tally:
    """Counts and sums of a group of calls; integers, so groups add up exactly."""

    calls: int = 0
    outgoing: int = 0
    incoming: int = 0
    internal: int = 0
    answered: int = 0
    talk_s: int = 0
    cost_e4: int | None = None
    unrated: int = 0
    foreign_currency: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> _Tally:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def __add__(self, other: _Tally) -> _Tally:
        cost = None
        if self.cost_e4 is not None or other.cost_e4 is not None:
            cost = (self.cost_e4 or 0) + (other.cost_e4 or 0)
        return _Tally(
            calls=self.calls + other.calls,
            outgoing=self.outgoing + other.outgoing,
            incoming=self.incoming + other.incoming,
            internal=self.internal + other.internal,
            answered=self.answered + other.answered,
            talk_s=self.talk_s + other.talk_s,
            cost_e4=cost,
            unrated=self.unrated + other.unrated,
            foreign_currency=self.foreign_currency + other.foreign_currency,
        )

    def __sub__(self, other: _Tally) -> _Tally:
        cost = None
        if self.cost_e4 is not None:
            cost = self.cost_e4 - (other.cost_e4 or 0)
        return _Tally(
            calls=self.calls - other.calls,
            outgoing=self.outgoing - other.outgoing,
            incoming=self.incoming - other.incoming,
            internal=self.internal - other.internal,
            answered=self.answered - other.answered,
            talk_s=self.talk_s - other.talk_s,
            cost_e4=cost,
            unrated=self.unrated - other.unrated,
            foreign_currency=self.foreign_currency - other.foreign_currency,
        )

    @property
    def average_talk_s(self) -> int | None:
        return _seconds(self.talk_s / self.answered) if self.answered else None


def _format_utc(value: datetime) -> str:
    """The cdr table's time text, so bounds compare as text against start_utc."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), zone).astimezone(UTC)


def _offset_segments(
    lower: datetime, upper: datetime, zone: ZoneInfo
) -> list[tuple[datetime, int]]:
    """[(from_utc, offset_s)]: the zone's UTC offsets over lower..upper, each from its change."""

    def offset(moment: datetime) -> int:
        delta = moment.astimezone(zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    segments = [(lower, offset(lower))]
    step = timedelta(hours=6)
    previous = lower
    while previous < upper:
        following = min(previous + step, upper)
        if offset(following) != segments[-1][1]:
            low, high = previous, following  # offset(low) is the old one, offset(high) the new
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if offset(middle) == segments[-1][1]:
                    low = middle
                else:
                    high = middle
            segments.append((high.replace(microsecond=0), offset(following)))
        previous = following
    return segments


class _Query:
    """The WHERE clause and named parameters of one report, built from its filters."""

    def __init__(
        self, connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
    ) -> None:
        self.connection = connection
        self.filters = filters
        self.settings = settings
        zone = settings.zone
        self.lower_utc = _local_midnight_utc(filters.start, zone)
        self.upper_utc = _local_midnight_utc(filters.end + timedelta(days=1), zone)
        self.params: dict[str, Any] = {
            "lower": _format_utc(self.lower_utc),
            "upper": _format_utc(self.upper_utc),
            "currency": settings.currency,
            "last_id": _last_id(connection),
        }
        self.clauses = ["start_utc >= :lower", "start_utc < :upper", "id <= :last_id"]
        if filters.extensions:
            self.clauses.append(f"{OWNER_SQL} IN ({self._names('extension', filters.extensions)})")
        if filters.department is not None:
            members = settings.departments.get(filters.department)
            if members is None:
                known = ", ".join(sorted(settings.departments)) or "none are configured"
                raise ReportError(f"department {filters.department!r} is unknown ({known})")
            self.clauses.append(f"{OWNER_SQL} IN ({self._names('member', members)})")
        if filters.directions:
            self.clauses.append(f"direction IN ({self._names('direction', filters.directions)})")
        if filters.dispositions:
            names = self._names("disposition", filters.dispositions)
            self.clauses.append(f"disposition IN ({names})")
        if filters.min_talk_s:
            self.params["min_talk"] = filters.min_talk_s
            self.clauses.append("billable_s >= :min_talk")
        if filters.number is not None:
            self.params["number"] = filters.number
            self.clauses.append(_NUMBER_MATCH_SQL)
        if filters.account_code is not None:
            self.params["account"] = filters.account_code
            self.clauses.append("account_code = :account")

    def _names(self, prefix: str, values: Sequence[str]) -> str:
        names = []
        for index, value in enumerate(values):
            name = f"{prefix}{index}"
            self.params[name] = value
            names.append(f":{name}")
        return ", ".join(names)

    def where(self, *extra: str) -> str:
        return " AND ".join((*self.clauses, *extra))

    def local_time_sql(self, function: str = "datetime", column: str = "start_utc") -> str:
        """SQL giving `column` in local time through `function` (datetime, date, or strftime)."""
        segments = _offset_segments(self.lower_utc, self.upper_utc, self.settings.zone)
        parts = []
        for index, (since, offset) in enumerate(segments[1:], start=1):
            self.params[f"since{index}"] = _format_utc(since)
            parts.append(f"WHEN {column} >= :since{index} THEN {offset}")
        offset_sql = f"(CASE {' '.join(reversed(parts))} ELSE {segments[0][1]} END)"
        if not parts:
            offset_sql = str(segments[0][1])
        head = "strftime('%H', " if function == "hour" else f"{function}("
        return f"{head}substr({column}, 1, 19), {offset_sql} || ' seconds')"

    def tally(self, *extra: str) -> _Tally:
        sql = f"SELECT {_TALLY_SQL} FROM cdr WHERE {self.where(*extra)}"
        return _Tally.from_row(self.connection.execute(sql, self.params).fetchone())

    def grouped(self, key_sql: str, *extra: str, order: str = "key") -> list[tuple[Any, _Tally]]:
        sql = (
            f"SELECT {key_sql} AS key, {_TALLY_SQL} FROM cdr WHERE {self.where(*extra)} "
            f"GROUP BY key ORDER BY {order}"
        )
        return [
            (row["key"], _Tally.from_row(row)) for row in self.connection.execute(sql, self.params)
        ]


def _last_id(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT coalesce(max(id), 0) FROM cdr").fetchone()[0]


class _QueryRows:
    """Rows of a detail report: the query runs on each iteration and streams its result."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        sql: str,
        params: Mapping[str, Any],
        convert: Callable[[Sequence[Any]], tuple[Any, ...]],
    ) -> None:
        self.connection = connection
        self.sql = sql
        self.params = dict(params)
        self.convert = convert

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        cursor = self.connection.cursor()
        cursor.row_factory = None  # plain tuples: the converters index by position
        cursor.execute(self.sql, self.params)
        try:
            for row in cursor:
                yield self.convert(row)
        finally:
            cursor.close()


def _check_schema(connection: sqlite3.Connection, schema: str = "main") -> None:
    version = connection.execute(f"PRAGMA {schema}.user_version").fetchone()[0]
    if version < MINIMUM_SCHEMA_VERSION:
        raise ReportError(
            f"the CDR database has schema version {version}; reports need version "
            f"{MINIMUM_SCHEMA_VERSION} or later (start the appliance once to migrate it)"
        )


# ---------------------------------------------------------------------------
# Columns and rows shared by the grouped reports


def _int(key: str, title: str) -> Column:
    return Column(key, title, ColumnKind.INTEGER)


_TEXT_WIDTHS = {
    "caller_number": 14,
    "number": 14,
    "external_number": 14,
    "dialled": 14,
    "caller_name": 18,
    "name": 18,
    "members": 18,
    "correlation_id": 16,
    "disposition": 10,
    "other_disposition": 10,
    "dest_class": 9,
    "direction": 8,
    "line": 8,
    "line_group": 8,
    "account_code": 8,
}


def _text(key: str, title: str) -> Column:
    return Column(key, title, ColumnKind.TEXT, width=_TEXT_WIDTHS.get(key, 5))


def _duration(key: str, title: str) -> Column:
    return Column(key, title, ColumnKind.DURATION)


def _cost(settings: ReportSettings, places: int | None = None) -> Column:
    """Net cost: single calls keep the stored 4 decimals, sums the currency's minor unit."""
    kept = settings.decimals if places is None else places
    return Column("cost", f"Cost {settings.currency} (net)", ColumnKind.MONEY, kept)


_MEASURE_COLUMNS: dict[str, Callable[[ReportSettings], Column]] = {
    "calls": lambda _: _int("calls", "Calls"),
    "outgoing": lambda _: _int("outgoing", "Outgoing"),
    "incoming": lambda _: _int("incoming", "Incoming"),
    "internal": lambda _: _int("internal", "Internal"),
    "answered": lambda _: _int("answered", "Answered"),
    "talk_s": lambda _: _duration("talk_s", "Talk time"),
    "average_talk_s": lambda _: _duration("average_talk_s", "Average talk"),
    "cost": _cost,
    "unrated": lambda _: _int("unrated", "Unrated"),
}


def _measure_value(tally: _Tally, key: str, settings: ReportSettings) -> Any:
    if key == "cost":
        return _money(tally.cost_e4, settings.decimals)
    return getattr(tally, key)


def _tally_totals(
    tally: _Tally,
    label: str,
    keys: Sequence[Column],
    measures: Sequence[str],
    settings: ReportSettings,
) -> tuple[Any, ...]:
    """A totals row: the label first, then each measure; key columns after the first blank."""
    cells: list[Any] = [label, *([None] * (len(keys) - 1))]
    cells += [_measure_value(tally, key, settings) for key in measures]
    return tuple(cells)


def _notes(tally: _Tally, settings: ReportSettings) -> tuple[str, ...]:
    notes = []
    if tally.unrated:
        notes.append(
            f"{tally.unrated} answered outgoing call(s) have no cost (not rated): "
            "blank in the cost column, not in the totals"
        )
    if tally.foreign_currency:
        notes.append(
            f"{tally.foreign_currency} call(s) rated in another currency than "
            f"{settings.currency} are left out of the cost figures"
        )
    return tuple(notes)


@dataclass(frozen=True)
class _Trailing:
    """Columns after the measures, with their cells for each group and for the totals."""

    columns: tuple[Column, ...]
    cells: Sequence[tuple[Any, ...]]
    totals: tuple[Any, ...]


def _grouped_report(
    kind: str,
    title: str,
    filters: Filters,
    settings: ReportSettings,
    key_columns: Sequence[Column],
    measures: Sequence[str],
    groups: Sequence[tuple[tuple[Any, ...], _Tally]],
    total: _Tally | None = None,
    trailing: _Trailing | None = None,
) -> Report:
    """A report with one row per group: its key cells, the chosen measures, any trailing."""
    if total is None:
        total = sum((tally for _, tally in groups), _Tally())
    if trailing is None:
        trailing = _Trailing((), [()] * len(groups), ())
    columns = (
        *key_columns,
        *(_MEASURE_COLUMNS[key](settings) for key in measures),
        *trailing.columns,
    )
    rows = [
        (*keys, *(_measure_value(tally, key, settings) for key in measures), *after)
        for (keys, tally), after in zip(groups, trailing.cells, strict=True)
    ]
    totals = (*_tally_totals(total, "Total", key_columns, measures, settings), *trailing.totals)
    return _report(
        kind, title, filters, settings, columns, rows, totals, total, _notes(total, settings)
    )


def _report(
    kind: str,
    title: str,
    filters: Filters,
    settings: ReportSettings,
    columns: Sequence[Column],
    rows: Iterable[tuple[Any, ...]],
    totals: tuple[Any, ...] | None,
    total: _Tally,
    notes: Sequence[str],
    statement: StatementTotals | None = None,
) -> Report:
    return Report(
        kind=kind,
        title=title,
        site=settings.site_name,
        start=filters.start,
        end=filters.end,
        timezone=settings.timezone,
        filters=filters,
        columns=tuple(columns),
        rows=rows,
        totals=totals,
        currency=settings.currency,
        vat_percent=settings.vat_percent,
        decimals=settings.decimals,
        calls=total.calls,
        statement=statement,
        unrated_calls=total.unrated,
        notes=tuple(notes),
    )


def _extension_order(number: str | None) -> tuple[int, int, str]:
    """Unknown last, then short numbers before long ones, then as text ("99" before "201")."""
    return (1, 0, "") if number is None else (0, len(number), number)


# ---------------------------------------------------------------------------
# Grouped reports

_SUMMARY = ("calls", "outgoing", "incoming", "internal", "answered", "talk_s", "cost", "unrated")


def extension_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """One row per extension (the owner of each call), with its cost."""
    query = _Query(connection, filters, settings)
    groups = sorted(query.grouped(OWNER_SQL), key=lambda item: _extension_order(item[0]))
    return _grouped_report(
        "extension",
        "Calls by extension",
        filters,
        settings,
        (_text("extension", "Extension"), _text("name", "Name")),
        _SUMMARY,
        [
            ((number or "(none)", settings.extension_names.get(number or "", "")), tally)
            for number, tally in groups
        ],
    )


def department_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """One row per department; extensions in none are gathered under "(no department)"."""
    query = _Query(connection, filters, settings)
    department_of = {
        number: name for name, members in settings.departments.items() for number in members
    }
    tallies: dict[str, _Tally] = {name: _Tally() for name in settings.departments}
    if filters.department is not None:
        tallies = {filters.department: _Tally()}
    unassigned = _Tally()
    for number, tally in query.grouped(OWNER_SQL):
        name = department_of.get(number or "")
        if name is None:
            unassigned += tally
        else:
            tallies[name] += tally
    groups = [
        ((name, ", ".join(settings.departments[name])), tally)
        for name, tally in sorted(tallies.items())
    ]
    if unassigned.calls:
        groups.append((("(no department)", ""), unassigned))
    return _grouped_report(
        "department",
        "Calls by department",
        filters,
        settings,
        (_text("department", "Department"), _text("members", "Extensions")),
        _SUMMARY,
        groups,
    )


def line_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """One row per outside line or trunk (calls that used one)."""
    query = _Query(connection, filters, settings)
    sql = (
        f"SELECT line, coalesce(line_group, '') AS line_group, {_TALLY_SQL} FROM cdr "
        f"WHERE {query.where('line IS NOT NULL')} GROUP BY line, line_group "
        "ORDER BY line, line_group"
    )
    groups = [
        ((row["line"], row["line_group"]), _Tally.from_row(row))
        for row in connection.execute(sql, query.params)
    ]
    return _grouped_report(
        "line",
        "Calls by line or trunk",
        filters,
        settings,
        (_text("line", "Line"), _text("line_group", "Line group")),
        ("calls", "outgoing", "incoming", "answered", "talk_s", "cost", "unrated"),
        groups,
    )


def class_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """One row per tariff destination class, with its share of the cost."""
    query = _Query(connection, filters, settings)
    groups = query.grouped("coalesce(dest_class, '')", order="key = '', key")
    total = sum((tally for _, tally in groups), _Tally())
    return _grouped_report(
        "class",
        "Calls by destination class",
        filters,
        settings,
        (_text("dest_class", "Destination class"),),
        ("calls", "answered", "talk_s", "average_talk_s", "cost", "unrated"),
        [((key or "(no class)",), tally) for key, tally in groups],
        total,
        _Trailing(
            (Column("share", "Share of cost", ColumnKind.PERCENT),),
            [(_share(tally.cost_e4, total.cost_e4),) for _, tally in groups],
            (_share(total.cost_e4, total.cost_e4),),
        ),
    )


def _share(part: int | None, whole: int | None) -> Decimal | None:
    if part is None or not whole:
        return None
    return _round_half_up(Decimal(part) / Decimal(whole), 4)


def account_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """One row per account code; calls without one are gathered under "(no code)"."""
    query = _Query(connection, filters, settings)
    groups = query.grouped("account_code", order="key IS NULL, key")
    return _grouped_report(
        "account",
        "Calls by account code",
        filters,
        settings,
        (_text("account_code", "Account code"),),
        ("calls", "outgoing", "incoming", "answered", "talk_s", "cost", "unrated"),
        [((key if key is not None else "(no code)",), tally) for key, tally in groups],
    )


def top_numbers_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """The outside numbers called (or calling) most, then one row for all the others."""
    query = _Query(connection, filters, settings)
    limit = filters.top or settings.top_numbers
    outside = "direction != 'internal'"
    query.params["limit"] = limit
    sql = (
        f"SELECT {FAR_NUMBER_SQL} AS key, max(start_utc) AS last_utc, {_TALLY_SQL} FROM cdr "
        f"WHERE {query.where(outside)} GROUP BY key "
        "ORDER BY calls DESC, talk_s DESC, key LIMIT :limit"
    )
    top = [
        (row["key"], row["last_utc"], _Tally.from_row(row))
        for row in connection.execute(sql, query.params)
    ]
    total = query.tally(outside)
    distinct = connection.execute(
        f"SELECT count(DISTINCT {FAR_NUMBER_SQL}) FROM cdr WHERE {query.where(outside)}",
        query.params,
    ).fetchone()[0]
    zone = settings.zone
    groups: list[tuple[tuple[Any, ...], _Tally]] = [
        ((rank, number), tally) for rank, (number, _, tally) in enumerate(top, start=1)
    ]
    last_calls: list[tuple[Any, ...]] = [(_parse_utc(last).astimezone(zone),) for _, last, _ in top]
    if distinct > len(top):
        others = total - sum((tally for _, _, tally in top), _Tally())
        groups.append(((None, f"({distinct - len(top)} other numbers)"), others))
        last_calls.append((None,))
    return _grouped_report(
        "top-numbers",
        f"Top {limit} outside numbers",
        filters,
        settings,
        (_int("rank", "Rank"), _text("number", "Number")),
        ("calls", "answered", "talk_s", "cost"),
        groups,
        total,
        _Trailing((Column("last_call", "Last call", ColumnKind.DATETIME),), last_calls, (None,)),
    )


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def daily_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """One row per local day of the period, days without calls included."""
    query = _Query(connection, filters, settings)
    found = dict(query.grouped(query.local_time_sql("date")))
    groups = []
    day = filters.start
    while day <= filters.end:
        groups.append(((day, _WEEKDAYS[day.weekday()]), found.get(day.isoformat(), _Tally())))
        day += timedelta(days=1)
    return _grouped_report(
        "daily",
        "Calls by day",
        filters,
        settings,
        (Column("day", "Day", ColumnKind.DATE), _text("weekday", "Weekday")),
        ("calls", "outgoing", "incoming", "internal", "answered", "talk_s", "cost"),
        groups,
    )


def hourly_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """One row per local hour of the day (0-23) over the whole period."""
    query = _Query(connection, filters, settings)
    found = dict(query.grouped(query.local_time_sql("hour")))
    groups = [((f"{hour:02d}:00",), found.get(f"{hour:02d}", _Tally())) for hour in range(24)]
    return _grouped_report(
        "hourly",
        "Calls by hour of day",
        filters,
        settings,
        (_text("hour", "Hour"),),
        ("calls", "outgoing", "incoming", "internal", "answered", "talk_s", "cost"),
        groups,
    )


def incoming_summary_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """Incoming calls per extension rung: answered there or elsewhere, missed, ring times."""
    query = _Query(connection, filters, settings)
    sql = f"""
        SELECT called_extension AS key,
            count(*) AS calls,
            coalesce(sum(disposition = 'answered'), 0) AS answered,
            coalesce(sum(answered_extension = called_extension), 0) AS answered_here,
            coalesce(sum(disposition = 'answered'
                AND answered_extension IS NOT called_extension), 0) AS answered_elsewhere,
            coalesce(sum(transferred_by IS NOT NULL), 0) AS transferred,
            avg(CASE WHEN disposition = 'answered' THEN {_RING_SQL} END) AS average_ring_s,
            max({_RING_SQL}) AS longest_ring_s,
            coalesce(sum({_TALK_SQL}), 0) AS talk_s
        FROM cdr WHERE {query.where("direction = 'incoming'")}
        GROUP BY key
    """
    found = sorted(
        connection.execute(sql, query.params).fetchall(),
        key=lambda row: _extension_order(row["key"]),
    )
    columns = (
        _text("extension", "Extension rung"),
        _text("name", "Name"),
        _int("calls", "Calls"),
        _int("answered", "Answered"),
        _int("answered_here", "Answered there"),
        _int("answered_elsewhere", "Answered elsewhere"),
        _int("unanswered", "Unanswered"),
        Column("answer_rate", "Answer rate", ColumnKind.PERCENT),
        _int("transferred", "Transferred"),
        _duration("average_ring_s", "Average ring"),
        _duration("longest_ring_s", "Longest ring"),
        _duration("talk_s", "Talk time"),
    )
    sums = dict.fromkeys(
        ("calls", "answered", "answered_here", "answered_elsewhere", "transferred"), 0
    )
    talk, longest, ring_sum = 0, 0, 0.0
    rows = []
    for row in found:
        for key in sums:
            sums[key] += row[key]
        talk += row["talk_s"]
        longest = max(longest, row["longest_ring_s"] or 0)
        ring_sum += (row["average_ring_s"] or 0.0) * row["answered"]
        number = row["key"]
        rows.append(
            (
                number or "(not routed)",
                settings.extension_names.get(number or "", ""),
                row["calls"],
                row["answered"],
                row["answered_here"],
                row["answered_elsewhere"],
                row["calls"] - row["answered"],
                _share(row["answered"], row["calls"]),
                row["transferred"],
                None if row["average_ring_s"] is None else _seconds(row["average_ring_s"]),
                row["longest_ring_s"],
                row["talk_s"],
            )
        )
    totals = (
        "Total",
        None,
        sums["calls"],
        sums["answered"],
        sums["answered_here"],
        sums["answered_elsewhere"],
        sums["calls"] - sums["answered"],
        _share(sums["answered"], sums["calls"]),
        sums["transferred"],
        _seconds(ring_sum / sums["answered"]) if sums["answered"] else None,
        longest,
        talk,
    )
    total = _Tally(calls=sums["calls"], answered=sums["answered"], talk_s=talk)
    return _report(
        "incoming-summary",
        "Incoming calls by extension rung",
        filters,
        settings,
        columns,
        rows,
        totals,
        total,
        (),
    )


# ---------------------------------------------------------------------------
# Detail reports (streamed)


def _total_label(calls: int) -> str:
    return f"Total: {calls} call" + ("" if calls == 1 else "s")


def _local_datetime(zone: ZoneInfo) -> Callable[[str], datetime]:
    def convert(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=zone)

    return convert


def _detail_report(
    kind: str,
    title: str,
    query: _Query,
    columns: Sequence[Column],
    select: Sequence[str],
    convert: Callable[[Sequence[Any]], tuple[Any, ...]],
    extra: Sequence[str] = (),
    statement: bool = False,
) -> Report:
    """Totals from one aggregate query, rows streamed by another over the same calls."""
    filters, settings = query.filters, query.settings
    total = query.tally(*extra)
    sql = f"SELECT {', '.join(select)} FROM cdr WHERE {query.where(*extra)} ORDER BY start_utc, id"
    rows = _QueryRows(query.connection, sql, query.params, convert)
    totals: list[Any] = [_total_label(total.calls), *([None] * (len(columns) - 1))]
    keys = [column.key for column in columns]
    if "talk_s" in keys:
        totals[keys.index("talk_s")] = total.talk_s
    if "cost" in keys:
        totals[keys.index("cost")] = _money(total.cost_e4, settings.decimals)
    totals_statement = _statement_totals(total.cost_e4 or 0, settings) if statement else None
    return _report(
        kind,
        title,
        filters,
        settings,
        columns,
        rows,
        tuple(totals),
        total,
        _notes(total, settings),
        totals_statement,
    )


def calls_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """Every call: its extension, the number at the other end, line, code, class, times, cost.

    The caller's name is shown for incoming calls only (for the others it is the
    extension's own name); who was rung and who answered are in the incoming report.
    """
    query = _Query(connection, filters, settings)
    local = _local_datetime(settings.zone)
    columns = (
        Column("start", "Start", ColumnKind.DATETIME),
        _text("direction", "Direction"),
        _text("extension", "Extension"),
        _text("number", "Number"),
        _text("caller_name", "Caller name"),
        _text("transferred_by", "Transferred by"),
        _text("line", "Line"),
        _text("account_code", "Account"),
        _text("dest_class", "Class"),
        _text("disposition", "Disposition"),
        _duration("ring_s", "Ring time"),
        _duration("talk_s", "Talk time"),
        _cost(settings, 4),
    )
    select = (
        f"{query.local_time_sql()} AS local_start",
        "direction",
        f"{OWNER_SQL} AS owner",
        f"{FAR_NUMBER_SQL} AS number",
        "CASE WHEN direction = 'incoming' THEN caller_name END AS caller_name",
        "transferred_by",
        "line",
        "account_code",
        "dest_class",
        "disposition",
        f"{_RING_SQL} AS ring_s",
        f"{_TALK_SQL} AS talk_s",
        f"{_COST_SQL} AS cost_e4",
    )

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        cost = row[12]
        return (
            local(row[0]),
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
            row[11],
            None if cost is None else money_from_e4(cost),
        )

    return _detail_report("calls", "Call list", query, columns, select, convert)


def incoming_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """Every incoming call: who called, which number, who it rang, who answered, transfers."""
    query = _Query(connection, filters, settings)
    local = _local_datetime(settings.zone)
    columns = (
        Column("start", "Start", ColumnKind.DATETIME),
        _text("caller_number", "Caller"),
        _text("caller_name", "Caller name"),
        _text("external_number", "Number called"),
        _text("line", "Line"),
        _text("called_extension", "Rang"),
        _text("answered_extension", "Answered by"),
        _text("transferred_by", "Transferred by"),
        _text("disposition", "Disposition"),
        _duration("ring_s", "Ring time"),
        _duration("talk_s", "Talk time"),
    )
    select = (
        f"{query.local_time_sql()} AS local_start",
        "caller_number",
        "caller_name",
        "external_number",
        "line",
        "called_extension",
        "answered_extension",
        "transferred_by",
        "disposition",
        f"{_RING_SQL} AS ring_s",
        f"{_TALK_SQL} AS talk_s",
    )

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        return (local(row[0]), *tuple(row)[1:9], row[9], row[10])

    incoming = "direction = 'incoming'"
    report = _detail_report(
        "incoming", "Incoming calls", query, columns, select, convert, (incoming,)
    )
    answered = query.tally(incoming).answered
    report.notes = (*report.notes, f"{answered} of {report.calls} incoming calls were answered")
    return report


def cross_site_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """Calls that crossed to or from a sibling site, joined to its record by correlation id.

    With ``filters.other_site_database`` the sibling's CDR file is attached read-only and
    each call shows what the other site recorded (its first record with the same id).
    """
    query = _Query(connection, filters, settings)
    local = _local_datetime(settings.zone)
    columns = [
        Column("start", "Start", ColumnKind.DATETIME),
        _text("correlation_id", "Correlation id"),
        _text("direction", "Direction"),
        _text("caller_number", "Caller"),
        _text("dialled", "Dialled"),
        _text("answered_extension", "Answered by"),
        _text("disposition", "Disposition"),
        _duration("talk_s", "Talk time"),
        _cost(settings, 4),
    ]
    select = (
        f"{query.local_time_sql()} AS local_start",
        "correlation_id",
        "direction",
        "caller_number",
        "dialled",
        "answered_extension",
        "disposition",
        f"{_TALK_SQL} AS talk_s",
        f"{_COST_SQL} AS cost_e4",
        "start_utc AS sort_start",
        "id AS sort_id",
    )
    crossed = "correlation_id != ''"
    joined = filters.other_site_database is not None

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        cost = row[8]
        cells = (
            local(row[0]),
            *tuple(row)[1:7],
            row[7],
            None if cost is None else money_from_e4(cost),
        )
        if joined:
            # After the 11 columns of "here": site, answered, disposition, talk there.
            other_talk = row[14]
            cells += (
                row[11],
                row[12],
                row[13],
                other_talk,
            )
        return cells

    report = _detail_report(
        "cross-site", "Calls between sites", query, columns, select, convert, (crossed,)
    )
    if not joined:
        return report
    _attach_other_site(connection, Path(str(filters.other_site_database)))
    report.columns = (
        *report.columns,
        _text("other_site", "Other site"),
        _text("other_answered", "Answered there"),
        _text("other_disposition", "Disposition there"),
        _duration("other_talk_s", "Talk time there"),
    )
    report.totals = (*(report.totals or ()), None, None, None, None)
    joined_sql = (
        f"FROM (SELECT {', '.join(select)} FROM cdr WHERE {query.where(crossed)}) AS here "
        "LEFT JOIN other_site.cdr AS there ON there.id = (SELECT min(id) FROM other_site.cdr "
        "WHERE correlation_id = here.correlation_id AND correlation_id != '')"
    )
    assert isinstance(report.rows, _QueryRows)
    report.rows.sql = (
        "SELECT here.*, there.site AS other_site, there.answered_extension AS other_answered, "
        "there.disposition AS other_disposition, "
        f"{_TALK_SQL.replace('billable_s', 'there.billable_s')} AS other_talk_s "
        f"{joined_sql} ORDER BY here.sort_start, here.sort_id"
    )
    matched = connection.execute(f"SELECT count(there.id) {joined_sql}", query.params).fetchone()[0]
    unmatched = report.calls - matched
    report.notes = (
        *report.notes,
        f"{matched} call(s) found in the other site's records"
        + (f", {unmatched} not found there" if unmatched else ""),
    )
    return report


def _attach_other_site(connection: sqlite3.Connection, path: Path) -> None:
    if not path.is_file():
        raise ReportError(f"the other site's CDR database {path} does not exist")
    attached = {row[1] for row in connection.execute("PRAGMA database_list")}
    if "other_site" in attached:
        connection.execute("DETACH DATABASE other_site")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        connection.execute("ATTACH DATABASE ? AS other_site", (uri,))
        _check_schema(connection, "other_site")
    except sqlite3.DatabaseError as error:
        raise ReportError(f"cannot read the other site's CDR database {path}: {error}") from None


def statement_report(
    connection: sqlite3.Connection, filters: Filters, settings: ReportSettings
) -> Report:
    """The chargeable calls of one extension, department or account, with net, VAT and gross.

    Lists answered outgoing calls and any other call that carries a cost.
    """
    if len(filters.extensions) > 1:
        raise ReportError("a statement is for one extension: give a single --ext")
    if not (filters.extensions or filters.department or filters.account_code is not None):
        raise ReportError("a statement needs one extension, a department or an account code")
    query = _Query(connection, filters, settings)
    local = _local_datetime(settings.zone)
    if filters.extensions:
        number = filters.extensions[0]
        name = settings.extension_names.get(number, "")
        title = f"Statement for extension {number}" + (f" ({name})" if name else "")
    elif filters.department:
        title = f"Statement for department {filters.department}"
    else:
        title = f"Statement for account {filters.account_code}"
    columns = (
        Column("start", "Date and time", ColumnKind.DATETIME),
        _text("extension", "Extension"),
        _text("number", "Number"),
        _text("dest_class", "Class"),
        _text("account_code", "Account"),
        _duration("talk_s", "Talk time"),
        _cost(settings, 4),
    )
    select = (
        f"{query.local_time_sql()} AS local_start",
        f"{OWNER_SQL} AS owner",
        f"{FAR_NUMBER_SQL} AS number",
        "dest_class",
        "account_code",
        f"{_TALK_SQL} AS talk_s",
        f"{_COST_SQL} AS cost_e4",
    )

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        cost = row[6]
        return (
            local(row[0]),
            *tuple(row)[1:5],
            row[5],
            None if cost is None else money_from_e4(cost),
        )

    chargeable = (
        "((direction = 'outgoing' AND disposition = 'answered') OR coalesce(cost_e4, 0) != 0)"
    )
    return _detail_report(
        "statement", title, query, columns, select, convert, (chargeable,), statement=True
    )


# ---------------------------------------------------------------------------
# Registry

Builder = Callable[[sqlite3.Connection, Filters, ReportSettings], Report]


@dataclass(frozen=True)
class ReportKind:
    name: str
    build: Builder
    summary: str
    streamed: bool = False


REPORTS: dict[str, ReportKind] = {
    kind.name: kind
    for kind in (
        ReportKind("extension", extension_report, "calls and cost per extension"),
        ReportKind("department", department_report, "calls and cost per department"),
        ReportKind("line", line_report, "calls and cost per outside line or trunk"),
        ReportKind("class", class_report, "calls and cost per destination class"),
        ReportKind("account", account_report, "calls and cost per account code"),
        ReportKind("top-numbers", top_numbers_report, "the outside numbers called most"),
        ReportKind("daily", daily_report, "calls per local day"),
        ReportKind("hourly", hourly_report, "calls per local hour of the day"),
        ReportKind(
            "incoming-summary", incoming_summary_report, "incoming calls per extension rung"
        ),
        ReportKind("incoming", incoming_report, "incoming calls, who answered, transfers", True),
        ReportKind("cross-site", cross_site_report, "calls between sites (correlation id)", True),
        ReportKind("calls", calls_report, "every call (detail list)", True),
        ReportKind("statement", statement_report, "chargeable calls with net, VAT, gross", True),
    )
}


def run_report(
    connection: sqlite3.Connection, kind: str, filters: Filters, settings: ReportSettings
) -> Report:
    """Build the report `kind`; ReportError for an unknown kind or unusable filters."""
    entry = REPORTS.get(kind)
    if entry is None:
        raise ReportError(f"report {kind!r} is unknown; choose one of {', '.join(REPORTS)}")
    _check_schema(connection)
    return entry.build(connection, filters, settings)
