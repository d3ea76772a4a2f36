"""Reliable, ordered, exactly-once message link over the framed serial byte stream.

Used unchanged at both ends (driver and card simulator).  Sans-I/O: the owner writes the
returned bytes, feeds received bytes to receive(), and calls poll() at next_deadline().
The rules are written out in docs/line-card-protocol.md, section "Reliable link".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from firmware.lines.protocol import (
    SEQ_MODULUS,
    Ack,
    Frame,
    FrameDecoder,
    Message,
    encode_frame,
)

# A seq at least this far ahead of the expected one is taken as behind it: an old duplicate.
_HALF_SEQ_SPACE = SEQ_MODULUS // 2
# On a FIFO byte stream any window below _HALF_SEQ_SPACE is unambiguous; 64 also survives a
# stale copy up to 256 - 2 * 64 = 128 frames old on a channel that reorders.
MAX_WINDOW = 64

_LINK_COUNTER_NAMES = (
    "sent",  # sequenced frames sent for the first time
    "received",  # messages delivered to the owner
    "retransmits",
    "duplicates",  # frames received again and dropped (re-acked)
    "given_up",  # messages handed back by poll() as given up
    "acks_sent",
    "acks_received",
    "resyncs",  # SYN frames that (re)started the peer's session
    "out_of_session",  # non-SYN frames dropped unacked because no peer session exists yet
    "out_of_window",  # frames dropped unacked because they are further ahead than the window
)


@dataclass
class _Outstanding:
    """A sent frame kept until it and every frame before it are acked."""

    message: Message
    frame: bytes
    syn: bool
    attempts: int
    due: float
    acked: bool = False


class LinkEndpoint:
    """One end of the link; the same class runs on the host and on the card."""

    def __init__(
        self, *, retransmit_after: float = 0.1, max_attempts: int = 5, window: int = 32
    ) -> None:
        if retransmit_after <= 0:
            raise ValueError("retransmit_after must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be 1..{MAX_WINDOW} to keep seqs unambiguous")
        self._retransmit_after = retransmit_after
        self._max_attempts = max_attempts
        self._window = window
        # A copy of the peer's SYN frame can arrive this long after the first one.
        self._syn_lifetime = retransmit_after * max_attempts
        self._decoder = FrameDecoder()
        self._stats = dict.fromkeys(_LINK_COUNTER_NAMES, 0)
        self.last_received_at: float | None = None  # any valid frame from the peer
        self.last_sent_at: float | None = None  # first transmission of a sequenced frame

        # Sending side.
        self._next_seq = 0
        self._syn_pending = True  # the next new frame opens a session
        self._awaiting_syn_ack = False  # nothing else is sent while the SYN frame is unacked
        self._in_flight: dict[int, _Outstanding] = {}  # insertion order = seq order
        self._backlog: deque[Message] = deque()  # waiting for window space

        # Receiving side.
        self._expected_seq: int | None = None  # None until the peer's SYN is seen
        self._peer_syn_seq: int | None = None
        self._peer_syn_time = 0.0
        self._reorder_buffer: dict[int, Message] = {}

    # ------------------------------------------------------------------ public API

    def start_session(self, now: float) -> None:
        """Forget everything unsent or unacked; the next frame carries SYN.

        The seq is not rewound to 0, so the peer can never mistake the new SYN for a
        retransmission of the previous session's SYN.
        """
        self._in_flight.clear()
        self._backlog.clear()
        self._syn_pending = True
        self._awaiting_syn_ack = False

    def send(self, message: Message, now: float) -> bytes:
        if isinstance(message, Ack):
            raise ValueError("ACKs belong to the link; they cannot be sent as messages")
        encode_frame(message, 0)  # raise now, to the caller, if it cannot be encoded
        self._backlog.append(message)
        return self._transmit_backlog(now)

    def receive(self, data: bytes, now: float) -> tuple[list[Message], bytes]:
        """New messages in order, and bytes to write: ACKs, plus frames the ACKs let out."""
        delivered: list[Message] = []
        out = bytearray()
        for frame in self._decoder.feed(data):
            self.last_received_at = now
            if isinstance(frame.message, Ack):
                self._handle_ack(frame.message.acked_seq)
            else:
                out += self._handle_frame(frame, now, delivered)
        out += self._transmit_backlog(now)
        return delivered, bytes(out)

    def poll(self, now: float) -> tuple[bytes, list[Message]]:
        """Retransmissions due now; or, once a frame has used up its attempts, the give-up.

        Giving up hands back every message not yet known delivered (in flight, including
        frames acked behind the lost one, which the peer can no longer deliver in order, and
        the backlog) and makes the next frame a SYN, so the link is clean for a new session.
        """
        due = [entry for entry in self._in_flight.values() if not entry.acked and entry.due <= now]
        if any(entry.attempts >= self._max_attempts for entry in due):
            return b"", self._give_up()
        out = bytearray()
        for entry in due:
            entry.attempts += 1
            entry.due = now + self._retransmit_after
            self._stats["retransmits"] += 1
            out += entry.frame
        out += self._transmit_backlog(now)
        return bytes(out), []

    def next_deadline(self) -> float | None:
        dues = [entry.due for entry in self._in_flight.values() if not entry.acked]
        return min(dues, default=None)

    @property
    def counters(self) -> dict[str, int]:
        return self._decoder.counters.as_dict() | self._stats

    @property
    def pending(self) -> int:
        """Messages sent or queued whose delivery is not yet confirmed."""
        return len(self._in_flight) + len(self._backlog)

    # ------------------------------------------------------------------ sending side

    def _transmit_backlog(self, now: float) -> bytes:
        out = bytearray()
        while self._backlog and len(self._in_flight) < self._window and not self._awaiting_syn_ack:
            message = self._backlog.popleft()
            seq = self._next_seq
            syn = self._syn_pending
            frame = encode_frame(message, seq, syn=syn)
            self._in_flight[seq] = _Outstanding(
                message=message, frame=frame, syn=syn, attempts=1, due=now + self._retransmit_after
            )
            self._next_seq = (seq + 1) % SEQ_MODULUS
            if syn:
                self._syn_pending = False
                self._awaiting_syn_ack = True
            self._stats["sent"] += 1
            self.last_sent_at = now
            out += frame
        return bytes(out)

    def _handle_ack(self, acked_seq: int) -> None:
        self._stats["acks_received"] += 1
        entry = self._in_flight.get(acked_seq)
        if entry is None or entry.acked:
            return  # late duplicate, or from a session already abandoned
        entry.acked = True
        if entry.syn:
            self._awaiting_syn_ack = False
        # The window slides only past a contiguous run of acked frames.
        while self._in_flight:
            oldest_seq, oldest = next(iter(self._in_flight.items()))
            if not oldest.acked:
                break
            del self._in_flight[oldest_seq]

    def _give_up(self) -> list[Message]:
        given_up = [entry.message for entry in self._in_flight.values()]
        given_up += self._backlog
        self._in_flight.clear()
        self._backlog.clear()
        self._syn_pending = True
        self._awaiting_syn_ack = False
        self._stats["given_up"] += len(given_up)
        return given_up

    # ------------------------------------------------------------------ receiving side

    def _handle_frame(self, frame: Frame, now: float, delivered: list[Message]) -> bytes:
        """Deliver what is now in order; return the ACK to send, or b"" for none."""
        if frame.syn:
            if self._is_repeated_syn(frame.seq, now):
                self._stats["duplicates"] += 1
                return self._ack(frame.seq)
            self._expected_seq = frame.seq
            self._reorder_buffer.clear()
            self._peer_syn_seq = frame.seq
            self._peer_syn_time = now
            self._stats["resyncs"] += 1
        elif self._expected_seq is None:
            # No ACK: the peer gives up and, being told the link is dead, starts a session.
            self._stats["out_of_session"] += 1
            return b""

        distance = (frame.seq - self._expected_seq) % SEQ_MODULUS
        if distance >= _HALF_SEQ_SPACE or frame.seq in self._reorder_buffer:
            self._stats["duplicates"] += 1
            return self._ack(frame.seq)  # our earlier ACK may have been lost
        if distance >= self._window:
            # Beyond what we buffer: a very stale copy, or a peer with a larger window.  No
            # ACK, so a real frame comes again once the gap before it has filled.
            self._stats["out_of_window"] += 1
            return b""
        self._reorder_buffer[frame.seq] = frame.message
        while self._expected_seq in self._reorder_buffer:
            delivered.append(self._reorder_buffer.pop(self._expected_seq))
            self._stats["received"] += 1
            self._expected_seq = (self._expected_seq + 1) % SEQ_MODULUS
        return self._ack(frame.seq)

    def _is_repeated_syn(self, seq: int, now: float) -> bool:
        """A retransmitted SYN (its ACK was lost) must not restart the session a second time."""
        return seq == self._peer_syn_seq and now - self._peer_syn_time < self._syn_lifetime

    def _ack(self, seq: int) -> bytes:
        self._stats["acks_sent"] += 1
        return encode_frame(Ack(acked_seq=seq), 0)
