"""Conversions between dBm0 and linear 16-bit sample values.

G.711 convention: a full-scale sine (peak 32767) is +3.14 dBm0, so a 0 dBm0
sine has a peak of 32767 / 10**(3.14/20) ≈ 22767 and a mean square of
peak**2 / 2.  Everything here works on plain floats or numpy arrays so the
mixer and the detectors share one definition of "level".

Levels of silence are clamped to ``SILENCE_DBM0`` instead of -inf so callers can
compare and print them without special cases or numpy warnings.
"""

from __future__ import annotations

from typing import overload

import numpy as np

FULL_SCALE_PEAK = 32767
FULL_SCALE_SINE_DBM0 = 3.14
ZERO_DBM0_PEAK = FULL_SCALE_PEAK / 10.0 ** (FULL_SCALE_SINE_DBM0 / 20.0)
ZERO_DBM0_RMS = ZERO_DBM0_PEAK / np.sqrt(2.0)
ZERO_DBM0_POWER = ZERO_DBM0_PEAK**2 / 2.0
SILENCE_DBM0 = -120.0

_POWER_FLOOR = ZERO_DBM0_POWER * 10.0 ** (SILENCE_DBM0 / 10.0)


def _as_result(values: np.ndarray) -> float | np.ndarray:
    """Give scalars back as Python floats, arrays as arrays."""
    return float(values) if values.ndim == 0 else values


@overload
def dbm0_to_peak(level_dbm0: float) -> float: ...
@overload
def dbm0_to_peak(level_dbm0: np.ndarray) -> np.ndarray: ...
def dbm0_to_peak(level_dbm0: float | np.ndarray) -> float | np.ndarray:
    """Peak amplitude of a sine at ``level_dbm0`` (what a tone generator needs)."""
    return _as_result(ZERO_DBM0_PEAK * 10.0 ** (np.asarray(level_dbm0, dtype=float) / 20.0))


@overload
def peak_to_dbm0(peak: float) -> float: ...
@overload
def peak_to_dbm0(peak: np.ndarray) -> np.ndarray: ...
def peak_to_dbm0(peak: float | np.ndarray) -> float | np.ndarray:
    """Level of a sine whose peak amplitude is ``peak``."""
    power = np.abs(np.asarray(peak, dtype=float)) ** 2 / 2.0
    return power_to_dbm0(power)


@overload
def dbm0_to_rms(level_dbm0: float) -> float: ...
@overload
def dbm0_to_rms(level_dbm0: np.ndarray) -> np.ndarray: ...
def dbm0_to_rms(level_dbm0: float | np.ndarray) -> float | np.ndarray:
    """RMS sample value of any signal at ``level_dbm0``."""
    return _as_result(ZERO_DBM0_RMS * 10.0 ** (np.asarray(level_dbm0, dtype=float) / 20.0))


@overload
def rms_to_dbm0(rms: float) -> float: ...
@overload
def rms_to_dbm0(rms: np.ndarray) -> np.ndarray: ...
def rms_to_dbm0(rms: float | np.ndarray) -> float | np.ndarray:
    """Level of a signal with RMS sample value ``rms``."""
    return power_to_dbm0(np.asarray(rms, dtype=float) ** 2)


@overload
def dbm0_to_power(level_dbm0: float) -> float: ...
@overload
def dbm0_to_power(level_dbm0: np.ndarray) -> np.ndarray: ...
def dbm0_to_power(level_dbm0: float | np.ndarray) -> float | np.ndarray:
    """Mean square sample value of a signal at ``level_dbm0``."""
    return _as_result(ZERO_DBM0_POWER * 10.0 ** (np.asarray(level_dbm0, dtype=float) / 10.0))


@overload
def power_to_dbm0(mean_square: float) -> float: ...
@overload
def power_to_dbm0(mean_square: np.ndarray) -> np.ndarray: ...
def power_to_dbm0(mean_square: float | np.ndarray) -> float | np.ndarray:
    """Level of a signal with mean square ``mean_square``, floored at ``SILENCE_DBM0``."""
    power = np.maximum(np.asarray(mean_square, dtype=float), _POWER_FLOOR)
    return _as_result(10.0 * np.log10(power / ZERO_DBM0_POWER))


@overload
def db_to_gain(gain_db: float) -> float: ...
@overload
def db_to_gain(gain_db: np.ndarray) -> np.ndarray: ...
def db_to_gain(gain_db: float | np.ndarray) -> float | np.ndarray:
    """Amplitude factor for a gain in dB (negative = attenuation), for mixer pads."""
    return _as_result(10.0 ** (np.asarray(gain_db, dtype=float) / 20.0))


@overload
def gain_to_db(gain: float) -> float: ...
@overload
def gain_to_db(gain: np.ndarray) -> np.ndarray: ...
def gain_to_db(gain: float | np.ndarray) -> float | np.ndarray:
    """Inverse of ``db_to_gain``; a zero gain maps to ``SILENCE_DBM0`` dB."""
    amplitude = np.maximum(np.abs(np.asarray(gain, dtype=float)), 10.0 ** (SILENCE_DBM0 / 20.0))
    return _as_result(20.0 * np.log10(amplitude))
