"""Prepaid accounts: draw-down with the record, warning, blocking, top-up, re-rate correction."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from test_rating_store import call, make_config, rating_of, write_all

from firmware.accounting.prepaid import (
    PrepaidError,
    list_accounts,
    prepaid_account_for,
    prepaid_state,
    topup,
)
from firmware.accounting.rating import rerate

PREPAID = """
[[accounting.prepaid]]
name = "lobby"
extensions = ["203"]
warning_level = "1.00"
initial_balance = "1.20"

[[accounting.prepaid]]
name = "client7"
account_codes = ["77"]
includes_vat = true
"""

D = Decimal


def prepaid_config(local_price: str = "0.02"):  # type: ignore[no-untyped-def]
    return make_config(local_price, extra=PREPAID)


def ledger_rows(path: Path, account: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT delta_e4, balance_e4, call_id IS NOT NULL, reason, note FROM prepaid_ledger"
            " WHERE account = ? ORDER BY id",
            (account,),
        ).fetchall()


def test_account_by_code_first_then_extension() -> None:
    config = prepaid_config()
    assert prepaid_account_for(config, "203", None).name == "lobby"  # type: ignore[union-attr]
    assert prepaid_account_for(config, "203", "77").name == "client7"  # type: ignore[union-attr]
    assert prepaid_account_for(config, "202", "78") is None
    assert prepaid_account_for(config.accounting, None, "77").name == "client7"  # type: ignore[union-attr]


def test_state_before_the_database_exists(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    assert prepaid_state(path, "lobby", prepaid_config()) == (D("1.2000"), False, False)
    assert prepaid_state(path, "lobby") == (D("0.0000"), True, True)  # unknown: fail closed


def test_calls_draw_down_with_their_record_and_warn_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = prepaid_config()
    path = tmp_path / "cdr.sqlite3"
    caplog.set_level(logging.WARNING, logger="firmware.accounting.prepaid")
    # 0.05 + 0.02 * 2 = 0.09 each, from 1.20: 1.11, 1.02, 0.93 (below the 1.00 warning level)
    records = [call("213456789", 61, extension="203") for _ in range(3)]
    records.append(call("213456789", 61, extension="202"))  # not prepaid
    records.append(
        call("203", 60, direction="internal", extension="203", line=None, line_group=None)
    )
    write_all(path, records, lambda: config)
    assert [row[2] for row in rating_of(path)] == [900, 900, 900, 900, 0]
    assert [row[4] for row in rating_of(path)] == ["lobby", "lobby", "lobby", None, None]
    assert ledger_rows(path, "lobby") == [
        (12000, 12000, 0, "opening balance", ""),
        (-900, 11100, 1, "call", ""),
        (-900, 10200, 1, "call", ""),
        (-900, 9300, 1, "call", ""),
    ]
    warnings = [r.getMessage() for r in caplog.records if "prepaid_warning" in r.getMessage()]
    assert len(warnings) == 1 and "account=lobby balance=0.9300" in warnings[0]
    assert prepaid_state(path, "lobby", config) == (D("0.9300"), True, False)


def test_zero_balance_blocks_and_a_topup_unblocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = prepaid_config()
    path = tmp_path / "cdr.sqlite3"
    caplog.set_level(logging.WARNING, logger="firmware.accounting.prepaid")
    # 61 minutes at peak: 0.05 + 0.02 * 61 = 1.27 > 1.20
    write_all(path, [call("213456789", 3660, extension="203")], lambda: config)
    assert prepaid_state(path, "lobby", config) == (D("-0.0700"), True, True)
    assert any("prepaid_exhausted account=lobby" in r.getMessage() for r in caplog.records)
    assert topup(path, config, "lobby", D("5"), "cash at reception") == D("4.9300")
    assert prepaid_state(path, "lobby", config) == (D("4.9300"), False, False)
    assert ledger_rows(path, "lobby")[-1] == (50000, 49300, 0, "topup", "cash at reception")
    states = {state.name: state for state in list_accounts(path, config)}
    assert (states["lobby"].balance, states["client7"].balance) == (D("4.9300"), D("0.0000"))
    assert states["client7"].blocked


def test_bad_topups_change_nothing(tmp_path: Path) -> None:
    config = prepaid_config()
    path = tmp_path / "cdr.sqlite3"
    with pytest.raises(PrepaidError, match="no prepaid account named 'nobody'"):
        topup(path, config, "nobody", D("5"))
    with pytest.raises(PrepaidError, match="more than 4 decimals"):
        topup(path, config, "lobby", D("0.00001"))
    with pytest.raises(PrepaidError, match="non-zero"):
        topup(path, config, "lobby", D("0"))
    assert not path.exists()
    assert topup(path, config, "lobby", D("-0.20"), "correction") == D("1.0000")
    assert ledger_rows(path, "lobby") == [
        (12000, 12000, 0, "opening balance", ""),
        (-2000, 10000, 0, "adjustment", "correction"),
    ]


def test_an_account_with_vat_draws_the_gross_cost(tmp_path: Path) -> None:
    config = prepaid_config()
    path = tmp_path / "cdr.sqlite3"
    write_all(path, [call("213456789", 61, extension="202", account_code="77")], lambda: config)
    # net 0.09, with 23 % VAT 0.1107
    assert ledger_rows(path, "client7") == [(-1107, -1107, 1, "call", "")]
    assert rating_of(path)[0][2:5] == (900, "EUR", "client7")


def test_rerate_corrects_the_balance_by_the_difference(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    old = prepaid_config("0.02")
    write_all(path, [call("213456789", 61, extension="203") for _ in range(2)], lambda: old)
    now = datetime(2024, 6, 1, tzinfo=UTC)
    summary = rerate(path, prepaid_config("0.04"), date(2024, 5, 1), date(2024, 5, 31), now=now)
    # each call now 0.05 + 0.04 * 2 = 0.13: 0.04 more drawn per call
    assert (summary.prepaid_adjustments, summary.prepaid_delta_e4) == (2, -800)
    assert ledger_rows(path, "lobby")[-2:] == [
        (-400, 9800, 1, "rerate", ""),
        (-400, 9400, 1, "rerate", ""),
    ]
    assert prepaid_state(path, "lobby", old)[0] == D("0.9400")
    back = rerate(path, prepaid_config("0.00"), date(2024, 5, 1), date(2024, 5, 31), now=now)
    # 0.05 each now: 0.08 back per call, to 1.20 - 0.10
    assert back.prepaid_delta_e4 == 1600
    assert prepaid_state(path, "lobby", old)[0] == D("1.1000")
    unchanged = rerate(path, prepaid_config("0.00"), date(2024, 5, 1), date(2024, 5, 31), now=now)
    assert unchanged.prepaid_adjustments == 0
