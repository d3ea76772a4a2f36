"""The steady-state lane of the RTP endpoint: receive, jitter buffer and decode in numpy.

Most RTP packets of a call in progress are alike: G.711, 160 bytes, the next sequence
number, the same SSRC, from the learnt source, landing one frame after the last. While the
mixer clock runs, the endpoint drains the legs' sockets once per tick, and a leg whose
stream is that regular is "fast": its packets of the round are checked, counted, filed and
later played out for all fast legs at once with a few numpy operations, instead of ~40
lines of Python per packet (`RtpSession.receive`, `JitterBuffer.put/pop`, `decode_tick`).

Anything else leaves the fast lane first: a packet that is not the expected one (loss,
reordering, a new SSRC, marker, telephone-event, comfort noise, padding, another size or
source), a frame missing at play-out, a jitter buffer outgrowing the ring, a codec change.
Leaving hands the state back to the leg's `RtpSession` and `JitterBuffer` exactly as they
would be had they seen every packet (counters, RFC 3550 sequence and jitter, the buffered
frames, the play-out point, the last frame for concealment), and the packet then takes the
ordinary path. A leg comes back when its session is steady again (checked every few ticks).

The ring holds RING frames per leg: frames from the play-out point up to RING - 2 ahead,
and the last frame played (kept for concealment should the leg leave). Row r of every array
is one leg (`RtpLeg.lane_row`), for the leg's whole life.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from firmware.media.codecs import ALAW_DECODE_TABLE, MULAW_DECODE_TABLE, PCMA, PCMU
from firmware.media.rtp import (
    _HALF_TIMESTAMP,
    _TIMESTAMP_MASK,
    HEADER_SIZE,
    PACKET_SIZE,
    SEQUENCE_MODULUS,
    TIMESTAMP_MODULUS,
)

if TYPE_CHECKING:
    from firmware.media.rtp_endpoint import RtpLeg

RING = 16  # frames per leg: the play-out point, up to 14 ahead, and the last one played
FRAME = 160
_LAWS = {id(PCMU): 0, id(PCMA): 1}
_DECODE = np.concatenate([MULAW_DECODE_TABLE, ALAW_DECODE_TABLE])  # law * 256 + code
_EXCESS_TICKS = 50  # as JitterBuffer.pop: a queue too long for a second drops a frame


class FastLane:
    """Per-leg arrays for the fast legs of one `RtpEndpoint` (see the module docstring)."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = 0
        self._free: list[int] = []
        self.entered = 0  # legs that came into the lane (counts, for benches and tests)
        self.left = 0
        self._grow(capacity)

    # ----- rows ----------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        old = self.capacity

        def grown(array: np.ndarray | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            result = np.zeros((capacity, *shape), dtype=dtype)
            if array is not None:
                result[:old] = array[:old]
            return result

        get = self.__dict__.get
        self.fast = grown(get("fast"), (), bool)
        self.law = grown(get("law"), (), np.intp)
        self.payload_type = grown(get("payload_type"), (), np.int64)
        self.ssrc = grown(get("ssrc"), (), np.int64)
        self.next_sequence = grown(get("next_sequence"), (), np.int64)
        self.packets = grown(get("packets"), (), np.int64)  # received while fast, not yet handed back
        self.cycles = grown(get("cycles"), (), np.int64)
        self.last_received = grown(get("last_received"), (), np.float64)
        self.jitter = grown(get("jitter"), (), np.float64)
        self.last_transit = grown(get("last_transit"), (), np.float64)
        self.playout = grown(get("playout"), (), np.int64)
        self.depth = grown(get("depth"), (), np.int64)
        self.pops = grown(get("pops"), (), np.int64)
        self.target = grown(get("target"), (), np.int64)
        self.min_frames = grown(get("min_frames"), (), np.int64)
        self.max_frames = grown(get("max_frames"), (), np.int64)
        self.excess_ticks = grown(get("excess_ticks"), (), np.int64)
        self.dropped = grown(get("dropped"), (), np.int64)
        self.have = grown(get("have"), (RING,), bool)
        self.ring = grown(get("ring"), (RING, FRAME), np.uint8)
        # Sending: legs whose next packets are plain audio get their headers in numpy.
        self.send_fast = grown(get("send_fast"), (), bool)
        self.out_payload_type = grown(get("out_payload_type"), (), np.int64)
        self.out_ssrc = grown(get("out_ssrc"), (), np.int64)
        self.out_sequence = grown(get("out_sequence"), (), np.int64)
        self.out_timestamp = grown(get("out_timestamp"), (), np.int64)
        self.sent = grown(get("sent"), (), np.int64)  # sent while fast, not yet handed back
        self._free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    def take_row(self) -> int:
        if not self._free:
            self._grow(self.capacity * 2)
        row = self._free.pop()
        self.fast[row] = False
        self.send_fast[row] = False
        return row

    def give_row(self, row: int) -> None:
        self.fast[row] = False
        self.send_fast[row] = False
        self._free.append(row)

    # ----- sending --------------------------------------------------------------------------

    def enter_sending(self, leg: RtpLeg) -> bool:
        """Take over the leg's numbering while its packets are plain audio: sending, in a
        talkspurt (the marker is out), no digit going out or waiting, G.711."""
        session = leg.session
        if (
            leg.send_fast
            or not session.sending
            or not session._talking
            or session._event is not None
            or session._outgoing_events
            or session._gap_ticks
            or id(session.codec) not in _LAWS
        ):
            return False
        row = leg.lane_row
        self.out_payload_type[row] = session.payload_type
        self.out_ssrc[row] = session.ssrc
        self.out_sequence[row] = session._sequence
        self.out_timestamp[row] = session._timestamp
        self.sent[row] = 0
        self.send_fast[row] = True
        leg.send_fast = True
        return True

    def hand_back_sent(self, leg: RtpLeg) -> None:
        """Bring the session's numbering and sent counters up to date (stays in the lane)."""
        row = leg.lane_row
        session = leg.session
        sent = int(self.sent[row])
        session.packets_sent += sent
        session.bytes_sent += sent * FRAME
        self.sent[row] = 0
        session._sequence = int(self.out_sequence[row])
        session._timestamp = int(self.out_timestamp[row])

    def leave_sending(self, leg: RtpLeg) -> None:
        if not leg.send_fast:
            return
        self.hand_back_sent(leg)
        self.send_fast[leg.lane_row] = False
        leg.send_fast = False

    def write_headers(self, positions: Any, rows: np.ndarray, packets: np.ndarray) -> None:
        """This tick's RTP headers for the sending-fast legs at `positions` of the packet
        buffer (lane `rows`), as `RtpSession.packet_into` would write them, numbering on."""
        sequence = self.out_sequence[rows]
        timestamp = self.out_timestamp[rows]
        header = np.empty((rows.size, HEADER_SIZE), dtype=np.uint8)
        header[:, 0] = 0x80
        header[:, 1] = self.out_payload_type[rows]
        header[:, 2:4] = sequence.astype(">u2").view(np.uint8).reshape(-1, 2)
        header[:, 4:8] = timestamp.astype(">u4").view(np.uint8).reshape(-1, 4)
        header[:, 8:12] = self.out_ssrc[rows].astype(">u4").view(np.uint8).reshape(-1, 4)
        packets[positions, :HEADER_SIZE] = header
        self.out_sequence[rows] = (sequence + 1) & 0xFFFF
        self.out_timestamp[rows] = (timestamp + FRAME) & _TIMESTAMP_MASK
        self.sent[rows] += 1

    # ----- entering and leaving -------------------------------------------------------------

    def enter(self, leg: RtpLeg) -> bool:
        """Take the leg into the lane if its stream is steady now; False otherwise."""
        session = leg.session
        law = _LAWS.get(id(session.codec))
        buffer = session.jitter_buffer
        playout = buffer._playout
        if (
            law is None
            or leg.fast
            or session.learned_remote is None
            or session.remote_ssrc is None
            or session._last_transit is None
            or session.events._timestamp is not None
            or playout is None
            or buffer.frame_units != FRAME
            or playout < buffer._anchor
            or buffer._missing_run
            or buffer._last is None
            or len(buffer._last) != FRAME
            or buffer._target > RING - 3
        ):
            return False
        frames = buffer._frames
        for key, frame in frames.items():
            offset = key - playout
            if offset < 0 or offset >= (RING - 2) * FRAME or offset % FRAME or len(frame) != FRAME:
                return False
        row = leg.lane_row
        self.have[row] = False
        for key, frame in frames.items():
            slot = (key // FRAME) % RING
            self.ring[row, slot] = np.frombuffer(frame, dtype=np.uint8)
            self.have[row, slot] = True
        self.ring[row, ((playout - FRAME) // FRAME) % RING] = np.frombuffer(buffer._last, dtype=np.uint8)
        frames.clear()
        self.law[row] = law
        self.payload_type[row] = session.payload_type
        self.ssrc[row] = session.remote_ssrc
        self.next_sequence[row] = (session._max_sequence + 1) & 0xFFFF
        self.packets[row] = 0
        self.cycles[row] = 0
        self.last_received[row] = session.last_received_at or 0.0
        self.jitter[row] = session.jitter
        self.last_transit[row] = session._last_transit
        self.playout[row] = playout
        self.depth[row] = len(self.have[row].nonzero()[0])
        self.pops[row] = buffer._pops
        self.target[row] = buffer._target
        self.min_frames[row] = buffer.min_frames
        self.max_frames[row] = buffer.max_frames
        self.excess_ticks[row] = buffer._excess_ticks
        self.dropped[row] = 0
        self.fast[row] = True
        leg.fast = True
        self.entered += 1
        leg.lane_joined()
        return True

    def hand_back_counters(self, leg: RtpLeg) -> None:
        """Bring the leg's session counters up to date; the leg stays in the lane."""
        row = leg.lane_row
        packets = int(self.packets[row])
        session = leg.session
        if packets:
            session.packets_received += packets
            session.bytes_received += packets * FRAME
            session.last_received_at = float(self.last_received[row])
            session.timed_out = False
            session._received_since_base += packets
            session._cycles += int(self.cycles[row])
            session._max_sequence = int(self.next_sequence[row] - 1) & 0xFFFF
            session.jitter = session.jitter_buffer.jitter = float(self.jitter[row])
            session._last_transit = float(self.last_transit[row])
            self.packets[row] = 0
            self.cycles[row] = 0
        buffer = session.jitter_buffer
        buffer.dropped += int(self.dropped[row])
        self.dropped[row] = 0
        buffer._pops = int(self.pops[row])
        buffer._target = int(self.target[row])
        buffer._excess_ticks = int(self.excess_ticks[row])

    def leave(self, leg: RtpLeg) -> None:
        """Hand everything back to the leg's session and jitter buffer."""
        if not leg.fast:
            return
        self.hand_back_counters(leg)
        row = leg.lane_row
        buffer = leg.session.jitter_buffer
        playout = int(self.playout[row])
        frames: dict[int, bytes | bytearray] = {}
        for step in range(RING - 1):
            key = playout + step * FRAME
            slot = (key // FRAME) % RING
            if self.have[row, slot]:
                frames[key] = self.ring[row, slot].tobytes()
        buffer._frames = frames
        buffer._playout = playout
        buffer._last = self.ring[row, ((playout - FRAME) // FRAME) % RING].tobytes()
        buffer._missing_run = 0
        self.fast[row] = False
        leg.fast = False
        self.left += 1
        leg.lane_left()

    # ----- per round of the drain ---------------------------------------------------------

    def receive(self, legs: list[RtpLeg], packets: np.ndarray, now: float) -> list[int]:
        """File one round of candidate packets: row i of `packets` (uint8, at least 172
        columns) is legs[i]'s, at most one per leg, each 172 bytes from the leg's learnt
        source; returns the positions of those that must take the ordinary path (their legs
        have left the lane already)."""
        rows = np.array([leg.lane_row for leg in legs], dtype=np.intp)
        packets = packets[: len(legs), :PACKET_SIZE]
        header = packets[:, :HEADER_SIZE]
        sequence = header[:, 2:4].view(">u2")[:, 0].astype(np.int64)
        timestamp = header[:, 4:8].view(">u4")[:, 0].astype(np.int64)
        ssrc = header[:, 8:12].view(">u4")[:, 0].astype(np.int64)
        playout = self.playout[rows]
        offset = ((timestamp - playout + _HALF_TIMESTAMP) & _TIMESTAMP_MASK) - _HALF_TIMESTAMP
        key = playout + offset
        slot = (key // FRAME) % RING
        # RFC 3550 A.8 interarrival jitter, as RtpSession.receive computes it (before the
        # jitter buffer sees the packet, whose re-anchoring test reads it).
        transit = now * 8000.0 - timestamp
        difference = transit - self.last_transit[rows]
        difference = np.where(
            difference > _HALF_TIMESTAMP, difference - TIMESTAMP_MODULUS, difference
        )
        difference = np.where(
            difference < -_HALF_TIMESTAMP, difference + TIMESTAMP_MODULUS, difference
        )
        jitter = self.jitter[rows]
        jitter = jitter + (np.abs(difference) - jitter) / 16.0
        # JitterBuffer.put re-anchors a stream that comes back to an empty buffer further
        # ahead than the target delay (from the jitter just updated): the ordinary path does.
        wanted = 1 + np.floor(3.0 * jitter / FRAME + 0.999).astype(np.int64)
        live_target = np.minimum(np.maximum(wanted, self.min_frames[rows]), self.max_frames[rows])
        ok = (
            self.fast[rows]
            & (header[:, 0] == 0x80)
            & (header[:, 1] == self.payload_type[rows])  # the audio type, no marker
            & (ssrc == self.ssrc[rows])
            & (sequence == self.next_sequence[rows])
            & (offset >= 0)
            & (offset < (RING - 2) * FRAME)
            & (offset % FRAME == 0)
            & ~self.have[rows, slot]
            & ((self.depth[rows] > 0) | (offset <= live_target * FRAME))
        )
        skipped: list[int] = []
        if not ok.all():
            refused = np.flatnonzero(~ok)
            skipped = refused.tolist()
            for position in skipped:
                self.leave(legs[position])
            accepted = np.flatnonzero(ok)
            rows, packets, sequence, slot = rows[accepted], packets[accepted], sequence[accepted], slot[accepted]
            jitter, transit = jitter[accepted], transit[accepted]
        if rows.size:
            self.ring[rows, slot] = packets[:, HEADER_SIZE:]
            self.have[rows, slot] = True
            self.depth[rows] += 1
            self.next_sequence[rows] = (sequence + 1) & 0xFFFF
            self.cycles[rows] += np.where(sequence == 0, SEQUENCE_MODULUS, 0)
            self.packets[rows] += 1
            self.last_received[rows] = now
            self.jitter[rows] = jitter
            self.last_transit[rows] = transit
        return skipped

    # ----- per tick -------------------------------------------------------------------------

    def play_out(
        self,
        legs: list[RtpLeg],
        fast_positions: np.ndarray,
        rows: np.ndarray,
        slots: np.ndarray,
        inputs: np.ndarray,
    ) -> list[int]:
        """Decode this tick's frame of the fast legs at `fast_positions` of `legs` (lane
        `rows`) into `inputs[slots]`; returns the positions whose frame is missing (those
        legs have left the lane and must be played out the ordinary way this tick)."""
        playout = self.playout[rows]
        slot = (playout // FRAME) % RING
        present = self.have[rows, slot]
        missing: list[int] = []
        if not present.all():
            absent = np.flatnonzero(~present)
            missing = fast_positions[absent].tolist()
            for position in missing:
                self.leave(legs[position])
            rows, slot, playout = rows[present], slot[present], playout[present]
            slots = slots[present]
        if not rows.size:
            return missing
        codes = self.ring[rows, slot]
        law = self.law[rows]
        if not law.any():
            inputs[slots] = np.take(MULAW_DECODE_TABLE, codes)
        elif law.all():
            inputs[slots] = np.take(ALAW_DECODE_TABLE, codes)
        else:
            inputs[slots] = np.take(_DECODE, law[:, None] * 256 + codes)
        self.have[rows, slot] = False
        depth = self.depth[rows] - 1
        playout = playout + FRAME
        pops = self.pops[rows] + 1
        self.pops[rows] = pops
        refresh = (pops & 63) == 0
        if refresh.any():
            due = rows[refresh]
            wanted = 1 + np.floor(3.0 * self.jitter[due] / FRAME + 0.999).astype(np.int64)
            self.target[due] = np.minimum(np.maximum(wanted, self.min_frames[due]), self.max_frames[due])
        excess = depth > self.target[rows] + 1
        ticks = np.where(excess, self.excess_ticks[rows] + 1, 0)
        drop = ticks >= _EXCESS_TICKS
        if drop.any():
            # JitterBuffer.pop: a queue too long for a second loses its next frame.
            ticks[drop] = 0
            dropping = rows[drop]
            next_slot = (playout[drop] // FRAME) % RING
            held = self.have[dropping, next_slot]
            self.have[dropping, next_slot] = False
            # The frame just played stays the last one (concealment), not the dropped one.
            self.ring[dropping, next_slot] = self.ring[dropping, slot[drop]]
            depth[drop] -= held
            playout[drop] += FRAME
            self.dropped[dropping] += 1
        self.excess_ticks[rows] = ticks
        self.depth[rows] = depth
        self.playout[rows] = playout
        return missing

