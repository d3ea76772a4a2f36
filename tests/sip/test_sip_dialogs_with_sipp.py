"""Mid-call SIP with SIPp as the far end: hold and resume (re-INVITE, UPDATE), session
refresh, offerless re-INVITE, overlapping and out-of-order requests, REFER, INFO digits."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Pbx, office_config, start_pbx

from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState
from firmware.selftest import test_tone as make_tone

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
        SIPP, "-i", "127.0.0.1", *args, "-nostdin", "-timeout", "30s", "-timeout_error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process, timeout: float = 35.0) -> tuple[int, str]:
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")[-3000:]


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


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
def provider_port() -> int:
    return free_port()


@pytest.fixture
async def sip_pbx(provider_port: int, data_dir: Path) -> Pbx:
    config = office_config(
        f"""
[sip]
listen = "127.0.0.1:0"
rtp_ports = [31000, 31200]

[[sip.peers]]
name = "provider"
host = "127.0.0.1"
port = {provider_port}
incoming = {{ "201" = "201" }}
"""
    )
    pbx = await start_pbx(config, data_dir)
    try:
        yield pbx
    finally:
        await pbx.app.stop()


def target(pbx: Pbx) -> str:
    host, port = pbx.app.sip.stack.local_address
    return f"{host}:{port}"


async def answered_call(pbx: Pbx, scenario: str, *extra: str) -> tuple[asyncio.subprocess.Process, Channel]:
    """SIPp (as the provider) calls 201 with `scenario`; 201 answers. The call's SIP leg."""
    reception = pbx.phone("201")
    uac = await start_sipp(target(pbx), "-sf", str(SCENARIOS / scenario), "-s", "201", "-m", "1",
                           "-p", str(free_port()), "-mp", str(free_port()), "-rtp_echo", *extra)  # fmt: skip
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
    mark = reception.mark()
    reception.say(make_tone(1004, 600))
    assert await sip_pbx.hears(reception, (1004.0,), since=mark, timeout=2.0), "no audio after resume"
    code, output = await finish(uac)
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
