"""Call-progress tones: specifications, national tone plans and sample rendering.

Representation
--------------
Every tone is one ``ToneSpec``: a sequence of ``ToneStep(frequencies, duration_ms)``
played in order.  ``frequencies`` is a tuple of one or two Hz values that are
summed; an empty tuple is silence.  This one form covers all cases:

* continuous tone (dial tone): a single step with ``duration_ms == 0`` (= forever),
  e.g. ``ToneSpec.continuous((350, 440))``;
* plain on/off cadence (busy): alternating sounding and silent steps,
  e.g. ``ToneSpec.cadenced((425,), (500, 500))``;
* multi-frequency sequences (special information tone 950/1400/1800 Hz, 330 ms
  each, then 1 s silence): one step per segment, silent steps included.

``repeat=True`` loops the steps forever; ``repeat=False`` plays them once and
then stays silent (confirmation beeps).  The special information tone is
*repeating* here, as ITU-T Q.35/E.180 describe it; a plan that wants it once can
override it.

``level_dbm0`` is the level of each frequency component.  ``None`` picks the
typical E.180-style value per step: -13 dBm0 for a single frequency, -16 dBm0 per
component for a dual tone (about -13 dBm0 total).

Config syntax is the classic Asterisk ``indications.conf`` tone list, see
``parse_tone``/``format_tone``.  Amplitude-modulated tones (``425*25``) and the
Asterisk mix of play-once intro steps followed by repeating steps (stutter dial
tone) are not supported: a tone is either all looping or all once.

Rendering (``render_cycle``) produces int16 buffers whose length is a multiple of
one 20 ms frame so the mixer can loop them frame by frame without a seam.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from firmware.media.levels import dbm0_to_peak

SAMPLE_RATE = 8000
FRAME_MS = 20
RAMP_MS = 4.0
SINGLE_TONE_LEVEL_DBM0 = -13.0
DUAL_TONE_LEVEL_DBM0 = -16.0
MAX_FREQUENCIES_PER_STEP = 2
# Longest buffer we accept to make a continuous tone loop on whole periods; beyond
# it frequencies are snapped to whole periods of a 1 s buffer instead.
_MAX_CONTINUOUS_SECONDS = 10
# Cadenced cycles are repeated (at most this often) so the buffer holds a whole
# number of frames without stretching any step; beyond it the end is padded.
_MAX_CYCLE_REPEATS = 20


class ToneStep(NamedTuple):
    """One segment of a tone; empty ``frequencies`` is silence, duration 0 is forever."""

    frequencies: tuple[float, ...]
    duration_ms: int


@dataclass(frozen=True)
class ToneSpec:
    """A call-progress tone as a sequence of steps (see the module docstring)."""

    steps: tuple[ToneStep, ...]
    level_dbm0: float | None = None
    repeat: bool = True

    def __post_init__(self) -> None:
        steps = tuple(_normalise_step(step) for step in self.steps)
        if not steps:
            raise ValueError("a tone needs at least one step")
        if any(step.duration_ms == 0 for step in steps) and len(steps) != 1:
            raise ValueError(
                "a step of duration 0 means 'forever' and is only allowed as the only step"
            )
        if self.level_dbm0 is not None and not math.isfinite(self.level_dbm0):
            raise ValueError(f"tone level must be finite, got {self.level_dbm0!r}")
        object.__setattr__(self, "steps", steps)

    @classmethod
    def continuous(cls, frequencies: Sequence[float], level_dbm0: float | None = None) -> ToneSpec:
        """Steady tone such as dial tone."""
        return cls((ToneStep(tuple(frequencies), 0),), level_dbm0)

    @classmethod
    def cadenced(
        cls,
        frequencies: Sequence[float],
        cadence_ms: Sequence[int],
        level_dbm0: float | None = None,
        repeat: bool = True,
    ) -> ToneSpec:
        """Same frequencies gated on/off: cadence is (on, off, on, off, ...) in ms."""
        if not cadence_ms:
            return cls.continuous(frequencies, level_dbm0)
        chord = tuple(frequencies)
        steps = tuple(
            ToneStep(chord if index % 2 == 0 else (), duration)
            for index, duration in enumerate(cadence_ms)
        )
        return cls(steps, level_dbm0, repeat)

    @property
    def is_continuous(self) -> bool:
        return self.steps[0].duration_ms == 0

    @property
    def frequencies(self) -> tuple[float, ...]:
        """Every distinct frequency used, in order of first appearance."""
        seen: dict[float, None] = {}
        for step in self.steps:
            seen.update(dict.fromkeys(step.frequencies))
        return tuple(seen)

    @property
    def chords(self) -> tuple[tuple[float, ...], ...]:
        """Distinct sounding frequency sets, in order of first appearance."""
        return tuple(dict.fromkeys(step.frequencies for step in self.steps if step.frequencies))

    @property
    def cadence_ms(self) -> tuple[int, ...]:
        """On/off durations (sound, silence, ...) ignoring which frequencies sound.

        Adjacent sounding steps are merged, so the special information tone gives
        (990, 1000).  Empty for continuous tones.
        """
        if self.is_continuous:
            return ()
        merged: list[list[int]] = []  # [is_sounding, duration]
        for step in self.steps:
            sounding = int(bool(step.frequencies))
            if merged and merged[-1][0] == sounding:
                merged[-1][1] += step.duration_ms
            else:
                merged.append([sounding, step.duration_ms])
        return tuple(duration for _, duration in merged)

    @property
    def cycle_ms(self) -> int:
        """Length of one pass through the steps (0 for continuous tones)."""
        return sum(step.duration_ms for step in self.steps)

    def step_level_dbm0(self, step: ToneStep) -> float:
        """Per-component level used when rendering ``step``."""
        if self.level_dbm0 is not None:
            return self.level_dbm0
        if len(step.frequencies) > 1:
            return DUAL_TONE_LEVEL_DBM0
        return SINGLE_TONE_LEVEL_DBM0

    def with_level(self, level_dbm0: float | None) -> ToneSpec:
        return dataclasses.replace(self, level_dbm0=level_dbm0)

    def scaled(self, factor: float) -> ToneSpec:
        """Same tone with every frequency multiplied by ``factor`` (tests, detuning)."""
        steps = tuple(
            ToneStep(tuple(frequency * factor for frequency in step.frequencies), step.duration_ms)
            for step in self.steps
        )
        return dataclasses.replace(self, steps=steps)


def _normalise_step(step: ToneStep | tuple[Sequence[float], int]) -> ToneStep:
    """Accept plain tuples so plans read naturally, and validate early."""
    frequencies, duration_ms = step
    frequencies = tuple(float(frequency) for frequency in frequencies)
    if len(frequencies) > MAX_FREQUENCIES_PER_STEP:
        raise ValueError(f"at most {MAX_FREQUENCIES_PER_STEP} frequencies per step, got {step!r}")
    if any(not math.isfinite(frequency) or frequency <= 0 for frequency in frequencies):
        raise ValueError(f"frequencies must be positive, got {step!r}")
    if len(set(frequencies)) != len(frequencies):
        raise ValueError(f"frequencies of a step must differ, got {step!r}")
    if int(duration_ms) != duration_ms or duration_ms < 0:
        raise ValueError(f"step duration must be a non-negative whole number of ms, got {step!r}")
    return ToneStep(frequencies, int(duration_ms))


# --------------------------------------------------------------------------- plans

TONE_NAMES: tuple[str, ...] = (
    "dial",
    "ringback",
    "busy",
    "congestion",
    "call_waiting",
    "special_information",
    "hold",
    "confirmation",
)


@dataclass(frozen=True)
class TonePlan:
    """The tones and FXS ringing cadence of one country."""

    country: str
    dial: ToneSpec
    ringback: ToneSpec
    busy: ToneSpec
    congestion: ToneSpec
    call_waiting: ToneSpec
    special_information: ToneSpec
    hold: ToneSpec
    confirmation: ToneSpec
    ring_cadence_ms: tuple[int, ...]

    def __post_init__(self) -> None:
        cadence = tuple(int(duration) for duration in self.ring_cadence_ms)
        if not cadence or len(cadence) % 2 or any(duration <= 0 for duration in cadence):
            raise ValueError(f"ring cadence must be positive on/off pairs, got {cadence!r}")
        object.__setattr__(self, "ring_cadence_ms", cadence)

    def tone(self, name: str) -> ToneSpec:
        if name not in TONE_NAMES:
            raise ValueError(f"unknown tone {name!r}; tones are: {', '.join(TONE_NAMES)}")
        return getattr(self, name)

    @property
    def tones(self) -> dict[str, ToneSpec]:
        return {name: getattr(self, name) for name in TONE_NAMES}


# ITU-T Q.35 / E.180: 950, 1400, 1800 Hz for 330 ms each, then 1 s of silence.
SPECIAL_INFORMATION_TONE = ToneSpec(
    (((950.0,), 330), ((1400.0,), 330), ((1800.0,), 330), ((), 1000))
)


def _beeps(frequencies: Sequence[float], count: int = 3, on_ms: int = 100) -> ToneSpec:
    """Short play-once beeps: the usual 'feature code accepted' confirmation."""
    cadence = [on_ms, on_ms] * count
    return ToneSpec.cadenced(frequencies, cadence[:-1], repeat=False)


def _hold(frequency: float) -> ToneSpec:
    """Quiet double pip every ~6.5 s so a held party knows the call is alive.

    Not standardised; modelled on the German holding tone but with a shorter gap,
    and a cadence no call-waiting tone in these plans shares.
    """
    return ToneSpec.cadenced((frequency,), (150, 150, 150, 6000), level_dbm0=-20.0)


def _cept_plan(
    country: str,
    *,
    dial: ToneSpec | None = None,
    ringback_ms: tuple[int, ...] = (1000, 4000),
    busy_ms: tuple[int, ...] = (500, 500),
    congestion_ms: tuple[int, ...] = (250, 250),
    call_waiting: ToneSpec | None = None,
    hold: ToneSpec | None = None,
    frequency: float = 425.0,
    ring_cadence_ms: tuple[int, ...] | None = None,
) -> TonePlan:
    """Plan built on one CEPT-style frequency, varying only what countries vary."""
    chord = (frequency,)
    return TonePlan(
        country=country,
        dial=dial or ToneSpec.continuous(chord),
        ringback=ToneSpec.cadenced(chord, ringback_ms),
        busy=ToneSpec.cadenced(chord, busy_ms),
        congestion=ToneSpec.cadenced(chord, congestion_ms),
        call_waiting=call_waiting or ToneSpec.cadenced(chord, (200, 200, 200, 4000)),
        special_information=SPECIAL_INFORMATION_TONE,
        hold=hold or _hold(frequency),
        confirmation=_beeps(chord),
        ring_cadence_ms=ring_cadence_ms or ringback_ms,
    )


TONE_PLANS: dict[str, TonePlan] = {
    # Generic CEPT/ETSI plan (ETSI TR 101 041 harmonised tones): 425 Hz, dial
    # continuous, ringing 1 s/4 s, busy 0.5/0.5, congestion 0.25/0.25; call
    # waiting 0.2/0.2/0.2 then 4 s silence (as e.g. Switzerland, E.180 Supp. 2).
    "eu": _cept_plan("eu"),
    # Portugal, E.180 Supp. 2 as in Asterisk's "pt" zone: ringing 1 s/5 s,
    # congestion 0.2/0.2, call waiting 440 Hz 0.3 s every 10 s.
    "pt": _cept_plan(
        "pt",
        ringback_ms=(1000, 5000),
        congestion_ms=(200, 200),
        call_waiting=ToneSpec.cadenced((440,), (300, 10000)),
    ),
    # Germany, E.180 Supp. 2 (ITU national tones list): busy 0.48/0.48,
    # congestion 0.24/0.24, call waiting 0.2/0.2/0.2/5.0, holding tone
    # 0.15/0.15/0.15/8.0.
    "de": _cept_plan(
        "de",
        busy_ms=(480, 480),
        congestion_ms=(240, 240),
        call_waiting=ToneSpec.cadenced((425,), (200, 200, 200, 5000)),
        hold=ToneSpec.cadenced((425,), (150, 150, 150, 8000), level_dbm0=-20.0),
    ),
    # France, E.180 Supp. 2 as in Asterisk's "fr" zone: 440 Hz, ringing
    # 1.5 s/3.5 s, busy 0.5/0.5, call waiting 0.3 s every 10 s.
    "fr": _cept_plan(
        "fr",
        frequency=440.0,
        ringback_ms=(1500, 3500),
        call_waiting=ToneSpec.cadenced((440,), (300, 10000)),
    ),
    # Spain, E.180 Supp. 2 / Asterisk "es" zone: ringing 1.5 s/3 s, busy 0.2/0.2,
    # congestion 3 x 0.2/0.2 with a 0.6 s gap, call waiting 0.175/0.175/0.175/3.5.
    "es": _cept_plan(
        "es",
        ringback_ms=(1500, 3000),
        busy_ms=(200, 200),
        congestion_ms=(200, 200, 200, 200, 200, 600),
        call_waiting=ToneSpec.cadenced((425,), (175, 175, 175, 3500)),
    ),
    # Italy, E.180 Supp. 2 / Asterisk "it" zone: cadenced dial tone 0.2/0.2/0.6/1.0,
    # congestion 0.2/0.2, call waiting 0.4/0.1/0.25/0.1/0.15/14.
    "it": _cept_plan(
        "it",
        dial=ToneSpec.cadenced((425,), (200, 200, 600, 1000)),
        congestion_ms=(200, 200),
        call_waiting=ToneSpec.cadenced((425,), (400, 100, 250, 100, 150, 14000)),
    ),
    # United Kingdom, BT SIN 350: dial 350+450 continuous, ringing 400+450
    # 0.4/0.2/0.4/2.0, busy 400 0.375/0.375, congestion 400 0.4/0.35/0.225/0.525;
    # call waiting 400 Hz 0.1 s every 4 s as in Asterisk's "uk" zone.
    "uk": TonePlan(
        country="uk",
        dial=ToneSpec.continuous((350, 450)),
        ringback=ToneSpec.cadenced((400, 450), (400, 200, 400, 2000)),
        busy=ToneSpec.cadenced((400,), (375, 375)),
        congestion=ToneSpec.cadenced((400,), (400, 350, 225, 525)),
        call_waiting=ToneSpec.cadenced((400,), (100, 4000)),
        special_information=SPECIAL_INFORMATION_TONE,
        hold=_hold(400.0),
        confirmation=_beeps((350, 450)),
        ring_cadence_ms=(400, 200, 400, 2000),
    ),
    # North American precise tone plan (Telcordia GR-506): dial 350+440,
    # audible ringing 440+480 2 s/4 s, busy 480+620 0.5/0.5, reorder 480+620
    # 0.25/0.25, call waiting 440 Hz 0.3 s every 10 s, confirmation 3 x 0.1 s
    # of dial tone.
    "us": TonePlan(
        country="us",
        dial=ToneSpec.continuous((350, 440)),
        ringback=ToneSpec.cadenced((440, 480), (2000, 4000)),
        busy=ToneSpec.cadenced((480, 620), (500, 500)),
        congestion=ToneSpec.cadenced((480, 620), (250, 250)),
        call_waiting=ToneSpec.cadenced((440,), (300, 10000)),
        special_information=SPECIAL_INFORMATION_TONE,
        hold=_hold(440.0),
        confirmation=_beeps((350, 440)),
        ring_cadence_ms=(2000, 4000),
    ),
    # Russia / ex-USSR, E.180 Supp. 2 as in Asterisk's "ru" zone: busy
    # 0.35/0.35, congestion 0.175/0.175, call waiting 0.2 s every 5 s.
    "ru": _cept_plan(
        "ru",
        busy_ms=(350, 350),
        congestion_ms=(175, 175),
        call_waiting=ToneSpec.cadenced((425,), (200, 5000)),
    ),
    # Czech Republic, E.180 Supp. 2 as in Asterisk's "cz" zone: cadenced dial
    # tone 0.33/0.33/0.66/0.66, busy 0.33/0.33, congestion 0.165/0.165, call
    # waiting 0.33 s every 9 s.
    "cz": _cept_plan(
        "cz",
        dial=ToneSpec.cadenced((425,), (330, 330, 660, 660)),
        busy_ms=(330, 330),
        congestion_ms=(165, 165),
        call_waiting=ToneSpec.cadenced((425,), (330, 9000)),
    ),
}


def get_tone_plan(country: str, overrides: Mapping[str, ToneSpec | str] | None = None) -> TonePlan:
    """Plan for ``country`` with per-tone overrides (``ToneSpec`` or indications text)."""
    key = country.strip().lower()
    if key not in TONE_PLANS:
        known = ", ".join(sorted(TONE_PLANS))
        raise ValueError(f"unknown tone plan country {country!r}; known countries: {known}")
    plan = TONE_PLANS[key]
    if not overrides:
        return plan
    replacements: dict[str, ToneSpec] = {}
    for name, tone in overrides.items():
        if name not in TONE_NAMES:
            raise ValueError(
                f"cannot override unknown tone {name!r}; tones are: {', '.join(TONE_NAMES)}"
            )
        replacements[name] = parse_tone(tone) if isinstance(tone, str) else tone
    return dataclasses.replace(plan, **replacements)


# --------------------------------------------------------------------------- syntax


def parse_tone(text: str) -> ToneSpec:
    """Parse Asterisk ``indications.conf`` tone lists, e.g. ``425/500,0/500``.

    Steps are ``[!]freq[+freq][/ms]``; ``0`` is silence, a step without ``/ms``
    plays forever (only valid alone, or as trailing silence of a play-once tone),
    ``!`` marks a play-once step and must then be on every step.
    """
    raw_steps = [part.strip() for part in text.split(",")]
    if not text.strip():
        raise ValueError("empty tone specification")
    steps: list[ToneStep] = []
    once_flags: list[bool] = []
    for index, raw in enumerate(raw_steps, start=1):
        try:
            once, step = _parse_step(raw)
        except ValueError as error:
            raise ValueError(f"bad tone step {index} {raw!r} in {text!r}: {error}") from None
        steps.append(step)
        once_flags.append(once)
    repeat = not all(once_flags)
    if any(once_flags) and repeat:
        raise ValueError(
            f"bad tone {text!r}: mixing play-once ('!') and repeating steps is not supported;"
            " put '!' on every step or on none"
        )
    # "!950/330,...,!0" = play once then silence forever, which repeat=False already means.
    if not repeat and len(steps) > 1 and steps[-1] == ToneStep((), 0):
        steps.pop()
    for index, step in enumerate(steps, start=1):
        if step.duration_ms == 0 and len(steps) > 1:
            raise ValueError(
                f"bad tone step {index} {raw_steps[index - 1]!r} in {text!r}: a step without"
                " '/ms' plays forever and must be the only step"
            )
    return ToneSpec(tuple(steps), repeat=repeat)


def _parse_step(raw: str) -> tuple[bool, ToneStep]:
    once = raw.startswith("!")
    body = raw[1:].strip() if once else raw
    if not body:
        raise ValueError("empty step")
    if "*" in body:
        raise ValueError("amplitude-modulated tones ('*') are not supported")
    frequency_text, slash, duration_text = body.partition("/")
    duration_ms = 0
    if slash:
        try:
            duration_ms = int(duration_text.strip())
        except ValueError:
            raise ValueError(
                f"duration {duration_text.strip()!r} is not a whole number of ms"
            ) from None
        if duration_ms <= 0:
            raise ValueError("duration must be positive (omit '/ms' for a continuous tone)")
    parts = [part.strip() for part in frequency_text.split("+")]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"frequency {frequency_text.strip()!r} is not a number") from None
    if any(not math.isfinite(value) or value < 0 for value in values):
        raise ValueError("frequencies must be positive numbers")
    if values == [0.0]:
        return once, ToneStep((), duration_ms)
    if 0.0 in values:
        raise ValueError("'0' means silence and cannot be combined with other frequencies")
    if len(values) > MAX_FREQUENCIES_PER_STEP:
        raise ValueError(f"at most {MAX_FREQUENCIES_PER_STEP} frequencies per step")
    return once, ToneStep(tuple(values), duration_ms)


def format_tone(spec: ToneSpec) -> str:
    """Inverse of ``parse_tone`` (the level is not part of the syntax and is dropped)."""
    prefix = "" if spec.repeat else "!"
    parts = []
    for step in spec.steps:
        frequencies = "+".join(_format_number(f) for f in step.frequencies) or "0"
        duration = f"/{step.duration_ms}" if step.duration_ms else ""
        parts.append(f"{prefix}{frequencies}{duration}")
    return ",".join(parts)


def _format_number(value: float) -> str:
    return format(value, ".10g")


# --------------------------------------------------------------------------- rendering


def frame_samples(sample_rate: int = SAMPLE_RATE) -> int:
    """Samples in one 20 ms frame; the rate must make that a whole number."""
    samples, remainder = divmod(sample_rate * FRAME_MS, 1000)
    if remainder or samples <= 0:
        raise ValueError(f"sample rate {sample_rate} does not give whole 20 ms frames")
    return samples


def render_cycle(spec: ToneSpec, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Samples of the tone that can be looped end-to-start without a click.

    The length is always a whole number of 20 ms frames:

    * continuous tones get the shortest such length in which every frequency
      completes whole periods (425 Hz: 40 ms, 350+440 Hz: 100 ms); frequencies
      that would need more than 10 s are snapped to whole periods of 1 s (< 0.5 Hz);
    * cadenced tones hold as many whole cycles as needed to land on a frame
      boundary (busy 375/375 ms -> 2 cycles, SIT 1990 ms -> 2 cycles), so no step
      is stretched; every burst starts at phase 0 with a 4 ms raised-cosine ramp
      in and out, so the wrap point is silence-to-silence;
    * play-once tones (``repeat=False``) are rendered once and padded with
      silence to a frame boundary; they must not be looped.

    The result is read-only and cached; copy it before modifying.
    """
    return _render_cycle_cached(spec, sample_rate)


@lru_cache(maxsize=256)
def _render_cycle_cached(spec: ToneSpec, sample_rate: int) -> np.ndarray:
    frame = frame_samples(sample_rate)
    _check_nyquist(spec, sample_rate)
    if spec.is_continuous:
        buffer = _render_continuous(spec, sample_rate, frame)
    else:
        one_cycle = np.concatenate([_render_step(spec, step, sample_rate) for step in spec.steps])
        length = one_cycle.size
        repeats = 1
        if spec.repeat:
            repeats = frame // math.gcd(length, frame)
            if repeats > _MAX_CYCLE_REPEATS:
                repeats = 1
        buffer = np.tile(one_cycle, repeats)
        padding = -buffer.size % frame
        buffer = np.concatenate([buffer, np.zeros(padding)])
    samples = _to_int16(buffer)
    samples.flags.writeable = False
    return samples


def render_tone(spec: ToneSpec, duration_ms: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``duration_ms`` of the tone as the mixer would play it (loop or once + silence)."""
    total = round(duration_ms * sample_rate / 1000)
    cycle = render_cycle(spec, sample_rate)
    if spec.repeat or spec.is_continuous:
        return np.resize(cycle, total)
    out = np.zeros(total, dtype=np.int16)
    used = min(total, cycle.size)
    out[:used] = cycle[:used]
    return out


def _check_nyquist(spec: ToneSpec, sample_rate: int) -> None:
    for frequency in spec.frequencies:
        if frequency >= sample_rate / 2:
            raise ValueError(
                f"{frequency:g} Hz cannot be rendered at {sample_rate} Hz (Nyquist limit)"
            )


def _render_continuous(spec: ToneSpec, sample_rate: int, frame: int) -> np.ndarray:
    step = spec.steps[0]
    if not step.frequencies:
        return np.zeros(frame)
    frames_needed = 1
    for frequency in step.frequencies:
        periods_per_frame = Fraction(frequency).limit_denominator(1000) * frame / sample_rate
        frames_needed = math.lcm(frames_needed, periods_per_frame.denominator)
    length = frames_needed * frame
    if length > _MAX_CONTINUOUS_SECONDS * sample_rate:
        length = sample_rate  # 1 s: whole periods for any integer-Hz frequency
    # Snap to exactly whole periods in ``length`` so the wrap is seamless even when
    # limit_denominator rounded the frequency.
    snapped = tuple(
        round(frequency * length / sample_rate) * sample_rate / length
        for frequency in step.frequencies
    )
    return _sines(snapped, spec.step_level_dbm0(step), length, sample_rate)


def _render_step(spec: ToneSpec, step: ToneStep, sample_rate: int) -> np.ndarray:
    length = round(step.duration_ms * sample_rate / 1000)
    if not step.frequencies or length == 0:
        return np.zeros(length)
    burst = _sines(step.frequencies, spec.step_level_dbm0(step), length, sample_rate)
    return burst * _envelope(length, sample_rate)


def _sines(
    frequencies: Sequence[float], level_dbm0: float, length: int, sample_rate: int
) -> np.ndarray:
    time = np.arange(length) / sample_rate
    omega = 2.0 * np.pi * np.asarray(frequencies, dtype=float)
    return dbm0_to_peak(level_dbm0) * np.sin(np.outer(time, omega)).sum(axis=1)


def _envelope(length: int, sample_rate: int) -> np.ndarray:
    """Raised-cosine fade in/out: starts and ends at exactly zero to avoid clicks."""
    ramp = min(round(RAMP_MS * sample_rate / 1000), length // 2)
    envelope = np.ones(length)
    if ramp > 0:
        rise = 0.5 * (1.0 - np.cos(np.pi * np.arange(ramp) / ramp))
        envelope[:ramp] = rise
        envelope[length - ramp :] = rise[::-1]
    return envelope


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- DTMF

DTMF_ROW_FREQUENCIES: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
DTMF_COLUMN_FREQUENCIES: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
_DTMF_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    key: (DTMF_ROW_FREQUENCIES[row], DTMF_COLUMN_FREQUENCIES[column])
    for row, keys in enumerate(_DTMF_KEYPAD)
    for column, key in enumerate(keys)
}


def dtmf_samples(
    digits: str,
    on_ms: int = 80,
    off_ms: int = 80,
    level_dbm0: float = -10.0,
    twist_db: float = 2.0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """DTMF for ``digits`` (0-9 * # A-D), each ``on_ms`` of tone then ``off_ms`` silence.

    ``level_dbm0`` is the high-group (column) component; the low group is
    ``twist_db`` lower, the usual pre-emphasis that offsets line loss.  The
    result is not padded to whole frames.
    """
    bad = sorted({digit for digit in digits.upper() if digit not in DTMF_FREQUENCIES})
    if bad:
        raise ValueError(f"not DTMF digits: {''.join(bad)!r} (allowed: 0-9 * # A-D)")
    on_length = round(on_ms * sample_rate / 1000)
    off_length = round(off_ms * sample_rate / 1000)
    time = np.arange(on_length) / sample_rate
    envelope = _envelope(on_length, sample_rate)
    high_peak = dbm0_to_peak(level_dbm0)
    low_peak = dbm0_to_peak(level_dbm0 - twist_db)
    silence = np.zeros(off_length)
    pieces: list[np.ndarray] = []
    for digit in digits.upper():
        low, high = DTMF_FREQUENCIES[digit]
        burst = low_peak * np.sin(2 * np.pi * low * time) + high_peak * np.sin(
            2 * np.pi * high * time
        )
        pieces.extend((burst * envelope, silence))
    if not pieces:
        return np.zeros(0, dtype=np.int16)
    return _to_int16(np.concatenate(pieces))
