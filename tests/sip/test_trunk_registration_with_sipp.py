"""Trunk registration against SIPp as the provider's registrar (an independent implementation)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from conftest import office_config, start_pbx
from sipp_tools import (
    SCENARIOS,
    echoed,
    finish,
    free_port,
    needs_sipp,
    sip_peer,
    sip_section,
    stack_only_fixture,  # noqa: F401  (pytest finds the stack_only fixture here)
    start_sipp,
    target,
    wait_until,
)

from firmware.calls.lifecycle import LegState
from firmware.config.schema import SipConfig, SipPeerConfig
from firmware.sip.peers import Resolver
from firmware.sip.service import SipService
from firmware.sip.trunk_registration import RegistrationState, TrunkRegistration

pytestmark = needs_sipp


def provider(port: int, password: str = "trunk-secret", transport: str = "udp") -> SipPeerConfig:
    return SipPeerConfig(
        name="provider", host="127.0.0.1", port=port, registration=True, username="3512100",
        auth_username="trunkauth", password=password, domain="provider.test", transport=transport,
    )  # fmt: skip


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_registers_with_digest_refreshes_and_unregisters(stack_only: SipService, transport: str) -> None:
    port = free_port(socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM)
    registrar = await start_sipp("-sf", str(SCENARIOS / "peer_registrar.xml"), "-p", str(port), "-m", "1",
                                 transport="t1" if transport == "tcp" else "u1")  # fmt: skip
    await asyncio.sleep(0.3)
    trunk = TrunkRegistration(provider(port, transport=transport), stack_only.stack, Resolver(), lambda _ip: "127.0.0.1")
    task = asyncio.create_task(trunk.run())
    try:
        await wait_until(lambda: trunk.state == RegistrationState.REGISTERED)
        assert trunk.granted_s == 2  # from our contact's expires in the 200
        # 80 % of 2 s later the refresh goes out with credentials and is granted 30 s.
        await wait_until(lambda: trunk.granted_s == 30)
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
        await wait_until(lambda: trunk.state == RegistrationState.FAILED)
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
            await wait_until(lambda failures=failures: trunk.failures == failures)
            delays.append((trunk.failures, trunk.last_status, trunk.retry_delay_s))
        await wait_until(lambda: trunk.state == RegistrationState.REGISTERED)
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


async def test_service_registers_a_trunk_named_by_host_name_and_reports_it() -> None:
    port = free_port()
    registrar = await start_sipp("-sf", str(SCENARIOS / "peer_registrar.xml"), "-p", str(port), "-m", "1")
    await asyncio.sleep(0.3)
    trunk = provider(port).model_copy(update={"host": "localhost"})
    service = SipService("office", SipConfig(peers=(trunk,)))
    await service.start("127.0.0.1", 0)
    try:
        assert not service.peer_available("provider"), "not registered yet"
        await wait_until(lambda: service.status()["trunks"]["provider"]["registration"]["state"] == "registered")
        assert service.peer_available("provider")
        await wait_until(lambda: service.links.registrations.trunks["provider"].granted_s == 30)  # refreshed
        status = service.status()["trunks"]["provider"]
        assert status["host"] == f"udp:localhost:{port}"
        assert status["reachable"] is None and status["calls"] == 0
        assert service.peer_for(("127.0.0.1", 40000)) is trunk, "calls from its resolved address are its"
    finally:
        await service.stop()
    assert service.status()["trunks"]["provider"]["registration"]["state"] == "unregistered"
    code, output = await finish(registrar)
    assert code == 0, output


async def test_service_skips_a_trunk_while_its_registration_fails() -> None:
    port = free_port()
    registrar = await start_sipp("-sf", str(SCENARIOS / "peer_registrar_refuses.xml"), "-p", str(port), "-m", "1")
    await asyncio.sleep(0.3)
    service = SipService("office", SipConfig(peers=(provider(port),)), registration_backoff_s=0.3)
    await service.start("127.0.0.1", 0)
    try:
        await wait_until(lambda: service.status()["trunks"]["provider"]["registration"]["state"] == "failed")
        status = service.status()["trunks"]["provider"]
        assert status["registration"]["status_code"] == 403
        assert status["registration"]["next_attempt_in_s"] is not None
        assert not status["available"] and not service.peer_available("provider")
        await wait_until(lambda: service.peer_available("provider"))
        assert service.status()["trunks"]["provider"]["registration"]["failures"] == 0
    finally:
        await service.stop()
    code, output = await finish(registrar)
    assert code == 0, output


@pytest.fixture
def did_config() -> str:
    silent = free_port()  # the trunk's registrar is not there: inbound calls work all the same
    trunk = 'registration = true\nusername = "3512100"\npassword = "trunk-secret"\ndid_from = "to"\nincoming = { "212000201" = "201" }\n'
    return office_config(sip_section((30600, 30800)) + sip_peer("provider", silent, "localhost", trunk))


async def test_call_from_a_registering_trunk_is_routed_by_the_did_in_to(did_config: str, data_dir: Path) -> None:
    pbx = await start_pbx(did_config, data_dir)
    try:
        sip = pbx.app.sip
        await wait_until(lambda: sip.links.resolver.addresses("localhost") != ())
        uac = await start_sipp(target(pbx), "-sf", str(SCENARIOS / "peer_did_to.xml"), "-s", "3512100",
                               "-m", "1", "-p", str(free_port()), "-mp", str(free_port()), "-rtp_echo")  # fmt: skip
        reception = pbx.phone("201")
        await reception.wait_ringing(5.0)
        reception.off_hook()
        await pbx.wait_state("201", LegState.CONNECTED)
        assert await echoed(pbx, reception), "no audio back through the trunk"
        code, output = await finish(uac)
        assert code == 0, output
        reception.on_hook()
        record = await pbx.last_record()
        assert (record.dialled, record.answered_extension, record.line) == ("212000201", "201", "provider")
    finally:
        await pbx.app.stop()
