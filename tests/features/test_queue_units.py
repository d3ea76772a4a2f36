"""The queue's pure parts: agent order by strategy, the caller's soundtrack, the sentences,
the config model, the store, and the statistics (hand-computed) as the CLI prints them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from firmware.config.load import ConfigError, parse_config
from firmware.config.queue_schema import QueueNode
from firmware.features.cli_queue import utc_bound
from firmware.features.queue_sounds import Announcements, Soundtrack
from firmware.features.queue_stats import minutes_seconds, queue_stats, stats_table
from firmware.features.queue_store import QueueCallRow, QueueStore, QueueStoreError, open_readonly
from firmware.features.queue_strategy import agent_order
from tests.features.test_queue_helpers import queue_office

AGENTS = ("202", "203", "204", "205")

# ----- agent order ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "free", "last_end", "calls", "last_answered", "expected"),
    [
        ("ring_all", {"205", "203"}, {}, {}, None, ["203", "205"]),
        # Never had a call ranks first (config order among those), then oldest call end.
        ("longest_idle", set(AGENTS), {"202": 50.0, "203": 10.0}, {}, None, ["204", "205", "203", "202"]),
        ("longest_idle", {"202", "203"}, {"202": 50.0, "203": 10.0}, {"202": 0, "203": 9}, None, ["203", "202"]),
        # Fewest calls first whatever the idle time; equal counts: the longest idle.
        ("fewest_calls", {"202", "203"}, {"202": 50.0, "203": 10.0}, {"202": 0, "203": 9}, None, ["202", "203"]),
        ("fewest_calls", set(AGENTS), {"202": 50.0, "203": 10.0, "204": 30.0},
         {"202": 1, "203": 1, "204": 1, "205": 2}, None, ["203", "204", "202", "205"]),
        # Round robin starts after the last to answer, wrapping, skipping busy agents.
        ("round_robin", set(AGENTS), {}, {}, None, ["202", "203", "204", "205"]),
        ("round_robin", set(AGENTS), {}, {}, "203", ["204", "205", "202", "203"]),
        ("round_robin", {"202", "203"}, {}, {}, "205", ["202", "203"]),
        ("round_robin", {"202", "205"}, {}, {}, "203", ["205", "202"]),
        ("round_robin", set(AGENTS), {}, {}, "299", ["202", "203", "204", "205"]),  # removed agent
        ("longest_idle", set(), {}, {}, None, []),
    ],
)  # fmt: skip
def test_agent_order(strategy, free, last_end, calls, last_answered, expected) -> None:
    order = agent_order(
        strategy, AGENTS, free, last_end=last_end, calls=calls, last_answered=last_answered
    )
    assert order == expected


def test_an_unknown_strategy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown queue strategy 'random'"):
        agent_order("random", AGENTS, set(AGENTS), last_end={}, calls={}, last_answered=None)


# ----- soundtrack ----------------------------------------------------------------------------


def test_the_soundtrack_plays_an_announcement_piece_by_piece_then_music_for_every_s() -> None:
    track = Soundtrack("music:default", every_s=5.0)
    track.announce(["prompt:a", "prompt:b"])
    assert track.step(0.0, playing=True) == "prompt:a"  # cuts whatever played
    assert track.step(0.5, playing=True) is None
    assert track.wake_in(0.5, 0.05) == 0.05
    assert track.step(1.0, playing=False) == "prompt:b"
    assert track.step(2.0, playing=False) == "music:default"
    assert track.next_due == 7.0 and not track.due(6.99) and track.due(7.0)
    assert track.wake_in(3.0, 0.05) == 4.0
    assert track.step(3.0, playing=True) is None  # music goes on by itself
    track.announce([])
    assert track.step(7.0, playing=True) == "music:default"
    assert track.next_due == 12.0


def test_a_soundtrack_with_nothing_to_announce_never_comes_due() -> None:
    track = Soundtrack("music:default", every_s=5.0)
    assert track.step(0.0, playing=False) is None
    assert track.next_due == math.inf and not track.due(1e9)


def test_announcements_say_position_wait_and_the_leave_key() -> None:
    sentences = Announcements("en", "all_operators_busy", "please_hold", True, True, "#")
    assert sentences.entry(3, 150.0) == [
        "prompt:all_operators_busy", "prompt:you_are_caller_number", "prompt:number_3",
        "prompt:expected_wait", "prompt:number_2", "prompt:minutes",
        "prompt:press_to_leave", "prompt:key_hash",
    ]  # fmt: skip
    assert sentences.comfort(21, None) == [
        "prompt:please_hold", "prompt:you_are_caller_number", "prompt:number_20", "prompt:number_1",
    ]  # fmt: skip
    portuguese = Announcements("pt", None, None, True, False, "7")
    assert portuguese.comfort(23, 60.0) == [
        "prompt:you_are_caller_number", "prompt:number_20", "prompt:and", "prompt:number_3",
    ]  # fmt: skip
    assert portuguese.entry(1, None)[-2:] == ["prompt:press_to_leave", "prompt:number_7"]
    assert Announcements("en", None, None, False, False, None).has_comfort() is False


# ----- config --------------------------------------------------------------------------------


def node(**fields: object) -> QueueNode:
    return QueueNode.model_validate({"name": "q", "kind": "queue", "agents": ["202"], **fields})


def test_queue_defaults_follow_the_issue() -> None:
    queue = node()
    assert (queue.max_waiting, queue.strategy, queue.agents_start_logged_in) == (
        10,
        "ring_all",
        True,
    )
    assert queue.destinations() == ("",)
    assert node(leave_key="1", leave_to="voicemail", overflow="night").destinations() == (
        "night",
        "voicemail",
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"leave_to": "206"}, "leave_to is set but leave_key is not"),
        ({"agents": ["202", "203", "202"]}, "agents: 202 listed more than once"),
        ({"comfort_every_s": 4}, "greater than or equal to 5"),
        ({"strategy": "random"}, "ring_all"),
        ({"leave_key": "A"}, "leave_key"),
        ({"agents": []}, "at least 1 item"),
    ],
)
def test_bad_queue_settings_are_refused_with_the_reason(fields, message) -> None:
    with pytest.raises(ValidationError, match=message):
        node(**fields)


def test_check_config_names_a_queue_agent_that_is_no_extension() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(queue_office(agents=["202", "299"]), "<test>")
    assert "routing.nodes[0] (main).agents: no extension 299" in caught.value.errors


# ----- store and statistics ------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


ROWS = [
    QueueCallRow("sales", "212345678", at("2026-06-01T09:00:00"), "answered", 1000, "202"),
    QueueCallRow("sales", "212345679", at("2026-06-01T09:05:00"), "answered", 2001, "203"),
    QueueCallRow("sales", "", at("2026-06-01T09:10:00"), "abandoned", 3000),
    QueueCallRow("sales", "", at("2026-06-01T22:30:00"), "abandoned", 4500),  # 23:30 in Lisbon
    QueueCallRow("sales", "", at("2026-06-01T23:30:00"), "overflow_full", 0),  # 00:30 on 2 June
    QueueCallRow("sales", "", at("2026-06-02T10:00:00"), "overflow_timeout", 300_000),
    QueueCallRow("sales", "", at("2026-06-02T11:00:00"), "left", 700),
    QueueCallRow("support", "", at("2026-06-02T12:00:00"), "answered", 65_499, "204"),
]


@pytest.fixture
def stats_db(tmp_path):
    store = QueueStore(tmp_path / "queues.sqlite3")
    for row in ROWS:
        store.add_call(row)
    return tmp_path


def test_the_statistics_add_up_per_queue(stats_db) -> None:
    connection = open_readonly(stats_db / "queues.sqlite3")
    sales, support, empty = queue_stats(connection, configured=("sales", "zz-empty"))
    connection.close()
    assert (sales.offered, sales.answered, sales.abandoned, sales.overflowed, sales.left) == (
        7,
        2,
        2,
        2,
        1,
    )
    assert sales.answered_wait_avg_ms == 1501  # 3001 / 2 = 1500.5: halves up
    assert sales.abandoned_wait_avg_ms == 3750
    # Everyone who waited (not the overflow on arrival): 311201 / 6 = 51866.8
    assert (sales.wait_avg_ms, sales.wait_max_ms) == (51867, 300_000)
    assert (support.queue, support.offered, support.wait_max_ms) == ("support", 1, 65_499)
    assert (empty.queue, empty.offered, empty.wait_avg_ms) == ("zz-empty", 0, None)


def test_statistics_of_a_local_day_and_one_queue(stats_db) -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Lisbon")
    start, end = utc_bound("2026-06-02", zone, end=False), utc_bound("2026-06-02", zone, end=True)
    assert (start, end) == ("2026-06-01T23:00:00.000Z", "2026-06-02T23:00:00.000Z")
    connection = open_readonly(stats_db / "queues.sqlite3")
    [sales] = queue_stats(connection, start, end, "sales")
    connection.close()
    assert (sales.offered, sales.overflowed, sales.left, sales.abandoned) == (3, 2, 1, 0)


def test_the_text_table_and_json_of_queue_stats(stats_db) -> None:
    connection = open_readonly(stats_db / "queues.sqlite3")
    stats = queue_stats(connection)
    connection.close()
    assert stats_table(stats) == (
        "queue    offered  answered  abandoned  aband. wait  overflowed  left  answer wait  avg wait  max wait\n"
        "sales          7         2          2         0:04           2     1         0:02      0:52      5:00\n"
        "support        1         1          0            -           0     0         1:05      1:05      1:05\n"
    )  # fmt: skip
    assert stats[1].to_json() == {
        "queue": "support", "offered": 1, "answered": 1, "abandoned": 0, "overflowed": 0,
        "left": 0, "abandoned_wait_avg_s": None, "answered_wait_avg_s": 65.5,
        "wait_avg_s": 65.5, "wait_max_s": 65.5,
    }  # fmt: skip
    assert [minutes_seconds(v) for v in (None, 0, 499, 500, 59_500, 3_600_000)] == [
        "-", "0:00", "0:00", "0:01", "1:00", "60:00",
    ]  # fmt: skip


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware.features.cli_queue", "stats", *arguments],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_queue_stats_command_prints_a_period_of_one_queue(stats_db) -> None:
    result = run_cli("--data-dir", str(stats_db), "--from", "2026-06-02", "--to", "2026-06-02",
                     "--queue", "sales", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    [sales] = json.loads(result.stdout)
    assert sales == {
        "queue": "sales", "offered": 3, "answered": 0, "abandoned": 0, "overflowed": 2, "left": 1,
        "abandoned_wait_avg_s": None, "answered_wait_avg_s": None, "wait_avg_s": 150.4,
        "wait_max_s": 300.0,
    }  # fmt: skip
    result = run_cli("--data-dir", str(stats_db))
    assert result.returncode == 0 and result.stdout.splitlines()[1].startswith("sales          7")


@pytest.mark.parametrize(
    ("arguments", "status", "message"),
    [
        (("--from", "2026-02-30"), 2, "'2026-02-30' is not a date"),
        (("--from", "2026-06-03", "--to", "2026-06-02"), 2, "is not before"),
        (("--queue", "nobody"), 1, "no queue named 'nobody'"),
    ],
)
def test_queue_stats_command_explains_bad_input(stats_db, arguments, status, message) -> None:
    result = run_cli("--data-dir", str(stats_db), *arguments)
    assert (result.returncode, result.stdout) == (status, "")
    assert message in result.stderr


def test_queue_stats_command_without_a_database(tmp_path) -> None:
    result = run_cli("--data-dir", str(tmp_path))
    assert result.returncode == 1 and "no queue calls recorded yet" in result.stderr


def test_the_store_reads_back_agents_memory_and_recent_waits(tmp_path) -> None:
    store = QueueStore(tmp_path / "queues.sqlite3")
    store.set_login("sales", "202", False, at("2026-06-01T08:00:00"))
    store.set_login("sales", "202", True, at("2026-06-01T08:01:00"))
    store.set_login("sales", "203", False, at("2026-06-01T08:02:00"))
    store.agent_answered("sales", "202", "2026-06-01", 4)
    store.agent_answered("sales", "204", "2026-06-01", 1)
    store.agent_call_ended("204", at("2026-06-01T09:00:00"))
    for index in range(12):
        store.add_call(QueueCallRow("sales", "", at("2026-06-01T10:00:00"), "answered", index))
    store.add_call(QueueCallRow("sales", "", at("2026-06-01T10:00:00"), "abandoned", 99))
    state = QueueStore(tmp_path / "queues.sqlite3").load()
    assert state.logins == {("sales", "202"): True, ("sales", "203"): False}
    assert state.calls_today == {
        ("sales", "202"): ("2026-06-01", 4),
        ("sales", "204"): ("2026-06-01", 1),
    }
    assert state.last_answered == {"sales": "204"}
    assert state.last_end == {"204": at("2026-06-01T09:00:00").timestamp()}
    assert state.answered_waits == {"sales": list(range(2, 12))}  # the last ten, oldest first
    with pytest.raises(ValueError, match="unknown queue call outcome 'lost'"):
        store.add_call(QueueCallRow("sales", "", at("2026-06-01T10:00:00"), "lost", 0))


def test_a_database_from_newer_firmware_is_refused(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "queues.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 9")
    with pytest.raises(QueueStoreError, match="schema version 9 is newer"):
        QueueStore(path).load()
    with pytest.raises(QueueStoreError, match="schema version 9"):
        open_readonly(path)
