"""Prepaid balances in the CDR database: draw-down by the rater, top-ups, "may this call start?".

Balances and their ledger live in cdr.sqlite3 next to the cdr table, so a call's record and
its draw-down commit in one transaction (the rater runs inside the CDR writer's). Amounts
are integers in ten-thousandths of the currency, like cost_e4. Every change of a balance
has a ledger entry (time, delta, balance after, call_id or reason), so a balance can always
be explained. Accounts are created on first use with the configured initial balance.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from firmware.accounting.tariffs import (
    E4,
    Band,
    Pricing,
    TariffBook,
    call_price,
    money_from_e4,
    to_e4,
)
from firmware.config.accounting_schema import PrepaidConfig

__all__ = [
    "AccountState",
    "LedgerEntry",
    "PrepaidError",
    "draw",
    "draw_amount_e4",
    "ensure_account",
    "ensure_tables",
    "ledger",
    "list_accounts",
    "longest_affordable_s",
    "prepaid_account_for",
    "prepaid_state",
    "topup",
]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0

_TABLES = (
    """CREATE TABLE IF NOT EXISTS prepaid_account (
        name        TEXT PRIMARY KEY,
        balance_e4  INTEGER NOT NULL,
        warning_e4  INTEGER NOT NULL,
        created_utc TEXT NOT NULL,
        updated_utc TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS prepaid_ledger (
        id          INTEGER PRIMARY KEY,
        time_utc    TEXT NOT NULL,
        account     TEXT NOT NULL,
        delta_e4    INTEGER NOT NULL,
        balance_e4  INTEGER NOT NULL,
        call_id     TEXT,
        reason      TEXT NOT NULL,
        note        TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS prepaid_ledger_account ON prepaid_ledger (account, id)",
    "CREATE INDEX IF NOT EXISTS prepaid_ledger_call ON prepaid_ledger (call_id)"
    " WHERE call_id IS NOT NULL",
)


class PrepaidError(ValueError):
    """A prepaid operation refused (unknown account, bad amount); nothing was changed."""


@dataclass(frozen=True)
class AccountState:
    name: str
    balance: Decimal
    warning_level: Decimal
    warning: bool
    blocked: bool
    in_config: bool = True


@dataclass(frozen=True)
class LedgerEntry:
    time_utc: str
    delta: Decimal
    balance: Decimal
    call_id: str | None
    reason: str
    note: str


def utc_stamp(now: datetime | None = None) -> str:
    """The cdr table's time format: 'YYYY-MM-DDTHH:MM:SS.mmmZ'."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ensure_tables(connection: sqlite3.Connection) -> None:
    """Create the prepaid tables if missing (idempotent; inside the caller's transaction)."""
    for statement in _TABLES:
        connection.execute(statement)


def prepaid_account_for(
    config: Any, extension: str | None, account_code: str | None
) -> PrepaidConfig | None:
    """The prepaid account a call draws on: by its account code first, then its extension.

    Pure (config only): call control asks it before an outgoing chargeable call, then
    :func:`prepaid_state` for the balance. `config` is the Config or its AccountingConfig.
    """
    accounts = getattr(config, "accounting", config).prepaid
    if account_code:
        for account in accounts:
            if account_code in account.account_codes:
                return account
    if extension:
        for account in accounts:
            if extension in account.extensions:
                return account
    return None


def draw_amount_e4(cost_e4: int, account: PrepaidConfig, vat_percent: Decimal) -> int:
    """What a call of net cost `cost_e4` takes from the balance (with VAT if so configured)."""
    if not account.includes_vat or cost_e4 <= 0:
        return cost_e4
    gross = Decimal(cost_e4) * (100 + vat_percent) / 100
    return int(gross.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ensure_account(
    connection: sqlite3.Connection, account: PrepaidConfig, now: datetime | None = None
) -> int:
    """The account's balance (e4), creating it with its initial balance on first use."""
    warning_e4 = to_e4(account.warning_level)
    row = connection.execute(
        "SELECT balance_e4, warning_e4 FROM prepaid_account WHERE name = ?", (account.name,)
    ).fetchone()
    if row is not None:
        if row[1] != warning_e4:
            connection.execute(
                "UPDATE prepaid_account SET warning_e4 = ? WHERE name = ?",
                (warning_e4, account.name),
            )
        return int(row[0])
    stamp = utc_stamp(now)
    opening = to_e4(account.initial_balance)
    connection.execute(
        "INSERT INTO prepaid_account (name, balance_e4, warning_e4, created_utc, updated_utc)"
        " VALUES (?, ?, ?, ?, ?)",
        (account.name, opening, warning_e4, stamp, stamp),
    )
    if opening:
        connection.execute(
            "INSERT INTO prepaid_ledger (time_utc, account, delta_e4, balance_e4, call_id, reason)"
            " VALUES (?, ?, ?, ?, NULL, 'opening balance')",
            (stamp, account.name, opening, opening),
        )
    return opening


def draw(
    connection: sqlite3.Connection,
    account: PrepaidConfig,
    delta_e4: int,
    *,
    call_id: str | None,
    reason: str,
    note: str = "",
    now: datetime | None = None,
) -> int:
    """Change a balance by `delta_e4` (negative draws) with its ledger entry; the new balance.

    Runs in the caller's transaction. Logs a warning when the balance falls to or below the
    warning level, and when it reaches zero (chargeable calls are blocked from then on).
    """
    before = ensure_account(connection, account, now)
    after = before + delta_e4
    stamp = utc_stamp(now)
    connection.execute(
        "UPDATE prepaid_account SET balance_e4 = ?, updated_utc = ? WHERE name = ?",
        (after, stamp, account.name),
    )
    connection.execute(
        "INSERT INTO prepaid_ledger (time_utc, account, delta_e4, balance_e4, call_id, reason, note)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (stamp, account.name, delta_e4, after, call_id, reason, note),
    )
    warning_e4 = to_e4(account.warning_level)
    if before > warning_e4 >= after:
        log.warning(
            "event=prepaid_warning account=%s balance=%s warning_level=%s call_id=%s",
            account.name, money_from_e4(after), account.warning_level, call_id,
        )  # fmt: skip
    if before > 0 >= after:
        log.warning(
            "event=prepaid_exhausted account=%s balance=%s call_id=%s",
            account.name, money_from_e4(after), call_id,
        )  # fmt: skip
    return after


def _connect(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    connection = sqlite3.connect(os.fspath(db_path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return connection


def _find(config: Any, name: str) -> PrepaidConfig:
    for account in getattr(config, "accounting", config).prepaid:
        if account.name == name:
            return account
    known = ", ".join(a.name for a in getattr(config, "accounting", config).prepaid) or "none"
    raise PrepaidError(
        f"no prepaid account named {name!r} in [[accounting.prepaid]] (known: {known})"
    )


def topup(
    db_path: str | os.PathLike[str],
    config: Any,
    name: str,
    amount: Decimal,
    note: str = "",
    now: datetime | None = None,
) -> Decimal:
    """Credit (or, negative, correct) an account's balance; returns the new balance."""
    account = _find(config, name)
    if not amount.is_finite() or amount == 0:
        raise PrepaidError(f"amount {amount} must be a non-zero number")
    if amount != amount.quantize(E4):
        raise PrepaidError(f"amount {amount} has more than 4 decimals")
    connection = _connect(db_path)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            ensure_tables(connection)
            after = draw(
                connection, account, to_e4(amount), call_id=None,
                reason="topup" if amount > 0 else "adjustment", note=note, now=now,
            )  # fmt: skip
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.close()
    log.info(
        "event=prepaid_topup account=%s amount=%s balance=%s", name, amount, money_from_e4(after)
    )
    return money_from_e4(after)


def _open_readonly(db_path: str | os.PathLike[str]) -> sqlite3.Connection | None:
    path = Path(db_path)
    if not path.exists():
        return None
    connection = sqlite3.connect(
        path.resolve().as_uri() + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S
    )
    return connection


def _stored(connection: sqlite3.Connection | None, name: str) -> tuple[int, int] | None:
    if connection is None:
        return None
    try:
        row = connection.execute(
            "SELECT balance_e4, warning_e4 FROM prepaid_account WHERE name = ?", (name,)
        ).fetchone()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return None
        raise
    return None if row is None else (int(row[0]), int(row[1]))


def _state(
    name: str, stored: tuple[int, int] | None, account: PrepaidConfig | None
) -> AccountState:
    if stored is None:
        balance_e4 = to_e4(account.initial_balance) if account else 0
        warning_e4 = to_e4(account.warning_level) if account else 0
    else:
        balance_e4 = stored[0]
        warning_e4 = to_e4(account.warning_level) if account else stored[1]
    return AccountState(
        name=name,
        balance=money_from_e4(balance_e4),
        warning_level=money_from_e4(warning_e4),
        warning=balance_e4 <= warning_e4,
        blocked=balance_e4 <= 0,
        in_config=account is not None,
    )


def prepaid_state(
    db_path: str | os.PathLike[str], name: str, config: Any = None
) -> tuple[Decimal, bool, bool]:
    """(balance, warning, blocked) of an account: blocking I/O, run it in a thread.

    Blocked means balance <= 0: no chargeable outgoing call may start. With `config`, an
    account not yet in the database has its initial balance and the warning level is the
    configured one; without, an unknown account reads as 0 (blocked: fail closed).
    """
    account = None
    if config is not None:
        account = next(
            (a for a in getattr(config, "accounting", config).prepaid if a.name == name), None
        )
    connection = _open_readonly(db_path)
    try:
        state = _state(name, _stored(connection, name), account)
    finally:
        if connection is not None:
            connection.close()
    return state.balance, state.warning, state.blocked


def list_accounts(db_path: str | os.PathLike[str], config: Any) -> list[AccountState]:
    """Every configured account's state, then accounts in the database no longer configured."""
    connection = _open_readonly(db_path)
    try:
        states = [_state(a.name, _stored(connection, a.name), a) for a in config.accounting.prepaid]
        configured = {state.name for state in states}
        stored_names: list[str] = []
        if connection is not None:
            try:
                stored_names = [
                    row[0]
                    for row in connection.execute("SELECT name FROM prepaid_account ORDER BY name")
                ]
            except sqlite3.OperationalError as error:
                if "no such table" not in str(error):
                    raise
        for name in stored_names:
            if name not in configured:
                states.append(_state(name, _stored(connection, name), None))
    finally:
        if connection is not None:
            connection.close()
    return states


def ledger(db_path: str | os.PathLike[str], name: str, limit: int = 50) -> list[LedgerEntry]:
    """The newest `limit` ledger entries of an account, oldest first."""
    connection = _open_readonly(db_path)
    if connection is None:
        return []
    try:
        rows = connection.execute(
            "SELECT time_utc, delta_e4, balance_e4, call_id, reason, note FROM prepaid_ledger"
            " WHERE account = ? ORDER BY id DESC LIMIT ?",
            (name, limit),
        ).fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
    finally:
        connection.close()
    return [
        LedgerEntry(time, money_from_e4(delta), money_from_e4(balance), call_id, reason, note)
        for time, delta, balance, call_id, reason, note in reversed(rows)
    ]


def is_chargeable(
    book: TariffBook, number: str, lines: Iterable[tuple[str | None, str | None]]
) -> bool:
    """Could an outgoing call to `number` cost money on any of these (line group, line/trunk)?

    A destination no tariff prices is free as far as accounting knows; a number a rating
    tariff does not recognise is chargeable (fail closed: prepaid is about money).
    """
    for group, trunk in lines:
        tariff = book.tariff_for(group, trunk)
        if tariff is None:
            continue
        destination = book.classify(tariff, number, "outgoing")
        if destination is None or not destination.pricing.is_free:
            return True
    return False


def _draw_for_billed(
    pricing: Pricing, band: Band, billed_s: int, per_call: Decimal | None,
    account: PrepaidConfig, vat_percent: Decimal,
) -> int:  # fmt: skip
    return draw_amount_e4(to_e4(call_price(pricing, billed_s, band, per_call)), account, vat_percent)


def longest_affordable_s(
    pricing: Pricing,
    band: Band,
    amount_e4: int,
    account: PrepaidConfig,
    vat_percent: Decimal,
    per_call: Decimal | None = None,
) -> int | None:
    """The longest call (whole seconds) whose draw does not exceed `amount_e4`; None: no limit.

    Pure. The price follows the rating rules: the band is the one at the answer time and
    prices the whole call (so crossing into another band during the call changes nothing),
    increments first/next, connection fee (+ `per_call`, a tier price: pass the dearest one
    to be safe), at least the minimum, 4 decimals half up, then VAT half up when the account
    draws with VAT. A call of exactly N seconds bills `billed_seconds(N * 1000)`, so the
    answer is always `first` or `first + k * next`. 0: not even the first increment (or
    the connection fee) is paid for. None: the time is free (no per-minute price).
    """
    def draw(billed_s: int) -> int:
        return _draw_for_billed(pricing, band, billed_s, per_call, account, vat_percent)

    if pricing.per_minute_in(band) <= 0:
        return None if draw(0) <= amount_e4 else 0
    first, step = pricing.first_s, pricing.next_s
    if draw(first) > amount_e4:
        return 0
    low, high = 0, 1  # steps k of `next` after the first increment: draw(first + k*next)
    while draw(first + high * step) <= amount_e4:
        low, high = high, high * 2
    while high - low > 1:  # draw(first + low*step) fits, draw(first + high*step) does not
        middle = (low + high) // 2
        if draw(first + middle * step) <= amount_e4:
            low = middle
        else:
            high = middle
    return first + low * step
