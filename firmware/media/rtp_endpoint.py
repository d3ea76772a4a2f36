"""The RTP media endpoint: SIP call legs' UDP sockets attached to mixer slots.

One `RtpEndpoint` per appliance is added to the mixer. Each SIP leg gets an `RtpLeg`: a UDP
socket on an even port of the configured range, an `RtpSession` (sans-I/O, in
`firmware.media.rtp`) and a mixer slot. The work is split so Python runs as little as
possible per packet (at 100 calls, 10,000 packets a second come in and as many go out):

- receiving (`drain`): the sockets are not the event loop's; they sit in one epoll set of
  ours. While the mixer clock runs, the tick reads them just before play-out (one
  `epoll_wait`, one read per waiting datagram); otherwise the loop wakes when any is
  readable, drains them all and rests `drain_interval`. A steady G.711 leg is in the fast
  lane (`firmware.media.rtp_fast`) and its socket is connected to its learnt source: its
  datagram is read with `recv_into` into a row of one buffer, and the packets of a round
  are checked and filed for all such legs at once with numpy; any other packet is read
  with `recvfrom` and goes through `RtpSession.receive`, which
  unpacks the header and stores the payload bytes in the jitter buffer. A completed RFC
  4733 digit is handed to the loop with `call_soon` (rare);
- per 20 ms tick (`read_into` / `write_from`, called by the mixer): the fast lane's frames
  are decoded for all its legs at once, the others are popped from their jitter buffers and
  decoded with one numpy call per codec (`decode_tick`); payloads are encoded per codec
  group straight into one packet buffer, the fast lane writes the headers of legs sending
  plain audio in numpy, other sessions write theirs (`RtpSession.packet_into`), and one
  `send` (connected) or `sendto` per leg goes straight on its socket;
- every few ticks: the sessions' timers (a digit whose end packets were lost, inactivity)
  for legs outside the fast lane, and steady legs are taken into it.

The lists the tick walks (sessions, slots, legs, codec groups) are rebuilt at most once per
tick, when legs opened, closed or moved. Ports are handed out from a pool of even ports
(RTCP's odd neighbour is kept out of other uses by the pairing, though RTCP itself is not
sent yet); a port that some other program holds is skipped, a freed port goes to the back
of the pool so late packets of an ended call do not land in the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import ipaddress
import logging
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware.media.codecs import new_codec
from firmware.media.mixer import FRAME_SAMPLES
from firmware.media.rtp import (
    HEADER_SIZE,
    PACKET_SIZE,
    CodecGroups,
    DigitReceived,
    MediaTimeout,
    RtpSession,
    codec_groups,
    decode_tick,
    encode_payloads,
)
from firmware.media.rtp_fast import RING, FastLane

log = logging.getLogger(__name__)

Address = tuple[Any, ...]  # (host, port) for IPv4, (host, port, flow, scope) for IPv6
DigitHandler = Callable[["RtpLeg", str], None]
TimeoutHandler = Callable[["RtpLeg"], None]

# The SIPp instances of the test bench listen here (SIP and media); RTP never takes them.
SIPP_BENCH_PORTS = frozenset((*range(6000, 6004), *range(6100, 6104)))
EXPEDITED_FORWARDING_TOS = 0xB8  # DSCP 46 (RFC 3246), what phones and switches expect for voice
_RX_ROW = 2048  # bytes read per datagram: anything longer than RTP over Ethernet is cut
SKIP_PLAY_OUT_MAX = RING  # dropped ticks played out unheard at most (a jitter buffer's reach)

_monotonic = time.monotonic


class RtpPortsExhaustedError(RuntimeError):
    """Every port of the RTP range is taken: no more call legs until one ends."""


@dataclass(frozen=True, slots=True)
class RtpPortRange:
    """The even UDP ports RTP may use: `start` up to `end` (not included), as in the config.

    A port is usable when neither it nor its RTCP neighbour (port + 1) is `excluded`.
    """

    start: int = 10000
    end: int = 20000
    excluded: frozenset[int] = SIPP_BENCH_PORTS

    def __post_init__(self) -> None:
        if not 1024 <= self.start < self.end <= 65536:
            raise ValueError(
                f"RTP ports {self.start}-{self.end}: the range must lie within 1024-65536 "
                "and end after it starts"
            )

    def ports(self) -> list[int]:
        first = self.start + (self.start & 1)
        return [
            port
            for port in range(first, self.end - 1, 2)
            if port not in self.excluded and port + 1 not in self.excluded
        ]


@dataclass(frozen=True, slots=True)
class RtpLegCounters:
    """What a leg sent and received, for logs, the call record and the status API."""

    local_port: int
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    packets_expected: int
    packets_lost: int
    late: int
    duplicates: int
    concealed: int
    underruns: int
    jitter_ms: float
    invalid: int
    unknown_payload: int
    foreign_source: int
    ssrc_changes: int
    unsent: int  # ticks with a packet but no address to send it to yet
    send_errors: int  # ICMP errors (port unreachable...) and refused sends
    timeouts: int


@functools.lru_cache(maxsize=256)
def _ip_version(host: str) -> int:
    """4 or 6; ValueError for anything but an IP address. Cached: `ipaddress` parsing costs
    ~5 µs, paid three times per leg at 100 calls/s otherwise (the same few hosts)."""
    return ipaddress.ip_address(host).version


def _open_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port); OSError as bind() raises it."""
    family = socket.AF_INET6 if _ip_version(host) == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # best effort: not every network honours it
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, EXPEDITED_FORWARDING_TOS)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, EXPEDITED_FORWARDING_TOS)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


_libc: Any = None
_UNSPECIFIED = (ctypes.c_ubyte * 16)()  # a sockaddr of family AF_UNSPEC (0)


def _dissolve(sock: socket.socket) -> None:
    """Undo `connect()` on a UDP socket: connect(2) to an AF_UNSPEC address, which Python's
    `socket.connect` cannot express. The port stays: RTP sockets are bound to a given port
    (the kernel keeps an explicitly bound port across a disconnect). OSError on failure."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = sock.fileno()
    if fd < 0:
        return  # closed already: nothing to undo
    if _libc.connect(fd, _UNSPECIFIED, ctypes.sizeof(_UNSPECIFIED)) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def _check_address(address: Address | None) -> None:
    if address is not None:
        _ip_version(address[0])
        if not 0 < address[1] < 65536:
            raise ValueError(f"RTP port {address[1]} is outside 1-65535")


class RtpPortPool:
    """Even ports for RTP legs: taken in order, a freed one queued at the back."""

    def __init__(self, port_range: RtpPortRange) -> None:
        self.port_range = port_range
        self._free: deque[int] = deque(port_range.ports())
        self._taken: set[int] = set()
        self.skipped_in_use = 0  # binds refused because another program holds the port

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def taken(self) -> frozenset[int]:
        return frozenset(self._taken)

    def bind(self, host: str) -> tuple[socket.socket, int]:
        """A socket on the next port that binds; a port in use elsewhere stays in the pool."""
        _ip_version(host)  # a hostname here is a configuration mistake: raise early
        for _attempt in range(len(self._free)):
            port = self._free.popleft()
            try:
                sock = _open_socket(host, port)
            except OSError as error:
                self._free.append(port)
                if error.errno == errno.EADDRINUSE:
                    self.skipped_in_use += 1
                    continue
                raise
            self._taken.add(port)
            return sock, port
        range_ = self.port_range
        raise RtpPortsExhaustedError(
            f"no free RTP port in {range_.start}-{range_.end} ({len(self._taken)} legs open)"
        )

    def release(self, port: int) -> None:
        if port not in self._taken:
            raise ValueError(f"RTP port {port} is not taken")
        self._taken.remove(port)
        self._free.append(port)


class RtpLeg:
    """One SIP leg's media: its socket, its RTP session and its mixer slot. Made by
    `RtpEndpoint.open_leg`, ended by `close_leg`. The endpoint reads and writes the socket.

    `context` is free for the owner (the SIP channel) to find its way back from callbacks.
    """

    __slots__ = (
        "_closed",
        "_endpoint",
        "_loop",
        "_receive",
        "_slot",
        "active",
        "context",
        "fast",
        "held",
        "lane_row",
        "local_host",
        "local_port",
        "on_digit",
        "on_timeout",
        "peer",
        "port_released",
        "send_errors",
        "send_fast",
        "session",
        "sock",
        "timeouts",
        "unsent",
        "unsent_bytes",
    )

    def __init__(
        self,
        endpoint: RtpEndpoint,
        slot: int,
        session: RtpSession,
        sock: socket.socket,
        local_host: str,
        local_port: int,
        on_digit: DigitHandler | None,
        on_timeout: TimeoutHandler | None,
        active: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._endpoint = endpoint
        self._loop = loop
        self._slot = slot
        self.session = session
        self._receive = session.receive  # bound once: the per-packet path skips a lookup
        self.lane_row = -1  # this leg's row in the endpoint's fast lane
        self.fast = False  # in the fast lane: its session's receive state is lent out
        self.send_fast = False  # ... and its numbering of what it sends
        self.sock = sock
        self.peer: Address | None = None  # the address the socket is connected to (fast lane)
        self.local_host = local_host
        self.local_port = local_port
        self.on_digit = on_digit
        self.on_timeout = on_timeout
        self.active = active
        self.held = False
        self.context: object = None
        self._closed = False
        self.port_released = False
        self.send_errors = 0
        self.unsent = 0
        self.unsent_bytes = 0
        self.timeouts = 0

    def datagram_received(self, data: bytes, addr: Address, now: float | None = None) -> None:
        """One datagram from the socket (the endpoint's drain calls this)."""
        digits = self._receive(data, addr, _monotonic() if now is None else now)
        if digits:
            self._loop.call_soon(self._report, digits)

    # ----- the fast lane's socket (FastLane.enter / leave call these) -----------------------

    def lane_joined(self) -> None:
        """Connect the socket to the learnt source while the leg is in the fast lane.

        The kernel then drops datagrams from anyone else (they would have been refused as
        foreign anyway), and `recv_into` / `send` skip the address: no sockaddr built or
        parsed, no route looked up per packet (~1 µs of the ~9 µs a leg costs per tick).
        A socket that cannot connect stays as it was: the lane works either way."""
        address = self.session.learned_remote
        if address is None or self._closed:
            return
        try:
            self.sock.connect(address)
        except OSError:
            self.peer = None
        else:
            self.peer = address
        self._endpoint._topology_changed()  # the tick's list of connected peers

    def lane_left(self) -> None:
        """Out of the lane: accept every source again (symmetric RTP may re-learn)."""
        if self.peer is None:
            return
        self.peer = None
        self._endpoint._topology_changed()
        if not self._closed:
            try:
                _dissolve(self.sock)
            except OSError as error:  # never seen; the leg must not stay filtered silently
                log.warning("event=rtp_disconnect_failed port=%d error=%s", self.local_port, error)

    # ----- control (signalling calls these) ------------------------------------------------

    @property
    def slot(self) -> int:
        """The mixer slot this leg's audio goes into and comes from."""
        return self._slot

    @slot.setter
    def slot(self, slot: int) -> None:
        """Move the leg to another slot (call control re-attaching it): from the next tick."""
        self._slot = slot
        self._endpoint._topology_changed()

    @property
    def remote(self) -> Address | None:
        """Where packets go now: the learnt source under symmetric RTP, else the SDP address."""
        return self.session.remote_address

    def set_remote(self, address: Address | None) -> None:
        """The far end's SDP address changed (answer, re-INVITE): learn the source again.

        An IP address only (ValueError otherwise): a host name would be resolved, blocking,
        inside the mixer tick."""
        _check_address(address)
        self._endpoint._lane.leave(self)
        self.session.set_remote(address)

    def set_codec(
        self, codec_name: str, payload_type: int, telephone_event_pt: int | None = None
    ) -> None:
        """A renegotiated codec (re-INVITE); G.722 gets a fresh coder state."""
        self._endpoint._lane.leave(self)
        self._endpoint._lane.leave_sending(self)
        self.session.set_codec(new_codec(codec_name), payload_type, telephone_event_pt)
        self._endpoint._topology_changed()  # the tick groups legs by codec

    def hold(self, held: bool) -> None:
        """Held: send nothing and do not watch for inactivity (the far end may go quiet).
        Resumed: send again and count inactivity from now."""
        self.held = held
        self._endpoint._lane.leave_sending(self)
        self.session.sending = not held
        if self.fast:
            self._endpoint._lane.hand_back_counters(self)
        if not held:
            self.session.restart_inactivity(_monotonic())

    def set_active(self, active: bool) -> None:
        """Active (answered): silence from the far end counts as inactivity, from now on."""
        self.active = active
        if self.fast:
            self._endpoint._lane.hand_back_counters(self)
        if active:
            self.session.restart_inactivity(_monotonic())

    def send_digits(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Queue digits to go out as RFC 4733 events ('!' is a flash); ValueError on a bad
        digit, RuntimeError when the far end did not accept telephone-event."""
        self._endpoint._lane.leave_sending(self)
        self.session.send_digits(digits, duration_ms=duration_ms, gap_ms=gap_ms)

    @property
    def counters(self) -> RtpLegCounters:
        if self.fast:
            self._endpoint._lane.hand_back_counters(self)
        if self.send_fast:
            self._endpoint._lane.hand_back_sent(self)
        session = self.session
        report = session.reception_report()
        return RtpLegCounters(
            local_port=self.local_port,
            packets_in=session.packets_received,
            bytes_in=session.bytes_received,
            packets_out=session.packets_sent - self.unsent,
            bytes_out=session.bytes_sent - self.unsent_bytes,
            packets_expected=report.packets_expected,
            packets_lost=report.packets_lost,
            late=report.late,
            duplicates=report.duplicates,
            concealed=report.concealed,
            underruns=report.underruns,
            jitter_ms=report.jitter_ms,
            invalid=report.invalid,
            unknown_payload=session.unknown_payload,
            foreign_source=report.foreign_source,
            ssrc_changes=session.ssrc_changes,
            unsent=self.unsent,
            send_errors=self.send_errors,
            timeouts=self.timeouts,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    # ----- reports (on the loop, outside the packet path and the tick) ----------------------

    def _report(self, reports: Iterable[DigitReceived | MediaTimeout]) -> None:
        for report in reports:
            try:
                if isinstance(report, DigitReceived):
                    if self.on_digit is not None:
                        self.on_digit(self, report.digit)
                elif self.on_timeout is not None:
                    self.on_timeout(self)
            except Exception:
                log.exception("event=rtp_callback_failed port=%d", self.local_port)

    def __repr__(self) -> str:
        return f"<RtpLeg port={self.local_port} slot={self.slot} remote={self.remote}>"


class RtpEndpoint:
    """Every SIP leg's media, as one endpoint of the mixer (`mixer.add_endpoint(endpoint)`).

    `on_digit(leg, digit)` and `on_timeout(leg)` are the defaults for legs that do not bring
    their own; both run on the loop via `call_soon`, never inside a packet or a tick.
    `inactivity_timeout` (seconds, None: never) applies to active legs that are not held;
    `timers_every_ticks` sets how often the sessions' timers run (5 ticks: every 100 ms).

    Receiving: the legs' sockets are not the event loop's. They sit in one epoll set of
    ours, whose descriptor the loop watches. When any socket is readable the endpoint
    drains every readable socket at once, then stops watching for `drain_interval` seconds
    (packets wait in the kernel meanwhile); every tick drains too, just before the play-out.
    Under load a wake-up of the loop so reads dozens of packets, not one, and no read ever
    comes back empty (each readable socket is read once per round; level-triggered epoll
    says which still hold more). Sending: one `sendto` per leg straight on its socket.
    """

    def __init__(
        self,
        port_range: RtpPortRange | None = None,
        *,
        symmetric: bool = True,
        inactivity_timeout: float | None = 30.0,
        on_digit: DigitHandler | None = None,
        on_timeout: TimeoutHandler | None = None,
        timers_every_ticks: int = 5,
        drain_interval: float = 0.005,
    ) -> None:
        self.ports = RtpPortPool(port_range or RtpPortRange())
        self.symmetric = symmetric
        self.inactivity_timeout = inactivity_timeout
        self.on_digit = on_digit
        self.on_timeout = on_timeout
        self.timers_every_ticks = max(1, timers_every_ticks)
        self.drain_interval = drain_interval
        self._legs: dict[RtpLeg, None] = {}  # ordered set: O(1) removal at 1000 legs
        self._dirty = False  # legs or slots changed: rebuild the tick's lists before the next tick
        self._tick_legs: list[RtpLeg] = []  # a snapshot of _legs aligned with the lists below
        self._sessions: list[RtpSession] = []
        self._rows: list[int] = []
        self._socks: list[socket.socket] = []
        self._groups = CodecGroups((), ())
        self._packets = np.zeros((0, PACKET_SIZE), dtype=np.uint8)
        self._packet_views: list[memoryview] = []
        self._flat = memoryview(bytearray())
        self._peers: list[Address | None] = []  # the tick's legs' connected addresses
        self._rx = np.zeros((0, _RX_ROW), dtype=np.uint8)
        self._rx_views: list[memoryview] = []
        self._ticks = 0
        self._poller: select.epoll | None = None
        self._by_fd: dict[int, RtpLeg] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._rearm: asyncio.TimerHandle | None = None
        self.read_errors = 0  # ICMP errors reported on a read, and refused reads
        self.drains = 0
        self._lane = FastLane()
        self._lane_rows = np.zeros(0, dtype=np.intp)  # the tick's legs' rows in the lane
        self._slots = np.zeros(0, dtype=np.intp)  # the tick's legs' mixer slots
        self._clock: Any = None  # the mixer that ticks us (attach_clock)
        self._scratch: np.ndarray | None = None  # play-out of dropped ticks (skip_ticks)

    @property
    def legs(self) -> tuple[RtpLeg, ...]:
        return tuple(self._legs)

    @property
    def lane(self) -> FastLane:
        return self._lane

    def attach_clock(self, mixer: Any) -> None:
        """The mixer that ticks this endpoint (called by `Mixer.add_endpoint`). While its
        clock runs, the sockets are read on the tick only, and steady legs take the fast
        lane; otherwise the loop reads them when readable, packet by packet."""
        self._clock = mixer

    def _clock_running(self) -> bool:
        return self._clock is not None and bool(self._clock.running)

    # ----- legs ----------------------------------------------------------------------------

    async def open_leg(
        self,
        slot: int,
        local_host: str,
        codec_name: str,
        payload_type: int,
        telephone_event_pt: int | None = None,
        remote: Address | None = None,
        *,
        on_digit: DigitHandler | None = None,
        on_timeout: TimeoutHandler | None = None,
        active: bool = True,
    ) -> RtpLeg:
        """A leg on the next free even port of `local_host` (an IP address), feeding `slot`.

        `remote` None: nothing is sent until the far end's address is set or, with symmetric
        RTP, learnt from its first packet. `active` False (a leg still ringing) is not
        watched for inactivity until `leg.set_active(True)`.
        Raises RtpPortsExhaustedError, CodecUnavailableError, ValueError (a host or remote
        that is not an IP address), OSError.
        """
        loop = asyncio.get_running_loop()
        _check_address(remote)
        codec = new_codec(codec_name)
        now = _monotonic()
        session = RtpSession(
            codec=codec,
            payload_type=payload_type,
            telephone_event_pt=telephone_event_pt,
            remote_address=remote,
            symmetric=self.symmetric,
            inactivity_timeout=self.inactivity_timeout,
            now=now,
        )
        sock, port = self.ports.bind(local_host)
        leg = RtpLeg(
            self,
            slot,
            session,
            sock,
            local_host,
            port,
            on_digit if on_digit is not None else self.on_digit,
            on_timeout if on_timeout is not None else self.on_timeout,
            active,
            loop,
        )
        try:
            self._watch(loop).register(sock.fileno(), select.EPOLLIN)
        except BaseException:
            sock.close()
            self.ports.release(port)
            raise
        leg.lane_row = self._lane.take_row()
        self._by_fd[sock.fileno()] = leg
        self._legs[leg] = None
        self._topology_changed()
        log.debug("event=rtp_leg_open port=%d slot=%d codec=%s", port, slot, codec_name)
        return leg

    async def close_leg(self, leg: RtpLeg) -> None:
        """Stop the leg's media, close its socket and give its port back (idempotent)."""
        self._forget(leg)
        if leg.port_released:
            return
        leg.port_released = True
        leg._closed = True
        fd = leg.sock.fileno()
        if self._by_fd.get(fd) is leg:
            del self._by_fd[fd]
            if self._poller is not None:
                with contextlib.suppress(OSError):
                    self._poller.unregister(fd)
        leg.sock.close()  # closed now: the port can be bound again at once
        self.ports.release(leg.local_port)
        self._lane.give_row(leg.lane_row)
        if log.isEnabledFor(logging.DEBUG):  # counters are built only for a reader
            log.debug("event=rtp_leg_closed port=%d counters=%s", leg.local_port, leg.counters)
        if not self._by_fd:
            self._close_poller()  # no leg, no descriptor of ours left open

    async def close(self) -> None:
        """Close every leg (shutdown)."""
        for leg in list(self._by_fd.values()):
            await self.close_leg(leg)
        self._close_poller()

    def _close_poller(self) -> None:
        self._unwatch()
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    def detach(self, leg: RtpLeg) -> None:
        """Stop feeding the leg's slot now (the slot is being released); close it later."""
        self._forget(leg)

    def _forget(self, leg: RtpLeg) -> None:
        self._lane.leave(leg)  # its session has everything before it goes
        self._lane.leave_sending(leg)
        if leg in self._legs:
            del self._legs[leg]
            self._topology_changed()

    def _topology_changed(self) -> None:
        """Legs opened, closed or moved: the lists the tick walks are rebuilt once, lazily.

        At 100 calls/s with 500 calls up, legs open and close 400 times a second; rebuilding
        on each change made that O(legs) work per change (a fifth of a core)."""
        self._dirty = True

    def _rebuild(self) -> None:
        self._dirty = False
        legs = list(self._legs)
        self._tick_legs = legs
        self._sessions = [leg.session for leg in legs]
        self._rows = [leg.slot for leg in legs]
        # Sockets, not bound `sendto` methods: a thousand new objects per rebuild fed the
        # garbage collector's full passes (a tenth of a core at 100 calls/s).
        self._socks = [leg.sock for leg in legs]
        self._peers = [leg.peer for leg in legs]
        self._groups = codec_groups(self._sessions, self._rows)
        self._lane_rows = np.fromiter((leg.lane_row for leg in legs), dtype=np.intp, count=len(legs))
        self._slots = np.asarray(self._rows, dtype=np.intp)
        if self._packets.shape[0] < len(legs):
            self._packets = np.zeros((max(16, 2 * len(legs)), PACKET_SIZE), dtype=np.uint8)
            self._flat = flat = memoryview(self._packets).cast("B")
            self._packet_views = [
                flat[row * PACKET_SIZE : (row + 1) * PACKET_SIZE]
                for row in range(self._packets.shape[0])
            ]

    # ----- receiving -------------------------------------------------------------------------

    def _watch(self, loop: asyncio.AbstractEventLoop) -> select.epoll:
        """Our epoll set, its descriptor watched by the loop (made on the first leg)."""
        if self._poller is None:
            self._poller = select.epoll()
        if self._loop is not loop:
            self._unwatch()
            self._loop = loop
        if not self._watching and self._rearm is None:
            loop.add_reader(self._poller.fileno(), self._on_readable)
            self._watching = True
        return self._poller

    def _unwatch(self) -> None:
        if self._rearm is not None:
            self._rearm.cancel()
            self._rearm = None
        if self._watching and self._loop is not None and self._poller is not None:
            with contextlib.suppress(Exception):  # the loop may be closing
                self._loop.remove_reader(self._poller.fileno())
        self._watching = False

    def _on_readable(self) -> None:
        """Some leg's socket has data: drain them all, then rest for `drain_interval`."""
        self.drain()
        loop = self._loop
        poller = self._poller
        if loop is None or poller is None or self.drain_interval <= 0:
            return
        loop.remove_reader(poller.fileno())
        self._watching = False
        self._rearm = loop.call_later(self.drain_interval, self._resume)

    def _resume(self) -> None:
        self._rearm = None
        if self._poller is None or self._loop is None or not self._by_fd:
            return
        if self._clock_running():
            # The tick reads every socket 50 times a second: no need for the loop to wake
            # on each packet. Look again later, in case the clock stops.
            self._rearm = self._loop.call_later(0.1, self._resume)
            return
        self._loop.add_reader(self._poller.fileno(), self._on_readable)
        self._watching = True

    def drain(self, rounds: int = 8) -> int:
        """Read every packet waiting on the legs' sockets; returns how many were read.

        Each round reads one datagram from each readable socket; a round that finds no
        readable socket ends the drain (at most `rounds` rounds: the rest waits). A fast
        leg's socket is connected to its source: its datagram is read straight into a row
        of one buffer (`recv_into`, no bytes object, no address), which the lane files with
        the others of the round.
        """
        poller = self._poller
        if poller is None:
            return 0
        self.drains += 1
        by_fd = self._by_fd
        lane = self._lane
        now = _monotonic()
        count = 0
        for _round in range(rounds):
            ready = poller.poll(0)
            if not ready:
                break
            if len(ready) > len(self._rx_views):
                self._grow_rx(len(ready))
            rx_views = self._rx_views
            fast_legs: list[RtpLeg] = []
            filed = 0
            for fd, _events in ready:
                leg = by_fd.get(fd)
                if leg is None:
                    continue
                try:
                    if leg.peer is not None:  # connected: the fast lane's leg
                        size = leg.sock.recv_into(rx_views[filed])
                        if size == PACKET_SIZE:
                            fast_legs.append(leg)
                            filed += 1
                            count += 1
                            continue
                        data = bytes(rx_views[filed][:size])
                        addr = leg.peer
                    else:
                        data, addr = leg.sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    self.read_errors += 1  # an ICMP error surfacing on the socket
                    leg.send_errors += 1
                    continue
                count += 1
                if leg.fast:
                    if len(data) == PACKET_SIZE and addr == leg.session.learned_remote:
                        rx_views[filed][:PACKET_SIZE] = data
                        fast_legs.append(leg)
                        filed += 1
                        continue
                    lane.leave(leg)
                digits = leg._receive(data, addr, now)
                if digits:
                    leg._loop.call_soon(leg._report, digits)
            if fast_legs:
                rx = self._rx
                for position in lane.receive(fast_legs, rx, now):
                    leg = fast_legs[position]
                    digits = leg._receive(
                        rx[position, :PACKET_SIZE].tobytes(), leg.session.learned_remote, now
                    )
                    if digits:
                        leg._loop.call_soon(leg._report, digits)
        return count

    def _grow_rx(self, rows: int) -> None:
        """The receive buffer: one 2048-byte row per socket read in a round."""
        rows = max(64, 2 * rows)
        self._rx = np.zeros((rows, _RX_ROW), dtype=np.uint8)
        flat = memoryview(self._rx).cast("B")
        self._rx_views = [flat[row * _RX_ROW : (row + 1) * _RX_ROW] for row in range(rows)]

    # ----- the mixer's side (once per 20 ms tick) -------------------------------------------

    def read_into(self, inputs: np.ndarray) -> None:
        self.drain()
        if self._dirty:
            self._rebuild()
        sessions = self._sessions
        if not sessions:
            return
        fast = self._lane.fast[self._lane_rows]
        if not fast.any():
            decode_tick(sessions, self._rows, inputs)
            return
        fast_positions = np.flatnonzero(fast)
        missing = self._lane.play_out(
            self._tick_legs,
            fast_positions,
            self._lane_rows[fast_positions],
            self._slots[fast_positions],
            inputs,
        )
        slow = np.flatnonzero(~fast).tolist()
        if missing:
            slow = sorted(slow + missing)
        if slow:
            rows = self._rows
            decode_tick([sessions[i] for i in slow], [rows[i] for i in slow], inputs)

    def skip_ticks(self, ticks: int) -> None:
        """The mixer dropped `ticks` ticks: read and play out that many frames per leg into a
        scratch buffer (nobody hears them), exactly as those ticks would have, fast lane and
        ordinary path alike. At most SKIP_PLAY_OUT_MAX: past a jitter buffer's reach there is
        nothing left to align."""
        if not self._legs:
            return
        scratch = self._scratch
        if scratch is None or scratch.shape != self._clock_inputs_shape():
            scratch = self._scratch = np.zeros(self._clock_inputs_shape(), dtype=np.int16)
        for _ in range(min(ticks, SKIP_PLAY_OUT_MAX)):
            self.read_into(scratch)

    def _clock_inputs_shape(self) -> tuple[int, ...]:
        clock = self._clock
        if clock is not None:
            return clock.inputs.shape  # type: ignore[no-any-return]
        return (max(leg.slot for leg in self._legs) + 1, FRAME_SAMPLES)

    def write_from(self, outputs: np.ndarray) -> None:
        if self._dirty:
            self._rebuild()
        if not self._sessions:
            return
        self._send(self._encode(outputs))
        self._ticks += 1
        if self._ticks % self.timers_every_ticks == 0:
            self._run_timers()

    def _encode(self, outputs: np.ndarray) -> list[bool] | None:
        """This tick's packets into the packet buffer: payloads per codec group, headers in
        numpy for the legs sending plain audio; returns which legs those are (None: none)."""
        sessions = self._sessions
        encode_payloads(sessions, self._groups, outputs, self._packets)
        lane = self._lane
        send_fast = lane.send_fast[self._lane_rows]
        if not send_fast.any():
            return None
        if send_fast.all():
            lane.write_headers(slice(0, len(sessions)), self._lane_rows, self._packets)
        else:
            positions = np.flatnonzero(send_fast)
            lane.write_headers(positions, self._lane_rows[positions], self._packets)
        return send_fast.tolist()  # type: ignore[no-any-return]

    def _send(self, plain: list[bool] | None) -> None:
        """One datagram per leg: `send` on a connected socket, `sendto` otherwise; the other
        legs' headers are written here (`RtpSession.packet_into`: digits, markers, hold)."""
        sessions = self._sessions
        views = self._packet_views
        socks = self._socks
        peers = self._peers
        flat = self._flat
        offset = -PACKET_SIZE
        for index, session in enumerate(sessions):
            offset += PACKET_SIZE
            if plain is not None and plain[index]:
                length = PACKET_SIZE
            else:
                length = session.packet_into(flat, offset)
                if not length:
                    continue
            address = session.learned_remote
            if address is None:
                address = session.signalled_remote
                if address is None:
                    leg = self._tick_legs[index]
                    leg.unsent += 1  # an offer not answered yet: nowhere to send
                    leg.unsent_bytes += length - HEADER_SIZE
                    continue
            try:
                if peers[index] is address:  # connected to it (fast lane): no address to pass
                    if length == PACKET_SIZE:
                        socks[index].send(views[index])
                    else:
                        socks[index].send(views[index][:length])
                elif length == PACKET_SIZE:
                    socks[index].sendto(views[index], address)
                else:
                    socks[index].sendto(views[index][:length], address)
            except (OSError, TypeError, ValueError):  # a bad address must not stop the others
                self._tick_legs[index].send_errors += 1

    def _run_timers(self) -> None:
        """Digits whose end was lost, and inactivity of active legs that are not held."""
        now = _monotonic()
        lane = self._lane if self._clock_running() else None
        for leg in self._tick_legs:
            if lane is not None and not leg.send_fast:
                lane.enter_sending(leg)
            if leg.fast:
                continue  # receiving steadily: no digit pending, no silence
            if lane is not None and lane.enter(leg):
                continue
            session = leg.session
            if leg.active and not leg.held:
                reports: tuple[DigitReceived | MediaTimeout, ...] = session.poll(now)
            else:
                digit = session.events.poll(now)
                reports = (digit,) if digit is not None else ()
            if reports:
                for report in reports:
                    if isinstance(report, MediaTimeout):
                        leg.timeouts += 1
                        log.info(
                            "event=rtp_timeout port=%d silent_s=%.1f",
                            leg.local_port,
                            report.silent_for,
                        )
                leg._loop.call_soon(leg._report, reports)
