"""RTP for SIP legs (RFC 3550) with RFC 4733 telephone-events, sans-I/O.

The transport shell owns the sockets. It hands each datagram to `RtpSession.receive(data,
source, now)` and sends what `next_packet()` returns to `session.remote_address`; the mixer
calls `decode_tick()` and `encode_tick()` once per 20 ms for all SIP legs at once. Nothing
here reads a clock, sleeps or touches a socket.

Per-packet work is kept to a header unpack, a few integer updates and one dict insert: the
jitter buffer stores raw payload bytes, and decoding happens once per tick for all legs
with one numpy call per codec (see `firmware.media.codecs`).

All our codecs put one payload byte per RTP timestamp unit, so a 20 ms frame is 160
timestamp units and 160 bytes; the jitter buffer relies on that.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware.media.codecs import FRAME_SAMPLES, Codec

RTP_VERSION = 2
HEADER_SIZE = 12
PACKET_SIZE = HEADER_SIZE + FRAME_SAMPLES  # one 20 ms G.711 frame
SEQUENCE_MODULUS = 1 << 16
TIMESTAMP_MODULUS = 1 << 32
COMFORT_NOISE_PT = 13  # RFC 3389: counts as activity, played as silence
DTMF_EVENTS = "0123456789*#ABCD"  # RFC 4733 event codes 0-15
FLASH_EVENT = 16
FLASH_DIGIT = "!"  # how a hook flash (event 16) is written in digit strings
EVENT_VOLUME = 10  # -10 dBm0, what phones send
END_REPETITIONS = 3  # RFC 4733 2.5.1.4: the final packet is sent three times

_HEADER = struct.Struct("!BBHII")
_EVENT = struct.Struct("!BBH")
_TIMESTAMP_MASK = TIMESTAMP_MODULUS - 1
_HALF_TIMESTAMP = TIMESTAMP_MODULUS >> 1
_MAX_DROPOUT = 3000  # RFC 3550 A.1
_MAX_MISORDER = 100
# Concealment of consecutive missing frames: repeat the last one, fading; then silence.
# Always below 1.0, so a gain of 1.0 means "a frame that arrived".
CONCEALMENT_GAINS = (0.9, 0.6, 0.3)
_NO_EVENTS: tuple = ()


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP version 2 packet."""


# --------------------------------------------------------------------------- packets


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 5.1). `padding` is the padding length in bytes."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined 16 bits, data)
    padding: int = 0


def pack_rtp(packet: RtpPacket) -> bytes:
    """The packet's bytes. The extension data is padded to 32-bit words as 5.3.1 needs."""
    if len(packet.csrcs) > 15:
        raise RtpError("at most 15 CSRCs")
    if not 0 <= packet.payload_type <= 127:
        raise RtpError(f"payload type {packet.payload_type} is outside 0..127")
    if not 0 <= packet.padding <= 255:
        raise RtpError("padding is 0..255 bytes")
    first = (
        (RTP_VERSION << 6)
        | (0x20 if packet.padding else 0)
        | (0x10 if packet.extension is not None else 0)
        | len(packet.csrcs)
    )
    second = packet.payload_type | (0x80 if packet.marker else 0)
    parts = [
        _HEADER.pack(
            first,
            second,
            packet.sequence & 0xFFFF,
            packet.timestamp & _TIMESTAMP_MASK,
            packet.ssrc & _TIMESTAMP_MASK,
        )
    ]
    if packet.csrcs:
        parts.append(struct.pack(f"!{len(packet.csrcs)}I", *packet.csrcs))
    if packet.extension is not None:
        profile, data = packet.extension
        words = (len(data) + 3) // 4
        parts.append(struct.pack("!HH", profile, words))
        parts.append(data.ljust(words * 4, b"\0"))
    parts.append(packet.payload)
    if packet.padding:
        parts.append(bytes(packet.padding - 1) + bytes([packet.padding]))
    return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse and validate one datagram (RFC 3550 A.1 header checks)."""
    if len(data) < HEADER_SIZE:
        raise RtpError(f"{len(data)} bytes is shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    offset = HEADER_SIZE
    csrc_count = first & 0x0F
    end = len(data)
    if offset + 4 * csrc_count > end:
        raise RtpError("truncated CSRC list")
    csrcs = struct.unpack_from(f"!{csrc_count}I", data, offset) if csrc_count else ()
    offset += 4 * csrc_count
    extension = None
    if first & 0x10:
        if offset + 4 > end:
            raise RtpError("truncated header extension")
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4
        if offset + 4 * words > end:
            raise RtpError("truncated header extension")
        extension = (profile, bytes(data[offset : offset + 4 * words]))
        offset += 4 * words
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > end:
            raise RtpError(f"bad padding count {padding}")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
        padding=padding,
    )


# --------------------------------------------------------------------------- RFC 4733


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The 4-byte payload of a telephone-event packet (RFC 4733 2.3)."""

    event: int
    end: bool
    volume: int
    duration: int  # timestamp units since the event's timestamp


def pack_telephone_event(event: int, *, end: bool, duration: int, volume: int = EVENT_VOLUME) -> bytes:
    if not 0 <= event <= 255 or not 0 <= volume <= 63 or not 0 <= duration <= 0xFFFF:
        raise RtpError("telephone-event field out of range")
    return _EVENT.pack(event, (0x80 if end else 0) | volume, duration)


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    if len(payload) < 4:
        raise RtpError("telephone-event payload is 4 bytes")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def event_digit(event: int) -> str | None:
    """'0'-'9', '*', '#', 'A'-'D' for events 0-15, '!' for flash (16), None otherwise."""
    if event < 16:
        return DTMF_EVENTS[event]
    return FLASH_DIGIT if event == FLASH_EVENT else None


def digit_event(digit: str) -> int:
    if digit == FLASH_DIGIT:
        return FLASH_EVENT
    code = DTMF_EVENTS.find(digit.upper())
    if code < 0 or len(digit) != 1:
        raise ValueError(f"{digit!r} is not a DTMF digit (0-9 * # A-D, ! for flash)")
    return code


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """A digit the far end sent as telephone-events, reported once when it ends.

    `complete` is False when no end packet arrived and the end was inferred from a newer
    event or from silence; `duration` is then the longest one seen.
    """

    digit: str
    event: int
    timestamp: int
    duration: int  # timestamp units
    complete: bool

    @property
    def duration_ms(self) -> float:
        return self.duration / 8.0


@dataclass(frozen=True, slots=True)
class MediaTimeout:
    """No RTP from the far end for `silent_for` seconds (reported once per silence)."""

    silent_for: float


def _is_newer(timestamp: int, reference: int) -> bool:
    """Serial-number comparison of 32-bit timestamps (RFC 1982)."""
    return 0 < ((timestamp - reference) & _TIMESTAMP_MASK) < _HALF_TIMESTAMP


class TelephoneEventReceiver:
    """Turns a stream of telephone-event packets into one `DigitReceived` per digit.

    An event is identified by its RTP timestamp. Repeated end packets, and late copies of
    any event already reported, are dropped; an event whose end packets were all lost is
    reported when a newer event starts or after `end_timeout` seconds without packets.
    """

    def __init__(self, end_timeout: float = 0.3) -> None:
        self.end_timeout = end_timeout
        self._timestamp: int | None = None  # of the event in progress
        self._event = 0
        self._duration = 0
        self._last_packet_at = 0.0
        self._last_reported: int | None = None
        self.malformed = 0

    def receive(self, timestamp: int, payload: bytes, now: float) -> tuple[DigitReceived, ...]:
        if len(payload) < 4:
            self.malformed += 1
            return _NO_EVENTS
        event, flags, duration = _EVENT.unpack_from(payload)
        if event_digit(event) is None:
            return _NO_EVENTS  # tones and line events other than DTMF and flash
        if self._last_reported is not None and not _is_newer(timestamp, self._last_reported):
            return _NO_EVENTS  # a repeated end packet or a late copy of a finished event
        reports: tuple[DigitReceived, ...] = _NO_EVENTS
        if self._timestamp is not None and timestamp != self._timestamp:
            if not _is_newer(timestamp, self._timestamp):
                return _NO_EVENTS
            reports = (self._finish(complete=False),)
        if self._timestamp is None:
            self._timestamp = timestamp
            self._event = event
            self._duration = duration
        else:
            self._duration = max(self._duration, duration)
        self._last_packet_at = now
        if flags & 0x80:
            reports = (*reports, self._finish(complete=True))
        return reports

    def poll(self, now: float) -> DigitReceived | None:
        """The event in progress, if its packets stopped without an end."""
        if self._timestamp is not None and now - self._last_packet_at >= self.end_timeout:
            return self._finish(complete=False)
        return None

    def _finish(self, complete: bool) -> DigitReceived:
        assert self._timestamp is not None
        report = DigitReceived(
            digit=event_digit(self._event) or "",
            event=self._event,
            timestamp=self._timestamp,
            duration=self._duration,
            complete=complete,
        )
        self._last_reported = self._timestamp
        self._timestamp = None
        return report


# --------------------------------------------------------------------------- jitter buffer


class JitterBuffer:
    """Payloads keyed by extended timestamp, played out as one 160-unit frame per tick.

    The delay adapts: it starts at `target_frames` (from the jitter estimate, between
    `min_frames` and `max_frames`); an underrun holds the play-out point for a tick (the
    delay grows by a frame); a queue longer than target + 1 for a second drops a frame.
    When the buffer has run dry (talkspurt end, hold), the next packet re-anchors the
    play-out point at the target delay, so silence is not mistaken for loss.
    """

    def __init__(
        self,
        *,
        min_frames: int = 1,
        max_frames: int = 10,
        span_frames: int = 50,
        silence_byte: int = 0xFF,
        frame_units: int = FRAME_SAMPLES,
    ) -> None:
        self.min_frames = min_frames
        self.max_frames = max_frames
        self.frame_units = frame_units
        self._span = span_frames * frame_units
        self._silence = bytes([silence_byte]) * frame_units
        self.jitter = 0.0  # RFC 3550 interarrival jitter, timestamp units (set by the session)
        self._frames: dict[int, bytes | bytearray] = {}
        self._playout: int | None = None  # extended timestamp of the next frame to play
        self._anchor = 0  # frames before this timestamp are lead-in silence, not loss
        self._last: bytes | bytearray | None = None
        self._missing_run = 0
        self._excess_ticks = 0
        self._pops = 0
        self._target = min_frames  # target_frames, refreshed every 64 ticks and on anchoring
        self.late = 0
        self.duplicates = 0
        self.concealed = 0
        self.underruns = 0
        self.dropped = 0  # frames skipped to shrink the delay
        self.resyncs = 0

    @property
    def target_frames(self) -> int:
        """The delay the jitter asks for: 1 frame + 3 x RFC 3550 jitter, within the limits."""
        wanted = 1 + int(3.0 * self.jitter / self.frame_units + 0.999)
        return min(max(wanted, self.min_frames), self.max_frames)

    @property
    def depth(self) -> int:
        """Frames waiting to be played."""
        return len(self._frames)

    def reset(self) -> None:
        """Forget everything buffered (new SSRC, re-INVITE)."""
        self._frames.clear()
        self._playout = None
        self._last = None
        self._missing_run = 0
        self._excess_ticks = 0

    def put(self, timestamp: int, payload: bytes, marker: bool = False) -> bool:
        """Store a received payload; False when it came too late or twice."""
        playout = self._playout
        if playout is None:
            return self._anchor_at(timestamp, payload)
        offset = ((timestamp - playout + _HALF_TIMESTAMP) & _TIMESTAMP_MASK) - _HALF_TIMESTAMP
        span = self._span
        if offset >= span or offset < -span:
            self.resyncs += 1
            self.reset()
            return self._anchor_at(timestamp, payload)
        key = playout + offset
        frames = self._frames
        units = self.frame_units
        if not frames:
            target = self.target_frames * units
            if marker or offset > target:
                # The stream starts again after a silence: play it after the target delay.
                start = key - target
                if start > playout:
                    self._playout = start
                    self._anchor = key
                    self._last = None
        if offset < 0:
            self.late += 1
            return False
        if len(payload) == units and offset % units == 0:
            if key in frames:
                self.duplicates += 1
                return False
            frames[key] = payload
            return True
        return self._put_pieces(key, payload)

    def _anchor_at(self, timestamp: int, payload: bytes) -> bool:
        self._target = self.target_frames
        target = self._target * self.frame_units
        self._playout = timestamp - target
        self._anchor = timestamp
        return self._store(timestamp, payload)

    def _store(self, key: int, payload: bytes) -> bool:
        if len(payload) == self.frame_units:
            self._frames[key] = payload
            return True
        return self._put_pieces(key, payload)

    def _put_pieces(self, key: int, payload: bytes) -> bool:
        """A packet that is not one aligned 20 ms frame (10 or 30 ms ptime): cut it up."""
        assert self._playout is not None
        units = self.frame_units
        position = 0
        while position < len(payload):
            start = key + position
            frame_key = start - ((start - self._playout) % units)
            within = start - frame_key
            length = min(units - within, len(payload) - position)
            if frame_key >= self._playout:
                frame = self._frames.get(frame_key)
                if frame is None or isinstance(frame, bytes):
                    frame = bytearray(frame if frame is not None else self._silence)
                    self._frames[frame_key] = frame
                frame[within : within + length] = payload[position : position + length]
            position += length
        return True

    def pop(self) -> tuple[bytes | bytearray | None, float]:
        """This tick's frame: (payload, 1.0), (last payload, fading gain) or (None, 0.0)."""
        playout = self._playout
        if playout is None:
            return None, 0.0
        frames = self._frames
        frame = frames.pop(playout, None)
        self._pops += 1
        if not self._pops & 63:
            self._target = self.target_frames
        if frame is not None:
            self._playout = playout + self.frame_units
            self._last = frame
            self._missing_run = 0
            if len(frames) > self._target + 1:
                self._excess_ticks += 1
                if self._excess_ticks >= 50:
                    self._excess_ticks = 0
                    frames.pop(self._playout, None)
                    self._playout += self.frame_units
                    self.dropped += 1
            else:
                self._excess_ticks = 0
            return frame, 1.0
        if playout < self._anchor:
            self._playout = playout + self.frame_units  # lead-in before the first packet
            return None, 0.0
        if frames:
            self._playout = playout + self.frame_units  # lost: later frames are here
        else:
            self.underruns += 1  # nothing yet: hold the play-out point, the delay grows
        self._missing_run += 1
        if self._last is not None and self._missing_run <= len(CONCEALMENT_GAINS):
            self.concealed += 1
            return self._last, CONCEALMENT_GAINS[self._missing_run - 1]
        return None, 0.0


# --------------------------------------------------------------------------- the session


@dataclass(frozen=True, slots=True)
class ReceptionReport:
    """What a leg's receiving side saw, for the call record, logs and RTCP."""

    packets_received: int
    packets_expected: int
    packets_lost: int
    late: int
    duplicates: int
    concealed: int
    underruns: int
    jitter_ms: float
    invalid: int
    foreign_source: int


class _OutgoingEvent:
    """A digit being sent: RFC 4733 2.5.1 update packets, then the end packet three times."""

    __slots__ = ("code", "end_sent", "ticks", "timestamp", "total_ticks")

    def __init__(self, code: int, timestamp: int, total_ticks: int) -> None:
        self.code = code
        self.timestamp = timestamp
        self.total_ticks = total_ticks
        self.ticks = 0
        self.end_sent = 0


class RtpSession:
    """One leg's RTP: numbering of what we send, jitter buffer and events for what we get.

    Symmetric RTP (RFC 4961): with `symmetric` on, the source address of the first valid
    packet becomes `learned_remote` and we send there; packets from any other address are
    dropped while that source is alive, and re-learnt after it was silent `relearn_after` s.
    """

    def __init__(
        self,
        *,
        codec: Codec,
        payload_type: int,
        telephone_event_pt: int | None = None,
        remote_address: tuple[str, int] | None = None,
        symmetric: bool = True,
        inactivity_timeout: float | None = 30.0,
        relearn_after: float = 2.0,
        now: float = 0.0,
        rng: random.Random | None = None,
        jitter_buffer: JitterBuffer | None = None,
    ) -> None:
        generator = rng if rng is not None else random.SystemRandom()
        self.codec = codec
        self.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        self.signalled_remote = remote_address
        self.symmetric = symmetric
        self.learned_remote: tuple[str, int] | None = None
        self.inactivity_timeout = inactivity_timeout
        self.relearn_after = relearn_after
        self.sending = True  # False while the direction forbids sending (hold)
        silence = codec.spec.silence_byte
        self.jitter_buffer = jitter_buffer or JitterBuffer(
            silence_byte=silence if silence is not None else 0xFF
        )
        self.events = TelephoneEventReceiver()
        clock_rate = codec.spec.clock_rate
        self._clock_rate = clock_rate
        self._jitter_scale = clock_rate / 1000.0
        # Sending side (RFC 3550 5.1: random initial sequence number and timestamp).
        self.ssrc = generator.getrandbits(32)
        self._sequence = generator.getrandbits(16)
        self._timestamp = generator.getrandbits(32)
        self._talking = False
        self._outgoing_events: list[tuple[int, int, int]] = []  # (code, ticks, gap ticks)
        self._event: _OutgoingEvent | None = None
        self._gap_ticks = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        # Receiving side.
        self.remote_ssrc: int | None = None
        self.last_received_at: float | None = None
        self._silence_since = now
        self.timed_out = False
        self._base_sequence = 0
        self._max_sequence = 0
        self._cycles = 0
        self._received_since_base = 0
        self._last_transit: float | None = None
        self.jitter = 0.0  # RFC 3550 A.8, in timestamp units
        self.packets_received = 0
        self.bytes_received = 0
        self.invalid = 0
        self.unknown_payload = 0
        self.foreign_source = 0
        self.ssrc_changes = 0
        self._lost_before = 0  # losses counted under earlier SSRCs or sequence restarts
        self._expected_before = 0

    # ----- addresses and renegotiation -----------------------------------------------

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Where to send: the learnt source under symmetric RTP, else what SDP said."""
        if self.learned_remote is not None:
            return self.learned_remote
        return self.signalled_remote

    def set_remote(self, address: tuple[str, int] | None) -> None:
        """A new SDP address (re-INVITE): learn the source again from the next packet."""
        self.signalled_remote = address
        self.learned_remote = None

    def set_codec(self, codec: Codec, payload_type: int, telephone_event_pt: int | None) -> None:
        """A renegotiated codec: what is buffered was coded with the old one, so drop it."""
        self.codec = codec
        self.payload_type = payload_type
        self.telephone_event_pt = telephone_event_pt
        self.jitter_buffer.reset()

    # ----- receiving --------------------------------------------------------------------

    def receive(
        self, data: bytes, source: tuple[str, int], now: float
    ) -> tuple[DigitReceived, ...]:
        """Take one datagram; returns the digits it completed (almost always none).

        The common packet (version 2, no padding, extension or CSRC, our audio payload type,
        from the learnt source) takes the shortest way: this runs ~10,000 times a second
        at 100 calls, so every attribute access counts.
        """
        if len(data) < HEADER_SIZE:
            self.invalid += 1
            return _NO_EVENTS
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first != 0x80 and first & 0xC0 != 0x80:
            self.invalid += 1
            return _NO_EVENTS
        payload_type = second & 0x7F
        audio = payload_type == self.payload_type
        if (
            not audio
            and payload_type != self.telephone_event_pt
            and payload_type != COMFORT_NOISE_PT
        ):
            self.unknown_payload += 1
            return _NO_EVENTS
        learned = self.learned_remote
        if source != learned:
            if learned is None:
                if self.symmetric:
                    self.learned_remote = source
            else:
                last = self.last_received_at
                if last is not None and now - last < self.relearn_after:
                    self.foreign_source += 1
                    return _NO_EVENTS
                self.learned_remote = source
        if first == 0x80:
            payload = data[HEADER_SIZE:]
        else:  # padding, extension or CSRCs: take the careful path
            try:
                payload = parse_rtp(data).payload
            except RtpError:
                self.invalid += 1
                return _NO_EVENTS
        self.last_received_at = now
        self.timed_out = False
        self.packets_received += 1
        self.bytes_received += len(payload)
        if ssrc != self.remote_ssrc:
            self._new_source(ssrc, sequence)
        # RFC 3550 A.1 sequence counting, in line for the in-order packet.
        maximum = self._max_sequence
        if sequence == maximum + 1:
            self._max_sequence = sequence
            self._received_since_base += 1
        else:
            self._count_sequence(sequence)
        if audio:
            transit = now * self._clock_rate - timestamp
            last_transit = self._last_transit
            self._last_transit = transit
            if last_transit is not None:
                difference = transit - last_transit
                if difference > _HALF_TIMESTAMP:  # the timestamp wrapped between the two
                    difference -= TIMESTAMP_MODULUS
                elif difference < -_HALF_TIMESTAMP:
                    difference += TIMESTAMP_MODULUS
                jitter = self.jitter
                jitter += ((difference if difference >= 0 else -difference) - jitter) / 16.0
                self.jitter = self.jitter_buffer.jitter = jitter
            self.jitter_buffer.put(timestamp, payload, second > 0x7F)
            return _NO_EVENTS
        if payload_type == COMFORT_NOISE_PT:
            return _NO_EVENTS
        return self.events.receive(timestamp, payload, now)

    def _new_source(self, ssrc: int, sequence: int) -> None:
        if self.remote_ssrc is not None:
            self.ssrc_changes += 1
            self._close_sequence_epoch()
            self.jitter_buffer.reset()
            self._last_transit = None
        self.remote_ssrc = ssrc
        self._start_sequence(sequence)

    def _start_sequence(self, sequence: int) -> None:
        self._base_sequence = sequence
        self._max_sequence = sequence
        self._cycles = 0
        self._received_since_base = 0

    def _close_sequence_epoch(self) -> None:
        expected = self._expected_in_epoch()
        self._expected_before += expected
        self._lost_before += max(0, expected - self._received_since_base)

    def _expected_in_epoch(self) -> int:
        return self._cycles + self._max_sequence - self._base_sequence + 1

    def _count_sequence(self, sequence: int) -> None:
        """RFC 3550 A.1, less the probation: SIP told us to expect this stream."""
        delta = (sequence - self._max_sequence) & 0xFFFF
        if delta < _MAX_DROPOUT:
            if sequence < self._max_sequence:
                self._cycles += SEQUENCE_MODULUS
            self._max_sequence = sequence
        elif delta <= SEQUENCE_MODULUS - _MAX_MISORDER:
            # A jump too big to be loss: the sender restarted its numbering.
            self._close_sequence_epoch()
            self._start_sequence(sequence)
        self._received_since_base += 1

    def poll(self, now: float) -> tuple[DigitReceived | MediaTimeout, ...]:
        """Timers: a digit whose end packets were lost, and RTP inactivity."""
        reports: list[DigitReceived | MediaTimeout] = []
        digit = self.events.poll(now)
        if digit is not None:
            reports.append(digit)
        if self.inactivity_timeout is not None and not self.timed_out:
            since = self.last_received_at if self.last_received_at is not None else self._silence_since
            if now - since >= self.inactivity_timeout:
                self.timed_out = True
                reports.append(MediaTimeout(round(now - since, 3)))
        return tuple(reports)

    def restart_inactivity(self, now: float) -> None:
        """Count silence from now (after a re-INVITE that resumes media, for example)."""
        self._silence_since = now
        self.last_received_at = None
        self.timed_out = False

    def reception_report(self) -> ReceptionReport:
        duplicates = self.jitter_buffer.duplicates
        expected = self._expected_before + (
            self._expected_in_epoch() if self.remote_ssrc is not None else 0
        )
        lost_now = (
            max(0, self._expected_in_epoch() - self._received_since_base + duplicates)
            if self.remote_ssrc is not None
            else 0
        )
        return ReceptionReport(
            packets_received=self.packets_received,
            packets_expected=expected,
            packets_lost=self._lost_before + lost_now,
            late=self.jitter_buffer.late,
            duplicates=duplicates,
            concealed=self.jitter_buffer.concealed,
            underruns=self.jitter_buffer.underruns,
            jitter_ms=round(self.jitter / self._jitter_scale, 3),
            invalid=self.invalid,
            foreign_source=self.foreign_source,
        )

    # ----- sending ----------------------------------------------------------------------

    def send_digits(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Queue digits ('!' = flash) to go out as RFC 4733 events instead of audio."""
        ticks = max(1, min(round(duration_ms / 20), 400))
        gap_ticks = max(0, round(gap_ms / 20))
        codes = [digit_event(digit) for digit in digits]  # all valid before any is queued
        if self.telephone_event_pt is None:
            raise RuntimeError("the far end did not accept telephone-event")
        self._outgoing_events.extend((code, ticks, gap_ticks) for code in codes)

    @property
    def sending_digits(self) -> bool:
        return self._event is not None or bool(self._outgoing_events)

    def next_packet(self, payload: bytes | None) -> bytes | None:
        """This tick's packet: a telephone-event while digits go out, else the audio.

        Call once per 20 ms tick; `None` (nothing to send: hold, silence) still moves the
        timestamp on, and the next audio packet carries the marker of a new talkspurt.
        """
        timestamp = self._timestamp
        self._timestamp = (timestamp + FRAME_SAMPLES) & _TIMESTAMP_MASK
        if not self.sending:
            self._talking = False
            return None
        if self._event is not None or (self._outgoing_events and self._gap_ticks == 0):
            return self._next_event_packet(timestamp)
        if self._gap_ticks:
            self._gap_ticks -= 1
        if payload is None:
            self._talking = False
            return None
        second = self.payload_type
        if not self._talking:
            self._talking = True
            second |= 0x80
        return self._packet(second, timestamp, payload)

    def packet_into(self, buffer: memoryview | bytearray, offset: int) -> int:
        """`next_packet` for a frame whose 160 payload bytes are already at
        `buffer[offset + 12 :]`: writes the header in front of them (or a whole
        telephone-event packet over them) and returns the packet's length, 0 for nothing.

        The mixer's per-tick path (`encode_tick_into`): no bytes object is made per packet.
        """
        timestamp = self._timestamp
        self._timestamp = (timestamp + FRAME_SAMPLES) & _TIMESTAMP_MASK
        if not self.sending:
            self._talking = False
            return 0
        if self._event is not None or (self._outgoing_events and self._gap_ticks == 0):
            packet = self._next_event_packet(timestamp)
            buffer[offset : offset + len(packet)] = packet
            return len(packet)
        if self._gap_ticks:
            self._gap_ticks -= 1
        second = self.payload_type
        if not self._talking:
            self._talking = True
            second |= 0x80
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.bytes_sent += FRAME_SAMPLES
        _HEADER.pack_into(buffer, offset, 0x80, second, sequence, timestamp, self.ssrc)
        return PACKET_SIZE

    def _next_event_packet(self, timestamp: int) -> bytes:
        event = self._event
        second = self.telephone_event_pt
        assert second is not None
        if event is None:
            code, ticks, gap_ticks = self._outgoing_events.pop(0)
            event = self._event = _OutgoingEvent(code, timestamp, ticks)
            self._gap_ticks = gap_ticks
            second |= 0x80  # the first packet of an event carries the marker
        self._talking = False
        if event.ticks < event.total_ticks:
            event.ticks += 1
        ended = event.ticks >= event.total_ticks
        if ended:
            event.end_sent += 1
            if event.end_sent >= END_REPETITIONS:
                self._event = None
        payload = _EVENT.pack(
            event.code, (0x80 if ended else 0) | EVENT_VOLUME, event.ticks * FRAME_SAMPLES
        )
        return self._packet(second, event.timestamp, payload)

    def _packet(self, second: int, timestamp: int, payload: bytes) -> bytes:
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.bytes_sent += len(payload)
        return _HEADER.pack(0x80, second, sequence, timestamp, self.ssrc) + payload


# --------------------------------------------------------------------------- per tick


def decode_tick(sessions: Sequence[RtpSession], rows: Sequence[int], inputs: np.ndarray) -> None:
    """Play out one frame of every session into `inputs[rows]`, one decode per codec.

    Frames that conceal a loss are faded with one vectorised multiply; silent rows are
    zeroed. Stateful codecs (G.722) decode their own leg.
    """
    batches: dict[Codec, tuple[list[int], list[bytes | bytearray]]] = {}
    silent: list[int] = []
    faded: list[int] = []
    gains: list[float] = []
    for session, row in zip(sessions, rows, strict=True):
        payload, gain = session.jitter_buffer.pop()
        if payload is None:
            silent.append(row)
            continue
        codec = session.codec
        if codec.stateful:
            inputs[row] = codec.decode(np.frombuffer(payload, dtype=np.uint8))
        else:
            batch = batches.get(codec)
            if batch is None:
                batches[codec] = ([row], [payload])
            else:
                batch[0].append(row)
                batch[1].append(payload)
        if gain != 1.0:
            faded.append(row)
            gains.append(gain)
    for codec, (batch_rows, payloads) in batches.items():
        codes = np.frombuffer(b"".join(payloads), dtype=np.uint8)
        inputs[batch_rows] = codec.decode(codes.reshape(len(batch_rows), FRAME_SAMPLES))
    if silent:
        inputs[silent] = 0
    if faded:
        scaled = inputs[faded] * np.asarray(gains, dtype=np.float32)[:, None]
        inputs[faded] = scaled.astype(np.int16)


def encode_tick(
    sessions: Sequence[RtpSession], rows: Sequence[int], outputs: np.ndarray
) -> list[bytes | None]:
    """This tick's packet for every session from `outputs[rows]` (None: nothing to send)."""
    packets = np.empty((len(sessions), PACKET_SIZE), dtype=np.uint8)
    lengths = encode_tick_into(sessions, rows, outputs, packets)
    return [
        packets[index, :length].tobytes() if length else None
        for index, length in enumerate(lengths)
    ]


@dataclass(frozen=True, slots=True)
class CodecGroups:
    """Which sessions share a stateless codec (one table look-up each), and which code alone.

    `stateless`: (codec, positions in the session list, mixer rows); `stateful`: (position,
    row) of legs whose codec has state (G.722). Worked out once per change of the legs
    (`codec_groups`), not per tick.
    """

    stateless: tuple[tuple[Codec, Any, Any], ...]
    stateful: tuple[tuple[int, int], ...]


def codec_groups(sessions: Sequence[RtpSession], rows: Sequence[int]) -> CodecGroups:
    """Group the sessions by codec (see `CodecGroups`); a group of all sessions in their
    order gets a slice instead of an index array, so encoding writes without a scatter.

    The usual case, every leg on one shared G.711 codec, is found with one C-level count
    (the legs change on most ticks at 100 calls/s, and the loop below was half the rebuild)."""
    count = len(sessions)
    codecs = [session.codec for session in sessions]
    if count and not codecs[0].stateful and codecs.count(codecs[0]) == count:
        return CodecGroups(((codecs[0], slice(0, count), np.asarray(rows, dtype=np.intp)),), ())
    batches: dict[Codec, tuple[list[int], list[int]]] = {}
    stateful: list[tuple[int, int]] = []
    for index, (session, row) in enumerate(zip(sessions, rows, strict=True)):
        codec = session.codec
        if codec.stateful:
            stateful.append((index, row))
            continue
        batch = batches.setdefault(codec, ([], []))
        batch[0].append(index)
        batch[1].append(row)
    stateless = tuple(
        (
            codec,
            slice(0, count) if len(indices) == count else np.asarray(indices, dtype=np.intp),
            np.asarray(batch_rows, dtype=np.intp),
        )
        for codec, (indices, batch_rows) in batches.items()
    )
    return CodecGroups(stateless, tuple(stateful))


def encode_payloads(
    sessions: Sequence[RtpSession],
    groups: CodecGroups,
    outputs: np.ndarray,
    packets: np.ndarray,
) -> None:
    """Encode every session's frame `outputs[row]` into the payload columns of its row of
    `packets`: one table look-up per stateless codec; stateful codecs only while sending."""
    for codec, positions, batch_rows in groups.stateless:
        packets[positions, HEADER_SIZE:PACKET_SIZE] = codec.encode(outputs[batch_rows])
    for index, row in groups.stateful:
        session = sessions[index]
        if session.sending:
            packets[index, HEADER_SIZE:PACKET_SIZE] = session.codec.encode(outputs[row])


def encode_tick_into(
    sessions: Sequence[RtpSession],
    rows: Sequence[int],
    outputs: np.ndarray,
    packets: np.ndarray,
    groups: CodecGroups | None = None,
) -> list[int]:
    """Build this tick's packet for every session in place: row i of `packets` (uint8, at
    least len(sessions) x PACKET_SIZE, C-contiguous) gets session i's packet; returns each
    packet's length (0: nothing to send).

    The payloads of all G.711 legs are encoded with one table look-up per codec straight
    into the packets' payload columns (`encode_payloads`, with `groups` from
    `codec_groups`, worked out here when not given); each session then writes its 12-byte
    header in front (`RtpSession.packet_into`), or a telephone-event packet while digits go
    out.
    """
    if groups is None:
        groups = codec_groups(sessions, rows)
    encode_payloads(sessions, groups, outputs, packets)
    flat = memoryview(packets).cast("B")  # pack_into on a memoryview is the cheap way in
    stride = packets.shape[1]
    return [session.packet_into(flat, index * stride) for index, session in enumerate(sessions)]
