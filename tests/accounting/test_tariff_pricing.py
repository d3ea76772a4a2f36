"""Each pricing rule of docs/accounting.md with hand-computed figures (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from firmware.accounting.tariffs import (
    Pricing,
    TariffBook,
    billed_seconds,
    call_price,
    money_from_e4,
    statement_totals,
    tier_price,
    to_e4,
)
from firmware.config.accounting_schema import AccountingConfig

D = Decimal


def book(**accounting: object) -> TariffBook:
    settings: dict[str, object] = {
        "tariffs": [
            {
                "name": "main",
                "classes": {"local": {"per_minute": "0.02"}, "mobile": {"per_minute": "0.10"}},
                "prefixes": [
                    {"prefix": "+3512", "class": "local"},
                    {"prefix": "+3519", "class": "mobile"},
                ],
            }
        ],
        "default_tariff": "main",
    }
    settings.update(accounting)
    return TariffBook(AccountingConfig.model_validate(settings), "Europe/Lisbon")


# ----- billed time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration_ms", "increments", "billed"),
    [
        (0, (60, 60), 0),  # answered and dropped in the same millisecond
        (1, (60, 60), 60),  # any part of a second is a second, any second the first minute
        (60_000, (60, 60), 60),
        (60_001, (60, 60), 120),  # 61 s
        (125_000, (60, 60), 180),
        (1_000, (30, 6), 30),
        (30_000, (30, 6), 30),
        (31_000, (30, 6), 36),
        (36_000, (30, 6), 36),
        (36_500, (30, 6), 42),  # 37 s
        (10_200, (1, 1), 11),
        (10_000, (1, 1), 10),
    ],
)
def test_billed_seconds_round_up_to_increments(
    duration_ms: int, increments: tuple[int, int], billed: int
) -> None:
    assert billed_seconds(duration_ms, *increments) == billed


# ----- price of a call -------------------------------------------------------------------


def test_connection_fee_plus_per_minute_of_billed_time() -> None:
    mobile = Pricing(connection_fee=D("0.05"), per_minute=D("0.10"), first_s=30, next_s=6)
    # 31 s at 30/6 bills 36 s: 0.05 + 0.10 * 36 / 60 = 0.05 + 0.06
    assert call_price(mobile, 36, "peak") == D("0.1100")


def test_cost_is_kept_to_four_decimals_half_up() -> None:
    international = Pricing(connection_fee=D("0.10"), per_minute=D("0.25"), first_s=1, next_s=1)
    # 0.10 + 0.25 * 11 / 60 = 0.10 + 0.0458333... = 0.1458333...
    assert call_price(international, 11, "peak") == D("0.1458")
    tiny = Pricing(per_minute=D("0.003"), first_s=1, next_s=1)
    # 0.003 / 60 = 0.00005 exactly: half up gives 0.0001 (half even would give 0.0000)
    assert call_price(tiny, 1, "peak") == D("0.0001")
    assert to_e4(call_price(tiny, 1, "peak")) == 1


def test_minimum_charge_applies_only_when_the_price_is_lower() -> None:
    premium = Pricing(per_minute=D("0.60"), minimum=D("1.00"))
    assert call_price(premium, 60, "peak") == D("1.0000")  # 0.60 < 1.00
    assert call_price(premium, 120, "peak") == D("1.2000")  # 1.20 > 1.00


def test_answered_zero_seconds_pays_the_connection_fee() -> None:
    local = Pricing(connection_fee=D("0.05"), per_minute=D("0.02"))
    assert call_price(local, billed_seconds(0, 60, 60), "peak") == D("0.0500")


def test_band_prices_fall_back_offpeak_then_weekend() -> None:
    only_peak = book(
        tariffs=[{"name": "main", "classes": {"x": {"per_minute": "0.30"}},
                  "prefixes": [{"prefix": "+351", "class": "x"}]}]
    )  # fmt: skip
    pricing = only_peak.tariffs["main"].classes["x"]
    assert (pricing.per_minute_in("offpeak"), pricing.per_minute_in("weekend")) == (
        D("0.30"),
        D("0.30"),
    )
    both = book(
        tariffs=[{"name": "main", "classes": {"x": {"per_minute": "0.30", "per_minute_offpeak": "0.20"}},
                  "prefixes": [{"prefix": "+351", "class": "x"}]}]
    )  # fmt: skip
    pricing = both.tariffs["main"].classes["x"]
    assert (pricing.per_minute_in("offpeak"), pricing.per_minute_in("weekend")) == (
        D("0.20"),
        D("0.20"),
    )


# ----- time bands in the site's local time -----------------------------------------------


def band_at(tariffs: TariffBook, utc_text: str) -> str:
    return tariffs.band(
        tariffs.tariffs["main"], datetime.fromisoformat(utc_text).replace(tzinfo=UTC)
    )


def test_peak_starts_at_eight_local_time_summer() -> None:
    tariffs = book()
    # Monday 6 May 2024, Lisbon is UTC+1 (WEST): 07:59:59 local is 06:59:59 UTC
    assert band_at(tariffs, "2024-05-06T06:59:59") == "offpeak"
    assert band_at(tariffs, "2024-05-06T07:00:00") == "peak"
    assert band_at(tariffs, "2024-05-06T18:59:59") == "peak"  # 19:59:59 local
    assert band_at(tariffs, "2024-05-06T19:00:00") == "offpeak"  # 20:00:00 local


def test_peak_starts_at_eight_local_time_winter() -> None:
    tariffs = book()
    # Monday 8 January 2024, Lisbon is UTC+0
    assert band_at(tariffs, "2024-01-08T07:59:59") == "offpeak"
    assert band_at(tariffs, "2024-01-08T08:00:00") == "peak"


def test_dst_change_days_use_the_new_offset() -> None:
    every_day = [{"name": "main", "peak_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                  "weekend_days": [], "classes": {"x": {"per_minute": "1"}},
                  "prefixes": [{"prefix": "+", "class": "x"}]}]  # fmt: skip
    tariffs = book(tariffs=every_day)
    # 31 March 2024: clocks go 01:00 UTC -> 02:00 local. 07:30 UTC is 08:30 local (peak);
    # with the winter offset it would still be 07:30 (off-peak).
    assert band_at(tariffs, "2024-03-31T06:59:59") == "offpeak"  # 07:59:59 WEST
    assert band_at(tariffs, "2024-03-31T07:00:00") == "peak"  # 08:00:00 WEST
    assert band_at(tariffs, "2024-03-31T07:30:00") == "peak"
    # 27 October 2024: back to UTC+0 at 01:00 UTC; 07:30 UTC is 07:30 local
    assert band_at(tariffs, "2024-10-27T07:30:00") == "offpeak"
    assert band_at(tariffs, "2024-10-27T08:00:00") == "peak"


def test_weekend_days_are_the_weekend_band() -> None:
    tariffs = book()
    assert band_at(tariffs, "2024-05-04T09:00:00") == "weekend"  # Saturday 10:00 local
    assert band_at(tariffs, "2024-05-05T23:30:00") == "offpeak"  # Monday 00:30 local


def test_public_holidays_are_weekend_only_when_configured() -> None:
    # Thursday 25 April 2024 is Freedom Day in Portugal; 10:00 local = 09:00 UTC
    with_holidays = book(holidays_as_weekend=True, holiday_country="PT")
    assert band_at(with_holidays, "2024-04-25T09:00:00") == "weekend"
    assert band_at(with_holidays, "2024-04-24T09:00:00") == "peak"
    assert band_at(book(), "2024-04-25T09:00:00") == "peak"


def test_regional_holiday_needs_the_subdivision() -> None:
    # 13 June 2024 (Thursday) is Saint Anthony's, a holiday in Lisbon (subdivision 11) only
    lisbon = book(holidays_as_weekend=True, holiday_country="PT", holiday_subdivision="11")
    porto = book(holidays_as_weekend=True, holiday_country="PT", holiday_subdivision="13")
    assert band_at(lisbon, "2024-06-13T09:00:00") == "weekend"
    assert band_at(porto, "2024-06-13T09:00:00") == "peak"


# ----- tiers -----------------------------------------------------------------------------

TIERS = ((1, D("1.50")), (100, D("1.00")), (200, D("0.50")))


@pytest.mark.parametrize(
    ("call_number", "price"),
    [(1, "1.50"), (99, "1.50"), (100, "1.00"), (101, "1.00"), (199, "1.00"), (200, "0.50"),
     (201, "0.50"), (5000, "0.50")],
)  # fmt: skip
def test_tier_of_the_nth_call(call_number: int, price: str) -> None:
    assert tier_price(TIERS, call_number) == D(price)


def test_tier_price_is_added_to_the_time_price() -> None:
    answering = Pricing(per_minute=D("0.01"), tiers=TIERS)
    # 100th call, 2 minutes: 1.00 + 0.01 * 2
    assert call_price(answering, 120, "peak", tier_price(TIERS, 100)) == D("1.0200")


# ----- statements: rounding and VAT ------------------------------------------------------


def test_money_from_e4_is_exact() -> None:
    assert money_from_e4(1458) == D("0.1458")
    assert money_from_e4(0) == D("0.0000")
    assert money_from_e4(-2500) == D("-0.2500")
    assert money_from_e4(123_456_789) == D("12345.6789")


def test_statement_rounds_net_then_vat_half_up() -> None:
    accounting = AccountingConfig(vat_percent=D(23))
    # net 1.50, VAT 0.345 -> 0.35 (half up; half even would give 0.34)
    assert statement_totals(15_000, accounting) == (D("1.50"), D("0.35"), D("1.85"))
    # net 1.4850 -> 1.49 (half up), VAT 1.49 * 0.23 = 0.3427 -> 0.34
    assert statement_totals(14_850, accounting) == (D("1.49"), D("0.34"), D("1.83"))


def test_vat_once_on_the_total_not_per_call() -> None:
    accounting = AccountingConfig(vat_percent=D(23))
    # three calls of 0.50: per call VAT would be 0.115 -> 0.12, three times 0.36;
    # on the 1.50 total it is 0.345 -> 0.35
    assert statement_totals(3 * 5_000, accounting)[1] == D("0.35")


def test_statement_uses_the_currency_minor_unit() -> None:
    no_cents = AccountingConfig(currency="JPY", decimals=0, vat_percent=D(10))
    # 12.5 yen -> 13, VAT 1.3 -> 1
    assert statement_totals(125_000, no_cents) == (D("13"), D("1"), D("14"))


def test_statement_accepts_the_whole_config() -> None:
    from firmware.config.schema import Config

    config = Config.model_validate({"accounting": {"vat_percent": "23"}})
    assert statement_totals(15_000, config) == (D("1.50"), D("0.35"), D("1.85"))
