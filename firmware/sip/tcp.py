"""SIP over TCP and TLS (RFC 3261 §18, §26.2): stream framing and a pool of connections.

`StreamFramer` is sans-I/O: bytes in, whole messages / keep-alive pings / one framing error
out. On a stream, Content-Length is what separates messages (§18.3); a message without a
usable one, a start line that is not SIP, or a message over the size cap leaves the
stream impossible to re-synchronise, so the connection is closed after an answer.

`TcpTransport` owns the listening socket and every connection, inbound and outbound, keyed
by the remote address so that a request to a peer reuses the connection that peer opened
(or that we opened earlier). It knows nothing of SIP messages: the stack gives it bytes
and a target and gets whole frames back. Limits (message size, connections, idle time,
connect time, unsent bytes) keep one bad or slow peer from costing more than its socket.
TLS is the same transport with SSL contexts: asyncio does the handshake (bounded by the
connect timeout) and hands over the decrypted stream.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware.sip.message import stream_frame_length
from firmware.sip.message_errors import SipParseError

log = logging.getLogger(__name__)

Address = tuple[str, int]

_PING = b"\r\n\r\n"  # RFC 5626 §4.4.1: double-CRLF keep-alive ping ...
_PONG = b"\r\n"  # ... answered with a single CRLF
# A start line must name the SIP version (request line or status line); anything else on a
# fresh message boundary is not SIP, and waiting for a blank line would only waste memory.
_START_LINE = re.compile(rb"SIP/", re.IGNORECASE)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
MAX_MESSAGE = 65536
MAX_START_LINE = 8192  # a longer request line is not one we would take anyway


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """Per-stack limits; the defaults suit an office appliance (a few hundred phones)."""

    max_message: int = MAX_MESSAGE  # bytes of one message, head and body
    max_connections: int = 1000  # inbound and outbound together
    max_per_address: int = 32  # inbound from one IP: one host cannot take every slot
    idle_timeout: float = 300.0  # s without a byte either way; RFC 5626 pings come every 95-120 s
    connect_timeout: float = 5.0  # s to open an outbound connection
    max_unsent: int = 1 << 20  # bytes queued for a peer that does not read: then it is dropped

    def __post_init__(self) -> None:
        for name in ("max_message", "max_connections", "max_per_address", "idle_timeout", "connect_timeout", "max_unsent"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class TcpCounters:
    open: int = 0  # connections open now (a gauge), connecting ones included; TLS: handshaken
    accepted: int = 0
    connected: int = 0  # outbound connections made
    connect_failures: int = 0
    refused: int = 0  # inbound connections closed at once: over max_connections or blocked
    framing_errors: int = 0
    idle_closed: int = 0
    overflows: int = 0  # closed because max_unsent bytes were waiting
    keepalives: int = 0  # CRLF pings answered
    messages_in: int = 0
    messages_out: int = 0


# ------------------------------------------------------------------------------ framing


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole message, exactly as it arrived (leading CRLFs removed)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A double-CRLF keep-alive; the transport answers CRLF."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be cut into messages any more. `head` is the message head
    (start line to blank line) when one was complete, so a request can still be answered
    with `status` (400, or 513 for a message over the size cap)."""

    reason: str
    head: bytes | None
    status: int


StreamEvent = Frame | Ping | FramingError


class StreamFramer:
    """Cuts a SIP byte stream into messages (sans-I/O). After a FramingError it is dead."""

    __slots__ = ("_buffer", "dead", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self.dead = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[StreamEvent]:
        if self.dead:
            return []
        buffer = self._buffer
        buffer += data
        events: list[StreamEvent] = []
        while buffer:
            if buffer.startswith(b"\r"):
                if buffer.startswith(_PING):
                    del buffer[:4]
                    events.append(Ping())
                    continue
                if len(buffer) < 4 and _PING.startswith(buffer):
                    break  # may still become a ping
                if buffer.startswith(b"\r\n"):
                    del buffer[:2]  # a lone CRLF: a pong or padding (§7.5 says ignore it)
                    continue
            if not self._plausible_start(buffer):
                events.append(self._fail(f"not a SIP start line {bytes(buffer[:40])!r}", None, 400))
                break
            try:
                length = stream_frame_length(buffer)
            except SipParseError as error:
                events.append(self._fail(str(error), self._head(), 400))
                break
            if length is None:
                if len(buffer) > self.max_message:
                    events.append(self._fail(f"message over {self.max_message} bytes", self._head(), 513))
                break
            if length > self.max_message:
                events.append(self._fail(f"message of {length} bytes over {self.max_message}", self._head(), 513))
                break
            events.append(Frame(bytes(buffer[:length])))
            del buffer[:length]
        return events

    @staticmethod
    def _plausible_start(buffer: bytearray) -> bool:
        """Whether the buffer can still begin a SIP message: no control bytes in the start
        line, which names SIP/ once it is complete and is not longer than MAX_START_LINE."""
        line_end = buffer.find(b"\r\n", 0, MAX_START_LINE + 2)
        if line_end < 0:
            partial = bytes(buffer[: MAX_START_LINE + 1]).removesuffix(b"\r")
            return len(partial) <= MAX_START_LINE and _CONTROL.search(partial) is None
        start_line = bytes(buffer[:line_end])
        return _START_LINE.search(start_line) is not None and _CONTROL.search(start_line) is None

    def _head(self) -> bytes | None:
        end = self._buffer.find(b"\r\n\r\n")
        return bytes(self._buffer[: end + 4]) if end >= 0 else None

    def _fail(self, reason: str, head: bytes | None, status: int) -> FramingError:
        self.dead = True
        error = FramingError(reason, head, status)
        self._buffer.clear()
        return error


# ------------------------------------------------------------------------------ connections

OnFrame = Callable[[bytes, "TcpConnection"], None]
OnFramingError = Callable[["TcpConnection", FramingError], None]
OnAccept = Callable[[Address], bool]
OnFailure = Callable[[], None]


class TcpConnection(asyncio.Protocol):
    """One TCP connection carrying SIP, either way; `remote` is the peer's (host, port)."""

    def __init__(self, owner: TcpTransport, remote: Address | None, *, inbound: bool) -> None:
        self.owner = owner
        self.remote: Address = remote or ("", 0)
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(owner.limits.max_message)
        self.pending: list[tuple[bytes, OnFailure | None]] = []  # queued while connecting
        self.last_activity = time.monotonic()
        self.closed = False
        self._idle: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        direction = "in" if self.inbound else "out"
        return f"<TcpConnection {direction} {self.remote[0]}:{self.remote[1]}>"

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.closed and not self.transport.is_closing()

    # ----- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.inbound:
            peer = transport.get_extra_info("peername")
            self.remote = (peer[0], peer[1]) if peer else ("", 0)
        self.last_activity = time.monotonic()
        if not self.owner._made(self):
            return
        self._arm_idle()
        pending, self.pending = self.pending, []
        for data, on_failure in pending:
            self.owner._write(self, data, on_failure)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        for event in self.framer.feed(data):
            if isinstance(event, Frame):
                self.owner.counters.messages_in += 1
                self.owner._on_frame(event.data, self)
            elif isinstance(event, Ping):
                self.owner.counters.keepalives += 1
                self.write(_PONG)
            else:
                self.owner._framing_error(self, event)
            if self.closed:
                return

    def eof_received(self) -> bool:
        return False  # the peer is done: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()

    # ----- used by the transport and the stack ------------------------------------------

    def write(self, data: bytes) -> bool:
        """Queue `data` on the socket; False when the connection is no longer usable."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return False
        transport.write(data)
        self.last_activity = time.monotonic()
        if transport.get_write_buffer_size() > self.owner.limits.max_unsent:
            self.owner.counters.overflows += 1
            log.warning("event=sip_%s_overflow remote=%s:%d unsent=%d", self.owner.name, *self.remote,
                        transport.get_write_buffer_size())  # fmt: skip
            transport.abort()
            self._gone()
        return True

    def close(self) -> None:
        """Close after what is queued has been written (a 400 before the end, say)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self._gone()

    def fail_pending(self) -> None:
        pending, self.pending = self.pending, []
        for _, on_failure in pending:
            if on_failure is not None:
                self.owner._report_failure(on_failure)

    def _gone(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.fail_pending()
        self.owner._forget(self)

    def _arm_idle(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.last_activity + self.owner.limits.idle_timeout - time.monotonic()
        self._idle = loop.call_later(max(delay, 0.0), self._check_idle)

    def _check_idle(self) -> None:
        """Re-armed from the last activity, so traffic costs no timer work."""
        self._idle = None
        if self.closed:
            return
        if time.monotonic() - self.last_activity >= self.owner.limits.idle_timeout:
            self.owner.counters.idle_closed += 1
            log.info("event=sip_%s_idle_closed remote=%s:%d", self.owner.name, *self.remote)
            self.close()
            return
        self._arm_idle()


class TcpTransport:
    """The listening socket and every connection of one SIP stack over TCP, or over TLS
    when given SSL contexts (`ssl_server` to listen, `ssl_client` to connect)."""

    def __init__(
        self,
        on_frame: OnFrame,
        on_framing_error: OnFramingError,
        *,
        limits: TcpLimits | None = None,
        counters: TcpCounters | None = None,
        on_accept: OnAccept | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        name: str = "tcp",
    ) -> None:
        self.name = name  # "tcp" or "tls": the Via token, the log prefix
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.on_frame = on_frame
        self.on_framing_error = on_framing_error
        self.on_accept = on_accept
        self.limits = limits or TcpLimits()
        self.counters = counters if counters is not None else TcpCounters()
        self.local_address: Address = ("0.0.0.0", 0)
        self._server: asyncio.Server | None = None
        self._connections: set[TcpConnection] = set()
        self._by_remote: dict[Address, TcpConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> Address:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpConnection(self, None, inbound=True), host, port,
            ssl=self.ssl_server,
            ssl_handshake_timeout=self.limits.connect_timeout if self.ssl_server else None,
        )  # fmt: skip
        self.local_address = self._server.sockets[0].getsockname()[:2]
        return self.local_address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._connections):
            connection.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._connections)

    def connection_to(self, remote: Address) -> TcpConnection | None:
        connection = self._by_remote.get(remote)
        return connection if connection is not None and not connection.closed else None

    def send(
        self,
        data: bytes,
        target: Address,
        connection: TcpConnection | None = None,
        on_failure: OnFailure | None = None,
    ) -> None:
        """Write on `connection` if it is open, else on the one to `target`, else connect.

        Never blocks: a new connection is opened in the background and `data` waits for
        it; `on_failure` is called (soon, never from inside this call) if it cannot be sent.
        """
        if connection is not None and connection.is_open:
            self._write(connection, data, on_failure)
            return
        existing = self.connection_to(target)
        if existing is None:
            existing = self._open(target)
            if existing is None:
                if on_failure is not None:
                    self._report_failure(on_failure)
                return
        if existing.transport is None:
            existing.pending.append((data, on_failure))
            return
        self._write(existing, data, on_failure)

    def _write(self, connection: TcpConnection, data: bytes, on_failure: OnFailure | None) -> None:
        if connection.write(data):
            self.counters.messages_out += 1
        elif on_failure is not None:
            self._report_failure(on_failure)

    def _open(self, target: Address) -> TcpConnection | None:
        if self.ssl_server is not None and self.ssl_client is None:
            log.warning("event=sip_%s_connect_refused remote=%s:%d reason=no_client_context", self.name, *target)
            self.counters.connect_failures += 1
            return None
        if len(self._connections) >= self.limits.max_connections:
            log.warning("event=sip_%s_connect_refused remote=%s:%d reason=max_connections", self.name, *target)
            self.counters.connect_failures += 1
            return None
        connection = TcpConnection(self, target, inbound=False)
        self._add(connection)
        task = asyncio.get_running_loop().create_task(self._connect(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return connection

    async def _connect(self, connection: TcpConnection) -> None:
        host, port = connection.remote
        loop = asyncio.get_running_loop()
        secure = self.ssl_client is not None
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: connection, host, port,
                    ssl=self.ssl_client, server_hostname=host if secure else None,
                ),
                self.limits.connect_timeout,  # the TLS handshake included
            )  # fmt: skip
        except (OSError, TimeoutError) as error:  # ssl.SSLError is an OSError
            self.counters.connect_failures += 1
            log.warning("event=sip_%s_connect_failed remote=%s:%d error=%r", self.name, host, port, str(error)[:80] or type(error).__name__)
            connection._gone()
            return
        except asyncio.CancelledError:
            connection._gone()
            raise
        self.counters.connected += 1

    # ----- called by connections --------------------------------------------------------

    def _made(self, connection: TcpConnection) -> bool:
        """A connection is up; False when an inbound one is refused (and closed)."""
        if not connection.inbound:
            return True
        same_host = sum(1 for c in self._connections if c.inbound and c.remote[0] == connection.remote[0])
        accepted = (
            len(self._connections) < self.limits.max_connections
            and same_host < self.limits.max_per_address
            and (self.on_accept is None or self.on_accept(connection.remote))
        )
        if not accepted:
            self.counters.refused += 1
            log.warning("event=sip_%s_refused remote=%s:%d open=%d", self.name, *connection.remote, len(self._connections))
            assert connection.transport is not None
            connection.transport.abort()
            connection.closed = True
            return False
        self.counters.accepted += 1
        self._add(connection)
        return True

    def _add(self, connection: TcpConnection) -> None:
        self._connections.add(connection)
        self._by_remote[connection.remote] = connection  # the newest one to a peer wins
        self.counters.open = len(self._connections)

    def _forget(self, connection: TcpConnection) -> None:
        self._connections.discard(connection)
        if self._by_remote.get(connection.remote) is connection:
            del self._by_remote[connection.remote]
        self.counters.open = len(self._connections)

    def _on_frame(self, data: bytes, connection: TcpConnection) -> None:
        try:
            self.on_frame(data, connection)
        except Exception:
            log.exception("event=sip_%s_frame_handler_failed remote=%s:%d", self.name, *connection.remote)

    def _framing_error(self, connection: TcpConnection, error: FramingError) -> None:
        self.counters.framing_errors += 1
        log.warning("event=sip_%s_framing_error remote=%s:%d reason=%r", self.name, *connection.remote, error.reason[:120])
        try:
            self.on_framing_error(connection, error)
        except Exception:
            log.exception("event=sip_tcp_framing_handler_failed")
        connection.close()

    def _report_failure(self, on_failure: OnFailure) -> None:
        asyncio.get_running_loop().call_soon(on_failure)
