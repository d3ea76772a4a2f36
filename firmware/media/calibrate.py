"""What a recording of a city line says about it: its disconnect tone, noise and echo.

``analyse_recording(said, sent)`` takes the audio a line delivered after dialling (a number
that answers busy or congestion, or a party that answers and hangs up) and, optionally,
what the appliance sent meanwhile (a probe for the echo path). It finds:

* **the disconnect tone**: the tone still sounding at the end of the recording, its one or
  two frequencies (to a fraction of a hertz), its cadence (on/off durations, multi-step
  patterns included, averaged over every cycle heard) and its level;
* **the noise floor**: the level in the tone's silent gaps (outside the probe);
* **the echo path** (with a probe): least-squares impulse response from what was sent to
  what came back, giving the bulk delay, the echo return loss and the tail an echo
  canceller needs;

and returns a ``CalibrationResult`` whose ``settings()`` are the `[[lines]]` keys to store.
Everything is whole-buffer numpy; nothing here touches hardware or the event loop.

Method, in order (docs/disconnect-supervision.md has the why):

1. 20 ms frames with a Hann-windowed spectrum: a frame is *tonal* when its one or two
   strongest peaks hold 80 % of its energy. The last tonal frame, and the tonal frames
   before it with the same peaks, give a first estimate of the tone's frequencies, so
   ringback and speech earlier in the recording are not mistaken for it.
2. A tone envelope at those frequencies (complex demodulation, 20 ms moving average, whose
   nulls every 50 Hz also cancel the other component of a close dual tone), cut at half
   amplitude into on/off runs at 1 ms resolution.
3. The longest periodic stretch of runs at the end of the recording: the smallest period
   (2, 4, 6 or 8 runs) whose runs repeat within 25 ms, over at least two cycles. Its
   per-position averages are the cadence.
4. The frequencies refined on every burst of that stretch (Hann-windowed periodogram on a
   0.02 Hz grid), and the level of each component.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware.media.levels import ZERO_DBM0_POWER, dbm0_to_rms
from firmware.media.tones import SAMPLE_RATE, ToneSpec, format_tone

FRAME = 160
_FFT = 512
_TONAL_FRACTION = 0.8
_SECOND_COMPONENT_DB = -15.0
_FINE_FFT = 32768  # 0.24 Hz bins for the burst spectra (then parabolic interpolation)
_SIGNATURE_FRAMES = 150  # the last 3 s of tonal frames name the tone
_LOBE_BINS = 7  # 109 Hz: a Hann window's main lobe over 20 ms is +-100 Hz
_RUN_RESOLUTION = 8  # samples: runs are measured to 1 ms
_MIN_RUN_MS = 40  # shorter on/off stretches are glitches (a syllable over the tone)
_REPEAT_MS = 25.0
_TONE_LOW_HZ, _TONE_HIGH_HZ = 200.0, 2000.0
NOMINAL_TONE_DBM0 = -13.0  # E.180's usual sending level: what rx_gain_db aims for
MAX_RX_GAIN_DB = 6.0
PROBE_LEVEL_DBM0 = -20.0
ECHO_TAPS = 512  # 64 ms of echo path estimated
MIN_TAIL_MS, MAX_TAIL_MS = 16, 128


class CalibrationError(ValueError):
    """The recording does not show what calibration needs (said in plain words)."""


@dataclass(frozen=True)
class EchoEstimate:
    delay_ms: float  # bulk delay: the strongest tap
    loss_db: float  # echo return loss (ERL) over the probe
    tail_ms: int  # echo canceller tail covering the measured path, with a margin
    response: tuple[float, ...] = field(repr=False, default=())


@dataclass(frozen=True)
class CalibrationResult:
    frequencies: tuple[float, ...]  # refined, Hz
    cadence_ms: tuple[int, ...]  # on, off, on, off...; () for a continuous tone
    component_levels_dbm0: tuple[float, ...]
    noise_floor_dbm0: float
    cycles_seen: int
    cadence_spread_ms: float  # largest difference of one segment between cycles
    echo: EchoEstimate | None

    @property
    def tone(self) -> ToneSpec:
        chord = tuple(float(round(frequency)) for frequency in self.frequencies)
        if not self.cadence_ms:
            return ToneSpec.continuous(chord)
        return ToneSpec.cadenced(chord, self.cadence_ms)

    @property
    def indication(self) -> str:
        """The tone in the config's indications syntax, e.g. ``425/500,0/500``."""
        return format_tone(self.tone)

    @property
    def tone_level_dbm0(self) -> float:
        power = sum(10 ** (level / 10) for level in self.component_levels_dbm0)
        return 10 * math.log10(power)

    @property
    def rx_gain_db(self) -> float:
        """Gain that brings the tone towards the nominal -13 dBm0: never a cut, at most +6."""
        gain = NOMINAL_TONE_DBM0 - self.tone_level_dbm0
        return float(min(max(round(gain), 0.0), MAX_RX_GAIN_DB))

    @property
    def tx_gain_db(self) -> float:
        """What the far end hears cannot be measured from a tone: left at 0 dB."""
        return 0.0

    def settings(self) -> dict[str, Any]:
        """The `[[lines]]` keys to store (config field names, TOML-ready values)."""
        values: dict[str, Any] = {
            "disconnect_tone": self.indication,
            "noise_floor_dbm0": round(self.noise_floor_dbm0, 1),
            "rx_gain_db": self.rx_gain_db,
            "tx_gain_db": self.tx_gain_db,
        }
        if self.echo is not None:
            values["echo_tail_ms"] = self.echo.tail_ms
        return values

    def to_json(self) -> dict[str, Any]:
        return {
            "frequencies_hz": [round(frequency, 2) for frequency in self.frequencies],
            "cadence_ms": list(self.cadence_ms),
            "indication": self.indication,
            "component_levels_dbm0": [round(level, 1) for level in self.component_levels_dbm0],
            "tone_level_dbm0": round(self.tone_level_dbm0, 1),
            "noise_floor_dbm0": round(self.noise_floor_dbm0, 1),
            "cycles_seen": self.cycles_seen,
            "cadence_spread_ms": round(self.cadence_spread_ms, 1),
            "echo": None
            if self.echo is None
            else {
                "delay_ms": round(self.echo.delay_ms, 1),
                "loss_db": round(self.echo.loss_db, 1),
                "tail_ms": self.echo.tail_ms,
            },
            "settings": self.settings(),
        }


def describe(result: dict[str, Any]) -> list[str]:
    """Lines an installer reads (from ``to_json()``, as the control API returns it)."""
    frequencies = " + ".join(f"{value:g} Hz" for value in result["frequencies_hz"])
    cadence = result["cadence_ms"]
    cadence_text = "continuous" if not cadence else " / ".join(f"{ms}" for ms in cadence) + " ms"
    lines = [
        f"disconnect tone: {frequencies}, cadence {cadence_text} "
        f"({result['cycles_seen']} cycles heard, within {result['cadence_spread_ms']} ms)",
        f'  as config: disconnect_tone = "{result["indication"]}"',
        f"tone level: {result['tone_level_dbm0']} dBm0 "
        f"(components {', '.join(str(v) for v in result['component_levels_dbm0'])} dBm0)",
        f"noise floor: {result['noise_floor_dbm0']} dBm0",
    ]
    echo = result.get("echo")
    if echo is None:
        lines.append("echo path: not measured (no probe sent, or no echo above the noise)")
    else:
        lines.append(
            f"echo path: delay {echo['delay_ms']} ms, return loss {echo['loss_db']} dB, "
            f"canceller tail {echo['tail_ms']} ms"
        )
    settings = result["settings"]
    lines.append(f"gains: rx {settings['rx_gain_db']:+g} dB, tx {settings['tx_gain_db']:+g} dB")
    return lines


# ----- the analysis -------------------------------------------------------------------------


def analyse_recording(
    said: np.ndarray, sent: np.ndarray | None = None, *, sample_rate: int = SAMPLE_RATE
) -> CalibrationResult:
    """Analyse a line recording (int16 or float samples at ``sample_rate``); see module doc."""
    if sample_rate != SAMPLE_RATE:
        raise CalibrationError(f"recordings are analysed at {SAMPLE_RATE} Hz, got {sample_rate}")
    signal = np.asarray(said, dtype=np.float64).ravel()
    signal = signal[: signal.size // FRAME * FRAME]
    if signal.size < 2 * SAMPLE_RATE:
        raise CalibrationError("the recording is shorter than 2 s: nothing to learn from")
    first_guess = _last_tone_frequencies(signal)
    envelope = _tone_envelope(signal, first_guess)
    runs = _runs(envelope)
    section = _periodic_section(runs)
    if section is None:
        continuous = _final_continuous(runs)
        if continuous is None:
            raise CalibrationError(
                "the tone at the end of the recording has no regular cadence over two cycles:"
                " record longer (--seconds), or call a number that answers busy"
            )
        bursts = [continuous]
        cadence: tuple[int, ...] = ()
        cycles, spread = 1, 0.0
        gaps: list[tuple[int, int]] = []
    else:
        cadence, cycles, spread, bursts, gaps = section
    frequencies, levels = _refine(signal, first_guess, bursts)
    probe = None if sent is None else np.asarray(sent, dtype=np.float64).ravel()[: signal.size]
    quiet = _probe_free(probe, signal.size)
    noise = _noise_floor(signal, gaps, quiet, frequencies, bursts)
    echo = None
    if probe is not None and np.any(~quiet):
        # The same notch on both sides, so removing the tone does not bend the estimate.
        notched = _remove_tone(probe, frequencies)
        echo = estimate_echo(_remove_tone(signal, frequencies), notched, ~quiet)
    return CalibrationResult(
        frequencies=frequencies,
        cadence_ms=cadence,
        component_levels_dbm0=levels,
        noise_floor_dbm0=noise,
        cycles_seen=cycles,
        cadence_spread_ms=spread,
        echo=echo,
    )


def _frame_spectra(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames = signal.reshape(-1, FRAME) * np.hanning(FRAME)
    spectra = np.abs(np.fft.rfft(frames, _FFT, axis=1)) ** 2
    return spectra, np.fft.rfftfreq(_FFT, 1 / SAMPLE_RATE)


def _peaks(spectrum: np.ndarray, bins: np.ndarray) -> tuple[list[int], float]:
    """The one or two component peaks of a frame (bin indices) and the share they hold.

    A 20 ms frame resolves components about 110 Hz apart or more (480+620 Hz); closer
    pairs (400+450 Hz) show as one broad peak here and are split on whole bursts later.
    """
    index = np.arange(spectrum.size)
    band = (bins >= _TONE_LOW_HZ) & (bins <= _TONE_HIGH_HZ)
    total = float(spectrum[(bins >= 100) & (bins <= 3800)].sum())
    if total <= 0:
        return [], 0.0
    masked = np.where(band, spectrum, 0.0)
    first = int(np.argmax(masked))
    near = np.abs(index - first) <= _LOBE_BINS
    second_masked = np.where(near, 0.0, masked)
    for harmonic in (2, 3):  # distortion of the first is not a second component
        second_masked[np.abs(index - harmonic * first) <= _LOBE_BINS] = 0.0
    second = int(np.argmax(second_masked))
    peaks = [first]
    if spectrum[second] >= spectrum[first] * 10 ** (_SECOND_COMPONENT_DB / 10):
        peaks.append(second)
        near |= np.abs(index - second) <= _LOBE_BINS
    return sorted(peaks), float(spectrum[near].sum()) / total


def _last_tone_frequencies(signal: np.ndarray) -> tuple[float, ...]:
    """Rough frequencies of the tone in the last tonal frames (parabolic peak interpolation)."""
    spectra, bins = _frame_spectra(signal)
    power = signal.reshape(-1, FRAME).var(axis=1)
    loud = power >= ZERO_DBM0_POWER * 10 ** (-50 / 10)
    signatures: list[tuple[int, tuple[int, ...]]] = []
    for index in np.flatnonzero(loud)[::-1]:
        peaks, share = _peaks(spectra[index], bins)
        if share >= _TONAL_FRACTION:
            signatures.append((int(index), tuple(peaks)))
            if len(signatures) >= _SIGNATURE_FRAMES:
                break
    if len(signatures) < 10:
        raise CalibrationError(
            "no tone heard on the line: check the number answers busy or congestion,"
            " and that the line is connected"
        )
    # The most common peaks among the last tonal frames: the tone, not a burst's edge.
    counts: dict[tuple[int, ...], int] = {}
    for _, peaks in signatures:
        counts[peaks] = counts.get(peaks, 0) + 1
    reference = max(counts, key=counts.__getitem__)
    signatures = [item for item in signatures if _same_peaks(list(reference), list(item[1]))]
    average = spectra[[index for index, _ in signatures]].mean(axis=0)
    estimates = []
    for peak in reference:
        left, centre, right = np.log(average[peak - 1 : peak + 2] + 1e-30)
        denominator = left - 2 * centre + right
        shift = 0.5 * (left - right) / denominator if denominator < 0 else 0.0
        estimates.append(float((peak + shift) * SAMPLE_RATE / _FFT))
    return tuple(estimates)


def _same_peaks(reference: list[int], peaks: list[int]) -> bool:
    return len(reference) == len(peaks) and all(
        abs(a - b) <= 1 for a, b in zip(reference, peaks, strict=True)
    )


def _moving_average(values: np.ndarray, length: int) -> np.ndarray:
    """Centred moving average, same length as the input (zeros beyond the edges)."""
    cumulative = np.concatenate([[0], np.cumsum(values)])
    averaged = (cumulative[length:] - cumulative[:-length]) / length
    return np.concatenate(
        [
            np.zeros(length // 2, dtype=averaged.dtype),
            averaged,
            np.zeros(length - length // 2 - 1, dtype=averaged.dtype),
        ]
    )


def _tone_envelope(signal: np.ndarray, frequencies: tuple[float, ...]) -> np.ndarray:
    """Tone power (mean square) per 1 ms, summed over the components.

    Each component is demodulated and averaged over 10 ms (passing +-50 Hz, so a close
    pair such as 400+450 Hz is one band), then its power is averaged over 20 ms, which
    removes the 50 Hz beat of such a pair.
    """
    time = np.arange(signal.size) / SAMPLE_RATE
    power = np.zeros(signal.size)
    for frequency in frequencies:
        baseband = _moving_average(signal * np.exp(-2j * np.pi * frequency * time), FRAME // 2)
        power += _moving_average(2 * np.abs(baseband) ** 2, FRAME)
    usable = power.size // _RUN_RESOLUTION * _RUN_RESOLUTION
    return power[:usable].reshape(-1, _RUN_RESOLUTION).mean(axis=1)


@dataclass
class _Run:
    on: bool
    start_ms: int
    length_ms: int


def _runs(envelope: np.ndarray) -> list[_Run]:
    """On/off runs cut at half amplitude of the tone's level; glitches merged; complete only."""
    on_power = float(np.percentile(envelope, 95))
    on = envelope >= on_power * 0.25
    if np.any(on):  # second pass: half amplitude of the bursts' typical level
        on_power = float(np.median(envelope[on]))
        on = envelope >= on_power * 0.25
    changes = np.flatnonzero(np.diff(on.astype(np.int8)) != 0) + 1
    bounds = np.concatenate([[0], changes, [on.size]])
    runs = [
        _Run(bool(on[start]), int(start), int(stop - start))
        for start, stop in itertools.pairwise(bounds)
    ]
    merged: list[_Run] = []
    for run in runs:
        if merged and (run.length_ms < _MIN_RUN_MS or merged[-1].on == run.on):
            merged[-1].length_ms += run.length_ms
            continue
        merged.append(run)
    # A glitch merged into its predecessor may leave two neighbours alike: join them.
    joined: list[_Run] = []
    for run in merged:
        if joined and joined[-1].on == run.on:
            joined[-1].length_ms += run.length_ms
        else:
            joined.append(run)
    return joined


def _periodic_section(
    runs: list[_Run],
) -> tuple[tuple[int, ...], int, float, list[tuple[int, int]], list[tuple[int, int]]] | None:
    """The cadence of the periodic stretch ending the recording (see module doc, step 3)."""
    complete = runs[1:-1]  # the first and last runs are cut by the recording's edges
    durations = [run.length_ms for run in complete]
    for period in (2, 4, 6, 8):
        length = 0
        for index in range(len(durations) - period - 1, -1, -1):
            if abs(durations[index] - durations[index + period]) > _REPEAT_MS:
                break
            length = len(durations) - index
        if length < 2 * period:
            continue
        section = complete[-length:]
        if not section[0].on:
            section = section[1:]
        cycles = len(section) // period
        if cycles < 2:
            continue
        section = section[: cycles * period]
        positions = [section[offset::period] for offset in range(period)]
        cadence = tuple(
            int(round(np.mean([run.length_ms for run in same]) / 5) * 5) for same in positions
        )
        spread = max(
            max(run.length_ms for run in same) - min(run.length_ms for run in same)
            for same in positions
        )
        bursts = [(run.start_ms, run.length_ms) for run in section if run.on]
        gaps = [(run.start_ms, run.length_ms) for run in section if not run.on]
        if min(cadence) <= 0:
            continue
        return cadence, cycles, float(spread), bursts, gaps
    return None


def _final_continuous(runs: list[_Run]) -> tuple[int, int] | None:
    """A tone sounding without a break for the last 2 s or more."""
    last = runs[-1]
    if last.on and last.length_ms >= 2000:
        return last.start_ms, last.length_ms
    return None


def _refine(
    signal: np.ndarray, rough: tuple[float, ...], bursts: list[tuple[int, int]]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Components resolved on whole bursts, frequencies to 0.02 Hz, levels (step 4)."""
    pieces = []
    for start_ms, length_ms in bursts:
        first = (start_ms + 10) * 8
        stop = (start_ms + length_ms - 10) * 8
        if stop - first >= 400:
            pieces.append(signal[first:stop])
    if not pieces:
        raise CalibrationError("the tone's bursts are too short to measure")
    lobe_hz = 2.5 * SAMPLE_RATE / min(piece.size for piece in pieces)
    bins = np.fft.rfftfreq(_FINE_FFT, 1 / SAMPLE_RATE)
    spectrum = np.zeros(bins.size)
    for piece in pieces:
        window = np.hanning(piece.size)
        spectrum += np.abs(np.fft.rfft(piece * window, _FINE_FFT) * 2 / window.sum()) ** 2
    searched = np.zeros(bins.size, dtype=bool)
    for estimate in rough:
        searched |= np.abs(bins - estimate) <= 70.0
    inner = spectrum[1:-1]
    maxima = np.flatnonzero((inner > spectrum[:-2]) & (inner >= spectrum[2:]) & searched[1:-1]) + 1
    if not maxima.size:
        raise CalibrationError("the tone's frequency could not be measured")
    maxima = maxima[np.argsort(spectrum[maxima])[::-1]]
    strongest = spectrum[maxima[0]]
    chosen: list[float] = []
    for peak in maxima:
        if spectrum[peak] < strongest * 10 ** (_SECOND_COMPONENT_DB / 10) or len(chosen) == 2:
            break
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-30)
        denominator = left - 2 * centre + right
        shift = 0.5 * (left - right) / denominator if denominator < 0 else 0.0
        frequency = float(bins[peak] + shift * (bins[1] - bins[0]))
        if all(abs(frequency - other) > lobe_hz for other in chosen):
            chosen.append(frequency)
    frequencies, levels = [], []
    for frequency in sorted(chosen):
        frequencies.append(frequency)
        amplitudes = [np.sqrt(_periodogram(piece, np.array([frequency]))[0]) for piece in pieces]
        power = float(np.median(amplitudes)) ** 2 / 2
        levels.append(10 * math.log10(max(power, 1e-12) / ZERO_DBM0_POWER))
    return tuple(frequencies), tuple(levels)


def _periodogram(piece: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Squared amplitude of a sine at each grid frequency (Hann window, amplitude-true)."""
    window = np.hanning(piece.size)
    time = np.arange(piece.size) / SAMPLE_RATE
    kernel = np.exp(-2j * np.pi * np.outer(grid, time))
    return np.abs(kernel @ (piece * window) * 2 / window.sum()) ** 2


def _probe_free(probe: np.ndarray | None, size: int) -> np.ndarray:
    """Samples not touched by the probe or its echo (64 ms after it)."""
    quiet = np.ones(size, dtype=bool)
    if probe is None or not probe.size:
        return quiet
    active = np.abs(probe) > dbm0_to_rms(-55.0)
    if not np.any(active):
        return quiet
    indices = np.flatnonzero(active)
    quiet[indices[0] : min(indices[-1] + ECHO_TAPS + 1, size)] = False
    return quiet


def _noise_floor(
    signal: np.ndarray,
    gaps: list[tuple[int, int]],
    quiet: np.ndarray,
    frequencies: tuple[float, ...],
    bursts: list[tuple[int, int]],
) -> float:
    """Median 20 ms power in the tone's gaps (trimmed, probe-free); with no gaps, the
    power the tone does not explain in its bursts."""
    blocks = []
    for start_ms, length_ms in gaps:
        first, stop = (start_ms + 30) * 8, (start_ms + length_ms - 30) * 8
        for begin in range(first, stop - FRAME + 1, FRAME):
            if quiet[begin : begin + FRAME].all():
                blocks.append(np.mean(signal[begin : begin + FRAME] ** 2))
    if not blocks:
        residual = _remove_tone(signal, frequencies)
        for start_ms, length_ms in bursts:
            first, stop = (start_ms + 30) * 8, (start_ms + length_ms - 30) * 8
            for begin in range(first, stop - FRAME + 1, FRAME):
                if quiet[begin : begin + FRAME].all():
                    blocks.append(np.mean(residual[begin : begin + FRAME] ** 2))
    if not blocks:
        raise CalibrationError("no quiet stretch to measure the noise floor in")
    power = max(float(np.median(blocks)), 1e-12)
    return 10 * math.log10(power / ZERO_DBM0_POWER)


def _remove_tone(signal: np.ndarray, frequencies: tuple[float, ...]) -> np.ndarray:
    """The signal minus a least-squares fit of the tone in every 20 ms block."""
    time = np.arange(FRAME) / SAMPLE_RATE
    basis = np.hstack(
        [
            np.column_stack([np.cos(2 * np.pi * f * time), np.sin(2 * np.pi * f * time)])
            for f in frequencies
        ]
    )
    frames = signal.reshape(-1, FRAME)
    # Each block has its own phase origin, so fitting per block absorbs the running phase.
    weights, *_ = np.linalg.lstsq(basis, frames.T, rcond=None)
    return (frames - (basis @ weights).T).ravel()


def estimate_echo(
    received: np.ndarray, probe: np.ndarray, active: np.ndarray
) -> EchoEstimate | None:
    """Least-squares echo path from ``probe`` (what was sent) to ``received`` (what came
    back, the tone removed) over the samples where ``active``; None when no echo stands
    out of the estimate's own noise."""
    indices = np.flatnonzero(active)
    first, stop = int(indices[0]), int(indices[-1]) + 1
    sent = probe[first:stop]
    heard = received[first:stop]
    if sent.size < 4 * ECHO_TAPS:
        return None
    size = 1 << int(np.ceil(np.log2(2 * sent.size)))
    sent_spectrum = np.fft.rfft(sent, size)
    autocorrelation = np.fft.irfft(np.abs(sent_spectrum) ** 2, size)[:ECHO_TAPS]
    cross = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(sent_spectrum), size)[:ECHO_TAPS]
    lags = np.abs(np.subtract.outer(np.arange(ECHO_TAPS), np.arange(ECHO_TAPS)))
    toeplitz = autocorrelation[lags] + 1e-9 * autocorrelation[0] * np.eye(ECHO_TAPS)
    response = np.linalg.solve(toeplitz, cross)
    energy = response**2
    noise = float(np.median(energy))
    peak = float(energy.max())
    significant = np.flatnonzero(energy > max(40 * noise, peak * 1e-4))
    if peak < 50 * noise or not significant.size:
        return None
    echo = np.convolve(sent, response)[: sent.size]
    loss_db = 10 * math.log10(float(np.sum(sent**2)) / max(float(np.sum(echo**2)), 1e-12))
    last = int(significant[-1]) + 1
    tail = int(math.ceil(last / 64) * 8 + 8)  # whole 8 ms blocks, plus 8 ms of margin
    return EchoEstimate(
        delay_ms=float(np.argmax(energy)) / 8,
        loss_db=loss_db,
        tail_ms=min(max(tail, MIN_TAIL_MS), MAX_TAIL_MS),
        response=tuple(float(value) for value in response),
    )


def probe_signal(seconds: float = 2.0, seed: int = 1) -> np.ndarray:
    """White noise at -20 dBm0 (int16, whole frames) sent to measure the echo path."""
    rng = np.random.default_rng(seed)
    length = int(seconds * SAMPLE_RATE) // FRAME * FRAME
    noise = rng.normal(0.0, dbm0_to_rms(PROBE_LEVEL_DBM0), length)
    return np.clip(np.rint(noise), -32768, 32767).astype(np.int16)
