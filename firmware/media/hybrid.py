"""A simulated 2-wire/4-wire hybrid: the echo a city line sends back of what we send to it.

An FXO port's hybrid is never perfectly balanced against the line, so part of what the
appliance sends (the *far end* for the echo canceller) comes back mixed into what the line
sends (the *near end*). The echo is the far end through the hybrid's impulse response: a
bulk delay (codec, card buffering, 0-30 ms in the tests), then a short dispersive response
(a few to ~25 ms), attenuated by the echo return loss (ERL, 6-20 dB on real lines).

Responses are generated, not measured: exponentially decaying noise, band-limited to the
telephone band like a line transformer, in four kinds (``RESPONSE_KINDS``) of increasing
dispersion, one of them ringing like a transformer resonance. Each is normalised to unit
energy, so the ERL is the white-noise ERL: ``10 log10(1 / sum(h**2))`` of the scaled path.
The same seed gives the same response, so tests and benchmarks are reproducible.

Used by the echo canceller's tests and benchmark and by the line simulator: the path is
streaming (call ``echo``/``receive`` frame by frame, it keeps the far end's history) and
works the same on a whole signal in one call.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from firmware.media.codecs import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from firmware.media.levels import ZERO_DBM0_PEAK, dbm0_to_rms

SAMPLE_RATE = 8000
Companding = Literal["alaw", "ulaw"]

# kind: (length ms, decay time constant ms, resonance Hz or 0, resonance share of energy)
_KINDS: dict[str, tuple[float, float, float, float]] = {
    "short": (4.0, 0.8, 0.0, 0.0),  # a well-matched line: a quick reflection
    "medium": (12.0, 2.5, 0.0, 0.0),  # a typical local loop
    "long": (24.0, 5.0, 0.0, 0.0),  # a long loaded loop: slow decay
    "resonant": (16.0, 3.0, 320.0, 0.6),  # transformer ringing at a low frequency
}
RESPONSE_KINDS = tuple(_KINDS)


def _telephone_band(frequencies: np.ndarray) -> np.ndarray:
    """300-3400 Hz with second-order skirts: what a line transformer and codec pass."""
    high_pass = (frequencies / 300.0) ** 2 / np.sqrt(1 + (frequencies / 300.0) ** 4)
    low_pass = 1 / np.sqrt(1 + (frequencies / 3400.0) ** 8)
    return high_pass * low_pass


def hybrid_response(kind: str, *, seed: int = 0) -> np.ndarray:
    """A unit-energy dispersive echo response (no bulk delay) of the given kind at 8 kHz."""
    if kind not in _KINDS:
        raise ValueError(f"unknown hybrid response {kind!r}: choose one of {RESPONSE_KINDS}")
    length_ms, decay_ms, resonance_hz, resonance_share = _KINDS[kind]
    rng = np.random.default_rng(seed)
    length = round(length_ms * SAMPLE_RATE / 1000)
    time_ms = np.arange(length) * 1000.0 / SAMPLE_RATE
    envelope = np.exp(-time_ms / decay_ms)
    response = rng.normal(0.0, 1.0, length) * envelope
    response[0] += 2.0 * rng.choice((-1.0, 1.0))  # the direct reflection dominates
    if resonance_hz:
        ringing = np.sin(2 * np.pi * resonance_hz * time_ms / 1000.0) * envelope
        ringing *= np.sqrt(resonance_share / (1 - resonance_share)) * np.linalg.norm(response)
        ringing /= np.linalg.norm(ringing)
        response += ringing
    # band-limit on a longer grid so the filter's own ringing is kept, then fade out
    size = 1 << (4 * length - 1).bit_length()
    spectrum = np.fft.rfft(response, size) * _telephone_band(np.fft.rfftfreq(size, 1 / SAMPLE_RATE))
    shaped = np.fft.irfft(spectrum, size)[:length]
    fade = max(length // 8, 1)
    shaped[-fade:] *= 0.5 * (1 + np.cos(np.pi * np.arange(1, fade + 1) / fade))
    return shaped / np.linalg.norm(shaped)


class HybridEchoPath:
    """Far end in, echo (and the line's near-end signal) out, frame by frame or in one go.

    ``delay_ms`` is the bulk delay before the response starts, ``erl_db`` the echo return
    loss (white-noise), ``noise_dbm0`` white line noise added by ``receive``,
    ``distortion_db`` a cubic nonlinearity before the response (the level of the third
    harmonic of a 0 dBm0 sine relative to that sine, e.g. -40), ``companding`` an A-law or µ-law
    round trip of what ``receive`` returns, as a line card's codec does.
    """

    def __init__(
        self,
        response: np.ndarray,
        *,
        delay_ms: float = 0.0,
        erl_db: float = 12.0,
        noise_dbm0: float | None = None,
        distortion_db: float | None = None,
        companding: Companding | None = None,
        seed: int = 0,
    ) -> None:
        response = np.asarray(response, dtype=float)
        if response.ndim != 1 or not response.size or not np.any(response):
            raise ValueError("the echo response must be a non-empty, non-zero 1-D array")
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be 0 or more, got {delay_ms}")
        if companding not in (None, "alaw", "ulaw"):
            raise ValueError(f"companding must be 'alaw', 'ulaw' or None, got {companding!r}")
        self.delay_samples = round(delay_ms * SAMPLE_RATE / 1000)
        self.erl_db = erl_db
        scaled = response / np.linalg.norm(response) * 10.0 ** (-erl_db / 20.0)
        self.impulse_response = np.concatenate((np.zeros(self.delay_samples), scaled))
        self.noise_rms = 0.0 if noise_dbm0 is None else dbm0_to_rms(noise_dbm0)
        self._cubic = 0.0 if distortion_db is None else 4.0 * 10.0 ** (distortion_db / 20.0)
        self.companding = companding
        self._history = np.zeros(self.impulse_response.size - 1)
        self._rng = np.random.default_rng(seed)

    @classmethod
    def of_kind(cls, kind: str, *, response_seed: int = 0, **options: object) -> HybridEchoPath:
        """A path with a generated response (``hybrid_response``), e.g. ``of_kind("long",
        delay_ms=30, erl_db=6)``."""
        return cls(hybrid_response(kind, seed=response_seed), **options)  # type: ignore[arg-type]

    def echo(self, far: np.ndarray) -> np.ndarray:
        """The echo (float samples) of this stretch of far end, continuing the last call."""
        samples = np.asarray(far, dtype=float)
        if samples.ndim != 1:
            raise ValueError(f"expected a 1-D far-end stretch, got shape {samples.shape}")
        if self._cubic:
            samples = samples + self._cubic * samples**3 / ZERO_DBM0_PEAK**2
        extended = np.concatenate((self._history, samples))
        if self._history.size:
            self._history = extended[-self._history.size :]
        return np.convolve(extended, self.impulse_response, mode="valid")

    def receive(self, far: np.ndarray, near: np.ndarray | None = None) -> np.ndarray:
        """What the FXO port hears (int16): the echo of ``far`` plus the near-end talker
        ``near`` (same length, or none) plus line noise, clipped, through the codec."""
        line = self.echo(far)
        if near is not None:
            near = np.asarray(near, dtype=float)
            if near.shape != line.shape:
                raise ValueError(f"near end has shape {near.shape}, far end {line.shape}")
            line = line + near
        if self.noise_rms:
            line = line + self._rng.normal(0.0, self.noise_rms, line.size)
        received = np.clip(np.rint(line), -32768, 32767).astype(np.int16)
        if self.companding == "alaw":
            received = alaw_decode(alaw_encode(received))
        elif self.companding == "ulaw":
            received = mulaw_decode(mulaw_encode(received))
        return received

    def reset(self) -> None:
        """Forget the far end's history (a new call on the simulated line)."""
        self._history[:] = 0.0


# ----- test excitations -------------------------------------------------------------------

# (F1, F2, F3) of vowels (Peterson & Barney 1952, rounded)
_VOWELS = np.array(
    [
        (270, 2290, 3010),
        (390, 1990, 2550),
        (530, 1840, 2480),
        (660, 1720, 2410),
        (730, 1090, 2440),
        (570, 840, 2410),
        (300, 870, 2240),
        (490, 1350, 1690),
    ],
    dtype=float,
)
_FORMANT_BANDWIDTHS = (80.0, 100.0, 140.0)


def _at_active_level(signal: np.ndarray, level_dbm0: float) -> np.ndarray:
    """Scale so the 20 ms frames within 20 dB of the loudest have the given mean level."""
    frames = signal[: signal.size // 160 * 160].reshape(-1, 160)
    power = np.mean(frames**2, axis=1)
    active = power[power > power.max() * 0.01] if np.any(power) else power
    if not active.size or not np.any(active):
        return signal
    return signal * dbm0_to_rms(level_dbm0) / np.sqrt(np.mean(active))


def speech_like(seconds: float, rng: np.random.Generator, level_dbm0: float = -20.0) -> np.ndarray:
    """A talker: syllables (120-320 ms) of voiced harmonics through vowel formants, with a
    moving pitch (men and women), some fricative noise, grouped in talk spurts of 0.6-2.5 s
    between pauses of 0.2-0.9 s, like conversational speech (activity about 65 %).

    Float samples at 8 kHz, active-speech level ``level_dbm0``. Not intelligible, but it has
    what matters to an echo canceller: a coloured, changing spectrum and a syllabic
    envelope with gaps.
    """
    total = round(seconds * SAMPLE_RATE)
    pitch = np.zeros(total)
    envelope = np.zeros(total)
    noise_share = np.zeros(total)
    formants = np.zeros((total, 3))
    position = 0
    base = rng.uniform(95.0, 230.0)
    while position < total:
        spurt_end = position + round(rng.uniform(0.6, 2.5) * SAMPLE_RATE)
        while position < min(spurt_end, total):
            length = round(rng.uniform(0.12, 0.32) * SAMPLE_RATE)
            stop = min(position + length, total)
            count = stop - position
            phase = np.linspace(0.0, 1.0, count)
            start_pitch = base * rng.uniform(0.85, 1.2)
            pitch[position:stop] = start_pitch * (1 + rng.uniform(-0.2, 0.1) * phase)
            envelope[position:stop] = np.sin(np.pi * phase) ** 0.6 * rng.uniform(0.4, 1.0)
            noise_share[position:stop] = np.where(phase < 0.25, rng.uniform(0, 0.6), 0.02)
            formants[position:stop] = _VOWELS[rng.integers(len(_VOWELS))] * rng.uniform(0.95, 1.2)
            position = stop
        pause = round(rng.uniform(0.2, 0.9) * SAMPLE_RATE)
        pitch[position : position + pause] = base
        formants[position : position + pause] = formants[position - 1]
        position += pause
    pitch = pitch[:total]
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = np.zeros(total)
    for harmonic in range(1, int(3800 / pitch.min()) + 1):
        frequency = harmonic * pitch
        gain = np.where(frequency < 3800, 1.0 / harmonic, 0.0)  # -6 dB/octave source
        for index, bandwidth in enumerate(_FORMANT_BANDWIDTHS):
            gain = gain / np.sqrt(1 + ((frequency - formants[:, index]) / (bandwidth / 2)) ** 2)
        voiced += gain * np.sin(harmonic * phase + harmonic)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12
    hiss = rng.normal(0.0, 1.0, total)
    spectrum = np.fft.rfft(hiss)
    frequencies = np.fft.rfftfreq(total, 1 / SAMPLE_RATE)
    hiss = np.fft.irfft(spectrum * ((frequencies > 2000) & (frequencies < 3800)), total)
    hiss /= np.sqrt(np.mean(hiss**2)) + 1e-12
    signal = envelope * ((1 - noise_share) * voiced + noise_share * hiss)
    return _at_active_level(signal, level_dbm0)


def pink_noise(seconds: float, rng: np.random.Generator, level_dbm0: float = -20.0) -> np.ndarray:
    """Noise falling 3 dB per octave from 100 Hz (flat below), 8 kHz, at ``level_dbm0``."""
    total = round(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.normal(0.0, 1.0, total))
    frequencies = np.fft.rfftfreq(total, 1 / SAMPLE_RATE)
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(frequencies, 100.0)), total)
    return pink * dbm0_to_rms(level_dbm0) / np.sqrt(np.mean(pink**2))
