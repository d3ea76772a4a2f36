"""The rater inside a real CdrStore: records written, rating columns read back independently."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware.accounting.rating import make_rater
from firmware.calls.cdr import CallRecord, CdrStore
from firmware.config.load import parse_config
from firmware.config.schema import Config

BASE = """
[site]
name = "office"
timezone = "Europe/Lisbon"

[[line_groups]]
name = "city"
access_code = "9"

[[extensions]]
number = "201"
port = 1

[[extensions]]
number = "202"
port = 2

[[extensions]]
number = "203"
port = 3
"""

ACCOUNTING = """
[accounting]
currency = "EUR"
vat_percent = "23"
default_tariff = "main"
did_accounts = {{ "213000010" = "1001", "213000020" = "1002" }}

[[accounting.tariffs]]
name = "main"
applies_to = ["city"]
prefixes = [
    {{ prefix = "+3512", class = "local" }},
    {{ prefix = "+3519", class = "mobile" }},
    {{ prefix = "+351213000", class = "answering" }},
    {{ prefix = "+351214000", class = "small" }},
]

[accounting.tariffs.classes.local]
connection_fee = "0.05"
per_minute = "{local_price}"
per_minute_offpeak = "0.01"

[accounting.tariffs.classes.mobile]
connection_fee = "0.05"
per_minute = "0.10"
increments = "30/6"

[accounting.tariffs.classes.sibling]
per_minute = "0.01"

[accounting.tariffs.classes.answering]
direction = "incoming"
tier_mode = "{tier_mode}"
tiers = [
    {{ from_call = 1, price = "1.50" }},
    {{ from_call = 100, price = "1.00" }},
    {{ from_call = 200, price = "0.50" }},
]

[accounting.tariffs.classes.small]
direction = "incoming"
tiers = [{{ from_call = 1, price = "2.00" }}, {{ from_call = 3, price = "1.00" }}]
"""

RATED_AT = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)


def make_config(local_price: str = "0.02", tier_mode: str = "per_call", extra: str = "") -> Config:
    return parse_config(
        BASE + ACCOUNTING.format(local_price=local_price, tier_mode=tier_mode) + extra
    )


def call(
    number: str,
    seconds: float,
    *,
    answer: str = "2024-05-06T10:00:00",
    direction: str = "outgoing",
    extension: str = "202",
    answered: bool = True,
    line: str | None = "city1",
    line_group: str | None = "city",
    kind: str | None = "local",
    account_code: str | None = None,
) -> CallRecord:
    answer_time = datetime.fromisoformat(answer).replace(tzinfo=UTC)
    start = answer_time - timedelta(seconds=4)
    incoming = direction == "incoming"
    return CallRecord(
        start=start,
        answer=answer_time if answered else None,
        end=answer_time + timedelta(seconds=seconds),
        caller_number="912000000" if incoming else extension,
        caller_name="",
        dialled=number if incoming else "9" + number,
        called_extension=extension if incoming else None,
        answered_extension=extension if incoming and answered else None,
        line=line,
        line_group=line_group,
        direction=direction,
        disposition="answered" if answered else "no_answer",
        hangup_side="caller",
        destination_kind=kind,
        account_code=account_code,
        external_number=number,
    )


def rating_of(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT dest_class, tariff, cost_e4, currency, prepaid_account, rated_utc FROM cdr ORDER BY id"
        ).fetchall()


def costs_of(path: Path) -> list[int | None]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT cost_e4 FROM cdr ORDER BY id")]


def write_all(path: Path, records: list[CallRecord], config: Callable[[], Config]) -> CdrStore:
    store = CdrStore(path, rater=make_rater(config, clock=lambda: RATED_AT))
    try:
        for record in records:
            store.write_blocking(record)
    finally:
        store.close()
    return store


def test_outgoing_calls_are_priced_when_written(tmp_path: Path) -> None:
    config = make_config()
    path = tmp_path / "cdr.sqlite3"
    write_all(
        path,
        [
            # Monday 11:00 local (peak), 61 s at 60/60 = 120 s: 0.05 + 0.02 * 2
            call("213456789", 61, answer="2024-05-06T10:00:00"),
            # Monday 21:30 local (off-peak, mobile has no off-peak price), 31 s at 30/6 = 36 s:
            # 0.05 + 0.10 * 36 / 60
            call("912345678", 31, answer="2024-05-06T20:30:00"),
            # Saturday 11:00 local: the local weekend price is the off-peak 0.01; 0.05 + 0.01 * 3
            call("213456789", 180, answer="2024-05-04T10:00:00"),
        ],
        lambda: config,
    )
    stamp = "2026-01-02T03:04:05.678Z"
    assert rating_of(path) == [
        ("local", "main", 900, "EUR", None, stamp),
        ("mobile", "main", 1100, "EUR", None, stamp),
        ("local", "main", 800, "EUR", None, stamp),
    ]


def test_internal_unanswered_unclassified_and_unrated_calls(tmp_path: Path) -> None:
    config = make_config()
    path = tmp_path / "cdr.sqlite3"
    write_all(
        path,
        [
            call("203", 100, direction="internal", line=None, line_group=None, kind="internal"),
            # to the sibling office: the tariff prices class "sibling", 0.01 per minute, 120 s
            call(
                "301",
                61,
                direction="internal",
                line="sibling:porto",
                line_group=None,
                kind="sibling",
            ),
            call("213456789", 0, answered=False),
            call("00441234567", 60, kind="international"),  # no prefix for it in this tariff
            call("219999999", 60, direction="incoming"),  # no incoming class matches
        ],
        lambda: config,
    )
    stamp = "2026-01-02T03:04:05.678Z"
    assert rating_of(path) == [
        ("internal", "main", 0, "EUR", None, stamp),
        ("sibling", "main", 200, "EUR", None, stamp),
        ("local", "main", 0, "EUR", None, stamp),
        ("unclassified", "main", None, "EUR", None, stamp),
        (None, None, None, None, None, None),
    ]


def test_a_line_no_tariff_names_without_default_is_not_rated(tmp_path: Path) -> None:
    config = parse_config(
        BASE
        + ACCOUNTING.format(local_price="0.02", tier_mode="per_call").replace(
            'default_tariff = "main"\n', ""
        )
    )
    path = tmp_path / "cdr.sqlite3"
    write_all(path, [call("213456789", 60, line="other", line_group="other")], lambda: config)
    assert rating_of(path) == [(None, None, None, None, None, None)]


def test_a_rater_error_leaves_the_record_written_but_unrated(tmp_path: Path) -> None:
    def broken() -> Config:
        raise RuntimeError("config unavailable")

    path = tmp_path / "cdr.sqlite3"
    store = write_all(path, [call("213456789", 61)], broken)
    assert store.counters["written"] == 1
    assert store.counters["rating_failed"] == 1
    with sqlite3.connect(path) as connection:
        assert connection.execute(
            "SELECT external_number, cost_e4, dest_class FROM cdr"
        ).fetchall() == [("213456789", None, None)]


def test_a_reloaded_config_prices_the_next_record(tmp_path: Path) -> None:
    configs = [make_config("0.02")]
    path = tmp_path / "cdr.sqlite3"
    store = CdrStore(path, rater=make_rater(lambda: configs[-1], clock=lambda: RATED_AT))
    store.write_blocking(call("213456789", 61))
    configs.append(make_config("0.04"))
    store.write_blocking(call("213456789", 61))
    store.close()
    assert costs_of(path) == [900, 1300]  # 0.05 + 2 minutes at 0.02, then at 0.04


# ----- monthly tiers ---------------------------------------------------------------------


def answering_calls(
    count: int, did: str = "213000010", day: str = "2024-04-10"
) -> list[CallRecord]:
    base = datetime.fromisoformat(f"{day}T09:00:00")
    return [
        call(did, 30, direction="incoming", answer=(base + timedelta(minutes=index)).isoformat())
        for index in range(count)
    ]


def test_per_call_tiers_at_the_99th_100th_and_101st_call(tmp_path: Path) -> None:
    config = make_config()
    path = tmp_path / "cdr.sqlite3"
    records = answering_calls(98) + answering_calls(2, did="213000020") + answering_calls(3)
    write_all(path, records, lambda: config)
    costs = costs_of(path)
    client_1001 = costs[:98] + costs[100:]
    assert client_1001[96:] == [15000, 15000, 15000, 10000, 10000]  # calls 97-101
    assert client_1001[:96] == [15000] * 96
    assert costs[98:100] == [15000, 15000]  # the other client counts from 1


def test_tiers_count_per_extension_without_a_code_and_per_month(tmp_path: Path) -> None:
    config = make_config()
    path = tmp_path / "cdr.sqlite3"
    small = "214000001"  # class "small": 2.00 for calls 1-2, 1.00 from the 3rd
    records = [
        call(small, 10, direction="incoming", extension="202", answer="2024-04-29T10:00:00"),
        call(small, 10, direction="incoming", extension="203", answer="2024-04-29T10:01:00"),
        call(small, 10, direction="incoming", extension="202", answer="2024-04-29T10:02:00"),
        call(small, 10, direction="incoming", extension="202", answer="2024-04-29T10:03:00"),
        # 23:30 UTC on 30 April is 00:30 on 1 May in Lisbon: a new month
        call(small, 10, direction="incoming", extension="202", answer="2024-04-30T23:30:00"),
        # an unanswered call is free and does not count
        call(
            small,
            0,
            direction="incoming",
            extension="202",
            answered=False,
            answer="2024-05-02T10:00:00",
        ),
        call(small, 10, direction="incoming", extension="202", answer="2024-05-02T10:01:00"),
        call(small, 10, direction="incoming", extension="202", answer="2024-05-02T10:02:00"),
    ]
    write_all(path, records, lambda: config)
    assert costs_of(path) == [20000, 20000, 20000, 10000, 20000, 0, 20000, 10000]


def test_an_entered_account_code_is_the_tier_party(tmp_path: Path) -> None:
    config = make_config()
    path = tmp_path / "cdr.sqlite3"
    small = "214000001"
    records = [
        call(small, 10, direction="incoming", extension="202", account_code="77"),
        call(small, 10, direction="incoming", extension="203", account_code="77"),
        call(small, 10, direction="incoming", extension="201", account_code="77"),
        call(small, 10, direction="incoming", extension="201"),
    ]
    write_all(path, records, lambda: config)
    assert costs_of(path) == [20000, 20000, 10000, 20000]


@pytest.mark.parametrize("tier_mode", ["per_call", "volume"])
def test_volume_tiers_are_provisional_when_written(tmp_path: Path, tier_mode: str) -> None:
    config = make_config(tier_mode=tier_mode)
    path = tmp_path / "cdr.sqlite3"
    write_all(path, answering_calls(101), lambda: config)
    # at write time both modes price the call by the count so far
    assert costs_of(path) == [15000] * 99 + [10000] * 2
