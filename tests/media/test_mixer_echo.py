"""Echo cancellation in the mixer (`Mixer.enable_echo_cancel`), ticked by hand.

A simulated city line sits on one slot: each tick it says its own talker plus the hybrid's
echo of what the mixer sent it the tick before (as the card plays a frame while the next
is recorded), with line noise. An extension on another slot is bridged to it: what the
extension says is the line's far end, what it hears is the line's audio after the mixer.
ERLE here is the echo that came in over what the extension heard of it.
"""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.hybrid import HybridEchoPath, pink_noise, speech_like
from firmware.media.levels import dbm0_to_rms
from firmware.media.mixer import ECHO_BANK_ROWS, FRAME_SAMPLES, Mixer

RATE = 8000
FRAMES_PER_SECOND = RATE // FRAME_SAMPLES


def _int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


class HybridLine:
    """A city line on `slot`: talker + echo of last tick's output + noise, frame by frame."""

    def __init__(
        self,
        slot: int,
        path: HybridEchoPath | None,
        talker: np.ndarray | None = None,
        noise_dbm0: float | None = -65.0,
        seed: int = 0,
    ) -> None:
        self.slot = slot
        self.path = path
        self.talker = talker
        self.noise_rms = 0.0 if noise_dbm0 is None else dbm0_to_rms(noise_dbm0)
        self.rng = np.random.default_rng(seed)
        self.sent = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.echoes: list[np.ndarray] = []
        self.said: list[np.ndarray] = []
        self.position = 0

    def read_into(self, inputs: np.ndarray) -> None:
        start, self.position = self.position, self.position + FRAME_SAMPLES
        talker = np.zeros(FRAME_SAMPLES)
        if self.talker is not None and start < self.talker.size:
            part = self.talker[start : start + FRAME_SAMPLES]
            talker[: part.size] = part
        echo = self.path.echo(self.sent) if self.path is not None else np.zeros(FRAME_SAMPLES)
        self.echoes.append(echo)
        frame = _int16(echo + talker + self.rng.normal(0.0, self.noise_rms, FRAME_SAMPLES))
        self.said.append(frame)
        inputs[self.slot] = frame

    def write_from(self, outputs: np.ndarray) -> None:
        self.sent = outputs[self.slot].copy()


class Talker:
    """An extension on `slot` saying `signal` (then silence) and keeping what it heard."""

    def __init__(self, slot: int, signal: np.ndarray) -> None:
        self.slot = slot
        self.signal = _int16(signal)
        self.heard: list[np.ndarray] = []
        self.position = 0

    def read_into(self, inputs: np.ndarray) -> None:
        start, self.position = self.position, self.position + FRAME_SAMPLES
        frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        part = self.signal[start : start + FRAME_SAMPLES]
        frame[: part.size] = part
        inputs[self.slot] = frame

    def write_from(self, outputs: np.ndarray) -> None:
        self.heard.append(outputs[self.slot].copy())


def _call(
    far: np.ndarray,
    path: HybridEchoPath | None,
    *,
    talker: np.ndarray | None = None,
    tail_ms: int | None = 32,
) -> tuple[Mixer, HybridLine, Talker]:
    """Run a whole call: extension saying `far` bridged to a line with `path`."""
    mixer = Mixer(capacity=8)
    extension_slot, line_slot = mixer.allocate("fxs:1"), mixer.allocate("fxo:9")
    line = HybridLine(line_slot, path, talker)
    extension = Talker(extension_slot, far)
    mixer.add_endpoint(line)
    mixer.add_endpoint(extension)
    mixer.connect(extension_slot, line_slot)
    if tail_ms is not None:
        mixer.enable_echo_cancel(line_slot, tail_ms)
    for _ in range(far.size // FRAME_SAMPLES):
        mixer.tick()
    return mixer, line, extension


def _erle_db(line: HybridLine, extension: Talker, seconds: slice) -> float:
    frames = slice(seconds.start * FRAMES_PER_SECOND, seconds.stop * FRAMES_PER_SECOND)
    echo = np.concatenate(line.echoes[frames])
    heard = np.concatenate(extension.heard[frames]).astype(float)
    return float(10 * np.log10(np.sum(echo**2) / max(np.sum(heard**2), 1.0)))


# ----- cancelling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "delay_ms", "erl_db"),
    [("medium", 10.0, 12.0), ("long", 30.0, 6.0), ("resonant", 0.0, 20.0)],
)
def test_echo_of_a_noise_far_end_is_removed_within_a_second(kind, delay_ms, erl_db) -> None:
    far = pink_noise(3.0, np.random.default_rng(1), -15.0)
    path = HybridEchoPath.of_kind(kind, delay_ms=delay_ms, erl_db=erl_db)
    _, line, extension = _call(far, path)
    assert _erle_db(line, extension, slice(1, 3)) >= 20.0
    # without the canceller the extension hears its own echo in full (0 dB)
    _, line, extension = _call(
        far, HybridEchoPath.of_kind(kind, delay_ms=delay_ms, erl_db=erl_db), tail_ms=None
    )
    assert abs(_erle_db(line, extension, slice(1, 3))) < 0.5


@pytest.mark.parametrize("seed", [2, 3])
def test_echo_of_speech_is_removed_after_two_seconds(seed) -> None:
    far = speech_like(5.0, np.random.default_rng(seed), -15.0)
    path = HybridEchoPath.of_kind("medium", delay_ms=10.0, erl_db=12.0, response_seed=seed)
    mixer, line, extension = _call(far, path)
    assert _erle_db(line, extension, slice(2, 5)) >= 20.0
    state = mixer.echo_state(line.slot)
    assert state is not None
    assert state.bulk_delay_ms == pytest.approx(10.0 - 1.0, abs=2.0)  # the window opens 1 ms early


def test_a_city_caller_talking_over_the_echo_comes_through() -> None:
    """3 s of our extension alone (converged), then 3 s of both talking at once."""
    far = speech_like(6.0, np.random.default_rng(5), -15.0)
    caller = speech_like(6.0, np.random.default_rng(105), -20.0)
    caller[: 3 * RATE] = 0.0
    path = HybridEchoPath.of_kind("medium", delay_ms=10.0, erl_db=12.0)
    extension = _call(far, path, talker=caller)[2]
    talk = slice(3 * RATE, 6 * RATE)
    heard = np.concatenate(extension.heard).astype(float)[talk]
    clean = caller[talk]
    error = heard - clean  # residual echo, noise, and whatever the caller lost
    assert 10 * np.log10(np.sum(clean**2) / np.sum(error**2)) >= 15.0
    # without the canceller the same comparison is ruined by the echo
    extension = _call(
        far,
        HybridEchoPath.of_kind("medium", delay_ms=10.0, erl_db=12.0),
        talker=caller,
        tail_ms=None,
    )[2]
    heard = np.concatenate(extension.heard).astype(float)[talk]
    assert 10 * np.log10(np.sum(clean**2) / np.sum((heard - clean) ** 2)) < 10.0


# ----- what it leaves alone -----------------------------------------------------------------


def test_a_slot_without_echo_cancellation_is_untouched_bit_for_bit() -> None:
    """Two lines, one with the canceller: the other's audio reaches its extension as said."""
    mixer = Mixer(capacity=8)
    slots = [mixer.allocate(name) for name in ("fxs:1", "fxo:9", "fxs:2", "fxo:10")]
    rng = np.random.default_rng(7)
    lines = [
        HybridLine(slots[1], HybridEchoPath.of_kind("medium", delay_ms=5.0, erl_db=10.0), seed=1),
        HybridLine(slots[3], HybridEchoPath.of_kind("medium", delay_ms=5.0, erl_db=10.0), seed=2),
    ]
    talkers = [Talker(slots[0], pink_noise(2.0, rng, -15)), Talker(slots[2], pink_noise(2.0, rng))]
    for endpoint in (*lines, *talkers):
        mixer.add_endpoint(endpoint)
    mixer.connect(slots[0], slots[1])
    mixer.connect(slots[2], slots[3])
    mixer.enable_echo_cancel(slots[1], 32)
    for _ in range(2 * FRAMES_PER_SECOND):
        mixer.tick()
    assert np.array_equal(np.concatenate(talkers[1].heard), np.concatenate(lines[1].said))
    assert _erle_db(lines[0], talkers[0], slice(1, 2)) >= 20.0
    # disabled during the call: from the next tick on, as said
    mixer.disable_echo_cancel(slots[1])
    assert mixer.echo_state(slots[1]) is None
    before = len(talkers[0].heard)
    for _ in range(10):
        mixer.tick()
    assert np.array_equal(
        np.concatenate(talkers[0].heard[before:]), np.concatenate(lines[0].said[before:])
    )


def test_a_line_sent_nothing_is_passed_as_said_and_not_processed() -> None:
    """An idle line (ringing, not seized): nothing is sent to it, its audio passes bit for
    bit, and once the canceller's memory of sent audio is silent no canceller runs."""
    mixer = Mixer(capacity=8)
    slot = mixer.allocate("fxo:9")
    caller = pink_noise(1.0, np.random.default_rng(8), -20.0)
    line = HybridLine(slot, HybridEchoPath.of_kind("short", erl_db=10.0), talker=caller)
    received: list[np.ndarray] = []
    mixer.add_endpoint(line)
    mixer.enable_echo_cancel(slot, 32)
    mixer.set_monitor(slot, lambda frame: received.append(frame.copy()))
    bank = mixer._echo_banks[0]
    calls = []
    process = bank.canceller.process
    bank.canceller.process = lambda far, near: calls.append(1) or process(far, near)
    for _ in range(FRAMES_PER_SECOND):
        mixer.tick()
    assert np.array_equal(np.concatenate(received), np.concatenate(line.said))
    memory_frames = -(-bank.canceller.history // FRAME_SAMPLES)
    assert len(calls) == memory_frames  # then skipped: its far history is all zero
    mixer.sounds.add("beep", np.full(FRAME_SAMPLES, 1000, dtype=np.int16), loop=True)
    mixer.play(slot, "beep")
    mixer.tick()  # sent this tick ...
    assert len(calls) == memory_frames
    mixer.tick()  # ... its echo may come from now on
    assert len(calls) == memory_frames + 1


# ----- slots, banks, recordings -------------------------------------------------------------


def test_slots_share_a_bank_per_tail_and_a_full_bank_opens_another() -> None:
    mixer = Mixer(capacity=32)
    slots = [mixer.allocate(f"fxo:{index}") for index in range(ECHO_BANK_ROWS + 2)]
    for slot in slots[:-1]:
        mixer.enable_echo_cancel(slot, 32)
    mixer.enable_echo_cancel(slots[-1], 48)
    tails = sorted((bank.tail_ms, bank.rows.size) for bank in mixer._echo_banks)
    assert tails == [(32, 1), (32, ECHO_BANK_ROWS), (48, 1)]
    mixer.enable_echo_cancel(slots[0], 32)  # again, same tail: nothing moves
    assert sorted(bank.rows.size for bank in mixer._echo_banks) == [1, 1, ECHO_BANK_ROWS]
    mixer.enable_echo_cancel(slots[0], 48)  # another tail: moves to that bank
    assert sorted((bank.tail_ms, bank.rows.size) for bank in mixer._echo_banks) == [
        (32, 1),
        (32, ECHO_BANK_ROWS - 1),
        (48, 2),
    ]
    mixer.release(slots[ECHO_BANK_ROWS])  # the second 32 ms bank's only slot: bank dropped
    mixer.disable_echo_cancel(slots[-1])
    mixer.disable_echo_cancel(slots[0])
    assert [(bank.tail_ms, bank.rows.size) for bank in mixer._echo_banks] == [
        (32, ECHO_BANK_ROWS - 1)
    ]
    for slot in slots[1:ECHO_BANK_ROWS]:
        mixer.release(slot)
    assert mixer._echo_banks == []
    mixer.tick()


@pytest.mark.parametrize("tail_ms", [0, 7, 129])
def test_a_tail_out_of_range_is_refused_saying_the_range(tail_ms) -> None:
    mixer = Mixer(capacity=4)
    slot = mixer.allocate("fxo:9")
    with pytest.raises(ValueError, match="8-128"):
        mixer.enable_echo_cancel(slot, tail_ms)
    assert mixer.echo_state(slot) is None


def test_reset_forgets_the_echo_path() -> None:
    far = pink_noise(1.5, np.random.default_rng(9), -15.0)
    mixer, line, _ = _call(far, HybridEchoPath.of_kind("medium", delay_ms=10.0, erl_db=12.0))
    state = mixer.echo_state(line.slot)
    assert state is not None and state.erle_db > 20.0
    mixer.reset_echo(line.slot)
    state = mixer.echo_state(line.slot)
    assert state is not None and (state.erle_db, state.bulk_delay_ms) == (0.0, 0.0)


def test_recordings_keep_the_line_audio_unless_asked_for_the_cleaned() -> None:
    """Line calibration measures the line's echo from a recording: it needs it raw."""
    mixer = Mixer(capacity=8)
    extension_slot, line_slot = mixer.allocate("fxs:1"), mixer.allocate("fxo:9")
    line = HybridLine(line_slot, HybridEchoPath.of_kind("medium", delay_ms=10.0, erl_db=12.0))
    extension = Talker(extension_slot, pink_noise(2.0, np.random.default_rng(10), -15.0))
    mixer.add_endpoint(line)
    mixer.add_endpoint(extension)
    mixer.connect(extension_slot, line_slot)
    mixer.enable_echo_cancel(line_slot, 32)
    raw = mixer.start_recording(line_slot)
    for _ in range(FRAMES_PER_SECOND):
        mixer.tick()
    mixer.stop_recording(line_slot)
    cleaned = mixer.start_recording(line_slot, echo_cancelled=True)
    for _ in range(FRAMES_PER_SECOND):
        mixer.tick()
    assert np.array_equal(np.concatenate(raw.said), np.concatenate(line.said[:FRAMES_PER_SECOND]))
    assert np.array_equal(
        np.concatenate(cleaned.said), np.concatenate(extension.heard[FRAMES_PER_SECOND:])
    )
    assert np.array_equal(
        np.concatenate(raw.heard), np.concatenate(extension.signal[:RATE].reshape(-1, 160))
    )
