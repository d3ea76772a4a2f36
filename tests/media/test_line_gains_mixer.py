"""Per-slot gains in the mixer (`Mixer.set_gain`), ticked by hand: where in the tick they
apply (receive gain after the echo canceller and the monitors, send gain last), saturation,
0 dB untouched, and a send gain changed during a call not disturbing the canceller."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.hybrid import HybridEchoPath, pink_noise
from firmware.media.levels import dbm0_to_rms
from firmware.media.mixer import FRAME_SAMPLES, Mixer

RATE = 8000
FRAMES_PER_SECOND = RATE // FRAME_SAMPLES


def _int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _gained(frame: np.ndarray, gain_db: float) -> np.ndarray:
    return _int16(frame.astype(float) * 10 ** (gain_db / 20))


class Port:
    """A slot's far side: says the frames of `signal` in turn, keeps what it was sent. With
    a `path` it is a city line that also returns the echo of last tick's frame."""

    def __init__(
        self, slot: int, signal: np.ndarray, path: HybridEchoPath | None = None, seed: int = 0
    ) -> None:
        self.slot = slot
        self.signal = _int16(signal)
        self.path = path
        self.rng = np.random.default_rng(seed)
        self.position = 0
        self.said: list[np.ndarray] = []
        self.echoes: list[np.ndarray] = []
        self.heard: list[np.ndarray] = [np.zeros(FRAME_SAMPLES, dtype=np.int16)]

    def read_into(self, inputs: np.ndarray) -> None:
        start, self.position = self.position, self.position + FRAME_SAMPLES
        frame = np.zeros(FRAME_SAMPLES)
        part = self.signal[start : start + FRAME_SAMPLES]
        frame[: part.size] = part
        if self.path is not None:
            echo = self.path.echo(self.heard[-1])
            self.echoes.append(echo)
            frame += echo + self.rng.normal(0.0, dbm0_to_rms(-65.0), FRAME_SAMPLES)
        said = _int16(frame)
        self.said.append(said)
        inputs[self.slot] = said

    def write_from(self, outputs: np.ndarray) -> None:
        self.heard.append(outputs[self.slot].copy())


def _noise(seconds: float, level_dbm0: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, dbm0_to_rms(level_dbm0), int(seconds * RATE))


def _call(line_signal: np.ndarray, extension_signal: np.ndarray) -> tuple[Mixer, Port, Port]:
    mixer = Mixer(capacity=8)
    extension = Port(mixer.allocate("fxs:1"), extension_signal)
    line = Port(mixer.allocate("fxo:9"), line_signal)
    mixer.add_endpoint(line)
    mixer.add_endpoint(extension)
    mixer.connect(extension.slot, line.slot)
    return mixer, line, extension


def test_receive_gain_reaches_the_bridge_and_not_the_lines_monitor() -> None:
    mixer, line, extension = _call(_noise(1.0, -20.0, 1), np.zeros(RATE))
    monitored: list[np.ndarray] = []
    mixer.set_monitor(line.slot, lambda frame: monitored.append(frame.copy()))
    mixer.set_gain(line.slot, rx_db=6.0)
    for _ in range(10):
        mixer.tick()
    said = np.concatenate(line.said)
    # the detectors hear line levels: what they were tuned and calibrated on
    np.testing.assert_array_equal(np.concatenate(monitored), said)
    np.testing.assert_array_equal(np.concatenate(extension.heard[1:]), _gained(said, 6.0))


def test_recordings_raw_and_as_heard() -> None:
    mixer, line, _ = _call(_noise(1.0, -20.0, 1), _noise(1.0, -20.0, 2))
    mixer.set_gain(line.slot, rx_db=6.0, tx_db=-6.0)
    raw = mixer.start_recording(line.slot)
    for _ in range(10):
        mixer.tick()
    mixer.stop_recording(line.slot)
    # calibration's recording: the line audio before any gain, and what the line was sent
    np.testing.assert_array_equal(np.concatenate(raw.said), np.concatenate(line.said))
    np.testing.assert_array_equal(np.concatenate(raw.heard), np.concatenate(line.heard[1:]))
    heard = mixer.start_recording(line.slot, echo_cancelled=True)
    for _ in range(10):
        mixer.tick()
    np.testing.assert_array_equal(
        np.concatenate(heard.said), _gained(np.concatenate(line.said[10:]), 6.0)
    )


def test_send_gain_is_what_the_line_gets_and_what_stays_in_outputs() -> None:
    mixer, line, extension = _call(np.zeros(RATE), _noise(1.0, -20.0, 2))
    mixer.set_gain(line.slot, tx_db=-6.0)
    for _ in range(10):
        mixer.tick()
        # the next tick's echo canceller reference is this row: what really went out
        np.testing.assert_array_equal(mixer.outputs[line.slot], line.heard[-1])
    np.testing.assert_array_equal(
        np.concatenate(line.heard[1:]), _gained(np.concatenate(extension.said), -6.0)
    )
    # the extension's own slot is not scaled
    assert not np.any(np.concatenate(extension.heard))


def test_gains_saturate_rather_than_wrap() -> None:
    loud = 20000 * np.sin(2 * np.pi * 500 * np.arange(RATE // 5) / RATE)
    mixer, line, extension = _call(loud, -loud)
    mixer.set_gain(line.slot, rx_db=12.0, tx_db=12.0)
    for _ in range(10):
        mixer.tick()
    for heard, said in ((extension.heard[1:], line.said), (line.heard[1:], extension.said)):
        heard, said = np.concatenate(heard).astype(int), np.concatenate(said).astype(float)
        np.testing.assert_array_equal(heard, np.clip(np.rint(said * 10**0.6), -32768, 32767))
        assert heard.max() == 32767 and heard.min() == -32768


def test_zero_db_is_untouched_and_release_forgets_the_gain() -> None:
    mixer, line, extension = _call(_noise(1.0, -10.0, 1), _noise(1.0, -10.0, 2))
    mixer.set_gain(line.slot, rx_db=3.0, tx_db=-3.0)
    assert mixer.gain_db(line.slot) == (3.0, -3.0)
    mixer.set_gain(line.slot)  # back to 0 dB
    assert mixer._rx_gain_slots.size == 0 and mixer._tx_gain_slots.size == 0
    for _ in range(10):
        mixer.tick()
    np.testing.assert_array_equal(np.concatenate(extension.heard[1:]), np.concatenate(line.said))
    np.testing.assert_array_equal(np.concatenate(line.heard[1:]), np.concatenate(extension.said))
    mixer.set_gain(line.slot, rx_db=6.0)
    mixer.release(line.slot)
    slot = mixer.allocate("fxo:10")
    assert slot == line.slot and mixer.gain_db(slot) == (0.0, 0.0)
    with pytest.raises(ValueError, match="at most"):
        mixer.set_gain(slot, rx_db=30.0)


def test_a_send_gain_changed_in_a_call_does_not_disturb_the_echo_canceller() -> None:
    """The canceller's reference is what went to the line, gain included: a reload that
    changes the send gain changes the echo and its reference alike, so the echo path the
    canceller learnt still holds (a reference taken before the gain would be off by it)."""
    seconds = 4.0
    far = pink_noise(seconds, np.random.default_rng(3), -15.0)
    path = HybridEchoPath.of_kind("medium", delay_ms=10.0, erl_db=12.0)
    mixer = Mixer(capacity=8)
    extension = Port(mixer.allocate("fxs:1"), far)
    line = Port(mixer.allocate("fxo:9"), np.zeros(int(seconds * RATE)), path)
    mixer.add_endpoint(line)
    mixer.add_endpoint(extension)
    mixer.connect(extension.slot, line.slot)
    mixer.enable_echo_cancel(line.slot, 32)
    change = int(2.5 * FRAMES_PER_SECOND)
    for tick in range(int(seconds * FRAMES_PER_SECOND)):
        if tick == change:
            mixer.set_gain(line.slot, tx_db=-9.0)
        mixer.tick()

    def erle_db(frames: slice) -> float:
        echo = np.concatenate(line.echoes[frames])
        heard = np.concatenate(extension.heard[1:][frames]).astype(float)
        return float(10 * np.log10(np.sum(echo**2) / max(np.sum(heard**2), 1.0)))

    assert erle_db(slice(change - 25, change)) >= 20.0
    # right after the change, frame by frame: never more echo than 20 dB under what came in
    for start in range(change, change + 25, 5):
        assert erle_db(slice(start, start + 5)) >= 20.0, start
