"""The line echo canceller on single talk: convergence on simulated hybrids, bulk delay,
echo path changes, sines, silence, clipping, channels and bad input.

ERLE here is the linear canceller's (NLP off): echo power over residual-echo power, where
the residual is exactly the output minus what the line added besides the echo (nothing in
these tests), so it cannot be flattered by the NLP or the comfort noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.echo import EchoCanceller
from firmware.media.hybrid import RESPONSE_KINDS, HybridEchoPath, pink_noise, speech_like
from firmware.media.levels import dbm0_to_rms, power_to_dbm0

RATE = 8000


def _int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _cancel(canceller: EchoCanceller, far: np.ndarray, line: np.ndarray) -> np.ndarray:
    frames = far.size // 160
    return np.concatenate(
        [
            canceller.process(
                far[index * 160 : (index + 1) * 160], line[index * 160 : (index + 1) * 160]
            )
            for index in range(frames)
        ]
    ).astype(float)


def _erle_db(echo: np.ndarray, output: np.ndarray, start_s: float, stop_s: float) -> float:
    part = slice(int(start_s * RATE), int(stop_s * RATE))
    return float(10 * np.log10(np.sum(echo[part] ** 2) / max(np.sum(output[part] ** 2), 1e-9)))


def _echo_and_line(far: np.ndarray, path: HybridEchoPath) -> tuple[np.ndarray, np.ndarray]:
    echo = path.echo(far.astype(float))
    return echo, _int16(echo)


def _noise(kind: str, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "white":
        return _int16(rng.normal(0.0, dbm0_to_rms(-15.0), int(seconds * RATE)))
    return _int16(pink_noise(seconds, rng, -15.0))


@pytest.mark.parametrize("kind", RESPONSE_KINDS)
@pytest.mark.parametrize("delay_ms", [0, 10, 30])
@pytest.mark.parametrize("signal", ["white", "pink"])
def test_erle_reaches_25_db_within_one_second_on_every_hybrid(kind, delay_ms, signal):
    erl_db = 6.0 if delay_ms != 10 else 20.0  # the lowest ERL is the hardest for Geigel
    far = _noise(signal, 2.0, seed=delay_ms + 1)
    echo, line = _echo_and_line(far, HybridEchoPath.of_kind(kind, delay_ms=delay_ms, erl_db=erl_db))
    output = _cancel(EchoCanceller(32, nlp=False), far, line)
    assert _erle_db(echo, output, 1.0, 1.2) >= 25.0
    assert _erle_db(echo, output, 1.0, 2.0) >= 25.0


@pytest.mark.parametrize(("kind", "delay_ms"), [("medium", 0), ("long", 10), ("resonant", 30)])
def test_speech_is_cancelled_by_25_db_once_converged(kind, delay_ms):
    far = _int16(speech_like(6.0, np.random.default_rng(11), -15.0))
    echo, line = _echo_and_line(far, HybridEchoPath.of_kind(kind, delay_ms=delay_ms, erl_db=10.0))
    output = _cancel(EchoCanceller(32, nlp=False), far, line)
    assert _erle_db(echo, output, 3.0, 6.0) >= 25.0


def test_with_the_nlp_no_audible_echo_is_left_after_one_second_of_speech():
    far = _int16(speech_like(6.0, np.random.default_rng(12), -15.0))
    path = HybridEchoPath.of_kind("long", delay_ms=10, erl_db=6.0, noise_dbm0=-70.0, seed=1)
    line = path.receive(far)
    output = _cancel(EchoCanceller(32), far, line)
    frames = output[RATE:].reshape(-1, 160)
    levels = power_to_dbm0(np.mean(frames**2, axis=1))
    # echo alone on the line is up to -21 dBm0; 99 % of frames after 1 s are below -55 dBm0
    assert np.percentile(levels, 99) < -55.0


@pytest.mark.parametrize("delay_ms", [30, 50])
def test_the_bulk_delay_is_found_and_the_window_placed_just_before_the_echo(delay_ms):
    far = _noise("pink", 1.0, seed=3)
    path = HybridEchoPath.of_kind("medium", delay_ms=delay_ms, erl_db=12.0)
    canceller = EchoCanceller(32, nlp=False)
    _cancel(canceller, far, _echo_and_line(far, path)[1])
    assert delay_ms - 3.0 <= canceller.state().bulk_delay_ms <= delay_ms


def test_without_the_delay_search_a_delay_beyond_the_tail_is_not_cancelled():
    far = _noise("pink", 2.0, seed=3)
    echo, line = _echo_and_line(far, HybridEchoPath.of_kind("medium", delay_ms=40, erl_db=12.0))
    output = _cancel(EchoCanceller(32, max_bulk_delay_ms=0, nlp=False), far, line)
    assert _erle_db(echo, output, 1.0, 2.0) < 3.0


def test_a_long_tail_covers_a_delay_without_the_search():
    far = _noise("pink", 2.0, seed=4)
    echo, line = _echo_and_line(far, HybridEchoPath.of_kind("long", delay_ms=30, erl_db=12.0))
    output = _cancel(EchoCanceller(64, max_bulk_delay_ms=0, nlp=False), far, line)
    assert _erle_db(echo, output, 1.0, 2.0) >= 25.0


def test_an_echo_path_change_is_learnt_again_within_one_second():
    far = _noise("pink", 5.0, seed=5)
    before = HybridEchoPath.of_kind("medium", delay_ms=0, erl_db=12.0)
    after = HybridEchoPath.of_kind("resonant", delay_ms=8, erl_db=8.0, response_seed=9)
    echo = np.concatenate(
        (before.echo(far[: 2 * RATE].astype(float)), after.echo(far[2 * RATE :].astype(float)))
    )
    output = _cancel(EchoCanceller(32, nlp=False), far, _int16(echo))
    assert _erle_db(echo, output, 1.5, 2.0) >= 25.0
    assert _erle_db(echo, output, 2.0, 2.1) < 10.0  # the new path is not cancelled at once
    assert _erle_db(echo, output, 3.0, 5.0) >= 25.0


@pytest.mark.parametrize("frequency", [300.0, 1004.0, 2800.0])
def test_a_steady_sine_is_cancelled(frequency):
    time = np.arange(3 * RATE) / RATE
    far = _int16(dbm0_to_rms(-10.0) * np.sqrt(2) * np.sin(2 * np.pi * frequency * time))
    echo, line = _echo_and_line(far, HybridEchoPath.of_kind("long", delay_ms=10, erl_db=6.0))
    output = _cancel(EchoCanceller(32, nlp=False), far, line)
    assert _erle_db(echo, output, 1.0, 3.0) >= 25.0


def test_with_no_far_end_the_near_end_comes_back_unchanged():
    near = _int16(speech_like(3.0, np.random.default_rng(6), -10.0))
    silence = np.zeros_like(near)
    output = _cancel(EchoCanceller(32), silence, near)
    assert np.array_equal(output, near)


def test_after_the_far_end_stops_the_near_end_is_untouched_again():
    far = _noise("white", 2.0, seed=7)
    far[RATE:] = 0
    near = _int16(speech_like(2.0, np.random.default_rng(8), -20.0))
    near[:RATE] = 0
    path = HybridEchoPath.of_kind("medium", delay_ms=10, erl_db=12.0)
    line = _int16(path.echo(far.astype(float)) + near)
    output = _cancel(EchoCanceller(32), far, line)
    # the window (64 ms) plus the bulk delay search range (64 ms) has passed after 0.2 s
    settled = slice(int(1.2 * RATE), 2 * RATE)
    assert np.array_equal(output[settled], near[settled])


def test_full_scale_signals_clip_instead_of_wrapping_around():
    rng = np.random.default_rng(9)
    far = _int16(rng.normal(0.0, 8000.0, 2 * RATE))
    path = HybridEchoPath(np.array([-1.0]), erl_db=1.0)  # an inverted, barely attenuated echo
    canceller = EchoCanceller(32, nlp=False)
    _cancel(canceller, far, _int16(path.echo(far.astype(float))))
    loud_far = np.full(160, 30000, dtype=np.int16)
    near = np.full(160, 32767, dtype=np.int16)
    outputs = [canceller.process(loud_far, near) for _ in range(5)]
    last = outputs[-1]
    assert last.dtype == np.int16
    # near minus an echo estimate of about -26700 is far above full scale: clipped, not negative
    assert np.all(last == 32767)


def test_channels_in_one_canceller_behave_as_separate_cancellers():
    rng = np.random.default_rng(10)
    fars, lines = [], []
    for channel, (kind, delay) in enumerate([("short", 0), ("long", 30), ("resonant", 12)]):
        far = _int16(speech_like(2.0, rng, -15.0 - channel))
        path = HybridEchoPath.of_kind(kind, delay_ms=delay, erl_db=10.0 + channel)
        fars.append(far)
        lines.append(_int16(path.echo(far.astype(float)) + rng.normal(0, 30, far.size)))
    # as many fit slots as rows: no row waits for one (test_echo_speech.py has the bank of 8)
    bank = EchoCanceller(32, channels=3, comfort_noise=False, max_fitting=3)
    together = np.concatenate(
        [
            bank.process(
                np.stack([far[start : start + 160] for far in fars]),
                np.stack([line[start : start + 160] for line in lines]),
            )
            for start in range(0, 2 * RATE, 160)
        ],
        axis=1,
    )
    for channel in range(3):
        alone = _cancel(EchoCanceller(32, comfort_noise=False), fars[channel], lines[channel])
        assert np.array_equal(together[channel], alone)


def test_reset_forgets_one_channel_only():
    far = _noise("pink", 1.0, seed=11)
    line = _echo_and_line(far, HybridEchoPath.of_kind("short", erl_db=10.0))[1]
    bank = EchoCanceller(32, channels=2, nlp=False)
    for start in range(0, RATE, 160):
        bank.process(
            np.stack([far[start : start + 160]] * 2), np.stack([line[start : start + 160]] * 2)
        )
    bank.reset(1)
    frame = slice(0, 160)
    output = bank.process(np.stack([far[frame]] * 2), np.stack([line[frame]] * 2))
    assert np.array_equal(output[1], line[frame])  # no far history, no filter: untouched
    assert not np.array_equal(output[0], line[frame])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tail_ms": 4}, "tail_ms 4 must be 8-128"),
        ({"tail_ms": 256}, "tail_ms 256 must be 8-128"),
        ({"max_bulk_delay_ms": 300}, "max_bulk_delay_ms 300 must be 0-256"),
        ({"channels": 0}, "channels must be 1 or more"),
        ({"max_fitting": 0}, "max_fitting must be 1 or more"),
    ],
)
def test_bad_settings_are_refused_with_the_range(options, message):
    with pytest.raises(ValueError, match=message):
        EchoCanceller(**options)


def test_frames_of_the_wrong_shape_are_refused():
    canceller = EchoCanceller(32, channels=2)
    with pytest.raises(ValueError, match="channels x 160"):
        canceller.process(np.zeros(160, np.int16), np.zeros(160, np.int16))
    with pytest.raises(ValueError, match=r"shape \(2, 160\)"):
        canceller.process(np.zeros((2, 80), np.int16), np.zeros((2, 80), np.int16))
