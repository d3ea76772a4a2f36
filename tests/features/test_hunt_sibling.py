"""Hunt-group members in a sibling office: two whole appliances in one process, lisbon (2xx)
and porto (3xx), linked over authenticated SIP. Lisbon's group rings a porto extension with
an outgoing SIP leg (INVITE, 180, 200); porto's own call record carries the same
correlation id. A porto member who is busy answers 486 and is dropped at once.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware.calls.cdr import Disposition
from firmware.calls.lifecycle import LegState
from tests.conftest import Pbx, office_config, start_pbx
from tests.features.feature_tools import office_with_routing

SECRET = "hunt-lisbon-porto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sip_text(port: int, rtp: int, sibling: str, sibling_port: int, sibling_range: str) -> str:
    return f"""
[sip]
listen = "127.0.0.1:{port}"
rtp_ports = [{rtp}, {rtp + 100}]

[[sibling_sites]]
name = "{sibling}"
extensions = ["{sibling_range}"]
host = "127.0.0.1"
port = {sibling_port}
password = "{SECRET}"
keepalive_s = 0.5
"""


def lisbon_config(
    strategy: str, members: tuple[str, ...], port: int, porto_port: int, rtp: int
) -> str:
    quoted = ", ".join(f'"{member}"' for member in members)
    routing = f"""
[[routing.nodes]]
name = "sales"
kind = "hunt_group"
members = [{quoted}]
strategy = "{strategy}"
ring_s = 1.5
timeout_s = 8
"""
    text = office_with_routing(
        routing, '["sales"]', extra=sip_text(port, rtp, "porto", porto_port, "3xx")
    )
    return text.replace('name = "office"', 'name = "lisbon"', 1)


def porto_config(port: int, lisbon_port: int, rtp: int) -> str:
    text = office_config(sip_text(port, rtp, "lisbon", lisbon_port, "2xx"))
    text = text.replace('name = "office"', 'name = "porto"', 1)
    return re.sub(r'"20([0-9])"', r'"30\1"', text)  # extensions 3xx (not "20:00")


async def offices(strategy: str, members: tuple[str, ...]) -> AsyncIterator[tuple[Pbx, Pbx]]:
    lisbon_port, porto_port = free_port(), free_port()
    rtp = random.randrange(33000, 39000, 400)  # away from the fixed ranges of other tests
    folders = [Path(tempfile.mkdtemp(prefix="mpbx")) for _ in range(2)]
    lisbon = await start_pbx(
        lisbon_config(strategy, members, lisbon_port, porto_port, rtp), folders[0]
    )
    try:
        porto = await start_pbx(porto_config(porto_port, lisbon_port, rtp + 200), folders[1])
        try:
            await lisbon.sim.wait_until(
                lambda: lisbon.app.sip.peer_available("sibling:porto"), 5.0, "porto up"
            )
            yield lisbon, porto
        finally:
            await porto.app.stop()
    finally:
        await lisbon.app.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def simultaneous() -> AsyncIterator[tuple[Pbx, Pbx]]:
    async for pair in offices("simultaneous", ("202", "301")):
        yield pair


@pytest.fixture
async def sequential() -> AsyncIterator[tuple[Pbx, Pbx]]:
    async for pair in offices("sequential", ("301", "202")):
        yield pair


async def test_a_sibling_member_rings_with_the_local_one_and_answers_over_sip(simultaneous) -> None:
    lisbon, porto = simultaneous
    caller, local, remote = lisbon.line("city1"), lisbon.phone("202"), porto.phone("301")
    caller.ring("212345678")
    await local.wait_ringing()
    ring = await remote.wait_ringing()
    assert ring.caller_number == "212345678", "porto shows the city caller"
    remote.off_hook()
    await porto.wait_state("301", LegState.CONNECTED)
    await local.wait_not_ringing(timeout=2.0)
    await lisbon.wait_state("city1", LegState.CONNECTED)
    await lisbon.speech_both_ways(caller, remote)  # the lisbon line to the porto desk
    remote.on_hook()
    await lisbon.sim.wait_until(lambda: not caller.seized, 5.0, "lisbon releases the city line")
    here, there = await lisbon.last_record(), await porto.last_record()
    assert (here.called_extension, here.answered_extension, here.line) == (
        "202",
        "301",
        "sibling:porto",
    )
    assert here.disposition == Disposition.ANSWERED
    assert there.answered_extension == "301"
    assert here.correlation_id and here.correlation_id == there.correlation_id


async def test_a_busy_sibling_member_declines_and_the_next_member_rings_at_once(sequential) -> None:
    lisbon, porto = sequential
    busy = porto.phone("301")
    busy.off_hook()
    await porto.wait_state("301", LegState.DIALLING)
    caller, local = lisbon.line("city1"), lisbon.phone("202")
    caller.ring("212345678")
    await lisbon.sim.wait_until(lambda: lisbon.app.calls.sessions, 3.0, "the call starts")
    await local.wait_ringing(timeout=3.5)  # caller ID wait (<= 2.5 s) plus the 486 round trip
    assert busy.rings_received == 0
    local.off_hook()
    await lisbon.wait_state("202", LegState.CONNECTED)
    local.on_hook()
    busy.on_hook()
    record = await lisbon.last_record()
    assert (record.answered_extension, record.line) == ("202", "city1")
    await porto.wait_idle()
    declined = [r for r in await porto.records() if r.correlation_id == record.correlation_id]
    assert [(r.called_extension, r.disposition) for r in declined] == [("301", Disposition.BUSY)]
