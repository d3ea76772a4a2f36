"""Peer reachability against SIPp answering OPTIONS, and against its absence."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.sip.peers import DOWN, UP, PeerMonitor, PeerTarget, Resolver
from firmware.sip.service import SipService

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp")
pytestmark = pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def start_sipp(*args: str) -> asyncio.subprocess.Process:
    assert SIPP is not None
    return await asyncio.create_subprocess_exec(
        SIPP, "-i", "127.0.0.1", *args, "-nostdin", "-timeout", "20s", "-timeout_error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process, timeout: float = 25.0) -> tuple[int, str]:
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")[-3000:]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def stack_only() -> SipService:
    service = SipService("office")
    await service.start("127.0.0.1", 0)
    try:
        yield service
    finally:
        await service.stop()


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
        await until(lambda: monitor.state("provider") == UP)
        code, output = await finish(peer)  # SIPp answered its 3 probes and left
        assert code == 0, output
        await until(lambda: monitor.state("provider") == DOWN)
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
