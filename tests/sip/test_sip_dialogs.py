"""Mid-call SIP on one leg, with a recording stand-in for the stack and the RTP leg: what
each in-dialog request changes, what it is answered, and what goes out; plus the DTMF INFO
bodies and Refer-To parsing. The same behaviours against SIPp are in the *_with_sipp tests."""

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
from firmware.sip.calls import SipCallLeg
from firmware.sip.dtmf_info import DtmfInfoError, dtmf_relay_body, parse_dtmf_info
from firmware.sip.message import Request, Response, parse_message
from firmware.sip.sdp import parse_sdp
from firmware.sip.service import SipService

SOURCE = ("192.0.2.10", 5060)
CALL_ID = "call-1@192.0.2.10"
FAR_TAG = "far1"


# --------------------------------------------------------------------------- stand-ins


class FakeStack:
    """Records what the leg answers and sends; requests get the queued responses (200)."""

    local_address = ("192.0.2.1", 5060)

    def __init__(self) -> None:
        self.responses: list[tuple[object, Response]] = []
        self.requests: list[Request] = []
        self.raw: list[bytes] = []
        self.replies: list[Response] = []

    def respond(self, transaction: object, response: Response) -> None:
        self.responses.append((transaction, response))

    async def request(self, request: Request, destination: Any, on_response: Any = None) -> Response:
        self.requests.append(request)
        response = self.replies.pop(0) if self.replies else Response(200, "OK")
        if on_response is not None:
            on_response(response)
        return response

    def send_raw(self, data: bytes, destination: Any) -> None:
        self.raw.append(data)

    def statuses(self) -> list[int]:
        return [response.status for _t, response in self.responses]

    def last(self) -> Response:
        return self.responses[-1][1]


class FakeMedia:
    local_port = 40000

    def __init__(self, codec: tuple[str, int, int | None], remote: Any, active: bool) -> None:
        self.codec = codec
        self.remote = remote
        self.active = active
        self.held = False
        self.digits: list[str] = []
        self.telephone_event = True
        self.slot = 0

    def set_remote(self, address: Any) -> None:
        self.remote = address

    def set_codec(self, name: str, payload_type: int, event_pt: int | None = None) -> None:
        self.codec = (name, payload_type, event_pt)

    def hold(self, held: bool) -> None:
        self.held = held

    def set_active(self, active: bool) -> None:
        self.active = active

    def send_digits(self, digits: str) -> None:
        if not self.telephone_event:
            raise RuntimeError("the far end did not accept telephone-event")
        self.digits.append(digits)


class FakeRtp:
    def __init__(self) -> None:
        self.opened: list[FakeMedia] = []

    async def open_leg(self, slot, host, codec, payload_type, event_pt, remote, *, on_digit, on_timeout, active):
        media = FakeMedia((codec, payload_type, event_pt), remote, active)
        self.opened.append(media)
        return media

    def detach(self, media: FakeMedia) -> None:
        pass

    async def close_leg(self, media: FakeMedia) -> None:
        pass


def sdp(port: int = 5004, address: str = "192.0.2.10", direction: str = "", payloads: str = "0 8 101", version: int = 1) -> bytes:
    lines = ["v=0", f"o=far 1 {version} IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0",
             f"m=audio {port} RTP/AVP {payloads}", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
             "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"]  # fmt: skip
    if direction:
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def request(method: str, cseq: int, body: bytes = b"", *, to_tag: str | None = None, from_tag: str = FAR_TAG,
            call_id: str = CALL_ID, content_type: str = "application/sdp", headers: tuple[str, ...] = ()) -> Request:
    to = "<sip:201@192.0.2.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} sip:201@192.0.2.1 SIP/2.0", f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{method}{cseq}",
             f"From: <sip:212345678@192.0.2.10>;tag={from_tag}", f"To: {to}", f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}", "Contact: <sip:212345678@192.0.2.10:5060>", "Max-Forwards: 70", *headers]  # fmt: skip
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Request)
    return message


class Harness:
    def __init__(self, peer: SipPeerConfig | None = None) -> None:
        self.stack = FakeStack()
        self.rtp = FakeRtp()
        self.mixer = Mixer(build_sounds(get_tone_plan("PT"), {}))
        self.events: list[ChannelEvent] = []
        self.peer = peer or SipPeerConfig(name="provider", host="192.0.2.10", incoming={"201": "201"})
        self.leg = SipCallLeg("sip:provider/1", self.mixer, stack=self.stack, rtp=self.rtp,  # type: ignore[arg-type]
                              peer=self.peer, local_host="192.0.2.1", on_dialog=lambda leg: None,
                              on_closed=lambda leg: None)  # fmt: skip
        self.leg.handler = self._record

    def _record(self, _leg: Channel, event: ChannelEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]

    @property
    def media(self) -> FakeMedia:
        assert self.rtp.opened
        return self.rtp.opened[-1]

    async def answered(self, offer: bytes | None = None) -> SipCallLeg:
        """An inbound call, answered and acknowledged."""
        leg = self.leg
        leg.accept_invite(object(), request("INVITE", 1, offer or sdp()), SOURCE)  # type: ignore[arg-type]
        leg.set_state(LegState.ALERTING)
        await leg.seize()
        leg.set_state(LegState.CONNECTED)
        leg.on_ack(request("ACK", 1, to_tag=leg.local_tag))
        self.stack.responses.clear()
        return leg

    def send(self, method: str, cseq: int, body: bytes = b"", **kwargs: Any) -> Response:
        self.leg.receive_request(object(), request(method, cseq, body, to_tag=self.leg.local_tag, **kwargs))  # type: ignore[arg-type]
        return self.stack.last()

    async def close(self) -> None:
        await self.leg.release("normal")
        self.leg.set_state(LegState.IDLE)
        await asyncio.sleep(0)


@pytest.fixture
async def harness() -> Harness:
    h = Harness()
    yield h
    await h.close()


def answer_of(response: Response):
    return parse_sdp(response.body)


def direction(response: Response) -> str:
    description = answer_of(response)
    return description.direction_of(description.media[0])


# --------------------------------------------------------------------------- re-INVITE / UPDATE


async def test_hold_and_resume_answer_per_rfc3264_and_emit_once(harness: Harness) -> None:
    await harness.answered()
    first_version = None
    for offered, expected in (("sendonly", "recvonly"), ("inactive", "inactive"), ("sendrecv", "sendrecv")):
        response = harness.send("INVITE", harness.leg.remote_cseq + 1, sdp(direction=offered))
        assert response.status == 200 and direction(response) == expected, offered
        assert response.headers.get("Contact")
        harness.leg.on_ack(request("ACK", harness.leg.remote_cseq, to_tag=harness.leg.local_tag))
        version = answer_of(response).origin.session_version
        assert first_version is None or version == first_version + 1  # each answer changed
        first_version = version
        assert harness.media.held == (expected != "sendrecv")
    # sendonly then inactive are both "held": one HOLD; sendrecv: one RETRIEVE.
    assert harness.kinds() == [EventKind.HOLD, EventKind.RETRIEVE]
    assert harness.media.active  # receiving again: silence counts as a vanished far end


async def test_rfc2543_hold_address_is_hold_and_keeps_the_old_remote(harness: Harness) -> None:
    await harness.answered()
    response = harness.send("INVITE", 2, sdp(address="0.0.0.0"))
    assert direction(response) == "recvonly"
    assert harness.kinds() == [EventKind.HOLD]
    assert harness.media.remote == ("192.0.2.10", 5004)


async def test_new_address_port_and_codec_are_applied(harness: Harness) -> None:
    await harness.answered()
    assert harness.media.codec == ("PCMU", 0, 101)
    harness.send("INVITE", 2, sdp(port=6000, address="192.0.2.77", payloads="8 101"))
    assert harness.media.remote == ("192.0.2.77", 6000)
    assert harness.media.codec == ("PCMA", 8, 101)
    assert harness.kinds() == []  # not a hold


async def test_session_refresh_gets_the_same_answer_and_version(harness: Harness) -> None:
    await harness.answered()
    harness.send("INVITE", 2, sdp())
    harness.leg.on_ack(request("ACK", 2, to_tag=harness.leg.local_tag))
    again = harness.send("INVITE", 3, sdp())
    harness.leg.on_ack(request("ACK", 3, to_tag=harness.leg.local_tag))
    update = harness.send("UPDATE", 4, sdp())
    assert again.body == update.body
    refresh = harness.send("UPDATE", 5)  # no SDP: a session-timer refresh
    assert refresh.status == 200 and not refresh.body
    assert harness.kinds() == []


async def test_unanswerable_offer_gets_488_and_changes_nothing(harness: Harness) -> None:
    await harness.answered()
    before = harness.send("UPDATE", 2, sdp()).body
    assert harness.send("INVITE", 3, sdp(payloads="18"), ).status == 488  # G.729 only
    assert harness.send("INVITE", 4, b"not sdp at all").status == 488
    assert harness.send("UPDATE", 5, sdp()).body == before  # same o= version: nothing changed
    assert harness.media.codec == ("PCMU", 0, 101)


async def test_offerless_reinvite_offers_in_the_200_and_takes_the_answer_from_the_ack(harness: Harness) -> None:
    await harness.answered()
    response = harness.send("INVITE", 2)
    offer = answer_of(response)
    assert [int(f) for f in offer.media[0].formats] == [0, 8, 101]
    harness.leg.on_ack(request("ACK", 2, sdp(port=7000, payloads="8 101", direction="sendonly"), to_tag=harness.leg.local_tag))
    assert harness.media.remote == ("192.0.2.10", 7000)
    assert harness.media.codec == ("PCMA", 8, 101)
    assert harness.kinds() == [EventKind.HOLD]


async def test_overlapping_reinvite_gets_491_until_the_ack(harness: Harness) -> None:
    await harness.answered()
    assert harness.send("INVITE", 2, sdp()).status == 200
    assert harness.send("INVITE", 3, sdp()).status == 491
    assert harness.send("UPDATE", 4, sdp()).status == 491
    harness.leg.on_ack(request("ACK", 2, to_tag=harness.leg.local_tag))
    assert harness.send("INVITE", 5, sdp()).status == 200


async def test_reinvite_2xx_is_resent_until_acked(harness: Harness) -> None:
    await harness.answered()
    harness.send("INVITE", 2, sdp(direction="sendonly"))
    await asyncio.sleep(0.65)  # T1 = 0.5 s: one retransmission
    resent = [r for _t, r in harness.stack.responses if r.status == 200]
    assert len(resent) == 2 and resent[0] is resent[1]
    harness.leg.on_ack(request("ACK", 2, to_tag=harness.leg.local_tag))
    await asyncio.sleep(1.1)  # the next would have been at 1.5 s
    assert len([r for _t, r in harness.stack.responses if r.status == 200]) == 2


async def test_old_cseq_gets_500(harness: Harness) -> None:
    await harness.answered()
    assert harness.send("INFO", 5).status == 200
    assert harness.send("INFO", 4).status == 500
    assert harness.send("INFO", 5).status == 200  # equal is not out of order


async def test_bye_before_the_answer_ends_the_invite_with_487(harness: Harness) -> None:
    leg = harness.leg
    leg.accept_invite(object(), request("INVITE", 1, sdp()), SOURCE)  # type: ignore[arg-type]
    leg.set_state(LegState.ALERTING)
    await leg.indicate_ringing()
    harness.send("BYE", 2)
    assert harness.stack.statuses() == [180, 200, 487]
    assert harness.events == [ChannelEvent(EventKind.FAR_END_CLEARED, "bye")]


async def test_offer_before_our_answer_gets_500_with_retry_after(harness: Harness) -> None:
    leg = harness.leg
    leg.accept_invite(object(), request("INVITE", 1, sdp()), SOURCE)  # type: ignore[arg-type]
    leg.set_state(LegState.ALERTING)
    response = harness.send("UPDATE", 2, sdp())
    assert response.status == 500 and response.headers.get("Retry-After")


# --------------------------------------------------------------------------- REFER / NOTIFY


async def test_refer_202_notifies_and_emits_transfer(harness: Harness) -> None:
    await harness.answered()
    response = harness.send("REFER", 2, headers=("Refer-To: <sip:203@192.0.2.1>",))
    assert response.status == 202
    assert harness.events[-1] == ChannelEvent(EventKind.TRANSFER, "203")
    assert harness.send("REFER", 3, headers=("Refer-To: <sip:204@192.0.2.1>",)).status == 491  # one at a time
    harness.leg.transfer_result(True)
    harness.leg.transfer_result(False)  # nothing pending any more: ignored
    await asyncio.sleep(0.01)
    notifies = [r for r in harness.stack.requests if r.method == "NOTIFY"]
    assert [n.body for n in notifies] == [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 200 OK\r\n"]
    assert [n.headers.get("Subscription-State") for n in notifies] == ["active;expires=60", "terminated;reason=noresource"]
    assert all(n.headers.get("Event") == "refer" for n in notifies)
    assert all(n.headers.get("Content-Type") == "message/sipfrag;version=2.0" for n in notifies)
    # In the dialog: our tag in From, the far end's in To, CSeq counting up, to its Contact.
    assert notifies[0].headers.from_address.tag == harness.leg.local_tag
    assert notifies[0].headers.to_address.tag == FAR_TAG
    assert [n.headers.cseq.number for n in notifies] == [1, 2]
    assert str(notifies[0].uri) == "sip:212345678@192.0.2.10:5060"


async def test_refer_failure_and_later_refer_ids(harness: Harness) -> None:
    await harness.answered()
    harness.send("REFER", 2, headers=("Refer-To: <sip:203@192.0.2.1>",))
    harness.leg.transfer_result(False)
    harness.send("REFER", 3, headers=("Refer-To: <sip:204@192.0.2.1>",))
    await asyncio.sleep(0.01)
    notifies = [r for r in harness.stack.requests if r.method == "NOTIFY"]
    assert notifies[1].body == b"SIP/2.0 503 Service Unavailable\r\n"
    assert notifies[2].headers.get("Event") == "refer;id=3"


async def test_refer_refusals(harness: Harness) -> None:
    leg = harness.leg
    leg.accept_invite(object(), request("INVITE", 1, sdp()), SOURCE)  # type: ignore[arg-type]
    leg.set_state(LegState.ALERTING)
    assert harness.send("REFER", 2, headers=("Refer-To: <sip:203@x>",)).status == 403  # not answered
    await leg.seize()
    leg.on_ack(request("ACK", 1, to_tag=leg.local_tag))
    assert harness.send("REFER", 3).status == 400  # no Refer-To
    assert harness.send("REFER", 4, headers=("Refer-To: <mailto:a@b>",)).status == 400
    assert harness.send("REFER", 5, headers=("Refer-To: <sip:a@b>", "Refer-To: <sip:c@d>")).status == 400
    assert EventKind.TRANSFER not in harness.kinds()


def test_refer_to_targets() -> None:
    assert refer.transfer_target(["<sip:203@pbx.example.com>"]) == "203"
    assert refer.transfer_target(['"Sales" <sip:0212345678@pbx;user=phone>;x=1']) == "0212345678"
    assert refer.transfer_target(["tel:+351212345678"]) == "+351212345678"
    replaces = "<sip:203@pbx?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>"
    assert refer.transfer_target([replaces]) == "replaces:abc@host"
    for bad in ([], ["<sip:pbx.example.com>"], ["garbage"], ["<sip:203@pbx?Replaces=>"]):
        with pytest.raises(refer.ReferError):
            refer.transfer_target(bad)


# --------------------------------------------------------------------------- INFO digits


async def test_info_digits(harness: Harness) -> None:
    await harness.answered()
    assert harness.send("INFO", 2, b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay").status == 200
    assert harness.send("INFO", 3, b"*", content_type="application/dtmf").status == 200
    refused = harness.send("INFO", 4, b"<xml/>", content_type="application/xml")
    assert refused.status == 415 and "application/dtmf-relay" in (refused.headers.get("Accept") or "")
    assert harness.send("INFO", 5).status == 200  # keep-alive
    assert harness.send("INFO", 6, b"Signal=Z\r\n", content_type="application/dtmf-relay").status == 400
    assert [(e.kind, e.value) for e in harness.events] == [(EventKind.DIGIT, "5"), (EventKind.DIGIT, "*")]


def test_dtmf_info_bodies() -> None:
    assert parse_dtmf_info("application/dtmf-relay", b"Signal=5\r\nDuration=160") == "5"
    assert parse_dtmf_info("application/dtmf-relay", b"signal= #\nduration=100\n") == "#"
    assert parse_dtmf_info("application/dtmf-relay", b"Signal=11\r\n") == "#"
    assert parse_dtmf_info("application/dtmf-relay", b"Signal=16\r\n") == "!"
    assert parse_dtmf_info("application/dtmf", b"a") == "A"
    for mime, body in (("application/dtmf-relay", b"Duration=160"), ("application/dtmf", b"55"), ("application/dtmf", b"")):
        with pytest.raises(DtmfInfoError):
            parse_dtmf_info(mime, body)
    assert dtmf_relay_body("#") == b"Signal=#\r\nDuration=160\r\n"
    with pytest.raises(ValueError):
        dtmf_relay_body("x")


async def test_send_digits_by_dtmf_mode() -> None:
    for mode in ("rfc4733", "info", "inband"):
        peer = SipPeerConfig(name="provider", host="192.0.2.10", dtmf_mode=mode)
        h = Harness(peer)
        await h.answered()
        await h.leg.send_digits("1#")
        infos = [r for r in h.stack.requests if r.method == "INFO"]
        if mode == "rfc4733":
            assert h.media.digits == ["1#"] and not infos
        elif mode == "info":
            assert [r.body for r in infos] == [b"Signal=1\r\nDuration=160\r\n", b"Signal=#\r\nDuration=160\r\n"]
            assert all(r.headers.get("Content-Type") == "application/dtmf-relay" for r in infos)
            assert h.media.digits == []
        else:
            assert h.media.digits == [] and not infos
        await h.close()


async def test_rfc4733_without_telephone_event_falls_back_to_tones(harness: Harness) -> None:
    await harness.answered()
    harness.media.telephone_event = False
    played: list[str] = []
    harness.mixer.play = lambda slot, sound: played.append(sound)  # type: ignore[method-assign]
    await harness.leg.send_digits("12")
    assert played == ["dtmf_1", "dtmf_2"]


# --------------------------------------------------------------------------- outbound auth


def challenge(status: int, nonce: str = "n1") -> Response:
    response = Response(status, "Unauthorized")
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    response.headers.add(name, f'Digest realm="voip.example.com", nonce="{nonce}", algorithm=MD5')
    return response


def trunk() -> SipPeerConfig:
    return SipPeerConfig(name="provider", host="192.0.2.10", username="0211234567", auth_username="auth-id",
                         password="secret", domain="voip.example.com")  # fmt: skip


async def dial(h: Harness) -> SipCallLeg:
    h.leg.set_state(LegState.DIALLING)
    await h.leg.dial("212345678")
    assert h.leg._invite_task is not None
    await h.leg._invite_task
    return h.leg


async def test_challenged_invite_is_resent_with_credentials_once() -> None:
    h = Harness(trunk())
    h.stack.replies = [challenge(407), Response(486, "Busy Here")]
    await dial(h)
    first, second = h.stack.requests
    assert "Proxy-Authorization" not in first.headers
    assert 'username="auth-id"' in (second.headers.get("Proxy-Authorization") or "")
    assert second.headers.call_id == first.headers.call_id
    assert second.headers.cseq.number == first.headers.cseq.number + 1
    assert second.headers.top_via.branch != first.headers.top_via.branch
    assert h.leg.invite is second  # a CANCEL goes with the INVITE in flight
    assert h.events[-1] == ChannelEvent(EventKind.FAR_END_CLEARED, "busy")
    # From and To in the provider's domain; rport asked for.
    assert "sip:212345678@voip.example.com" in (first.headers.get("To") or "")
    assert "@voip.example.com>" in (first.headers.get("From") or "")
    assert first.headers.top_via.has_rport
    await h.close()


async def test_refused_credentials_give_up_as_rejected() -> None:
    h = Harness(trunk())
    h.stack.replies = [challenge(401, "n1"), challenge(401, "n2")]
    await dial(h)
    assert len(h.stack.requests) == 2
    assert h.events[-1] == ChannelEvent(EventKind.FAR_END_CLEARED, "rejected")
    await h.close()


async def test_without_credentials_a_challenge_is_a_rejection() -> None:
    h = Harness()
    h.stack.replies = [challenge(401)]
    await dial(h)
    assert len(h.stack.requests) == 1
    assert h.events[-1] == ChannelEvent(EventKind.FAR_END_CLEARED, "rejected")
    await h.close()


async def test_challenged_bye_is_resent_with_credentials() -> None:
    h = Harness(trunk())
    await h.answered()
    h.stack.replies = [challenge(401)]
    await h.leg.release("normal")
    h.leg.set_state(LegState.IDLE)
    for _ in range(20):
        await asyncio.sleep(0)
    byes = [r for r in h.stack.requests if r.method == "BYE"]
    assert len(byes) == 2 and "Authorization" in byes[1].headers
    assert byes[1].headers.cseq.number == byes[0].headers.cseq.number + 1


# --------------------------------------------------------------------------- the service


class QuietCalls:
    outbound_leg = None
    extra_devices = None
    trunk_available = None

    def __init__(self) -> None:
        self.config = parse_config(default_config_text(), "<default>")
        self.started: list[Any] = []

    def start_inbound(self, leg: Channel, *args: Any) -> None:
        self.started.append(leg)


@pytest.fixture
def service() -> SipService:
    peer = SipPeerConfig(name="provider", host="192.0.2.10", incoming={"201": "201"})
    service = SipService("test", SipConfig(peers=(peer,)), Mixer(build_sounds(get_tone_plan("PT"), {})))
    service.stack = FakeStack()  # type: ignore[assignment]
    service.attach(QuietCalls(), FakeRtp())  # type: ignore[arg-type]
    return service


def test_allow_lists_the_dialog_methods(service: SipService) -> None:
    allowed = {method.strip() for method in service.allow.split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "REFER", "NOTIFY", "INFO"} <= allowed


def test_requests_for_unknown_dialogs_get_481(service: SipService) -> None:
    stack: FakeStack = service.stack  # type: ignore[assignment]
    for method in ("BYE", "INFO", "UPDATE", "REFER", "INVITE"):
        service._on_request(object(), request(method, 2, to_tag="nosuch"), SOURCE)  # type: ignore[arg-type]
    assert stack.statuses() == [481] * 5
    assert service.unknown_dialogs == 5


def test_a_second_initial_invite_with_a_live_call_id_is_a_loop(service: SipService) -> None:
    stack: FakeStack = service.stack  # type: ignore[assignment]
    service._on_request(object(), request("INVITE", 1, sdp()), SOURCE)  # type: ignore[arg-type]
    assert CALL_ID in service.legs
    service._on_request(object(), request("INVITE", 1, sdp()), SOURCE)  # type: ignore[arg-type]
    assert stack.statuses()[-1] == 482
    # The dialog's own requests reach it; a stranger's tag does not.
    leg = service.legs[CALL_ID]
    service._on_request(object(), request("INFO", 2, to_tag=leg.local_tag, from_tag="stranger"), SOURCE)  # type: ignore[arg-type]
    assert stack.statuses()[-1] == 481


def test_notify_outside_a_dialog(service: SipService) -> None:
    stack: FakeStack = service.stack  # type: ignore[assignment]
    mwi = request("NOTIFY", 1, b"Messages-Waiting: yes\r\n", content_type="application/simple-message-summary",
                  headers=("Event: message-summary",))  # fmt: skip
    service._on_request(object(), mwi, SOURCE)  # type: ignore[arg-type]
    service._on_request(object(), mwi, ("198.51.100.7", 5060))  # type: ignore[arg-type]
    other = request("NOTIFY", 2, headers=("Event: refer",))
    service._on_request(object(), other, SOURCE)  # type: ignore[arg-type]
    assert stack.statuses() == [200, 481, 481]


# --------------------------------------------------------------------------- route sets, both sides


async def test_uas_route_set_is_copied_and_used_in_order(harness: Harness) -> None:
    leg = harness.leg
    invite = request("INVITE", 1, sdp(), headers=("Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",))
    leg.accept_invite(object(), invite, SOURCE)  # type: ignore[arg-type]
    leg.set_state(LegState.ALERTING)
    await leg.indicate_ringing()
    await leg.seize()
    ringing, ok = (r for _t, r in harness.stack.responses)
    assert ringing.headers.get_all("Record-Route") == ok.headers.get_all("Record-Route") == [
        "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"
    ]
    leg.on_ack(request("ACK", 1, to_tag=leg.local_tag))
    await leg.send_digits("")  # nothing to send
    harness.send("REFER", 2, headers=("Refer-To: <sip:203@x>",))
    await asyncio.sleep(0.01)
    notify = next(r for r in harness.stack.requests if r.method == "NOTIFY")
    assert notify.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


async def test_uac_leg_takes_hold_from_the_called_far_end() -> None:
    h = Harness()
    answer = Response(200, "OK")
    for name, value in (("To", "<sip:212345678@192.0.2.10>;tag=callee"), ("Contact", "<sip:callee@192.0.2.10:5070>"),
                        ("Record-Route", "<sip:p1.example.com;lr>"), ("Record-Route", "<sip:p2.example.com;lr>"),
                        ("Content-Type", "application/sdp")):  # fmt: skip
        answer.headers.add(name, value)
    answer.body = sdp(port=6000, payloads="0 101")
    h.stack.replies = [answer]
    leg = await dial(h)
    assert h.kinds() == [EventKind.ANSWERED]
    ack = parse_message(h.stack.raw[0])
    assert isinstance(ack, Request) and ack.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert str(ack.uri) == "sip:callee@192.0.2.10:5070"
    assert h.media.remote == ("192.0.2.10", 6000)
    # The callee holds us: its re-INVITE comes with its tag in From and ours in To.
    leg.receive_request(object(), request("INVITE", 1, sdp(port=6000, payloads="0 101", direction="sendonly"),  # type: ignore[arg-type]
                                          from_tag="callee", to_tag=leg.local_tag))  # fmt: skip
    assert h.stack.last().status == 200 and direction(h.stack.last()) == "recvonly"
    assert h.kinds() == [EventKind.ANSWERED, EventKind.HOLD] and h.media.held
    await h.close()


def test_the_leg_table_counts_legs_per_peer() -> None:
    """max_channels is checked against this count on every INVITE."""
    from types import SimpleNamespace

    from firmware.sip.service import LegTable

    table = LegTable()
    a, b, c = (SimpleNamespace(peer=SimpleNamespace(name=n)) for n in ("provider", "provider", "sibling:porto"))
    table["1"], table["2"], table["3"] = a, b, c  # type: ignore[assignment]
    assert (table.count("provider"), table.count("sibling:porto"), table.count("other")) == (2, 1, 0)
    table["2"] = c  # type: ignore[assignment]  # a Call-ID re-registered to another leg
    assert (table.count("provider"), table.count("sibling:porto")) == (1, 2)
    del table["1"]
    del table["2"]
    del table["3"]
    assert table == {} and table.count("provider") == 0 and table.count("sibling:porto") == 0
