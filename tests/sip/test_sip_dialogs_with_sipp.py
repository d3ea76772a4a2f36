"""Mid-call SIP with SIPp as the far end: hold and resume (re-INVITE, UPDATE), session
refresh, offerless re-INVITE, overlapping and out-of-order requests, REFER, INFO digits."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from conftest import Pbx, office_config, start_pbx
from sipp_tools import (
    SCENARIOS,
    echoed,
    finish,
    free_port,
    needs_sipp,
    sip_with_provider,
    start_sipp,
    target,
    uas_port_fixture,  # noqa: F401  (pytest finds the uas_port fixture here)
    wait_until,
)

from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState

pytestmark = needs_sipp

SIPP_TIMEOUT_S = 30  # SIPp's own bound here (the hold scenario pauses ~8 s); finish() waits 5 s more


def record_events(pbx: Pbx) -> list[tuple[Channel, ChannelEvent]]:
    """Every channel event call control receives from now on (it still gets them all)."""
    calls = pbx.app.calls
    assert calls is not None
    seen: list[tuple[Channel, ChannelEvent]] = []
    original = calls._on_event

    def spy(channel: Channel, event: ChannelEvent) -> None:
        seen.append((channel, event))
        original(channel, event)

    calls._on_event = spy  # type: ignore[method-assign]
    return seen


def kinds(events: list[tuple[Channel, ChannelEvent]], channel: Channel) -> list[EventKind]:
    return [event.kind for leg, event in events if leg is channel]


def traced(trace: Path, start: str) -> dict[str, str]:
    """From SIPp's message trace: CSeq ("2 INVITE") -> the first message whose start line
    begins with `start` ("SIP/2.0 200", "NOTIFY"), CR removed."""
    found: dict[str, str] = {}
    text = trace.read_text(errors="replace").replace("\r", "")
    for block in re.split(r"^-{5,}.*$", text, flags=re.MULTILINE):
        # Each block: "UDP message sent/received ...", a blank line, then the message.
        message = block.strip().partition("\n\n")[2]
        if not message.startswith(start):
            continue
        lines = message.splitlines()
        cseq = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("cseq:")), "")
        found.setdefault(cseq, message)
    return found


def body(message: str) -> str:
    return message.partition("\n\n")[2].strip()


def origin_version(message: str) -> int:
    match = re.search(r"^o=\S+ \S+ (\d+) ", message, re.MULTILINE)
    assert match is not None, message
    return int(match.group(1))


@pytest.fixture
async def sip_pbx(uas_port: int, data_dir: Path) -> Pbx:
    config = office_config(sip_with_provider(uas_port, (31000, 31200), 'incoming = { "201" = "201" }\n'))
    pbx = await start_pbx(config, data_dir)
    try:
        yield pbx
    finally:
        await pbx.app.stop()


async def answered_call(pbx: Pbx, scenario: str, *extra: str) -> tuple[asyncio.subprocess.Process, Channel]:
    """SIPp (as the provider) calls 201 with `scenario`; 201 answers. The call's SIP leg."""
    reception = pbx.phone("201")
    uac = await start_sipp(target(pbx), "-sf", str(SCENARIOS / scenario), "-s", "201", "-m", "1",
                           "-p", str(free_port()), "-mp", str(free_port()), "-rtp_echo", *extra,
                           timeout_s=SIPP_TIMEOUT_S)  # fmt: skip
    await reception.wait_ringing(5.0)
    reception.off_hook()
    await pbx.wait_state("201", LegState.CONNECTED)
    legs = list(pbx.app.sip.legs.values())
    assert len(legs) == 1
    return uac, legs[0]


async def test_hold_and_resume_by_reinvite_and_update(sip_pbx: Pbx, tmp_path: Path) -> None:
    events = record_events(sip_pbx)
    trace = tmp_path / "messages.log"
    uac, leg = await answered_call(sip_pbx, "dialog_hold.xml", "-trace_msg", "-message_file", str(trace))
    reception = sip_pbx.phone("201")
    # re-INVITE a=sendonly: HOLD, and our RTP stops (SIPp checked our answer said recvonly).
    await wait_until(lambda: EventKind.HOLD in kinds(events, leg), 5.0, "HOLD")
    assert leg.media is not None and leg.media.held
    sent = leg.media.counters.packets_out
    await asyncio.sleep(0.6)
    assert leg.media.counters.packets_out == sent, "RTP went on while the far end held the call"
    # re-INVITE sendrecv: RETRIEVE; then UPDATE with c=0.0.0.0 holds again, UPDATE resumes.
    await wait_until(lambda: kinds(events, leg).count(EventKind.RETRIEVE) == 1, 5.0, "RETRIEVE")
    await wait_until(lambda: kinds(events, leg).count(EventKind.HOLD) == 2, 8.0, "HOLD by c=0.0.0.0")
    await wait_until(lambda: kinds(events, leg).count(EventKind.RETRIEVE) == 2, 5.0, "second RETRIEVE")
    # Speech passes again after the resume: SIPp echoes what 201 says.
    assert await echoed(sip_pbx, reception), "no audio after resume"
    code, output = await finish(uac, SIPP_TIMEOUT_S + 5)
    assert code == 0, output
    reception.on_hook()
    await sip_pbx.wait_idle()
    assert sip_pbx.app.sip.legs == {}
    # No extra events: one HOLD and one RETRIEVE per change, none for the refresh.
    assert [k for k in kinds(events, leg) if k in (EventKind.HOLD, EventKind.RETRIEVE)] == [
        EventKind.HOLD, EventKind.RETRIEVE, EventKind.HOLD, EventKind.RETRIEVE,
    ]  # fmt: skip
    oks = traced(trace, "SIP/2.0 200")
    first, held, resumed, refresh = (oks[f"{n} INVITE"] for n in (1, 2, 3, 4))
    assert "a=recvonly" in held and "a=sendrecv" in resumed
    # RFC 3264 8: a changed answer has the next o= version, an unchanged one the same.
    assert origin_version(held) == origin_version(first) + 1
    assert origin_version(resumed) == origin_version(held) + 1
    assert origin_version(refresh) == origin_version(resumed)
    assert body(refresh) == body(resumed)
    offer = oks["5 INVITE"]
    assert "m=audio" in offer and origin_version(offer) == origin_version(refresh) + 1
