"""Two whole appliances in one process as sibling offices (lisbon 2xx, porto 3xx): a desk
phone in one calls a desk phone in the other over the authenticated SIP link, speech is
proven both ways, and both sites' records carry the same correlation id."""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Pbx, office_config, start_pbx

from firmware.calls.lifecycle import LegState
from firmware.selftest import test_tone as make_tone

SECRET = "lisbon-porto-2026"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def site_config(name: str, sip_port: int, rtp: int, sibling: str, sibling_ports: tuple[int, str], password: str) -> str:
    """The default office as `name`; porto's extensions are renumbered 3xx."""
    sibling_port, sibling_range = sibling_ports
    text = office_config(
        f"""
[sip]
listen = "127.0.0.1:{sip_port}"
rtp_ports = [{rtp}, {rtp + 100}]

[[sibling_sites]]
name = "{sibling}"
extensions = ["{sibling_range}"]
host = "127.0.0.1"
port = {sibling_port}
password = "{password}"
keepalive_s = 0.5
"""
    )
    text = text.replace('name = "office"', f'name = "{name}"', 1)
    if name == "porto":
        text = re.sub(r'"20([0-9])"', r'"30\1"', text)  # extensions only, not "20:00"
    return text


@pytest.fixture
async def offices(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Pbx, Pbx]]:
    """lisbon and porto; an indirect parameter is the secret porto expects from lisbon."""
    porto_expects = getattr(request, "param", SECRET)
    lisbon_port, porto_port = free_port(), free_port()
    folders = [Path(tempfile.mkdtemp(prefix="mpbx")) for _ in range(2)]
    lisbon = await start_pbx(site_config("lisbon", lisbon_port, 31600, "porto", (porto_port, "3xx"), SECRET), folders[0])
    try:
        porto = await start_pbx(site_config("porto", porto_port, 31800, "lisbon", (lisbon_port, "2xx"), porto_expects), folders[1])
        try:
            yield lisbon, porto
        finally:
            await porto.app.stop()
    finally:
        await lisbon.app.stop()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


async def speech(listener_site: Pbx, speaker, listener, hz: float) -> bool:
    mark = listener.mark()
    speaker.say(make_tone(hz, 600))
    return await listener_site.hears(listener, (hz,), since=mark, timeout=3.0)


async def test_a_desk_phone_calls_the_sibling_office_with_speech_both_ways(offices: tuple[Pbx, Pbx]) -> None:
    lisbon, porto = offices
    await lisbon.sim.wait_until(lambda: lisbon.app.sip.peer_available("sibling:porto"), 5.0, "porto up")
    sales = lisbon.phone("202")
    sales.off_hook()
    await lisbon.wait_state("202", LegState.DIALLING)
    await sales.dial("305")
    ringing = await porto.phone("305").wait_ringing(5.0)
    assert ringing.caller_number == "202"
    porto.phone("305").off_hook()
    await porto.wait_state("305", LegState.CONNECTED)
    await lisbon.wait_state("202", LegState.CONNECTED)
    assert await speech(porto, sales, porto.phone("305"), 1004.0), "lisbon -> porto"
    assert await speech(lisbon, porto.phone("305"), sales, 1400.0), "porto -> lisbon"
    sales.on_hook()
    await porto.wait_state("305", LegState.CLEARING)
    porto.phone("305").on_hook()
    here, there = await lisbon.last_record(), await porto.last_record()
    assert here.destination_kind == "sibling" and here.line == "sibling:porto"
    assert there.line == "sibling:lisbon" and there.answered_extension == "305"
    assert here.correlation_id and here.correlation_id == there.correlation_id
    assert porto.app.sip.status()["sibling_auth"]["accepted"] == 1


@pytest.mark.parametrize("offices", ["not-what-lisbon-has"], indirect=True)
async def test_an_office_with_the_wrong_password_is_refused(offices: tuple[Pbx, Pbx]) -> None:
    lisbon, porto = offices
    sales = lisbon.phone("202")
    sales.off_hook()
    await lisbon.wait_state("202", LegState.DIALLING)
    await sales.dial("305")
    assert await lisbon.hears(sales, "congestion", timeout=5.0), "refused: the caller hears congestion"
    sales.on_hook()
    await lisbon.wait_idle()
    assert porto.app.sip.status()["siblings"]["lisbon"]["auth_refused"] == 1
    assert not porto.app.calls.sessions
    assert await porto.records() == [], "no call reached porto"
