"""The SMDR line, byte for byte against the layout in docs/smdr.md (expected lines typed by hand).

Column ruler (1-based, as in the docs table):

         1         2         3         4         5         6         7         8         9
123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456
Date     Time    Ext   CO     Dial Number                Ring Duration      Cost Acc code     CD
"""

from __future__ import annotations

from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from firmware.accounting.smdr import SmdrFormatter, cost_text, duration_text, ring_text
from firmware.config.load import default_config_text, load_config, parse_config

LISBON = ZoneInfo("Europe/Lisbon")


def row(**values: Any) -> dict[str, Any]:
    """A stored cdr row (column names, times as stored text) with ordinary defaults."""
    base: dict[str, Any] = {
        "call_id": "c1",
        "start_utc": "2024-05-01T12:34:56.789Z",
        "answer_utc": "2024-05-01T12:35:04.000Z",
        "end_utc": "2024-05-01T12:36:27.001Z",
        "caller_number": "202",
        "caller_name": "Sales",
        "dialled": "9212345678",
        "called_extension": None,
        "answered_extension": None,
        "line": "city1",
        "line_group": "city",
        "direction": "outgoing",
        "disposition": "answered",
        "transferred_by": None,
        "account_code": None,
        "external_number": "212345678",
        "cost_e4": None,
        "currency": "EUR",
    }
    base.update(values)
    return base


@pytest.fixture
def office() -> SmdrFormatter:
    return SmdrFormatter.from_config(load_config())  # eu, Europe/Lisbon, EUR


def test_header_is_titles_over_their_columns_then_a_rule(office) -> None:
    assert office.header() == (
        b"Date     Time    Ext   CO     Dial Number                Ring Duration      Cost "
        b"Acc code     CD\r\n" + b"-" * 96 + b"\r\n"
    )


def test_outgoing_call_with_cost_and_account_code(office) -> None:
    # 13:34 in Lisbon (UTC+1 in May); ring 7.211 s -> 0'07; billed 83.001 s -> 84 s;
    # 1.2250 EUR rounds half up to 1.23 (half-even would give 1.22).
    line = office.line(row(cost_e4=12250, account_code="4711"))
    assert line == (
        b"01/05/24 13:34   202   city1  212345678                  0'07 00:01'24      1.23 "
        b"4711           \r\n"
    )
    assert len(line) == 98


def test_incoming_call_answered_by_another_phone_of_the_ring_group_is_in_not_forwarded(
    office,
) -> None:
    line = office.line(
        row(
            direction="incoming",
            line="city2",
            caller_number="912345678",
            dialled="",
            external_number=None,
            called_extension="201",
            answered_extension="202",
        )
    )
    assert line == (
        b"01/05/24 13:34   202   city2  <I>912345678               0'07 00:01'24           "
        b"             IN\r\n"
    )


def test_incoming_call_answered_outside_the_lines_destinations_is_forwarded(office) -> None:
    line = office.line(
        row(
            direction="incoming",
            caller_number="212345678",
            called_extension="201",
            answered_extension="205",
            external_number=None,
        )
    )
    assert line[17:22] == b"205  "
    assert line[94:98] == b"FW\r\n"


def test_transferred_internal_call_shows_tr_and_no_line(office) -> None:
    line = office.line(
        row(
            direction="internal",
            caller_number="206",
            dialled="203",
            line=None,
            line_group=None,
            external_number=None,
            called_extension="203",
            answered_extension="203",
            transferred_by="201",
        )
    )
    assert line == (
        b"01/05/24 13:34   206          203                        0'07 00:01'24           "
        b"             TR\r\n"
    )


def test_unanswered_incoming_call_rings_for_its_whole_length_and_costs_nothing(office) -> None:
    line = office.line(
        row(
            direction="incoming",
            caller_number="",
            answer_utc=None,
            disposition="abandoned",
            end_utc="2024-05-01T12:36:10.500Z",
            called_extension="201",
            external_number=None,
        )
    )
    # 12:34:56.789 -> 12:36:10.500 is 73.711 s of ringing: 1'13.
    assert line == (
        b"01/05/24 13:34   201   city1  <I>                        1'13 00:00'00           "
        b"             NA\r\n"
    )


@pytest.mark.parametrize(
    ("disposition", "code"),
    [("busy", b"BY"), ("no_answer", b"NA"), ("rejected", b"RJ"), ("invalid", b"IV"),
     ("congestion", b"CG"), ("failed", b"FL")],
)  # fmt: skip
def test_each_unanswered_disposition_has_its_condition_code(office, disposition, code) -> None:
    line = office.line(row(answer_utc=None, disposition=disposition))
    assert line[94:96] == code
    assert line[62:70] == b"00:00'00"


def test_us_site_prints_month_first_and_twelve_hour_time() -> None:
    text = (
        default_config_text()
        .replace('country = "eu"', 'country = "us"')
        .replace('timezone = "Europe/Lisbon"', 'timezone = "America/New_York"')
    )
    formatter = SmdrFormatter.from_config(parse_config(text))
    # 04:05 UTC on 2 January is 23:05 on 1 January in New York (UTC-5).
    late = formatter.line(row(start_utc="2024-01-02T04:05:00.000Z",
                              answer_utc="2024-01-02T04:05:10.000Z",
                              end_utc="2024-01-02T04:06:00.000Z"))  # fmt: skip
    assert late[:17] == b"01/01/24 11:05PM "
    midnight = formatter.line(row(start_utc="2024-07-04T04:00:00.000Z",
                                  answer_utc="2024-07-04T04:00:01.000Z",
                                  end_utc="2024-07-04T04:00:02.000Z"))  # fmt: skip
    assert midnight[:17] == b"07/04/24 12:00AM "


def test_date_format_and_line_labels_from_config() -> None:
    text = (
        default_config_text()
        + '\n[smdr]\ndate_format = "yy/mm/dd"\ntime_format = "12h"\n'
        + ('[smdr.line_labels]\ncity1 = "01"\n')
    )
    formatter = SmdrFormatter.from_config(parse_config(text))
    assert formatter.line(row())[:30] == b"24/05/01 01:34PM 202   01     "


def test_numbers_and_codes_are_cut_to_printable_ascii_and_their_width(office) -> None:
    line = office.line(
        row(external_number="+351 21 ñ\t0123456789012345678901234", account_code="Café 7")
    )
    assert line[30:55] == b"+351?21???012345678901234"
    assert line[81:93] == b"Caf??7      "
    assert line.decode("ascii")


@pytest.mark.parametrize(
    ("cost_e4", "currency", "text"),
    [
        (None, "EUR", b"         "),
        (0, "EUR", b"     0.00"),
        (5, "EUR", b"     0.00"),  # 0.0005 -> 0.00
        (50, "EUR", b"     0.01"),  # 0.005 rounds half up
        (1234567, "JPY", b"      123"),  # no minor unit
        (1234567, "KWD", b"  123.457"),  # three decimals
        (99999999949, "EUR", b"*********"),  # 9999999.99 needs 10 characters
    ],
)
def test_cost_column_follows_the_currency_minor_unit(office, cost_e4, currency, text) -> None:
    assert office.line(row(cost_e4=cost_e4, currency=currency))[71:80] == text


def test_the_configured_minor_unit_wins_for_the_configured_currency() -> None:
    formatter = SmdrFormatter(timezone=UTC, currency="EUR", decimals=3)
    assert formatter.line(row(cost_e4=12345, currency="EUR"))[71:80] == b"    1.235"
    assert formatter.line(row(cost_e4=12345, currency="USD"))[71:80] == b"     1.23"


def test_ring_and_duration_texts_and_their_caps() -> None:
    assert ring_text(0) == "0'00"
    assert ring_text(125) == "2'05"
    assert ring_text(100 * 60) == "99'59"
    assert duration_text(3600 + 61) == "01:01'01"
    assert duration_text(100 * 3600) == "99:59'59"
    assert cost_text(None, 2, 9) == ""


def test_bad_time_zone_is_named_in_the_error() -> None:
    config = load_config()
    # The config loader refuses unknown zones; the formatter says so too if handed one.
    broken = config.model_copy(
        update={"site": config.site.model_copy(update={"timezone": "Mars/Base"})}
    )
    with pytest.raises(ValueError, match=r"site\.timezone 'Mars/Base'"):
        SmdrFormatter.from_config(broken)


def test_utc_formatter_for_a_winter_date() -> None:
    formatter = SmdrFormatter(timezone=UTC)
    assert formatter.line(row(start_utc="2024-12-31T23:59:59.999Z",
                              answer_utc="2025-01-01T00:00:00.000Z",
                              end_utc="2025-01-01T00:00:00.001Z"))[:30] == (
        b"31/12/24 23:59   202   city1  "
    )  # fmt: skip
