"""Calls over SIP through the appliance, with SIPp as the provider (an independent peer)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from conftest import Pbx, office_config, start_pbx
from sipp_tools import (
    SCENARIOS,
    echoed,
    finish,
    free_port,
    needs_sipp,
    sip_peer,
    sip_section,
    sip_with_provider,
    start_sipp,
    stop_sipp,
    target,
    uas_port_fixture,  # noqa: F401  (pytest finds the uas_port fixture here)
    with_voip_group,
)

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.lifecycle import LegState

pytestmark = needs_sipp


@pytest.fixture
def pbx_config(uas_port: int) -> str:
    peer = 'allow_tandem = true\nincoming = { "201" = "201", "2100" = "201,202", "b2b" = "peer:provider" }\n'
    return office_config(sip_with_provider(uas_port, (30000, 30200), peer))


@pytest.fixture
async def sip_pbx(pbx_config: str, data_dir: Path) -> Pbx:
    pbx = await start_pbx(pbx_config, data_dir)
    try:
        yield pbx
    finally:
        await pbx.app.stop()


async def test_provider_call_rings_the_extension_and_speech_passes_both_ways(sip_pbx: Pbx) -> None:
    reception = sip_pbx.phone("201")
    uac = await start_sipp(target(sip_pbx), "-sf", str(SCENARIOS / "uac_call.xml"), "-s", "201", "-m", "1",
                           "-p", str(free_port()), "-mp", str(free_port()), "-rtp_echo")  # fmt: skip
    ringing = await reception.wait_ringing(5.0)
    assert ringing.caller_number == "212345678"
    assert ringing.caller_name == "City Caller"
    reception.off_hook()
    await sip_pbx.wait_state("201", LegState.CONNECTED)
    # SIPp echoes our RTP: a tone said on the handset comes back through the SIP leg only if
    # audio passes appliance -> SIPp and SIPp -> appliance.
    assert await echoed(sip_pbx, reception), "no audio back from SIPp"
    code, output = await finish(uac)
    assert code == 0, output
    assert await sip_pbx.hears(reception, "busy"), "the provider hung up: the extension hears busy"
    reception.on_hook()
    record = await sip_pbx.last_record()
    assert record.direction == Direction.INCOMING
    assert record.disposition == Disposition.ANSWERED
    assert (record.caller_number, record.dialled, record.answered_extension) == ("212345678", "201", "201")
    assert record.line == "provider"
    assert sip_pbx.app.sip.legs == {}


async def test_unknown_peer_is_refused_with_403(sip_pbx: Pbx, data_dir: Path) -> None:
    sip_pbx.app.sip.config = sip_pbx.app.sip.config.model_copy(update={"peers": ()})
    uac = await start_sipp(target(sip_pbx), "-sn", "uac", "-s", "201", "-m", "1", "-p", str(free_port()))
    code, output = await finish(uac)
    assert code != 0, output
    assert sip_pbx.app.sip.rejected_peers == 1


async def test_sip_call_to_a_busy_extension_gets_486(sip_pbx: Pbx) -> None:
    reception = sip_pbx.phone("201")
    reception.off_hook()
    await sip_pbx.wait_state("201", LegState.DIALLING)
    uac = await start_sipp(target(sip_pbx), "-sf", str(SCENARIOS / "uac_call.xml"), "-s", "201", "-m", "1",
                           "-p", str(free_port()), "-mp", str(free_port()))  # fmt: skip
    code, output = await finish(uac)
    assert code != 0, output  # SIPp counts a call that got 486 as failed
    reception.on_hook()
    record = await sip_pbx.last_record()
    assert record.disposition == Disposition.BUSY


async def test_call_between_two_sipp_peers_is_bridged_through_the_appliance(sip_pbx: Pbx, uas_port: int) -> None:
    uas = await start_sipp("-sn", "uas", "-p", str(uas_port), "-m", "1")
    await asyncio.sleep(0.3)
    uac = await start_sipp(target(sip_pbx), "-sn", "uac", "-s", "b2b", "-m", "1", "-p", str(free_port()),
                           "-d", "500")  # fmt: skip
    uac_code, uac_output = await finish(uac)
    uas_code, uas_output = await finish(uas)
    assert uac_code == 0, uac_output
    assert uas_code == 0, uas_output
    await sip_pbx.wait_idle()
    record = (await sip_pbx.records(1))[0]
    assert record.disposition == Disposition.ANSWERED
    assert record.destination_kind == "tandem"
    assert sip_pbx.app.mixer.slots_in_use == 0
    assert sip_pbx.app.sip.legs == {}


@pytest.fixture
def trunk_ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def trunk_config(trunk_ports: tuple[int, int]) -> str:
    down, up = trunk_ports
    text = office_config(sip_section((30200, 30400)) + sip_peer("provider_a", down) + sip_peer("provider_b", up, "127.0.0.2"))
    return with_voip_group(text, ["provider_a", "provider_b"])


async def test_extension_calls_out_over_a_sip_trunk_with_failover(trunk_config: str, trunk_ports, data_dir) -> None:
    """Provider A is down (503): the call fails over to provider B, which answers and echoes."""
    down, up = trunk_ports
    pbx = await start_pbx(trunk_config, data_dir)
    refusing = await start_sipp("-sf", str(SCENARIOS / "uas_refuse.xml"), "-p", str(down), "-m", "1")
    answering = await start_sipp("-sn", "uas", "-p", str(up), "-m", "1", "-mp", str(free_port()), "-rtp_echo",
                                 "-i", "127.0.0.2")  # fmt: skip
    try:
        await asyncio.sleep(0.3)
        sales = pbx.phone("202")
        sales.off_hook()
        await pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("8212345678")
        await pbx.wait_state("202", LegState.CONNECTED, timeout=5.0)
        assert await echoed(pbx, sales), "no audio back through the trunk"
        sales.on_hook()
        record = await pbx.last_record()
        assert record.direction == Direction.OUTGOING
        assert record.disposition == Disposition.ANSWERED
        assert (record.line, record.line_group, record.destination_kind) == ("provider_b", "voip", "local")
        code_a, output_a = await finish(refusing)
        assert code_a == 0, output_a
        code_b, output_b = await finish(answering)
        assert code_b == 0, output_b
    finally:
        await pbx.app.stop()
        await stop_sipp(refusing, answering)


@pytest.fixture
def phone_config() -> str:
    text = office_config(sip_section((30400, 30600)) + 'digest_algorithms = ["MD5"]\n')
    return text.replace('number = "201"\nname = "Reception"\n', 'number = "201"\nname = "Reception"\nsip_password = "s3cret-pass"\n')


async def test_a_registered_sip_phone_rings_with_the_desk_phone_and_answers(phone_config: str, data_dir) -> None:
    """SIPp registers as 201 (digest), then answers as that phone; the desk phone stops ringing."""
    pbx = await start_pbx(phone_config, data_dir)
    phone_port = free_port()
    try:
        register = await start_sipp(target(pbx), "-sf", str(SCENARIOS / "register.xml"), "-s", "201", "-m", "1",
                                    "-p", str(phone_port), "-au", "201", "-ap", "s3cret-pass",
                                    "-key", "expires", "300")  # fmt: skip
        code, output = await finish(register)
        assert code == 0, output
        assert [b.extension for b in pbx.app.sip.registrar.contacts("201")] == ["201"]
        phone = await start_sipp("-sn", "uas", "-p", str(phone_port), "-m", "1", "-mp", str(free_port()),
                                 "-rtp_echo")  # fmt: skip
        await asyncio.sleep(0.3)
        sales, desk = pbx.phone("202"), pbx.phone("201")
        sales.off_hook()
        await pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("201")
        await pbx.wait_state("202", LegState.CONNECTED, timeout=5.0)  # SIPp's uas answers at once
        await desk.wait_not_ringing(3.0)
        assert await echoed(pbx, sales), "no audio back from the SIP phone"
        sales.on_hook()
        code, output = await finish(phone)
        assert code == 0, output  # it got our BYE
        record = await pbx.last_record()
        assert (record.caller_number, record.answered_extension, record.disposition) == (
            "202", "201", Disposition.ANSWERED,
        )
        assert pbx.app.sip.legs == {}
    finally:
        await pbx.app.stop()


async def test_a_sip_phone_calls_an_analogue_extension_after_digest_authentication(
    phone_config: str, data_dir
) -> None:
    pbx = await start_pbx(phone_config, data_dir)
    try:
        sales = pbx.phone("202")
        phone = await start_sipp(target(pbx), "-sf", str(SCENARIOS / "uac_auth_call.xml"), "-s", "202", "-m", "1",
                                 "-p", str(free_port()), "-mp", str(free_port()), "-rtp_echo",
                                 "-au", "201", "-ap", "s3cret-pass",
                                 # SIPp digests sip:host:port unless told the Request-URI (RFC 3261 22.4)
                                 "-auth_uri", f"202@{target(pbx)}")  # fmt: skip
        ringing = await sales.wait_ringing(5.0)
        assert (ringing.caller_number, ringing.caller_name) == ("201", "Reception")
        sales.off_hook()
        await pbx.wait_state("202", LegState.CONNECTED)
        assert await echoed(pbx, sales), "no audio through the SIP phone"
        code, output = await finish(phone)
        assert code == 0, output
        assert await pbx.hears(sales, "busy")
        sales.on_hook()
        record = await pbx.last_record()
        assert (record.caller_number, record.dialled, record.answered_extension) == ("201", "202", "202")
        assert record.direction == Direction.INTERNAL and record.disposition == Disposition.ANSWERED
    finally:
        await pbx.app.stop()


async def test_a_sip_phone_with_a_wrong_password_gets_no_call(phone_config: str, data_dir) -> None:
    pbx = await start_pbx(phone_config, data_dir)
    try:
        phone = await start_sipp(target(pbx), "-sf", str(SCENARIOS / "uac_auth_call.xml"), "-s", "202", "-m", "1",
                                 "-p", str(free_port()), "-mp", str(free_port()),
                                 "-au", "201", "-ap", "wrong-password")  # fmt: skip
        code, _output = await finish(phone)
        assert code != 0
        assert pbx.phone("202").ringing is None and pbx.phone("202").rings_received == 0
        assert pbx.app.sip.registrar.counters["failed"] >= 1
    finally:
        await pbx.app.stop()


async def test_trunk_rules_rewrite_the_number_and_present_the_company_number(data_dir) -> None:
    """strip 0 / prepend +351 (E.164) and a fixed caller ID; read off the INVITE the provider gets."""
    provider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    provider.bind(("127.0.0.1", 0))
    provider.setblocking(False)
    rules = 'outbound_strip = 0\noutbound_prepend = "+351"\ncaller_id = "+351210000000"\n'
    text = office_config(sip_with_provider(provider.getsockname()[1], (30600, 30800), rules))
    pbx = await start_pbx(with_voip_group(text, ["provider"]), data_dir)
    try:
        sales = pbx.phone("202")
        sales.off_hook()
        await pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("8212345678")
        loop = asyncio.get_running_loop()
        invite, _ = await asyncio.wait_for(loop.sock_recvfrom(provider, 65535), 3.0)
        request_line = invite.split(b"\r\n", 1)[0]
        assert request_line.startswith(b"INVITE sip:+351212345678@127.0.0.1:"), request_line
        from_line = next(line for line in invite.split(b"\r\n") if line.startswith(b"From:"))
        assert b"sip:+351210000000@" in from_line, from_line
        assert b'"Sales"' in from_line
        sales.on_hook()
        await pbx.wait_idle(8.0)
    finally:
        await pbx.app.stop()
        provider.close()
