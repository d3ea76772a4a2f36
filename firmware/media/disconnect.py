"""Disconnect supervision on city-line audio: the far end's clearing tone, and silence.

Many exchanges give no electrical sign when the far party hangs up: the line only carries
the busy, congestion or "disconnect" tone. ``DisconnectToneDetector`` recognises such a
tone (learned by ``minipbx line calibrate`` or taken from the country's plan) on the
20 ms frames a city line says, in the mixer tick, without ever firing on speech, music,
music-on-hold echo or DTMF. ``SilenceTimer`` is the last resort when nothing at all is
heard. See docs/disconnect-supervision.md for the reasoning and the measured figures.

How it decides (each criterion is a talk-off guard)
---------------------------------------------------
Per frame: a joint least-squares fit of the tone's components (one or two frequencies), on
a small grid of scale factors so a detuned tone still fits, gives the **energy fraction**
the tone explains, each component's level, the twist between them, and each component's
complex amplitude ("phasor") at the nominal frequency. A frame is *on* (labelled with its
chord) when the fraction is at least ``min_energy_fraction`` and the levels are plausible.

Per burst (a run of on frames): the phase advance of the phasors from frame to frame (the
pulse-pair estimator) gives the burst's **frequency to a fraction of a hertz**, although a
single 20 ms frame cannot tell 425 Hz from 440 Hz. A burst whose frequency is more than
``frequency_tolerance`` off, whose level is not flat (a plucked or decaying note), or whose
2nd and 3rd harmonics are stronger than ``max_harmonic_db`` (any instrument or voice; an
exchange's generator is clean) is not the tone.

Under other sound (the office user's speech echoed over the tone, what the line's echo
canceller leaves of it): a frame the fit does not explain still continues a burst when the
tone's own phasors in it are where the burst predicts them (``max_masked_error``), so a
burst is broken by the tone's absence, not by extra energy on top; such frames count for the
burst's length only. An on-run far under the burst before it (``faint_run_db``) is residue
inside a gap, not a burst. Frames next to a hole in a burst are left out of its flatness
check, like its edges.

Per cadence: the last ``cycles`` whole cycles of bursts and gaps must match the tone's
cadence (each segment within ±max(``relative_tolerance``, ``absolute_tolerance_ms``)),
**repeat regularly** (the same segment in every cycle within ``regularity_ms``, as an
exchange's crystal-timed cadence does and music does not) and keep **one level** across
bursts (``max_level_spread_db``). A continuous tone must last ``continuous_ms``.

Timing: the check runs when a segment ends, so a cadenced tone is recognised when its
``cycles``-th gap ends, i.e. at the start of the next burst: 3 cycles (+ 1 frame) after
the tone starts, and at most one segment more when listening starts in the middle of a
burst: within the 4 cycles the specification asks.

Batch and streaming share everything but the per-frame loop: ``scan`` analyses a whole
buffer with one matrix product and feeds the same run logic, so benchmarks over hours of
audio take seconds and give the frame at which ``feed`` would have fired.
"""

from __future__ import annotations

import cmath
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from firmware.media.detect import chord_tables
from firmware.media.levels import ZERO_DBM0_POWER
from firmware.media.tones import SAMPLE_RATE, ToneSpec, parse_tone

OFF_LABEL = -1
_GRID_STEP_HZ = 10.0
_STORED_RUN_FRAMES = 600  # 12 s: a burst longer than that keeps only its first 12 s of data


@dataclass(frozen=True)
class DisconnectCriteria:
    """Thresholds of the detector; the defaults are the ones measured in the benchmark."""

    min_energy_fraction: float = 0.7
    min_level_dbm0: float = -45.0
    max_twist_db: float = 10.0
    frequency_tolerance: float = 0.015
    cycles: int = 3
    relative_tolerance: float = 0.15
    absolute_tolerance_ms: float = 45.0
    regularity_ms: float = 45.0
    max_level_spread_db: float = 3.0
    max_burst_dip_db: float = 4.0
    max_harmonic_db: float = -15.0  # 2nd + 3rd harmonics vs the tone, over a burst
    continuous_ms: float = 3000.0
    # A frame the fit does not explain (speech echoed over the tone) still continues a burst
    # when the tone's own phasors are within this share of the ones the burst predicts.
    max_masked_error: float = 0.35
    max_masked_frames: int = 15  # in a row; the tone under a longer talk spurt is not followed
    faint_run_db: float = 10.0  # an on-run this far under the burst before it is in a gap

    def __post_init__(self) -> None:
        if self.cycles < 2:
            raise ValueError("cycles must be at least 2: regularity needs two cycles to compare")
        if not 0 < self.min_energy_fraction < 1:
            raise ValueError("min_energy_fraction must be between 0 and 1")
        if not 0 < self.frequency_tolerance < 0.1:
            raise ValueError("frequency_tolerance must be between 0 and 0.1 (10 %)")


@dataclass(frozen=True)
class _Chord:
    frequencies: tuple[float, ...]
    basis: np.ndarray  # (samples, scales * 2m) orthonormal blocks, one per scale
    inverses: np.ndarray  # (scales, 2m, 2m): from projections to cos/sin weights
    nominal: int  # index of scale 1.0
    rotation: tuple[complex, ...]  # expected phasor advance per frame at each frequency
    inverse_rows: tuple[tuple[tuple[float, ...], ...], ...]  # ``inverses`` as Python floats
    harmonics: np.ndarray  # (samples, k) orthonormal: 2f and 3f of each component


@lru_cache(maxsize=64)
def _chord(
    frequencies: tuple[float, ...], length: int, tolerance: float, sample_rate: int
) -> _Chord:
    count = max(3, math.ceil(2 * tolerance * max(frequencies) / _GRID_STEP_HZ) + 1)
    count += 1 - count % 2
    scales = np.linspace(1 - tolerance, 1 + tolerance, count)
    time = np.arange(length) / sample_rate
    # The same detuned sinusoid bases as the call-progress detector's (one QR per scale).
    tables = chord_tables(length, tuple(frequencies), tuple(float(s) for s in scales), sample_rate)
    inverses = tables.coefficient_maps
    frame_s = length / sample_rate
    rotation = tuple(cmath.exp(1j * 2 * np.pi * f * frame_s) for f in frequencies)
    rows = tuple(tuple(tuple(float(v) for v in row) for row in inverse) for inverse in inverses)
    overtones = [
        multiple * f
        for f in frequencies
        for multiple in (2, 3)
        if multiple * f < sample_rate / 2 - 100
    ]
    columns = [np.cos(2 * np.pi * f * time) for f in overtones] + [
        np.sin(2 * np.pi * f * time) for f in overtones
    ]
    harmonics = np.linalg.qr(np.column_stack(columns))[0] if columns else np.zeros((length, 0))
    return _Chord(frequencies, tables.basis, inverses, count // 2, rotation, rows, harmonics)


def _apply(matrix: tuple[tuple[float, ...], ...], vector: list[float]) -> list[float]:
    return [sum(m * v for m, v in zip(row, vector, strict=True)) for row in matrix]


def _component_powers(matrix: tuple[tuple[float, ...], ...], vector: list[float]) -> list[float]:
    weights = _apply(matrix, vector)
    return [(weights[i] ** 2 + weights[i + 1] ** 2) / 2 for i in range(0, len(weights), 2)]


@dataclass
class FrameFeatures:
    """What the per-frame analysis found: label (chord index or OFF_LABEL), tone power
    (mean square of the fitted tone), frame power (mean square), phasors at the nominal
    frequencies (zeros where off)."""

    labels: np.ndarray
    tone_power: np.ndarray
    harmonic_power: np.ndarray  # mean square in the label's 2nd and 3rd harmonics
    frame_power: np.ndarray
    phasors: np.ndarray  # (frames, 2) complex


class FrameAnalyser:
    """The per-frame least-squares fit of every chord at once (one matrix product)."""

    def __init__(
        self,
        chords: Sequence[tuple[float, ...]],
        criteria: DisconnectCriteria,
        frame_length: int = 160,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        grid_tolerance = criteria.frequency_tolerance + 0.005
        self.chords = [_chord(c, frame_length, grid_tolerance, sample_rate) for c in chords]
        self.frame_length = frame_length
        self.sample_rate = sample_rate
        self.basis = np.hstack([np.hstack([c.basis, c.harmonics]) for c in self.chords])
        self._slices: list[slice] = []
        self._harmonic_slices: list[slice] = []
        start = 0
        for chord in self.chords:
            width, extra = chord.basis.shape[1], chord.harmonics.shape[1]
            self._slices.append(slice(start, start + width))
            self._harmonic_slices.append(slice(start + width, start + width + extra))
            start += width + extra
        self.min_fraction = criteria.min_energy_fraction
        self.max_twist_db = criteria.max_twist_db
        self._nominal_blocks = [
            chord.basis[:, chord.nominal * 2 * len(chord.frequencies) :][
                :, : 2 * len(chord.frequencies)
            ].copy()
            for chord in self.chords
        ]
        self._min_component_power = ZERO_DBM0_POWER * 10 ** (criteria.min_level_dbm0 / 10)
        # A frame quieter than one component at the minimum level cannot carry the tone.
        self._min_frame_energy = self._min_component_power * frame_length

    def analyse(self, frames: np.ndarray) -> FrameFeatures:
        block = np.asarray(frames, dtype=np.float64)
        if block.ndim == 1:
            block = block[np.newaxis]
        count, length = block.shape
        if length != self.frame_length:
            raise ValueError(f"expected frames of {self.frame_length} samples, got {length}")
        energy = np.einsum("ij,ij->i", block, block)
        labels = np.full(count, OFF_LABEL, dtype=np.int64)
        tone_power = np.zeros(count)
        harmonic_power = np.zeros(count)
        phasors = np.zeros((count, 2), dtype=np.complex128)
        loud = np.flatnonzero(energy >= self._min_frame_energy)
        if loud.size:
            self._fit(block[loud], energy[loud], loud, labels, tone_power, harmonic_power, phasors)
        return FrameFeatures(labels, tone_power, harmonic_power, energy / length, phasors)

    def analyse_frame(self, frame: np.ndarray) -> tuple[int, float, float, tuple[complex, complex]]:
        """One frame: (label, tone power, harmonic power, phasors) as ``analyse`` gives, in plain Python
        after two small matrix products (numpy's per-call cost dominates a single frame)."""
        samples = np.asarray(frame, dtype=np.float64)
        if samples.shape != (self.frame_length,):
            raise ValueError(f"expected one frame of {self.frame_length} samples")
        energy = float(samples @ samples)
        if energy < self._min_frame_energy:
            return OFF_LABEL, 0.0, 0.0, (0j, 0j)
        projections = (samples @ self.basis).tolist()
        best: tuple[int, float, float, tuple[complex, complex]] = (OFF_LABEL, 0.0, 0.0, (0j, 0j))
        best_fraction = 0.0
        for label, chord in enumerate(self.chords):
            width = 2 * len(chord.frequencies)
            own = projections[self._slices[label]]
            explained = [
                sum(value * value for value in own[start : start + width])
                for start in range(0, len(own), width)
            ]
            scale = max(range(len(explained)), key=explained.__getitem__)
            fraction = explained[scale] / energy
            if fraction < self.min_fraction or fraction <= best_fraction:
                continue
            powers = _component_powers(
                chord.inverse_rows[scale], own[scale * width : (scale + 1) * width]
            )
            if min(powers) < self._min_component_power:
                continue
            if width > 2 and max(powers) > min(powers) * 10 ** (self.max_twist_db / 10):
                continue
            start = chord.nominal * width
            weights = _apply(chord.inverse_rows[chord.nominal], own[start : start + width])
            phasors = [complex(weights[i], -weights[i + 1]) for i in range(0, width, 2)]
            phasors.append(0j)
            overtones = projections[self._harmonic_slices[label]]
            harmonic = sum(value * value for value in overtones) / self.frame_length
            best = (label, sum(powers), harmonic, (phasors[0], phasors[1]))
            best_fraction = fraction
        return best

    def nominal_phasors(self, frame: np.ndarray, chord: int) -> tuple[complex, complex]:
        """One chord's phasors at its nominal frequencies in a frame, whatever the frame's
        label: how a burst is followed under speech that the energy fraction rejects."""
        fitted = self.chords[chord]
        width = 2 * len(fitted.frequencies)
        samples = np.asarray(frame, dtype=np.float64)
        projections = (samples @ self._nominal_blocks[chord]).tolist()
        weights = _apply(fitted.inverse_rows[fitted.nominal], projections)
        phasors = [complex(weights[i], -weights[i + 1]) for i in range(0, width, 2)]
        phasors.append(0j)
        return phasors[0], phasors[1]

    def _fit(
        self,
        block: np.ndarray,
        energy: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        tone_power: np.ndarray,
        harmonic_power: np.ndarray,
        phasors: np.ndarray,
    ) -> None:
        projections = block @ self.basis
        count = block.shape[0]
        index = np.arange(count)
        best_fraction = np.zeros(count)
        for label, chord in enumerate(self.chords):
            width = 2 * len(chord.frequencies)
            own = projections[:, self._slices[label]].reshape(count, -1, width)
            explained = np.einsum("fsk,fsk->fs", own, own)
            scale = np.argmax(explained, axis=1)
            fraction = explained[index, scale] / energy
            candidates = np.flatnonzero(
                (fraction >= self.min_fraction) & (fraction > best_fraction)
            )
            if not candidates.size:
                continue
            weights = np.einsum(
                "fij,fj->fi", chord.inverses[scale[candidates]], own[candidates, scale[candidates]]
            )
            component_power = (weights[:, 0::2] ** 2 + weights[:, 1::2] ** 2) / 2
            level_ok = np.all(component_power >= self._min_component_power, axis=1)
            if width > 2:
                ratio = component_power.max(axis=1) / np.maximum(component_power.min(axis=1), 1e-30)
                level_ok &= ratio <= 10 ** (self.max_twist_db / 10)
            accepted = candidates[level_ok]
            if not accepted.size:
                continue
            best_fraction[accepted] = fraction[accepted]
            targets = rows[accepted]
            labels[targets] = label
            tone_power[targets] = component_power[level_ok].sum(axis=1)
            overtones = projections[accepted][:, self._harmonic_slices[label]]
            harmonic_power[targets] = np.einsum("ij,ij->i", overtones, overtones) / block.shape[1]
            nominal = chord.inverses[chord.nominal] @ own[accepted, chord.nominal].T
            phasors[targets] = 0
            phasors[targets, : len(chord.frequencies)] = (nominal[0::2] - 1j * nominal[1::2]).T


@dataclass
class Run:
    """A stretch of frames with one label; on-runs keep their frames' data for the checks."""

    label: int
    start: int  # frame index in the stream
    frames: int
    start_seen: bool
    tone_power: list[float] = field(default_factory=list)  # on-runs: per frame (0 if blip)
    harmonic_power: list[float] = field(default_factory=list)
    phasors: list[tuple[complex, complex]] = field(default_factory=list)
    matched: list[bool] = field(default_factory=list)  # frame label == run label
    chords: list[int] = field(default_factory=list)  # which chord of the label's group
    next_judgement: int = 0  # continuous tones: frames at which the run is judged next
    last_matched: int = -1  # index of the last matched frame
    advance: list[complex] = field(default_factory=lambda: [0j, 0j])  # pulse pairs so far
    masked: int = 0  # frames followed under other sound (not matched, not a gap)

    def duration_ms(self, frame_ms: float) -> float:
        return self.frames * frame_ms


@dataclass(frozen=True)
class _Burst:
    """Checks of one on-run: measured frequencies, level, flatness, harmonics."""

    frequencies: tuple[float, ...]
    level_db: float
    dip_db: float
    harmonic_db: float


@dataclass(frozen=True)
class Detection:
    tone: int  # index into the detector's tones
    frame: int  # stream frame index at which it fired (the frame that completed it)


class _Pattern:
    """One tone's expected runs (label, ms), merged like CadenceDetector's."""

    def __init__(self, tone: ToneSpec, chord_labels: dict[tuple[float, ...], int]) -> None:
        if not tone.repeat:
            raise ValueError("a disconnect tone repeats; a play-once tone cannot be one")
        runs: list[tuple[int, int]] = []
        for step in tone.steps:
            label = chord_labels[step.frequencies] if step.frequencies else OFF_LABEL
            if runs and runs[-1][0] == label:
                runs[-1] = (label, runs[-1][1] + step.duration_ms)
            else:
                runs.append((label, step.duration_ms))
        if len(runs) > 1 and runs[0][0] == runs[-1][0]:
            runs[0] = (runs[0][0], runs[0][1] + runs.pop()[1])
        if not any(label != OFF_LABEL for label, _ in runs):
            raise ValueError("a silent tone has no cadence to detect")
        self.continuous = tone.is_continuous or len(runs) == 1
        self.runs = runs
        self.chord = runs[0][0] if self.continuous else OFF_LABEL


class DisconnectToneDetector:
    """Recognises any of ``tones`` on a city line (see the module docstring).

    ``feed(frame)`` per 20 ms frame in the mixer tick; ``scan(samples)`` on a whole buffer.
    Detection latches until ``reset()``; ``detection`` says which tone and when.
    """

    def __init__(
        self,
        tones: Sequence[ToneSpec | str],
        criteria: DisconnectCriteria | None = None,
        *,
        frame_length: int = 160,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        specs = [parse_tone(tone) if isinstance(tone, str) else tone for tone in tones]
        if not specs:
            raise ValueError("no disconnect tone to detect")
        self.criteria = criteria or DisconnectCriteria()
        self.tones = tuple(specs)
        chords: dict[tuple[float, ...], int] = {}
        for spec in specs:
            for chord in spec.chords:
                if any(not 0 < f < sample_rate / 2 for f in chord):
                    raise ValueError(f"frequencies {chord} not detectable at {sample_rate} Hz")
                chords.setdefault(chord, len(chords))
        self.chords = tuple(chords)
        self.analyser = FrameAnalyser(self.chords, self.criteria, frame_length, sample_rate)
        self.frame_ms = 1000.0 * frame_length / sample_rate
        # Chords whose fitting grids overlap (a plan's busy at 478+617 Hz and congestion at
        # 479+619 Hz) take turns winning frames of one burst: they share one run label, and
        # a burst is measured against the chord that won most of its frames.
        self._group = self._group_chords(2 * (self.criteria.frequency_tolerance + 0.005))
        self._group_of = np.array([*self._group, OFF_LABEL], dtype=np.int64)
        groups = {chord: self._group[index] for chord, index in chords.items()}
        self._patterns = [_Pattern(spec, groups) for spec in specs]
        shortest = min(ms for pattern in self._patterns for _, ms in pattern.runs)
        self._absorb_blips = shortest >= 3 * self.frame_ms
        longest = max(len(p.runs) for p in self._patterns) * self.criteria.cycles
        self._runs: deque[Run] = deque(maxlen=longest + 2)
        self._current: Run | None = None
        self._frame = 0
        self.detection: Detection | None = None

    def _group_chords(self, spread: float) -> list[int]:
        group: list[int] = []
        for index, chord in enumerate(self.chords):
            for earlier in range(index):
                first = self.chords[group[earlier]]
                if len(first) == len(chord) and all(
                    abs(a - b) <= spread * b for a, b in zip(chord, first, strict=True)
                ):
                    group.append(group[earlier])
                    break
            else:
                group.append(index)
        return group

    # ----- public -------------------------------------------------------------------------

    @property
    def detected(self) -> bool:
        return self.detection is not None

    def reset(self) -> None:
        self._runs.clear()
        self._current = None
        self._frame = 0
        self.detection = None

    def feed(self, frame: np.ndarray) -> bool:
        """One frame (the mixer's int16 row); True once a tone was recognised (latched)."""
        if self.detection is not None:
            return True
        chord, power, harmonic, phasors = self.analyser.analyse_frame(frame)
        self._step(int(self._group_of[chord]), chord, power, harmonic, phasors, frame)
        return self.detection is not None

    def scan(self, samples: np.ndarray) -> Detection | None:
        """Feed a whole buffer of whole frames at once (vectorised analysis)."""
        length = self.analyser.frame_length
        block = np.asarray(samples)
        frames = block[: block.size // length * length].reshape(-1, length)
        features = self.analyser.analyse(frames)
        chords = features.labels
        labels = self._group_of[chords]
        # Frames are stepped one by one only where a chord sounds and around it; long
        # stretches of off frames extend the off run in one step (once a burst that may
        # go on under other sound has ended).
        changes = np.flatnonzero(np.diff(labels) != 0) + 1
        bounds = np.concatenate([[0], changes, [labels.size]])
        for first, stop in itertools.pairwise(bounds):
            if self.detection is not None:
                break
            label = int(labels[first])
            if label == OFF_LABEL:
                position = int(first)
                while position < stop and self._in_burst() and self.detection is None:
                    self._step(OFF_LABEL, OFF_LABEL, 0.0, 0.0, (0j, 0j), frames[position])
                    position += 1
                if position < stop and self.detection is None:
                    self._step_off_frames(int(stop - position))
                continue
            members = chords[first:stop].tolist()
            powers = features.tone_power[first:stop].tolist()
            harmonics = features.harmonic_power[first:stop].tolist()
            phasors = features.phasors[first:stop].tolist()
            for offset, (member, power, harmonic, phasor) in enumerate(
                zip(members, powers, harmonics, phasors, strict=True)
            ):
                frame = frames[first + offset]
                self._step(label, member, power, harmonic, (phasor[0], phasor[1]), frame)
                if self.detection is not None:
                    break
        return self.detection

    # ----- runs ---------------------------------------------------------------------------

    def _in_burst(self) -> bool:
        return self._current is not None and self._current.label != OFF_LABEL

    def _step_off_frames(self, count: int) -> None:
        """``count`` off frames: the first may end a run, the rest only extend the off run."""
        self._step(OFF_LABEL, OFF_LABEL, 0.0, 0.0, (0j, 0j), None)
        if count > 1 and self.detection is None:
            assert self._current is not None
            self._current.frames += count - 1
            self._frame += count - 1

    def _step(
        self,
        label: int,
        chord: int,
        power: float,
        harmonic: float,
        phasor: tuple[complex, complex],
        frame: np.ndarray | None,
    ) -> None:
        current = self._current
        index = self._frame
        self._frame += 1
        if current is None:
            self._current = self._new_run(label, index, start_seen=False)
            current = self._current
        elif label != current.label and self._masked(current, frame):
            current.frames += 1
            current.masked += 1
            self._add_data(current, False, OFF_LABEL, 0.0, 0.0, (0j, 0j))
            self._check_continuous(current)
            return
        elif label != current.label:
            if current.frames == 1 and self._absorb_blips and self._runs:
                previous = self._runs.pop()
                if previous.label == label:
                    self._absorb(previous, current)
                    self._current = current = previous
                    self._add_frame(current, label, chord, power, harmonic, phasor)
                    self._check_continuous(current)
                    return
                previous.frames += current.frames
                self._absorb_data(previous, current)
                current = previous
            gap = self._faint_in_gap(current)
            if gap is not None and label == OFF_LABEL:
                self._current = current = gap  # the gap goes on
            else:
                self._complete(gap or current)
                if self.detection is not None:
                    return
                self._current = current = self._new_run(label, index, start_seen=True)
        self._add_frame(current, label, chord, power, harmonic, phasor)
        self._check_continuous(current)

    def _masked(self, run: Run, frame: np.ndarray | None) -> bool:
        """Whether a frame the fit does not give to ``run``'s tone still carries that tone,
        as the burst predicts it (phase and amplitude of each component), under other sound:
        a burst broken by speech on top, not by the tone's absence."""
        last = run.last_matched
        if (
            frame is None
            or run.label == OFF_LABEL
            or last < 1
            or len(run.matched) >= _STORED_RUN_FRAMES
            or len(run.matched) - last > self.criteria.max_masked_frames
            or not run.matched[last - 1]
        ):
            return False
        member = run.chords[last]
        measured = self.analyser.nominal_phasors(frame, member)
        steps = len(run.matched) - last
        tolerance = self.criteria.max_masked_error
        for component in range(len(self.analyser.chords[member].frequencies)):
            advance = run.advance[component]
            if advance == 0:
                return False
            predicted = run.phasors[last][component] * (advance / abs(advance)) ** steps
            if abs(measured[component] - predicted) > tolerance * abs(predicted):
                return False
        return True

    def _faint_in_gap(self, run: Run) -> Run | None:
        """An on-run far under the burst before it, after a gap, is part of that gap (the
        echo's or the canceller's residue, not the tone): the gap, extended, or None."""
        if run.label == OFF_LABEL or len(self._runs) < 2:
            return None
        gap, burst = self._runs[-1], self._runs[-2]
        if gap.label != OFF_LABEL or burst.label == OFF_LABEL:
            return None
        level, before = self._level(run), self._level(burst)
        if level is None or before is None or level > before - self.criteria.faint_run_db:
            return None
        self._runs.pop()
        gap.frames += run.frames
        return gap

    @staticmethod
    def _level(run: Run) -> float | None:
        powers = [p for p, same in zip(run.tone_power, run.matched, strict=True) if same]
        return 10 * math.log10(sum(powers) / len(powers)) if powers else None

    @staticmethod
    def _new_run(label: int, frame: int, *, start_seen: bool) -> Run:
        return Run(label, frame, 0, start_seen)

    @classmethod
    def _add_frame(
        cls,
        run: Run,
        label: int,
        chord: int,
        power: float,
        harmonic: float,
        phasor: tuple[complex, complex],
    ) -> None:
        run.frames += 1
        same = label == run.label
        cls._add_data(run, same, chord, power, harmonic, phasor)

    @staticmethod
    def _add_data(
        run: Run,
        same: bool,
        chord: int,
        power: float,
        harmonic: float,
        phasor: tuple[complex, complex],
    ) -> None:
        if run.label == OFF_LABEL or len(run.matched) >= _STORED_RUN_FRAMES:
            return
        if same:
            previous = run.last_matched
            if previous == len(run.matched) - 1 >= 0 and run.chords[previous] == chord:
                before = run.phasors[previous]
                run.advance[0] += phasor[0] * before[0].conjugate()
                run.advance[1] += phasor[1] * before[1].conjugate()
            run.last_matched = len(run.matched)
        run.matched.append(same)
        run.chords.append(chord if same else OFF_LABEL)
        run.tone_power.append(power if same else 0.0)
        run.harmonic_power.append(harmonic if same else 0.0)
        run.phasors.append(phasor if same else (0j, 0j))

    def _absorb(self, previous: Run, blip: Run) -> None:
        """A one-frame blip inside ``previous``: it resumes as if it never broke."""
        previous.frames += blip.frames
        self._absorb_data(previous, blip)

    @classmethod
    def _absorb_data(cls, previous: Run, blip: Run) -> None:
        for _ in range(blip.frames):
            cls._add_data(previous, False, OFF_LABEL, 0.0, 0.0, (0j, 0j))

    def _complete(self, run: Run) -> None:
        self._runs.append(run)
        for index, pattern in enumerate(self._patterns):
            if not pattern.continuous and self._tail_matches(pattern):
                self.detection = Detection(index, self._frame - 1)
                return

    def _check_continuous(self, run: Run) -> None:
        if run.label == OFF_LABEL or self.detection is not None:
            return
        needed = math.ceil(self.criteria.continuous_ms / self.frame_ms)
        if run.frames < max(needed, run.next_judgement):
            return
        run.next_judgement = run.frames + needed  # judged again one duration later
        for index, pattern in enumerate(self._patterns):
            if pattern.continuous and pattern.chord == run.label:
                burst = self._burst(run)
                if burst is not None and self._burst_ok(run.label, burst):
                    self.detection = Detection(index, self._frame - 1)
                    return

    # ----- the checks ---------------------------------------------------------------------

    def _tail_matches(self, pattern: _Pattern) -> bool:
        period = len(pattern.runs)
        needed = period * self.criteria.cycles
        if len(self._runs) < needed:
            return False
        tail = list(self._runs)[-needed:]
        if not tail[0].start_seen:
            return False
        durations = [run.duration_ms(self.frame_ms) for run in tail]
        for rotation in range(period):
            if all(
                run.label == pattern.runs[(rotation + offset) % period][0]
                and self._near(durations[offset], pattern.runs[(rotation + offset) % period][1])
                for offset, run in enumerate(tail)
            ):
                return self._regular(durations, period) and self._bursts_ok(tail)
        return False

    def _near(self, measured_ms: float, expected_ms: float) -> bool:
        criteria = self.criteria
        tolerance = max(criteria.relative_tolerance * expected_ms, criteria.absolute_tolerance_ms)
        return abs(measured_ms - expected_ms) <= tolerance

    def _regular(self, durations: list[float], period: int) -> bool:
        for position in range(period):
            same = durations[position::period]
            if max(same) - min(same) > self.criteria.regularity_ms:
                return False
        return True

    def _bursts_ok(self, tail: list[Run]) -> bool:
        levels = []
        for run in tail:
            if run.label == OFF_LABEL:
                continue
            burst = self._burst(run)
            if burst is None or not self._burst_ok(run.label, burst):
                return False
            levels.append(burst.level_db)
        return max(levels) - min(levels) <= self.criteria.max_level_spread_db

    def _burst_ok(self, label: int, burst: _Burst) -> bool:
        tolerance = self.criteria.frequency_tolerance
        in_tune = any(
            all(
                abs(measured - nominal) <= tolerance * nominal
                for measured, nominal in zip(burst.frequencies, chord, strict=True)
            )
            for index, chord in enumerate(self.chords)
            if self._group[index] == label
        )
        return (
            in_tune
            and burst.dip_db <= self.criteria.max_burst_dip_db
            and burst.harmonic_db <= self.criteria.max_harmonic_db
        )

    def _burst(self, run: Run) -> _Burst | None:
        """Measured frequencies, level and flatness of an on-run; None if too short to judge."""
        matched = run.matched
        members = [member for member in run.chords if member != OFF_LABEL]
        if not members:
            return None
        member = max(set(members), key=members.count)
        chord = self.analyser.chords[member]
        pairs = [
            index
            for index in range(len(matched) - 1)
            if run.chords[index] == member and run.chords[index + 1] == member
        ]
        if len(pairs) < 2:
            return None
        frame_s = self.frame_ms / 1000.0
        measured = []
        for component, (frequency, rotation) in enumerate(
            zip(chord.frequencies, chord.rotation, strict=True)
        ):
            total = sum(
                run.phasors[index + 1][component] * run.phasors[index][component].conjugate()
                for index in pairs
            )
            if total == 0:
                return None
            advance = cmath.phase(total * rotation.conjugate())
            measured.append(frequency + advance / (2 * math.pi * frame_s))
        # Level and flatness from the interior frames: the burst's edges are partly covered,
        # and so are the frames around a hole (a dropped or masked frame inside the burst).
        interior = [
            power
            for index, power in enumerate(run.tone_power)
            if 0 < index < len(matched) - 1 and all(matched[index - 1 : index + 2])
        ] or [power for index, power in enumerate(run.tone_power) if matched[index]]
        mean = sum(interior) / len(interior)
        level_db = 10 * math.log10(mean / ZERO_DBM0_POWER)
        dip_db = 10 * math.log10(mean / max(min(interior), 1e-30))
        tone_total = sum(p for p, same in zip(run.tone_power, matched, strict=True) if same)
        harmonic_total = sum(h for h, same in zip(run.harmonic_power, matched, strict=True) if same)
        harmonic_db = 10 * math.log10(max(harmonic_total, 1e-30) / tone_total)
        return _Burst(tuple(measured), level_db, dip_db, harmonic_db)


class SilenceTimer:
    """Last resort: a call whose line and whose own side have both been silent this long.

    Pure: ``feed(line_power, sent_power)`` per frame with mean-square sample values (what
    the line said, what the appliance sent); True once ``max_silence_s`` of consecutive
    frames were both below ``threshold_dbm0``, then latched until ``reset()``. Both
    directions count so dictation to a far party who listens silently is never cut.
    """

    def __init__(
        self, max_silence_s: float, threshold_dbm0: float = -50.0, frame_s: float = 0.02
    ) -> None:
        if max_silence_s < 0:
            raise ValueError("max_silence_s must be 0 (off) or positive")
        self.max_silence_s = max_silence_s
        self.threshold_dbm0 = threshold_dbm0
        self._threshold_power = ZERO_DBM0_POWER * 10 ** (threshold_dbm0 / 10)
        self._frames_needed = math.ceil(max_silence_s / frame_s - 1e-9) if max_silence_s else 0
        self.silent_frames = 0
        self.expired = False

    @property
    def enabled(self) -> bool:
        return self._frames_needed > 0

    def reset(self) -> None:
        self.silent_frames = 0
        self.expired = False

    def feed(self, line_power: float, sent_power: float) -> bool:
        if not self.enabled or self.expired:
            return self.expired
        if line_power < self._threshold_power and sent_power < self._threshold_power:
            self.silent_frames += 1
            self.expired = self.silent_frames >= self._frames_needed
        else:
            self.silent_frames = 0
        return self.expired


def silence_threshold_dbm0(noise_floor_dbm0: float | None) -> float:
    """-50 dBm0, or 8 dB over a line's measured noise floor when that is higher (hum)."""
    if noise_floor_dbm0 is None:
        return -50.0
    return max(-50.0, noise_floor_dbm0 + 8.0)


def frame_power(frame: np.ndarray) -> float:
    """Mean square of one frame's samples (compare with ``ZERO_DBM0_POWER``)."""
    block = np.asarray(frame, dtype=np.float64)
    return float(np.dot(block, block)) / max(block.size, 1)
