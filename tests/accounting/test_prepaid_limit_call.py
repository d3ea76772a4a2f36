"""A prepaid call is released when its balance is spent, with a warning before.

Through the simulated line card: extension 203 draws on an account holding 0.03 and calls a
number at 0.60 a minute (0.01 a second, 1 s increments), so the balance pays for 3 s. The
caller hears the warning beeps about 1 s before the end (warning_before_s = 1), the line is
released just before 3 s, and the ledger ends at exactly 0. A call whose connection fee
alone is more than the balance is refused before anything is dialled.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware.accounting.prepaid import ledger, prepaid_state
from firmware.calls.cdr import Disposition, HangupSide, open_readonly
from firmware.calls.lifecycle import LegState
from tests.conftest import office_config

ACCOUNTING = """
[accounting]
currency = "EUR"
vat_percent = "23"
country_code = "351"
international_prefix = "00"
default_tariff = "city"

[[accounting.tariffs]]
name = "city"
applies_to = ["city"]
increments = "1/1"
prefixes = [{ prefix = "+3512", class = "local" }, { prefix = "+3519", class = "mobile" }]

[accounting.tariffs.classes.local]
per_minute = "0.60"
per_minute_offpeak = "0.60"
per_minute_weekend = "0.60"

[accounting.tariffs.classes.mobile]
connection_fee = "0.05"
per_minute = "0.60"

[[accounting.prepaid]]
name = "lobby"
extensions = ["203"]
initial_balance = "0.03"
warning_level = "0.01"
warning_before_s = 1
"""


@pytest.fixture
def pbx_config() -> str:
    text = office_config()
    return text[: text.index("[accounting]")] + ACCOUNTING


async def answered_call(pbx, extension: str = "203") -> tuple[object, object, float]:
    """`extension` calls 9 212345678 on a city line and the far end answers."""
    phone = pbx.phone(extension)
    phone.off_hook()
    await pbx.wait_state(extension, LegState.DIALLING)
    await phone.dial("9212345678")
    await pbx.wait_state(extension, LegState.CONNECTED)
    line = next(line for line in pbx.sim.lines.values() if line.seized)
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 3.0, "answer")
    return phone, line, asyncio.get_running_loop().time()


async def test_the_call_is_released_when_the_balance_is_spent(pbx, data_dir: Path) -> None:
    loop = asyncio.get_running_loop()
    phone, line, answered_at = await answered_call(pbx)
    mark = phone.mark()
    assert await pbx.hears(phone, "confirmation", since=mark, timeout=3.0)
    warned_after = loop.time() - answered_at
    calls = pbx.app.calls
    await pbx.sim.wait_until(lambda: not calls.sessions, 4.0, "released at the limit")
    released_after = loop.time() - answered_at
    assert 1.0 <= warned_after < released_after
    assert 1.8 <= released_after <= 3.2, released_after
    await pbx.sim.wait_until(lambda: not line.seized, 2.0, "the card released the line")  # over the serial link
    assert await pbx.hears(phone, "busy", timeout=2.0)  # still off hook: told the call is over
    phone.on_hook()
    record = await pbx.last_record()
    assert (record.disposition, record.hangup_side, record.cause) == (
        Disposition.ANSWERED, HangupSide.SYSTEM, "prepaid_limit",
    )  # fmt: skip
    with open_readonly(data_dir / "cdr.sqlite3") as connection:
        cost, account = connection.execute(
            "SELECT cost_e4, prepaid_account FROM cdr ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert (cost, account) == (300, "lobby")  # 3 s x 0.01
    balance, _, blocked = prepaid_state(data_dir / "cdr.sqlite3", "lobby", pbx.app.config)
    assert (str(balance), blocked) == ("0.0000", True)
    assert [str(entry.balance) for entry in ledger(data_dir / "cdr.sqlite3", "lobby")] == [
        "0.0300", "0.0000",
    ]  # fmt: skip
    assert calls.counters.prepaid_released == 1


async def test_a_call_that_ends_first_cancels_the_limit(pbx, data_dir: Path) -> None:
    phone, _, _ = await answered_call(pbx)
    await asyncio.sleep(0.3)
    phone.on_hook()
    record = await pbx.last_record()
    assert record.cause != "prepaid_limit"
    calls = pbx.app.calls
    assert not calls._prepaid_timers
    await asyncio.sleep(2.5)  # past the limit the call would have had
    assert calls.counters.prepaid_released == 0
    balance, _, _ = prepaid_state(data_dir / "cdr.sqlite3", "lobby", pbx.app.config)
    assert str(balance) == "0.0200"  # 0.3 s bills 1 s


async def test_a_call_the_balance_cannot_start_paying_for_is_refused(pbx, data_dir: Path) -> None:
    phone = pbx.phone("203")
    phone.off_hook()
    await pbx.wait_state("203", LegState.DIALLING)
    mark = phone.mark()
    await phone.dial("9912345678")  # mobile: 0.05 connection fee > 0.03
    assert await pbx.hears(phone, "special_information", since=mark)
    assert all(not line.seized for line in pbx.sim.lines.values())
    phone.on_hook()
    record = await pbx.last_record()
    assert (record.disposition, record.cause) == (Disposition.REJECTED, "prepaid_insufficient")
    balance, _, _ = prepaid_state(data_dir / "cdr.sqlite3", "lobby", pbx.app.config)
    assert str(balance) == "0.0300"


async def test_hold_does_not_reset_the_clock(pbx) -> None:
    loop = asyncio.get_running_loop()
    phone, line, answered_at = await answered_call(pbx)
    await asyncio.sleep(0.4)
    phone.flash()  # the line on hold, 203 hears dial tone
    await pbx.wait_state("203", LegState.DIALLING)
    await asyncio.sleep(0.4)
    phone.flash()  # back to the line
    await pbx.wait_state("203", LegState.CONNECTED)
    await asyncio.sleep(0.4)
    phone.flash()  # on hold again when the balance runs out
    await pbx.wait_state("203", LegState.DIALLING)
    calls = pbx.app.calls
    await pbx.sim.wait_until(lambda: not calls.sessions, 4.0, "released at the limit")
    assert 1.8 <= loop.time() - answered_at <= 3.2
    await pbx.sim.wait_until(lambda: not line.seized, 2.0, "the card released the line")  # over the serial link
    phone.on_hook()
    record = await pbx.last_record()
    assert (record.disposition, record.cause) == (Disposition.ANSWERED, "prepaid_limit")
