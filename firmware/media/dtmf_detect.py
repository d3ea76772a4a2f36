"""In-band DTMF detection (ITU-T Q.24) on the mixer's 20 ms frames, streaming or in batch.

Why not the plain 8-bin Goertzel receiver: a 16 ms bin is about 60 Hz wide, so the
bin at 697 Hz still sees most of a tone 24 Hz (3.5 %) away, which Q.24 says must be
rejected, and eight bin energies say little about speech.  Design (docs/dtmf-detector.md):

* Blocks of 16 ms (128 samples at 8 kHz) every 4 ms, on a grid anchored at the start of
  the stream, so where 20 ms frames begin does not matter.
* Each block's DFT (what the Goertzel recursion computes, done as one matrix product) on
  a grid of 17 frequencies per DTMF tone, -4 % to +4 % in 0.5 % steps.  The strongest
  point of each group names the tone; the energy a joint least-squares fit of both tones
  explains, scanned over one tone's grid with the other held, and a parabola through the
  best point and its neighbours give its frequency deviation (the fit keeps the other
  tone's leakage out): the fine estimate that separates 1.5 % (accept) from 3.5 % (reject).
* The final joint fit at the nearest grid frequencies (inverse Gram matrices tabled for
  every pair), and one that adds both second harmonics, give each tone's level, the
  twist, the harmonics and the fraction of the block's energy the two tones explain:
  the talk-off guard, since speech and music spread their energy over many harmonics.
* A block is a digit when all criteria hold (``DtmfCriteria``); a digit is reported once
  it has been seen for ``min_tone_blocks`` consecutive blocks (at the minimum duration,
  not at tone end, so an IVR can stop its prompt at once) and ends after
  ``min_pause_blocks`` blocks without it, so short dropouts do not split a digit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from firmware.media.levels import dbm0_to_peak, peak_to_dbm0
from firmware.media.tones import DTMF_COLUMN_FREQUENCIES, DTMF_ROW_FREQUENCIES

SAMPLE_RATE = 8000
BLOCK_MS = 16
HOP_MS = 4
KEYS = "123A456B789C*0#D"  # index = row * 4 + column
NO_DIGIT = -1
GRID_STEP = 0.005
GRID_HALF_POINTS = 8  # the grid spans +-GRID_HALF_POINTS * GRID_STEP = +-4 %
_GRID_POINTS = 2 * GRID_HALF_POINTS + 1
_TONES = DTMF_ROW_FREQUENCIES + DTMF_COLUMN_FREQUENCIES
_GROUP_WIDTH = 4 * _GRID_POINTS  # grid columns of one group (4 tones)
_CHUNK_BLOCKS = 4096


@dataclass(frozen=True)
class DtmfCriteria:
    """What a 16 ms block must show to count as a digit, and the timing rules.

    The defaults accept Q.24's region with margin for noise at 15 dB SNR: deviation
    up to 1.5 % accepted and from 3.5 % rejected (threshold in between), twist of 8 dB
    (high group weaker, "normal") and 4 dB (high group stronger, "reverse") accepted,
    each tone from -30 dBm0 up.  ``min_octave_distance`` rejects a column tone at twice
    the row tone: a note and its octave, never a keypad inside 1.5 %.  The two timing
    counts are in 4 ms blocks; with the defaults tones of 36 ms or more are reported and
    of 28 ms or less are not, pauses of 24 ms or more separate digits and dropouts of
    15 ms or less are bridged (docs/dtmf-detector.md derives and measures these).
    """

    max_deviation: float = 0.025
    min_level_dbm0: float = -36.0
    max_normal_twist_db: float = 10.0
    max_reverse_twist_db: float = 6.0
    min_energy_fraction: float = 0.93
    max_harmonic_db: float = -12.0
    min_octave_distance: float = 0.006
    min_tone_blocks: int = 5
    min_pause_blocks: int = 9

    def __post_init__(self) -> None:
        if not 0 < self.max_deviation < GRID_HALF_POINTS * GRID_STEP:
            raise ValueError(
                f"max_deviation {self.max_deviation} must be between 0 and the grid's"
                f" {GRID_HALF_POINTS * GRID_STEP}"
            )
        if not 0 < self.min_energy_fraction <= 1:
            raise ValueError(f"min_energy_fraction {self.min_energy_fraction} must be in (0, 1]")
        if self.min_tone_blocks < 1 or self.min_pause_blocks < 1:
            raise ValueError("min_tone_blocks and min_pause_blocks must be at least 1")


class BlockMeasurements(NamedTuple):
    """Per block (arrays of one value per block): what the classifier judged.

    ``row`` and ``column`` index the strongest tone of each group (0-3); deviations are
    fractions (0.01 = 1 %), infinite when the peak sits at the edge of the grid; levels
    in dBm0; harmonics in dB relative to their fundamental (-inf when not measurable).
    """

    row: np.ndarray
    column: np.ndarray
    row_deviation: np.ndarray
    column_deviation: np.ndarray
    row_level_dbm0: np.ndarray
    column_level_dbm0: np.ndarray
    energy_fraction: np.ndarray
    row_harmonic_db: np.ndarray
    column_harmonic_db: np.ndarray

    @property
    def twist_db(self) -> np.ndarray:
        """High group level minus low group level: negative is "normal" twist."""
        return self.column_level_dbm0 - self.row_level_dbm0


class DtmfDigit(NamedTuple):
    """A detected digit; positions are sample indices in the analysed stream.

    ``start`` is where the first block that saw it starts (up to ~4 ms before the tone),
    ``reported`` the sample at which a streaming detector reports it, ``end`` where the
    last block that saw it ends (None: still sounding when the input ended).
    """

    digit: str
    start: int
    reported: int
    end: int | None


# A cheap first look lets the full measurement run only on blocks that could be digits.
# It reads 3 of the 17 grid points per tone (-2 %, 0, +2 %): the strongest of each group
# must hold at least _GATE_FRACTION_SHARE of the energy share the criteria ask for, at a
# level at most _GATE_LEVEL_DB under the minimum.  A tone within the accepted 2.5 % is at
# most 1 % from one of those points (power lost: 20 % at 1633 Hz), and a bin misjudges a
# tone by at most ~25 % in power (the other tone's leakage at 10 dB twist), so the gate
# does not drop a block the full measurement would accept (tested).
_GATE_POINTS = (GRID_HALF_POINTS - 4, GRID_HALF_POINTS, GRID_HALF_POINTS + 4)
_GATE_COLUMNS = (np.arange(len(_TONES))[:, None] * _GRID_POINTS + np.array(_GATE_POINTS)).ravel()
_GATE_FRACTION_SHARE = 0.4
_GATE_LEVEL_DB = 6.0


class _Tables(NamedTuple):
    block_length: int
    hop: int
    projection: np.ndarray  # (L, 2 * 8K): cos | sin at the grid frequencies
    harmonic_projection: np.ndarray  # (L, 2 * 8K): cos | sin at twice those
    gate_projection: np.ndarray  # (L, 2 * 8 * 3): cos | sin at -2 %, 0, +2 % of each tone
    tone_inverse: np.ndarray  # (4K, 4K, 4, 4): inverse Gram, [cos, sin] row then column
    harmonic_inverse: np.ndarray  # (4K, 4K, 8, 8): the same plus both second harmonics


@lru_cache(maxsize=4)
def _tables(sample_rate: int) -> _Tables:
    block_length = round(BLOCK_MS * sample_rate / 1000)
    hop = round(HOP_MS * sample_rate / 1000)
    if block_length < 32 or hop < 1:
        raise ValueError(f"sample rate {sample_rate} is too low for DTMF detection")
    grid = 1.0 + GRID_STEP * np.arange(-GRID_HALF_POINTS, GRID_HALF_POINTS + 1)
    frequencies = np.outer(_TONES, grid).ravel()  # index m = tone * K + k
    if 2 * frequencies.max() >= sample_rate / 2:
        raise ValueError(f"sample rate {sample_rate} cannot carry DTMF second harmonics")
    time = np.arange(block_length) / sample_rate
    fundamental = 2 * np.pi * np.outer(time, frequencies)
    projection = np.hstack(
        [np.cos(fundamental), np.sin(fundamental), np.cos(2 * fundamental), np.sin(2 * fundamental)]
    )
    gram = projection.T @ projection
    tones = len(frequencies)
    rows = np.arange(_GROUP_WIDTH)[:, None]
    columns = _GROUP_WIDTH + np.arange(_GROUP_WIDTH)[None, :]
    rows, columns = np.broadcast_arrays(rows, columns)
    picked = np.stack(
        [
            rows,
            tones + rows,
            columns,
            tones + columns,
            2 * tones + rows,
            3 * tones + rows,
            2 * tones + columns,
            3 * tones + columns,
        ],
        axis=-1,
    )
    harmonic_gram = gram[picked[..., :, None], picked[..., None, :]]
    # A row's second harmonic (1.4-1.9 kHz) within one bin of the column tone cannot be
    # told apart from it in one block: leave it out of the fit (the energy fraction
    # still counts it) rather than divide by a nearly singular matrix.
    bin_width = sample_rate / block_length
    entangled = np.abs(2 * frequencies[rows] - frequencies[columns]) < bin_width
    harmonic_gram[entangled, 4:6, :] = 0.0
    harmonic_gram[entangled, :, 4:6] = 0.0
    harmonic_gram[entangled, 4, 4] = harmonic_gram[entangled, 5, 5] = 1.0
    harmonic_inverse = np.linalg.inv(harmonic_gram)
    harmonic_inverse[entangled, 4:6, :] = 0.0
    harmonic_inverse[entangled, :, 4:6] = 0.0
    tone_inverse = np.linalg.inv(harmonic_gram[..., :4, :4])
    tables = _Tables(
        block_length,
        hop,
        np.ascontiguousarray(projection[:, : 2 * tones]),
        np.ascontiguousarray(projection[:, 2 * tones :]),
        np.ascontiguousarray(projection[:, np.concatenate((_GATE_COLUMNS, tones + _GATE_COLUMNS))]),
        np.ascontiguousarray(tone_inverse),
        harmonic_inverse,
    )
    for array in tables[2:]:
        array.flags.writeable = False
    return tables


def block_geometry(sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(block length, hop) in samples: blocks start at every multiple of the hop."""
    tables = _tables(sample_rate)
    return tables.block_length, tables.hop


def _peak(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional deviation and nearest grid point of the peak of (blocks, K) values.

    A parabola through the log of the best point and its neighbours; a peak on the
    edge of the grid means the tone is further off than the grid reaches (infinite).
    """
    count = values.shape[0]
    blocks = np.arange(count)
    point = np.argmax(values, axis=1)
    inner = np.clip(point, 1, _GRID_POINTS - 2)
    logs = np.log(np.maximum(values, 1e-300))
    left = logs[blocks, inner - 1]
    centre = logs[blocks, inner]
    right = logs[blocks, inner + 1]
    curvature = left - 2 * centre + right
    safe = np.where(curvature < 0, curvature, -1.0)
    position = inner + np.clip(0.5 * (left - right) / safe, -0.5, 0.5)
    deviation = (position - GRID_HALF_POINTS) * GRID_STEP
    at_edge = (point == 0) | (point == _GRID_POINTS - 1)
    deviation = np.where(at_edge, np.copysign(np.inf, point - GRID_HALF_POINTS), deviation)
    nearest = np.clip(np.rint(position).astype(np.int64), 0, _GRID_POINTS - 1)
    return deviation, nearest


def _fit_scan(
    cosines: np.ndarray,
    sines: np.ndarray,
    inverse: np.ndarray,
    scanned: np.ndarray,
    fixed: np.ndarray,
    scanning_rows: bool,
) -> np.ndarray:
    """Energy the joint two-tone fit explains, for each grid point of one tone.

    ``scanned`` is (blocks, K) grid indices of the tone being refined, ``fixed`` the
    (blocks,) index of the other group's tone.  Fitting both tones together, rather
    than reading one bin, keeps the other tone's leakage out of the estimate.
    """
    other = np.broadcast_to(fixed[:, None], scanned.shape)
    if scanning_rows:
        row_index, column_index = scanned, other
    else:
        row_index, column_index = other, scanned
    blocks = np.arange(scanned.shape[0])[:, None]
    columns = _GROUP_WIDTH + column_index
    picked = np.stack(
        [
            cosines[blocks, row_index],
            sines[blocks, row_index],
            cosines[blocks, columns],
            sines[blocks, columns],
        ],
        axis=-1,
    )
    weights = np.einsum("bkij,bkj->bki", inverse[row_index, column_index], picked)
    return np.einsum("bki,bki->bk", weights, picked)


def _project(data: np.ndarray, tables: _Tables) -> tuple[np.ndarray, np.ndarray]:
    """Projections on the grid (blocks x 2 * 8K: cos then sin) and AC energy per block.

    The energy is taken about the block mean so a DC offset on a line does not count
    against the tones.
    """
    projections = data @ tables.projection
    energy = np.einsum("bi,bi->b", data, data) - data.sum(axis=1) ** 2 / data.shape[1]
    return projections, energy


def measure_blocks(blocks: np.ndarray, sample_rate: int = SAMPLE_RATE) -> BlockMeasurements:
    """Measure (blocks x block length) samples; see ``BlockMeasurements``."""
    tables = _tables(sample_rate)
    data = np.ascontiguousarray(blocks, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != tables.block_length:
        raise ValueError(f"expected (blocks x {tables.block_length}), got shape {data.shape}")
    return _measure(data, *_project(data, tables), tables)


def _measure(
    data: np.ndarray, projections: np.ndarray, energy: np.ndarray, tables: _Tables
) -> BlockMeasurements:
    count = projections.shape[0]
    tones = len(_TONES) * _GRID_POINTS
    cosines = projections[:, :tones]
    sines = projections[:, tones : 2 * tones]
    power = (cosines**2 + sines**2).reshape(count, 2, _GROUP_WIDTH)
    row, _ = np.divmod(np.argmax(power[:, 0], axis=1), _GRID_POINTS)
    column, column_point = np.divmod(np.argmax(power[:, 1], axis=1), _GRID_POINTS)
    grid = np.arange(_GRID_POINTS)
    row_scan = row[:, None] * _GRID_POINTS + grid
    column_scan = column[:, None] * _GRID_POINTS + grid
    row_deviation, row_point = _peak(
        _fit_scan(
            cosines,
            sines,
            tables.tone_inverse,
            row_scan,
            column * _GRID_POINTS + column_point,
            scanning_rows=True,
        )
    )
    row_index = row * _GRID_POINTS + row_point
    column_deviation, column_point = _peak(
        _fit_scan(cosines, sines, tables.tone_inverse, column_scan, row_index, scanning_rows=False)
    )
    column_index = column * _GRID_POINTS + column_point
    wanted = np.stack(
        [
            row_index,
            tones + row_index,
            _GROUP_WIDTH + column_index,
            tones + _GROUP_WIDTH + column_index,
        ],
        axis=1,
    )
    harmonics = data @ tables.harmonic_projection
    picked = np.hstack(
        (
            np.take_along_axis(projections, wanted, axis=1),
            np.take_along_axis(harmonics, wanted, axis=1),
        )
    )
    weights = np.einsum("bij,bj->bi", tables.tone_inverse[row_index, column_index], picked[:, :4])
    explained = np.einsum("bi,bi->b", weights, picked[:, :4])
    fraction = np.where(energy > 0, explained / np.where(energy > 0, energy, 1.0), 0.0)
    amplitudes = np.hypot(weights[:, 0::2], weights[:, 1::2])
    levels = peak_to_dbm0(amplitudes)
    full = np.einsum("bij,bj->bi", tables.harmonic_inverse[row_index, column_index], picked)
    full_amplitudes = np.hypot(full[:, 0::2], full[:, 1::2])
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic_db = 20 * np.log10(full_amplitudes[:, 2:] / full_amplitudes[:, :2])
    harmonic_db = np.nan_to_num(harmonic_db, nan=-np.inf, posinf=np.inf)
    return BlockMeasurements(
        row=row,
        column=column,
        row_deviation=row_deviation,
        column_deviation=column_deviation,
        row_level_dbm0=levels[:, 0],
        column_level_dbm0=levels[:, 1],
        energy_fraction=fraction,
        row_harmonic_db=harmonic_db[:, 0],
        column_harmonic_db=harmonic_db[:, 1],
    )


def judge(measurements: BlockMeasurements, criteria: DtmfCriteria) -> np.ndarray:
    """Digit index (into ``KEYS``) each block carries, ``NO_DIGIT`` (-1) where none."""
    twist = measurements.twist_db
    row_hz = np.asarray(DTMF_ROW_FREQUENCIES)[measurements.row] * (1 + measurements.row_deviation)
    column_hz = np.asarray(DTMF_COLUMN_FREQUENCIES)[measurements.column] * (
        1 + measurements.column_deviation
    )
    with np.errstate(invalid="ignore"):
        octave_distance = np.abs(column_hz - 2 * row_hz) / column_hz
    valid = (
        (np.abs(measurements.row_deviation) <= criteria.max_deviation)
        & (np.abs(measurements.column_deviation) <= criteria.max_deviation)
        & (measurements.row_level_dbm0 >= criteria.min_level_dbm0)
        & (measurements.column_level_dbm0 >= criteria.min_level_dbm0)
        & (twist >= -criteria.max_normal_twist_db)
        & (twist <= criteria.max_reverse_twist_db)
        & (measurements.energy_fraction >= criteria.min_energy_fraction)
        & (measurements.row_harmonic_db <= criteria.max_harmonic_db)
        & (measurements.column_harmonic_db <= criteria.max_harmonic_db)
        & (octave_distance >= criteria.min_octave_distance)
    )
    return np.where(valid, measurements.row * 4 + measurements.column, NO_DIGIT)


def _classify(data: np.ndarray, tables: _Tables, criteria: DtmfCriteria) -> np.ndarray:
    """Digit index per block of (blocks x L) float samples: a gate, then ``judge``."""
    labels = np.full(data.shape[0], NO_DIGIT, dtype=np.int64)
    if not data.shape[0]:
        return labels
    gate = data @ tables.gate_projection
    energy = np.einsum("bi,bi->b", data, data) - data.sum(axis=1) ** 2 / data.shape[1]
    half = _GATE_COLUMNS.size
    power = gate[:, :half] ** 2 + gate[:, half:] ** 2
    row_power = power[:, : half // 2].max(axis=1)
    column_power = power[:, half // 2 :].max(axis=1)
    length = data.shape[1]
    # |X|**2 = (L * A / 2)**2 for a sine of peak A, whose energy over the block is L * A**2 / 2.
    weakest_peak = 2.0 * np.sqrt(np.minimum(row_power, column_power)) / length
    possible = (
        2.0 * (row_power + column_power)
        >= _GATE_FRACTION_SHARE * criteria.min_energy_fraction * length * energy
    ) & (weakest_peak >= dbm0_to_peak(criteria.min_level_dbm0 - _GATE_LEVEL_DB))
    candidates = np.flatnonzero(possible)
    if candidates.size:
        chosen = data[candidates]
        measured = _measure(chosen, *_project(chosen, tables), tables)
        labels[candidates] = judge(measured, criteria)
    return labels


def _blocks_of(samples: np.ndarray, tables: _Tables) -> np.ndarray:
    """Strided (blocks x L) view of every whole block starting at a multiple of the hop."""
    if samples.size < tables.block_length:
        return np.zeros((0, tables.block_length), dtype=samples.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(samples, tables.block_length)
    return windows[:: tables.hop]


def block_labels(
    samples: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    criteria: DtmfCriteria | None = None,
) -> np.ndarray:
    """Digit index per block of a 1-D buffer (block i starts at sample i * hop)."""
    tables = _tables(sample_rate)
    criteria = criteria or DtmfCriteria()
    buffer = np.asarray(samples)
    if buffer.ndim != 1:
        raise ValueError(f"expected a 1-D sample buffer, got shape {buffer.shape}")
    blocks = _blocks_of(buffer, tables)
    labels = np.empty(blocks.shape[0], dtype=np.int64)
    for first in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        chunk = np.ascontiguousarray(blocks[first : first + _CHUNK_BLOCKS], dtype=np.float64)
        labels[first : first + chunk.shape[0]] = _classify(chunk, tables, criteria)
    return labels


def _runs(labels: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(label, first block, length) of each run of equal labels."""
    if not labels.size:
        return
    starts = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate(([0], starts, [labels.size]))
    for first, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        yield int(labels[first]), first, stop - first


class _DigitTracker:
    """Turns per-block labels into digits: minimum duration, pause and hysteresis.

    Works on runs of equal labels (``advance``) so a batch of an hour costs one step per
    run, and a stream one step per frame's few blocks, with identical results.
    """

    def __init__(self, criteria: DtmfCriteria, block_length: int, hop: int) -> None:
        self._min_tone = criteria.min_tone_blocks
        self._min_pause = criteria.min_pause_blocks
        self._block_length = block_length
        self._hop = hop
        self.current = NO_DIGIT
        self._current_first = 0
        self._current_reported = 0
        self._current_last = 0
        self._gap = 0
        self._candidate = NO_DIGIT
        self._candidate_first = 0
        self._candidate_count = 0
        self.finished: list[DtmfDigit] = []

    def advance(self, label: int, first: int, count: int) -> list[str]:
        """Take ``count`` blocks of ``label`` starting at block ``first``; digits reported."""
        if self.current != NO_DIGIT and label == self.current:
            self._gap = 0
            self._current_last = first + count - 1
            self._candidate, self._candidate_count = NO_DIGIT, 0
            return []
        if self.current != NO_DIGIT:
            self._gap += count
            if self._gap >= self._min_pause:
                self._close()
        if label == NO_DIGIT:
            self._candidate, self._candidate_count = NO_DIGIT, 0
            return []
        if label == self._candidate:
            self._candidate_count += count
        else:
            self._candidate, self._candidate_first, self._candidate_count = label, first, count
        if self._candidate_count < self._min_tone:
            return []
        if self.current != NO_DIGIT:
            self._close()
        self.current = label
        self._current_first = self._candidate_first
        self._current_reported = self._candidate_first + self._min_tone - 1
        self._current_last = first + count - 1
        self._gap = 0
        self._candidate, self._candidate_count = NO_DIGIT, 0
        return [KEYS[label]]

    def _digit(self, end_block: int | None) -> DtmfDigit:
        end = None if end_block is None else end_block * self._hop + self._block_length
        return DtmfDigit(
            KEYS[self.current],
            self._current_first * self._hop,
            self._current_reported * self._hop + self._block_length,
            end,
        )

    def _close(self) -> None:
        self.finished.append(self._digit(self._current_last))
        self.current = NO_DIGIT

    def flush(self) -> None:
        """End of input: a digit still sounding is kept with ``end=None``."""
        if self.current != NO_DIGIT:
            self.finished.append(self._digit(None))
            self.current = NO_DIGIT


def detect_dtmf(
    samples: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    criteria: DtmfCriteria | None = None,
) -> list[DtmfDigit]:
    """Every digit in a recorded buffer (offline: benchmarks, line calibration, tests).

    Same blocks and rules as ``DtmfDetector``, so a stream fed frame by frame reports
    the same digits in the same order.
    """
    criteria = criteria or DtmfCriteria()
    tables = _tables(sample_rate)
    labels = block_labels(samples, sample_rate, criteria)
    tracker = _DigitTracker(criteria, tables.block_length, tables.hop)
    for label, first, count in _runs(labels):
        tracker.advance(label, first, count)
    tracker.flush()
    return tracker.finished


class DtmfDetector:
    """Streaming detector for one channel: ``feed`` each frame, get the digits it completed.

    A digit is reported once, in the frame in which it has lasted the minimum duration
    (the sample 31-35 ms after the tone began, with the defaults), and not again until a
    pause ends it.  Frames may have any length; a mixer monitor can be the bound ``feed``.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, criteria: DtmfCriteria | None = None):
        self.sample_rate = sample_rate
        self.criteria = criteria or DtmfCriteria()
        self._tables = _tables(sample_rate)
        self._tracker = _DigitTracker(self.criteria, self._tables.block_length, self._tables.hop)
        self._pending = np.zeros(0)
        self._next_block = 0

    @property
    def current_digit(self) -> str | None:
        """The digit sounding now (reported already), None between digits."""
        current = self._tracker.current
        return None if current == NO_DIGIT else KEYS[current]

    def reset(self) -> None:
        """Forget everything heard (a new call on the channel)."""
        self._tracker = _DigitTracker(self.criteria, self._tables.block_length, self._tables.hop)
        self._pending = np.zeros(0)
        self._next_block = 0

    def feed(self, frame: np.ndarray) -> list[str]:
        """Add samples (int16 or float, 1-D); the digits reported within them, in order."""
        samples = np.asarray(frame)
        if samples.ndim != 1:
            raise ValueError(f"expected a 1-D frame, got shape {samples.shape}")
        pending = np.concatenate((self._pending, samples.astype(np.float64)))
        block_length, hop = self._tables.block_length, self._tables.hop
        count = (pending.size - block_length) // hop + 1 if pending.size >= block_length else 0
        self._pending = pending
        if not count:
            return []
        blocks = pending[_block_index(count, block_length, hop)]
        labels = _classify(blocks, self._tables, self.criteria)
        first_block = self._next_block
        self._pending = pending[count * hop :]
        self._next_block += count
        if (labels == NO_DIGIT).all():
            self._tracker.advance(NO_DIGIT, first_block, count)
            digits = []
        else:
            digits = [
                digit
                for label, first, length in _runs(labels)
                for digit in self._tracker.advance(label, first_block + first, length)
            ]
        self._tracker.finished.clear()  # the stream only reports digits, not their ends
        return digits


@lru_cache(maxsize=16)
def _block_index(count: int, block_length: int, hop: int) -> np.ndarray:
    """Sample indices of ``count`` blocks: taking them copies the blocks out contiguously."""
    index = np.arange(count)[:, None] * hop + np.arange(block_length)
    index.flags.writeable = False
    return index
