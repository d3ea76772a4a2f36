"""The tariff holiday country is checked like the office modes' one: same rules, same help."""

from __future__ import annotations

import pytest

from firmware.config.load import ConfigError, default_config_text, parse_config


def with_holidays(country: str, subdivision: str) -> str:
    return (
        default_config_text()
        .replace('holiday_country = "PT"', f'holiday_country = "{country}"')
        .replace('holiday_subdivision = ""', f'holiday_subdivision = "{subdivision}"')
    )


def test_an_unknown_country_is_refused_with_examples() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_holidays("XX", ""))
    assert caught.value.errors == [
        "accounting: holiday_country: 'XX' is not a country the holidays package knows; use an "
        "ISO 3166-1 alpha-2 code such as 'PT', 'ES', 'FR', 'DE', 'GB' or 'US'"
    ]


def test_an_unknown_subdivision_lists_the_real_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_holidays("PT", "99"))
    (error,) = caught.value.errors
    assert error.startswith("accounting: holiday_subdivision: '99' is not a subdivision of PT")
    assert "11 (Lisboa)" in error


def test_a_subdivision_by_name_is_accepted() -> None:
    config = parse_config(with_holidays("PT", "Lisboa"))
    assert config.accounting.holiday_subdivision == "Lisboa"
