"""Session timers (RFC 4028) on a whole appliance with SIPp as the provider: a provider
that refreshes keeps its call up past the interval, one that holds the call and vanishes
gets our BYE, too short an interval gets 422, a provider without the extension is
refreshed by our re-INVITE, and a provider we call that wants us to refresh gets UPDATEs.

`session_timer.TIME_SCALE` shrinks time so that the 90 s interval written in every header
lasts 2 s here (BYE due 1.33 s after a refresh, our refresh at 1 s)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from conftest import Pbx, office_config, start_pbx
from sipp_tools import (
    SCENARIOS,
    finish,
    free_port,
    needs_sipp,
    sip_with_provider,
    start_sipp,
    target,
    uas_port_fixture,  # noqa: F401  (pytest finds the uas_port fixture here)
    wait_until,
    with_voip_group,
)

from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState
from firmware.selftest import test_tone as make_tone
from firmware.sip import session_timer
from firmware.sip.calls import SESSION_TIMERS

pytestmark = needs_sipp
SCALE = 1 / 45  # 90 s -> 2 s
EXPIRED = ChannelEvent(EventKind.FAR_END_CLEARED, "session_expired")


def record_events(pbx: Pbx) -> list[tuple[Channel, ChannelEvent, float]]:
    """Every channel event call control receives from now on, with the loop's time."""
    calls = pbx.app.calls
    assert calls is not None
    seen: list[tuple[Channel, ChannelEvent, float]] = []
    original = calls._on_event
    loop = asyncio.get_running_loop()

    def spy(channel: Channel, event: ChannelEvent) -> None:
        seen.append((channel, event, loop.time()))
        original(channel, event)

    calls._on_event = spy  # type: ignore[method-assign]
    return seen


def events_of(seen: list[tuple[Channel, ChannelEvent, float]], channel: Channel) -> list[ChannelEvent]:
    return [event for leg, event, _at in seen if leg is channel]


def received(trace: Path) -> list[str]:
    """The messages SIPp received (from us), in order, from its -trace_msg file, CR removed."""
    messages = []
    text = trace.read_text(errors="replace").replace("\r", "")
    for block in re.split(r"^-{5,}.*$", text, flags=re.MULTILINE):
        header, _, message = block.strip().partition("\n\n")
        if "message received" in header:
            messages.append(message)
    return messages


def body(message: str) -> str:
    return message.partition("\n\n")[2].strip()


@pytest.fixture
async def sip_pbx(uas_port: int, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Pbx:
    monkeypatch.setattr(session_timer, "TIME_SCALE", SCALE)
    text = office_config(sip_with_provider(uas_port, (31400, 31600), 'incoming = { "201" = "201" }\n'))
    text = with_voip_group(text, ["provider"])  # line group "voip" (access code 8), for staff too
    pbx = await start_pbx(text, data_dir)
    try:
        yield pbx
    finally:
        await pbx.app.stop()


async def answered_call(pbx: Pbx, scenario: str, *extra: str) -> tuple[asyncio.subprocess.Process, Channel]:
    """SIPp (as the provider) calls 201 with `scenario`; 201 answers. The call's SIP leg."""
    reception = pbx.phone("201")
    uac = await start_sipp(target(pbx), "-sf", str(SCENARIOS / scenario), "-s", "201", "-m", "1",
                           "-p", str(free_port()), "-mp", str(free_port()), *extra)  # fmt: skip
    await reception.wait_ringing(5.0)
    reception.off_hook()
    await pbx.wait_state("201", LegState.CONNECTED)
    legs = list(pbx.app.sip.legs.values())
    assert len(legs) == 1
    return uac, legs[0]


async def test_a_provider_that_refreshes_keeps_its_call_past_the_interval(sip_pbx: Pbx) -> None:
    events = record_events(sip_pbx)
    before = dict(SESSION_TIMERS)
    uac, leg = await answered_call(sip_pbx, "timer_uac_refreshes.xml", "-rtp_echo")
    reception = sip_pbx.phone("201")
    # Two refreshes in (UPDATE, same-SDP re-INVITE): speech still passes both ways.
    await wait_until(lambda: SESSION_TIMERS["refreshes_received"] >= before["refreshes_received"] + 2, 5.0, "refreshes")
    mark = reception.mark()
    reception.say(make_tone(1004, 600))
    assert await sip_pbx.hears(reception, (1004.0,), since=mark, timeout=2.0), "no audio after the refreshes"
    # SIPp fails on any request it did not expect: our BYE before its own would show here.
    code, output = await finish(uac)
    assert code == 0, output
    assert SESSION_TIMERS["refreshes_received"] == before["refreshes_received"] + 5
    assert SESSION_TIMERS["expired"] == before["expired"]
    assert events_of(events, leg) == [ChannelEvent(EventKind.FAR_END_CLEARED, "bye")]  # no HOLD/RETRIEVE
    reception.on_hook()
    await sip_pbx.wait_idle()


async def test_a_held_call_whose_provider_vanished_is_ended_by_our_bye(sip_pbx: Pbx) -> None:
    """The far end holds the call (no RTP either way from then on) and goes silent."""
    events = record_events(sip_pbx)
    before = SESSION_TIMERS["expired"]
    uac, leg = await answered_call(sip_pbx, "timer_uac_silent.xml")
    await wait_until(lambda: EXPIRED in events_of(events, leg), 10.0, "the session to expire")
    assert events_of(events, leg) == [ChannelEvent(EventKind.HOLD), EXPIRED]
    held_at, expired_at = (at for channel, _event, at in events if channel is leg)
    assert expired_at - held_at >= session_timer.expiry_delay(90) * 0.9  # the hold re-INVITE was a refresh
    code, output = await finish(uac)  # SIPp waited for our BYE and answered it
    assert code == 0, output
    reception = sip_pbx.phone("201")
    assert await sip_pbx.hears(reception, "busy"), "the call ended: the extension hears busy"
    reception.on_hook()
    await sip_pbx.wait_state("201", LegState.IDLE)
    await sip_pbx.wait_idle()
    assert sip_pbx.app.status()["sip"]["session_timers"]["expired"] == before + 1
    assert sip_pbx.app.sip.legs == {} and sip_pbx.app.mixer.slots_in_use == 0


async def test_too_short_an_interval_gets_422_with_min_se(sip_pbx: Pbx) -> None:
    before = SESSION_TIMERS["refused_422"]
    uac, _leg = await answered_call(sip_pbx, "timer_uac_too_small.xml")  # the 422, then 90 s is answered
    code, output = await finish(uac)
    assert code == 0, output
    assert SESSION_TIMERS["refused_422"] == before + 1
    sip_pbx.phone("201").on_hook()
    await sip_pbx.wait_idle()


async def test_a_provider_without_timers_is_refreshed_by_our_reinvite(sip_pbx: Pbx, tmp_path: Path) -> None:
    events = record_events(sip_pbx)
    trace = tmp_path / "messages.log"
    uac, leg = await answered_call(sip_pbx, "timer_uac_without_timer.xml", "-trace_msg", "-message_file", str(trace))
    code, output = await finish(uac)
    assert code == 0, output
    ours = received(trace)
    ok = next(m for m in ours if m.startswith("SIP/2.0 200") and re.search(r"^CSeq: *1 INVITE", m, re.M))
    refresh = next(m for m in ours if m.startswith("INVITE "))
    assert body(refresh) == body(ok), "the refresh must offer our SDP unchanged (same o= version)"
    assert events_of(events, leg) == [ChannelEvent(EventKind.FAR_END_CLEARED, "bye")]
    sip_pbx.phone("201").on_hook()
    await sip_pbx.wait_idle()


async def test_a_provider_we_call_that_wants_refreshes_gets_updates(sip_pbx: Pbx, uas_port: int) -> None:
    before = dict(SESSION_TIMERS)
    uas = await start_sipp("-sf", str(SCENARIOS / "timer_uas_wants_refresh.xml"), "-p", str(uas_port),
                           "-m", "1", "-mp", str(free_port()))  # fmt: skip
    try:
        await asyncio.sleep(0.3)
        sales = sip_pbx.phone("202")
        sales.off_hook()
        await sip_pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("8212345678")
        await sip_pbx.wait_state("202", LegState.CONNECTED, timeout=5.0)
        await wait_until(lambda: SESSION_TIMERS["refreshes_sent"] >= before["refreshes_sent"] + 2, 6.0, "two refreshes")
        await asyncio.sleep(0.2)  # the second one's 200
        assert SESSION_TIMERS["expired"] == before["expired"]
        assert sip_pbx.channel("202").state == LegState.CONNECTED
        sales.on_hook()
        code, output = await finish(uas)
        assert code == 0, output
        await sip_pbx.wait_idle()
        assert sip_pbx.app.sip.legs == {}
    finally:
        if uas.returncode is None:
            uas.kill()
