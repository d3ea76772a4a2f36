"""Number normalisation and longest-prefix classification, '+' (E.164) and raw prefixes."""

from __future__ import annotations

import pytest

from firmware.accounting.tariffs import TariffBook
from firmware.config.accounting_schema import AccountingConfig

PREFIXES = [
    {"prefix": "+3512", "class": "local"},
    {"prefix": "+3519", "class": "mobile"},
    {"prefix": "+35196", "class": "mobile96"},
    {"prefix": "+35118", "class": "national"},
    {"prefix": "+44", "class": "intl-44"},
    {"prefix": "+", "class": "international"},
    {"prefix": "112", "class": "emergency"},
    {"prefix": "18", "class": "services"},
    {"prefix": "+351213000", "class": "answering"},
]
CLASSES = {
    name: {"per_minute": "0.10"}
    for name in ("local", "mobile", "mobile96", "national", "intl-44", "international",
                 "emergency", "services")
}  # fmt: skip
CLASSES["answering"] = {"direction": "incoming", "connection_fee": "1.00"}


def book(**numbering: str) -> TariffBook:
    accounting = AccountingConfig.model_validate(
        {"tariffs": [{"name": "main", "classes": CLASSES, "prefixes": PREFIXES}], **numbering}
    )
    return TariffBook(accounting, "Europe/Lisbon")


def classify(tariffs: TariffBook, number: str, direction: str = "outgoing") -> str | None:
    found = tariffs.classify(tariffs.tariffs["main"], number, direction)
    return None if found is None else found.dest_class


@pytest.mark.parametrize(
    ("number", "e164"),
    [
        ("213456789", "+351213456789"),  # Portugal dials no trunk prefix
        ("00441234567", "+441234567"),
        ("+351912345678", "+351912345678"),
        ("112", "+351112"),
        ("*72", None),
        ("+35191x", None),
    ],
)
def test_e164_form_in_portugal(number: str, e164: str | None) -> None:
    assert book().e164(number) == e164


@pytest.mark.parametrize(
    ("number", "e164"),
    [
        ("02071234567", "+442071234567"),  # trunk prefix 0 replaced by the country code
        ("00351213456789", "+351213456789"),  # the international prefix wins over "0"
        ("2071234567", None),  # no trunk prefix: a local or short number, no E.164 form
        ("999", None),
    ],
)
def test_e164_form_with_a_national_prefix(number: str, e164: str | None) -> None:
    uk = book(country_code="44", national_prefix="0", international_prefix="00")
    assert uk.e164(number) == e164


def test_longest_e164_prefix_wins() -> None:
    tariffs = book()
    assert classify(tariffs, "912345678") == "mobile"
    assert classify(tariffs, "961234567") == "mobile96"
    assert classify(tariffs, "213456789") == "local"
    assert classify(tariffs, "004420123456") == "intl-44"
    assert classify(tariffs, "0033123456789") == "international"  # only "+" matches


def test_raw_prefixes_win_over_longer_e164_ones() -> None:
    tariffs = book()
    # 1820 is +3511820 in E.164 and "+35118" is longer than "18", but raw prefixes go first
    assert classify(tariffs, "1820") == "services"
    assert classify(tariffs, "112") == "emergency"
    # a number given as +351... is not "as dialled 18...": the E.164 prefix applies
    assert classify(tariffs, "+3511820") == "national"


def test_incoming_classes_match_only_incoming_dids() -> None:
    tariffs = book()
    assert classify(tariffs, "213000010", "incoming") == "answering"
    assert classify(tariffs, "213000010", "outgoing") == "local"
    assert classify(tariffs, "213456789", "incoming") is None


def test_number_without_any_matching_prefix() -> None:
    accounting = AccountingConfig.model_validate(
        {"tariffs": [{"name": "main", "classes": {"local": {}},
                      "prefixes": [{"prefix": "+3512", "class": "local"}]}]}
    )  # fmt: skip
    tariffs = TariffBook(accounting, "UTC")
    assert tariffs.classify(tariffs.tariffs["main"], "912345678", "outgoing") is None


def test_row_prices_override_the_class() -> None:
    accounting = AccountingConfig.model_validate(
        {"tariffs": [{"name": "main", "increments": "60/60",
                      "classes": {"international": {"connection_fee": "0.10", "per_minute": "0.25",
                                                    "increments": "1/1"}},
                      "prefixes": [{"prefix": "+", "class": "international"},
                                   {"prefix": "+44", "class": "international", "per_minute": "0.12"},
                                   {"prefix": "+1", "class": "intl-1", "per_minute": "0.05"}]}]}
    )  # fmt: skip
    tariffs = TariffBook(accounting, "UTC")
    main = tariffs.tariffs["main"]
    uk = tariffs.classify(main, "00442071234567", "outgoing")
    assert uk is not None and uk.dest_class == "international"
    assert (str(uk.pricing.per_minute), str(uk.pricing.connection_fee), uk.pricing.first_s) == (
        "0.12", "0.10", 1,
    )  # fmt: skip
    # a class defined only by its row: its own per_minute, the tariff's increments, no fee
    usa = tariffs.classify(main, "0012125550100", "outgoing")
    assert usa is not None and usa.dest_class == "intl-1"
    assert (str(usa.pricing.per_minute), str(usa.pricing.connection_fee), usa.pricing.first_s) == (
        "0.05", "0", 60,
    )  # fmt: skip


def test_tariff_for_a_line_group_trunk_or_sibling_else_the_default() -> None:
    accounting = AccountingConfig.model_validate(
        {"tariffs": [{"name": "city", "applies_to": ["city"]},
                     {"name": "voip", "applies_to": ["provider", "porto"]},
                     {"name": "fallback"}],
         "default_tariff": "fallback"}
    )  # fmt: skip
    tariffs = TariffBook(accounting, "UTC")
    assert tariffs.tariff_for("city", "city1", None).name == "city"  # type: ignore[union-attr]
    assert tariffs.tariff_for(None, "provider", None).name == "voip"  # type: ignore[union-attr]
    assert tariffs.tariff_for(None, "sibling:porto", "porto").name == "voip"  # type: ignore[union-attr]
    assert tariffs.tariff_for(None, None, None).name == "fallback"  # type: ignore[union-attr]
    no_default = TariffBook(AccountingConfig.model_validate({"tariffs": [{"name": "city"}]}), "UTC")
    assert no_default.tariff_for("city", "city1", None) is None
