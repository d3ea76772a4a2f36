"""Trunk registration against SIPp as the provider's registrar (an independent implementation)."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.config.schema import SipPeerConfig
from firmware.sip.peers import Resolver
from firmware.sip.service import SipService
from firmware.sip.trunk_registration import RegistrationState, TrunkRegistration

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
    """A SIP stack with nothing behind it: the registration client brings its own logic."""
    service = SipService("office")
    await service.start("127.0.0.1", 0)
    try:
        yield service
    finally:
        await service.stop()


def provider(port: int, password: str = "trunk-secret", transport: str = "udp") -> SipPeerConfig:
    return SipPeerConfig(
        name="provider", host="127.0.0.1", port=port, registration=True, username="3512100",
        auth_username="trunkauth", password=password, domain="provider.test", transport=transport,
    )  # fmt: skip


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_registers_with_digest_refreshes_and_unregisters(stack_only: SipService, transport: str) -> None:
    port = free_port(socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM)
    registrar = await start_sipp("-sf", str(SCENARIOS / "peer_registrar.xml"), "-p", str(port), "-m", "1",
                                 "-t", "t1" if transport == "tcp" else "u1")  # fmt: skip
    await asyncio.sleep(0.3)
    trunk = TrunkRegistration(provider(port, transport=transport), stack_only.stack, Resolver(), lambda _ip: "127.0.0.1")
    task = asyncio.create_task(trunk.run())
    try:
        await until(lambda: trunk.state == RegistrationState.REGISTERED)
        assert trunk.granted_s == 2  # from our contact's expires in the 200
        # 80 % of 2 s later the refresh goes out with credentials and is granted 30 s.
        await until(lambda: trunk.granted_s == 30)
        assert trunk.status()["next_attempt_in_s"] <= 24.0
    finally:
        task.cancel()
    await trunk.unregister()
    assert trunk.state == RegistrationState.UNREGISTERED
    assert trunk.last_status == 200
    code, output = await finish(registrar)
    assert code == 0, output  # SIPp checked the credentials, the AOR and the Expires: 0


async def test_wrong_password_gets_403_and_backs_off(stack_only: SipService) -> None:
    port = free_port()
    registrar = await start_sipp("-sf", str(SCENARIOS / "peer_registrar.xml"), "-p", str(port), "-m", "1")
    await asyncio.sleep(0.3)
    trunk = TrunkRegistration(provider(port, "not-the-secret"), stack_only.stack, Resolver(),
                              lambda _ip: "127.0.0.1", backoff_base_s=60.0)  # fmt: skip
    task = asyncio.create_task(trunk.run())
    try:
        await until(lambda: trunk.state == RegistrationState.FAILED)
        status = trunk.status()
        assert (status["status_code"], status["failures"]) == (403, 1)
        assert 48.0 <= status["retry_delay_s"] <= 72.0
        assert status["next_attempt_in_s"] > 40.0
    finally:
        task.cancel()
    registrar.kill()
    await finish(registrar)


async def test_refusals_back_off_then_retry_after_then_registered(stack_only: SipService) -> None:
    """403, 403, 503 Retry-After: 1, 200: the waits double, then follow the registrar."""
    port = free_port()
    registrar = await start_sipp("-sf", str(SCENARIOS / "peer_registrar_refuses.xml"), "-p", str(port), "-m", "1")
    await asyncio.sleep(0.3)
    trunk = TrunkRegistration(provider(port), stack_only.stack, Resolver(), lambda _ip: "127.0.0.1",
                              backoff_base_s=0.3, backoff_max_s=5.0)  # fmt: skip
    delays: list[tuple[int, int | None, float | None]] = []
    task = asyncio.create_task(trunk.run())
    try:
        for failures in (1, 2, 3):
            await until(lambda failures=failures: trunk.failures == failures)
            delays.append((trunk.failures, trunk.last_status, trunk.retry_delay_s))
        await until(lambda: trunk.state == RegistrationState.REGISTERED)
    finally:
        task.cancel()
    (_, first_status, first), (_, second_status, second), (_, third_status, third) = delays
    assert (first_status, second_status, third_status) == (403, 403, 503)
    assert first is not None and 0.24 <= first <= 0.36
    assert second is not None and 0.48 <= second <= 0.72
    assert third == 1.0  # Retry-After
    assert trunk.failures == 0 and trunk.granted_s == 60
    await trunk.unregister()
    code, output = await finish(registrar)
    assert code == 0, output
