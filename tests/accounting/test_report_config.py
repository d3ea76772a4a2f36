"""The [reports] section: departments, CSV dialect by country, errors that say what to fix."""

from __future__ import annotations

import pytest

from firmware.config.load import ConfigError, default_config_text, parse_config


def test_departments_and_defaults() -> None:
    config = parse_config(
        default_config_text()
        + """
        [reports.departments]
        sales = ["201", "202"]
        support = ["203"]
        """
    )
    assert config.reports.departments == {"sales": ("201", "202"), "support": ("203",)}
    assert (config.reports.csv_dialect, config.reports.top_numbers) == ("auto", 20)


@pytest.mark.parametrize(
    ("country", "dialect"),
    [
        ("pt", "semicolon"),
        ("ru", "semicolon"),
        ("cz", "semicolon"),
        ("uk", "comma"),
        ("eu", "comma"),
    ],
)
def test_csv_dialect_follows_the_country_unless_set(country: str, dialect: str) -> None:
    config = parse_config(f'[site]\ncountry = "{country}"\n')
    assert config.reports.dialect_for(config.site.country) == dialect
    config = parse_config(f'[site]\ncountry = "{country}"\n[reports]\ncsv_dialect = "comma"\n')
    assert config.reports.dialect_for(config.site.country) == "comma"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[reports.departments]\nsales = ["201"]\nsupport = ["201"]\n',
            "in both 'sales' and 'support'",
        ),
        ("[reports.departments]\nsales = []\n", "list at least one extension"),
        ('[reports.departments]\nsales = ["2O1"]\n', "must be 2 to 4 digits"),
        ('[reports.departments]\n"1st" = ["201"]\n', "must start with a letter"),
        ('[reports]\ncsv_dialect = "tab"\n', "csv_dialect"),
        ("[reports]\ntop_numbers = 0\n", "top_numbers"),
    ],
)
def test_bad_report_settings(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert message in "\n".join(caught.value.errors)
