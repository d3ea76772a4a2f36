"""In-dialog requests against SIPp, with SIP legs driven by a small stand-in for call
control (it answers every call at once and records events), so what is tested is the SIP
side alone: INFO digits, 491/500/481, REFER with its NOTIFYs, and outbound digest auth
with INFO digits sent to the peer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sipp_tools import (
    SCENARIOS,
    finish,
    free_port,
    host_port,
    needs_sipp,
    start_sipp,
    uas_port_fixture,  # noqa: F401  (pytest finds the uas_port fixture here)
    wait_until,
)

from firmware.app import build_sounds
from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState
from firmware.config.load import default_config_text, parse_config
from firmware.config.schema import SipConfig, SipPeerConfig
from firmware.media.mixer import Mixer
from firmware.media.rtp_endpoint import RtpEndpoint, RtpPortRange
from firmware.media.tones import get_tone_plan
from firmware.sip.calls import SipCallLeg
from firmware.sip.service import SipService

pytestmark = needs_sipp


class Answerer:
    """Stands in for call control: answers each inbound SIP call, records every event,
    releases a leg whose far end cleared, and answers TRANSFER with `transfer_ok`."""

    outbound_leg = None
    extra_devices = None
    trunk_available = None

    def __init__(self) -> None:
        self.config = parse_config(default_config_text(), "<default>")  # what the service reads
        self.events: list[tuple[Channel, ChannelEvent]] = []
        self.transfer_ok: Callable[[str], bool] = lambda target: True
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def start_inbound(self, leg: Channel, dialled: str, caller, destination: str) -> None:
        leg.handler = self.on_event
        self._spawn(self._answer(leg))

    async def _answer(self, leg: Channel) -> None:
        leg.set_state(LegState.ALERTING)
        await leg.indicate_ringing()
        await leg.seize()
        leg.set_state(LegState.CONNECTED)

    def on_event(self, leg: Channel, event: ChannelEvent) -> None:
        self.events.append((leg, event))
        if event.kind == EventKind.FAR_END_CLEARED:
            self._spawn(self._end(leg))
        elif event.kind == EventKind.TRANSFER:
            leg.transfer_result(self.transfer_ok(event.value))

    async def _end(self, leg: Channel) -> None:
        await leg.release("normal")
        leg.set_state(LegState.IDLE)

    def of(self, kind: EventKind) -> list[str]:
        return [event.value for _leg, event in self.events if event.kind == kind]


class Bare:
    def __init__(self, service: SipService, calls: Answerer, mixer: Mixer) -> None:
        self.service = service
        self.calls = calls
        self.mixer = mixer

    @property
    def target(self) -> str:
        return host_port(self.service.stack.local_address)


@pytest.fixture
async def bare(uas_port: int) -> AsyncIterator[Bare]:
    peer = SipPeerConfig(
        name="provider", host="127.0.0.1", port=uas_port, incoming={"201": "201"},
        username="trunkuser", password="trunkpass", domain="voip.example.com", dtmf_mode="info",
    )  # fmt: skip
    config = SipConfig(listen="127.0.0.1:0", rtp_ports=(31400, 31600), peers=(peer,))
    mixer = Mixer(build_sounds(get_tone_plan("PT"), {}))
    rtp = RtpEndpoint(RtpPortRange(*config.rtp_ports))
    mixer.add_endpoint(rtp)
    mixer.start()
    service = SipService("test", config, mixer)
    calls = Answerer()
    service.attach(calls, rtp)  # type: ignore[arg-type]
    await service.start("127.0.0.1", 0)
    try:
        yield Bare(service, calls, mixer)
    finally:
        for leg in list(service.legs.values()):
            await leg.release("shutdown")
        await service.stop()
        await rtp.close()
        await mixer.stop()


async def call_in(bare: Bare, scenario: str, *extra: str) -> asyncio.subprocess.Process:
    return await start_sipp(bare.target, "-sf", str(SCENARIOS / scenario), "-s", "201", "-m", "1",
                            "-p", str(free_port()), "-mp", str(free_port()), *extra)  # fmt: skip


async def test_info_digits_and_what_a_dialog_refuses(bare: Bare) -> None:
    uac = await call_in(bare, "dialog_errors.xml")
    code, output = await finish(uac)
    assert code == 0, output
    # Both DTMF bodies became digits, in order; the 400'd signal and the 500'd INFO did not.
    assert bare.calls.of(EventKind.DIGIT) == ["5", "#"]
    assert bare.service.unknown_dialogs == 2  # the INFO and the REFER for another Call-ID
    assert bare.calls.of(EventKind.FAR_END_CLEARED) == ["bye"]
    await wait_until(lambda: not bare.service.legs, 3.0, "the leg to go")


async def test_refer_blind_and_attended(bare: Bare) -> None:
    bare.calls.transfer_ok = lambda target: not target.startswith("replaces:")
    uac = await call_in(bare, "dialog_refer.xml")
    code, output = await finish(uac)
    assert code == 0, output
    assert bare.calls.of(EventKind.TRANSFER) == ["202", "replaces:consult-1@127.0.0.1"]


async def dial_out(bare: Bare, number: str) -> SipCallLeg:
    leg = bare.service.new_outbound_leg("provider")
    assert leg is not None
    leg.handler = bare.calls.on_event
    leg.set_state(LegState.DIALLING)
    await leg.dial(number)
    return leg


async def test_digest_challenge_answered_and_info_digits_sent(bare: Bare, uas_port: int, tmp_path: Path) -> None:
    trace = tmp_path / "messages.log"
    uas = await start_sipp("-sf", str(SCENARIOS / "uas_auth.xml"), "-p", str(uas_port), "-m", "1",
                           "-mp", str(free_port()), "-trace_msg", "-message_file", str(trace))  # fmt: skip
    await asyncio.sleep(0.3)
    leg = await dial_out(bare, "212345678")
    await wait_until(lambda: EventKind.ANSWERED in [e.kind for _l, e in bare.calls.events], 5.0, "the answer")
    leg.set_state(LegState.CONNECTED)
    await leg.send_digits("1#")  # dtmf_mode = "info": one INFO each, answered in turn
    await leg.release("normal")
    leg.set_state(LegState.IDLE)
    code, output = await finish(uas)
    assert code == 0, output
    text = trace.read_text(errors="replace")
    invites = re.findall(r"^INVITE sip:\S+ SIP/2\.0.*?^Call-ID: *(\S+).*?^CSeq: *(\d+) INVITE", text,
                         flags=re.MULTILINE | re.DOTALL)  # fmt: skip
    assert [cseq for _call_id, cseq in invites] == ["1", "2"]
    assert invites[0][0] == invites[1][0], "the authorised INVITE keeps the Call-ID"


async def test_a_refused_password_is_tried_once(bare: Bare, uas_port: int, tmp_path: Path) -> None:
    trace = tmp_path / "messages.log"
    uas = await start_sipp("-sf", str(SCENARIOS / "uas_auth_wrong.xml"), "-p", str(uas_port), "-m", "1",
                           "-trace_msg", "-message_file", str(trace))  # fmt: skip
    await asyncio.sleep(0.3)
    leg = await dial_out(bare, "212345678")
    await wait_until(lambda: bare.calls.of(EventKind.FAR_END_CLEARED) == ["rejected"], 5.0, "the failure")
    code, output = await finish(uas)
    assert code == 0, output
    assert trace.read_text(errors="replace").count("\nINVITE sip:") == 2
    leg.set_state(LegState.IDLE)
