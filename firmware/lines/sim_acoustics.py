"""What a real city line does to audio, for the simulator: level, noise, echo; and tone
plans of exchanges the code has never seen.

`LineAcoustics` describes one line: the loss (or gain) on everything the exchange sends,
a white noise floor, and the echo of the appliance's own signal that the line card's
2-wire/4-wire hybrid returns (a delayed, attenuated, slightly dispersive copy, ERL in dB).
`AcousticsTap` applies it frame by frame between the simulated exchange and the mixer,
standing where the card's codec would be. `random_tone_plan` draws a national plan within
the ranges ITU-T E.180 Supplement 2 lists, so calibration and detection are tested on
plans chosen at random rather than on the few the firmware ships.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from firmware.lines.audio import MemoryAudio
from firmware.media.levels import dbm0_to_rms
from firmware.media.tones import TONE_PLANS, TonePlan, ToneSpec

FRAME_SAMPLES = 160
_DISPERSION_TAPS = 24  # 3 ms: a hybrid's echo is smeared over a few ms


@dataclass(frozen=True)
class LineAcoustics:
    """Audio properties of one simulated city line (defaults: a perfect line)."""

    level_db: float = 0.0  # gain on what the exchange sends (negative: line loss)
    noise_dbm0: float | None = None  # white noise floor added to what the line says
    echo_delay_ms: float = 0.0  # bulk delay of the hybrid echo
    echo_loss_db: float | None = None  # echo return loss (ERL); None: no echo
    seed: int = 0

    def impulse_response(self) -> np.ndarray:
        """The echo path: bulk delay, then a short decaying ring with energy -ERL dB."""
        if self.echo_loss_db is None:
            return np.zeros(0)
        delay = round(self.echo_delay_ms * 8)
        taps = np.arange(_DISPERSION_TAPS)
        ring = np.exp(-taps / 5.0) * np.cos(0.7 * taps)
        ring *= 10 ** (-self.echo_loss_db / 20) / np.sqrt(np.sum(ring**2))
        return np.concatenate([np.zeros(delay), ring])

    @property
    def is_perfect(self) -> bool:
        return self.level_db == 0 and self.noise_dbm0 is None and self.echo_loss_db is None


class _LineFrontEnd:
    """One line's state: the echo path's memory of what the appliance sent, the noise."""

    def __init__(self, acoustics: LineAcoustics) -> None:
        self.acoustics = acoustics
        self.gain = 10 ** (acoustics.level_db / 20)
        self.response = acoustics.impulse_response()
        self.history = np.zeros(max(self.response.size - 1, 0) + FRAME_SAMPLES)
        self.rng = np.random.default_rng(acoustics.seed)
        self.noise_rms = None if acoustics.noise_dbm0 is None else dbm0_to_rms(acoustics.noise_dbm0)
        self.last_sent = np.zeros(FRAME_SAMPLES)

    def heard_from_exchange(self, frame: np.ndarray) -> np.ndarray:
        """The frame the card hears: exchange audio at the line's level, echo, noise."""
        out = frame.astype(np.float64) * self.gain
        if self.response.size:
            out += np.convolve(self.history, self.response, mode="valid")[-FRAME_SAMPLES:]
        if self.noise_rms is not None:
            out += self.rng.normal(0.0, self.noise_rms, FRAME_SAMPLES)
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def sent(self, frame: np.ndarray) -> None:
        """What the appliance sent this tick enters the echo path (heard from the next tick)."""
        if self.response.size:
            self.history = np.concatenate([self.history[FRAME_SAMPLES:], frame.astype(np.float64)])


class AcousticsTap:
    """Applies each line's `LineAcoustics` to the shared `MemoryAudio`, frame by frame.

    Installed on the audio object the mixer already ticks (its `read_into`/`write_from`
    are wrapped on that instance), only once some line is given acoustics: with perfect
    lines nothing changes.
    """

    def __init__(self, audio: MemoryAudio) -> None:
        self.audio = audio
        self.lines: dict[int, _LineFrontEnd] = {}
        self._read = audio.read_into
        self._write = audio.write_from
        audio.read_into = self.read_into  # type: ignore[method-assign]
        audio.write_from = self.write_from  # type: ignore[method-assign]

    def set_line(self, port: int, acoustics: LineAcoustics | None) -> None:
        if acoustics is None or acoustics.is_perfect:
            self.lines.pop(port, None)
        else:
            self.lines[port] = _LineFrontEnd(acoustics)

    def read_into(self, inputs: np.ndarray) -> None:
        self._read(inputs)
        for port, front_end in self.lines.items():
            slot = self.audio.slot_of(port)
            if slot is not None:
                inputs[slot] = front_end.heard_from_exchange(inputs[slot])

    def write_from(self, outputs: np.ndarray) -> None:
        self._write(outputs)
        for port, front_end in self.lines.items():
            slot = self.audio.slot_of(port)
            front_end.sent(outputs[slot] if slot is not None else np.zeros(FRAME_SAMPLES))


# ----- tone plans of unknown exchanges -----------------------------------------------------

FAMILIES = ("eu", "uk", "us")


def _cadence(rng: np.random.Generator, low: int, high: int) -> int:
    """A duration in ms, on a 5 ms grid as exchanges specify them."""
    return int(round(rng.uniform(low, high) / 5) * 5)


def random_disconnect_tone(rng: np.random.Generator, family: str) -> ToneSpec:
    """A busy/congestion tone as some exchange of that family might send it.

    eu: one frequency 400-450 Hz; uk: 400 Hz or 400+450 Hz (within ±1 %); us: 480+620 Hz
    (within ±1 %) or another dual tone 350-650 Hz. Cadences: one on/off pair of 150-700 ms
    each (70 %), or a two-pair pattern (UK/Spanish congestion style).
    """
    if family == "eu":
        chord: tuple[float, ...] = (float(round(rng.uniform(400, 450))),)
    elif family == "uk":
        base = 400 * rng.uniform(0.99, 1.01)
        chord = (round(base),) if rng.random() < 0.5 else (round(base), round(base + 50))
    elif family == "us":
        if rng.random() < 0.6:
            scale = rng.uniform(0.99, 1.01)
            chord = (round(480 * scale), round(620 * scale))
        else:
            low = rng.uniform(350, 500)
            chord = (round(low), round(low + rng.uniform(60, 150)))
    else:
        raise ValueError(f"unknown tone family {family!r}: {', '.join(FAMILIES)}")
    chord = tuple(float(frequency) for frequency in chord)
    if rng.random() < 0.7:
        on = _cadence(rng, 150, 700)
        off = int(round(np.clip(on * rng.uniform(0.7, 1.4), 150, 700) / 5) * 5)
        cadence = (on, off)
    else:
        cadence = (
            _cadence(rng, 150, 450),
            _cadence(rng, 150, 400),
            _cadence(rng, 150, 450),
            _cadence(rng, 300, 700),
        )
    level = float(rng.uniform(-24.0, -10.0))
    return ToneSpec.cadenced(chord, cadence, level_dbm0=level)


def random_tone_plan(rng: np.random.Generator, family: str | None = None) -> TonePlan:
    """A whole plan (the family's shipped plan) with random busy and congestion tones."""
    family = family or str(rng.choice(FAMILIES))
    base = TONE_PLANS[family]
    busy = random_disconnect_tone(rng, family)
    congestion = random_disconnect_tone(rng, family)
    return dataclasses.replace(base, country=f"random-{family}", busy=busy, congestion=congestion)


def random_acoustics(rng: np.random.Generator) -> LineAcoustics:
    """A realistic line: 0-9 dB loss, noise -70 to -50 dBm0, echo 0-30 ms at ERL 6-20 dB."""
    return LineAcoustics(
        level_db=float(rng.uniform(-9.0, 0.0)),
        noise_dbm0=float(rng.uniform(-70.0, -50.0)),
        echo_delay_ms=float(rng.uniform(0.0, 30.0)),
        echo_loss_db=float(rng.uniform(6.0, 20.0)),
        seed=int(rng.integers(1 << 31)),
    )
