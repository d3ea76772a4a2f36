"""SIP call legs: INVITE dialogs as channels of call control.

A `SipCallLeg` is a line-role channel (a call to or from the world, like a city line):
- inbound (UAS): an INVITE from a trusted peer becomes a leg that call control routes by
  the called number; `indicate_ringing` sends 180, `seize` answers 200 with our SDP, a BYE
  or CANCEL from the peer is FAR_END_CLEARED, `release` sends the right final response or
  BYE;
- outbound (UAC): `dial(number)` sends the INVITE with our offer (answering a 401/407
  challenge once with the peer's credentials); 180 is RINGING, 2xx is ANSWERED (we ACK,
  and ACK again each retransmitted 2xx), a failure response is FAR_END_CLEARED with the
  cause; `release` CANCELs (once a provisional response came, RFC 3261 9.1) or BYEs, and
  a 2xx that crosses our CANCEL is ACKed and ended with BYE, so the far end is not left
  in a call nobody hears.
In the dialog, whichever side began it (`receive_request`): re-INVITE and UPDATE change
the media (hold is HOLD/RETRIEVE), REFER asks for a TRANSFER, INFO carries digits.
Media always goes through the mixer: the leg's RTP session is attached to its slot.
Session timers (RFC 4028, `session_timer`): a dialog that agreed one is refreshed by us
(UPDATE, or re-INVITE with our SDP as it stands) or watched for the far end's refresh; a
missing or refused refresh ends the call with BYE and FAR_END_CLEARED "session_expired",
which also clears a held call whose far end vanished (no RTP is watched while held).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware.calls.channel import CallerId, Channel, ChannelEvent, EventKind, Role
from firmware.calls.lifecycle import LegState
from firmware.config.schema import SipPeerConfig
from firmware.media.codecs import spec_by_name
from firmware.sip import refer, session_timer
from firmware.sip.auth import DigestClient
from firmware.sip.dtmf_info import (
    DTMF_INFO_TYPES,
    DTMF_RELAY,
    DtmfInfoError,
    dtmf_relay_body,
    parse_dtmf_info,
)
from firmware.sip.headers import Headers
from firmware.sip.message import Request, Response, make_response, new_branch, new_call_id, new_tag
from firmware.sip.message_errors import SipParseError
from firmware.sip.sdp import (
    HOLD_ADDRESSES,
    LocalSdpSession,
    MediaParams,
    SessionDescription,
    make_answer,
    make_offer,
    negotiated,
    parse_sdp,
)
from firmware.sip.session_timer import (
    MIN_SE_S,
    TIMER,
    SessionExpires,
    SessionTimerError,
    Timer,
    TooSmall,
    UasAnswer,
    follow_response,
    parse_min_se,
    parse_session_expires,
)
from firmware.sip.transaction import ServerTransaction
from firmware.sip.uri import SipUri, parse_uri

if TYPE_CHECKING:
    from firmware.media.mixer import Mixer
    from firmware.media.rtp_endpoint import RtpEndpoint, RtpLeg
    from firmware.sip.stack import SipStack

log = logging.getLogger(__name__)

Address = tuple[str, int]

# What a caller is told when call control ends an unanswered inbound call, by cause.
FINAL_RESPONSE_FOR_CAUSE = {
    "busy": 486,
    "all_busy": 486,
    "no_such_number": 404,
    "invalid": 404,
    "rejected": 403,
    "congestion": 503,
    "no_free_line": 503,
    "no_answer": 480,
    "out_of_service": 480,
    "shutdown": 503,
    "cos": 403,  # forbidden by class of service ("cos:international")
    "loop": 482,  # the call came back round between sibling sites (RFC 3261 8.2.2.2)
    "invalid_number": 484,  # a number the trunk cannot carry
    "sibling_unreachable": 503,
    "extension_out_of_service": 480,
    "permanent_signal": 480,
}
# What an outbound failure response means to call control (and so to the caller).
# 603 Decline is the called party's "no": busy, which call control never fails over.
CAUSE_FOR_STATUS = {486: "busy", 600: "busy", 603: "busy", 404: "no_such_number", 484: "no_such_number", 480: "no_answer",
                    408: "no_answer", 487: "cancelled", 403: "rejected", 401: "rejected", 407: "rejected"}  # fmt: skip
# Challenges answered per request: the first, and a second only when the server says our
# nonce went stale (DigestClient refuses a wrong password on its own, so it never loops).
_AUTH_ROUNDS = 2
_INFO_DIGIT_WAIT_S = 4.0  # one INFO digit's transaction; a far end slower than this gets no more
_BYE_WAITS_FOR_NOTIFY_S = 4.0  # the transfer's final NOTIFY goes before our BYE
_SUBSCRIPTION_EXPIRES_S = 60

# Counted malformed in-dialog input (a bad SDP or DTMF body, a bad Refer-To), by kind.
MALFORMED: dict[str, int] = {}
# Session timers: dialogs that agreed one, refreshes sent and received, calls ended by an
# expired session, INVITEs and refreshes refused with 422 (shown in status).
SESSION_TIMERS: dict[str, int] = dict.fromkeys(
    ("negotiated", "refreshes_sent", "refreshes_received", "expired", "refused_422"), 0
)
# Dialog events worth seeing in status: a 2xx that crossed our CANCEL (ended with ACK and
# BYE), a CANCEL not sent because the INVITE ended before any provisional response, a
# CANCEL matching no INVITE we answer (481), a REFER whose Replaces named one of our
# dialogs with the wrong tags.
DIALOG_EVENTS: dict[str, int] = dict.fromkeys(
    ("late_answer_ended", "cancel_not_needed", "cancel_unmatched", "replaces_refused"), 0
)
# What our INVITEs and 2xx say we take inside a dialog (so a far end may refresh by UPDATE).
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, INFO, NOTIFY"
_REFRESH_ATTEMPTS = 3  # refused (not 408/481) refreshes per interval before it expires
_REFRESH_ROUNDS = 3  # one refresh: a 422, a 405 to UPDATE or a 491 is followed by another try


def local_address_towards(host: str) -> str:
    """The local IP the kernel would use to reach `host` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return probe.getsockname()[0]


def _malformed(kind: str, leg: str, detail: object) -> None:
    MALFORMED[kind] = MALFORMED.get(kind, 0) + 1
    log.warning("event=sip_malformed_in_dialog kind=%s leg=%s detail=%r", kind, leg, str(detail)[:120])


def requested_timer(headers: Headers, leg: str) -> tuple[SessionExpires | None, bool]:
    """The Session-Expires a request or response carries, and whether it lists "timer" in
    Supported. An unreadable value is logged, counted and taken as absent (no timer)."""
    try:
        supported = any(token.lower() == TIMER for token in headers.supported)
    except SipParseError as error:
        _malformed("supported", leg, error)
        supported = False
    text = headers.get("Session-Expires")
    if text is None:
        return None, supported
    try:
        return parse_session_expires(text), supported
    except SessionTimerError as error:
        _malformed("session_expires", leg, error)
        return None, supported


def too_brief_session(request: Request) -> Response | None:
    """422 with our Min-SE for an INVITE asking for a session interval under it (RFC
    4028 6), before any phone rings; None when the INVITE may go on."""
    text = request.headers.get("Session-Expires")
    if text is None:
        return None
    try:
        requested = parse_session_expires(text)
    except SessionTimerError:
        return None  # the leg logs and counts it, and runs no timer
    if requested.interval >= MIN_SE_S:
        return None
    SESSION_TIMERS["refused_422"] += 1
    log.info("event=sip_session_interval_too_small call_id=%s asked=%d min_se=%d",
             request.headers.call_id[:80], requested.interval, MIN_SE_S)  # fmt: skip
    response = make_response(request, 422)
    response.headers.add("Min-SE", str(MIN_SE_S))
    return response


@dataclass
class _Sent2xx:
    """A 2xx to an INVITE (initial or re-INVITE), resent until its ACK (RFC 3261 13.3.1.4)."""

    transaction: ServerTransaction
    response: Response
    cseq: int
    offer: SessionDescription | None = None  # our offer in the 2xx: the answer comes in the ACK
    acked: bool = False
    task: asyncio.Task[None] | None = None


class SipCallLeg(Channel):
    technology = "sip"
    role = Role.LINE

    def __init__(
        self,
        name: str,
        mixer: Mixer,
        *,
        stack: SipStack,
        rtp: RtpEndpoint,
        peer: SipPeerConfig,
        local_host: str,
        on_dialog: Callable[[SipCallLeg], None],
        on_closed: Callable[[SipCallLeg], None],
    ) -> None:
        super().__init__(name, mixer)
        self.stack = stack
        self.rtp = rtp
        self.peer = peer
        self.local_host = local_host
        self.on_dialog = on_dialog
        self.on_closed = on_closed
        self.number = peer.name
        self.display_name = peer.name
        self.state = LegState.IDLE
        self.sdp = LocalSdpSession(local_host)
        self.media: RtpLeg | None = None
        self.call_id = ""
        self.local_tag = new_tag()
        self.remote_tag: str | None = None
        self.local_cseq = 0
        self.remote_cseq = 0  # 0: none seen yet (we began the dialog)
        self.remote_target: SipUri | None = None
        self.route_set: list[str] = []  # Route header values for our in-dialog requests
        self.destination: Address = (peer.host, peer.port)
        self.from_header = ""
        self.to_header = ""
        self.confirmed = False
        self.ended = False
        self.digits_in = 0  # DTMF received (RFC 4733 or INFO), for status and tests
        # inbound
        self.invite: Request | None = None
        self.server_transaction: ServerTransaction | None = None
        self._ok: Response | None = None
        self._initial_2xx: _Sent2xx | None = None
        # outbound
        self.contact_uri: SipUri | None = None  # a registered phone's Contact, else the peer
        self.shown_caller: CallerId | None = None  # who the far end sees as calling
        self._invite_task: asyncio.Task[None] | None = None
        self._offer: Any = None
        self._ack: Request | None = None
        self._provisional_seen = False
        self._invite_provisional = asyncio.Event()  # a 1xx to the INVITE in flight: CANCEL may go
        self._digest: DigestClient | None = None
        # in the dialog
        self.held = False  # the far end put us on hold: we send nothing
        self._reinvite: _Sent2xx | None = None  # a 2xx to a re-INVITE waiting for its ACK
        self._remote_media: Address | None = None
        self._codec: tuple[str, int, int | None] | None = None
        self._receiving = True
        self._refer_cseq: int | None = None  # the REFER whose outcome we still owe
        self._refers = 0
        self._refer_event = "refer"
        # The service's legs by Call-ID, to check a Replaces against the dialog it names.
        self.dialogs: Callable[[str], SipCallLeg | None] = _no_dialog
        self._notify_lock = asyncio.Lock()
        self._notifies: set[asyncio.Task[None]] = set()
        # session timer (RFC 4028)
        self._local_sdp = b""  # the last SDP we sent: a refresh re-INVITE offers it again
        self._uas_timer: UasAnswer | None = None  # what our 2xx to the INVITE will say
        self._timer: Timer | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._peer_update = False  # the far end listed UPDATE in Allow: refresh by UPDATE
        self._min_se = MIN_SE_S  # raised by a 422 to one of our refreshes
        self._offering = False  # our refresh re-INVITE is out: a crossing offer gets 491
        self._refresh_acks: dict[int, Request] = {}  # our last refresh re-INVITE's ACK, by CSeq

    # ----- audio -------------------------------------------------------------------------

    def _attach_audio(self, slot: int) -> None:
        if self.media is not None:
            self.media.slot = slot

    def _detach_audio(self) -> None:
        media, self.media = self.media, None
        if media is not None:
            self.rtp.detach(media)  # at once: the slot may be reused before the socket closes
            self._in_background(self.rtp.close_leg(media))

    async def _open_media(
        self, codec: str, payload_type: int, event_pt: int | None, remote: Address | None, *, active: bool
    ) -> RtpLeg:
        """RTP on this leg's mixer slot. `active`: watched for silence (a vanished far end)."""
        assert self.slot is not None, "a leg gets media only while it is active"
        self.media = await self.rtp.open_leg(
            self.slot, self.local_host, codec, payload_type, event_pt, remote,
            on_digit=self._on_digit, on_timeout=self._on_media_timeout, active=active,
        )  # fmt: skip
        self._remote_media = remote
        self._codec = (codec, payload_type, event_pt)
        return self.media

    def _on_digit(self, _media: RtpLeg, digit: str) -> None:
        self.digits_in += 1
        log.debug("event=sip_digit leg=%s via=rfc4733", self.name)  # never the digit: PINs
        self.emit(ChannelEvent(EventKind.DIGIT, digit))

    def _on_media_timeout(self, _media: RtpLeg) -> None:
        """No RTP for the endpoint's inactivity time: the far end has gone without a BYE."""
        log.warning("event=sip_media_timeout leg=%s call_id=%s", self.name, self.call_id)
        self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "media_timeout"))

    async def send_digits(self, digits: str) -> None:
        """DTMF to the far end the way its peer config says (`dtmf_mode`): RFC 4733 events
        in the RTP stream, one INFO per digit, or in-band tones (the base class). A far end
        that did not accept telephone-event gets in-band tones instead of nothing."""
        mode = self.peer.dtmf_mode
        if mode == "info":
            await self._send_info_digits(digits)
            return
        if mode == "rfc4733" and self.media is not None:
            try:
                self.media.send_digits(digits)
                return
            except ValueError as error:
                log.warning("event=sip_bad_digits leg=%s digits=%r error=%r", self.name, digits, str(error))
                return
            except RuntimeError:
                log.info("event=sip_dtmf_inband_fallback leg=%s reason=no_telephone_event", self.name)
        await super().send_digits(digits)

    async def _send_info_digits(self, digits: str) -> None:
        """One INFO (application/dtmf-relay) per digit, each waiting for its answer: the
        far end sees them in order, as keypresses."""
        for digit in digits:
            try:
                body = dtmf_relay_body(digit)
            except ValueError:
                log.warning("event=sip_bad_digits leg=%s digits=%r", self.name, digits)
                return
            if self.ended or not self.confirmed:
                return
            try:
                response = await asyncio.wait_for(self._send_in_dialog("INFO", body, DTMF_RELAY), _INFO_DIGIT_WAIT_S)
            except TimeoutError:
                response = None
            if response is None or response.status >= 300:
                status = response.status if response is not None else "timeout"
                log.warning("event=sip_info_digit_failed leg=%s digit=%s status=%s", self.name, digit, status)
                return

    # ----- inbound -----------------------------------------------------------------------

    def accept_invite(self, transaction: ServerTransaction, invite: Request, source: Address) -> CallerId:
        """Take the dialog's identity from the INVITE; who is calling, for call control."""
        self.invite = invite
        self.server_transaction = transaction
        headers = invite.headers
        self.call_id = headers.call_id
        self.remote_tag = headers.from_address.tag
        self.from_header = f"{headers.get('To')};tag={self.local_tag}"
        self.to_header = headers.get("From") or ""
        self.remote_cseq = headers.cseq.number
        contacts = headers.contacts
        contact_uri = contacts[0].uri if contacts else None
        self.remote_target = contact_uri if isinstance(contact_uri, SipUri) else None
        self.route_set = self._route_set(headers, uas=True)
        self.destination = source
        self._learn_allow(headers)
        requested, supported = requested_timer(headers, self.name)
        timer = session_timer.answer_request(requested, supported)
        self._uas_timer = timer if isinstance(timer, UasAnswer) else None  # 422 was the service's
        caller = headers.from_address
        user = caller.uri.user if isinstance(caller.uri, SipUri) else None
        return CallerId(user or "", caller.display_name or "")

    def _route_set(self, headers: Headers, *, uas: bool) -> list[str]:
        """The dialog's Route values from Record-Route: in order for the UAS, reversed for
        the UAC (RFC 3261 12.1.1, 12.1.2). Unreadable: no route set, logged and counted."""
        try:
            routes = [str(route) for route in headers.record_routes]
        except SipParseError as error:
            _malformed("record_route", self.name, error)
            return []
        return routes if uas else routes[::-1]

    def _respond(
        self, status: int, body: bytes = b"", *, contact: bool = False, extra: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        assert self.invite is not None and self.server_transaction is not None
        response = make_response(self.invite, status, to_tag=self.local_tag)
        if 100 < status < 300:  # dialog-making responses carry the route set (RFC 3261 12.1.1)
            for route in self.invite.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", route)
        if contact:
            response.headers.add("Contact", self._contact)
        for name, value in extra:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.stack.respond(self.server_transaction, response)
        return response

    @property
    def _contact(self) -> str:
        return f"<sip:{self.local_host}:{self.stack.local_address[1]}>"

    async def indicate_ringing(self) -> None:
        if self.server_transaction is not None and not self.confirmed and self._ok is None:
            self._respond(180, contact=True)

    async def seize(self) -> None:
        """Answer the inbound call: open media, 200 with our SDP answer (resent until ACK)."""
        if self.server_transaction is None or self.invite is None or self._ok is not None:
            return  # an outgoing leg, or answered already: nothing to do
        offer = parse_sdp(self.invite.body)
        codecs = list(self.peer.codecs)
        # Negotiate first (the port is not part of the choice), then answer with the real port.
        probe = make_answer(offer, LocalSdpSession(self.local_host), port=9, codecs=codecs)
        params = negotiated(offer, probe, local_is_offerer=False)
        media = await self._open_media(
            params.codec, params.payload_type, params.telephone_event_pt, params.remote, active=True
        )
        answer = make_answer(offer, self.sdp, port=media.local_port, codecs=codecs)
        self._apply_direction(params, announce=False)
        self._local_sdp = answer.encode()
        self._ok = self._respond(200, self._local_sdp, contact=True, extra=_timer_headers(self._uas_timer))
        sent = _Sent2xx(self.server_transaction, self._ok, self.invite.headers.cseq.number)
        self._initial_2xx = sent
        sent.task = asyncio.get_running_loop().create_task(self._retransmit_2xx(sent))
        if self._uas_timer is not None:
            self._start_session_timer(self._uas_timer.timer)

    async def _retransmit_2xx(self, sent: _Sent2xx) -> None:
        """RFC 3261 13.3.1.4: the UAS core resends 2xx from T1 doubling to T2 until the ACK."""
        interval, waited = 0.5, 0.0
        while not sent.acked and not self.ended and waited < 32.0:
            await asyncio.sleep(interval)
            waited += interval
            if sent.acked or self.ended:
                return
            self.stack.respond(sent.transaction, sent.response)
            interval = min(interval * 2, 4.0)
        if not sent.acked and not self.ended:
            log.warning("event=sip_no_ack leg=%s call_id=%s cseq=%d", self.name, self.call_id, sent.cseq)
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "no_ack"))

    def on_ack(self, request: Request | None = None) -> None:
        """An ACK for one of our 2xx: the initial INVITE's, or a re-INVITE's (whose ACK
        carries the answer when we put the offer in the 2xx)."""
        cseq = request.headers.cseq.number if request is not None else None
        pending = self._reinvite
        if pending is not None and cseq == pending.cseq:
            self._reinvite = None
            pending.acked = True
            if pending.offer is not None and request is not None:
                self._take_answer(pending.offer, request.body)
            return
        if self._initial_2xx is not None and cseq not in (None, self._initial_2xx.cseq):
            return  # an ACK for something long gone (a re-INVITE's, retransmitted)
        self.confirmed = True
        if self._initial_2xx is not None:
            self._initial_2xx.acked = True

    def cancelled_by(self, transaction: ServerTransaction, cancel: Request) -> bool:
        """Is `cancel` for the INVITE that began this leg (RFC 3261 9.2)? Only a leg we
        answer (UAS) can be cancelled: the transaction layer matched the CANCEL's branch
        to our INVITE server transaction; a far end without RFC 3261 branches matches
        by the INVITE's Request-URI, From tag, CSeq number and top Via instead."""
        invite = self.invite
        if self.server_transaction is None or invite is None:
            return False  # our own INVITE: only we may cancel it
        matched = getattr(transaction, "cancels", None)
        if matched is not None:
            return matched is self.server_transaction
        try:
            if cancel.headers.top_via.rfc3261_branch:
                return False  # the branch named no INVITE transaction of ours
            return (
                str(cancel.uri) == str(invite.uri)
                and cancel.headers.from_address.tag == invite.headers.from_address.tag
                and cancel.headers.cseq.number == invite.headers.cseq.number
                and cancel.headers.get_all("Via")[0] == invite.headers.get_all("Via")[0]
            )
        except SipParseError:
            return False

    def on_cancel(self) -> None:
        if self._ok is None and not self.ended:
            self._respond(487)
            self.ended = True
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "cancel"))

    def on_bye(self) -> None:
        if not self.ended:
            self.ended = True
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "bye"))

    # ----- requests inside the dialog (RFC 3261 12.2.2) --------------------------------------

    def matches(self, request: Request) -> bool:
        """Does `request` belong to this dialog: its From tag is the far end's, its To tag
        ours? (The Call-ID already matched.) A far end without tags (RFC 2543) matches."""
        try:
            from_tag = request.headers.from_address.tag
            to_tag = request.headers.to_address.tag
        except SipParseError:
            return False
        if to_tag is not None and to_tag != self.local_tag:
            return False
        return self.remote_tag is None or from_tag == self.remote_tag

    def receive_request(self, transaction: ServerTransaction, request: Request) -> None:
        """A request the service matched to this dialog: INVITE (re-INVITE), UPDATE, BYE,
        REFER, INFO, NOTIFY. Out-of-order CSeq gets 500 (RFC 3261 12.2.2)."""
        cseq = request.headers.cseq.number
        if cseq < self.remote_cseq:
            log.info("event=sip_cseq_out_of_order leg=%s cseq=%d last=%d", self.name, cseq, self.remote_cseq)
            self._answer(transaction, request, 500)
            return
        self.remote_cseq = cseq
        method = request.method
        if method == "BYE":
            self._answer(transaction, request, 200)
            if self.server_transaction is not None and self._ok is None and not self.ended:
                self._respond(487)  # a BYE in the early dialog ends the INVITE too (RFC 3261 15.1.2)
            self.on_bye()
        elif method == "INVITE":
            self._on_reinvite(transaction, request)
        elif method == "UPDATE":
            self._on_update(transaction, request)
        elif method == "REFER":
            self._on_refer(transaction, request)
        elif method == "INFO":
            self._on_info(transaction, request)
        else:  # NOTIFY: we hold no subscription (we never send REFER or SUBSCRIBE)
            self._answer(transaction, request, 481)

    def _answer(
        self,
        transaction: ServerTransaction,
        request: Request,
        status: int,
        body: bytes = b"",
        content_type: str = "application/sdp",
        *,
        contact: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        response = make_response(request, status, to_tag=self.local_tag)
        if contact:
            response.headers.add("Contact", self._contact)
        for name, value in extra:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", content_type)
            response.body = body
        self.stack.respond(transaction, response)
        return response

    def _busy_with_offer(self, transaction: ServerTransaction, request: Request) -> bool:
        """RFC 3261 14.2 / RFC 3311 5.2: refuse a new offer while one is not settled.

        Our initial answer not sent yet: 500 with Retry-After. Our INVITE not answered, or a
        re-INVITE's 2xx not acknowledged yet: 491 (the far end retries after a random wait).
        """
        if self.server_transaction is not None and self._ok is None:
            self._answer(transaction, request, 500, extra=(("Retry-After", str(random.randint(1, 5))),))
            return True
        if (self.media is None or (self.server_transaction is None and not self.confirmed) or self._reinvite
                or self._offering):  # fmt: skip
            self._answer(transaction, request, 491)
            return True
        return False

    def _refresh_target(self, request: Request | Response) -> None:
        """re-INVITE and UPDATE are target refresh requests: a new Contact is the new target."""
        try:
            contacts = request.headers.contacts
        except SipParseError:
            return
        if contacts and isinstance(contacts[0].uri, SipUri):
            self.remote_target = contacts[0].uri

    def _on_reinvite(self, transaction: ServerTransaction, request: Request) -> None:
        """Hold, resume, a new address or codec, or a session refresh; an INVITE without
        SDP gets our offer in the 2xx and its answer in the ACK (RFC 3261 14.2)."""
        if self.ended or self._busy_with_offer(transaction, request):
            if self.ended:
                self._answer(transaction, request, 481)
            return
        timer = self._timer_for(transaction, request)
        if isinstance(timer, TooSmall):
            return
        self._refresh_target(request)
        offer: SessionDescription | None = None
        if request.body:
            answer = self._answer_offer(request.body)
            if answer is None:
                self._answer(transaction, request, 488)  # RFC 3261 14.2: the session goes on as it was
                return
        else:
            offer = self._our_offer()
            answer = offer.encode()
        self._local_sdp = answer
        response = self._answer(transaction, request, 200, answer, contact=True, extra=_timer_headers(timer))
        sent = _Sent2xx(transaction, response, request.headers.cseq.number, offer)
        self._reinvite = sent
        sent.task = asyncio.get_running_loop().create_task(self._retransmit_2xx(sent))
        self._refreshed(timer)

    def _on_update(self, transaction: ServerTransaction, request: Request) -> None:
        """RFC 3311: an offer answered in the 200 (no ACK); without SDP a session refresh."""
        if self.ended:
            self._answer(transaction, request, 481)
            return
        if request.body and self._busy_with_offer(transaction, request):
            return
        timer = self._timer_for(transaction, request)
        if isinstance(timer, TooSmall):
            return
        if not request.body:
            self._refresh_target(request)
            self._answer(transaction, request, 200, contact=True, extra=_timer_headers(timer))
            self._refreshed(timer)
            return
        answer = self._answer_offer(request.body)
        if answer is None:
            self._answer(transaction, request, 488)
            return
        self._refresh_target(request)
        self._local_sdp = answer
        self._answer(transaction, request, 200, answer, contact=True, extra=_timer_headers(timer))
        self._refreshed(timer)

    def _answer_offer(self, body: bytes) -> bytes | None:
        """Our answer to a mid-call offer, with the change applied to the RTP leg; None if
        the offer cannot be answered (nothing changes then). An offer equal to the last one
        gets our previous answer with the same o= version (RFC 3264 8)."""
        assert self.media is not None
        try:
            offer = parse_sdp(body)
            probe = LocalSdpSession(self.local_host)
            answer = make_answer(offer, probe, port=self.media.local_port, codecs=list(self.peer.codecs))
            params = negotiated(offer, answer, local_is_offerer=False)
            ipaddress.ip_address(params.remote_address)
        except (ValueError, TypeError) as error:
            _malformed("sdp_offer", self.name, error)
            return None
        # Only now with our own o= line: a refused offer must not count as a new version.
        answer = make_answer(offer, self.sdp, port=self.media.local_port, codecs=list(self.peer.codecs))
        self._apply(params)
        return answer.encode()

    def _our_offer(self) -> SessionDescription:
        assert self.media is not None
        return make_offer(self.sdp, port=self.media.local_port, codecs=list(self.peer.codecs))

    def _take_answer(self, offer: SessionDescription, body: bytes) -> None:
        """The answer to the offer we put in a re-INVITE's 2xx, from the ACK."""
        if not body:
            _malformed("ack_without_answer", self.name, "the media stays as it was")
            return
        try:
            params = negotiated(offer, parse_sdp(body), local_is_offerer=True)
            ipaddress.ip_address(params.remote_address)
        except (ValueError, TypeError) as error:
            _malformed("sdp_answer", self.name, error)
            return
        self._apply(params)

    def _apply(self, params: MediaParams) -> None:
        """Make the RTP leg match a settled offer/answer: address, codec, direction."""
        media = self.media
        if media is None:
            return
        if params.remote_address not in HOLD_ADDRESSES and params.remote != self._remote_media:
            try:
                media.set_remote(params.remote)
            except ValueError as error:  # an address family the socket cannot reach
                _malformed("sdp_address", self.name, error)
            else:
                self._remote_media = params.remote
                log.info("event=sip_media_moved leg=%s remote=%s:%d", self.name, *params.remote)
        codec = (params.codec, params.payload_type, params.telephone_event_pt)
        if codec != self._codec:
            media.set_codec(*codec)
            self._codec = codec
            log.info("event=sip_codec_changed leg=%s codec=%s pt=%d", self.name, params.codec, params.payload_type)
        self._apply_direction(params)

    def _apply_direction(self, params: MediaParams, *, announce: bool = True) -> None:
        """Ours "recvonly"/"inactive": the far end holds us, we send nothing (HOLD); back to
        sending: RETRIEVE. Not receiving: silence is no sign of a vanished far end. The
        call's first offer/answer sets the state without an event (`announce` False)."""
        media = self.media
        sending = params.direction in ("sendrecv", "sendonly")
        receiving = params.direction in ("sendrecv", "recvonly")
        held = not sending
        if media is not None:
            if held != self.held:
                media.hold(held)
            if receiving != self._receiving:
                media.set_active(receiving)
        self._receiving = receiving
        if held == self.held:
            return
        self.held = held
        if not announce:
            return
        log.info("event=sip_%s leg=%s call_id=%s", "hold" if held else "retrieve", self.name, self.call_id)
        self.emit(ChannelEvent(EventKind.HOLD if held else EventKind.RETRIEVE))

    # ----- session timer (RFC 4028) --------------------------------------------------------

    @property
    def _answered(self) -> bool:
        return self._ok is not None or (self.server_transaction is None and self.confirmed)

    def _timer_for(self, transaction: ServerTransaction, request: Request) -> UasAnswer | TooSmall | None:
        """What our 2xx to this re-INVITE or UPDATE says about the session timer (None:
        nothing, no timer); TooSmall when the interval asked for was too small: 422 went."""
        self._learn_allow(request.headers)
        if not self._answered:
            return None  # the early dialog: the timer starts with the answer
        requested, supported = requested_timer(request.headers, self.name)
        current = self._timer
        floor = min(MIN_SE_S, current.interval) if current is not None else MIN_SE_S
        timer = session_timer.answer_request(requested, supported, current, floor)
        if isinstance(timer, TooSmall):
            SESSION_TIMERS["refused_422"] += 1
            log.info("event=sip_session_interval_too_small leg=%s asked=%s min_se=%d",
                     self.name, requested.interval if requested else "", timer.min_se)  # fmt: skip
            self._answer(transaction, request, 422, extra=(("Min-SE", str(timer.min_se)),))
        return timer

    def _refreshed(self, timer: UasAnswer | None) -> None:
        """A re-INVITE or UPDATE we answered 2xx refreshed the session: the interval starts
        again, with the refresher our 2xx named."""
        if not isinstance(timer, UasAnswer):
            return
        if self._timer is not None:
            SESSION_TIMERS["refreshes_received"] += 1
        self._start_session_timer(timer.timer)

    def _start_session_timer(self, timer: Timer | None) -> None:
        """(Re)start the dialog's one timer task for `timer`; None stops it."""
        task, self._timer_task = self._timer_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        previous, self._timer = self._timer, timer
        if timer is None or self.ended:
            return
        if previous is None:
            SESSION_TIMERS["negotiated"] += 1
        if previous != timer:
            log.info("event=sip_session_timer leg=%s call_id=%s interval=%d refresher=%s", self.name,
                     self.call_id, timer.interval, "us" if timer.we_refresh else "far_end")  # fmt: skip
        loop = asyncio.get_running_loop()
        self._timer_task = loop.create_task(self._keep_session(timer), name=f"sip-session-{self.call_id}")

    async def _keep_session(self, timer: Timer) -> None:
        """One session interval. Far end refreshing: its refresh restarts this task, and
        none in time ends the call. We refresh: at half the interval (again, halfway to
        the expiry, after a refusal); the dialog gone (408, 481, no answer) ends the call."""
        if not timer.we_refresh:
            await asyncio.sleep(session_timer.expiry_delay(timer.interval))
            self._session_expired("no_refresh", timer)
            return
        loop = asyncio.get_running_loop()
        expires_at = loop.time() + timer.interval * session_timer.TIME_SCALE
        delay = session_timer.refresh_delay(timer.interval)
        for _ in range(_REFRESH_ATTEMPTS):
            await asyncio.sleep(delay)
            if self.ended:
                return
            outcome = await self._refresh_session(timer.interval)
            if self.ended:
                return
            if isinstance(outcome, Timer):
                self._start_session_timer(outcome)
                return
            if outcome is not None:
                self._session_expired(outcome, timer)
                return
            delay = max(expires_at - loop.time(), 0.0) / 2
        await asyncio.sleep(max(expires_at - loop.time(), 0.0))
        self._session_expired("refresh_refused", timer)

    async def _refresh_session(self, interval: int) -> Timer | str | None:
        """Send one session refresh: UPDATE without SDP when the far end allows UPDATE,
        else a re-INVITE offering our SDP unchanged (same o= version: no media change).
        The timer its 2xx settles; a reason to end the call (the dialog is gone: 408,
        481, or no answer at all); None when refused otherwise (the session goes on)."""
        status = 0
        for _ in range(_REFRESH_ROUNDS):
            requested = SessionExpires(max(interval, self._min_se), "uac")
            extra = (("Session-Expires", str(requested)), ("Min-SE", str(self._min_se)), ("Supported", TIMER))
            SESSION_TIMERS["refreshes_sent"] += 1
            method = "UPDATE" if self._peer_update or not self._local_sdp else "INVITE"
            if method == "UPDATE":
                response = await self._send_in_dialog("UPDATE", extra=extra)
            else:
                response = await self._send_refresh_invite(extra)
            status = response.status
            if 200 <= status < 300:
                self._learn_allow(response.headers)
                answered, _supported = requested_timer(response.headers, self.name)
                return follow_response(answered, requested)
            if status in (408, 481):
                return f"refresh_{status}"
            if status == 422:
                self._min_se = max(self._min_se, self._min_se_of(response))
            elif status in (405, 501) and method == "UPDATE":
                self._peer_update = False  # it does not take UPDATE after all: re-INVITE
            elif status == 491:
                await asyncio.sleep(random.uniform(0.0, 2.0))  # RFC 3261 14.1
            else:
                break
        log.info("event=sip_session_refresh_refused leg=%s call_id=%s status=%d", self.name, self.call_id, status)
        return None

    def _min_se_of(self, response: Response) -> int:
        try:
            return parse_min_se(response.headers.get("Min-SE") or "")
        except SessionTimerError as error:
            _malformed("min_se", self.name, error)
            return self._min_se

    async def _send_refresh_invite(self, extra: tuple[tuple[str, str], ...]) -> Response:
        """A re-INVITE with our last SDP; its 2xx is acknowledged (and its answer applied)
        as it arrives, even if the refresh was given up meanwhile."""
        invite = self._request("INVITE", self._local_sdp, extra=(*extra, ("Allow", ALLOW)))
        self._offering = True
        final = await self.stack.request(invite, self.destination, self._refresh_response_handler(invite))
        for _ in range(_AUTH_ROUNDS):
            if final.status not in (401, 407) or self.ended:
                break
            retry = self._with_credentials(invite, final)
            if retry is None:
                break
            invite = retry
            self._offering = True
            final = await self.stack.request(invite, self.destination, self._refresh_response_handler(invite))
        return final

    def _refresh_response_handler(self, invite: Request) -> Callable[[Response], None]:
        """Our offer is out until the final response (a crossing offer gets 491 meanwhile,
        RFC 3261 14.2); the 2xx (and each resent one) gets our ACK."""

        def on_response(response: Response) -> None:
            if response.status >= 200:
                self._offering = False
            if not 200 <= response.status < 300:
                return
            cseq = invite.headers.cseq.number
            ack = self._refresh_acks.get(cseq)
            if ack is None:  # the first 2xx: take its target, ACK it, take its answer
                self._refresh_target(response)
                credentials = tuple(
                    (name, value) for name in ("Authorization", "Proxy-Authorization")
                    for value in invite.headers.get_all(name)
                )  # fmt: skip
                ack = self._request("ACK", cseq=cseq, extra=credentials)
                self._refresh_acks = {cseq: ack}  # the latest refresh's only
                if response.body:
                    self._take_answer(parse_sdp(invite.body), response.body)
                else:
                    _malformed("refresh_without_answer", self.name, "the media stays as it was")
            self.stack.send_raw(ack.to_bytes(), self.destination)

        return on_response

    def _session_expired(self, reason: str, timer: Timer) -> None:
        """No refresh in time, or the dialog is gone: BYE, and the call is over."""
        if self.ended:
            return
        SESSION_TIMERS["expired"] += 1
        log.warning("event=sip_session_expired leg=%s call_id=%s reason=%s interval=%d refresher=%s",
                    self.name, self.call_id, reason, timer.interval, "us" if timer.we_refresh else "far_end")  # fmt: skip
        self.ended = True
        self._in_background(self._bye())
        self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "session_expired"))

    def _learn_allow(self, headers: Headers) -> None:
        """Does the far end take UPDATE (its Allow, whenever it sends one)?"""
        if headers.get("Allow") is None:
            return
        try:
            methods = headers.allow
        except SipParseError as error:
            _malformed("allow", self.name, error)
            return
        self._peer_update = any(method.upper() == "UPDATE" for method in methods)

    # ----- transfer (RFC 3515) -----------------------------------------------------------

    def _on_refer(self, transaction: ServerTransaction, request: Request) -> None:
        """202, a NOTIFY "100 Trying" at once, and TRANSFER to call control, whose verdict
        (`transfer_result`) goes back in the final NOTIFY. A Replaces naming one of our
        dialogs with tags that are not that dialog's gets the failure NOTIFY instead."""
        if self.ended:
            self._answer(transaction, request, 481)
            return
        if not self.confirmed:
            self._answer(transaction, request, 403)  # nothing to transfer before the answer
            return
        if self._refer_cseq is not None:
            self._answer(transaction, request, 491)  # one transfer at a time
            return
        try:
            asked = refer.refer_target(request.headers.get_all("Refer-To"))
        except refer.ReferError as error:
            _malformed("refer_to", self.name, error)
            self._answer(transaction, request, 400)
            return
        target = asked.event_value
        self._refresh_target(request)
        self._answer(transaction, request, 202, contact=True)
        cseq = request.headers.cseq.number
        self._refers += 1
        self._refer_cseq = cseq
        # RFC 3515 2.4.6: the first REFER's subscription may go without an id; later ones need it.
        self._refer_event = "refer" if self._refers == 1 else f"refer;id={cseq}"
        log.info("event=sip_refer leg=%s target=%s", self.name, target)
        self._notify(refer.TRYING, f"active;expires={_SUBSCRIPTION_EXPIRES_S}")
        if asked.replaces is not None and not self._replaces_ours(asked.replaces):
            self.transfer_result(False)  # the final NOTIFY: 503
            return
        self.emit(ChannelEvent(EventKind.TRANSFER, target))

    def _replaces_ours(self, replaces: refer.Replaces) -> bool:
        """RFC 3891 3: a Replaces must name a dialog by all three of its identifiers. For a
        leg of ours with that Call-ID the tags are checked here (call control checks whose
        leg it is); a Call-ID we do not have is left to call control, which finds no call."""
        named = self.dialogs(replaces.call_id)
        if named is None or replaces.names(named.call_id, named.local_tag, named.remote_tag,
                                           confirmed=named.confirmed):  # fmt: skip
            return True
        DIALOG_EVENTS["replaces_refused"] += 1
        log.warning("event=sip_replaces_refused leg=%s call_id=%s to_tag=%r from_tag=%r early_only=%s",
                    self.name, replaces.call_id[:80], replaces.to_tag[:40], replaces.from_tag[:40],
                    replaces.early_only)  # fmt: skip
        return False

    def transfer_result(self, succeeded: bool) -> None:
        """Call control's verdict on the TRANSFER we asked for: the final NOTIFY."""
        if self._refer_cseq is None:
            return
        self._refer_cseq = None
        frag = refer.SUCCEEDED if succeeded else refer.FAILED
        self._notify(frag, "terminated;reason=noresource")

    def _notify(self, frag: bytes, state: str) -> None:
        if self.ended:
            return
        extra = (("Event", self._refer_event), ("Subscription-State", state))
        task = asyncio.get_running_loop().create_task(self._send_notify(frag, extra))
        self._notifies.add(task)
        task.add_done_callback(self._notifies.discard)

    async def _send_notify(self, frag: bytes, extra: tuple[tuple[str, str], ...]) -> None:
        """One NOTIFY at a time, in order (RFC 6665 4.2.2: the next after the last's answer)."""
        async with self._notify_lock:
            response = await self._send_in_dialog("NOTIFY", frag, refer.SIPFRAG, extra)
        if response.status >= 300:
            log.info("event=sip_notify_refused leg=%s status=%d", self.name, response.status)

    # ----- digits in INFO (application/dtmf-relay, application/dtmf) ---------------------------

    def _on_info(self, transaction: ServerTransaction, request: Request) -> None:
        if not request.body:
            self._answer(transaction, request, 200)  # a keep-alive INFO
            return
        try:
            content_type = request.headers.content_type
        except SipParseError:
            content_type = None
        mime = content_type.mime if content_type is not None else ""
        if mime not in DTMF_INFO_TYPES:
            self._answer(transaction, request, 415, extra=(("Accept", ", ".join(DTMF_INFO_TYPES)),))
            return
        try:
            digit = parse_dtmf_info(mime, request.body)
        except DtmfInfoError as error:
            _malformed("dtmf_info", self.name, error)
            self._answer(transaction, request, 400)
            return
        self._answer(transaction, request, 200)
        self.digits_in += 1
        log.debug("event=sip_digit leg=%s via=info", self.name)  # never the digit: PINs
        self.emit(ChannelEvent(EventKind.DIGIT, digit))

    # ----- outbound ----------------------------------------------------------------------

    @property
    def _domain(self) -> str:
        """The domain in From/To towards a trunk: its AOR domain, else its host. A phone we
        ring knows us by our address."""
        if self.contact_uri is not None:
            return self.local_host
        return self.peer.domain or self.peer.host

    async def dial(self, digits: str, caller: CallerId | None = None) -> None:
        """Send the INVITE for `digits` to the peer; progress arrives as channel events.

        The peer's rules apply: `outbound_strip` leading digits removed, `outbound_prepend`
        put in front (e.g. strip 0, prepend +351 for E.164), and `caller_id` presented
        instead of the caller's own number when set.
        """
        if caller is not None:
            self.shown_caller = caller
        if self.contact_uri is None:
            digits = self.peer.outbound_prepend + digits[self.peer.outbound_strip :]
        self.call_id = new_call_id(self.local_host)
        self.on_dialog(self)  # in-dialog requests (BYE) find this leg from now on
        target = self.contact_uri or parse_uri(f"sip:{digits}@{self.peer.host}:{self.peer.port}")
        assert isinstance(target, SipUri)
        self.remote_target = target
        caller = self.shown_caller
        user = caller.number if caller and caller.number else (self.display_name or "minipbx")
        if self.peer.caller_id:
            user = self.peer.caller_id
        name = f'"{caller.name}" ' if caller and caller.name and '"' not in caller.name else ""
        self.from_header = f"{name}<sip:{user}@{self._domain}>;tag={self.local_tag}"
        self.to_header = f"<sip:{digits}@{self._domain}>"
        media = await self._open_media(
            self.peer.codecs[0], _payload_type(self.peer.codecs[0]), 101, None, active=False
        )
        if self.ended:  # released while the socket opened (a ring-all answered elsewhere)
            self._detach_audio()
            return
        self._offer = make_offer(self.sdp, port=media.local_port, codecs=list(self.peer.codecs))
        self._local_sdp = self._offer.encode()
        invite = self._request("INVITE", body=self._local_sdp, extra=(("Supported", TIMER), ("Allow", ALLOW)))
        self.invite = invite
        self._invite_task = asyncio.get_running_loop().create_task(self._send_invite(invite))

    def _request(
        self,
        method: str,
        body: bytes = b"",
        cseq: int | None = None,
        content_type: str = "application/sdp",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Request:
        headers = Headers()
        headers.add("Via", f"SIP/2.0/UDP {self.local_host}:{self.stack.local_address[1]};branch={new_branch()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", self.from_header)
        headers.add("To", self.to_header)  # carries the remote tag once the dialog exists
        headers.add("Call-ID", self.call_id)
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        headers.add("CSeq", f"{cseq} {method}")
        for route in self.route_set:
            headers.add("Route", route)
        headers.add("Contact", self._contact)
        headers.add("User-Agent", "minipbx")
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type)
        assert self.remote_target is not None
        return Request(method, self.remote_target.copy(), headers, body)

    def _with_credentials(self, request: Request, challenge: Response) -> Request | None:
        """The request again with digest credentials (same Call-ID, next CSeq, new branch),
        or None: no credentials for this peer, or the server refused them (RFC 3261 22.2)."""
        peer = self.peer
        user = peer.auth_username or peer.username
        if not (peer.password and user) or self.contact_uri is not None:
            return None
        if self._digest is None:
            self._digest = DigestClient(user, peer.password)
        status = challenge.status
        offered = challenge.headers.get_all("WWW-Authenticate" if status == 401 else "Proxy-Authenticate")
        sent = request.headers.get_all("Authorization" if status == 401 else "Proxy-Authorization")
        if not self._digest.handle_challenge(status, offered, sent):
            log.warning("event=sip_auth_refused leg=%s method=%s status=%d user=%s",
                        self.name, request.method, status, user)  # fmt: skip
            return None
        headers = request.headers.copy()
        headers.set("Via", f"SIP/2.0/UDP {self.local_host}:{self.stack.local_address[1]};branch={new_branch()};rport")
        self.local_cseq += 1
        headers.set("CSeq", f"{self.local_cseq} {request.method}")
        headers.remove("Authorization")
        headers.remove("Proxy-Authorization")
        for name, value in self._digest.authorization_headers(request.method, str(request.uri), request.body):
            headers.add(name, value)
        return Request(request.method, request.uri, headers, request.body)

    async def _send_in_dialog(
        self, method: str, body: bytes = b"", content_type: str = "application/sdp",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Response:  # fmt: skip
        """A non-INVITE request in the dialog (BYE, NOTIFY, INFO), answering a challenge."""
        request = self._request(method, body, content_type=content_type, extra=extra)
        response = await self.stack.request(request, self.destination)
        for _ in range(_AUTH_ROUNDS):
            if response.status not in (401, 407):
                break
            retry = self._with_credentials(request, response)
            if retry is None:
                break
            request = retry
            response = await self.stack.request(request, self.destination)
        return response

    async def _send_invite(self, invite: Request) -> None:
        final = await self.stack.request(invite, self.destination, self._on_invite_response)
        for _ in range(_AUTH_ROUNDS):
            if final.status not in (401, 407) or self.ended:
                break
            retry = self._with_credentials(invite, final)
            if retry is None:
                break
            invite = self.invite = retry  # a CANCEL now goes with this one
            self._invite_provisional.clear()  # ... once this transaction has its own 1xx
            final = await self.stack.request(invite, self.destination, self._on_invite_response)
        if final.status >= 300 and not self.ended:
            self.ended = True
            cause = CAUSE_FOR_STATUS.get(final.status, "congestion")
            log.info("event=sip_call_failed leg=%s status=%d cause=%s", self.name, final.status, cause)
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, cause))

    def _on_invite_response(self, response: Response) -> None:
        status = response.status
        if status < 200:
            self._invite_provisional.set()
            if status > 100 and not self._provisional_seen and not self.ended:
                self._provisional_seen = True
                self.emit(ChannelEvent(EventKind.RINGING))
            self._provisional_seen = True
            return
        if status >= 300:
            return
        if self._ack is not None:  # a retransmitted 2xx: our ACK was lost
            self._send_ack()
            return
        headers = response.headers
        self._take_uac_dialog(headers)
        assert self.invite is not None
        credentials = tuple(
            (name, value) for name in ("Authorization", "Proxy-Authorization")
            for value in self.invite.headers.get_all(name)
        )  # fmt: skip  (RFC 3261 13.2.2.4: the ACK carries the INVITE's credentials)
        self._ack = self._request("ACK", cseq=self.invite.headers.cseq.number, extra=credentials)
        self._send_ack()
        if self.ended:
            # Our CANCEL crossed this 2xx (the caller hung up, another device answered): the
            # far end is in a call now. RFC 3261 15: ACK it, then BYE; call control hears nothing.
            DIALOG_EVENTS["late_answer_ended"] += 1
            log.info("event=sip_late_answer_ended leg=%s call_id=%s", self.name, self.call_id)
            self._in_background(self._bye())
            return
        self.confirmed = True
        self._learn_allow(headers)
        answered, _supported = requested_timer(headers, self.name)
        self._start_session_timer(follow_response(answered, None))
        try:
            params = negotiated(self._offer, parse_sdp(response.body), local_is_offerer=True)
        except Exception as error:  # a broken answer: the call cannot carry audio
            log.warning("event=sip_bad_answer leg=%s error=%r", self.name, str(error))
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "bad_sdp"))
            return
        if self.media is not None:
            try:
                self.media.set_remote(params.remote)
            except ValueError:  # a host name in c=: we only send to addresses
                self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "bad_sdp"))
                return
            self._remote_media = params.remote
            self.media.set_codec(params.codec, params.payload_type, params.telephone_event_pt)
            self._codec = (params.codec, params.payload_type, params.telephone_event_pt)
            self.media.set_active(True)
            self._apply_direction(params, announce=False)
        self.emit(ChannelEvent(EventKind.ANSWERED))

    def _take_uac_dialog(self, headers: Headers) -> None:
        """The dialog's identity from the 2xx to our INVITE (RFC 3261 12.1.2): the far end's
        tag, its Contact as the target, the reversed route set. A Contact we cannot read
        leaves the target as the INVITE's Request-URI (logged, counted): the call goes on."""
        self.remote_tag = headers.to_address.tag
        try:
            contacts = headers.contacts
        except SipParseError as error:
            _malformed("contact", self.name, error)
            contacts = []
        if contacts and isinstance(contacts[0].uri, SipUri):
            self.remote_target = contacts[0].uri
        self.route_set = self._route_set(headers, uas=False)
        self.to_header = _with_tag(self.to_header, self.remote_tag or "")

    def _send_ack(self) -> None:
        assert self._ack is not None
        self.stack.send_raw(self._ack.to_bytes(), self.destination)

    # ----- both --------------------------------------------------------------------------

    async def alert(self, caller: CallerId) -> None:
        """Ring a registered SIP phone: an INVITE to its contact, showing the caller."""
        if self.contact_uri is None:
            raise TypeError(f"{self.name}: a SIP line is called with dial()")
        self.shown_caller = caller
        await self.dial(self.number)

    async def stop_alert(self) -> None:
        """Another device answered or the caller gave up: CANCEL the INVITE."""
        if self.contact_uri is not None:
            await self.release("cancelled")

    async def release(self, cause: str = "normal") -> None:
        """End our side: final response, CANCEL or BYE, whichever the dialog is in."""
        if self.ended:
            self._closed()
            return
        self.ended = True
        try:
            if self.server_transaction is not None and self._ok is None:
                self._respond(FINAL_RESPONSE_FOR_CAUSE.get(cause.partition(":")[0], 480))
            elif self.confirmed or self._ok is not None:
                # Answered, even if our 200's ACK is still on its way (RFC 3261 15 would have
                # us wait for it; every UA takes the BYE, and waiting keeps a dead call up).
                self._in_background(self._bye())
            elif self._invite_task is not None and self.invite is not None:
                self._in_background(self._cancel())
        finally:
            self._closed()

    def _in_background(self, request: Coroutine[Any, Any, None]) -> None:
        """BYE and CANCEL finish on their own (a silent far end takes 32 s to time out):
        the call is over for call control now, and its resources are released."""
        task = asyncio.get_running_loop().create_task(request, name=f"sip-end-{self.call_id}")
        _ENDING.add(task)
        task.add_done_callback(_ENDING.discard)

    async def _bye(self) -> None:
        if self._notifies:  # the transfer's outcome reaches the phone before the BYE
            await asyncio.wait(set(self._notifies), timeout=_BYE_WAITS_FOR_NOTIFY_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._send_in_dialog("BYE"), 40)

    async def _cancel(self) -> None:
        if not await self._may_cancel():
            DIALOG_EVENTS["cancel_not_needed"] += 1
            log.info("event=sip_cancel_not_sent leg=%s call_id=%s reason=invite_ended", self.name, self.call_id)
            return
        assert self.invite is not None
        headers = Headers()
        headers.add("Via", self.invite.headers.get_all("Via")[0])
        for name in ("From", "To", "Call-ID"):
            headers.add(name, self.invite.headers.get(name))
        headers.add("CSeq", f"{self.invite.headers.cseq.number} CANCEL")
        for route in self.invite.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        cancel = Request("CANCEL", self.invite.uri, headers)
        await self.stack.request(cancel, self.destination)

    async def _may_cancel(self) -> bool:
        """RFC 3261 9.1: no CANCEL before a provisional response (it could overtake the
        INVITE and find nothing to cancel); none either once the INVITE has its final
        response (a 2xx is ended with ACK and BYE, a failure needs nothing) or timed out."""
        invite_task = self._invite_task
        assert invite_task is not None
        if not self._invite_provisional.is_set() and not invite_task.done():
            provisional = asyncio.get_running_loop().create_task(self._invite_provisional.wait())
            try:
                await asyncio.wait((provisional, invite_task), return_when=asyncio.FIRST_COMPLETED)
            finally:
                provisional.cancel()
        return not invite_task.done() and self._ack is None

    def _closed(self) -> None:
        for sent in (self._initial_2xx, self._reinvite):
            if sent is not None and sent.task is not None:
                sent.task.cancel()
        self._start_session_timer(None)
        self.on_closed(self)

    async def dial_done(self) -> None:
        return None


def acceptable_offer(body: bytes, codecs: tuple[str, ...]) -> bool:
    """Can we answer this SDP offer (a common codec, an IP address to send to)?

    Checked before the call is routed, so a bad offer gets 488 instead of ringing phones.
    A missing offer (late offer in the ACK) is not supported yet.
    """
    try:
        offer = parse_sdp(body)
        answer = make_answer(offer, LocalSdpSession("127.0.0.1"), port=9, codecs=list(codecs))
        params = negotiated(offer, answer, local_is_offerer=False)
        ipaddress.ip_address(params.remote_address)
    except (ValueError, TypeError):
        return False
    return True


_ENDING: set[asyncio.Task[None]] = set()  # BYE/CANCEL transactions still running


def _timer_headers(timer: UasAnswer | None) -> tuple[tuple[str, str], ...]:
    """Our 2xx headers for the session timer (RFC 4028 9): Supported always; the agreed
    Session-Expires, and Require: timer when the far end supports it."""
    headers: tuple[tuple[str, str], ...] = (("Supported", TIMER), ("Allow", ALLOW))
    if isinstance(timer, UasAnswer):
        headers += (("Session-Expires", str(timer.session_expires)),)
        if timer.require:
            headers += (("Require", TIMER),)
    return headers


def _no_dialog(_call_id: str) -> SipCallLeg | None:
    """A leg made outside the service knows no other dialogs."""
    return None


def _with_tag(header: str, tag: str) -> str:
    return header if ";tag=" in header else f"{header};tag={tag}"


def _payload_type(codec: str) -> int:
    spec = spec_by_name(codec)
    assert spec is not None and spec.payload_type is not None, codec  # config allows static codecs only
    return spec.payload_type
