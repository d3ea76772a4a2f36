"""Brute-force protection: thresholds, expiry, escalation, trusted networks, bounded memory."""

from __future__ import annotations

import pytest

from firmware.sip.auth import DigestClient, DigestServer, Failed, StoredCredential
from firmware.sip.guard import AuthGuard, Block, GuardPolicy

ATTACKER = "203.0.113.7"


def fail(guard: AuthGuard, address: str, times: int, start: float, step: float = 1.0):
    """Record `times` failures from `address`; the last result."""
    result = None
    for index in range(times):
        result = guard.record_failure(address, start + index * step)
    return result


def test_ten_failures_within_a_minute_block_for_fifteen_minutes():
    guard = AuthGuard()
    assert fail(guard, ATTACKER, 9, start=0.0) is None
    assert not guard.is_blocked(ATTACKER, 9.0)
    block = guard.record_failure(ATTACKER, 9.5)
    assert block == Block(source=ATTACKER, until=909.5, offence=1, duration_s=900.0)
    assert guard.is_blocked(ATTACKER, 10.0)
    assert guard.is_blocked(ATTACKER, 909.4)
    assert not guard.is_blocked(ATTACKER, 909.5)
    assert guard.counters["blocks"] == 1 and guard.counters["drops"] == 2


def test_failures_spread_beyond_the_window_never_block():
    guard = AuthGuard()
    # One failure every 7 s: at most 9 in any 60 s.
    assert fail(guard, ATTACKER, 200, start=0.0, step=7.0) is None
    assert not guard.is_blocked(ATTACKER, 1400.0)


def test_other_sources_are_not_affected():
    guard = AuthGuard()
    fail(guard, ATTACKER, 10, start=0.0)
    assert guard.is_blocked(ATTACKER, 20.0)
    assert not guard.is_blocked("198.51.100.1", 20.0)


def test_after_a_block_the_count_starts_again():
    guard = AuthGuard()
    fail(guard, ATTACKER, 10, start=0.0)
    assert fail(guard, ATTACKER, 9, start=1000.0) is None
    assert not guard.is_blocked(ATTACKER, 1010.0)


def test_repeat_offences_block_longer_up_to_the_cap():
    guard = AuthGuard(GuardPolicy(block_s=900.0, escalation_factor=2.0, max_block_s=3000.0))
    durations = []
    now = 0.0
    for _ in range(4):
        block = fail(guard, ATTACKER, 10, start=now)
        assert block is not None
        durations.append((block.offence, block.duration_s))
        now = block.until + 1.0
    assert durations == [(1, 900.0), (2, 1800.0), (3, 3000.0), (4, 3000.0)]


def test_offences_are_forgotten_after_a_clean_day():
    guard = AuthGuard(GuardPolicy(forget_offences_after_s=86_400.0))
    first = fail(guard, ATTACKER, 10, start=0.0)
    assert first is not None
    second = fail(guard, ATTACKER, 10, start=first.until + 86_401.0)
    assert second is not None and (second.offence, second.duration_s) == (1, 900.0)


def test_escalation_never_overflows():
    guard = AuthGuard(
        GuardPolicy(max_failures=1, block_s=1.0, escalation_factor=10.0, max_block_s=5.0)
    )
    now = 0.0
    for _ in range(400):
        block = guard.record_failure(ATTACKER, now)
        assert block is not None
        now = block.until
    assert block.offence == 400 and block.duration_s == 5.0


def test_trusted_networks_are_never_blocked():
    guard = AuthGuard(GuardPolicy(trusted_networks=("192.168.1.0/24", "fd00::/8")))
    for address in ("192.168.1.20", "::ffff:192.168.1.21", "fd00::5"):
        assert fail(guard, address, 50, start=0.0, step=0.1) is None
        assert not guard.is_blocked(address, 5.0)
    assert guard.counters["trusted_failures"] == 150
    assert guard.counters["failures"] == 0
    assert fail(guard, "192.168.2.20", 10, start=0.0) is not None


def test_an_ipv6_prefix_is_counted_as_one_source():
    guard = AuthGuard()
    for host in range(10):
        guard.record_failure(f"2001:db8:1:2::{host + 1:x}", float(host))
    assert guard.is_blocked("2001:db8:1:2:ffff::99", 20.0)
    assert not guard.is_blocked("2001:db8:1:3::1", 20.0)
    assert guard.snapshot(20.0)["blocked"][0]["source"] == "2001:db8:1:2::/64"


def test_ipv4_mapped_addresses_count_as_ipv4():
    guard = AuthGuard()
    fail(guard, "::ffff:203.0.113.7", 10, start=0.0)
    assert guard.is_blocked(ATTACKER, 20.0)


def test_failure_reported_during_a_block_changes_nothing():
    guard = AuthGuard()
    block = fail(guard, ATTACKER, 10, start=0.0)
    assert guard.record_failure(ATTACKER, 100.0) is None
    assert guard.snapshot(100.0)["blocked"][0]["remaining_s"] == pytest.approx(block.until - 100.0)


def test_tracked_sources_are_bounded():
    guard = AuthGuard(GuardPolicy(max_tracked=100))
    for index in range(5000):
        guard.record_failure(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}", 0.0)
    snapshot = guard.snapshot(0.0)
    assert snapshot["tracked"] == 100
    assert guard.counters["evictions"] == 4900


def test_a_flood_of_new_sources_does_not_unblock_anyone():
    guard = AuthGuard(GuardPolicy(max_tracked=100))
    fail(guard, ATTACKER, 10, start=0.0)
    for index in range(5000):
        guard.record_failure(f"10.0.{index // 256}.{index % 256}", 11.0)
    assert guard.is_blocked(ATTACKER, 12.0)


def test_the_block_table_is_bounded_and_keeps_the_longest_blocks():
    guard = AuthGuard(GuardPolicy(max_tracked=3, max_failures=1))
    for index in range(5):
        guard.record_failure(f"198.51.100.{index}", float(index))
    blocked = [entry["source"] for entry in guard.snapshot(5.0)["blocked"]]
    assert blocked == ["198.51.100.4", "198.51.100.3", "198.51.100.2"]


def test_snapshot_lists_blocks_and_failing_sources():
    guard = AuthGuard()
    fail(guard, ATTACKER, 10, start=0.0)
    fail(guard, "198.51.100.9", 3, start=5.0)
    snapshot = guard.snapshot(now=20.0)
    assert snapshot["blocked"] == [
        {"source": ATTACKER, "remaining_s": 889.0, "offence": 1, "duration_s": 900.0}
    ]
    assert snapshot["blocked_total"] == 1
    assert snapshot["failing"] == [{"source": "198.51.100.9", "failures": 3}]
    assert snapshot["counters"]["failures"] == 13
    # A minute later the failures have left the window; after the block, nothing is left.
    later = guard.snapshot(now=1000.0)
    assert later["blocked"] == [] and later["failing"] == []


def test_unblock_by_hand_keeps_the_offence_history():
    guard = AuthGuard()
    fail(guard, ATTACKER, 10, start=0.0)
    assert guard.unblock(ATTACKER)
    assert not guard.unblock(ATTACKER)
    assert not guard.is_blocked(ATTACKER, 20.0)
    block = fail(guard, ATTACKER, 10, start=30.0)
    assert block is not None and block.offence == 2


def test_purge_forgets_what_no_longer_matters():
    guard = AuthGuard()
    fail(guard, ATTACKER, 10, start=0.0)
    fail(guard, "198.51.100.9", 3, start=0.0)
    guard.purge(now=100_000.0)
    assert guard.snapshot(100_000.0)["tracked"] == 0
    assert guard._offences == {}  # the day-long memory of offences is gone too
    block = fail(guard, ATTACKER, 10, start=100_001.0)
    assert block is not None and block.offence == 1


@pytest.mark.parametrize(
    "options",
    [
        {"max_failures": 0},
        {"window_s": 0},
        {"escalation_factor": 0.5},
        {"max_block_s": 10.0},
        {"max_tracked": 0},
        {"ipv6_prefix_length": 129},
        {"trusted_networks": ("192.168.1.0/33",)},
    ],
)
def test_policy_refuses_nonsense(options):
    with pytest.raises(ValueError):
        GuardPolicy(**options)


def test_unknown_user_attempts_block_the_source_like_wrong_passwords():
    realm = "pbx.office.example"
    table = {"alice": StoredCredential.from_password("alice", realm, "correct horse")}
    server = DigestServer(realm, table.get)
    guard = AuthGuard()
    now = 0.0
    for attempt in range(10):
        assert not guard.is_blocked(ATTACKER, now)
        # An extension scanner: a new username each time, never a known one.
        client = DigestClient(f"{100 + attempt}", "1234")
        assert client.handle_challenge(401, server.challenge(now))
        headers = [
            value for _name, value in client.authorization_headers("REGISTER", f"sip:{realm}")
        ]
        result = server.verify("REGISTER", f"sip:{realm}", headers, now)
        assert isinstance(result, Failed) and not result.known_user
        guard.record_failure(ATTACKER, now)
        now += 1.0
    assert guard.is_blocked(ATTACKER, now)
