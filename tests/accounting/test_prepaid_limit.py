"""The longest call a prepaid balance pays for, with hand-computed figures.

Each case prices a call as the rater would (increments, connection fee, minimum, 4
decimals half up, VAT when the account draws with it) and checks the longest whole-second
duration whose draw still fits the balance.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from firmware.accounting.prepaid import longest_affordable_s
from firmware.accounting.tariffs import Pricing
from firmware.config.accounting_schema import PrepaidConfig

NET = PrepaidConfig(name="lobby", extensions=("208",))
GROSS = PrepaidConfig(name="lobby", extensions=("208",), includes_vat=True)
VAT = Decimal(23)


def pricing(per_minute: str, increments: tuple[int, int] = (1, 1), **prices: str) -> Pricing:
    values = {name: Decimal(value) for name, value in prices.items()}
    values.setdefault("per_minute_offpeak", Decimal(per_minute))
    values.setdefault("per_minute_weekend", values["per_minute_offpeak"])
    return Pricing(per_minute=Decimal(per_minute), first_s=increments[0], next_s=increments[1], **values)


MOBILE = pricing("0.10", (30, 6), connection_fee="0.05")  # 0.05 + 30 s x 0.10/min = 0.10


@pytest.mark.parametrize(
    ("amount_e4", "seconds"),
    [
        (1000, 30),  # 0.10 pays exactly the first 30 s
        (999, 0),  # one ten-thousandth short of the first increment
        (1234, 42),  # 42 s: 0.05 + 0.07 = 0.12; 48 s would cost 0.13
        (1300, 48),  # 48 s costs exactly 0.13
    ],
)
def test_increments_30_6_with_a_connection_fee(amount_e4: int, seconds: int) -> None:
    assert longest_affordable_s(MOBILE, "peak", amount_e4, NET, VAT) == seconds


def test_increments_60_60_whole_minutes() -> None:
    local = pricing("0.02", (60, 60), connection_fee="0.05")
    # 60 s 0.07, 120 s 0.09, 180 s 0.11
    assert longest_affordable_s(local, "peak", 1000, NET, VAT) == 120


def test_minimum_charge_covers_the_first_seconds() -> None:
    dear = pricing("0.60", minimum="0.50")  # 0.01 a second, at least 0.50
    assert longest_affordable_s(dear, "peak", 5000, NET, VAT) == 50
    assert longest_affordable_s(dear, "peak", 4900, NET, VAT) == 0  # even 1 s costs 0.50


def test_vat_is_drawn_when_the_account_includes_it() -> None:
    per_second = pricing("0.60")  # net 0.0100 a second; with 23% VAT 0.0123
    assert longest_affordable_s(per_second, "peak", 400, NET, VAT) == 4  # 4 s net 0.0400
    assert longest_affordable_s(per_second, "peak", 400, GROSS, VAT) == 3  # 0.0369; 4 s 0.0492


def test_each_call_is_rounded_to_four_decimals_half_up() -> None:
    cheap = pricing("0.001")  # b/60000 a second: 8 s 0.000133 -> 0.0001, 9 s 0.00015 -> 0.0002
    assert longest_affordable_s(cheap, "peak", 1, NET, VAT) == 8


def test_the_band_at_the_answer_time_prices_the_call() -> None:
    banded = pricing("0.60", per_minute_offpeak="0.30")
    assert longest_affordable_s(banded, "peak", 300, NET, VAT) == 3
    assert longest_affordable_s(banded, "offpeak", 300, NET, VAT) == 6
    assert longest_affordable_s(banded, "weekend", 300, NET, VAT) == 6  # weekend = off-peak


def test_a_tier_price_counts_like_a_connection_fee() -> None:
    per_second = pricing("0.60")
    assert longest_affordable_s(per_second, "peak", 500, NET, VAT, Decimal("0.02")) == 3


def test_free_time_has_no_limit_once_the_fee_is_paid() -> None:
    fee_only = pricing("0", connection_fee="0.05")
    assert longest_affordable_s(fee_only, "peak", 500, NET, VAT) is None
    assert longest_affordable_s(fee_only, "peak", 499, NET, VAT) == 0


def test_a_large_balance() -> None:
    per_second = pricing("0.60")
    assert longest_affordable_s(per_second, "peak", 1_000_000, NET, VAT) == 10_000  # 100.00
    assert longest_affordable_s(MOBILE, "peak", 1_000_000, NET, VAT) == 59_970  # 0.05 + 99.95 = 999.5 min
