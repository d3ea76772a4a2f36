"""Talk-off: speech-like and music-like signals must not produce DTMF digits.

The pitches and formants here are chosen against the detector: voices whose harmonics
fall on a key's two frequencies, formants sitting on exactly those harmonics, notes
whose octave lands within the deviation threshold of a column tone.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np
import pytest

from firmware.media.dtmf_detect import (
    NO_DIGIT,
    DtmfCriteria,
    block_geometry,
    detect_dtmf,
    judge,
    measure_blocks,
)
from firmware.media.levels import dbm0_to_rms
from firmware.media.tones import DTMF_COLUMN_FREQUENCIES, DTMF_ROW_FREQUENCIES

RATE = 8000


def _at_level(signal: np.ndarray, level_dbm0: float) -> np.ndarray:
    scaled = signal * dbm0_to_rms(level_dbm0) / np.sqrt(np.mean(signal**2))
    return np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)


def _digits(signal: np.ndarray) -> str:
    return "".join(digit.digit for digit in detect_dtmf(signal))


def _formant_gain(frequency: np.ndarray, formants: tuple[float, ...]) -> np.ndarray:
    """Magnitude of a cascade of resonances (bandwidth 80 Hz) and a -12 dB/octave source."""
    gain = np.ones_like(frequency)
    for centre in formants:
        gain = gain / np.sqrt(1 + ((frequency - centre) / 40.0) ** 2)
    return gain * (100.0 / np.maximum(frequency, 100.0)) ** 2 * np.maximum(frequency, 1.0) / 100.0


def _vowel(pitch: np.ndarray, formants: tuple[float, ...]) -> np.ndarray:
    """Harmonics of a moving pitch (per sample), each weighted by the vocal tract."""
    phase = np.cumsum(pitch / RATE)
    out = np.zeros(pitch.size)
    for harmonic in range(1, int(3800 / pitch.max()) + 1):
        out += _formant_gain(harmonic * pitch, formants) * np.sin(2 * np.pi * harmonic * phase)
    return out


# pitch, (F1, F2, F3): the row tone and the column tone are harmonics of the pitch, and the
# first two formants sit on them (the worst a voice can do)
TRAPS = (
    (134.4, (941.0, 1209.0, 2500.0)),  # 7th and 9th harmonics: key *
    (232.3, (697.0, 1626.0, 2600.0)),  # 3rd and 7th: key A
    (174.25, (697.0, 1220.0, 2500.0)),  # 4th and 7th: key 1
    (121.7, (852.0, 1339.0, 2400.0)),  # 7th and 11th: key 8
    (110.0, (770.0, 1210.0, 2400.0)),  # 7th and 11th: key 4
    (213.0, (852.0, 1491.0, 2500.0)),  # 4th and 7th: key 9
)


@pytest.mark.parametrize(("pitch", "formants"), TRAPS)
def test_a_sung_vowel_whose_harmonics_sit_on_a_key_is_not_a_digit(pitch, formants):
    steady = np.full(2 * RATE, pitch)
    vibrato = pitch * (1 + 0.006 * np.sin(2 * np.pi * 5.5 * np.arange(2 * RATE) / RATE))
    for level in (-10.0, -25.0):
        assert _digits(_at_level(_vowel(steady, formants), level)) == ""
        assert _digits(_at_level(_vowel(vibrato, formants), level)) == ""


def test_spoken_vowels_with_moving_pitch_are_not_digits():
    rng = np.random.default_rng(4)
    pieces = []
    vowels = ((730, 1090, 2440), (270, 2290, 3010), (530, 1840, 2480), (300, 870, 2240))
    for _ in range(40):
        base = rng.uniform(90, 320)
        length = int(rng.uniform(0.15, 0.5) * RATE)
        position = np.linspace(0, 1, length)
        pitch = base * (1 + rng.uniform(-0.15, 0.15) * position + 0.03 * np.sin(7 * position))
        scale = rng.uniform(1.0, 1.3)
        formants = tuple(float(value) * scale for value in vowels[rng.integers(len(vowels))])
        envelope = np.sin(np.pi * position) ** 0.5
        pieces.append(_vowel(pitch, formants) * envelope)
        pieces.append(np.zeros(int(rng.uniform(0.02, 0.2) * RATE)))
    assert _digits(_at_level(np.concatenate(pieces), -18.0)) == ""


def _note(frequency: float, seconds: float, harmonics: tuple[float, ...]) -> np.ndarray:
    time = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros(time.size)
    for number, amplitude in enumerate(harmonics, start=1):
        if number * frequency < 3800:
            out += amplitude * np.sin(2 * np.pi * number * frequency * time + number)
    return out


def _midi(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


FLUTE = (1.0, 0.35, 0.12)
STRING = tuple(1 / number for number in range(1, 12))


@pytest.mark.parametrize("timbre", [FLUTE, STRING, (1.0, 0.5)])
def test_single_notes_on_every_semitone_are_not_digits(timbre):
    # G#5 with a flute's octave 9 dB down looks like key C within 2.5 % on both tones
    notes = [_note(_midi(note), 0.4, timbre) for note in range(60, 97)]
    signal = _at_level(np.concatenate(notes), -15.0)
    assert _digits(signal) == ""


def test_chords_of_harmonic_notes_are_not_digits():
    pieces = []
    for root in range(60, 85):
        for shape in ((0, 4, 7), (0, 3, 7), (0, 4, 7, 10), (0, 7)):
            pieces.append(sum(_note(_midi(root + step), 0.3, STRING) for step in shape))
    assert _digits(_at_level(np.concatenate(pieces), -15.0)) == ""


def test_chords_of_three_pure_sines_are_not_digits():
    pieces = []
    for root in range(72, 90):  # C5 to F6: rows and columns both in range
        for shape in ((0, 4, 7), (0, 3, 7), (0, 5, 9), (0, 7, 16), (0, 9, 19)):
            pieces.append(sum(_note(_midi(root + step), 0.3, (1.0,)) for step in shape))
    assert _digits(_at_level(np.concatenate(pieces), -15.0)) == ""


def _glide(start: float, stop: float, seconds: float, harmonics: tuple[float, ...]) -> np.ndarray:
    frequency = np.geomspace(start, stop, int(seconds * RATE))
    phase = np.cumsum(frequency / RATE)
    return sum(
        amplitude * np.sin(2 * np.pi * number * phase)
        for number, amplitude in enumerate(harmonics, start=1)
        if number * stop < 3800 and number * start < 3800
    )


def test_sweeps_are_not_digits():
    pieces = [
        _glide(200.0, 1900.0, 3.0, (1.0,)),
        _glide(1900.0, 200.0, 1.0, (1.0,)),
        _glide(300.0, 1800.0, 2.0, FLUTE),  # fundamental and octave cross rows and columns
        _glide(150.0, 1200.0, 2.0, STRING),
        # two pure sines a fifth apart gliding together
        _glide(500.0, 1100.0, 2.0, (1.0,)) + _glide(750.0, 1650.0, 2.0, (1.0,)),
    ]
    signal = _at_level(
        np.concatenate([np.concatenate((piece, np.zeros(800))) for piece in pieces]), -15.0
    )
    assert _digits(signal) == ""


def test_a_dyad_of_pure_sines_on_a_key_is_a_digit():
    # The limit of any DTMF receiver: F5 (698.5 Hz) and F#6 (1480 Hz) played as pure
    # sines are key 3 (697 + 1477 Hz, 0.2 % off), so music made only of such dyads can
    # talk off; real instruments add harmonics and other notes (the tests above).
    dyad = _note(_midi(77), 0.3, (1.0,)) + _note(_midi(90), 0.3, (1.0,))
    signal = _at_level(np.concatenate((np.zeros(800), dyad, np.zeros(800))), -15.0)
    assert _digits(signal) == "3"


def _espeak(text: str, voice: str) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True, timeout=60
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    samples = samples.astype(float)
    # to 8 kHz: drop everything above 3.6 kHz in the spectrum, then interpolate
    spectrum = np.fft.rfft(samples)
    spectrum[np.fft.rfftfreq(samples.size, 1 / rate) > 3600] = 0
    smooth = np.fft.irfft(spectrum, samples.size)
    times = np.arange(int(samples.size * RATE / rate)) / RATE
    return np.interp(times, np.arange(samples.size) / rate, smooth)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthesised_speech_is_not_digits():
    text = (
        "Thank you for calling. All our operators are busy. Please hold, or press one for"
        " sales, two for support, and zero for the operator. Our office is open from nine"
        " to five, Monday to Friday."
    )
    for voice in ("en", "en+f3", "pt"):
        speech = _espeak(text, voice)
        assert speech.size > 2 * RATE
        for level in (-10.0, -25.0):
            assert _digits(_at_level(speech, level)) == "", voice


@pytest.mark.parametrize(("pitch", "formants"), TRAPS)
def test_the_traps_are_real_traps_held_off_by_the_energy_fraction(pitch, formants):
    # The trap vowels do put their two strongest components on a key's tones, within the
    # deviation threshold, and most of their energy there: only the energy fraction
    # (and the duration) keeps them out.  Margins are documented in docs/dtmf-detector.md.
    vowel = _at_level(_vowel(np.full(RATE, pitch), formants), -15.0)
    length, hop = block_geometry()
    measured = measure_blocks(np.lib.stride_tricks.sliding_window_view(vowel, length)[::hop])
    row_tone = min(DTMF_ROW_FREQUENCIES, key=lambda tone: abs(tone - formants[0]))
    column_tone = min(DTMF_COLUMN_FREQUENCIES, key=lambda tone: abs(tone - formants[1]))
    assert (measured.row == DTMF_ROW_FREQUENCIES.index(row_tone)).all()
    assert (measured.column == DTMF_COLUMN_FREQUENCIES.index(column_tone)).all()
    assert np.abs(measured.row_deviation).max() < 0.015  # inside the accept region
    assert np.abs(measured.column_deviation).max() < 0.015
    fraction = measured.energy_fraction
    assert 0.7 < fraction.max() < DtmfCriteria().min_energy_fraction
    assert (judge(measured, DtmfCriteria()) == NO_DIGIT).all()
