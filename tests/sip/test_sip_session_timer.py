"""Session timers (RFC 4028): the header values and decisions of `session_timer`, then one
leg with a recording stand-in for the stack and RTP: what our 2xx says, who refreshes, how
a refresh goes out (UPDATE or re-INVITE with our SDP unchanged), and how a missing or
failed refresh ends the call. Time is shrunk through `session_timer.TIME_SCALE`. The same
against SIPp and a whole appliance is in test_sip_session_timer_with_sipp.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from firmware.app import build_sounds
from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState
from firmware.config.load import default_config_text, parse_config
from firmware.config.schema import SipConfig, SipPeerConfig
from firmware.media.mixer import Mixer
from firmware.media.tones import get_tone_plan
from firmware.sip import calls as sip_calls
from firmware.sip import session_timer
from firmware.sip.calls import SipCallLeg
from firmware.sip.message import Request, Response, parse_message
from firmware.sip.service import SipService
from firmware.sip.session_timer import (
    SessionExpires,
    SessionTimerError,
    Timer,
    TooSmall,
    UasAnswer,
    answer_request,
    expiry_delay,
    follow_response,
    parse_min_se,
    parse_session_expires,
    refresh_delay,
)

SOURCE = ("192.0.2.10", 5060)
CALL_ID = "timer-1@192.0.2.10"
FAR_TAG = "far1"
SCALE = 1 / 900  # 90 s -> 0.1 s
SLOWER = 1 / 90  # 90 s -> 1 s, where a test must keep ahead of the timer


# --------------------------------------------------------------------------- pure logic


def test_session_expires_values_read_and_written() -> None:
    assert parse_session_expires("1800") == SessionExpires(1800, None)
    assert parse_session_expires(" 90 ;Refresher=UAC") == SessionExpires(90, "uac")
    assert parse_session_expires("4000;x=1;refresher=uas;y") == SessionExpires(4000, "uas")
    assert str(SessionExpires(90, "uac")) == "90;refresher=uac"
    assert str(SessionExpires(1800)) == "1800"
    for bad in ("", "abc", "-5", "0", "90;refresher=proxy", "1e3", str(2**32), "٩٠"):
        with pytest.raises(SessionTimerError):
            parse_session_expires(bad)
    assert parse_min_se("90") == 90 and parse_min_se("120;lr") == 120
    with pytest.raises(SessionTimerError):
        parse_min_se("ninety")


def test_uas_answers_by_rfc4028_table() -> None:
    # The far end supports timers and names no refresher: it refreshes, Require: timer.
    assert answer_request(SessionExpires(1800), True) == UasAnswer(1800, "uac", True)
    assert answer_request(SessionExpires(90, "uas"), True) == UasAnswer(90, "uas", True)
    assert answer_request(SessionExpires(90, "uac"), True) == UasAnswer(90, "uac", True)
    # It did not list "timer" in Supported: we refresh whatever the request said, no Require.
    assert answer_request(SessionExpires(600, "uac"), False) == UasAnswer(600, "uas", False)
    assert answer_request(SessionExpires(600, "uac"), False).timer == Timer(600, True)
    # Under our Min-SE: 422.
    assert answer_request(SessionExpires(30), True) == TooSmall(90)
    assert answer_request(SessionExpires(89), False) == TooSmall(90)
    assert answer_request(SessionExpires(100), True, min_se=120) == TooSmall(120)
    # Nothing asked and no timer running: none. A refresh asking nothing keeps the timer.
    assert answer_request(None, True) is None
    assert answer_request(None, True, Timer(600, False)) == UasAnswer(600, "uac", True)
    assert answer_request(None, True, Timer(600, True)) == UasAnswer(600, "uas", True)
    assert answer_request(None, False, Timer(600, False)) == UasAnswer(600, "uas", False)


def test_uac_follows_the_2xx() -> None:
    assert follow_response(SessionExpires(90, "uac"), None) == Timer(90, True)
    assert follow_response(SessionExpires(90, "uas"), None) == Timer(90, False)
    assert follow_response(SessionExpires(120), SessionExpires(90, "uac")) == Timer(120, True)
    # Our refresh asked for a timer and the 2xx is silent: a UAS without the extension.
    assert follow_response(None, SessionExpires(90, "uac")) == Timer(90, True)
    assert follow_response(None, None) is None


def test_delays_and_their_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refresh_delay(1800) == 900
    assert expiry_delay(1800) == 1768  # 1800 - 32
    assert expiry_delay(90) == 60  # 90 - 90/3
    monkeypatch.setattr(session_timer, "TIME_SCALE", 1 / 45)
    assert refresh_delay(90) == pytest.approx(1.0)
    assert expiry_delay(90) == pytest.approx(60 / 45)


# --------------------------------------------------------------------------- stand-ins


class FakeStack:
    """Records what the leg answers and sends; requests get the queued responses (200)."""

    local_address = ("192.0.2.1", 5060)

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.requests: list[Request] = []
        self.raw: list[bytes] = []
        self.replies: list[Response | Callable[[Request], Response]] = []

    def respond(self, _transaction: object, response: Response) -> None:
        self.responses.append(response)

    async def request(self, request: Request, _destination: Any, on_response: Any = None) -> Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if self.replies else Response(200, "OK")
        response = reply(request) if callable(reply) else reply
        if on_response is not None:
            on_response(response)
        return response

    def send_raw(self, data: bytes, _destination: Any) -> None:
        self.raw.append(data)

    def sent(self, method: str) -> list[Request]:
        return [request for request in self.requests if request.method == method]


class FakeMedia:
    local_port = 40000

    def __init__(self, codec: Any, remote: Any, active: bool) -> None:
        self.codec, self.remote, self.active, self.held, self.slot = codec, remote, active, False, 0
        self.changes = 0

    def set_remote(self, address: Any) -> None:
        self.remote, self.changes = address, self.changes + 1

    def set_codec(self, *codec: Any) -> None:
        self.codec, self.changes = codec, self.changes + 1

    def hold(self, held: bool) -> None:
        self.held, self.changes = held, self.changes + 1

    def set_active(self, active: bool) -> None:
        self.active = active


class FakeRtp:
    def __init__(self) -> None:
        self.opened: list[FakeMedia] = []

    async def open_leg(self, slot, host, codec, payload_type, event_pt, remote, *, on_digit, on_timeout, active):
        self.opened.append(FakeMedia((codec, payload_type, event_pt), remote, active))
        return self.opened[-1]

    def detach(self, media: FakeMedia) -> None:
        pass

    async def close_leg(self, media: FakeMedia) -> None:
        pass


def sdp(port: int = 5004, direction: str = "") -> bytes:
    lines = ["v=0", "o=far 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0",
             f"m=audio {port} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
             "a=fmtp:101 0-15"]  # fmt: skip
    if direction:
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def request(method: str, cseq: int, body: bytes = b"", *, to_tag: str | None = None,
            headers: tuple[str, ...] = ()) -> Request:  # fmt: skip
    to = "<sip:201@192.0.2.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} sip:201@192.0.2.1 SIP/2.0", f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{method}{cseq}",
             f"From: <sip:212345678@192.0.2.10>;tag={FAR_TAG}", f"To: {to}", f"Call-ID: {CALL_ID}",
             f"CSeq: {cseq} {method}", "Contact: <sip:212345678@192.0.2.10:5060>", "Max-Forwards: 70", *headers]  # fmt: skip
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Request)
    return message


def response(status: int, *headers: tuple[str, str], body: bytes = b"") -> Response:
    reply = Response(status, "")
    for name, value in headers:
        reply.headers.add(name, value)
    if body:
        reply.headers.add("Content-Type", "application/sdp")
        reply.body = body
    return reply


class Harness:
    def __init__(self) -> None:
        self.stack = FakeStack()
        self.rtp = FakeRtp()
        self.events: list[ChannelEvent] = []
        peer = SipPeerConfig(name="provider", host="192.0.2.10", incoming={"201": "201"})
        mixer = Mixer(build_sounds(get_tone_plan("PT"), {}))
        self.leg = SipCallLeg("sip:provider/1", mixer, stack=self.stack, rtp=self.rtp,  # type: ignore[arg-type]
                              peer=peer, local_host="192.0.2.1", on_dialog=lambda leg: None,
                              on_closed=lambda leg: None)  # fmt: skip
        self.leg.handler = self._record

    def _record(self, _leg: Channel, event: ChannelEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]

    async def answered(self, *headers: str) -> Response:
        """An inbound call with these INVITE headers, answered and acknowledged: our 200."""
        leg = self.leg
        leg.accept_invite(object(), request("INVITE", 1, sdp(), headers=headers), SOURCE)  # type: ignore[arg-type]
        leg.set_state(LegState.ALERTING)
        await leg.seize()
        leg.set_state(LegState.CONNECTED)
        leg.on_ack(request("ACK", 1, to_tag=leg.local_tag))
        ok = self.stack.responses[-1]
        self.stack.responses.clear()
        return ok

    def send(self, method: str, cseq: int, body: bytes = b"", headers: tuple[str, ...] = ()) -> Response:
        self.leg.receive_request(object(), request(method, cseq, body, to_tag=self.leg.local_tag, headers=headers))  # type: ignore[arg-type]
        return self.stack.responses[-1]

    async def close(self) -> None:
        await self.leg.release("normal")
        self.leg.set_state(LegState.IDLE)
        for _ in range(5):
            await asyncio.sleep(0)


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setattr(session_timer, "TIME_SCALE", SCALE)
    h = Harness()
    yield h
    await h.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


EXPIRED = ChannelEvent(EventKind.FAR_END_CLEARED, "session_expired")


# --------------------------------------------------------------------------- the far end refreshes


async def test_far_end_refresher_that_stops_refreshing_gets_bye(harness: Harness) -> None:
    before = dict(sip_calls.SESSION_TIMERS)
    ok = await harness.answered("Session-Expires: 90", "Supported: timer, 100rel")
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    assert "timer" in (ok.headers.get("Supported") or "") and "UPDATE" in (ok.headers.get("Allow") or "")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for(lambda: EXPIRED in harness.events)
    assert loop.time() - started >= expiry_delay(90) * 0.9  # not before the far end was due
    await wait_for(lambda: bool(harness.stack.sent("BYE")))
    assert harness.leg.ended
    assert sip_calls.SESSION_TIMERS["expired"] == before["expired"] + 1
    assert sip_calls.SESSION_TIMERS["negotiated"] == before["negotiated"] + 1
    assert not harness.stack.sent("UPDATE") and not harness.stack.sent("INVITE")


async def test_refreshes_by_update_and_reinvite_keep_the_call_without_media_events(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_timer, "TIME_SCALE", SLOWER)  # 1 s; BYE due 0.67 s after a refresh
    await harness.answered("Session-Expires: 90;refresher=uac", "Supported: timer")
    media = harness.rtp.opened[-1]
    changes = media.changes
    for cseq in range(2, 14):  # twelve refreshes, 0.1 s apart: 1.2 s > the interval
        await asyncio.sleep(0.1)
        if cseq % 2:
            ok = harness.send("INVITE", cseq, sdp(), ("Session-Expires: 90;refresher=uac", "Supported: timer"))
            harness.leg.on_ack(request("ACK", cseq, to_tag=harness.leg.local_tag))
        else:
            ok = harness.send("UPDATE", cseq, headers=("Session-Expires: 90;refresher=uac", "Supported: timer"))
        assert ok.status == 200 and ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert EXPIRED not in harness.events and not harness.leg.ended
    assert harness.kinds() == [] and media.changes == changes  # no HOLD/RETRIEVE, media untouched
    # A hold re-INVITE without Session-Expires is a refresh too, and keeps the timer.
    ok = harness.send("INVITE", 20, sdp(direction="sendonly"))
    assert ok.headers.get("Session-Expires") == "90;refresher=uas"  # no Supported: timer: we refresh
    harness.leg.on_ack(request("ACK", 20, to_tag=harness.leg.local_tag))
    assert harness.kinds() == [EventKind.HOLD]
    await wait_for(lambda: bool(harness.stack.sent("INVITE")))  # we refresh the held call now


async def test_too_small_interval_in_a_refresh_gets_422_and_changes_nothing(harness: Harness) -> None:
    await harness.answered("Session-Expires: 90", "Supported: timer")
    refusal = harness.send("UPDATE", 2, sdp(port=7000), ("Session-Expires: 30", "Supported: timer"))
    assert refusal.status == 422 and refusal.headers.get("Min-SE") == "90"
    assert harness.rtp.opened[-1].remote == ("192.0.2.10", 5004)
    await wait_for(lambda: EXPIRED in harness.events)  # and it was no refresh


async def test_a_malformed_session_expires_is_counted_and_means_no_timer(harness: Harness) -> None:
    before = sip_calls.MALFORMED.get("session_expires", 0)
    ok = await harness.answered("Session-Expires: soon", "Supported: timer")
    assert ok.status == 200 and ok.headers.get("Session-Expires") is None
    assert sip_calls.MALFORMED["session_expires"] == before + 1
    await asyncio.sleep(0.2)
    assert harness.events == [] and harness.stack.requests == []


# --------------------------------------------------------------------------- we refresh


async def test_without_timer_support_we_refresh_by_reinvite_with_our_unchanged_sdp(harness: Harness) -> None:
    ok = await harness.answered("Session-Expires: 90")
    assert ok.headers.get("Session-Expires") == "90;refresher=uas" and ok.headers.get("Require") is None
    answer = response(200, ("Contact", "<sip:212345678@192.0.2.10:5062>"), body=sdp())
    harness.stack.replies = [answer]
    await wait_for(lambda: bool(harness.stack.sent("INVITE")))
    invite = harness.stack.sent("INVITE")[0]
    assert invite.body == ok.body  # same o= version: no change to the session
    assert invite.headers.get("Session-Expires") == "90;refresher=uac"
    assert "timer" in (invite.headers.get("Supported") or "")
    ack = parse_message(harness.stack.raw[-1])
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.headers.cseq.number == invite.headers.cseq.number
    assert str(ack.uri) == "sip:212345678@192.0.2.10:5062"  # the 2xx's Contact is the new target
    assert harness.kinds() == []
    # No Session-Expires in that 2xx: we go on refreshing, the next one after half the interval.
    await wait_for(lambda: len(harness.stack.sent("INVITE")) >= 2)
    assert EXPIRED not in harness.events


async def test_update_when_allowed_and_422_then_405_are_followed(harness: Harness) -> None:
    await harness.answered("Session-Expires: 90;refresher=uas", "Supported: timer",
                           "Allow: INVITE, ACK, BYE, CANCEL, UPDATE")  # fmt: skip
    harness.stack.replies = [response(422, ("Min-SE", "120")), response(405, ("Allow", "INVITE, BYE")),
                             response(200, body=sdp())]  # fmt: skip
    await wait_for(lambda: len(harness.stack.requests) >= 3)
    first, second, third = harness.stack.requests[:3]
    assert first.method == "UPDATE" and first.body == b"" and first.headers.get("Session-Expires") == "90;refresher=uac"
    assert second.method == "UPDATE" and second.headers.get("Session-Expires") == "120;refresher=uac"
    assert second.headers.get("Min-SE") == "120"
    assert third.method == "INVITE" and third.body
    assert EXPIRED not in harness.events


@pytest.mark.parametrize("status", [481, 408])
async def test_a_refresh_answered_481_or_408_ends_the_call(harness: Harness, status: int) -> None:
    await harness.answered("Session-Expires: 90;refresher=uas", "Supported: timer", "Allow: UPDATE, BYE")
    harness.stack.replies = [response(status)]
    await wait_for(lambda: EXPIRED in harness.events)
    await wait_for(lambda: bool(harness.stack.sent("BYE")))
    assert [r.method for r in harness.stack.requests] == ["UPDATE", "BYE"]


async def test_refused_refreshes_end_the_call_at_the_expiry(harness: Harness) -> None:
    await harness.answered("Session-Expires: 90;refresher=uas", "Supported: timer", "Allow: UPDATE, BYE")
    harness.stack.replies = [response(500)] * 5
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for(lambda: EXPIRED in harness.events)
    assert loop.time() - started >= 90 * SCALE * 0.9
    await wait_for(lambda: bool(harness.stack.sent("BYE")))  # the BYE goes out in the background
    assert [r.method for r in harness.stack.requests] == ["UPDATE"] * 3 + ["BYE"]


async def test_refresh_2xx_naming_the_far_end_hands_the_refreshing_over(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_timer, "TIME_SCALE", SLOWER)
    await harness.answered("Session-Expires: 90;refresher=uas", "Supported: timer", "Allow: UPDATE, BYE")
    harness.stack.replies = [response(200, ("Session-Expires", "180;refresher=uas"))]
    await wait_for(lambda: bool(harness.stack.sent("UPDATE")))  # at 0.5 s
    assert harness.leg._timer == Timer(180, False)
    await asyncio.sleep(0.8)  # past the old interval (1 s); the far end is due at 0.5 + 1.33 s
    assert EXPIRED not in harness.events
    await wait_for(lambda: EXPIRED in harness.events, timeout=5.0)
    assert len(harness.stack.sent("UPDATE")) == 1


# --------------------------------------------------------------------------- our calls out


async def test_outbound_invite_supports_timer_and_follows_the_2xx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_timer, "TIME_SCALE", SCALE)
    h = Harness()
    answer = response(200, ("To", "<sip:212345678@192.0.2.10>;tag=callee"), ("Contact", "<sip:callee@192.0.2.10>"),
                      ("Session-Expires", "90;refresher=uac"), ("Require", "timer"), ("Allow", "INVITE, UPDATE, BYE"),
                      body=sdp(port=6000))  # fmt: skip
    h.stack.replies = [answer]
    h.leg.set_state(LegState.DIALLING)
    await h.leg.dial("212345678")
    assert h.leg._invite_task is not None
    await h.leg._invite_task
    invite = h.stack.requests[0]
    assert "timer" in (invite.headers.get("Supported") or "") and invite.headers.get("Session-Expires") is None
    assert h.kinds() == [EventKind.ANSWERED]
    await wait_for(lambda: len(h.stack.sent("UPDATE")) >= 2)
    update = h.stack.sent("UPDATE")[0]
    assert update.headers.get("Session-Expires") == "90;refresher=uac" and update.body == b""
    assert h.kinds() == [EventKind.ANSWERED]
    await h.close()


async def test_outbound_2xx_without_session_expires_starts_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_timer, "TIME_SCALE", SCALE)
    h = Harness()
    h.stack.replies = [response(200, ("To", "<sip:1@192.0.2.10>;tag=callee"), body=sdp(port=6000))]
    h.leg.set_state(LegState.DIALLING)
    await h.leg.dial("212345678")
    assert h.leg._invite_task is not None
    await h.leg._invite_task
    await asyncio.sleep(0.2)
    assert h.leg._timer is None and [r.method for r in h.stack.requests] == ["INVITE"]
    await h.close()


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


def test_service_refuses_a_too_small_interval_with_422_before_ringing() -> None:
    peer = SipPeerConfig(name="provider", host="192.0.2.10", incoming={"201": "201"})
    service = SipService("test", SipConfig(peers=(peer,)), Mixer(build_sounds(get_tone_plan("PT"), {})))
    stack = FakeStack()
    service.stack = stack  # type: ignore[assignment]
    calls = QuietCalls()
    service.attach(calls, FakeRtp())  # type: ignore[arg-type]
    before = sip_calls.SESSION_TIMERS["refused_422"]
    service._on_request(object(), request("INVITE", 1, sdp(), headers=("Session-Expires: 30", "Supported: timer")), SOURCE)  # type: ignore[arg-type]
    refusal = stack.responses[-1]
    assert refusal.status == 422 and refusal.headers.get("Min-SE") == "90"
    assert calls.started == [] and service.legs == {}
    assert sip_calls.SESSION_TIMERS["refused_422"] == before + 1
    service._on_request(object(), request("INVITE", 2, sdp(), headers=("Session-Expires: 90",)), SOURCE)  # type: ignore[arg-type]
    assert len(calls.started) == 1
    # An unreadable value is no refusal: the call goes on without a timer, counted once.
    malformed = sip_calls.MALFORMED.get("session_expires", 0)
    other = request("INVITE", 1, sdp(), headers=("Session-Expires: 30 s",))
    other.headers.set("Call-ID", "timer-2@192.0.2.10")
    service._on_request(object(), other, SOURCE)  # type: ignore[arg-type]
    assert len(calls.started) == 2 and sip_calls.MALFORMED["session_expires"] == malformed + 1
    assert calls.started[1]._uas_timer is None
