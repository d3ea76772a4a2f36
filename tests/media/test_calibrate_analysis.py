"""Line-recording analysis: tone frequencies, cadence, level, noise floor and echo path of
exchanges and lines drawn at random, checked against what generated them."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.lines.sim_acoustics import (
    FAMILIES,
    LineAcoustics,
    random_acoustics,
    random_disconnect_tone,
)
from firmware.media.calibrate import CalibrationError, analyse_recording, describe, probe_signal
from firmware.media.disconnect import DisconnectToneDetector
from firmware.media.levels import dbm0_to_peak, dbm0_to_rms
from firmware.media.tones import TONE_PLANS, ToneSpec, parse_tone, render_tone

RATE = 8000


def _pcm(samples: np.ndarray) -> np.ndarray:
    samples = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return samples[: samples.size // 160 * 160]


def _record(
    exchange: np.ndarray,
    acoustics: LineAcoustics,
    rng: np.random.Generator,
    probe_at_s: float | None = 1.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """What the card records: the exchange at the line's level, the probe's echo, noise."""
    said = exchange * 10 ** (acoustics.level_db / 20)
    sent = None
    if probe_at_s is not None:
        sent = np.zeros(said.size)
        probe = probe_signal(2.0)
        start = int(probe_at_s * RATE)
        sent[start : start + probe.size] = probe
        said = said + np.convolve(sent, acoustics.impulse_response())[: said.size]
    if acoustics.noise_dbm0 is not None:
        said = said + rng.normal(0.0, dbm0_to_rms(acoustics.noise_dbm0), said.size)
    return _pcm(said), None if sent is None else _pcm(sent)


@pytest.mark.parametrize("seed", range(24))
def test_a_random_exchange_on_a_random_line_is_measured(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    tone = random_disconnect_tone(rng, FAMILIES[seed % 3])
    acoustics = random_acoustics(rng)
    said, sent = _record(render_tone(tone, 10_000).astype(float), acoustics, rng)
    result = analyse_recording(said, sent)

    chord = tone.chords[0]
    assert len(result.frequencies) == len(chord)
    assert result.frequencies == pytest.approx(chord, abs=0.3)
    assert len(result.cadence_ms) == len(tone.cadence_ms)
    # Burst edges are read at half amplitude; the generator's 4 ms ramps make bursts
    # measure up to ~10 ms short and gaps as much longer.
    assert np.all(np.abs(np.subtract(result.cadence_ms, tone.cadence_ms)) <= 15)
    expected_level = tone.level_dbm0 + acoustics.level_db
    assert all(
        level == pytest.approx(expected_level, abs=0.5) for level in result.component_levels_dbm0
    )
    assert result.noise_floor_dbm0 == pytest.approx(acoustics.noise_dbm0, abs=1.0)
    assert result.cycles_seen >= 10_000 // tone.cycle_ms - 2
    echo = result.echo
    assert echo is not None
    assert echo.delay_ms == pytest.approx(acoustics.echo_delay_ms, abs=0.5)
    assert echo.loss_db == pytest.approx(acoustics.echo_loss_db, abs=1.0)
    assert acoustics.echo_delay_ms + 3 <= echo.tail_ms <= acoustics.echo_delay_ms + 3 + 24

    # The loop closed: the learned setting recognises the exchange's tone at runtime.
    learned = result.settings()["disconnect_tone"]
    parse_tone(learned)
    live, _ = _record(render_tone(tone, 6 * tone.cycle_ms).astype(float), acoustics, rng, None)
    assert DisconnectToneDetector([learned]).scan(live) is not None


def test_the_tone_after_the_far_party_hangs_up_is_learned_not_the_ringback() -> None:
    plan = TONE_PLANS["eu"]
    rng = np.random.default_rng(7)
    busy = ToneSpec.cadenced((425,), (330, 330))
    time = np.arange(3 * RATE) / RATE
    voice = dbm0_to_peak(-20) * sum(
        np.sin(2 * np.pi * k * 180 * time * (1 + 0.03 * np.sin(3 * time))) / k for k in range(1, 8)
    )
    exchange = np.concatenate(
        [render_tone(plan.ringback, 6000), voice, np.zeros(RATE), render_tone(busy, 6000)]
    )
    said, _ = _record(
        exchange.astype(float), LineAcoustics(level_db=-3.0, noise_dbm0=-65.0), rng, None
    )
    result = analyse_recording(said)
    assert result.indication == "425/330,0/330"
    assert result.echo is None and "echo_tail_ms" not in result.settings()


def test_a_close_dual_tone_is_split_into_its_two_frequencies() -> None:
    tone = ToneSpec.cadenced((400, 450), (400, 350, 225, 525))  # UK-style congestion cadence
    said, _ = _record(
        render_tone(tone, 9000).astype(float),
        LineAcoustics(noise_dbm0=-60.0),
        np.random.default_rng(1),
        None,
    )
    result = analyse_recording(said)
    assert result.frequencies == pytest.approx((400.0, 450.0), abs=0.3)
    assert result.indication.startswith("400+450/")


def test_a_continuous_tone_is_learned_as_continuous() -> None:
    said, _ = _record(
        render_tone(ToneSpec.continuous((425,), -20.0), 6000).astype(float),
        LineAcoustics(noise_dbm0=-62.0),
        np.random.default_rng(2),
        None,
    )
    result = analyse_recording(said)
    assert result.indication == "425"
    assert result.cadence_ms == ()
    assert result.noise_floor_dbm0 == pytest.approx(-62.0, abs=1.5)


def test_settings_and_description_say_what_was_found() -> None:
    tone = ToneSpec.cadenced((480, 620), (500, 500), level_dbm0=-22.0)
    rng = np.random.default_rng(3)
    acoustics = LineAcoustics(
        level_db=-4.0, noise_dbm0=-58.0, echo_delay_ms=12.0, echo_loss_db=10.0
    )
    said, sent = _record(render_tone(tone, 8000).astype(float), acoustics, rng)
    result = analyse_recording(said, sent)
    settings = result.settings()
    # Tone at -26 dBm0 per component, -23 dBm0 in all: +6 dB (the cap) towards -13 dBm0.
    assert settings == {
        "disconnect_tone": "480+620/500,0/500",
        "noise_floor_dbm0": pytest.approx(-58.0, abs=1.0),
        "rx_gain_db": 6.0,
        "tx_gain_db": 0.0,
        "echo_tail_ms": 24,
    }
    text = "\n".join(describe(result.to_json()))
    assert "480 Hz + 620 Hz" in text and "500 / 500 ms" in text
    assert "delay 12.0 ms" in text and "canceller tail 24 ms" in text


@pytest.mark.parametrize(
    "what, message",
    [
        ("noise", "no tone heard"),
        ("short", "shorter than 2 s"),
        ("irregular", "no regular cadence"),
    ],
)
def test_recordings_without_a_usable_tone_are_refused_with_a_reason(
    what: str, message: str
) -> None:
    rng = np.random.default_rng(9)
    if what == "noise":
        said = _pcm(rng.normal(0, dbm0_to_rms(-30.0), 8 * RATE))
    elif what == "short":
        said = _pcm(render_tone(TONE_PLANS["eu"].busy, 1500))
    else:
        pieces = [
            render_tone(ToneSpec.cadenced((425,), (on, 10)), on) for on in (300, 700, 450, 900, 250)
        ]
        gaps = [np.zeros(ms * 8) for ms in (800, 200, 600, 350, 500)]
        said = _pcm(
            np.concatenate([part for pair in zip(pieces, gaps, strict=True) for part in pair])
        )
    with pytest.raises(CalibrationError, match=message):
        analyse_recording(said)
