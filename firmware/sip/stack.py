"""The SIP stack's asyncio shell: UDP transport, parser, transaction layer, timers.

Everything with rules lives in sans-I/O modules (message parsing, `TransactionLayer`,
digest auth, the brute-force guard); this shell only moves datagrams and fires timers.
Bad input never escapes it: a datagram that does not parse is counted and, when it is a
request whose Via can be read, answered 400 statelessly; anything else is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.sip.guard import AuthGuard
from firmware.sip.headers import Headers
from firmware.sip.message import Request, Response, make_response, parse_message
from firmware.sip.message_errors import SipParseError
from firmware.sip.transaction import (
    DeliverRequest,
    DeliverResponse,
    DeliverTimeout,
    DeliverTransportError,
    Send,
    ServerTransaction,
    Terminated,
    TransactionLayer,
)

log = logging.getLogger(__name__)

Address = tuple[str, int]
RequestHandler = Callable[["ServerTransaction | None", Request, Address], None]
_DEFAULT_SIP_PORT = 5060


class Envelope:
    """A parsed message as the transaction layer sees it (branch, sent-by, methods)."""

    __slots__ = ("branch", "cseq_method", "message", "method", "sent_by", "status")

    def __init__(self, message: Request | Response) -> None:
        self.message = message
        headers = message.headers
        via = headers.top_via
        self.branch = via.branch or ""
        self.sent_by = f"{via.host.lower()}:{via.port or _DEFAULT_SIP_PORT}"
        if isinstance(message, Request):
            self.status: int | None = None
            self.method = message.method
            self.cseq_method = message.method
        else:
            self.status = message.status
            self.cseq_method = headers.cseq.method
            self.method = self.cseq_method

    def to_bytes(self) -> bytes:
        return self.message.to_bytes()


def build_ack(invite: Envelope, response: Envelope) -> Envelope:
    """RFC 3261 17.1.1.3: the ACK a client transaction sends for a non-2xx final response."""
    request = invite.message
    assert isinstance(request, Request)
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    for name in ("From", "Call-ID"):
        headers.add(name, request.headers.get(name))
    headers.add("To", response.message.headers.get("To"))
    headers.add("CSeq", f"{request.headers.cseq.number} ACK")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    return Envelope(Request("ACK", request.uri, headers))


def build_trying(invite: Envelope) -> Envelope:
    request = invite.message
    assert isinstance(request, Request)
    return Envelope(make_response(request, 100))


@dataclass
class StackCounters:
    datagrams_in: int = 0
    datagrams_out: int = 0
    malformed: int = 0
    answered_400: int = 0
    blocked: int = 0
    send_errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class SipStack(asyncio.DatagramProtocol):
    """One UDP socket, one transaction layer, and the transaction user's callbacks."""

    def __init__(self, on_request: RequestHandler, guard: AuthGuard | None = None) -> None:
        self.on_request = on_request
        self.guard = guard
        self.counters = StackCounters()
        self.layer = TransactionLayer(build_ack=build_ack, build_trying=build_trying)
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: dict[int, asyncio.Future[Response]] = {}
        self._listeners: dict[int, Callable[[Response], None]] = {}
        self.local_address: Address = ("0.0.0.0", 0)

    # ----- life cycle ----------------------------------------------------------------------

    async def start(self, host: str, port: int) -> Address:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport  # type: ignore[assignment]
        self.local_address = transport.get_extra_info("sockname")[:2]
        log.info("event=sip_listening udp=%s:%d", *self.local_address)
        return self.local_address

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction timers handle the silence.
        self.counters.send_errors += 1

    # ----- receiving -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.counters.datagrams_in += 1
        source: Address = (addr[0], addr[1])
        now = time.monotonic()
        if self.guard is not None and self.guard.is_blocked(source[0], now):
            self.counters.blocked += 1
            return
        if data.strip(b"\r\n") == b"":
            return  # RFC 5626 keep-alive (CRLF)
        try:
            message = parse_message(data)
            envelope = Envelope(message)
        except SipParseError as error:
            self._malformed(error, source)
            return
        if isinstance(message, Request):
            self._note_source(message, source)
        try:
            actions = self.layer.receive(envelope, source, now)
        except Exception:
            log.exception("event=sip_receive_failed source=%s:%d", *source)
            return
        self._run(actions)

    def _note_source(self, request: Request, source: Address) -> None:
        """RFC 3261 18.2.1 and RFC 3581: where the request really came from, in its Via."""
        vias = request.headers.get_all("Via")
        via = request.headers.top_via
        params = dict(via.params)
        changed = False
        if via.host != source[0]:
            params["received"] = source[0]
            changed = True
        if via.has_rport:
            params["rport"] = str(source[1])
            params["received"] = source[0]
            changed = True
        if changed:
            from firmware.sip.headers_values import Via

            vias[0] = str(Via(via.transport, via.host, via.port, params, via.protocol))
            request.headers.remove("Via")
            for value in vias:
                request.headers.add("Via", value)

    def _malformed(self, error: SipParseError, source: Address) -> None:
        self.counters.malformed += 1
        reason = str(error).split(":")[0][:40]
        self.counters.by_reason[reason] = self.counters.by_reason.get(reason, 0) + 1
        log.info(
            "event=sip_malformed source=%s:%d reason=%r", source[0], source[1], str(error)[:120]
        )
        if error.status_hint is None or error.headers is None:
            return
        try:
            error.headers.top_via  # noqa: B018 - a response needs somewhere to go
            response = make_response(error.headers, error.status_hint, _bad_request_reason(error))
        except SipParseError:
            return
        self.counters.answered_400 += 1
        self._send(response.to_bytes(), source)

    # ----- sending -------------------------------------------------------------------------

    def _send(self, data: bytes, destination: Address) -> None:
        if self._transport is None:
            return
        try:
            self._transport.sendto(data, destination)
            self.counters.datagrams_out += 1
        except OSError:
            self.counters.send_errors += 1

    def send_raw(self, data: bytes, destination: Address) -> None:
        """Outside any transaction: the ACK for a 2xx (RFC 3261 13.2.2.4)."""
        self._send(data, destination)

    def respond(self, transaction: ServerTransaction, response: Response) -> None:
        self._run(self.layer.respond(transaction, Envelope(response), time.monotonic()))

    async def request(
        self,
        request: Request,
        destination: Address,
        on_response: Callable[[Response], None] | None = None,
    ) -> Response:
        """Send a request in a client transaction; the final response (408 on timeout).

        `on_response` sees every response of the transaction as it comes: provisionals,
        the final, and retransmitted 2xx finals (whose ACK the dialog sends again).
        """
        transaction, actions = self.layer.send_request(
            Envelope(request), destination, time.monotonic()
        )
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[id(transaction)] = future
        if on_response is not None:
            self._listeners[id(transaction)] = on_response
        self._run(actions)
        try:
            return await future
        finally:
            self._waiting.pop(id(transaction), None)

    # ----- actions and timers --------------------------------------------------------------

    def _run(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action.message.to_bytes(), action.destination)
            elif isinstance(action, DeliverRequest):
                try:
                    self.on_request(action.transaction, action.request.message, action.source)
                except Exception:
                    log.exception("event=sip_request_handler_failed")
            elif isinstance(action, DeliverResponse):
                self._settle(action.transaction, action.response.message)
            elif isinstance(action, DeliverTimeout | DeliverTransportError):
                timeout = Response(408, "Request Timeout")
                self._settle(action.transaction, timeout)
            elif isinstance(action, Terminated):
                self._listeners.pop(id(action.transaction), None)
        self._arm_timer()

    def _settle(self, transaction: object, response: Response) -> None:
        listener = self._listeners.get(id(transaction))
        if listener is not None:
            try:
                listener(response)
            except Exception:
                log.exception("event=sip_response_listener_failed")
        future = self._waiting.get(id(transaction))
        if future is not None and not future.done() and response.status >= 200:
            future.set_result(response)

    def _arm_timer(self) -> None:
        deadline = self.layer.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(deadline - time.monotonic(), 0.0)
        self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._run(self.layer.poll(time.monotonic()))


def _bad_request_reason(error: SipParseError) -> str:
    """A short, safe reason phrase: no control characters from the input."""
    text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(error))[:60]
    return f"Bad Request ({text})" if error.status_hint == 400 else ""
