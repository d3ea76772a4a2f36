"""Sample-rate conversion by a rational factor with a windowed-sinc polyphase filter.

Uploaded announcements arrive at 11.025 to 48 kHz and the mixer plays 8 kHz. Dropping
samples would fold everything above 4 kHz back into the band as audible whistles, so
the signal goes through a low-pass first. scipy is not a dependency and `audioop` is
gone in Python 3.13, so the filter is built here with numpy:

* one prototype low-pass (Kaiser-windowed sinc) at the common rate `rate_in * up`,
  split into `up` phases so only the taps that meet a real input sample are computed;
* cut-off (-6 dB) at the lower Nyquist frequency, transition band 2.5 % of it on each
  side: for 8 kHz output, flat (±0.01 dB) to 3.9 kHz, at least 60 dB down from 4.1 kHz. Input
  between 4.0 and 4.1 kHz folds into 3.9-4.0 kHz partly attenuated, above the
  telephone band (300-3400 Hz);
* the filter's delay is compensated, so output sample n is the input at time n / rate_out.

Work is bounded: about `60 dB / (2.285 * 2π * transition / rate_in)` taps per output
sample (870 at 48 kHz to 8 kHz; a 2 MB upload takes well under a second), done in blocks so memory stays a few MB.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

STOPBAND_ATTENUATION_DB = 60.0
TRANSITION_FRACTION = 0.025  # half-width of the transition band, as a fraction of Nyquist
_BLOCK_OUTPUTS = 4096


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """`samples` (1-D, float) at `rate_in` converted to `rate_out`; float64 result.

    The output has ceil(len * rate_out / rate_in) samples. Same rates: a copy.
    """
    signal = np.asarray(samples, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError("resample takes one channel (a 1-D array)")
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} and {rate_out}")
    if rate_in == rate_out:
        return signal.copy()
    up, down, bank, delay = _polyphase_filter(rate_in, rate_out)
    taps = bank.shape[1]
    count = -(-signal.size * up // down)
    padded = np.concatenate([np.zeros(taps), signal, np.zeros(taps)])
    output = np.empty(count)
    tap_index = np.arange(taps)
    for start in range(0, count, _BLOCK_OUTPUTS):
        positions = np.arange(start, min(start + _BLOCK_OUTPUTS, count)) * down + delay
        phases = positions % up
        newest = positions // up + taps  # index in `padded` of the newest input each uses
        window = padded[newest[:, None] - tap_index[None, :]]
        output[start : start + phases.size] = np.einsum("ij,ij->i", window, bank[phases])
    return output


@lru_cache(maxsize=16)
def _polyphase_filter(rate_in: int, rate_out: int) -> tuple[int, int, np.ndarray, int]:
    """(up, down, phases x taps filter bank, delay in high-rate samples); cached per pair."""
    common = math.gcd(rate_in, rate_out)
    up, down = rate_out // common, rate_in // common
    high_rate = rate_in * up
    nyquist = min(rate_in, rate_out) / 2.0
    width = 2.0 * TRANSITION_FRACTION * nyquist  # whole transition band, Hz
    taps = math.ceil((STOPBAND_ATTENUATION_DB - 7.95) / (2.285 * 2.0 * math.pi * width / rate_in))
    length = taps * up
    centre = (length - 1) / 2.0
    offsets = np.arange(length) - centre
    cutoff = nyquist / high_rate  # cycles per high-rate sample
    prototype = 2.0 * cutoff * np.sinc(2.0 * cutoff * offsets) * _kaiser(offsets, length)
    prototype *= up  # each phase sees one input sample in `up`: restore unit gain
    bank = prototype.reshape(taps, up).T.copy()  # bank[phase, j] = prototype[phase + j * up]
    bank.flags.writeable = False
    return up, down, bank, round(centre)


def _kaiser(offsets: np.ndarray, length: int) -> np.ndarray:
    """Kaiser window at (possibly half-integer) offsets from the centre of `length` taps."""
    beta = 0.1102 * (STOPBAND_ATTENUATION_DB - 8.7)  # Kaiser's formula for attenuation > 50 dB
    half = length / 2.0
    ratio = np.clip(offsets / half, -1.0, 1.0)
    return np.i0(beta * np.sqrt(1.0 - ratio**2)) / np.i0(beta)
