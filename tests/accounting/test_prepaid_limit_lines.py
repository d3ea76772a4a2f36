"""The limit of a call on the tariff its line uses, at its answer time (hand-computed)."""

from __future__ import annotations

from datetime import UTC, datetime

from firmware.accounting.tariffs import TariffBook
from firmware.calls.cdr import Direction
from firmware.calls.prepaid_limit import call_limit_s, cannot_pay_first_increment, limit_on_line
from firmware.calls.session import RecordDraft
from firmware.config.accounting_schema import AccountingConfig, PrepaidConfig

ACCOUNT = PrepaidConfig(name="lobby", extensions=("208",))
ACCOUNTING = AccountingConfig.model_validate(
    {
        "vat_percent": "23",
        "holidays_as_weekend": False,
        "default_tariff": "main",
        "tariffs": [
            {
                "name": "main",
                "peak_start": "08:00",
                "peak_end": "20:00",
                "peak_days": ["mon", "tue", "wed", "thu", "fri"],
                "classes": {
                    "mobile": {"per_minute": "0.10"},  # the tariff's 60/60
                    "local": {"per_minute": "0.60", "per_minute_offpeak": "0.30", "increments": "1/1"},
                    "tiered": {
                        "per_minute": "0.60", "increments": "1/1",
                        "tiers": [{"from_call": 1, "price": "0.05"}, {"from_call": 10, "price": "0.01"}],
                    },
                },
                "prefixes": [
                    {"prefix": "+3512", "class": "local"},
                    {"prefix": "+3519", "class": "mobile"},
                    {"prefix": "+3517", "class": "tiered"},
                ],
            },
            {"name": "cheap", "applies_to": ["provider"], "increments": "1/1",
             "prefixes": [{"prefix": "+", "class": "any", "per_minute": "0.06"}]},
        ],
    }
)
BOOK = TariffBook(ACCOUNTING, "Europe/Lisbon")
MONDAY_10H = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Lisbon is on UTC in November
MONDAY_21H = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
CITY = ("city", "city1")


def limit(number: str, balance_e4: int, at: datetime = MONDAY_10H, line=CITY) -> int | None:
    return limit_on_line(BOOK, ACCOUNTING, ACCOUNT, number, line, at, balance_e4)


def test_whole_minutes_on_the_default_tariff() -> None:
    assert limit("912345678", 2000) == 120  # 0.20 pays two minutes at 0.10
    assert limit("912345678", 999) == 0  # not the first minute


def test_the_band_at_the_answer_time() -> None:
    assert limit("212345678", 300, MONDAY_10H) == 3  # peak 0.01 a second
    assert limit("212345678", 300, MONDAY_21H) == 6  # off-peak 0.005 a second


def test_a_tiered_class_counts_its_dearest_tier() -> None:
    assert limit("712345678", 800) == 3  # 0.05 + 3 x 0.01


def test_the_tariff_of_the_line_used() -> None:
    assert limit("912345678", 300, line=("sip", "provider")) == 30  # 0.03 at 0.001 a second


def test_a_number_no_tariff_classifies_has_no_limit() -> None:
    assert limit("1820", 0) is None  # not rated, so it draws nothing


def test_from_the_record_draft() -> None:
    draft = RecordDraft(Direction.OUTGOING, external_number="212345678", line="city1",
                        line_group="city", answer=MONDAY_21H)  # fmt: skip
    assert call_limit_s(BOOK, ACCOUNTING, ACCOUNT, draft, 300) == 6


def test_refused_when_any_line_cannot_pay_the_first_increment() -> None:
    lines = [CITY, ("sip", "provider")]
    assert cannot_pay_first_increment(BOOK, ACCOUNTING, ACCOUNT, "912345678", lines, 999)
    assert not cannot_pay_first_increment(BOOK, ACCOUNTING, ACCOUNT, "912345678", lines, 1000)
    assert not cannot_pay_first_increment(BOOK, ACCOUNTING, ACCOUNT, "912345678", [("sip", "provider")], 999)
