"""The anti-alias resampler (firmware/media/resample.py), measured with plain FFTs."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.resample import resample


def tone(frequency: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0):
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(round(rate * seconds)) / rate)


def steady(samples: np.ndarray, rate: int = 8000) -> np.ndarray:
    """The middle, away from the filter's start-up and run-out (100 ms each side)."""
    edge = rate // 10
    return samples[edge:-edge]


def level_db(samples: np.ndarray, reference: np.ndarray) -> float:
    return 10 * np.log10(np.mean(samples**2) / np.mean(reference**2))


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    index = int(np.argmax(spectrum))
    # Parabolic interpolation between bins.
    left, centre, right = np.log(spectrum[index - 1 : index + 2])
    offset = 0.5 * (left - right) / (left - 2 * centre + right)
    return (index + offset) * rate / samples.size


@pytest.mark.parametrize("rate", [11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000])
def test_passband_tones_keep_frequency_and_level(rate: int) -> None:
    for frequency in (300.0, 1000.0, 3400.0, 3900.0):
        source = tone(frequency, rate)
        output = resample(source, rate, 8000)
        assert output.size == 8000
        assert peak_frequency(steady(output), 8000) == pytest.approx(frequency, abs=0.5)
        assert level_db(steady(output), source) == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_tones_above_4100_hz_are_60_db_down_instead_of_folding_back(rate: int) -> None:
    for frequency in (4100.0, 4500.0, 6000.0, 7900.0):
        source = tone(frequency, rate)
        output = resample(source, rate, 8000)
        assert level_db(steady(output), source) < -60.0, frequency


def test_6_khz_at_16_khz_is_attenuated_by_more_than_40_db() -> None:
    # Decimating without a filter would put it at 2 kHz at full level.
    source = tone(6000.0, 16000)
    naive = source[::2]
    assert level_db(naive, source) > -0.1
    assert level_db(steady(resample(source, 16000, 8000)), source) < -40.0


def test_timing_is_kept_an_impulse_lands_at_the_same_instant() -> None:
    source = np.zeros(44100)
    source[22050] = 1.0  # t = 0.5 s
    output = resample(source, 44100, 8000)
    assert int(np.argmax(output)) == 4000


def test_length_is_rounded_up_and_same_rate_is_a_copy() -> None:
    assert resample(np.ones(11), 11025, 8000).size == 8  # ceil(11 * 320 / 441)
    source = np.arange(5.0)
    copied = resample(source, 8000, 8000)
    assert copied.tolist() == source.tolist() and copied is not source


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((2, 2)), 16000, 8000)
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(4), 0, 8000)
