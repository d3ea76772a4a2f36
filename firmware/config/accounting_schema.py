"""Call accounting settings: currency and VAT, tariff tables, account codes, prepaid accounts.

Owned by the tariff engine (`firmware/accounting/tariffs.py`); see docs/accounting.md,
section "Tariffs and rating". A tariff's rate deck (`rates_csv`) is read while the config
is validated, so `minipbx check-config` reports its bad lines and a config in service
never points at a broken deck. Relative deck paths are resolved in the folder set with
:func:`config_folder` (the config file's folder), else in the current directory.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PrivateAttr, model_validator

from firmware.accounting.tariff_csv import (
    OVERRIDE_COLUMNS,
    RateDeckError,
    RateRow,
    conflicting_duplicates,
    parse_increments,
    read_rate_deck,
)
from firmware.config.fields import ExtensionNumber, Name, Section

if TYPE_CHECKING:
    from firmware.config.schema import Config

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_config_folder: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "accounting_config_folder", default=None
)


@contextlib.contextmanager
def config_folder(folder: str | Path | None) -> Iterator[None]:
    """Resolve relative `rates_csv` paths in `folder` while validating a config inside."""
    token = _config_folder.set(Path(folder) if folder is not None else None)
    try:
        yield
    finally:
        _config_folder.reset(token)


def _amount(value: Any) -> Any:
    """Money from TOML: a string ('0.05', '0,05') or a number (floats read by their text)."""
    if isinstance(value, bool):
        raise ValueError("an amount must be a number or a string like '0.05'")
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, str):
        try:
            value = Decimal(value.strip().replace(",", "."))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not an amount (e.g. '0.05')") from None
    if isinstance(value, int):
        value = Decimal(value)
    if isinstance(value, Decimal) and (not value.is_finite() or value < 0):
        raise ValueError(f"{value} must be a finite amount of at least 0")
    return value


def _increments(value: str) -> str:
    parse_increments(value)
    return value.replace(" ", "")


def _time_of_day(value: str) -> str:
    match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00", value)
    if match is None:
        raise ValueError(f"time {value!r} must be HH:MM in 24-hour form, e.g. '08:00'")
    return value


def _account_code(value: str) -> str:
    if not re.fullmatch(r"[0-9]{1,12}", value):
        raise ValueError(f"account code {value!r} must be 1 to 12 digits")
    return value


def _did(value: str) -> str:
    if not re.fullmatch(r"\+?[0-9]{1,20}", value):
        raise ValueError(f"DID {value!r} must be digits (optionally starting with +)")
    return value


def _currency(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise ValueError(f"currency {value!r} must be an ISO 4217 code such as 'EUR'")
    return value


Amount = Annotated[Decimal, BeforeValidator(_amount)]
Increments = Annotated[str, AfterValidator(_increments)]
TimeOfDay = Annotated[str, AfterValidator(_time_of_day)]
AccountCode = Annotated[str, AfterValidator(_account_code)]
Did = Annotated[str, AfterValidator(_did)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Prefix = Annotated[str, Field(pattern=r"^(\+[0-9]{0,15}|[0-9*#]{1,20})$")]


class TierConfig(Section):
    """A monthly volume tier: from the `from_call`-th call of the month, `price` per call."""

    from_call: int = Field(ge=1)
    price: Amount


class ClassPriceConfig(Section):
    """How calls of one destination class are priced (see docs/accounting.md)."""

    # "outgoing": matched against the number dialled; "incoming": against the DID called.
    direction: Literal["outgoing", "incoming"] = "outgoing"
    connection_fee: Amount = Decimal(0)
    per_minute: Amount = Decimal(0)
    # Off-peak and weekend prices per minute; unset: the off-peak price is `per_minute`,
    # the weekend price is the off-peak price.
    per_minute_offpeak: Amount | None = None
    per_minute_weekend: Amount | None = None
    increments: Increments | None = None  # unset: the tariff's
    minimum: Amount = Decimal(0)
    tiers: tuple[TierConfig, ...] = ()
    tier_mode: Literal["per_call", "volume"] = "per_call"

    @model_validator(mode="after")
    def _tiers_in_order(self) -> ClassPriceConfig:
        if self.tiers:
            starts = [tier.from_call for tier in self.tiers]
            if starts[0] != 1:
                raise ValueError("tiers: the first tier must have from_call = 1")
            if any(later <= earlier for earlier, later in itertools.pairwise(starts)):
                raise ValueError(f"tiers: from_call must increase from tier to tier, got {starts}")
        return self


class PrefixConfig(Section):
    """A prefix row written in the config file (the same meaning as a rate deck row)."""

    prefix: Prefix
    dest_class: Name = Field(alias="class")
    description: str = ""
    connection_fee: Amount | None = None
    per_minute: Amount | None = None
    per_minute_offpeak: Amount | None = None
    per_minute_weekend: Amount | None = None
    increments: Increments | None = None
    minimum: Amount | None = None

    def to_row(self, source: str) -> RateRow:
        overrides: dict[str, object] = {}
        for name in OVERRIDE_COLUMNS:
            value = getattr(self, name)
            if value is not None:
                overrides[name] = parse_increments(value) if name == "increments" else value
        return RateRow(self.prefix, self.dest_class, self.description, overrides, source)


class TariffConfig(Section):
    """A tariff table: prefixes to classes, each class's prices, and the time bands.

    `applies_to` names line groups, SIP peers (trunks) and sibling sites whose calls this
    table prices; the first table naming any of a call's line group, line or sibling wins.
    """

    name: Name
    applies_to: tuple[Name, ...] = ()
    increments: Increments = "60/60"
    # Peak band: these weekdays from peak_start (inclusive) to peak_end (exclusive), local
    # time; weekend band: weekend_days (and holidays with holidays_as_weekend); else off-peak.
    peak_start: TimeOfDay = "08:00"
    peak_end: TimeOfDay = "20:00"
    peak_days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    weekend_days: tuple[Weekday, ...] = ("sat", "sun")
    classes: dict[Name, ClassPriceConfig] = Field(default_factory=dict)
    prefixes: tuple[PrefixConfig, ...] = ()
    rates_csv: str = ""
    _rows: tuple[RateRow, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _load_rows(self) -> TariffConfig:
        if self.peak_start >= self.peak_end:
            raise ValueError(
                f"peak_start {self.peak_start} must be before peak_end {self.peak_end}"
            )
        if set(self.peak_days) & set(self.weekend_days):
            raise ValueError("peak_days and weekend_days must not share a day")
        rows = [prefix.to_row(f"prefixes[{index}]") for index, prefix in enumerate(self.prefixes)]
        if self.rates_csv:
            path = Path(self.rates_csv)
            folder = _config_folder.get()
            if not path.is_absolute() and folder is not None:
                path = folder / path
            try:
                rows += read_rate_deck(path)
            except RateDeckError as error:
                raise ValueError(f"rates_csv {error}") from None
        problems = conflicting_duplicates(rows)
        for row in rows:
            known = self.classes.get(row.dest_class)
            if known is None and row.dest_class in ("internal", "sibling"):
                problems.append(
                    f"{row.source}: class {row.dest_class!r} is given by the call, not a prefix"
                )
            elif known is None and "per_minute" not in row.overrides:
                problems.append(
                    f"{row.source}: class {row.dest_class!r} is not in classes: define it or give "
                    "the row its own per_minute"
                )
        if problems:
            shown = "; ".join(problems[:20])
            more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
            raise ValueError(f"prefixes: {shown}{more}")
        self._rows = tuple(rows)
        return self

    @property
    def rows(self) -> tuple[RateRow, ...]:
        """Every prefix row: the inline `prefixes` first, then the rate deck's."""
        return self._rows


class AccountCodeConfig(Section):
    code: AccountCode
    name: str = ""


class PrepaidConfig(Section):
    """A prepaid account: calls of these extensions or account codes draw on its balance.

    `initial_balance` is credited once, when the account first appears in the database;
    `includes_vat` draws the cost with VAT (money the client paid) instead of the net cost.
    `warning_before_s`: how long before a call's prepaid limit the caller hears the warning.
    """

    name: Name
    extensions: tuple[ExtensionNumber, ...] = ()
    account_codes: tuple[AccountCode, ...] = ()
    warning_level: Amount = Decimal(0)
    initial_balance: Amount = Decimal(0)
    includes_vat: bool = False
    # A call in progress is released when the balance is spent; the caller hears short
    # beeps this many seconds before (0: no warning).
    warning_before_s: int = Field(default=30, ge=0, le=600)

    @model_validator(mode="after")
    def _someone_draws(self) -> PrepaidConfig:
        if not self.extensions and not self.account_codes:
            raise ValueError("a prepaid account needs extensions or account_codes that draw on it")
        return self


class AccountingConfig(Section):
    currency: str = "EUR"
    vat_percent: Amount = Decimal(0)
    decimals: int = Field(default=2, ge=0, le=4)  # the currency's minor unit
    # Numbering for classification: E.164 country code, and the prefixes dialled here.
    country_code: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")] = "351"
    international_prefix: Annotated[str, Field(pattern=r"^[0-9]{1,4}$")] = "00"
    national_prefix: Annotated[str, Field(pattern=r"^[0-9]{0,2}$")] = ""
    holidays_as_weekend: bool = False
    holiday_country: str = ""
    holiday_subdivision: str = ""
    tariffs: tuple[TariffConfig, ...] = ()
    # Prices calls whose line, line group or sibling no tariff names (and internal calls).
    default_tariff: Name | None = None
    account_codes: tuple[AccountCodeConfig, ...] = ()  # empty: any 1-12 digit code
    did_accounts: dict[Did, AccountCode] = Field(default_factory=dict)
    prepaid: tuple[PrepaidConfig, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> AccountingConfig:
        _currency(self.currency)
        problems: list[str] = []
        names = [tariff.name for tariff in self.tariffs]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"tariffs: the name {name!r} is used more than once")
        if self.default_tariff is not None and self.default_tariff not in names:
            problems.append(f"default_tariff: no tariff named {self.default_tariff!r}")
        if self.vat_percent > 100:
            problems.append(f"vat_percent: {self.vat_percent} is more than 100")
        codes = [entry.code for entry in self.account_codes]
        for code in sorted({c for c in codes if codes.count(c) > 1}):
            problems.append(f"account_codes: code {code} is listed more than once")
        for did, code in self.did_accounts.items():
            if codes and code not in codes:
                problems.append(f"did_accounts.{did}: account code {code} is not in account_codes")
        problems += self._prepaid_problems(codes)
        if self.holidays_as_weekend:
            problems += _holiday_problems(self.holiday_country, self.holiday_subdivision)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _prepaid_problems(self, codes: list[str]) -> list[str]:
        problems: list[str] = []
        names = [account.name for account in self.prepaid]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"prepaid: the name {name!r} is used more than once")
        owner: dict[str, str] = {}
        for account in self.prepaid:
            for who in (*account.extensions, *(f"code {c}" for c in account.account_codes)):
                if who in owner:
                    problems.append(
                        f"prepaid.{account.name}: {who} already draws on {owner[who]!r}"
                    )
                owner.setdefault(who, account.name)
            for code in account.account_codes:
                if codes and code not in codes:
                    problems.append(
                        f"prepaid.{account.name}: account code {code} is not in account_codes"
                    )
        return problems

    def tariff(self, name: str) -> TariffConfig | None:
        return next((tariff for tariff in self.tariffs if tariff.name == name), None)

    def accepts_account_code(self, code: str) -> bool:
        """May a caller enter this code? Any 1-12 digits when no list is configured."""
        if not re.fullmatch(r"[0-9]{1,12}", code):
            return False
        return not self.account_codes or any(entry.code == code for entry in self.account_codes)

    def account_code_for_did(self, did: str | None) -> str | None:
        """The client an incoming call to this DID is billed to, if configured."""
        return None if did is None else self.did_accounts.get(did)


def _holiday_problems(country: str, subdivision: str) -> list[str]:
    """The same checks (and messages) as the office modes' holiday country."""
    from firmware.modes.public_holidays import check_country

    if not country:
        return ["holidays_as_weekend needs holiday_country (e.g. 'PT')"]
    return [
        "holiday_" + problem for problem in check_country(country, subdivision, ())
    ]


def cross_check_accounting(config: Config) -> Iterator[str]:
    """References from [accounting] to other sections (for firmware.config.load.cross_check)."""
    accounting = config.accounting
    known = {group.name for group in config.line_groups}
    known |= {peer.name for peer in config.sip.peers}
    known |= {site.name for site in config.sibling_sites}
    known |= {line.name for line in config.lines}
    for index, tariff in enumerate(accounting.tariffs):
        for name in tariff.applies_to:
            if name not in known:
                yield (
                    f"accounting.tariffs[{index}].applies_to: {name!r} is not a line group, line, "
                    "SIP peer or sibling site"
                )
    numbers = {extension.number for extension in config.extensions}
    for account in accounting.prepaid:
        for number in account.extensions:
            if number not in numbers:
                yield f"accounting.prepaid.{account.name}: no extension {number}"
