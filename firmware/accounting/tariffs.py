"""Pure pricing: number normalisation, longest-prefix classes, increments, bands, tiers, money.

Nothing here touches a database or a clock: `TariffBook` is compiled once from an
`[accounting]` config and answers "which tariff, which class, what price" for plain values,
so every rule is tested with hand-computed figures (docs/accounting.md states them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from firmware.accounting.tariff_csv import RateRow, parse_increments
from firmware.config.accounting_schema import (
    WEEKDAYS,
    AccountingConfig,
    ClassPriceConfig,
    TariffConfig,
)
from firmware.modes.public_holidays import HolidayCalendar

__all__ = [
    "E4",
    "Band",
    "Destination",
    "Pricing",
    "Tariff",
    "TariffBook",
    "billed_seconds",
    "call_price",
    "money_from_e4",
    "statement_totals",
    "tier_price",
    "to_e4",
]

Band = Literal["peak", "offpeak", "weekend"]
E4 = Decimal("0.0001")
"""Each call's net cost is kept to four decimals (half up): the cost_e4 resolution."""
FREE_CLASSES = ("internal", "sibling")
"""Classes given by the call, not by a prefix; free unless the tariff prices them."""


@dataclass(frozen=True)
class Pricing:
    """The prices of one class (or of one prefix row that overrides its class's)."""

    connection_fee: Decimal = Decimal(0)
    per_minute: Decimal = Decimal(0)
    per_minute_offpeak: Decimal = Decimal(0)
    per_minute_weekend: Decimal = Decimal(0)
    first_s: int = 60
    next_s: int = 60
    minimum: Decimal = Decimal(0)
    tiers: tuple[tuple[int, Decimal], ...] = ()
    tier_mode: Literal["per_call", "volume"] = "per_call"
    direction: Literal["outgoing", "incoming"] = "outgoing"

    @property
    def is_free(self) -> bool:
        """No band, fee, minimum or tier can ever charge anything."""
        return not any(
            (self.connection_fee, self.per_minute, self.per_minute_offpeak,
             self.per_minute_weekend, self.minimum, *(price for _, price in self.tiers))
        )  # fmt: skip

    def per_minute_in(self, band: Band) -> Decimal:
        if band == "peak":
            return self.per_minute
        if band == "offpeak":
            return self.per_minute_offpeak
        return self.per_minute_weekend


FREE = Pricing()


@dataclass(frozen=True)
class Destination:
    """A classified call: its class, the prices that apply, and the prefix row if any."""

    dest_class: str
    pricing: Pricing
    row: RateRow | None = None


def _pricing(spec: ClassPriceConfig | None, tariff: TariffConfig, row: RateRow | None) -> Pricing:
    """A class's prices with a row's overrides on top; an undefined class starts from zero."""
    values: dict[str, Any] = {}
    if spec is not None:
        values = {
            "connection_fee": spec.connection_fee,
            "per_minute": spec.per_minute,
            "per_minute_offpeak": spec.per_minute_offpeak,
            "per_minute_weekend": spec.per_minute_weekend,
            "increments": parse_increments(spec.increments or tariff.increments),
            "minimum": spec.minimum,
        }
    else:
        values = {"increments": parse_increments(tariff.increments)}
    if row is not None:
        values.update(row.overrides)
    per_minute = values.get("per_minute") or Decimal(0)
    offpeak = values.get("per_minute_offpeak")
    offpeak = per_minute if offpeak is None else offpeak
    weekend = values.get("per_minute_weekend")
    weekend = offpeak if weekend is None else weekend
    first_s, next_s = values["increments"]
    return Pricing(
        connection_fee=values.get("connection_fee") or Decimal(0),
        per_minute=per_minute,
        per_minute_offpeak=offpeak,
        per_minute_weekend=weekend,
        first_s=first_s,
        next_s=next_s,
        minimum=values.get("minimum") or Decimal(0),
        tiers=tuple((tier.from_call, tier.price) for tier in spec.tiers) if spec else (),
        tier_mode=spec.tier_mode if spec else "per_call",
        direction=spec.direction if spec else "outgoing",
    )


def _seconds_of_day(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class Tariff:
    """One compiled tariff table: prefix lookups per direction, class prices, time bands."""

    def __init__(self, config: TariffConfig) -> None:
        self.name = config.name
        self.classes = {name: _pricing(spec, config, None) for name, spec in config.classes.items()}
        # direction -> (raw prefix -> Destination, E.164 prefix -> Destination)
        self._tables: dict[str, tuple[dict[str, Destination], dict[str, Destination]]] = {
            "outgoing": ({}, {}),
            "incoming": ({}, {}),
        }
        for row in config.rows:
            pricing = _pricing(config.classes.get(row.dest_class), config, row)
            raw, e164 = self._tables[pricing.direction]
            (e164 if row.is_e164 else raw).setdefault(
                row.prefix, Destination(row.dest_class, pricing, row)
            )
        self._longest = {
            direction: (max(map(len, raw), default=0), max(map(len, e164), default=0))
            for direction, (raw, e164) in self._tables.items()
        }
        self.peak_start_s = _seconds_of_day(config.peak_start)
        self.peak_end_s = _seconds_of_day(config.peak_end)
        self.peak_days = frozenset(WEEKDAYS.index(day) for day in config.peak_days)
        self.weekend_days = frozenset(WEEKDAYS.index(day) for day in config.weekend_days)

    def lookup(self, number: str, e164: str | None, direction: str) -> Destination | None:
        """Raw prefixes first (longest match on the digits as dialled), then E.164 ones."""
        raw, plus = self._tables[direction]
        raw_longest, plus_longest = self._longest[direction]
        for length in range(min(len(number), raw_longest), 0, -1):
            found = raw.get(number[:length])
            if found is not None:
                return found
        if e164 is not None:
            for length in range(min(len(e164), plus_longest), 0, -1):
                found = plus.get(e164[:length])
                if found is not None:
                    return found
        return None

    def fixed_class(self, dest_class: str) -> Destination:
        """internal / sibling: priced if the tariff defines the class, else free."""
        return Destination(dest_class, self.classes.get(dest_class, FREE))

    def band(self, local: datetime, holiday: bool) -> Band:
        """The time band of an answer time in the site's local time."""
        weekday = local.weekday()
        if holiday or weekday in self.weekend_days:
            return "weekend"
        second = local.hour * 3600 + local.minute * 60 + local.second
        if weekday in self.peak_days and self.peak_start_s <= second < self.peak_end_s:
            return "peak"
        return "offpeak"


class TariffBook:
    """Every tariff of one config, and which one prices a call on a given line."""

    def __init__(self, accounting: AccountingConfig, timezone: str) -> None:
        self.accounting = accounting
        self.currency = accounting.currency
        self.zone = ZoneInfo(timezone)
        self.tariffs = {config.name: Tariff(config) for config in accounting.tariffs}
        self._by_name: dict[str, Tariff] = {}
        for config in accounting.tariffs:  # file order: the first table naming a line wins
            for name in config.applies_to:
                self._by_name.setdefault(name, self.tariffs[config.name])
        self.default = (
            self.tariffs[accounting.default_tariff] if accounting.default_tariff else None
        )
        self.holidays = (
            HolidayCalendar(accounting.holiday_country, accounting.holiday_subdivision, ("public",))
            if accounting.holidays_as_weekend
            else None
        )
        self._country = accounting.country_code
        self._international = accounting.international_prefix
        self._national = accounting.national_prefix

    def tariff_for(self, *names: str | None) -> Tariff | None:
        """The tariff naming the first of these (line group, line, sibling), else the default."""
        for name in names:
            if name:
                found = self._by_name.get(name)
                if found is not None:
                    return found
        return self.default

    def e164(self, number: str) -> str | None:
        """The number's international form, or None when it has none (short codes, '*')."""
        if number.startswith("+"):
            return number if number[1:].isdigit() else None
        if not number.isdigit():
            return None
        if number.startswith(self._international):
            return "+" + number[len(self._international) :]
        if self._national:
            if number.startswith(self._national):
                return "+" + self._country + number[len(self._national) :]
            return None
        return "+" + self._country + number

    def classify(self, tariff: Tariff, number: str, direction: str) -> Destination | None:
        return tariff.lookup(number, self.e164(number), direction)

    def band(self, tariff: Tariff, answer_utc: datetime) -> Band:
        local = answer_utc.astimezone(self.zone)
        holiday = self.holidays is not None and self.holidays.name_on(local.date()) is not None
        return tariff.band(local, holiday)


def billed_seconds(duration_ms: int, first_s: int, next_s: int) -> int:
    """Answer to hang-up rounded up to whole seconds, then to the increments first/next."""
    seconds = -(-duration_ms // 1000)
    if seconds <= 0:
        return 0
    if seconds <= first_s:
        return first_s
    return first_s + math.ceil((seconds - first_s) / next_s) * next_s


def tier_price(tiers: tuple[tuple[int, Decimal], ...], call_number: int) -> Decimal | None:
    """The per-call price of the `call_number`-th call (1-based) of the month; None: no tiers."""
    price = None
    for from_call, tier in tiers:
        if call_number < from_call:
            break
        price = tier
    return price


def call_price(
    pricing: Pricing, billed_s: int, band: Band, per_call: Decimal | None = None
) -> Decimal:
    """Connection fee (+ tier price) + per-minute × billed / 60, at least the minimum; 4 dp."""
    price = pricing.connection_fee + pricing.per_minute_in(band) * billed_s / 60
    if per_call is not None:
        price += per_call
    price = max(price, pricing.minimum)
    return price.quantize(E4, rounding=ROUND_HALF_UP)


def to_e4(amount: Decimal) -> int:
    """An amount of 4 decimals as the integer cost_e4 stores."""
    return int(amount.quantize(E4, rounding=ROUND_HALF_UP).scaleb(4))


def money_from_e4(value: int) -> Decimal:
    """cost_e4 (or a SUM of it) back to an exact Decimal amount with 4 decimals."""
    return (Decimal(int(value)) / 10000).quantize(E4)


def minor_unit(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def statement_totals(net_e4_sum: int, config: Any) -> tuple[Decimal, Decimal, Decimal]:
    """(net, VAT, gross) of a statement, as an invoice does it.

    The net total is rounded half up to the currency's minor unit, VAT is computed once on
    that rounded total and rounded half up, and gross is their sum. `config` is the whole
    Config or its AccountingConfig.
    """
    accounting: AccountingConfig = getattr(config, "accounting", config)
    unit = minor_unit(accounting.decimals)
    net = money_from_e4(net_e4_sum).quantize(unit, rounding=ROUND_HALF_UP)
    vat = (net * accounting.vat_percent / 100).quantize(unit, rounding=ROUND_HALF_UP)
    return net, vat, net + vat
