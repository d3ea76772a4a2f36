"""The SIP stack's asyncio shell: UDP, TCP and TLS transports, parser, transaction layer, timers.

Everything with rules lives in sans-I/O modules (message parsing, stream framing,
`TransactionLayer`, digest auth, the brute-force guard); this shell only moves messages and
fires timers. Bad input never escapes it: a message that does not parse is counted and,
when it is a request whose Via can be read, answered 400 statelessly; anything else is
dropped. A TCP or TLS stream that cannot be framed any more is answered (if a request head
was read) and closed (see firmware/sip/tcp.py).

Addresses: over UDP the transaction user sees plain (host, port) tuples, as before. A
message that came over TCP or TLS is attributed to a `Peer`: the same (host, port) tuple
that also carries `transport` ("tcp", "tls") and the connection it arrived on, so handing
it back to `request()` or `send_raw()` (a BYE in a dialog, say) goes back the same way.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.sip import gc_policy
from firmware.sip.guard import AuthGuard
from firmware.sip.headers import Headers
from firmware.sip.message import Request, Response, make_response, parse_message
from firmware.sip.message_errors import SipParseError
from firmware.sip.tcp import FramingError, TcpConnection, TcpCounters, TcpLimits, TcpTransport
from firmware.sip.timers import TimerSettings
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
AFTER_LOAD_DELAY_S = 5.0  # quiet this long after the last transaction: see _note_load
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
TRANSPORTS = ("udp", "tcp", "tls")
# The sent-protocol of a Via value: "SIP/2.0/UDP" (LWS allowed around the slashes).
_VIA_PROTOCOL = re.compile(r"^\s*SIP\s*/\s*2\.0\s*/\s*[A-Za-z0-9.!%*_+`'~-]+", re.IGNORECASE)
_VIA_PROTOCOL_BYTES = re.compile(
    rb"^((?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*)[A-Za-z0-9.!%*_+`'~-]+",
    re.IGNORECASE | re.MULTILINE,
)


class Peer(tuple[str, int]):
    """A (host, port) that also says how to reach it: unpacks, indexes and compares like
    the plain tuple, so transaction users that only read source[0] keep working.

    `connection` is the TCP connection a request arrived on (responses go back on it,
    RFC 3261 §18.2.2); `fallback` is where to connect when it is gone (the source address
    with the Via sent-by port).
    """

    transport: str
    connection: TcpConnection | None
    fallback: Address | None

    def __new__(
        cls,
        host: str,
        port: int,
        transport: str = "udp",
        connection: TcpConnection | None = None,
        fallback: Address | None = None,
    ) -> Peer:
        peer = super().__new__(cls, (host, port))
        peer.transport = transport
        peer.connection = connection
        peer.fallback = fallback
        return peer

    def __repr__(self) -> str:
        return f"Peer({self[0]!r}, {self[1]}, {self.transport!r})"


def transport_of(destination: Address, transport: str | None = None) -> str:
    """The transport to use: the one asked for, else the one the address came by, else UDP."""
    chosen = (transport or getattr(destination, "transport", "udp")).lower()
    if chosen not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    return chosen


def set_via_transport(request: Request, transport: str) -> None:
    """Make the top Via name the transport the request really leaves on (§18.1.1)."""
    vias = request.headers.get_all("Via")
    if not vias:
        return
    rewritten = _VIA_PROTOCOL.sub(f"SIP/2.0/{transport.upper()}", vias[0], count=1)
    if rewritten != vias[0]:
        vias[0] = rewritten
        request.headers.set("Via", vias)


def set_via_transport_bytes(data: bytes, transport: str) -> bytes:
    """The same for a request already in wire form (an ACK for a 2xx); responses unchanged."""
    if data[:4].upper() == b"SIP/":
        return data
    head_end = data.find(b"\r\n\r\n")
    head = data if head_end < 0 else data[:head_end]
    token = transport.upper().encode()
    rewritten = _VIA_PROTOCOL_BYTES.sub(lambda match: match.group(1) + token, head, count=1)
    return data if rewritten == head else rewritten + data[len(head) :]


class Envelope:
    """A parsed message as the transaction layer sees it (branch, sent-by, methods).

    Its wire form is built once: a transaction's retransmissions are the same bytes
    (RFC 3261 §17), and `freeze` turns the envelope into those bytes alone.
    """

    __slots__ = ("_wire", "branch", "cseq_method", "message", "method", "sent_by", "status")

    def __init__(self, message: Request | Response) -> None:
        self.message = message
        self._wire: bytes | None = None
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
        wire = self._wire
        if wire is None:
            wire = self._wire = self.message.to_bytes()
        return wire


def freeze(message: Envelope | bytes) -> bytes:
    """The transaction layer's hook for a transaction that only waits out its timers.

    Only the wire form stays, as plain bytes (which the garbage collector does not track);
    the parsed message, its header lists and views are freed unless the transaction user
    still holds them. `_run` sends bytes as they are.
    """
    if type(message) is bytes:
        return message
    return message.to_bytes()


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
    tcp: TcpCounters = field(default_factory=TcpCounters)
    tls: TcpCounters = field(default_factory=TcpCounters)


class SipStack(asyncio.DatagramProtocol):
    """One UDP socket and a TCP listener on the same host:port (and optionally a TLS one),
    one transaction layer, and the transaction user's callbacks.

    TLS: `tls_server` (a server SSLContext with our certificate) listens on `tls_port`;
    `tls_client` (a client SSLContext: the CAs we trust) lets requests go out over TLS.
    """

    def __init__(
        self,
        on_request: RequestHandler,
        guard: AuthGuard | None = None,
        *,
        tcp: bool = True,
        tcp_limits: TcpLimits | None = None,
        timer_settings: TimerSettings | None = None,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
    ) -> None:
        self.on_request = on_request
        self.guard = guard
        self.counters = StackCounters()
        self.layer = TransactionLayer(
            build_ack=build_ack, build_trying=build_trying, settings=timer_settings, freeze=freeze
        )
        self.tcp: TcpTransport | None = None
        if tcp:
            self.tcp = TcpTransport(
                self._stream_received,
                self._stream_framing_error,
                limits=tcp_limits,
                counters=self.counters.tcp,
                on_accept=self._accept_connection,
            )
        self.tls: TcpTransport | None = None
        if tls_server is not None or tls_client is not None:
            self.tls = TcpTransport(
                self._stream_received,
                self._stream_framing_error,
                limits=tcp_limits,
                counters=self.counters.tls,
                on_accept=self._accept_connection,
                ssl_server=tls_server,
                ssl_client=tls_client,
                name="tls",
            )
        self._streams = {"tcp": self.tcp, "tls": self.tls}
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the layer deadline (monotonic) self._timer was armed for
        self._waiting: dict[int, asyncio.Future[Response]] = {}
        self._listeners: dict[int, Callable[[Response], None]] = {}
        self._running = False
        self._loaded = False  # transactions were alive since the last after_load
        self._after_load: asyncio.TimerHandle | None = None
        self.local_address: Address = ("0.0.0.0", 0)
        self.listening: list[str] = []  # "udp:host:port", "tcp:host:port"

    # ----- life cycle ----------------------------------------------------------------------

    async def start(
        self, host: str, port: int, *, tls_port: int | None = None, attempts: int = 5
    ) -> Address:
        """Listen on UDP and TCP on the same host:port, and on TLS if a server context was given.

        With port 0 the UDP socket picks the port and TCP takes the same one; if that port is
        taken on TCP, another is tried (up to `attempts` times). TLS listens on `tls_port`
        (default: the SIP port + 1, as 5061 follows 5060; any free port when port is 0).
        """
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
            self._transport = transport  # type: ignore[assignment]
            self.local_address = transport.get_extra_info("sockname")[:2]
            if self.tcp is None:
                break
            try:
                await self.tcp.listen(host, self.local_address[1])
                break
            except OSError:
                transport.close()
                self._transport = None
                if port != 0 or attempt == attempts - 1:
                    raise
        shown = "{}:{}:{}"
        self.listening = [shown.format("udp", *self.local_address)]
        if self.tcp is not None:
            self.listening.append(shown.format("tcp", *self.local_address))
        if self.tls is not None and self.tls.ssl_server is not None:
            if tls_port is None:
                tls_port = port + 1 if port else 0
            try:
                tls_address = await self.tls.listen(host, tls_port)
            except BaseException:
                await self.stop()
                raise
            self.listening.append(shown.format("tls", *tls_address))
        self._running = True
        log.info("event=sip_listening on=%s", ",".join(self.listening))
        return self.local_address

    async def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._after_load is not None:
            self._after_load.cancel()
            self._after_load = None
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for stream in (self.tcp, self.tls):
            if stream is not None:
                await stream.close()

    def transport_status(self) -> dict[str, Any]:
        """For the service's status: where we listen and what the TCP (and TLS) side is doing."""
        status: dict[str, Any] = {"listening": list(self.listening)}
        for name, stream in self._streams.items():
            if stream is not None:
                status[name] = dict(vars(stream.counters))
        return status

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

    # ----- receiving over TCP ------------------------------------------------------------------

    def _accept_connection(self, remote: Address) -> bool:
        if self.guard is not None and self.guard.is_blocked(remote[0], time.monotonic()):
            self.counters.blocked += 1
            return False
        return True

    def _stream_received(self, data: bytes, connection: TcpConnection) -> None:
        """One whole message cut from a TCP/TLS stream (firmware/sip/tcp.py did the framing)."""
        host, port = connection.remote
        kind = connection.owner.name
        now = time.monotonic()
        if self.guard is not None and self.guard.is_blocked(host, now):
            self.counters.blocked += 1
            connection.close()
            return
        try:
            message = parse_message(data, stream=True)
            envelope = Envelope(message)
        except SipParseError as error:
            # Framed by Content-Length, so the stream is still in step: answer, keep it open.
            self._malformed(error, Peer(host, port, kind, connection))
            return
        if isinstance(message, Request):
            self._note_source(message, (host, port))
            fallback = (host, message.headers.top_via.port or _DEFAULT_PORTS[kind])
            source = Peer(host, port, kind, connection, fallback)
        else:
            source = Peer(host, port, kind, connection)
        try:
            actions = self.layer.receive(envelope, source, now, reliable=True)
        except Exception:
            log.exception("event=sip_receive_failed source=%s:%s:%d", kind, host, port)
            return
        self._run(actions)

    def _stream_framing_error(self, connection: TcpConnection, error: FramingError) -> None:
        """The stream is lost; a request whose head we read hears why before the close."""
        self.counters.malformed += 1
        reason = f"{connection.owner.name} framing"
        self.counters.by_reason[reason] = self.counters.by_reason.get(reason, 0) + 1
        if error.head is None:
            return
        try:
            parsed = parse_message(error.head)
            if isinstance(parsed, Response):
                return
            headers = parsed.headers
        except SipParseError as parse_error:
            if parse_error.status_hint is None or parse_error.headers is None:
                return
            headers = parse_error.headers
        try:
            headers.top_via  # noqa: B018 - a response needs somewhere to go
        except SipParseError:
            return
        text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in error.reason)[:60]
        phrase = "Bad Request" if error.status == 400 else "Message Too Large"
        response = make_response(headers, error.status, f"{phrase} ({text})")
        if error.status == 400:
            self.counters.answered_400 += 1
        connection.write(response.to_bytes())

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

    def _send(self, data: bytes, destination: Address, transaction: Any = None) -> None:
        if type(destination) is Peer and destination.transport != "udp":
            self._send_stream(data, destination, transaction)
            return
        if self._transport is None:
            return
        try:
            self._transport.sendto(data, destination)
            self.counters.datagrams_out += 1
        except OSError:
            self.counters.send_errors += 1

    def _send_stream(self, data: bytes, peer: Peer, transaction: Any) -> None:
        if transaction is not None:
            on_failure = lambda: self._transport_failed(transaction)  # noqa: E731
        else:
            on_failure = self._raw_send_failed
        stream = self._streams.get(peer.transport)
        if stream is None or not self._running:
            log.warning("event=sip_send_failed transport=%s reason=not_available", peer.transport)
            asyncio.get_running_loop().call_soon(on_failure)
            return
        target = peer.fallback or (peer[0], peer[1])
        stream.send(data, target, peer.connection, on_failure)

    def _transport_failed(self, transaction: Any) -> None:
        """A TCP/TLS connection could not be made or was gone: §17's transport error."""
        self.counters.send_errors += 1
        if self._running:
            self._run(self.layer.transport_error(transaction, time.monotonic()))

    def _raw_send_failed(self) -> None:
        self.counters.send_errors += 1

    def send_raw(self, data: bytes, destination: Address, transport: str | None = None) -> None:
        """Outside any transaction: the ACK for a 2xx (RFC 3261 13.2.2.4).

        `transport` "udp", "tcp" or "tls"; by default the one `destination` came by (a `Peer`),
        else UDP. A request's top Via is rewritten to name it.
        """
        kind = transport_of(destination, transport)
        data = set_via_transport_bytes(data, kind)
        self._send(data, self._destination(destination, kind))

    @staticmethod
    def _destination(destination: Address, transport: str) -> Address:
        """Tag `destination` for the transport layer: a Peer for TCP/TLS, a plain tuple for UDP."""
        if transport != "udp":
            if type(destination) is Peer and destination.transport == transport:
                return destination
            return Peer(destination[0], destination[1], transport)
        return (destination[0], destination[1]) if type(destination) is Peer else destination

    def respond(self, transaction: ServerTransaction, response: Response) -> None:
        self._run(self.layer.respond(transaction, Envelope(response), time.monotonic()))

    async def request(
        self,
        request: Request,
        destination: Address,
        on_response: Callable[[Response], None] | None = None,
        *,
        transport: str | None = None,
    ) -> Response:
        """Send a request in a client transaction; the final response (408 on timeout, 503
        when a TCP/TLS connection cannot be made).

        `on_response` sees every response of the transaction as it comes: provisionals,
        the final, and retransmitted 2xx finals (whose ACK the dialog sends again).
        `transport` is "udp", "tcp" or "tls"; by default the one `destination` came by (a `Peer`
        handed to the TU with a request), else UDP. The top Via is rewritten to name it, and
        over TCP/TLS nothing is retransmitted (the layer's reliable mode).
        """
        kind = transport_of(destination, transport)
        set_via_transport(request, kind)
        transaction, actions = self.layer.send_request(
            Envelope(request),
            self._destination(destination, kind),
            time.monotonic(),
            reliable=kind != "udp",
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
                message = action.message
                data = message if type(message) is bytes else message.to_bytes()
                self._send(data, action.destination, action.transaction)
            elif isinstance(action, DeliverRequest):
                try:
                    self.on_request(action.transaction, action.request.message, action.source)
                except Exception:
                    log.exception("event=sip_request_handler_failed")
            elif isinstance(action, DeliverResponse):
                self._settle(action.transaction, action.response.message)
            elif isinstance(action, DeliverTimeout):
                self._settle(action.transaction, Response(408, "Request Timeout"))
            elif isinstance(action, DeliverTransportError):
                self._settle(action.transaction, Response(503, "Service Unavailable (transport error)"))
            elif isinstance(action, Terminated):
                self._listeners.pop(id(action.transaction), None)
        self._arm_timer()
        self._note_load()

    def _note_load(self) -> None:
        """Once the last transaction has gone and it stays quiet a while, let the garbage
        collector and the allocator tidy up (firmware/sip/gc_policy.py: after_load)."""
        if len(self.layer):
            self._loaded = True
            return
        if not self._loaded or self._after_load is not None or not self._running:
            return
        self._loaded = False
        delay = max(AFTER_LOAD_DELAY_S, gc_policy.release_due_in())
        self._after_load = asyncio.get_running_loop().call_later(delay, self._quiet)

    def _quiet(self) -> None:
        self._after_load = None
        if len(self.layer):
            self._loaded = True  # busy again: wait for the next lull
            return
        gc_policy.after_load()

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
        """Wake up for the layer's next deadline. An armed wake-up that is not later than
        that deadline stays: it polls (finding nothing, or what is due) and re-arms. So
        the loop's timer is replaced only when a deadline comes earlier than the armed one,
        not after every message (that was 2 % of the Python time at 100 calls/s)."""
        deadline = self.layer.next_deadline()
        if deadline is None:
            return  # an armed wake-up finds nothing due and stops there
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(deadline - time.monotonic(), 0.0)
        self._timer_at = deadline
        self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._run(self.layer.poll(time.monotonic()))


def _bad_request_reason(error: SipParseError) -> str:
    """A short, safe reason phrase: no control characters from the input."""
    text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(error))[:60]
    return f"Bad Request ({text})" if error.status_hint == 400 else ""
