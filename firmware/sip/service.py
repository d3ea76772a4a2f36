"""The SIP transaction user of the appliance: what each incoming request gets.

Requests are dispatched by method to small handlers. Methods the appliance does not offer
yet are refused the way RFC 3261 8.2.1 says (405 with the Allow list), so a peer learns
what it can do instead of timing out. Requests inside a call (re-INVITE, UPDATE, BYE,
REFER, INFO, NOTIFY) go to the call's leg, found by Call-ID and tags; a request for a
dialog we do not have gets 481 (RFC 3261 12.2.2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from firmware.calls.channel import Role
from firmware.config.schema import SiblingSiteConfig, SipConfig, SipPeerConfig
from firmware.sip import gc_policy
from firmware.sip.calls import (
    DIALOG_EVENTS,
    MALFORMED,
    SESSION_TIMERS,
    SipCallLeg,
    acceptable_offer,
    local_address_towards,
    too_brief_session,
)
from firmware.sip.links import SipLinks
from firmware.sip.message import Request, Response, make_response
from firmware.sip.message_errors import SipParseError
from firmware.sip.peers import Resolver, is_ip
from firmware.sip.siblings import SiblingCallLeg, correlation_of, sibling_name, sibling_peer
from firmware.sip.stack import Address, SipStack
from firmware.sip.transaction import ServerTransaction
from firmware.sip.uri import SipUri, parse_uri

if TYPE_CHECKING:
    from firmware.calls.control import CallManager
    from firmware.media.mixer import Mixer
    from firmware.media.rtp_endpoint import RtpEndpoint
    from firmware.sip.registrar import Registrar

log = logging.getLogger(__name__)

USER_AGENT = "minipbx"
Handler = Callable[[ServerTransaction, Request, Address], None]


class SipService:
    def __init__(
        self,
        site: str,
        config: SipConfig | None = None,
        mixer: Mixer | None = None,
        registrar: Registrar | None = None,
        *,
        siblings: tuple[SiblingSiteConfig, ...] | None = None,
        resolver: Resolver | None = None,
        registration_backoff_s: float = 30.0,
        probe_timeout_s: float | None = None,
    ) -> None:
        """`siblings`: the sibling sites; None reads them from call control's config.
        `registration_backoff_s`: the first wait after a failed trunk registration."""
        self.site = site
        self.config = config or SipConfig()
        self.mixer = mixer
        self.registrar = registrar
        # The registrar's guard also guards the socket: a blocked source is dropped unread.
        self.stack = SipStack(self._on_request, registrar.guard if registrar else None)
        self.handlers: dict[str, Handler] = {"OPTIONS": self._options}
        if registrar is not None:
            self.handlers["REGISTER"] = self._register
        self.requests_by_method: dict[str, int] = {}
        self.calls: CallManager | None = None
        self.rtp: RtpEndpoint | None = None
        self.legs = LegTable()  # by Call-ID, with a count per peer
        self.rejected_peers = 0
        self._leg_counter = 0
        if mixer is not None:
            self.handlers.update(INVITE=self._invite, CANCEL=self._cancel, NOTIFY=self._notify)
            for method in ("BYE", "UPDATE", "REFER", "INFO"):
                self.handlers[method] = self._in_dialog
        self.unknown_dialogs = 0  # in-dialog requests that matched no call (answered 481)
        self._siblings = siblings
        self.links = SipLinks(
            self.stack, site, lambda: self.config.peers, self.sibling_sites,
            listen_host=lambda: self.config.media_address or self.stack.local_address[0],
            digest_algorithms=self.config.digest_algorithms, resolver=resolver,
            backoff_base_s=registration_backoff_s, probe_timeout_s=probe_timeout_s,
        )  # fmt: skip

    def attach(self, calls: CallManager, rtp: RtpEndpoint) -> None:
        """Calls need call control and media; without them the stack answers OPTIONS only."""
        self.calls = calls
        self.rtp = rtp
        calls.outbound_leg = self.new_outbound_leg
        calls.extra_devices = self.phone_legs
        calls.trunk_available = self.peer_available

    @property
    def allow(self) -> str:
        return ", ".join(sorted({*self.handlers, "ACK"}))

    async def start(self, host: str, port: int) -> Address:
        if self.registrar is None:
            address = await self.stack.start(host, port)
        else:
            await self.registrar.start()
            try:
                address = await self.stack.start(host, port)
            except BaseException:
                await self.registrar.stop()  # its writer thread must not outlive a failed start
                raise
        self.links.start()  # trunk registrations, keep-alives, host names
        gc_policy.settle_after_start()  # the last part of start-up: see firmware/sip/gc_policy.py
        return address

    async def stop(self) -> None:
        await self.links.stop()  # un-registers trunks while the socket is still open
        await self.stack.stop()
        if self.registrar is not None:
            await self.registrar.stop()

    def _on_request(
        self, transaction: ServerTransaction | None, request: Request, source: Address
    ) -> None:
        method = request.method
        self.requests_by_method[method] = self.requests_by_method.get(method, 0) + 1
        if method == "ACK" or transaction is None:  # an ACK for a 2xx belongs to its dialog
            leg = self.legs.get(request.headers.call_id)
            if leg is not None and method == "ACK" and leg.matches(request):
                leg.on_ack(request)
            return
        handler = self.handlers.get(method)
        if handler is not None:
            handler(transaction, request, source)
            return
        response = make_response(request, 405)
        response.headers.add("Allow", self.allow)
        self._finish(response)
        self.stack.respond(transaction, response)

    def _finish(self, response: Response) -> None:
        response.headers.add("Server", f"{USER_AGENT} ({self.site})")

    def _options(self, transaction: ServerTransaction, request: Request, _source: Address) -> None:
        """Capabilities query and the usual keep-alive of phones and providers."""
        response = make_response(request, 200)
        response.headers.add("Allow", self.allow)
        response.headers.add("Accept", "application/sdp")
        response.headers.add("Supported", "timer")  # RFC 4028 session timers
        self._finish(response)
        self.stack.respond(transaction, response)

    def _register(self, transaction: ServerTransaction, request: Request, source: Address) -> None:
        """RFC 3261 §10: phones bind their contacts to an extension; None means stay silent."""
        assert self.registrar is not None
        response = self.registrar.receive(request, source)
        if response is None:
            return
        self._finish(response)
        self.stack.respond(transaction, response)

    def status(self) -> dict[str, Any]:
        counters = self.stack.counters
        host, port = self.stack.local_address
        return {
            "listen": " ".join(self.stack.listening) or f"udp:{host}:{port}",
            "datagrams_in": counters.datagrams_in,
            "malformed": counters.malformed,
            "answered_400": counters.answered_400,
            "blocked": counters.blocked,
            "requests": dict(self.requests_by_method),
            "transactions": self.layer_size,
            "unknown_dialogs": self.unknown_dialogs,
            "malformed_in_dialog": dict(MALFORMED),
            "session_timers": dict(SESSION_TIMERS),
            "dialog_events": dict(DIALOG_EVENTS),
            "transport": self.stack.transport_status(),
            "registrar": self.registrar.status() if self.registrar is not None else None,
            "trunks": self.links.trunk_status(self._calls_to),
            "siblings": self.links.sibling_status(self._calls_to),
            "sibling_auth": self.links.sibling_auth.status(),
        }

    @property
    def layer_size(self) -> int:
        return len(self.stack.layer)

    # ----- calls ---------------------------------------------------------------------------

    def peer_for(self, source: Address) -> SipPeerConfig | None:
        """The trunk `source` belongs to: by IP, or by what its host name resolved to."""
        return self.links.peer_for(source)

    def sibling_sites(self) -> tuple[SiblingSiteConfig, ...]:
        if self._siblings is not None:
            return self._siblings
        return self.calls.config.sibling_sites if self.calls is not None else ()

    def peer_available(self, name: str) -> bool:
        """Can trunk `name` (or "sibling:NAME") take a call now: known, not down by its
        keep-alive, registered if it registers, its host name resolved. Channel limits
        are not looked at (call control counts those)."""
        return self.links.available(name)

    def _calls_to(self, peer_name: str) -> int:
        return self.legs.count(peer_name)

    def _reply(self, transaction: ServerTransaction, request: Request, status: int) -> None:
        response = make_response(request, status)
        self._finish(response)
        self.stack.respond(transaction, response)

    def _new_leg(self, peer: SipPeerConfig, destination: Address | None = None,
                 kind: type[SipCallLeg] = SipCallLeg) -> SipCallLeg:  # fmt: skip
        """A leg towards `peer`; `destination` is its resolved address (default: its host)."""
        assert self.mixer is not None and self.rtp is not None
        self._leg_counter += 1
        target = destination or (peer.host, peer.port)
        host = self.config.media_address or self.stack.local_address[0]
        if host in ("0.0.0.0", ""):
            # A host name is looked up in the resolver's cache, never on the loop (connect()
            # on a name would block in getaddrinfo while every call waits).
            towards = target[0] if is_ip(target[0]) else self.links.resolver.address(target[0])
            host = local_address_towards(towards) if towards else "127.0.0.1"
        leg = kind(
            f"sip:{peer.name}/{self._leg_counter}", self.mixer, stack=self.stack, rtp=self.rtp, peer=peer,
            local_host=host, on_dialog=self.register_leg, on_closed=self._leg_closed,
        )  # fmt: skip
        if destination is not None:
            leg.destination = destination
        leg.dialogs = self.legs.get  # a REFER's Replaces is checked against the leg it names
        return leg

    def _legs_of(self, peer: SipPeerConfig) -> int:
        return self.legs.count(peer.name)

    def _invite(self, transaction: ServerTransaction, request: Request, source: Address) -> None:
        headers = request.headers
        if self._to_tag(request) is not None:  # a re-INVITE: hold, resume, refresh, new media
            self._in_dialog(transaction, request, source)
            return
        if headers.call_id in self.legs:
            # Same Call-ID, no To tag, another branch: a request that reached us twice by
            # different paths (RFC 3261 8.2.2.2), or a far end reusing a live Call-ID.
            self._reply(transaction, request, 482)
            return
        sibling = self.links.sibling_at(source) if self.calls is not None else None
        if sibling is not None:
            self._invite_from_sibling(transaction, request, source, sibling)
            return
        peer = self.peer_for(source)
        if peer is None and self.registrar is not None and self.registrar.has_accounts and self.calls:
            self._invite_from_phone(transaction, request, source)
            return
        if peer is None or self.calls is None:
            self.rejected_peers += 1
            log.warning("event=sip_peer_rejected source=%s:%d", *source)
            self._reply(transaction, request, 403)
            return
        if self._legs_of(peer) >= peer.max_channels:
            self._reply(transaction, request, 486)
            return
        dialled = _called_number(request, peer.did_from)
        destination = peer.incoming.get(dialled) or peer.incoming.get("*")
        if destination is None:
            self._reply(transaction, request, 404)
            return
        if not acceptable_offer(request.body, peer.codecs):
            self._reply(transaction, request, 488)
            return
        if self._too_brief(transaction, request):
            return
        leg = self._new_leg(peer, source)  # its address, not its host name: no DNS here
        caller = leg.accept_invite(transaction, request, source)
        self.legs[leg.call_id] = leg
        self.calls.start_inbound(leg, dialled, caller, destination)

    def _too_brief(self, transaction: ServerTransaction, request: Request) -> bool:
        """A session interval under our Min-SE asked for: 422 (RFC 4028 6), nothing rings."""
        refusal = too_brief_session(request)
        if refusal is None:
            return False
        self._finish(refusal)
        self.stack.respond(transaction, refusal)
        return True

    def _invite_from_sibling(
        self, transaction: ServerTransaction, request: Request, source: Address, site: SiblingSiteConfig
    ) -> None:
        """A call from a sibling office: digest-checked as that site, then call control
        routes it with the sibling's class of service."""
        assert self.calls is not None
        refusal = self.links.sibling_auth.check(request, source, site)
        if refusal is not None:
            self._finish(refusal)
            self.stack.respond(transaction, refusal)
            return
        peer = sibling_peer(site, self.site)
        if not acceptable_offer(request.body, peer.codecs):
            self._reply(transaction, request, 488)
            return
        if self._too_brief(transaction, request):
            return
        leg = self._new_leg(peer, source, kind=SiblingCallLeg)
        caller = leg.accept_invite(transaction, request, source)
        leg.correlation_id = correlation_of(request)
        self.legs[leg.call_id] = leg
        self.calls.start_from_sibling(leg, _called_number(request, "request_uri"), site, caller)

    def _invite_from_phone(self, transaction: ServerTransaction, request: Request, source: Address) -> None:
        """A call from a SIP phone: digest-authenticated as its extension, then dialled as one."""
        assert self.registrar is not None and self.calls is not None
        outcome = self.registrar.authenticate(request, source)
        if outcome is None:
            return  # a blocked source hears nothing
        if isinstance(outcome, Response):
            self._finish(outcome)
            self.stack.respond(transaction, outcome)
            return
        extension = outcome.username
        if not acceptable_offer(request.body, ("PCMU", "PCMA")):
            self._reply(transaction, request, 488)
            return
        if self._too_brief(transaction, request):
            return
        peer = SipPeerConfig(name=f"phone{extension}", host=source[0], port=source[1], codecs=("PCMU", "PCMA"))
        leg = self._new_leg(peer)
        leg.role = Role.EXTENSION
        leg.accept_invite(transaction, request, source)
        leg.number = extension
        config = self.calls.config.extension(extension)
        leg.display_name = config.name if config else extension
        self.legs[leg.call_id] = leg
        uri = request.uri
        dialled = uri.user if isinstance(uri, SipUri) and uri.user else ""
        self.calls.start_originating(leg, dialled)

    def phone_legs(self, extension: str) -> list[SipCallLeg]:
        """One leg per registered device of `extension`, to ring with its desk phone."""
        if self.registrar is None or self.rtp is None:
            return []
        legs = []
        for binding in self.registrar.contacts(extension):
            host, port = binding.source_address
            try:
                contact = parse_uri(binding.contact)
                peer = SipPeerConfig(name=f"phone{extension}", host=host, port=port, codecs=("PCMU", "PCMA"))
            except (ValueError, SipParseError):
                continue
            if not isinstance(contact, SipUri):
                continue
            leg = self._new_leg(peer)
            leg.role = Role.EXTENSION
            leg.number = extension
            extension_config = self.calls.config.extension(extension) if self.calls else None
            leg.display_name = extension_config.name if extension_config else extension
            leg.contact_uri = contact
            legs.append(leg)
        return legs

    def new_outbound_leg(self, peer_name: str) -> SipCallLeg | None:
        """A leg to trunk `peer_name` or to "sibling:NAME"; None when it cannot take a call
        (unknown, down, not registered, unresolved, or all its channels in use)."""
        if self.rtp is None or not self.links.available(peer_name):
            return None
        site_name = sibling_name(peer_name)
        if site_name is not None:
            site = self.links.sibling(site_name)
            if site is None:
                return None
            peer = sibling_peer(site, self.site)
            return self._new_leg(peer, self.links.destination(peer), kind=SiblingCallLeg)
        peer = next((p for p in self.config.peers if p.name == peer_name), None)
        if peer is None or self._legs_of(peer) >= peer.max_channels:
            return None
        return self._new_leg(peer, self.links.destination(peer))

    def register_leg(self, leg: SipCallLeg) -> None:
        self.legs[leg.call_id] = leg

    def _leg_closed(self, leg: SipCallLeg) -> None:
        if self.legs.get(leg.call_id) is leg:
            del self.legs[leg.call_id]

    @staticmethod
    def _to_tag(request: Request) -> str | None:
        try:
            return request.headers.to_address.tag
        except SipParseError:
            return None

    def _dialog_leg(self, request: Request) -> SipCallLeg | None:
        leg = self.legs.get(request.headers.call_id)
        return leg if leg is not None and leg.matches(request) else None

    def _in_dialog(self, transaction: ServerTransaction, request: Request, source: Address) -> None:
        """re-INVITE, UPDATE, BYE, REFER, INFO, NOTIFY of a call: its leg answers."""
        leg = self._dialog_leg(request)
        if leg is None:
            self.unknown_dialogs += 1
            log.info("event=sip_no_dialog method=%s source=%s:%d call_id=%r",
                     request.method, source[0], source[1], request.headers.call_id[:80])  # fmt: skip
            self._reply(transaction, request, 481)
            return
        leg.receive_request(transaction, request)

    def _notify(self, transaction: ServerTransaction, request: Request, source: Address) -> None:
        """In a call: its leg (we hold no subscription there, so 481). Outside one: a
        provider's unsolicited message-waiting NOTIFY is acknowledged, others get 481."""
        if self._to_tag(request) is not None:
            self._in_dialog(transaction, request, source)
            return
        event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        known = self.peer_for(source) is not None
        self._reply(transaction, request, 200 if known and event == "message-summary" else 481)

    def _cancel(self, transaction: ServerTransaction, request: Request, source: Address) -> None:
        """A CANCEL ends the inbound INVITE it matches (RFC 3261 9.2: its transaction, not
        just its Call-ID); our own outbound legs and anything unmatched get 481."""
        leg = self.legs.get(request.headers.call_id)
        if leg is None or not leg.cancelled_by(transaction, request):
            DIALOG_EVENTS["cancel_unmatched"] += 1
            log.info("event=sip_cancel_unmatched source=%s:%d call_id=%r",
                     source[0], source[1], request.headers.call_id[:80])  # fmt: skip
            self._reply(transaction, request, 481)
            return
        self._reply(transaction, request, 200)
        leg.on_cancel()


def _called_number(request: Request, did_from: str) -> str:
    """The number called: the Request-URI's user part, or the To header's (`did_from = "to"`:
    a registering provider sends the INVITE to our registered contact, the DID is in To)."""
    uri = request.uri
    if did_from == "to":
        try:
            uri = request.headers.to_address.uri
        except SipParseError:
            return ""
    return uri.user if isinstance(uri, SipUri) and uri.user else ""


class LegTable(dict[str, SipCallLeg]):
    """Legs by Call-ID that also count them per peer: the channel limit is checked on every
    INVITE, and a scan of every leg was a tenth of the Python time at 100 calls/s."""

    def __init__(self) -> None:
        super().__init__()
        self._per_peer: dict[str, int] = {}

    def __setitem__(self, call_id: str, leg: SipCallLeg) -> None:
        old = self.get(call_id)
        if old is not None:
            self._uncount(old)
        super().__setitem__(call_id, leg)
        self._per_peer[leg.peer.name] = self._per_peer.get(leg.peer.name, 0) + 1

    def __delitem__(self, call_id: str) -> None:
        self._uncount(self[call_id])
        super().__delitem__(call_id)

    def _uncount(self, leg: SipCallLeg) -> None:
        left = self._per_peer.get(leg.peer.name, 0) - 1
        if left > 0:
            self._per_peer[leg.peer.name] = left
        else:
            self._per_peer.pop(leg.peer.name, None)

    def count(self, peer_name: str) -> int:
        return self._per_peer.get(peer_name, 0)
