"""SIP call legs: INVITE dialogs as channels of call control.

A `SipCallLeg` is a line-role channel (a call to or from the world, like a city line):
- inbound (UAS): an INVITE from a trusted peer becomes a leg that call control routes by
  the called number; `indicate_ringing` sends 180, `seize` answers 200 with our SDP, a BYE
  or CANCEL from the peer is FAR_END_CLEARED, `release` sends the right final response or
  BYE;
- outbound (UAC): `dial(number)` sends the INVITE with our offer; 180 is RINGING, 2xx is
  ANSWERED (we ACK, and ACK again each retransmitted 2xx), a failure response is
  FAR_END_CLEARED with the cause; `release` CANCELs or BYEs.
Media always goes through the mixer: the leg's RTP session is attached to its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from firmware.calls.channel import CallerId, Channel, ChannelEvent, EventKind, Role
from firmware.calls.lifecycle import LegState
from firmware.config.schema import SipPeerConfig
from firmware.sip.headers import Headers
from firmware.sip.message import Request, Response, make_response, new_branch, new_call_id, new_tag
from firmware.sip.sdp import LocalSdpSession, make_answer, make_offer, negotiated, parse_sdp
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
    "sibling_unreachable": 503,
    "extension_out_of_service": 480,
    "permanent_signal": 480,
}
# What an outbound failure response means to call control (and so to the caller).
CAUSE_FOR_STATUS = {486: "busy", 600: "busy", 404: "no_such_number", 484: "no_such_number", 480: "no_answer",
                    408: "no_answer", 487: "cancelled", 403: "rejected"}  # fmt: skip


def local_address_towards(host: str) -> str:
    """The local IP the kernel would use to reach `host` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return probe.getsockname()[0]


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
        self.remote_target: SipUri | None = None
        self.destination: Address = (peer.host, peer.port)
        self.from_header = ""
        self.to_header = ""
        self.confirmed = False
        self.ended = False
        # inbound
        self.invite: Request | None = None
        self.server_transaction: ServerTransaction | None = None
        self._ok: Response | None = None
        self._ok_task: asyncio.Task[None] | None = None
        # outbound
        self.contact_uri: SipUri | None = None  # a registered phone's Contact, else the peer
        self.shown_caller: CallerId | None = None  # who the far end sees as calling
        self._invite_task: asyncio.Task[None] | None = None
        self._offer: Any = None
        self._ack: Request | None = None
        self._provisional_seen = False

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
        return self.media

    def _on_digit(self, _media: RtpLeg, digit: str) -> None:
        self.emit(ChannelEvent(EventKind.DIGIT, digit))

    def _on_media_timeout(self, _media: RtpLeg) -> None:
        """No RTP for the endpoint's inactivity time: the far end has gone without a BYE."""
        log.warning("event=sip_media_timeout leg=%s call_id=%s", self.name, self.call_id)
        self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "media_timeout"))

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
        self.destination = source
        caller = headers.from_address
        user = caller.uri.user if isinstance(caller.uri, SipUri) else None
        return CallerId(user or "", caller.display_name or "")

    def _respond(self, status: int, body: bytes = b"", *, contact: bool = False) -> Response:
        assert self.invite is not None and self.server_transaction is not None
        response = make_response(self.invite, status, to_tag=self.local_tag)
        if contact:
            response.headers.add("Contact", f"<sip:{self.local_host}:{self.stack.local_address[1]}>")
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.stack.respond(self.server_transaction, response)
        return response

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
        self._ok = self._respond(200, answer.encode(), contact=True)
        self._ok_task = asyncio.get_running_loop().create_task(self._retransmit_ok())

    async def _retransmit_ok(self) -> None:
        """RFC 3261 13.3.1.4: the UAS core resends 2xx from T1 doubling to T2 until the ACK."""
        interval, waited = 0.5, 0.0
        while not self.confirmed and not self.ended and waited < 32.0:
            await asyncio.sleep(interval)
            waited += interval
            if self.confirmed or self.ended or self._ok is None or self.server_transaction is None:
                return
            self.stack.respond(self.server_transaction, self._ok)
            interval = min(interval * 2, 4.0)
        if not self.confirmed and not self.ended:
            log.warning("event=sip_no_ack leg=%s call_id=%s", self.name, self.call_id)
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "no_ack"))

    def on_ack(self) -> None:
        self.confirmed = True

    def on_cancel(self) -> None:
        if self._ok is None and not self.ended:
            self._respond(487)
            self.ended = True
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "cancel"))

    def on_bye(self) -> None:
        if not self.ended:
            self.ended = True
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, "bye"))

    # ----- outbound ----------------------------------------------------------------------

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
        self.from_header = f"{name}<sip:{user}@{self.local_host}>;tag={self.local_tag}"
        self.to_header = f"<sip:{digits}@{self.peer.host}>"
        media = await self._open_media(
            self.peer.codecs[0], _static_pt(self.peer.codecs[0]), 101, None, active=False
        )
        self._offer = make_offer(self.sdp, port=media.local_port, codecs=list(self.peer.codecs))
        invite = self._request("INVITE", body=self._offer.encode())
        self.invite = invite
        self._invite_task = asyncio.get_running_loop().create_task(self._send_invite(invite))

    def _request(self, method: str, body: bytes = b"", cseq: int | None = None) -> Request:
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
        headers.add("Contact", f"<sip:{self.local_host}:{self.stack.local_address[1]}>")
        headers.add("User-Agent", "minipbx")
        if body:
            headers.add("Content-Type", "application/sdp")
        assert self.remote_target is not None
        return Request(method, self.remote_target.copy(), headers, body)

    async def _send_invite(self, invite: Request) -> None:
        final = await self.stack.request(invite, self.destination, self._on_invite_response)
        if final.status >= 300 and not self.ended:
            self.ended = True
            cause = CAUSE_FOR_STATUS.get(final.status, "congestion")
            log.info("event=sip_call_failed leg=%s status=%d cause=%s", self.name, final.status, cause)
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, cause))

    def _on_invite_response(self, response: Response) -> None:
        status = response.status
        if status < 200:
            if status > 100 and not self._provisional_seen:
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
        self.remote_tag = headers.to_address.tag
        contacts = headers.contacts
        if contacts and isinstance(contacts[0].uri, SipUri):
            self.remote_target = contacts[0].uri
        self.to_header = _with_tag(self.to_header, self.remote_tag or "")
        self._ack = self._request("ACK", cseq=self.local_cseq)
        self._send_ack()
        self.confirmed = True
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
            self.media.set_codec(params.codec, params.payload_type, params.telephone_event_pt)
            self.media.set_active(True)
        self.emit(ChannelEvent(EventKind.ANSWERED))

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
            elif self.confirmed:
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
        bye = self._request("BYE")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stack.request(bye, self.destination), 40)

    async def _cancel(self) -> None:
        assert self.invite is not None
        headers = Headers()
        headers.add("Via", self.invite.headers.get_all("Via")[0])
        for name in ("From", "To", "Call-ID"):
            headers.add(name, self.invite.headers.get(name))
        headers.add("CSeq", f"{self.invite.headers.cseq.number} CANCEL")
        headers.add("Max-Forwards", "70")
        cancel = Request("CANCEL", self.invite.uri, headers)
        await self.stack.request(cancel, self.destination)

    def _closed(self) -> None:
        if self._ok_task is not None:
            self._ok_task.cancel()
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


def _with_tag(header: str, tag: str) -> str:
    return header if ";tag=" in header else f"{header};tag={tag}"


def _static_pt(codec: str) -> int:
    return {"PCMU": 0, "PCMA": 8, "G722": 9}[codec]
