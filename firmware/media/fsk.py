"""V.23 and Bell 202 FSK at 1200 baud for on-hook caller ID: modulator and UART demodulator.

Why our own: caller ID is the only FSK the appliance speaks, a spill is under a second,
and numpy does it in a few vectorised steps (no scipy).  docs/caller-id.md has the design.

Modulation is continuous-phase (one running phase, the frequency switched at each bit
edge, so there are no clicks to splatter energy out of band), and a burst is laid out as
the standards ask: channel seizure (alternating 0/1, starting with 0), a mark signal (1s),
then the bytes as 8-N-1 UART characters (start bit 0, data LSB first, stop bit 1).

Demodulation is non-coherent: each sample is mixed down at the mark and at the space
frequency and summed over one bit (the matched filter for FSK); ``(|mark|² - |space|²) /
(|mark|² + |space|² + floor)`` is a soft bit from -1 (space) to +1 (mark) that does not
depend on the level, and is 0 in silence (the floor sits at ``SQUELCH_DBM0``).  Bytes are
then read like a UART: after a run of at least ``min_mark_bits`` marks, a mark-to-space
crossing is a start bit; the bits are sampled at their centres from that edge, and the stop
bit must be a mark.  Every start bit resynchronises, so the 0.5 % of clock error an
exchange is allowed does not accumulate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from firmware.media.levels import dbm0_to_peak, dbm0_to_power

SAMPLE_RATE = 8000
BAUD = 1200
DEFAULT_LEVEL_DBM0 = -13.5  # Bell GR-30 and ETSI EN 300 659-1 nominal sending level
SEIZURE_BITS = 300
MARK_BITS = 180
SQUELCH_DBM0 = -50.0  # a soft bit needs more than this in band to be decisive
MIN_MARK_BITS = 40  # marks the receiver needs before the first start bit
MAX_GAP_BITS = 16  # marks tolerated between characters (ETSI allows up to 10)
# A frame whose weakest bit is under this share of its median bit is not trusted, even
# with a good checksum (two bit errors can cancel in an 8-bit sum).  Measured weakest
# shares: clean 0.70 (V.23, whose tones are not orthogonal at 1200 baud) and 0.82 (Bell
# 202); at 20 dB SNR >= 0.39 and 0.69; bit errors start below 12 dB SNR.
MIN_MARGIN = 0.15
_RAMP_MS = 1.0


@dataclass(frozen=True)
class FskStandard:
    """One FSK modem: the mark (binary 1) and space (binary 0) frequencies and the baud."""

    name: str
    mark_hz: float
    space_hz: float
    baud: float = BAUD


V23 = FskStandard("v23", mark_hz=1300.0, space_hz=2100.0)
BELL_202 = FskStandard("bell202", mark_hz=1200.0, space_hz=2200.0)
STANDARDS: dict[str, FskStandard] = {standard.name: standard for standard in (V23, BELL_202)}


# --------------------------------------------------------------------------- modulation


def uart_bits(data: bytes) -> np.ndarray:
    """8-N-1 framing of ``data``: per byte a start bit 0, eight data bits LSB first, stop 1."""
    values = np.frombuffer(bytes(data), dtype=np.uint8)
    data_bits = (values[:, None] >> np.arange(8)) & 1
    framed = np.hstack(
        [np.zeros((values.size, 1), np.uint8), data_bits, np.ones((values.size, 1), np.uint8)]
    )
    return framed.ravel()


def burst_bits(
    data: bytes,
    seizure_bits: int = SEIZURE_BITS,
    mark_bits: int = MARK_BITS,
    trailing_mark_bits: int = 2,
) -> np.ndarray:
    """Bits of one data transmission: seizure (0101...), mark (1...), the framed bytes."""
    if min(seizure_bits, mark_bits, trailing_mark_bits) < 0:
        raise ValueError("bit counts must not be negative")
    seizure = np.arange(seizure_bits, dtype=np.uint8) % 2
    return np.concatenate(
        [
            seizure,
            np.ones(mark_bits, np.uint8),
            uart_bits(data),
            np.ones(trailing_mark_bits, np.uint8),
        ]
    )


def modulate(
    bits: np.ndarray,
    standard: FskStandard,
    level_dbm0: float = DEFAULT_LEVEL_DBM0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Continuous-phase FSK of ``bits`` as float samples (1 ms ramps at both ends).

    Bit k covers the samples n with floor(n * baud / rate) == k, so fractional bit lengths
    (6 2/3 samples at 8 kHz) average out exactly instead of drifting.
    """
    bit_array = np.asarray(bits, dtype=np.uint8)
    if max(standard.mark_hz, standard.space_hz) >= sample_rate / 2:
        raise ValueError(f"{standard.name} cannot be sent at {sample_rate} Hz")
    count = int(np.ceil(bit_array.size * sample_rate / standard.baud))
    if count == 0:
        return np.zeros(0)
    bit_index = np.minimum(
        (np.arange(count) * standard.baud / sample_rate).astype(np.int64), bit_array.size - 1
    )
    frequency = np.where(bit_array[bit_index] == 1, standard.mark_hz, standard.space_hz)
    phase = 2 * np.pi * np.concatenate(([0.0], np.cumsum(frequency[:-1]) / sample_rate))
    signal = dbm0_to_peak(level_dbm0) * np.sin(phase)
    ramp = min(round(_RAMP_MS * sample_rate / 1000), count // 2)
    if ramp:
        rise = 0.5 * (1 - np.cos(np.pi * np.arange(ramp) / ramp))
        signal[:ramp] *= rise
        signal[count - ramp :] *= rise[::-1]
    return signal


def fsk_burst(
    data: bytes,
    standard: FskStandard,
    level_dbm0: float = DEFAULT_LEVEL_DBM0,
    seizure_bits: int = SEIZURE_BITS,
    mark_bits: int = MARK_BITS,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Float samples of one caller-ID data transmission (see ``burst_bits``)."""
    return modulate(burst_bits(data, seizure_bits, mark_bits), standard, level_dbm0, sample_rate)


# --------------------------------------------------------------------------- demodulation


class FskFrame(NamedTuple):
    """Characters read after one mark run: where it starts, the bytes, how reading ended.

    ``error`` is None when the message layer said the frame was complete; otherwise why
    reading stopped early ("framing error", "carrier lost").  ``margin`` lets a caller
    refuse a frame whose checksum passed but one of whose bits was a near thing.
    """

    start: int
    data: bytes
    error: str | None
    margin: float  # weakest bit's |soft| / the median bit's: near 0, a bit was a near thing


def soft_bits(
    samples: np.ndarray, standard: FskStandard, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Soft decision per sample: +1 mark, -1 space, near 0 for silence or noise.

    Value n judges the bit-long window ending at sample n: the crossing of a bit edge
    appears half a window late, and so do bit centres, so the UART's timing is unaffected.
    The window sums are running sums (a cumulative sum differenced), as cheap as it gets.
    """
    signal = np.asarray(samples, dtype=np.float64)
    width = max(1, round(sample_rate / standard.baud))
    mixed = signal * _mixers(standard, sample_rate, signal.size)
    sums = np.cumsum(mixed, axis=1)
    sums[:, width:] -= sums[:, :-width].copy()
    mark, space = sums.real**2 + sums.imag**2
    # A tone at SQUELCH_DBM0 gives |sum|² = (width * peak / 2)²: the floor.
    floor = (width / 2) ** 2 * 2 * dbm0_to_power(SQUELCH_DBM0)
    return (mark - space) / (mark + space + floor)


def _mixers(standard: FskStandard, sample_rate: int, length: int) -> np.ndarray:
    """exp(-j 2 pi f n / rate) for the mark and the space frequency, (2, length)."""
    table = _mixer_period(standard, sample_rate)
    if table is not None:
        return table[:, np.arange(length) % table.shape[1]]
    cycles = np.outer((standard.mark_hz, standard.space_hz), np.arange(length)) / sample_rate
    return np.exp(-2j * np.pi * (cycles - np.floor(cycles)))


@lru_cache(maxsize=8)
def _mixer_period(standard: FskStandard, sample_rate: int) -> np.ndarray | None:
    """One common period of both mixers (80 samples for V.23 at 8 kHz); None if the
    frequencies are not whole Hz."""
    if not (standard.mark_hz.is_integer() and standard.space_hz.is_integer()):
        return None
    period = math.lcm(
        sample_rate // math.gcd(int(standard.mark_hz), sample_rate),
        sample_rate // math.gcd(int(standard.space_hz), sample_rate),
    )
    cycles = np.outer((standard.mark_hz, standard.space_hz), np.arange(period)) / sample_rate
    table = np.exp(-2j * np.pi * (cycles - np.floor(cycles)))
    table.flags.writeable = False
    return table


def _at(soft: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Soft values at fractional positions (linear interpolation; outside: 0)."""
    inside = (positions >= 0) & (positions <= soft.size - 1)
    clipped = np.clip(positions, 0, soft.size - 1)
    low = np.floor(clipped).astype(np.int64)
    high = np.minimum(low + 1, soft.size - 1)
    fraction = clipped - low
    values = soft[low] * (1 - fraction) + soft[high] * fraction
    return np.where(inside, values, 0.0)


def mark_runs(
    soft: np.ndarray, samples_per_bit: float, min_mark_bits: int = MIN_MARK_BITS
) -> list[tuple[int, int]]:
    """(first, end) sample ranges where the signal holds mark for ``min_mark_bits`` or more.

    The soft bit is smoothed over two bits first, so a single noisy sample inside a long
    mark does not split it; a real start bit (one bit of space) still ends the run.
    """
    width = max(1, round(2 * samples_per_bit))
    smoothed = np.convolve(soft, np.ones(width) / width, mode="same")
    is_mark = np.concatenate(([False], smoothed > 0.5, [False]))
    changes = np.flatnonzero(is_mark[1:] != is_mark[:-1])
    starts, ends = changes[0::2], changes[1::2]
    long_enough = ends - starts >= min_mark_bits * samples_per_bit
    return list(zip(starts[long_enough].tolist(), ends[long_enough].tolist(), strict=True))


def _find_start_bit(soft: np.ndarray, begin: float, limit: float, spb: float) -> float | None:
    """Position of the first mark-to-space crossing in [begin, limit) that is a start bit.

    A crossing counts when the soft bit is space at the start bit's centre and still
    space over most of it: a noise dip inside a mark is skipped.
    """
    first = max(int(np.floor(begin)), 1)
    last = min(int(np.ceil(limit)), soft.size - 1)
    if last <= first:
        return None
    window = soft[first - 1 : last + 1]
    crossings = np.flatnonzero((window[:-1] >= 0) & (window[1:] < 0))
    for index in crossings:
        before, after = window[index], window[index + 1]
        edge = first - 1 + index + before / (before - after)
        centre = _at(soft, np.array([edge + 0.25 * spb, edge + 0.5 * spb, edge + 0.75 * spb]))
        if centre[1] < 0 and (centre < 0).sum() >= 2:
            return float(edge)
    return None


def read_characters(
    soft: np.ndarray,
    begin: float,
    first_limit: float,
    samples_per_bit: float,
    complete: Callable[[bytes], bool],
    max_gap_bits: int = MAX_GAP_BITS,
) -> tuple[FskFrame, float]:
    """Read 8-N-1 characters until ``complete(data)`` is true or reading fails.

    The first start bit is looked for in [begin, first_limit), each next one within
    ``max_gap_bits`` marks of the previous stop bit.  Returns the frame (``error`` None
    when complete, else "framing error": a stop bit was space, or "carrier lost": no
    start bit where one was due) and the position after the last stop bit read.
    """
    offsets = (np.arange(10) + 0.5) * samples_per_bit
    data = bytearray()
    strengths: list[np.ndarray] = []
    position, limit = begin, first_limit
    while True:
        edge = _find_start_bit(soft, position, min(limit, soft.size), samples_per_bit)
        if edge is None or edge + offsets[-1] > soft.size - 1:
            return _frame(begin, data, "carrier lost", strengths), position
        values = _at(soft, edge + offsets)
        if values[9] <= 0:
            return _frame(begin, data, "framing error", strengths), edge + 10 * samples_per_bit
        strengths.append(np.abs(values))
        bits = (values[1:9] > 0).astype(np.int64)
        data.append(int((bits << np.arange(8)).sum()))
        # the next start edge comes after the middle of this stop bit
        position = edge + 9.5 * samples_per_bit
        if complete(bytes(data)):
            return _frame(begin, data, None, strengths), position
        limit = position + (max_gap_bits + 0.5) * samples_per_bit


def _frame(
    begin: float, data: bytearray, error: str | None, strengths: list[np.ndarray]
) -> FskFrame:
    """The frame, its margin the weakest bit's |soft| over the median bit's."""
    margin = 0.0
    if strengths:
        values = np.concatenate(strengths)
        median = float(np.median(values))
        margin = float(values.min()) / median if median > 0 else 0.0
    return FskFrame(round(begin), bytes(data), error, margin)


def demodulate(
    samples: np.ndarray,
    standard: FskStandard,
    complete: Callable[[bytes], bool],
    sample_rate: int = SAMPLE_RATE,
    min_mark_bits: int = MIN_MARK_BITS,
) -> list[FskFrame]:
    """Every frame in ``samples``: the characters after each mark run, read until done.

    ``complete(data) -> bool`` tells when a frame has all its bytes (the message layer
    knows: type, length, body, checksum).  Frames that stop early are returned too, with
    their ``error``, so a caller can say why a spill gave no caller ID.
    """
    soft = soft_bits(samples, standard, sample_rate)
    samples_per_bit = sample_rate / standard.baud
    frames = []
    resume = 0.0
    for first, end in mark_runs(soft, samples_per_bit, min_mark_bits):
        if end <= resume:
            continue
        begin = max(float(first), resume)
        frame, resume = read_characters(
            soft, begin, end + 2 * samples_per_bit, samples_per_bit, complete
        )
        frames.append(frame)
    return frames
