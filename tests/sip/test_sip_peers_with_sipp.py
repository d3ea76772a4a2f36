"""Peer reachability against SIPp answering OPTIONS, and against its absence."""

from __future__ import annotations

import asyncio

import pytest
from sipp_tools import (
    SCENARIOS,
    finish,
    free_port,
    needs_sipp,
    stack_only_fixture,  # noqa: F401  (pytest finds the stack_only fixture here)
    start_sipp,
    wait_until,
)

from firmware.sip.peers import DOWN, UP, PeerMonitor, PeerTarget, Resolver
from firmware.sip.service import SipService

pytestmark = needs_sipp


SCENARIO_FOR_STATUS = {200: "peer_options_responder.xml", 404: "peer_options_404.xml", 503: "peer_options_503.xml"}


async def responder(port: int, status: int, probes: int) -> asyncio.subprocess.Process:
    scenario = SCENARIOS / SCENARIO_FOR_STATUS[status]
    return await start_sipp("-sf", str(scenario), "-p", str(port), "-m", str(probes))


async def test_peer_is_up_while_sipp_answers_and_down_when_it_is_gone(stack_only: SipService) -> None:
    port = free_port()
    peer = await responder(port, 200, 3)
    await asyncio.sleep(0.3)
    monitor = PeerMonitor(stack_only.stack, Resolver(), lambda _ip: "127.0.0.1")
    monitor.start([PeerTarget("provider", "127.0.0.1", port, 0.3)])
    try:
        await wait_until(lambda: monitor.state("provider") == UP)
        code, output = await finish(peer)  # SIPp answered its 3 probes and left
        assert code == 0, output
        await wait_until(lambda: monitor.state("provider") == DOWN)
        assert not monitor.is_up("provider")
        status = monitor.status()["provider"]
        assert (status["went_up"], status["went_down"]) == (1, 1)
        assert status["reason"] == "no answer"
    finally:
        await monitor.stop()


@pytest.mark.parametrize(("status", "state"), [(404, UP), (503, DOWN)])
async def test_an_error_answer_is_up_but_503_is_down(stack_only: SipService, status: int, state: str) -> None:
    port = free_port()
    peer = await responder(port, status, 1)
    await asyncio.sleep(0.3)
    monitor = PeerMonitor(stack_only.stack, Resolver(), lambda _ip: "127.0.0.1")
    assert await monitor.probe(PeerTarget("provider", "127.0.0.1", port, 5.0)) == state
    assert monitor.status()["provider"]["last_status"] == status
    code, output = await finish(peer)
    assert code == 0, output
