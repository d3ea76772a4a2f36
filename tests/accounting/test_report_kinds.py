"""Each report kind over the sample office, against figures worked out by hand.

The sample and its arithmetic are in test_report_sample.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from firmware.accounting.reports import (
    REPORTS,
    ColumnKind,
    Filters,
    Report,
    ReportError,
    ReportSettings,
    StatementTotals,
    run_report,
)
from firmware.calls.cdr import open_readonly
from tests.accounting.test_report_sample import MAY, SETTINGS, build_other_site, build_sample


@pytest.fixture(scope="module")
def sample_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = open_readonly(build_sample(tmp_path_factory.mktemp("sample")))
    yield connection
    connection.close()


def rows_by_key(report: Report, key: str = "") -> dict[Any, dict[str, Any]]:
    """Rows as {first cell: {column key: value}}."""
    keys = [column.key for column in report.columns]
    index = keys.index(key) if key else 0
    return {row[index]: dict(zip(keys, row, strict=True)) for row in report.rows}


def totals(report: Report) -> dict[str, Any]:
    assert report.totals is not None
    return dict(zip([column.key for column in report.columns], report.totals, strict=True))


def test_extension_report(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "extension", MAY, SETTINGS)
    rows = rows_by_key(report)
    assert list(rows) == ["201", "202", "203", "204"]
    assert rows["201"] == {
        "extension": "201",
        "name": "Zé Conceição",
        "calls": 4,
        "outgoing": 4,
        "incoming": 0,
        "internal": 0,
        "answered": 3,
        "talk_s": 183,  # 120 + 61.5 + 1 = 182.5, half up
        "cost": Decimal("1.50"),
        "unrated": 0,
    }
    assert rows["202"]["cost"] == Decimal("0.13")  # 0.1250 rounds half up
    assert rows["202"]["unrated"] == 1
    # 203: H answered, I missed (both rang 203), K made; only K is rated (free).
    assert (rows["203"]["incoming"], rows["203"]["internal"], rows["203"]["answered"]) == (2, 1, 2)
    assert rows["203"]["cost"] == Decimal("0.00")
    # 204: J (transferred to it), L, M, P; P is in USD so not in the EUR cost.
    assert (rows["204"]["calls"], rows["204"]["cost"]) == (4, Decimal("0.02"))
    assert totals(report) == {
        "extension": "Total",
        "name": None,
        "calls": 14,
        "outgoing": 9,
        "incoming": 3,
        "internal": 2,
        "answered": 12,
        "talk_s": 948,
        "cost": Decimal("1.65"),  # 1.6450 half up, not the sum of rounded rows
        "unrated": 1,
    }
    assert report.unrated_calls == 1
    assert any("USD" not in note and "another currency" in note for note in report.notes)
    assert any("1 answered outgoing call(s) have no cost" in note for note in report.notes)


def test_column_kinds_say_what_the_values_are(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "extension", MAY, SETTINGS)
    kinds = {column.key: column.kind for column in report.columns}
    assert kinds["cost"] is ColumnKind.MONEY
    assert kinds["talk_s"] is ColumnKind.DURATION
    assert kinds["calls"] is ColumnKind.INTEGER
    assert report.columns[report.column_index("cost")].title == "Cost EUR (net)"


def test_department_report_adds_up_to_the_total(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "department", MAY, SETTINGS)
    rows = rows_by_key(report)
    assert list(rows) == ["sales", "support", "(no department)"]
    assert rows["sales"]["members"] == "201, 202"
    assert (rows["sales"]["calls"], rows["sales"]["cost"]) == (7, Decimal("1.63"))  # 1.625
    assert (rows["support"]["calls"], rows["support"]["cost"]) == (3, Decimal("0.00"))
    assert (rows["(no department)"]["calls"], rows["(no department)"]["cost"]) == (
        4,
        Decimal("0.02"),
    )
    assert totals(report)["calls"] == 14
    assert totals(report)["cost"] == Decimal("1.65")


def test_line_report(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "line", MAY, SETTINGS)
    rows = rows_by_key(report)
    assert list(rows) == ["fxo:1", "fxo:2", "sib:porto"]
    assert rows["fxo:1"] | {} == {
        "line": "fxo:1",
        "line_group": "city",
        "calls": 9,
        "outgoing": 9,
        "incoming": 0,
        "answered": 8,
        "talk_s": 568,  # 182.5 + 355 + 20 + 10 = 567.5
        "cost": Decimal("1.65"),
        "unrated": 1,
    }
    assert rows["fxo:2"]["cost"] is None  # incoming calls carry no cost: blank, not zero
    assert (rows["fxo:2"]["calls"], rows["fxo:2"]["answered"]) == (3, 2)
    assert rows["sib:porto"]["line_group"] == "sibling"
    assert totals(report)["calls"] == 13  # K used no line


def test_class_report_with_share_of_cost(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "class", MAY, SETTINGS)
    rows = rows_by_key(report)
    assert list(rows) == [
        "free",
        "internal",
        "intl-44",
        "local",
        "mobile",
        "sibling",
        "(no class)",
    ]
    assert (rows["local"]["calls"], rows["local"]["cost"]) == (5, Decimal("0.14"))  # 1440 e4
    assert rows["local"]["share"] == Decimal("0.0875")  # 1440 / 16450
    assert rows["intl-44"]["average_talk_s"] == 62  # 61.5 half up
    assert rows["(no class)"]["calls"] == 4  # G, H, I, J
    assert rows["(no class)"]["cost"] is None
    assert totals(report)["share"] == Decimal("1.0000")


def test_account_report(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "account", MAY, SETTINGS)
    rows = rows_by_key(report)
    assert list(rows) == ["ACME", "BETA", "(no code)"]
    assert (rows["ACME"]["calls"], rows["ACME"]["cost"]) == (2, Decimal("0.50"))
    assert (rows["BETA"]["calls"], rows["BETA"]["cost"]) == (1, Decimal("0.12"))
    assert (rows["(no code)"]["calls"], rows["(no code)"]["cost"]) == (11, Decimal("1.02"))


def test_top_numbers_with_the_rest_in_one_row(sample_connection: sqlite3.Connection) -> None:
    filters = Filters(start=MAY.start, end=MAY.end, top=3)
    report = run_report(sample_connection, "top-numbers", filters, SETTINGS)
    rows = list(report.rows)
    keys = [column.key for column in report.columns]
    assert keys == ["rank", "number", "calls", "answered", "talk_s", "cost", "last_call"]
    assert [row[:5] for row in rows] == [
        (1, "212345678", 3, 2, 301),
        (2, "912000000", 2, 1, 60),  # incoming: the caller's number
        (3, "212222222", 2, 2, 30),
        (None, "(5 other numbers)", 5, 5, 437),  # 200 + 120 + 61.5 + 45 + 10 = 436.5
    ]
    assert rows[0][5] == Decimal("0.12")  # C 5 + D 0 + E 1235
    assert rows[0][6] == datetime(2024, 5, 4, 10, 0, tzinfo=UTC)
    assert rows[3][5] == Decimal("1.50")  # A + B + F (G unrated)
    assert totals(report)["calls"] == 12  # every outside call; K and L are internal


def test_daily_report_uses_local_days(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "daily", MAY, SETTINGS)
    rows = rows_by_key(report)
    assert len(rows) == 31
    assert rows[date(2024, 5, 1)]["calls"] == 1  # M, 23:30 UTC the day before
    assert rows[date(2024, 5, 1)]["weekday"] == "Wed"
    assert rows[date(2024, 5, 2)]["calls"] == 2
    assert rows[date(2024, 5, 8)]["calls"] == 0  # J was 23:30 UTC on the 8th ...
    assert rows[date(2024, 5, 9)]["calls"] == 1  # ... 00:30 on the 9th in Lisbon
    assert rows[date(2024, 5, 31)]["calls"] == 0  # N belongs to June
    assert rows[date(2024, 5, 3)]["cost"] == Decimal("0.00")  # C 5 e4 + D 0
    assert sum(row["calls"] for row in rows.values()) == totals(report)["calls"] == 14


def test_hourly_report_uses_local_hours(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "hourly", MAY, SETTINGS)
    rows = rows_by_key(report)
    assert list(rows) == [f"{hour:02d}:00" for hour in range(24)]
    assert rows["00:00"]["calls"] == 2  # M and J, both 00:30 local
    assert rows["09:00"]["calls"] == 1  # A, 08:00 UTC
    assert rows["10:00"]["calls"] == 2  # B 09:30 UTC and H 09:00 UTC
    assert rows["23:00"]["calls"] == 0


def test_daily_and_hourly_across_the_spring_change(tmp_path: Path) -> None:
    """Lisbon moves from UTC+0 to UTC+1 at 01:00 UTC on 31 March 2024."""
    from tests.accounting.test_report_sample import _out, write_calls

    calls = (
        _out("before", "2024-03-30T23:30:00", "201", "212345678", 10),  # 30 March 23:30
        _out("night", "2024-03-31T00:30:00", "201", "212345678", 10),  # 31 March 00:30 WET
        _out("after", "2024-03-31T01:30:00", "201", "212345678", 10),  # 31 March 02:30 WEST
        _out("late", "2024-03-31T23:30:00", "201", "212345678", 10),  # 1 April 00:30 WEST
    )
    connection = open_readonly(write_calls(tmp_path / "cdr.sqlite3", calls, {}))
    filters = Filters(start=date(2024, 3, 30), end=date(2024, 4, 1))
    daily = rows_by_key(run_report(connection, "daily", filters, SETTINGS))
    assert [row["calls"] for row in daily.values()] == [1, 2, 1]
    hourly = rows_by_key(run_report(connection, "hourly", filters, SETTINGS))
    assert (hourly["23:00"]["calls"], hourly["00:00"]["calls"], hourly["02:00"]["calls"]) == (
        1,
        2,
        1,
    )
    assert hourly["01:00"]["calls"] == 0
    starts = [row[0] for row in run_report(connection, "calls", filters, SETTINGS).rows]
    assert [start.strftime("%d %H:%M") for start in starts] == [
        "30 23:30",
        "31 00:30",
        "31 02:30",
        "01 00:30",
    ]
    connection.close()


def test_incoming_summary(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "incoming-summary", MAY, SETTINGS)
    rows = rows_by_key(report)
    assert list(rows) == ["201", "203"]
    assert rows["201"] | {} == {
        "extension": "201",
        "name": "Zé Conceição",
        "calls": 1,
        "answered": 1,
        "answered_here": 0,
        "answered_elsewhere": 1,  # J was transferred to 204
        "unanswered": 0,
        "answer_rate": Decimal("1.0000"),
        "transferred": 1,
        "average_ring_s": 10,
        "longest_ring_s": 10,
        "talk_s": 60,
    }
    assert rows["203"]["answer_rate"] == Decimal("0.5000")
    assert (rows["203"]["average_ring_s"], rows["203"]["longest_ring_s"]) == (8, 25)
    total = totals(report)
    assert (total["calls"], total["answered"], total["unanswered"]) == (3, 2, 1)
    assert total["answer_rate"] == Decimal("0.6667")
    assert (total["average_ring_s"], total["longest_ring_s"], total["talk_s"]) == (9, 25, 260)


def test_incoming_detail_shows_who_answered_and_transfers(
    sample_connection: sqlite3.Connection,
) -> None:
    report = run_report(sample_connection, "incoming", MAY, SETTINGS)
    keys = [column.key for column in report.columns]
    rows = [dict(zip(keys, row, strict=True)) for row in report.rows]
    assert [row["caller_number"] for row in rows] == ["+351211111111", "912000000", "912000000"]
    assert rows[0]["caller_name"] == "Müller GmbH"
    assert (rows[0]["answered_extension"], rows[0]["ring_s"], rows[0]["talk_s"]) == ("203", 8, 200)
    assert (rows[1]["disposition"], rows[1]["answered_extension"], rows[1]["ring_s"]) == (
        "no_answer",
        None,
        25,
    )
    assert (rows[2]["called_extension"], rows[2]["answered_extension"]) == ("201", "204")
    assert rows[2]["transferred_by"] == "201"
    assert totals(report)["talk_s"] == 260
    assert report.totals is not None and report.totals[0] == "Total: 3 calls"
    assert "2 of 3 incoming calls were answered" in report.notes


def test_calls_report_streams_and_reruns(sample_connection: sqlite3.Connection) -> None:
    report = run_report(sample_connection, "calls", MAY, SETTINGS)
    assert report.streamed
    first = list(report.rows)
    assert first == list(report.rows)  # iterating again runs the query again
    keys = [column.key for column in report.columns]
    by_number = {row[keys.index("number")]: dict(zip(keys, row, strict=True)) for row in first}
    b = by_number["00441234567"]
    assert b["cost"] == Decimal("1.0000")  # single calls keep the stored 4 decimals
    assert b["talk_s"] == 62 and b["ring_s"] == 3 and b["extension"] == "201"
    assert by_number["707000000"]["cost"] is None  # G: not rated
    assert totals(report)["cost"] == Decimal("1.65")
    assert totals(report)["talk_s"] == 948


def test_rows_written_after_the_report_was_built_are_not_in_it(tmp_path: Path) -> None:
    from tests.accounting.test_report_sample import SAMPLE_CALLS, _out, write_calls

    path = write_calls(tmp_path / "cdr.sqlite3", SAMPLE_CALLS[:3], {})
    connection = open_readonly(path)
    report = run_report(connection, "calls", MAY, SETTINGS)
    write_calls(path, (_out("late", "2024-05-20T10:00:00", "201", "212345678", 10),), {})
    assert report.calls == 3
    assert len(list(report.rows)) == 3
    connection.close()


def test_cross_site_alone_and_joined(sample_connection: sqlite3.Connection, tmp_path: Path) -> None:
    alone = run_report(sample_connection, "cross-site", MAY, SETTINGS)
    rows = list(alone.rows)
    assert len(rows) == 1 and rows[0][1] == "corr-1"
    assert len(alone.columns) == 9

    other = build_other_site(tmp_path)
    filters = Filters(start=MAY.start, end=MAY.end, other_site_database=other)
    joined = run_report(sample_connection, "cross-site", filters, SETTINGS)
    keys = [column.key for column in joined.columns]
    (row,) = [dict(zip(keys, row, strict=True)) for row in joined.rows]
    assert (row["caller_number"], row["talk_s"]) == ("204", 90)
    assert (row["other_site"], row["other_answered"], row["other_talk_s"]) == ("porto", "3001", 89)
    assert "1 call(s) found in the other site's records" in joined.notes


def test_cross_site_with_a_missing_other_database(
    sample_connection: sqlite3.Connection, tmp_path: Path
) -> None:
    filters = Filters(start=MAY.start, end=MAY.end, other_site_database=tmp_path / "nope.sqlite3")
    with pytest.raises(ReportError, match="does not exist"):
        run_report(sample_connection, "cross-site", filters, SETTINGS)


def test_statement_of_one_extension(sample_connection: sqlite3.Connection) -> None:
    filters = Filters(start=MAY.start, end=MAY.end, extensions=("201",))
    report = run_report(sample_connection, "statement", filters, SETTINGS)
    assert report.title == "Statement for extension 201 (Zé Conceição)"
    rows = list(report.rows)
    assert [row[2] for row in rows] == ["912345678", "00441234567", "212345678"]  # D unanswered
    assert [row[-1] for row in rows] == [Decimal("0.4995"), Decimal("1.0000"), Decimal("0.0005")]
    assert report.statement == StatementTotals(
        net=Decimal("1.50"), vat_percent=Decimal(23), vat=Decimal("0.35"), gross=Decimal("1.85")
    )
    assert totals(report)["cost"] == Decimal("1.50")


def test_statement_with_unrated_call_and_half_cent(sample_connection: sqlite3.Connection) -> None:
    filters = Filters(start=MAY.start, end=MAY.end, extensions=("202",))
    report = run_report(sample_connection, "statement", filters, SETTINGS)
    assert len(list(report.rows)) == 3
    assert report.statement == StatementTotals(
        net=Decimal("0.13"), vat_percent=Decimal(23), vat=Decimal("0.03"), gross=Decimal("0.16")
    )
    assert report.unrated_calls == 1


def test_statement_of_an_account(sample_connection: sqlite3.Connection) -> None:
    filters = Filters(start=MAY.start, end=MAY.end, account_code="ACME")
    report = run_report(sample_connection, "statement", filters, SETTINGS)
    assert report.title == "Statement for account ACME"
    assert report.statement is not None and report.statement.net == Decimal("0.50")
    assert report.statement.vat == Decimal("0.12")  # 0.115 half up


def test_statement_needs_one_extension_or_an_account(
    sample_connection: sqlite3.Connection,
) -> None:
    with pytest.raises(ReportError, match="needs one extension"):
        run_report(sample_connection, "statement", MAY, SETTINGS)
    filters = Filters(start=MAY.start, end=MAY.end, extensions=("201", "202"))
    with pytest.raises(ReportError, match="single --ext"):
        run_report(sample_connection, "statement", filters, SETTINGS)


def test_every_kind_runs_and_its_rows_fit_its_columns(
    sample_connection: sqlite3.Connection,
) -> None:
    for kind in REPORTS:
        filters = Filters(start=MAY.start, end=MAY.end, extensions=("201",))
        report = run_report(sample_connection, kind, filters, SETTINGS)
        for row in report.rows:
            assert len(row) == len(report.columns), kind
        assert report.totals is not None and len(report.totals) == len(report.columns), kind


def test_unknown_kind_and_old_database(
    tmp_path: Path, sample_connection: sqlite3.Connection
) -> None:
    with pytest.raises(ReportError, match="unknown; choose one of extension"):
        run_report(sample_connection, "bogus", MAY, SETTINGS)
    old = tmp_path / "old.sqlite3"
    connection = sqlite3.connect(old)
    connection.execute("CREATE TABLE cdr (id INTEGER PRIMARY KEY)")
    connection.execute("PRAGMA user_version = 2")
    connection.close()
    with pytest.raises(ReportError, match="schema version 2"):
        run_report(open_readonly(old), "extension", MAY, SETTINGS)


def test_settings_from_config() -> None:
    from firmware.config.load import parse_config

    config = parse_config(
        """
        [site]
        name = "lisboa"
        timezone = "Europe/Lisbon"
        [[extensions]]
        number = "201"
        name = "Zé"
        port = 1
        [accounting]
        currency = "CZK"
        vat_percent = "21"
        decimals = 2
        [reports]
        top_numbers = 5
        [reports.departments]
        sales = ["201"]
        """
    )
    settings = ReportSettings.from_config(config)
    assert settings.site_name == "lisboa"
    assert settings.departments == {"sales": ("201",)}
    assert settings.extension_names["201"] == "Zé"
    assert settings.top_numbers == 5
    assert (settings.currency, settings.vat_percent, settings.decimals) == ("CZK", Decimal(21), 2)


def test_currency_without_minor_unit(sample_connection: sqlite3.Connection) -> None:
    """With decimals = 0 sums round to whole units; single calls keep their 4 decimals."""
    settings = replace(SETTINGS, decimals=0)
    report = run_report(sample_connection, "extension", MAY, settings)
    assert [row[report.column_index("cost")] for row in report.rows] == [
        Decimal(2),  # 1.5000 half up
        Decimal(0),  # 0.1250
        Decimal(0),
        Decimal(0),
    ]
    assert report.columns[report.column_index("cost")].places == 0
    filters = replace(MAY, extensions=("201",))
    statement = run_report(sample_connection, "statement", filters, settings)
    assert statement.statement == StatementTotals(
        net=Decimal(2), vat_percent=Decimal(23), vat=Decimal(0), gross=Decimal(2)
    )
    assert next(iter(statement.rows))[-1] == Decimal("0.4995")


def test_talk_time_rounds_up_and_ring_time_down(tmp_path: Path) -> None:
    """As billing and SMDR count them: 10.001 s of talk is 11 s, 4.999 s of ringing is 4 s."""
    from tests.accounting.test_report_sample import _out, write_calls

    calls = (
        _out("a", "2024-05-02T08:00:00", "201", "212345678", 10.001, ring=4.999),
        _out("b", "2024-05-02T09:00:00", "201", "212345678", 20.0, ring=0.3),
    )
    connection = open_readonly(write_calls(tmp_path / "cdr.sqlite3", calls, {}))
    report = run_report(connection, "calls", MAY, SETTINGS)
    ring, talk = report.column_index("ring_s"), report.column_index("talk_s")
    assert [(row[ring], row[talk]) for row in report.rows] == [(4, 11), (0, 20)]
    assert totals(report)["talk_s"] == 31
    extension = run_report(connection, "extension", MAY, SETTINGS)
    assert totals(extension)["talk_s"] == 31
    classes = run_report(connection, "class", MAY, SETTINGS)
    assert totals(classes)["average_talk_s"] == 16  # 31 / 2 = 15.5, half up
    connection.close()
