"""Where a queue sends callers it cannot serve, and what its statistics then say.

The agents start logged out (nobody answers) unless a test logs them in. A caller who
waited `max_wait_s` goes to `overflow` (here extension 207); so does a caller arriving at a
full queue, at once. The statistics count each outcome once, with the time waited, and
`minipbx queue stats` (run as a separate process) reads them back.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from firmware.calls.lifecycle import LegState
from firmware.features.queue_stats import queue_stats, tenths
from firmware.features.queue_store import open_readonly
from tests.features.test_queue_helpers import (
    dial_queue,
    queue_office,
    queue_service,
    wait_ringing,
    waiting,
)

QUEUE = {
    "agents_start_logged_in": False,
    "max_waiting": 1,
    "max_wait_s": 2.0,
    "overflow": "207",
    "leave_key": "#",
    "leave_to": "206",
}


@pytest.fixture
def pbx_config() -> str:
    return queue_office(**QUEUE)


async def test_a_caller_who_waited_the_maximum_goes_to_the_overflow(pbx) -> None:
    loop = asyncio.get_running_loop()
    caller = await dial_queue(pbx, "205")
    joined = loop.time()
    await pbx.wait_state("207", LegState.ALERTING, timeout=4.0)
    assert 1.9 <= loop.time() - joined <= 2.6
    overflow = pbx.phone("207")
    overflow.off_hook()
    await pbx.wait_state("207", LegState.CONNECTED)
    await pbx.speech_both_ways(caller, overflow)
    caller.on_hook()
    record = await pbx.last_record()
    assert record.answered_extension == "207"
    overflow.on_hook()


async def test_a_full_queue_sends_the_next_caller_to_the_overflow_at_once(pbx) -> None:
    first = await dial_queue(pbx, "205")
    await pbx.sim.wait_until(lambda: waiting(pbx) == 1, 2.0, "the first caller waits")
    second = await dial_queue(pbx, "206")
    await pbx.wait_state("207", LegState.ALERTING, timeout=1.0)
    assert waiting(pbx) == 1
    second.on_hook()
    first.on_hook()
    await pbx.wait_idle()


async def test_every_outcome_is_counted_and_queue_stats_reads_them(pbx, data_dir) -> None:
    loop = asyncio.get_running_loop()
    agent = pbx.phone("202")
    agent.off_hook()  # log in: this caller is answered after about half a second
    await pbx.wait_state("202", LegState.DIALLING)
    await agent.dial("*45")
    agent.on_hook()
    await pbx.wait_idle()
    caller = await dial_queue(pbx, "205")
    await wait_ringing(pbx, {"202"})
    await asyncio.sleep(0.5)
    agent.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    caller.on_hook()
    await pbx.wait_idle()
    agent.on_hook()
    await pbx.wait_state("202", LegState.IDLE)
    agent.off_hook()  # log out again: nobody answers from here
    await pbx.wait_state("202", LegState.DIALLING)
    await agent.dial("*46")
    agent.on_hook()
    await pbx.wait_idle()

    caller = await dial_queue(pbx, "205")  # abandoned after about one second
    await pbx.sim.wait_until(lambda: waiting(pbx) == 1, 2.0, "waiting")
    await asyncio.sleep(1.0)
    caller.on_hook()
    await pbx.wait_idle()

    caller = await dial_queue(pbx, "205")  # waits the maximum, 2 s
    await pbx.sim.wait_until(lambda: waiting(pbx) == 1, 2.0, "waiting")
    other = await dial_queue(pbx, "206")  # the queue is full
    await pbx.wait_state("207", LegState.ALERTING, timeout=1.0)
    other.on_hook()
    await pbx.sim.wait_until(lambda: waiting(pbx) == 0, 3.0, "the first overflows too")
    caller.on_hook()
    await pbx.wait_idle()

    caller = await dial_queue(pbx, "205")  # leaves by key
    await pbx.sim.wait_until(lambda: waiting(pbx) == 1, 2.0, "waiting")
    started = loop.time()
    await caller.dial("#")
    await pbx.wait_state("206", LegState.ALERTING, timeout=1.0)
    assert loop.time() - started < 0.5
    caller.on_hook()
    await pbx.wait_idle()
    await queue_service(pbx).flush()

    connection = open_readonly(data_dir / "queues.sqlite3")
    outcomes = [row[0] for row in connection.execute("SELECT outcome FROM queue_calls ORDER BY id")]
    [stats] = queue_stats(connection)
    connection.close()
    assert outcomes == ["answered", "abandoned", "overflow_full", "overflow_timeout", "left"]
    assert (stats.queue, stats.offered, stats.answered, stats.abandoned) == ("main", 5, 1, 1)
    assert (stats.overflowed, stats.left) == (2, 1)
    assert 400 <= stats.answered_wait_avg_ms <= 900
    assert 900 <= stats.abandoned_wait_avg_ms <= 1400
    assert 1950 <= stats.wait_max_ms <= 2400

    config_path = data_dir / "office.toml"
    config_path.write_text(queue_office(**QUEUE))
    result = subprocess.run(
        [sys.executable, "-m", "firmware.features.cli_queue", "stats", "--json",
         "--config", str(config_path), "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["queue"] == "main"
    assert (row["offered"], row["answered"], row["abandoned"], row["overflowed"], row["left"]) == (
        5,
        1,
        1,
        2,
        1,
    )
    assert row["wait_max_s"] == tenths(stats.wait_max_ms)
