"""How SIP legs end and what may end them, with a stand-in stack whose requests wait for the
responses the test hands them: a 2xx crossing our CANCEL (ACK, then BYE in the dialog that
2xx made), CANCEL held until a provisional response (RFC 3261 9.1), a 2xx with a broken
Contact, CANCEL matched by transaction (9.2), status and cause maps, and a REFER whose
Replaces must name a dialog by its tags too (RFC 3891). SIPp runs the same endings in
test_sip_cancel_with_sipp.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from firmware.app import build_sounds
from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState
from firmware.config.load import default_config_text, parse_config
from firmware.config.schema import SipConfig, SipPeerConfig
from firmware.media.mixer import Mixer
from firmware.media.tones import get_tone_plan
from firmware.sip import refer
from firmware.sip.calls import (
    CAUSE_FOR_STATUS,
    DIALOG_EVENTS,
    FINAL_RESPONSE_FOR_CAUSE,
    MALFORMED,
    SipCallLeg,
)
from firmware.sip.message import Request, Response, parse_message
from firmware.sip.service import SipService

FAR = ("192.0.2.10", 5060)
PEER = SipPeerConfig(name="provider", host="192.0.2.10", incoming={"201": "201"})


# --------------------------------------------------------------------------- stand-ins


class Pending:
    """One request sent through the stand-in stack, waiting for the test's responses."""

    def __init__(self, request: Request, on_response: Any) -> None:
        self.request = request
        self.on_response = on_response
        self.final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

    def respond(self, response: Response) -> None:
        if self.on_response is not None:
            self.on_response(response)
        if response.status >= 200 and not self.final.done():
            self.final.set_result(response)


class WaitingStack:
    """Requests wait for `Pending.respond` (a CANCEL, BYE or NOTIFY gets 200 at once);
    responses and raw sends (ACKs) are recorded."""

    local_address = ("192.0.2.1", 5060)

    def __init__(self) -> None:
        self.sent: list[Pending] = []
        self.raw: list[bytes] = []
        self.responses: list[Response] = []

    async def request(self, request: Request, destination: Any, on_response: Any = None) -> Response:
        pending = Pending(request, on_response)
        self.sent.append(pending)
        if request.method != "INVITE":
            pending.respond(Response(200, "OK"))
        return await pending.final

    def respond(self, transaction: object, response: Response) -> None:
        self.responses.append(response)

    def send_raw(self, data: bytes, destination: Any) -> None:
        self.raw.append(data)

    def methods(self) -> list[str]:
        return [pending.request.method for pending in self.sent]

    def of(self, method: str) -> list[Request]:
        return [pending.request for pending in self.sent if pending.request.method == method]

    def acks(self) -> list[Request]:
        messages = [parse_message(data) for data in self.raw]
        return [m for m in messages if isinstance(m, Request) and m.method == "ACK"]


class Media:
    local_port = 40000
    slot = 0

    def set_remote(self, address: Any) -> None:
        self.remote = address

    def set_codec(self, *codec: Any) -> None:
        self.codec = codec

    def set_active(self, active: bool) -> None:
        self.active = active

    def hold(self, held: bool) -> None:
        self.held = held


class Rtp:
    async def open_leg(self, *args: Any, **kwargs: Any) -> Media:
        return Media()

    def detach(self, media: Media) -> None:
        pass

    async def close_leg(self, media: Media) -> None:
        pass


def sdp(port: int = 6000) -> bytes:
    return (f"v=0\r\no=far 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n").encode()  # fmt: skip


def response_to(invite: Request, status: int, *extra: tuple[str, str], body: bytes = b"") -> Response:
    """The far end's response to our INVITE: its tag, and `extra` header fields."""
    response = Response(status, "X")
    for name in ("Via", "From", "Call-ID", "CSeq"):
        response.headers.add(name, invite.headers.get(name) or "")
    response.headers.add("To", f"{invite.headers.get('To')};tag=callee")
    for name, value in extra:
        response.headers.add(name, value)
    if body:
        response.headers.add("Content-Type", "application/sdp")
        response.body = body
    return response


class Call:
    """One outbound leg on the waiting stack, with the events it emits."""

    def __init__(self) -> None:
        self.stack = WaitingStack()
        self.mixer = Mixer(build_sounds(get_tone_plan("PT"), {}))
        self.events: list[ChannelEvent] = []
        self.leg = SipCallLeg("sip:provider/1", self.mixer, stack=self.stack, rtp=Rtp(),  # type: ignore[arg-type]
                              peer=PEER, local_host="192.0.2.1", on_dialog=lambda leg: None,
                              on_closed=lambda leg: None)  # fmt: skip
        self.leg.handler = lambda _leg, event: self.events.append(event)

    async def dial(self) -> Pending:
        self.leg.set_state(LegState.DIALLING)
        await self.leg.dial("212345678")
        await settle()
        return self.stack.sent[0]

    async def release(self) -> None:
        await self.leg.release("cancelled")
        self.leg.set_state(LegState.IDLE)
        await settle()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- 1. CANCEL and a late 2xx


async def test_a_2xx_after_our_cancel_is_acked_then_ended_with_bye_in_its_dialog() -> None:
    call = Call()
    invite = await call.dial()
    before = DIALOG_EVENTS["late_answer_ended"]
    invite.respond(response_to(invite.request, 180))
    await call.release()
    assert call.stack.methods() == ["INVITE", "CANCEL"]
    ok = response_to(invite.request, 200, ("Contact", "<sip:callee@192.0.2.20:5070>"),
                     ("Record-Route", "<sip:p1.example.com;lr>"), ("Record-Route", "<sip:p2.example.com;lr>"),
                     body=sdp())  # fmt: skip
    invite.respond(ok)
    await settle()
    (ack,) = call.stack.acks()
    (bye,) = call.stack.of("BYE")
    for request in (ack, bye):  # the dialog the 2xx made: its tag, its Contact, its route set
        assert request.headers.to_address.tag == "callee"
        assert str(request.uri) == "sip:callee@192.0.2.20:5070"
        assert request.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert call.events == [ChannelEvent(EventKind.RINGING)]  # call control hears no answer
    assert DIALOG_EVENTS["late_answer_ended"] == before + 1
    invite.respond(ok)  # the 2xx again (our ACK lost): ACKed again, no second BYE
    await settle()
    assert len(call.stack.acks()) == 2 and len(call.stack.of("BYE")) == 1


async def test_cancel_waits_for_a_provisional_response() -> None:
    call = Call()
    invite = await call.dial()
    await call.release()
    assert call.stack.methods() == ["INVITE"]  # RFC 3261 9.1: not before a 1xx
    invite.respond(response_to(invite.request, 100))
    await settle()
    assert call.stack.methods() == ["INVITE", "CANCEL"]
    cancel = call.stack.of("CANCEL")[0]
    assert cancel.headers.get_all("Via")[0] == invite.request.headers.get_all("Via")[0]
    invite.respond(response_to(invite.request, 487))
    await settle()
    assert call.events == []


async def test_no_cancel_when_the_invite_ends_before_any_provisional() -> None:
    call = Call()
    invite = await call.dial()
    before = DIALOG_EVENTS["cancel_not_needed"]
    await call.release()
    invite.respond(response_to(invite.request, 408))
    await settle()
    assert call.stack.methods() == ["INVITE"]
    assert DIALOG_EVENTS["cancel_not_needed"] == before + 1
    assert not any(task for task in asyncio.all_tasks() if task.get_name().startswith("sip-end-"))


async def test_a_2xx_with_no_provisional_after_release_gets_ack_and_bye_but_no_cancel() -> None:
    call = Call()
    invite = await call.dial()
    await call.release()
    invite.respond(response_to(invite.request, 200, ("Contact", "<sip:callee@192.0.2.20>"), body=sdp()))
    await settle()
    assert call.stack.methods() == ["INVITE", "BYE"]
    assert len(call.stack.acks()) == 1 and call.events == []


# --------------------------------------------------------------------------- 2. a broken Contact


async def test_a_2xx_with_an_unreadable_contact_still_answers_the_call() -> None:
    call = Call()
    invite = await call.dial()
    before = MALFORMED.get("contact", 0)
    invite.respond(response_to(invite.request, 200, ("Contact", "<sip:callee@192.0.2.20"), body=sdp()))
    await settle()
    assert call.events == [ChannelEvent(EventKind.ANSWERED)]  # not ringback forever
    assert MALFORMED["contact"] == before + 1
    (ack,) = call.stack.acks()
    assert str(ack.uri) == str(invite.request.uri)  # the target stays the INVITE's
    call.leg.set_state(LegState.CONNECTED)
    await call.leg.release("normal")
    call.leg.set_state(LegState.IDLE)
    await settle()
    assert str(call.stack.of("BYE")[0].uri) == str(invite.request.uri)


# --------------------------------------------------------------------------- 3. which CANCEL ends what


class Transaction:
    """The stack's server transaction as the service sees it: a CANCEL's names the INVITE
    transaction its branch matched (`cancels`), or None."""

    def __init__(self, cancels: object = None) -> None:
        self.cancels = cancels


class QuietCalls:
    outbound_leg = None
    extra_devices = None
    trunk_available = None

    def __init__(self) -> None:
        self.config = parse_config(default_config_text(), "<default>")
        self.events: list[ChannelEvent] = []

    def start_inbound(self, leg: Channel, *args: Any) -> None:
        leg.handler = lambda _leg, event: self.events.append(event)


def inbound(method: str, *, branch: str = "z9hG4bKinvite1", from_tag: str = "far1", cseq: int = 1,
            call_id: str = "in-1@192.0.2.10", body: bytes = b"") -> Request:  # fmt: skip
    lines = [f"{method} sip:201@192.0.2.1 SIP/2.0", f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}",
             f"From: <sip:212345678@192.0.2.10>;tag={from_tag}", "To: <sip:201@192.0.2.1>",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", "Contact: <sip:212345678@192.0.2.10>",
             "Max-Forwards: 70"]  # fmt: skip
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Request)
    return message


@pytest.fixture
def service() -> SipService:
    service = SipService("test", SipConfig(peers=(PEER,)), Mixer(build_sounds(get_tone_plan("PT"), {})))
    service.stack = WaitingStack()  # type: ignore[assignment]
    service.attach(QuietCalls(), Rtp())  # type: ignore[arg-type]
    return service


def test_a_cancel_must_match_the_invite_transaction(service: SipService) -> None:
    stack: WaitingStack = service.stack  # type: ignore[assignment]
    invite_transaction = Transaction()
    service._on_request(invite_transaction, inbound("INVITE", body=sdp()), FAR)  # type: ignore[arg-type]
    leg = service.legs["in-1@192.0.2.10"]
    other_invite = Transaction()
    # Same Call-ID, another branch: no INVITE transaction of ours (or another one's).
    service._on_request(Transaction(), inbound("CANCEL", branch="z9hG4bKstranger"), FAR)  # type: ignore[arg-type]
    service._on_request(Transaction(other_invite), inbound("CANCEL"), FAR)  # type: ignore[arg-type]
    assert [r.status for r in stack.responses] == [481, 481]
    assert not leg.ended
    service._on_request(Transaction(invite_transaction), inbound("CANCEL"), FAR)  # type: ignore[arg-type]
    assert [r.status for r in stack.responses] == [481, 481, 200, 487]
    assert leg.ended


def test_a_cancel_from_an_rfc2543_far_end_matches_by_its_invite(service: SipService) -> None:
    stack: WaitingStack = service.stack  # type: ignore[assignment]
    service._on_request(Transaction(), inbound("INVITE", branch="old1", body=sdp()), FAR)  # type: ignore[arg-type]
    service._on_request(Transaction(), inbound("CANCEL", branch="old1", from_tag="other"), FAR)  # type: ignore[arg-type]
    service._on_request(Transaction(), inbound("CANCEL", branch="old1", cseq=2), FAR)  # type: ignore[arg-type]
    service._on_request(Transaction(), inbound("CANCEL", branch="old1"), FAR)  # type: ignore[arg-type]
    assert [r.status for r in stack.responses] == [481, 481, 200, 487]


async def test_our_outbound_leg_ignores_a_cancel(service: SipService) -> None:
    stack: WaitingStack = service.stack  # type: ignore[assignment]
    leg = service.new_outbound_leg("provider")
    assert leg is not None
    leg.set_state(LegState.DIALLING)
    await leg.dial("212345678")
    await settle()
    invite = stack.sent[0].request
    cancel = inbound("CANCEL", branch=invite.headers.top_via.branch or "", call_id=leg.call_id,
                     from_tag=leg.local_tag)  # fmt: skip
    service._on_request(Transaction(), cancel, FAR)  # type: ignore[arg-type]
    assert [r.status for r in stack.responses] == [481]
    assert not leg.ended
    await leg.release("normal")
    leg.set_state(LegState.IDLE)
    stack.sent[0].respond(response_to(invite, 487))
    await settle()


# --------------------------------------------------------------------------- 4. statuses and causes


def test_decline_is_busy_and_causes_map_to_their_responses() -> None:
    assert CAUSE_FOR_STATUS[603] == "busy"  # the called party said no: no failover
    assert FINAL_RESPONSE_FOR_CAUSE["loop"] == 482
    assert FINAL_RESPONSE_FOR_CAUSE["invalid_number"] == 484
    assert FINAL_RESPONSE_FOR_CAUSE["cos"] == 403


@pytest.mark.parametrize(("cause", "status"), [("loop", 482), ("invalid_number", 484), ("cos:international", 403)])
async def test_an_unanswered_inbound_call_is_refused_with_the_causes_status(
    service: SipService, cause: str, status: int
) -> None:
    stack: WaitingStack = service.stack  # type: ignore[assignment]
    service._on_request(Transaction(), inbound("INVITE", body=sdp()), FAR)  # type: ignore[arg-type]
    leg = service.legs["in-1@192.0.2.10"]
    await leg.release(cause)
    assert stack.responses[-1].status == status


async def test_a_declined_call_fails_as_busy() -> None:
    call = Call()
    invite = await call.dial()
    invite.respond(response_to(invite.request, 603))
    await settle()
    assert call.events == [ChannelEvent(EventKind.FAR_END_CLEARED, "busy")]


# --------------------------------------------------------------------------- 5. Replaces


async def answered_inbound(service: SipService, call_id: str, from_tag: str) -> SipCallLeg:
    service._on_request(Transaction(), inbound("INVITE", call_id=call_id, from_tag=from_tag, body=sdp()), FAR)  # type: ignore[arg-type]
    leg = service.legs[call_id]
    leg.set_state(LegState.ALERTING)
    await leg.seize()
    leg.set_state(LegState.CONNECTED)
    leg.on_ack()
    return leg


def refer_request(leg: SipCallLeg, replaces: str, cseq: int = 2) -> Request:
    lines = ["REFER sip:201@192.0.2.1 SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKrefer",
             f"From: <sip:212345678@192.0.2.10>;tag={leg.remote_tag}", f"To: <sip:201@192.0.2.1>;tag={leg.local_tag}",
             f"Call-ID: {leg.call_id}", f"CSeq: {cseq} REFER", "Contact: <sip:212345678@192.0.2.10>",
             f"Refer-To: <sip:203@192.0.2.1?Replaces={replaces}>", "Content-Length: 0"]  # fmt: skip
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def escaped(call_id: str, to_tag: str, from_tag: str) -> str:
    return f"{call_id.replace('@', '%40')}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}"


@pytest.fixture
async def two_calls(service: SipService) -> tuple[SipService, SipCallLeg, SipCallLeg]:
    first = await answered_inbound(service, "first@192.0.2.10", "phone-a")
    consult = await answered_inbound(service, "consult@192.0.2.10", "phone-b")
    yield service, first, consult
    for leg in (first, consult):
        await leg.release("normal")
        leg.set_state(LegState.IDLE)
    await settle()


async def test_replaces_with_the_dialogs_tags_asks_call_control(two_calls) -> None:
    service, first, consult = two_calls
    calls: QuietCalls = service.calls  # type: ignore[assignment]
    # The phone's view of the consultation dialog: to-tag is ours (the PBX's), from-tag its own.
    first.receive_request(Transaction(), refer_request(first, escaped(consult.call_id, consult.local_tag, "phone-b")))  # type: ignore[arg-type]
    assert calls.events[-1] == ChannelEvent(EventKind.TRANSFER, "replaces:consult@192.0.2.10")


@pytest.mark.parametrize("tags", ["swapped", "wrong_to", "wrong_from", "early_only"])
async def test_replaces_with_other_tags_is_refused_without_asking_call_control(two_calls, tags: str) -> None:
    service, first, consult = two_calls
    calls: QuietCalls = service.calls  # type: ignore[assignment]
    stack: WaitingStack = service.stack  # type: ignore[assignment]
    before = DIALOG_EVENTS["replaces_refused"]
    value = {
        "swapped": escaped(consult.call_id, "phone-b", consult.local_tag),
        "wrong_to": escaped(consult.call_id, "guess", "phone-b"),
        "wrong_from": escaped(consult.call_id, consult.local_tag, "phone-a"),
        "early_only": escaped(consult.call_id, consult.local_tag, "phone-b") + "%3Bearly-only",
    }[tags]
    first.receive_request(Transaction(), refer_request(first, value))  # type: ignore[arg-type]
    await settle()
    assert stack.responses[-1].status == 202
    assert EventKind.TRANSFER not in [event.kind for event in calls.events]
    assert [n.body for n in stack.of("NOTIFY")] == [refer.TRYING, refer.FAILED]
    assert DIALOG_EVENTS["replaces_refused"] == before + 1


async def test_replaces_naming_no_leg_of_ours_is_left_to_call_control(two_calls) -> None:
    service, first, _consult = two_calls
    calls: QuietCalls = service.calls  # type: ignore[assignment]
    first.receive_request(Transaction(), refer_request(first, escaped("elsewhere@x", "a", "b")))  # type: ignore[arg-type]
    assert calls.events[-1] == ChannelEvent(EventKind.TRANSFER, "replaces:elsewhere@x")


def test_replaces_values() -> None:
    parsed = refer.parse_replaces("abc@host;to-tag=1;from-tag=2;early-only")
    assert parsed == refer.Replaces("abc@host", "1", "2", early_only=True)
    assert parsed.names("abc@host", "1", "2", confirmed=False)
    assert not parsed.names("abc@host", "1", "2", confirmed=True)
    for bad in ("abc@host", "abc@host;to-tag=1", "abc@host;from-tag=2", ";to-tag=1;from-tag=2",
                "abc@host;to-tag=1;to-tag=3;from-tag=2", "abc@host;to-tag=;from-tag=2"):  # fmt: skip
        with pytest.raises(refer.ReferError):
            refer.parse_replaces(bad)
    target = refer.refer_target(["<sip:203@pbx?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>"])
    assert target.event_value == "replaces:abc@host" and target.replaces == refer.Replaces("abc@host", "1", "2")
