"""Tone detection on 20 ms frames: Goertzel power, tone presence and cadences.

How a frame is judged (``ToneDetector``)
----------------------------------------
Each frame is least-squares fitted with sines and cosines at the tone's
frequencies (all components of a dual tone jointly).  The frame carries the tone
when the fit explains at least ``min_energy_fraction`` (70 %) of the frame's
energy, every component is at or above ``min_level_dbm0`` (-40 dBm0) and the
components are within ``max_twist_db`` of each other.

Why a joint fit and not per-bin Goertzel energy: dual tones such as 400+450 Hz
or 440+480 Hz are 40-50 Hz apart, less than the ~50 Hz resolution of a 20 ms
frame, so their bins overlap and summed bin energies can be double-counted or
cancelled depending on phase.  A joint fit divides energy exactly and the
"fraction of energy explained" is naturally bounded by 1.  No window is used:
with a rectangular frame the fit is most selective (a 1004 Hz test tone does
not pass for 950 Hz) and components at multiples of 50 Hz are orthogonal.

Frequency offsets (±1.5 % is allowed by E.180 and happens with sample-clock
errors) are covered by fitting on a grid of common scale factors
1 ± ``frequency_tolerance`` (default ±2 %) with steps of at most 10 Hz and
keeping the best; the loss between grid points is below 10 %.

A frame only partly covered by a burst is explained in proportion to the
covered part, so a burst boundary inside a frame makes that frame count when
about 70 % or more of it is tone: measured burst lengths are within about one
frame of the truth, well inside the cadence tolerance.

All the work is matrix products on (frames x samples) arrays with tables cached
per (frame length, frequencies).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from firmware.media.levels import peak_to_dbm0, power_to_dbm0
from firmware.media.tones import FRAME_MS, SAMPLE_RATE, ToneSpec, frame_samples

SILENT_LABEL = -1
_MAX_GRID_STEP_HZ = 10.0


def split_frames(samples: np.ndarray, frame_length: int = 160) -> np.ndarray:
    """View a 1-D buffer as (frames x frame_length); a trailing partial frame is dropped."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected a 1-D sample buffer, got shape {samples.shape}")
    count = samples.size // frame_length
    return samples[: count * frame_length].reshape(count, frame_length)


@lru_cache(maxsize=128)
def _dft_tables(
    length: int, frequencies: tuple[float, ...], sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    phase = 2.0 * np.pi * np.outer(np.arange(length), frequencies) / sample_rate
    cosines, sines = np.cos(phase), np.sin(phase)
    cosines.flags.writeable = False
    sines.flags.writeable = False
    return cosines, sines


def goertzel_power(
    samples: np.ndarray, frequencies: Sequence[float], sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Power at each frequency, scaled so a sine of amplitude A gives A**2 / 2.

    Same value as the Goertzel recursion, computed as one matrix product so a
    (frames x samples) array is analysed at once: 1-D input gives shape
    (freqs,), 2-D gives (frames, freqs).  Pass the result to
    ``levels.power_to_dbm0`` for dBm0.
    """
    block = np.asarray(samples, dtype=float)
    if block.ndim not in (1, 2) or block.shape[-1] == 0:
        raise ValueError(f"expected a non-empty 1-D or 2-D array, got shape {block.shape}")
    length = block.shape[-1]
    cosines, sines = _dft_tables(length, tuple(float(f) for f in frequencies), sample_rate)
    real = block @ cosines
    imaginary = block @ sines
    return 2.0 * (real**2 + imaginary**2) / length**2


def frame_level_dbm0(frames: np.ndarray) -> np.ndarray:
    """RMS level of each frame (last axis) in dBm0; a 1-D input is one frame (0-d result)."""
    block = np.asarray(frames, dtype=float)
    return np.asarray(power_to_dbm0(np.mean(block**2, axis=-1)))


class _ChordTables(NamedTuple):
    basis: np.ndarray  # (samples, scales * 2m): orthonormal columns, one block per scale
    coefficient_maps: np.ndarray  # (scales, 2m, 2m): R^-1, from projections to cos/sin weights


@lru_cache(maxsize=128)
def chord_tables(
    length: int, chord: tuple[float, ...], scales: tuple[float, ...], sample_rate: int
) -> _ChordTables:
    time = np.arange(length) / sample_rate
    blocks = []
    inverses = []
    for scale in scales:
        phase = np.outer(time, 2.0 * np.pi * scale * np.asarray(chord))
        basis = np.empty((length, 2 * len(chord)))
        basis[:, 0::2] = np.cos(phase)
        basis[:, 1::2] = np.sin(phase)
        orthonormal, triangular = np.linalg.qr(basis)
        blocks.append(orthonormal)
        inverses.append(np.linalg.inv(triangular))
    tables = _ChordTables(np.hstack(blocks), np.stack(inverses))
    for table in tables:
        table.flags.writeable = False
    return tables


def _scale_grid(chord: tuple[float, ...], tolerance: float) -> tuple[float, ...]:
    """Odd number of scale factors spanning ±tolerance, at most 10 Hz apart at the top."""
    if tolerance <= 0:
        return (1.0,)
    count = max(3, math.ceil(2 * tolerance * max(chord) / _MAX_GRID_STEP_HZ) + 1)
    count += 1 - count % 2
    return tuple(float(scale) for scale in np.linspace(1 - tolerance, 1 + tolerance, count))


class ToneDetector:
    """Decides per 20 ms frame whether it carries a tone (see module docstring).

    Built from a ``ToneSpec`` every distinct frequency set of its steps is a
    candidate "chord" (one for busy tone, three for the special information
    tone); built from a frequency list it is that one chord (``(350, 440)`` is
    the dual tone, not either frequency).
    """

    def __init__(
        self,
        tone: ToneSpec | Sequence[float],
        *,
        min_energy_fraction: float = 0.7,
        min_level_dbm0: float = -40.0,
        max_twist_db: float = 10.0,
        frequency_tolerance: float = 0.02,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        if isinstance(tone, ToneSpec):
            chords = tone.chords
        else:
            chords = (tuple(float(frequency) for frequency in tone),) if len(tone) else ()
        if not chords:
            raise ValueError("nothing to detect: the tone has no frequencies")
        for chord in chords:
            if any(not 0 < frequency < sample_rate / 2 for frequency in chord):
                raise ValueError(f"frequencies {chord} not detectable at {sample_rate} Hz")
            if len(set(chord)) != len(chord):
                raise ValueError(f"frequencies of a chord must differ, got {chord}")
        self.chords: tuple[tuple[float, ...], ...] = chords
        self.min_energy_fraction = min_energy_fraction
        self.min_level_dbm0 = min_level_dbm0
        self.max_twist_db = max_twist_db
        self.sample_rate = sample_rate
        self._scales = tuple(_scale_grid(chord, frequency_tolerance) for chord in chords)

    def classify(self, frames: np.ndarray) -> np.ndarray:
        """Index into ``chords`` of what each frame carries, ``SILENT_LABEL`` (-1) if none.

        ``frames`` is (frames x samples); a 1-D array is one frame.
        """
        block = np.asarray(frames, dtype=float)
        if block.ndim == 1:
            block = block[np.newaxis]
        if block.ndim != 2 or block.shape[1] == 0:
            raise ValueError(f"expected (frames x samples), got shape {block.shape}")
        count, length = block.shape
        rows = np.arange(count)
        energy = np.einsum("ij,ij->i", block, block)
        safe_energy = np.where(energy > 0, energy, 1.0)
        labels = np.full(count, SILENT_LABEL, dtype=np.int64)
        best_fraction = np.zeros(count)
        for index, chord in enumerate(self.chords):
            tables = chord_tables(length, chord, self._scales[index], self.sample_rate)
            width = 2 * len(chord)
            projections = (block @ tables.basis).reshape(count, -1, width)
            explained = np.einsum("fsk,fsk->fs", projections, projections)
            best_scale = np.argmax(explained, axis=1)
            fraction = explained[rows, best_scale] / safe_energy
            # Component levels only matter (and are only paid for) where the fit is good.
            candidates = np.flatnonzero(
                (fraction >= self.min_energy_fraction) & (fraction > best_fraction)
            )
            if not candidates.size:
                continue
            scales = best_scale[candidates]
            weights = np.einsum(
                "fij,fj->fi",
                tables.coefficient_maps[scales],
                projections[candidates, scales],
            )
            levels = peak_to_dbm0(np.hypot(weights[:, 0::2], weights[:, 1::2]))
            level_ok = np.all(levels >= self.min_level_dbm0, axis=1) & (
                np.ptp(levels, axis=1) <= self.max_twist_db
            )
            accepted = candidates[level_ok]
            labels[accepted] = index
            best_fraction[accepted] = fraction[accepted]
        return labels

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """Boolean per frame: does it carry (any chord of) the tone."""
        return self.classify(frames) != SILENT_LABEL

    def feed(self, frame: np.ndarray) -> bool:
        """Whether this single frame carries the tone."""
        return bool(self.classify(frame)[0] != SILENT_LABEL)


@dataclass
class _Run:
    label: int
    duration_ms: float
    frames: int
    start_seen: bool  # False for the run in progress when listening started


class CadenceDetector:
    """Recognises a tone by its frequencies *and* its cadence, frame by frame.

    Repeating tones fire after ``cycles`` complete cycles whose every segment
    (including which chord sounds, e.g. the SIT's 950/1400/1800 Hz order) lies
    within ±max(20 %, 40 ms) of the spec.  Play-once tones fire after the whole
    sequence was heard once.  Continuous tones fire once present for
    ``min_duration_ms``; note such a detector also fires on any burst longer
    than that (raise it above 2 s to rule out ringback bursts).

    Segments are measured from the first transition seen, so listening may start
    mid-cycle.  A single-frame blip (detection dropout or a straddled boundary)
    is absorbed into its neighbours when every segment of the spec is at least
    three frames long.  Detection latches until ``reset()``.
    """

    def __init__(
        self,
        tone: ToneSpec,
        *,
        cycles: int = 2,
        min_duration_ms: float = 400.0,
        relative_tolerance: float = 0.2,
        absolute_tolerance_ms: float = 40.0,
        detector: ToneDetector | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        if cycles < 1:
            raise ValueError("cycles must be at least 1")
        self.tone = tone
        self.detector = detector or ToneDetector(tone, sample_rate=sample_rate)
        self.sample_rate = self.detector.sample_rate
        self.cycles = cycles
        self.min_duration_ms = min_duration_ms
        self.relative_tolerance = relative_tolerance
        self.absolute_tolerance_ms = absolute_tolerance_ms
        self._pattern = self._build_pattern(tone)
        self._continuous = tone.is_continuous or (tone.repeat and len(self._pattern) == 1)
        if self._continuous:
            self._runs_needed = 0
        elif tone.repeat:
            self._runs_needed = cycles * len(self._pattern)
        else:
            self._runs_needed = len(self._pattern)
        shortest = min(duration for _, duration in self._pattern)
        self._absorb_blips = shortest >= 3 * FRAME_MS
        self._runs: deque[_Run] = deque(maxlen=self._runs_needed + 2)
        self._current: _Run | None = None
        self._detected = False

    def _build_pattern(self, tone: ToneSpec) -> list[tuple[int, int]]:
        """Expected (label, ms) runs: adjacent equal labels merged, wrap-around too."""
        pattern: list[tuple[int, int]] = []
        for step in tone.steps:
            if step.frequencies:
                try:
                    label = self.detector.chords.index(step.frequencies)
                except ValueError:
                    raise ValueError(
                        f"detector does not know the chord {step.frequencies} of this tone"
                    ) from None
            else:
                label = SILENT_LABEL
            if pattern and pattern[-1][0] == label:
                pattern[-1] = (label, pattern[-1][1] + step.duration_ms)
            else:
                pattern.append((label, step.duration_ms))
        if tone.repeat and len(pattern) > 1 and pattern[0][0] == pattern[-1][0]:
            pattern[0] = (pattern[0][0], pattern[0][1] + pattern.pop()[1])
        if not tone.repeat:
            while pattern and pattern[0][0] == SILENT_LABEL:
                pattern.pop(0)
            while pattern and pattern[-1][0] == SILENT_LABEL:
                pattern.pop()
        if not any(label != SILENT_LABEL for label, _ in pattern):
            raise ValueError("a silent tone has no cadence to detect")
        return pattern

    @property
    def detected(self) -> bool:
        return self._detected

    def reset(self) -> None:
        self._runs.clear()
        self._current = None
        self._detected = False

    def feed(self, frame: np.ndarray) -> bool:
        """Add one frame; True once the tone has been recognised (latched)."""
        block = np.asarray(frame)
        label = int(self.detector.classify(block)[0])
        self._advance(label, 1000.0 * block.shape[-1] / self.sample_rate)
        return self._detected

    def feed_frames(self, frames: np.ndarray) -> bool:
        """Add many frames at once: (frames x samples), or 1-D whole 20 ms frames."""
        block = np.asarray(frames)
        if block.ndim == 1:
            length = frame_samples(self.sample_rate)
            if block.size % length:
                raise ValueError(f"1-D input must be whole frames of {length} samples")
            block = block.reshape(-1, length)
        frame_ms = 1000.0 * block.shape[1] / self.sample_rate
        for label in self.detector.classify(block).tolist():
            self._advance(label, frame_ms)
        return self._detected

    def _advance(self, label: int, frame_ms: float) -> None:
        current = self._current
        if current is None:
            self._current = _Run(label, frame_ms, 1, start_seen=False)
        elif label == current.label:
            current.duration_ms += frame_ms
            current.frames += 1
        else:
            if current.frames == 1 and self._absorb_blips and self._runs:
                previous = self._runs.pop()
                if previous.label == label:
                    # blip inside a run: resume that run as if it never broke
                    previous.duration_ms += current.duration_ms + frame_ms
                    previous.frames += current.frames + 1
                    self._current = previous
                    return
                previous.duration_ms += current.duration_ms
                self._complete(previous)
            else:
                self._complete(current)
            self._current = _Run(label, frame_ms, 1, start_seen=True)
        if self._continuous:
            run = self._current
            if run.label == self._pattern[0][0] and run.duration_ms >= self.min_duration_ms:
                self._detected = True

    def _complete(self, run: _Run) -> None:
        self._runs.append(run)
        if not self._continuous and not self._detected and len(self._runs) >= self._runs_needed:
            self._detected = self._tail_matches()

    def _tail_matches(self) -> bool:
        tail = list(self._runs)[-self._runs_needed :]
        if not all(run.start_seen for run in tail):
            return False
        period = len(self._pattern)
        rotations = range(period) if self.tone.repeat else (0,)
        return any(
            all(
                self._segment_matches(run, self._pattern[(rotation + offset) % period])
                for offset, run in enumerate(tail)
            )
            for rotation in rotations
        )

    def _segment_matches(self, run: _Run, expected: tuple[int, int]) -> bool:
        label, duration_ms = expected
        tolerance = max(self.relative_tolerance * duration_ms, self.absolute_tolerance_ms)
        return run.label == label and abs(run.duration_ms - duration_ms) <= tolerance


def _detector_for(frequencies: ToneSpec | Sequence[float], sample_rate: int) -> ToneDetector:
    return ToneDetector(frequencies, sample_rate=sample_rate)


def tone_present(
    samples: np.ndarray,
    frequencies: ToneSpec | Sequence[float],
    min_fraction: float = 0.5,
    *,
    sample_rate: int = SAMPLE_RATE,
) -> bool:
    """True when at least ``min_fraction`` of the buffer's 20 ms frames carry the tone.

    For cadenced tones remember the silent part counts against the fraction
    (busy tone is about half on).
    """
    frames = split_frames(np.asarray(samples), frame_samples(sample_rate))
    if not len(frames):
        return False
    return bool(np.mean(_detector_for(frequencies, sample_rate).detect(frames)) >= min_fraction)


def find_tone_onset(
    samples: np.ndarray,
    frequencies: ToneSpec | Sequence[float],
    *,
    min_consecutive_frames: int = 1,
    sample_rate: int = SAMPLE_RATE,
) -> float | None:
    """Seconds from the buffer start to the first frame carrying the tone, or None.

    Frames are cut from the start of the buffer, so the result is a multiple
    of 20 ms; the true onset lies at most ~6 ms before it or 20 ms after.
    ``min_consecutive_frames`` > 1 ignores isolated false hits in noisy captures.
    """
    length = frame_samples(sample_rate)
    frames = split_frames(np.asarray(samples), length)
    hits = _detector_for(frequencies, sample_rate).detect(frames).astype(np.int64)
    if min_consecutive_frames > 1:
        window = np.ones(min_consecutive_frames, dtype=np.int64)
        hits = np.convolve(hits, window, mode="valid") >= min_consecutive_frames
    indices = np.flatnonzero(hits)
    if not indices.size:
        return None
    return float(indices[0] * length / sample_rate)
