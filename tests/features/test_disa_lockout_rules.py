"""DISA lock-out rules on a clock the test sets, read back from the SQLite file directly."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware.calls.channel import CallerId
from firmware.config.load import ConfigError, parse_config
from firmware.config.menu_schema import DisaUser
from firmware.features.context import NodeContext
from firmware.features.disa import source_of, user_for
from firmware.features.disa_lockout import DisaLockouts, Limits, Verdict
from tests.features.feature_tools import office_with_routing

T0 = datetime(2025, 3, 10, 9, 0, 0, tzinfo=UTC)
LIMITS = Limits(failures=3, window_s=600, lockout_s=3600, failures_all=5)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path: Path) -> DisaLockouts:
    lockouts = DisaLockouts(tmp_path / "disa.sqlite3")
    yield lockouts
    lockouts.close()


def test_three_wrong_pins_in_the_window_lock_the_source_for_an_hour(store, tmp_path) -> None:
    assert store.record_failure("d", "212", at(0), LIMITS) == Verdict(1, False, False)
    assert store.record_failure("d", "212", at(60), LIMITS) == Verdict(2, False, False)
    assert store.locked_until("d", "212", at(61)) is None
    assert store.record_failure("d", "212", at(120), LIMITS) == Verdict(3, True, False)
    assert store.locked_until("d", "212", at(121)) == at(120 + 3600)
    assert store.locked_until("d", "213", at(121)) is None, "another number is not locked"
    assert store.locked_until("other", "212", at(121)) is None, "nor another DISA node"
    assert store.locked_until("d", "212", at(120 + 3600)) is None, "the lock-out ends"
    store.close()
    with sqlite3.connect(tmp_path / "disa.sqlite3") as check:
        rows = check.execute(
            "SELECT at_utc, source, result, user FROM disa_attempt ORDER BY id"
        ).fetchall()
        locks = check.execute("SELECT node, source, until_utc FROM disa_lockout").fetchall()
    assert rows == [
        ("2025-03-10T09:00:00.000Z", "212", "wrong", None),
        ("2025-03-10T09:01:00.000Z", "212", "wrong", None),
        ("2025-03-10T09:02:00.000Z", "212", "wrong", None),
        ("2025-03-10T09:02:00.000Z", "212", "lockout", None),
    ]
    assert locks == [("d", "212", "2025-03-10T10:02:00.000Z")]


def test_wrong_pins_older_than_the_window_do_not_count(store) -> None:
    store.record_failure("d", "212", at(0), LIMITS)
    store.record_failure("d", "212", at(10), LIMITS)
    assert store.record_failure("d", "212", at(605), LIMITS) == Verdict(2, False, False)
    assert store.record_failure("d", "212", at(700), LIMITS) == Verdict(2, False, False)


def test_a_good_pin_resets_the_count_and_a_lock_out_starts_it_afresh(store) -> None:
    store.record_failure("d", "212", at(0), LIMITS)
    store.record_failure("d", "212", at(1), LIMITS)
    store.record_success("d", "212", "alice", at(2))
    assert store.record_failure("d", "212", at(3), LIMITS) == Verdict(1, False, False)
    store.record_failure("d", "212", at(4), LIMITS)
    assert store.record_failure("d", "212", at(5), LIMITS).source_locked
    # After the lock-out the source starts from zero (the window still covers the old ones).
    assert store.record_failure("d", "212", at(3606), LIMITS) == Verdict(1, False, False)


def test_many_sources_together_lock_the_whole_node(store) -> None:
    for index in range(4):
        verdict = store.record_failure("d", f"9{index}", at(index), LIMITS)
        assert verdict == Verdict(1, False, False)
    assert store.record_failure("d", "95", at(5), LIMITS) == Verdict(1, False, True)
    assert store.locked_until("d", "anyone", at(6)) == at(5 + 3600)
    assert store.locked_until("other", "anyone", at(6)) is None


def test_the_lock_out_survives_reopening_the_file(tmp_path: Path) -> None:
    first = DisaLockouts(tmp_path / "disa.sqlite3")
    for second in range(3):
        first.record_failure("d", "212", at(second), LIMITS)
    first.close()
    again = DisaLockouts(tmp_path / "disa.sqlite3")
    try:
        assert again.locked_until("d", "212", at(10)) == at(2 + 3600)
    finally:
        again.close()


async def test_the_async_wrapper_runs_off_the_loop(store) -> None:
    verdict = await store.run(store.record_failure, "d", "212", at(0), LIMITS)
    assert verdict == Verdict(1, False, False)


def test_the_pin_finds_its_user_and_only_an_exact_match() -> None:
    users = (
        DisaUser(name="alice", pin="1234", class_of_service="staff"),
        DisaUser(name="bob", pin="123456", class_of_service="manager"),
    )
    assert user_for("1234", users) is users[0]
    assert user_for("123456", users) is users[1]
    assert user_for("12345", users) is None
    assert user_for("", users) is None
    assert user_for("12340", users) is None


DISA = """
[[routing.nodes]]
name = "outside"
kind = "disa"
users = [
    { name = "alice", pin = "1234", class_of_service = "staff" },
    { name = "bob", pin = "1234", class_of_service = "manager" },
]
"""


def errors_of(routing: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(office_with_routing(routing, city1='["outside"]'), "<test>")
    return caught.value.errors


def test_two_users_with_one_pin_are_refused_without_showing_it() -> None:
    errors = errors_of(DISA)
    assert any("alice, bob have the same PIN" in error for error in errors), errors
    assert not any("1234" in error for error in errors)


def test_a_disa_node_needs_users_and_pins_of_4_to_12_digits() -> None:
    assert errors_of(
        DISA.replace(
            'pin = "1234", class_of_service = "manager"',
            'pin = "12a4", class_of_service = "manager"',
        )
    )
    no_users = '[[routing.nodes]]\nname = "outside"\nkind = "disa"\nusers = []\n'
    assert any("users" in error for error in errors_of(no_users))


@dataclass
class _Leg:
    technology: str
    number: str


def test_the_source_is_the_callers_number_or_the_line_or_peer_when_withheld() -> None:
    def source(number: str, leg: _Leg) -> str:
        context = NodeContext(calls=None, session=None, caller=leg, shown=CallerId(number, ""))  # type: ignore[arg-type]
        return source_of(context)

    assert source("212345678", _Leg("fxo", "city1")) == "212345678"
    assert source("", _Leg("fxo", "city1")) == "fxo:city1"
    assert source("", _Leg("sip", "provider")) == "sip:provider"


def test_without_a_data_folder_the_rules_still_hold_in_memory() -> None:
    store = DisaLockouts(None)
    try:
        for second in range(3):
            store.record_failure("d", "212", at(second), LIMITS)
        assert store.locked_until("d", "212", at(10)) == at(2 + 3600)
    finally:
        store.close()
