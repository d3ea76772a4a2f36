"""Hundreds of calls set up and torn down back to back: nothing may pile up.

Four pairs of phones call each other as fast as the core lets them; afterwards every call
has its answered record and the appliance holds exactly the resources it held before
(mixer slots, call sessions, call tasks, asyncio tasks, file descriptors, sockets).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path

from firmware.calls.cdr import Disposition
from firmware.calls.lifecycle import LegState
from tests.conftest import Pbx

PAIRS = (("201", "202"), ("203", "204"), ("205", "206"), ("207", "208"))
CALLS_PER_PAIR = 125
STEP_TIMEOUT_S = 3.0


def open_fds() -> tuple[int, int]:
    """(all open file descriptors, of which sockets) of this process."""
    fds = sockets = 0
    for entry in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue  # the directory listing's own descriptor, closed already
        fds += 1
        sockets += target.startswith("socket:")
    return fds, sockets


async def one_call(pbx: Pbx, caller: str, callee: str) -> None:
    a, b = pbx.phone(caller), pbx.phone(callee)
    channel_a, channel_b = pbx.channel(caller), pbx.channel(callee)
    a.off_hook()
    await pbx.wait_state(caller, LegState.DIALLING, STEP_TIMEOUT_S)
    await a.dial(callee, inter_digit_s=0.005)
    await b.wait_ringing(STEP_TIMEOUT_S)
    b.off_hook()
    await pbx.sim.wait_until(
        lambda: channel_a.state == LegState.CONNECTED and channel_b.state == LegState.CONNECTED,
        STEP_TIMEOUT_S,
        f"{caller}-{callee} connected",
    )
    a.on_hook()
    b.on_hook()
    await pbx.sim.wait_until(
        lambda: channel_a.state == LegState.IDLE and channel_b.state == LegState.IDLE,
        STEP_TIMEOUT_S,
        f"{caller}-{callee} idle",
    )


async def settled_task_count() -> int:
    await asyncio.sleep(0.1)
    return len([t for t in asyncio.all_tasks() if not t.done()])


async def test_500_calls_back_to_back_leave_nothing_behind(pbx: Pbx) -> None:
    app = pbx.app
    assert app.calls is not None
    # Warm up once per pair (lazy threads, first database write), then take the baseline.
    await asyncio.gather(*(one_call(pbx, a, b) for a, b in PAIRS))
    await pbx.wait_idle()
    gc.collect()
    tasks_before = await settled_task_count()
    fds_before, sockets_before = open_fds()
    answered_before = len(
        [r for r in await pbx.records(100) if r.disposition == Disposition.ANSWERED]
    )

    async def pair_loop(caller: str, callee: str) -> None:
        for index in range(CALLS_PER_PAIR):
            # Alternate who calls, so both directions of every pair are exercised.
            a, b = (caller, callee) if index % 2 == 0 else (callee, caller)
            await one_call(pbx, a, b)

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(pair_loop(a, b) for a, b in PAIRS)), 60)
    elapsed = time.monotonic() - started
    total = CALLS_PER_PAIR * len(PAIRS)
    print(f"\n{total} calls in {elapsed:.1f} s: {total / elapsed:.1f} calls/s")

    await pbx.wait_idle()
    records = await pbx.records(total + 100)
    answered = [r for r in records if r.disposition == Disposition.ANSWERED]
    assert len(answered) - answered_before == total, f"{len(answered)} answered records"
    assert len(records) == total + len(PAIRS), "exactly one record per call"
    assert len({r.call_id for r in records}) == len(records)
    assert app.mixer.slots_in_use == 0
    assert app.mixer.health().slots_in_use == 0
    assert not app.calls.sessions
    assert app.calls.task_count == 0
    assert app.calls.counters.illegal_transitions == 0
    assert app.calls.counters.cdr_failures == 0
    assert all(c.state == LegState.IDLE for c in app.line_card.channels.values())
    gc.collect()
    assert await settled_task_count() == tasks_before
    fds_after, sockets_after = open_fds()
    assert fds_after <= fds_before, f"file descriptors {fds_before} -> {fds_after}"
    assert sockets_after <= sockets_before, f"sockets {sockets_before} -> {sockets_after}"
    assert app.line_card.driver.status == "up"
    assert app.line_card.driver.counters["given_up"] == 0
