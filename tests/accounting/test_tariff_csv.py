"""Rate-deck CSV: both dialects, line-numbered errors, nothing half-loaded, overlap report."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from firmware.accounting.tariff_csv import RateDeckError, check_overlaps, parse_rate_deck
from firmware.accounting.tariffs import TariffBook
from firmware.config.accounting_schema import config_folder
from firmware.config.load import ConfigError, load_config, parse_config

SEMICOLON_DECK = """\ufeff# Portuguese rate deck, decimal comma
prefix;class;description;connection_fee;per_minute;increments
+3512;local;Geographic;;0,02;
+3519;mobile;Mobile;0,05;0,10;30/6

+44;intl-44;"United Kingdom; all";0,10;0,12;1/1
"""

COMMA_DECK = """prefix,class,per_minute,description
+33,intl-33,0.15,"France, all"
1820,services,"1,5",Directory
"""


def test_semicolon_deck_with_decimal_comma() -> None:
    rows = parse_rate_deck(SEMICOLON_DECK, "pt.csv")
    assert [(row.prefix, row.dest_class, row.source) for row in rows] == [
        ("+3512", "local", "pt.csv:3"),
        ("+3519", "mobile", "pt.csv:4"),
        ("+44", "intl-44", "pt.csv:6"),
    ]
    assert rows[0].overrides == {"per_minute": Decimal("0.02")}
    assert rows[1].overrides == {
        "connection_fee": Decimal("0.05"), "per_minute": Decimal("0.10"), "increments": (30, 6),
    }  # fmt: skip
    assert rows[2].description == "United Kingdom; all"


def test_comma_deck_with_quoted_decimal_comma() -> None:
    rows = parse_rate_deck(COMMA_DECK, "fr.csv")
    assert [(row.prefix, row.dest_class, row.overrides["per_minute"]) for row in rows] == [
        ("+33", "intl-33", Decimal("0.15")),
        ("1820", "services", Decimal("1.5")),
    ]
    assert rows[0].description == "France, all"


def errors_of(text: str) -> list[str]:
    with pytest.raises(RateDeckError) as caught:
        parse_rate_deck(text, "deck.csv")
    return caught.value.errors


def test_every_bad_row_is_reported_with_its_line() -> None:
    text = (
        "prefix;class;per_minute;increments\n"  # line 1
        "+3512;local;0,02;60/60\n"  # line 2: fine
        "+35A;local;0,02;\n"  # line 3: bad prefix
        "+3519;mobile;-0,10;\n"  # line 4: negative price
        "+44;intl-44;0,12;60\n"  # line 5: bad increments
        "+33;intl-33\n"  # line 6: too few fields
        "+34;9bad;0,1;\n"  # line 7: bad class name
        "+35;x;0,1,2;\n"  # line 8: not an amount
    )
    errors = errors_of(text)
    assert [error.split(":")[0] for error in errors] == [
        "line 3", "line 4", "line 5", "line 6", "line 7", "line 8",
    ]  # fmt: skip
    assert "prefix '+35A'" in errors[0]
    assert "per_minute: '-0,10' is not an amount" in errors[1]
    assert "increments '60' must be FIRST/NEXT" in errors[2]
    assert "2 fields, the header has 4" in errors[3]


def test_header_problems() -> None:
    assert errors_of("") == ["the file has no header line (prefix, class, ...)"]
    assert errors_of("prefix;rate\n+351;0,1\n") == [
        "line 1: unknown column 'rate'; columns are prefix, class, description, connection_fee, "
        "per_minute, per_minute_offpeak, per_minute_weekend, increments, minimum",
        "line 1: the header needs a 'class' column",
    ]


def test_duplicate_prefix_with_another_class_is_an_error() -> None:
    errors = errors_of("prefix,class\n+3519,mobile\n+3512,local\n+3519,premium\n")
    assert errors == [
        "deck.csv:4: prefix +3519 is already mobile at deck.csv:2 "
        "(a duplicate with another class or price: remove one)"
    ]


def test_overlap_report_errors_and_overrides() -> None:
    rows = parse_rate_deck(
        "prefix,class\n+351,national\n+3519,mobile\n+3519,mobile\n+44,x\n", "d.csv"
    )
    errors, notes = check_overlaps(rows)
    assert errors == []
    assert notes == [
        "d.csv:4: prefix +3519 repeats d.csv:3 (same class)",
        "d.csv:3: +3519 (mobile) overrides +351 (national, d.csv:2) for numbers starting +3519",
    ]


# ----- the deck in a config --------------------------------------------------------------

CONFIG = """
[site]
timezone = "Europe/Lisbon"

[accounting]
default_tariff = "main"

[[accounting.tariffs]]
name = "main"
rates_csv = "{deck}"
prefixes = [{{ prefix = "+", class = "international" }}]

[accounting.tariffs.classes.local]
connection_fee = "0.05"

[accounting.tariffs.classes.mobile]
per_minute = "0.09"

[accounting.tariffs.classes.international]
per_minute = "0.30"
"""


def write_config(folder: Path, deck_text: str) -> Path:
    (folder / "rates.csv").write_text(deck_text, "utf-8")
    path = folder / "pbx.toml"
    path.write_text(CONFIG.format(deck="rates.csv"), "utf-8")
    return path


def test_deck_is_found_next_to_the_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, SEMICOLON_DECK)
    with config_folder(tmp_path):
        config = load_config(path)
    tariff = config.accounting.tariffs[0]
    assert [row.prefix for row in tariff.rows] == ["+", "+3512", "+3519", "+44"]
    book = TariffBook(config.accounting, config.site.timezone)
    found = book.classify(book.tariffs["main"], "912345678", "outgoing")
    assert found is not None and found.dest_class == "mobile"
    # the row's own prices replace the class's: 0.10 per minute, not the class's 0.09
    assert (found.pricing.per_minute, found.pricing.connection_fee) == (
        Decimal("0.10"),
        Decimal("0.05"),
    )


def test_bad_deck_fails_the_config_with_line_numbers(tmp_path: Path) -> None:
    path = write_config(tmp_path, "prefix;class;per_minute\n+3512;local;0,02\n+3519;mobile;x\n")
    with config_folder(tmp_path), pytest.raises(ConfigError) as caught:
        load_config(path)
    (message,) = caught.value.errors
    assert message.startswith("accounting.tariffs[0]: rates_csv rates.csv: 1 error(s)")
    assert "line 3: per_minute: 'x' is not an amount" in message


def test_missing_deck_fails_the_config(tmp_path: Path) -> None:
    with config_folder(tmp_path), pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.format(deck="nowhere.csv"))
    assert "cannot read the file: No such file or directory" in caught.value.errors[0]


def test_row_with_an_undefined_class_needs_its_own_price(tmp_path: Path) -> None:
    path = write_config(tmp_path, "prefix,class\n+3512,local\n+3516,premium\n")
    with config_folder(tmp_path), pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "rates.csv:3: class 'premium' is not in classes" in caught.value.errors[0]


def test_conflict_between_the_config_and_the_deck(tmp_path: Path) -> None:
    path = write_config(tmp_path, "prefix,class\n+,local\n")
    with config_folder(tmp_path), pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "rates.csv:2: prefix + is already international at prefixes[0]" in caught.value.errors[0]
