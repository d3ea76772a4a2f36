"""The sample office the report and export tests share, and checks of the sample itself.

Sixteen calls of a Lisbon office (UTC+1 in May), written through CdrStore and then rated
with plain SQL, chosen so that every figure the tests expect can be worked out by hand:

call  UTC start          owner  what                                     cost_e4
A     05-02 08:00        201    out 912345678 mobile, ACME, 5 s ring,    4995
                                120 s talk
B     05-02 09:30        201    out 00441234567 intl-44, 61.5 s talk     10000
C     05-03 14:00        201    out 212345678 local, ACME, 1 s talk      5
D     05-03 15:00        201    out 212345678 local, no answer (30 s)    0
E     05-04 10:00        202    out 212345678 local, BETA, 300 s talk    1235
F     05-04 11:00        202    out 800123456 free, 10 s talk            15
G     05-05 12:00        202    out 707000000, 45 s talk, NOT RATED      NULL
H     05-07 09:00        203    in from +351211111111 to DID 210000001,  NULL
                                rang 203, answered by 203, 8 s ring, 200 s talk
I     05-07 10:00        203    in from 912000000, rang 203, no answer   NULL
                                (25 s ring)
J     05-08 23:30        204    in from 912000000 (local 05-09 00:30),   NULL
                                rang 201, transferred by 201 to 204,
                                10 s ring, 60 s talk
K     05-10 12:00        203    internal to 201, 30 s talk               0
L     05-10 13:00        204    internal to sibling 3001, corr-1, 90 s   0
M     04-30 23:30        204    out 212222222 local (local 05-01 00:30)  200
                                20 s talk
N     05-31 23:30        204    out (local 06-01 00:30: not in May)      300
O     04-30 22:59:59     204    out (local 04-30 23:59:59: not in May)   400
P     05-06 10:00        204    out 212222222, 10 s talk, rated in USD   999

May totals (14 calls, A-M and P): cost 4995+10000+5+1235+15+200 = 16450 e4 = 1.645,
shown 1.65 (half up); talk 947.5 s, shown 948 s; one unrated call (G); one call in USD.
Statement of 201: net 1.5000 -> 1.50, VAT 23 % = 0.345 -> 0.35, gross 1.85.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from firmware.accounting.reports import Filters, ReportSettings, run_report
from firmware.calls.cdr import CallRecord, CdrStore, open_readonly

MAY = Filters(start=date(2024, 5, 1), end=date(2024, 5, 31))

SETTINGS = ReportSettings(
    site_name="Lisboa HQ",
    timezone="Europe/Lisbon",
    currency="EUR",
    vat_percent=Decimal(23),
    departments={"sales": ("201", "202"), "support": ("203",)},
    extension_names={
        "201": "Zé Conceição",
        "202": "Иван Петров",
        "203": "Jiří Dvořák",
        "204": "Ann Smith",
    },
    top_numbers=20,
)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _call(
    call_id: str,
    start: str,
    *,
    direction: str,
    caller: str,
    dialled: str,
    ring: float,
    talk: float | None,
    called: str | None = None,
    answered: str | None = None,
    line: str | None = "fxo:1",
    line_group: str | None = "city",
    external: str | None = None,
    caller_name: str = "",
    **extra: Any,
) -> CallRecord:
    begin = _utc(start)
    answer = None if talk is None else begin + timedelta(seconds=ring)
    end = begin + timedelta(seconds=ring + (talk or 0))
    return CallRecord(
        call_id=call_id,
        start=begin,
        answer=answer,
        end=end,
        caller_number=caller,
        caller_name=caller_name,
        dialled=dialled,
        called_extension=called,
        answered_extension=answered,
        line=line,
        line_group=line_group,
        direction=direction,
        disposition="answered" if talk is not None else extra.pop("disposition", "no_answer"),
        hangup_side="caller",
        site="lisboa",
        external_number=external,
        **extra,
    )


def _out(
    call_id: str, start: str, caller: str, number: str, talk: float | None, **extra: Any
) -> CallRecord:
    return _call(
        call_id,
        start,
        direction="outgoing",
        caller=caller,
        caller_name=SETTINGS.extension_names.get(caller, ""),
        dialled="9" + number,
        external=number,
        ring=extra.pop("ring", 3),
        talk=talk,
        **extra,
    )


SAMPLE_CALLS = (
    _out("A", "2024-05-02T08:00:00", "201", "912345678", 120, ring=5, account_code="ACME"),
    _out("B", "2024-05-02T09:30:00", "201", "00441234567", 61.5),
    _out("C", "2024-05-03T14:00:00", "201", "212345678", 1, ring=2, account_code="ACME"),
    _out("D", "2024-05-03T15:00:00", "201", "212345678", None, ring=30),
    _out("E", "2024-05-04T10:00:00", "202", "212345678", 300, ring=4, account_code="BETA"),
    _out("F", "2024-05-04T11:00:00", "202", "800123456", 10, ring=4),
    _out("G", "2024-05-05T12:00:00", "202", "707000000", 45),
    _call(
        "H",
        "2024-05-07T09:00:00",
        direction="incoming",
        caller="+351211111111",
        caller_name="Müller GmbH",
        dialled="210000001",
        external="210000001",
        called="203",
        answered="203",
        line="fxo:2",
        ring=8,
        talk=200,
    ),
    _call(
        "I",
        "2024-05-07T10:00:00",
        direction="incoming",
        caller="912000000",
        caller_name='=HYPERLINK("http://x")',
        dialled="210000001",
        external="210000001",
        called="203",
        line="fxo:2",
        ring=25,
        talk=None,
    ),
    _call(
        "J",
        "2024-05-08T23:30:00",
        direction="incoming",
        caller="912000000",
        dialled="210000001",
        external="210000001",
        called="201",
        answered="204",
        transferred_by="201",
        line="fxo:2",
        ring=10,
        talk=60,
    ),
    _call(
        "K",
        "2024-05-10T12:00:00",
        direction="internal",
        caller="203",
        dialled="201",
        called="201",
        answered="201",
        line=None,
        line_group=None,
        ring=2,
        talk=30,
    ),
    _call(
        "L",
        "2024-05-10T13:00:00",
        direction="internal",
        caller="204",
        dialled="3001",
        line="sib:porto",
        line_group="sibling",
        correlation_id="corr-1",
        ring=3,
        talk=90,
    ),
    _out("M", "2024-04-30T23:30:00", "204", "212222222", 20),
    _out("N", "2024-05-31T23:30:00", "204", "212222222", 20),
    _out("O", "2024-04-30T22:59:59", "204", "212222222", 20),
    _out("P", "2024-05-06T10:00:00", "204", "212222222", 10),
)

RATING: dict[str, tuple[str | None, int | None, str | None]] = {
    # call_id: (dest_class, cost_e4, currency)
    "A": ("mobile", 4995, "EUR"),
    "B": ("intl-44", 10000, "EUR"),
    "C": ("local", 5, "EUR"),
    "D": ("local", 0, "EUR"),
    "E": ("local", 1235, "EUR"),
    "F": ("free", 15, "EUR"),
    "K": ("internal", 0, "EUR"),
    "L": ("sibling", 0, "EUR"),
    "M": ("local", 200, "EUR"),
    "N": ("local", 300, "EUR"),
    "O": ("local", 400, "EUR"),
    "P": ("local", 999, "USD"),
}


def write_calls(path: Path, calls: tuple[CallRecord, ...], rating: dict[str, Any]) -> Path:
    """Write records through the real CDR store, then rate some with plain SQL."""
    store = CdrStore(path)
    try:
        for record in calls:
            store.write_blocking(record)
    finally:
        store.close()
    connection = sqlite3.connect(path)
    with connection:
        for call_id, (dest_class, cost_e4, currency) in rating.items():
            connection.execute(
                "UPDATE cdr SET dest_class = ?, cost_e4 = ?, currency = ? WHERE call_id = ?",
                (dest_class, cost_e4, currency, call_id),
            )
    connection.close()
    return path


def build_sample(folder: Path) -> Path:
    return write_calls(folder / "cdr.sqlite3", SAMPLE_CALLS, RATING)


def build_other_site(folder: Path) -> Path:
    """Porto's records: the far end of call L, and a call of its own."""
    other = (
        _call(
            "porto-1",
            "2024-05-10T13:00:01",
            direction="internal",
            caller="204",
            dialled="3001",
            called="3001",
            answered="3001",
            line="sib:lisboa",
            correlation_id="corr-1",
            ring=2,
            talk=89,
        ),
        _call(
            "porto-2",
            "2024-05-11T10:00:00",
            direction="internal",
            caller="3002",
            dialled="3001",
            line=None,
            ring=1,
            talk=5,
        ),
    )
    path = write_calls(folder / "porto.sqlite3", other, {})
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE cdr SET site = 'porto'")
    connection.close()
    return path


@pytest.fixture(scope="module")
def sample_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path = build_sample(tmp_path_factory.mktemp("sample"))
    connection = open_readonly(path)
    yield connection
    connection.close()


def test_sample_has_every_call_and_rating(sample_connection: sqlite3.Connection) -> None:
    rows = sample_connection.execute(
        "SELECT call_id, cost_e4, currency FROM cdr ORDER BY call_id"
    ).fetchall()
    assert [row["call_id"] for row in rows] == list("ABCDEFGHIJKLMNOP")
    assert sum(row["cost_e4"] or 0 for row in rows if row["currency"] == "EUR") == 16450 + 700


def test_period_is_local_days_of_the_site(sample_connection: sqlite3.Connection) -> None:
    """M (23:30 UTC on 30 April) is 1 May in Lisbon; N (23:30 UTC on 31 May) is 1 June."""
    report = run_report(sample_connection, "calls", MAY, SETTINGS)
    assert report.calls == 14
    assert len(list(report.rows)) == 14
    first = next(iter(report.rows))
    assert first[0] == datetime(2024, 5, 1, 0, 30, tzinfo=SETTINGS.zone)
    in_utc = run_report(
        sample_connection, "calls", MAY, ReportSettings(timezone="UTC", currency="EUR")
    )
    # In UTC, M falls in April and N in May: still 14 calls, but another set.
    assert in_utc.calls == 14
    assert next(iter(in_utc.rows))[0] == datetime(2024, 5, 2, 8, 0, tzinfo=UTC)
