"""Re-rating a period: new tariffs, local-date bounds, final volume tiers, idempotence."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from test_rating_store import answering_calls, call, costs_of, make_config, rating_of, write_all

from firmware.accounting.rating import rerate

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
NOW_STAMP = "2024-07-01T12:00:00.000Z"
WRITTEN_STAMP = "2026-01-02T03:04:05.678Z"


def test_rerate_after_a_tariff_change(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    old = make_config("0.02")
    write_all(
        path,
        [
            call("213456789", 61, answer="2024-04-30T23:30:00"),  # 1 May 00:30 local: inside
            call("213456789", 61, answer="2024-05-06T10:00:00"),
            call("912345678", 31, answer="2024-05-07T10:00:00"),  # mobile: unchanged
            call("213456789", 61, answer="2024-05-31T23:30:00"),  # 1 June local: outside
        ],
        lambda: old,
    )
    # the first and last are off-peak (00:30 local): 0.05 + 0.01 * 2
    assert costs_of(path) == [700, 900, 1100, 700]
    summary = rerate(path, make_config("0.04"), date(2024, 5, 1), date(2024, 5, 31), now=NOW)
    # 0.05 + 0.04 * 2 at peak; off-peak stays 0.01
    assert costs_of(path) == [700, 1300, 1100, 700]
    assert (summary.calls, summary.changed) == (3, 1)
    assert (summary.old_total_e4, summary.new_total_e4) == (700 + 900 + 1100, 700 + 1300 + 1100)
    assert [row[5] for row in rating_of(path)] == [
        WRITTEN_STAMP,
        NOW_STAMP,
        WRITTEN_STAMP,
        WRITTEN_STAMP,
    ]
    again = rerate(path, make_config("0.04"), date(2024, 5, 1), date(2024, 5, 31), now=NOW)
    assert again.changed == 0


def test_rerate_rates_records_left_unrated(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"

    def broken():  # type: ignore[no-untyped-def]
        raise RuntimeError("no config")

    write_all(path, [call("213456789", 61)], broken)
    assert costs_of(path) == [None]
    summary = rerate(path, make_config(), date(2024, 5, 6), date(2024, 5, 6), now=NOW)
    assert (summary.changed, costs_of(path)) == (1, [900])
    assert rating_of(path) == [("local", "main", 900, "EUR", None, NOW_STAMP)]


def test_volume_tiers_take_the_final_tier_once_the_month_is_over(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    config = make_config(tier_mode="volume")
    write_all(path, answering_calls(101), lambda: config)
    open_month = rerate(
        path, config, date(2024, 4, 1), date(2024, 4, 30), now=datetime(2024, 4, 20, tzinfo=UTC)
    )
    assert (open_month.changed, open_month.closed_months) == (0, [])
    summary = rerate(path, config, date(2024, 4, 1), date(2024, 4, 30), now=NOW)
    # 101 calls reach the 100-199 tier: every call of April at 1.00
    assert costs_of(path) == [10000] * 101
    assert (summary.changed, summary.closed_months) == (99, ["2024-04"])
    assert (summary.old_total_e4, summary.new_total_e4) == (99 * 15000 + 2 * 10000, 101 * 10000)


@pytest.mark.parametrize(("tier_mode", "late_cost"), [("per_call", None), ("volume", 10000)])
def test_part_of_a_month_is_priced_with_the_whole_month_counted(
    tmp_path: Path, tier_mode: str, late_cost: int | None
) -> None:
    path = tmp_path / "cdr.sqlite3"
    config = make_config(tier_mode=tier_mode)
    write_all(
        path,
        answering_calls(60, day="2024-04-10") + answering_calls(41, day="2024-04-20"),
        lambda: config,
    )
    written = costs_of(path)
    summary = rerate(path, config, date(2024, 4, 20), date(2024, 4, 20), now=NOW)
    assert summary.calls == 41
    costs = costs_of(path)
    assert costs[:60] == written[:60] == [15000] * 60  # outside the period: untouched
    if late_cost is None:  # per call: calls 61-99 at 1.50, 100 and 101 at 1.00, as written
        assert costs[60:] == written[60:] == [15000] * 39 + [10000] * 2
        assert summary.changed == 0
    else:
        assert costs[60:] == [late_cost] * 41
        assert summary.changed == 39


def test_rerate_of_a_database_without_calls(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite3"
    sqlite3.connect(path).close()
    with pytest.raises(FileNotFoundError, match="no cdr table"):
        rerate(path, make_config(), date(2024, 5, 1), date(2024, 5, 31))
    with pytest.raises(ValueError, match="ends"):
        rerate(path, make_config(), date(2024, 5, 2), date(2024, 5, 1))


def test_writes_after_a_rerate_continue_the_months_count(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    config = make_config()
    small = "214000001"  # class "small": 2.00 for calls 1-2, 1.00 from the 3rd
    first = [
        call(small, 10, direction="incoming", answer=f"2024-05-0{day}T10:00:00") for day in (2, 3)
    ]
    write_all(path, first, lambda: config)
    with sqlite3.connect(path) as connection:
        assert connection.execute(
            "SELECT month, party, calls FROM rating_tier_count"
        ).fetchall() == [("2024-05", "ext:202", 2)]
    rerate(path, config, date(2024, 5, 1), date(2024, 5, 31), now=NOW)
    with sqlite3.connect(path) as connection:  # dropped: recounted from the rows when needed
        assert connection.execute("SELECT COUNT(*) FROM rating_tier_count").fetchone() == (0,)
    later = [
        call(small, 10, direction="incoming", answer=f"2024-05-0{day}T10:00:00") for day in (4, 5)
    ]
    write_all(path, later, lambda: config)
    assert costs_of(path) == [20000, 20000, 10000, 10000]
