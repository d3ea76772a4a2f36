"""The switching matrix: one mixer on a 20 ms clock moves all audio in the appliance.

Every leg owns a slot (a row in the frame arrays). Each tick:
1. media endpoints (line card audio, RTP later) write the frames they received into `inputs`;
   slots with echo cancellation (FXO ports) have the echo of what they were sent removed,
   before monitors and bridges hear them (`enable_echo_cancel`, docs/echo-canceller.md);
   monitors hear the slot at that point, then slots with a receive gain (FXO lines,
   `set_gain`) are scaled before the bridges hear them;
2. bridges are summed with one `np.add.reduceat` over the slots sorted by bridge, and each
   member hears its bridge's sum minus itself (two-party calls and conferences alike);
3. sounds (tones, prompts) are added with one gather from the sound bank;
4. slots with a send gain are scaled, and endpoints read the frames to send from `outputs`
   (what stays in `outputs` is what went out: the next tick's echo canceller reference).
Nothing here loops over samples; Python loops run only over endpoints, monitors and recorders,
which are few. Topology changes only mark a cache dirty; the sort happens once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from firmware.media.echo import EchoCanceller, EchoSettings, EchoState
from firmware.media.levels import db_to_gain, gain_to_db
from firmware.media.soundbank import SoundBank

FRAME_SAMPLES = 160
SAMPLE_RATE = 8000
TICK_S = FRAME_SAMPLES / SAMPLE_RATE
NO_BRIDGE = -1
_LATENESS_HISTORY = 3000  # one minute of ticks
_MAX_CATCH_UP_TICKS = 5
ECHO_BANK_ROWS = 8  # rows of one canceller: the FXO ports of a card; more lines open a bank
ECHO_MAX_BULK_DELAY_MS = 64  # card buffering + line delay the canceller searches for
MAX_GAIN_DB = 24.0  # |gain| a slot may have: the line config allows 12

log = logging.getLogger(__name__)

FrameMonitor = Callable[[np.ndarray], None]


class MediaEndpoint(Protocol):
    """A source and sink of frames for some slots (a sound card, an RTP engine...)."""

    def read_into(self, inputs: np.ndarray) -> None:
        """Write this tick's received frame into the rows of the endpoint's slots."""

    def write_from(self, outputs: np.ndarray) -> None:
        """Take this tick's frame to send from the rows of the endpoint's slots."""


class MixerFullError(RuntimeError):
    pass


@dataclass
class Recording:
    """Frames a slot said and heard, kept in memory until the recorder is stopped.

    `said` is what the slot's endpoint delivered (on an FXO line the raw line audio, echo
    included and no receive gain: line calibration measures that echo and the tone's
    level) unless the recording was started with `echo_cancelled=True` (what the bridge heard: echo removed, the
    slot's receive gain applied). `heard` is what the endpoint was given to send (its send
    gain applied: what went to the line).
    """

    slot: int
    echo_cancelled: bool = False
    said: list[np.ndarray] = field(default_factory=list)
    heard: list[np.ndarray] = field(default_factory=list)

    def mixed(self) -> np.ndarray:
        """Both directions summed: what a call recording sounds like."""
        if not self.said:
            return np.zeros(0, dtype=np.int16)
        total = np.concatenate(self.said).astype(np.int32) + np.concatenate(self.heard)
        return np.clip(total, -32768, 32767).astype(np.int16)

    def write_wav(self, path: str | Path) -> None:
        """8 kHz mono 16-bit WAV of the call. Blocking (disk): run it in an executor."""
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(self.mixed().tobytes())


class _EchoBank:
    """One multi-channel `EchoCanceller` for up to `ECHO_BANK_ROWS` slots of one tail.

    A slot keeps its row for as long as it is enabled: a canceller's state cannot move
    between rows or banks, so a full bank makes another bank rather than growing (which
    would restart every line's convergence). All rows go through one `process` call: the
    cost is mostly numpy call overhead, ~0.55 ms per tick for one row, ~0.9 ms for eight;
    while a new call's least-squares fit solves ~2.0 ms, and at most ~2.6 ms with all
    eight rows starting together (two rows solve per tick, in turns: the canceller's
    default `max_fitting`; x86, see docs/echo-canceller.md).
    """

    def __init__(self, tail_ms: int) -> None:
        self.tail_ms = tail_ms
        self.canceller = EchoCanceller(
            tail_ms, channels=ECHO_BANK_ROWS, max_bulk_delay_ms=ECHO_MAX_BULK_DELAY_MS
        )
        self._slot_of_row = np.full(ECHO_BANK_ROWS, -1, dtype=np.intp)
        self.rows = np.zeros(0, dtype=np.intp)  # rows in use, and their slots
        self.slots = np.zeros(0, dtype=np.intp)
        self._far = np.zeros((ECHO_BANK_ROWS, FRAME_SAMPLES), dtype=np.int16)
        self._near = np.zeros((ECHO_BANK_ROWS, FRAME_SAMPLES), dtype=np.int16)
        # Once this many silent far frames went in, the canceller's far history is all
        # zero and it returns the near end bit for bit: more silence need not be processed.
        self._memory_frames = -(-self.canceller.history // FRAME_SAMPLES)
        self._quiet_frames = 0

    @property
    def full(self) -> bool:
        return self.rows.size == ECHO_BANK_ROWS

    def add(self, slot: int) -> int:
        row = int(np.flatnonzero(self._slot_of_row < 0)[0])
        self._slot_of_row[row] = slot
        self.canceller.reset(row)
        self._index()
        return row

    def remove(self, row: int) -> None:
        self._slot_of_row[row] = -1
        self.canceller.reset(row)
        self._far[row] = 0
        self._near[row] = 0
        self._index()

    def _index(self) -> None:
        self.rows = np.flatnonzero(self._slot_of_row >= 0)
        self.slots = self._slot_of_row[self.rows]

    def process(self, inputs: np.ndarray, sent: np.ndarray) -> None:
        """Replace the slots' rows of `inputs` by their echo-free audio; `sent` holds what
        each slot was sent last tick (the card plays it now: its echo starts in this frame
        or later, the bulk-delay search finds how much later)."""
        far = self._far
        far[self.rows] = sent[self.slots]
        if far.any():
            self._quiet_frames = 0
        else:
            self._quiet_frames += 1
            if self._quiet_frames > self._memory_frames:
                return  # idle lines: nothing sent for longer than any echo lasts
        near = self._near
        near[self.rows] = inputs[self.slots]
        cleaned = self.canceller.process(far, near)
        inputs[self.slots] = cleaned[self.rows]


@dataclass
class MixerHealth:
    ticks: int
    late_p50_ms: float
    late_p99_ms: float
    late_max_ms: float
    frames_dropped: int
    tick_cost_p99_us: float
    slots_in_use: int
    capacity: int


class Mixer:
    """Slots, bridges, sounds and the clock. Runs on the asyncio loop; never blocks."""

    def __init__(self, sounds: SoundBank | None = None, capacity: int = 32) -> None:
        self.sounds = sounds if sounds is not None else SoundBank()
        self._capacity = 0
        self._free: list[int] = []
        self._names: dict[int, str] = {}
        self._endpoints: list[MediaEndpoint] = []
        self._monitors: dict[int, FrameMonitor] = {}
        self._recordings: dict[int, Recording] = {}
        self._echo_banks: list[_EchoBank] = []
        self._echo_rows: dict[int, tuple[_EchoBank, int]] = {}  # slot -> its bank and row
        self._said_before_echo: dict[int, np.ndarray] = {}  # this tick's raw, for recordings
        # slots whose gain is not 0 dB: the only rows scaled (0 dB costs nothing, bit-exact)
        self._rx_gain_slots = np.zeros(0, dtype=np.intp)
        self._tx_gain_slots = np.zeros(0, dtype=np.intp)
        self._next_bridge = 0
        self._topology_dirty = True
        self._pair_slots = self._pair_peers = np.zeros(0, dtype=np.intp)
        self._conference_members = np.zeros(0, dtype=np.intp)
        self._conference_starts = np.zeros(0, dtype=np.intp)
        self._conference_group = np.zeros(0, dtype=np.intp)
        self._grow(capacity)
        self._task: asyncio.Task[None] | None = None
        self._lateness = np.zeros(_LATENESS_HISTORY, dtype=np.float64)
        self._tick_cost = np.zeros(_LATENESS_HISTORY, dtype=np.float64)
        self.ticks = 0
        self.frames_dropped = 0
        self._offsets = np.arange(FRAME_SAMPLES, dtype=np.int64)

    # ----- slots -------------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        old = self._capacity

        def grown(array: np.ndarray, fill: int | bool) -> np.ndarray:
            shape = (capacity, *array.shape[1:])
            result = np.full(shape, fill, dtype=array.dtype)
            result[:old] = array[:old]
            return result

        if old == 0:
            self.inputs = np.zeros((capacity, FRAME_SAMPLES), dtype=np.int16)
            self.outputs = np.zeros((capacity, FRAME_SAMPLES), dtype=np.int16)
            self._bridge = np.full(capacity, NO_BRIDGE, dtype=np.int64)
            self._playing = np.zeros(capacity, dtype=bool)
            self._play_offset = np.zeros(capacity, dtype=np.int64)
            self._play_length = np.ones(capacity, dtype=np.int64)
            self._play_position = np.zeros(capacity, dtype=np.int64)
            self._play_loop = np.zeros(capacity, dtype=bool)
            self._in_use = np.zeros(capacity, dtype=bool)
            self._rx_gain = np.ones(capacity, dtype=np.float32)
            self._tx_gain = np.ones(capacity, dtype=np.float32)
        else:
            self.inputs = grown(self.inputs, 0)
            self.outputs = grown(self.outputs, 0)
            self._bridge = grown(self._bridge, NO_BRIDGE)
            self._playing = grown(self._playing, False)
            self._play_offset = grown(self._play_offset, 0)
            self._play_length = grown(self._play_length, 1)
            self._play_position = grown(self._play_position, 0)
            self._play_loop = grown(self._play_loop, False)
            self._in_use = grown(self._in_use, False)
            self._rx_gain = grown(self._rx_gain, 1)
            self._tx_gain = grown(self._tx_gain, 1)
        self._free.extend(range(capacity - 1, old - 1, -1))
        self._capacity = capacity

    def allocate(self, name: str) -> int:
        """A slot for a leg; grows the arrays (doubling) rather than refusing a call."""
        if not self._free:
            if self._capacity >= 4096:
                raise MixerFullError("the mixer has 4096 slots in use")
            self._grow(self._capacity * 2)
        slot = self._free.pop()
        self._in_use[slot] = True
        self._names[slot] = name
        self.inputs[slot] = 0
        self.outputs[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        if not self._in_use[slot]:
            raise ValueError(f"slot {slot} is not in use")
        self.disconnect(slot)
        self.stop_sound(slot)
        self.disable_echo_cancel(slot)
        if self._rx_gain[slot] != 1.0 or self._tx_gain[slot] != 1.0:
            self.set_gain(slot, 0.0, 0.0)
        self._monitors.pop(slot, None)
        self._recordings.pop(slot, None)
        self._in_use[slot] = False
        self.inputs[slot] = 0
        self.outputs[slot] = 0
        del self._names[slot]
        self._free.append(slot)

    @property
    def slots_in_use(self) -> int:
        return len(self._names)

    @property
    def capacity(self) -> int:
        return self._capacity

    def slot_name(self, slot: int) -> str:
        return self._names[slot]

    # ----- bridges -----------------------------------------------------------------------

    def connect(self, *slots: int) -> int:
        """Put the slots in one new bridge: each hears all the others, never itself."""
        if len(slots) < 2:
            raise ValueError("a bridge needs at least two slots")
        for slot in slots:
            self._check(slot)
        for slot in slots:
            self.disconnect(slot)  # a slot moved from another bridge leaves that one consistent
        bridge = self._next_bridge
        self._next_bridge += 1
        for slot in slots:
            self._bridge[slot] = bridge
        self._topology_dirty = True
        return bridge

    def join(self, bridge: int, slot: int) -> None:
        """Add a slot to an existing bridge (a two-party call becomes a conference)."""
        self._check(slot)
        if not np.any(self._bridge == bridge):
            raise ValueError(f"bridge {bridge} does not exist")
        if self._bridge[slot] != bridge:
            self.disconnect(slot)
        self._bridge[slot] = bridge
        self._topology_dirty = True

    def disconnect(self, slot: int) -> None:
        """Take a slot out of its bridge; a bridge left with one member is dissolved."""
        bridge = self._bridge[slot]
        if bridge == NO_BRIDGE:
            return
        self._bridge[slot] = NO_BRIDGE
        remaining = np.flatnonzero(self._bridge == bridge)
        if remaining.size == 1:
            self._bridge[remaining] = NO_BRIDGE
        self._topology_dirty = True

    def bridge_of(self, slot: int) -> int | None:
        bridge = int(self._bridge[slot])
        return None if bridge == NO_BRIDGE else bridge

    def members(self, bridge: int) -> list[int]:
        return [int(s) for s in np.flatnonzero(self._bridge == bridge)]

    def _check(self, slot: int) -> None:
        if not (0 <= slot < self._capacity and self._in_use[slot]):
            raise ValueError(f"slot {slot} is not in use")

    def _rebuild_topology(self) -> None:
        """Sort bridged slots once per change: pairs get a plain swap, conferences a sum."""
        bridged = np.flatnonzero(self._bridge != NO_BRIDGE)
        members = bridged[np.argsort(self._bridge[bridged], kind="stable")]
        bridges = self._bridge[members]
        starts = (
            np.flatnonzero(np.concatenate([[True], np.diff(bridges) != 0]))
            if members.size
            else members
        )
        sizes = np.diff(np.concatenate([starts, [members.size]])) if members.size else members
        pair_starts = starts[sizes == 2]
        first, second = members[pair_starts], members[pair_starts + 1]
        self._pair_slots = np.concatenate([first, second]).astype(np.intp)
        self._pair_peers = np.concatenate([second, first]).astype(np.intp)
        in_conference = np.repeat(sizes >= 3, sizes) if members.size else np.zeros(0, dtype=bool)
        conference = members[in_conference]
        conference_bridges = bridges[in_conference]
        if conference.size:
            changes = np.diff(conference_bridges) != 0
            self._conference_starts = np.flatnonzero(np.concatenate([[True], changes])).astype(
                np.intp
            )
            self._conference_group = np.concatenate([[0], np.cumsum(changes)]).astype(np.intp)
        else:
            self._conference_starts = np.zeros(0, dtype=np.intp)
            self._conference_group = np.zeros(0, dtype=np.intp)
        self._conference_members = conference.astype(np.intp)
        self._topology_dirty = False

    # ----- sounds ------------------------------------------------------------------------

    def play(self, slot: int, sound_name: str) -> None:
        """Feed a named sound to the slot from its start (tones loop, prompts stop at the end)."""
        self._check(slot)
        sound = self.sounds.get(sound_name)
        self._playing[slot] = True
        self._play_offset[slot] = sound.offset
        self._play_length[slot] = sound.length
        self._play_position[slot] = 0
        self._play_loop[slot] = sound.loop

    def stop_sound(self, slot: int) -> None:
        self._playing[slot] = False

    def is_playing(self, slot: int) -> bool:
        return bool(self._playing[slot])

    # ----- monitors, recordings, endpoints ------------------------------------------------

    def set_monitor(self, slot: int, monitor: FrameMonitor | None) -> None:
        """Call `monitor(frame)` each tick with what the slot said (tone detectors on lines)."""
        self._check(slot)
        if monitor is None:
            self._monitors.pop(slot, None)
        else:
            self._monitors[slot] = monitor

    def start_recording(self, slot: int, *, echo_cancelled: bool = False) -> Recording:
        """Record what the slot says and hears; `echo_cancelled`: see `Recording`."""
        self._check(slot)
        recording = Recording(slot, echo_cancelled)
        self._recordings[slot] = recording
        return recording

    def stop_recording(self, slot: int) -> Recording | None:
        return self._recordings.pop(slot, None)

    # ----- gains -------------------------------------------------------------------------

    def set_gain(self, slot: int, rx_db: float = 0.0, tx_db: float = 0.0) -> None:
        """Scale what the slot says by `rx_db` and what it is sent by `tx_db` (an FXO line's
        `rx_gain_db` / `tx_gain_db`), from the next tick on; int16 saturates, never wraps.

        Receive gain comes after the echo canceller and the monitors (line-level
        detectors), before bridges and echo-cancelled recordings; send gain comes last,
        so the canceller's reference and raw recordings are what the line was really sent.
        0 dB takes the slot out of the scaled rows: bit-exact, no cost.
        """
        self._check(slot)
        for value in (rx_db, tx_db):
            if not -MAX_GAIN_DB <= value <= MAX_GAIN_DB:
                raise ValueError(f"gain {value} dB: at most ±{MAX_GAIN_DB:g} dB")
        self._rx_gain[slot] = db_to_gain(rx_db)
        self._tx_gain[slot] = db_to_gain(tx_db)
        self._index_gains()

    def gain_db(self, slot: int) -> tuple[float, float]:
        """(rx, tx) in dB as set (rounded to 0.01 dB), for status and tests."""
        rx, tx = float(self._rx_gain[slot]), float(self._tx_gain[slot])
        return round(gain_to_db(rx), 2), round(gain_to_db(tx), 2)

    def _index_gains(self) -> None:
        self._rx_gain_slots = np.flatnonzero(self._rx_gain != 1.0).astype(np.intp)
        self._tx_gain_slots = np.flatnonzero(self._tx_gain != 1.0).astype(np.intp)

    @staticmethod
    def _apply_gain(frames: np.ndarray, slots: np.ndarray, gains: np.ndarray) -> None:
        """frames[slots] *= gains[slots], rounded and saturated to int16, in place."""
        scaled = frames[slots] * gains[slots, None]
        np.rint(scaled, out=scaled)
        np.clip(scaled, -32768, 32767, out=scaled)
        frames[slots] = scaled

    # ----- echo cancellation --------------------------------------------------------------

    def enable_echo_cancel(self, slot: int, tail_ms: int = 32) -> None:
        """Remove from what the slot says the echo of what it was sent (an FXO port: the
        line's hybrid returns part of our extension's voice). Slots with the same tail
        share one canceller of `ECHO_BANK_ROWS` rows; enabling again with the same tail
        keeps what was learnt, another tail starts afresh. Released slots are disabled.
        """
        self._check(slot)
        EchoSettings(tail_ms)  # a bad tail raises here, saying the range
        entry = self._echo_rows.get(slot)
        if entry is not None:
            if entry[0].tail_ms == tail_ms:
                return
            self.disable_echo_cancel(slot)
        bank = next(
            (bank for bank in self._echo_banks if bank.tail_ms == tail_ms and not bank.full),
            None,
        )
        if bank is None:
            bank = _EchoBank(tail_ms)
            self._echo_banks.append(bank)
        self._echo_rows[slot] = (bank, bank.add(slot))

    def disable_echo_cancel(self, slot: int) -> None:
        """The slot's audio passes untouched again; an emptied bank is dropped."""
        entry = self._echo_rows.pop(slot, None)
        if entry is None:
            return
        bank, row = entry
        bank.remove(row)
        if not bank.rows.size:
            self._echo_banks.remove(bank)

    def reset_echo(self, slot: int) -> None:
        """Forget the slot's echo path (a new call on the line); no-op if not enabled."""
        entry = self._echo_rows.get(slot)
        if entry is not None:
            bank, row = entry
            bank.canceller.reset(row)

    def echo_state(self, slot: int) -> EchoState | None:
        """The slot's canceller as it stands (None: not enabled), for status and tests."""
        entry = self._echo_rows.get(slot)
        if entry is None:
            return None
        bank, row = entry
        return bank.canceller.state(row)

    def _cancel_echo(self, inputs: np.ndarray) -> None:
        """Runs in the tick while `self.outputs` still holds what was sent last tick."""
        for bank in list(self._echo_banks):
            try:
                bank.process(inputs, self.outputs)
            except Exception:
                # the lines keep their audio, echo and all, rather than the tick failing
                log.exception("event=echo_cancel_failed slots=%s", bank.slots.tolist())
                for slot in bank.slots.tolist():
                    self.disable_echo_cancel(slot)

    def add_endpoint(self, endpoint: MediaEndpoint) -> None:
        """Add a source and sink of frames; one with an `attach_clock(mixer)` method is told
        which mixer ticks it (the RTP endpoint reads its sockets on the tick while the
        clock runs, see `running`)."""
        self._endpoints.append(endpoint)
        attach = getattr(endpoint, "attach_clock", None)
        if attach is not None:
            attach(self)

    def remove_endpoint(self, endpoint: MediaEndpoint) -> None:
        self._endpoints.remove(endpoint)

    # ----- the tick ----------------------------------------------------------------------

    def tick(self) -> None:
        """Move one 20 ms frame for every slot. Cost is measured by the clock, not here."""
        inputs = self.inputs
        inputs.fill(0)  # a slot whose endpoint has nothing this tick is silent, not a repeat
        for endpoint in self._endpoints:
            endpoint.read_into(inputs)
        inputs[~self._in_use] = 0
        for slot, recording in self._recordings.items():
            if not recording.echo_cancelled:  # the raw line audio: before echo and gain
                self._said_before_echo[slot] = inputs[slot].copy()
        if self._echo_banks:
            self._cancel_echo(inputs)
        for slot, monitor in list(self._monitors.items()):
            try:
                monitor(inputs[slot])
            except Exception:
                log.exception("event=monitor_failed slot=%d", slot)
                self._monitors.pop(slot, None)
        if self._rx_gain_slots.size:
            self._apply_gain(inputs, self._rx_gain_slots, self._rx_gain)

        if self._topology_dirty:
            self._rebuild_topology()
        outputs = self.outputs
        outputs.fill(0)
        if self._pair_slots.size:
            outputs[self._pair_slots] = inputs[self._pair_peers]
        conference = self._conference_members
        if conference.size:
            said = inputs[conference].astype(np.int32)
            sums = np.add.reduceat(said, self._conference_starts, axis=0)
            outputs[conference] = np.clip(sums[self._conference_group] - said, -32768, 32767)

        playing = np.flatnonzero(self._playing)
        if playing.size:
            positions = self._play_position[playing, None] + self._offsets
            lengths = self._play_length[playing, None]
            looping = self._play_loop[playing, None]
            wrapped = np.where(looping, positions % lengths, np.minimum(positions, lengths - 1))
            frames = self.sounds.samples[self._play_offset[playing, None] + wrapped]
            frames = np.where(looping | (positions < lengths), frames, 0)
            outputs[playing] = np.clip(outputs[playing].astype(np.int32) + frames, -32768, 32767)
            self._play_position[playing] += FRAME_SAMPLES
            ended = playing[
                (~self._play_loop[playing])
                & (self._play_position[playing] >= self._play_length[playing])
            ]
            self._playing[ended] = False
        if self._tx_gain_slots.size:
            self._apply_gain(outputs, self._tx_gain_slots, self._tx_gain)

        said_before_echo = self._said_before_echo
        for slot, recording in self._recordings.items():
            raw = said_before_echo.pop(slot, None)
            recording.said.append(raw if raw is not None else inputs[slot].copy())
            recording.heard.append(outputs[slot].copy())
        said_before_echo.clear()
        for endpoint in self._endpoints:
            endpoint.write_from(outputs)
        self.ticks += 1

    def skip(self, ticks: int) -> None:
        """Ticks dropped by a late clock: endpoints that buffer what they receive (RTP legs)
        play those frames out unheard, so their buffers stay aligned with real time.

        Otherwise every far end would be `ticks` frames further ahead of play-out after each
        stall; a few stalls under load put every RTP leg beyond its fast-lane ring at once,
        all of them fell back to the per-packet path together, and the extra work made the
        next stall longer (at 100 calls/s nine in ten exits from the lane had this cause).
        """
        for endpoint in self._endpoints:
            skip_ticks = getattr(endpoint, "skip_ticks", None)
            if skip_ticks is not None:
                try:
                    skip_ticks(ticks)
                except Exception:
                    log.exception("event=mixer_skip_failed")

    # ----- the clock ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the 20 ms clock runs (between `start` and `stop`)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mixer-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        """Tick on absolute 20 ms deadlines; a late loop catches up or drops, never drifts."""
        # perf_counter, not loop.time(): uvloop's clock has whole-millisecond resolution.
        clock = time.perf_counter
        deadline = clock()
        while True:
            now = clock()
            lateness = now - deadline
            if lateness > _MAX_CATCH_UP_TICKS * TICK_S:
                skipped = int(lateness / TICK_S)
                self.frames_dropped += skipped
                log.warning(
                    "event=mixer_late late_ms=%.1f dropped_frames=%d", lateness * 1e3, skipped
                )
                self.skip(skipped)
                deadline += skipped * TICK_S
                lateness = now - deadline
            index = self.ticks % _LATENESS_HISTORY
            try:
                self.tick()
            except Exception:
                log.exception("event=mixer_tick_failed")
            self._lateness[index] = max(lateness, 0.0)
            self._tick_cost[index] = clock() - now
            deadline += TICK_S
            delay = deadline - clock()
            await asyncio.sleep(max(delay, 0))

    def health(self) -> MixerHealth:
        count = min(self.ticks, _LATENESS_HISTORY)
        lateness = self._lateness[:count] * 1e3 if count else np.zeros(1)
        cost = self._tick_cost[:count] * 1e6 if count else np.zeros(1)
        return MixerHealth(
            ticks=self.ticks,
            late_p50_ms=round(float(np.percentile(lateness, 50)), 3),
            late_p99_ms=round(float(np.percentile(lateness, 99)), 3),
            late_max_ms=round(float(lateness.max()), 3),
            frames_dropped=self.frames_dropped,
            tick_cost_p99_us=round(float(np.percentile(cost, 99)), 1),
            slots_in_use=self.slots_in_use,
            capacity=self._capacity,
        )
