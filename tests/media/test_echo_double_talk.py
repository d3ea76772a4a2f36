"""Double talk: the city caller and our extension talk at once.

The near-end talker must come through (the output compared with the clean near-end
speech), the canceller must not unlearn the echo path meanwhile (ERLE right after), and
the NLP must not chop the talker. Setting: 3 s of far-end speech alone (converged), 3 s of
both, 1 s of far end alone again. Far end at -15 dBm0, as an extension talks.

Why 15 dB: the output's difference from the clean talker is residual echo plus whatever
the NLP took away; 15 dB under the talker is below the level of the talker's own sidetone
and room noise on a handset and is not heard as damage, while a chopped syllable (a frame
replaced by comfort noise) costs the whole frame and pulls the figure far below it.
"""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.echo import EchoCanceller
from firmware.media.hybrid import HybridEchoPath, speech_like
from firmware.media.levels import power_to_dbm0

RATE = 8000
TALK = slice(3 * RATE, 6 * RATE)
AFTER = slice(6 * RATE, int(6.5 * RATE))


def _int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _scenario(kind: str, erl_db: float, near_dbm0: float, seed: int, **options):
    far = _int16(speech_like(7.0, np.random.default_rng(seed), -15.0))
    near = speech_like(7.0, np.random.default_rng(seed + 100), near_dbm0)
    near[: TALK.start] = 0.0
    near[TALK.stop :] = 0.0
    echo = HybridEchoPath.of_kind(kind, delay_ms=10, erl_db=erl_db).echo(far.astype(float))
    line = _int16(echo + near)
    canceller = EchoCanceller(32, **options)
    output = np.concatenate(
        [
            canceller.process(far[start : start + 160], line[start : start + 160])
            for start in range(0, far.size, 160)
        ]
    ).astype(float)
    return echo, near, output


def _db(signal: np.ndarray, error: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(signal**2) / max(np.sum(error**2), 1e-9)))


CASES = [
    ("long", 6.0, -20.0, 1),  # echo as loud as the talker
    ("medium", 12.0, -25.0, 2),
    ("resonant", 20.0, -25.0, 3),
    ("medium", 20.0, -30.0, 4),  # a quiet city caller 5 dB over the echo
]


@pytest.mark.parametrize(("kind", "erl_db", "near_dbm0", "seed"), CASES)
def test_the_near_end_talker_passes_with_small_distortion(kind, erl_db, near_dbm0, seed):
    _, near, output = _scenario(kind, erl_db, near_dbm0, seed)
    assert _db(near[TALK], output[TALK] - near[TALK]) >= 15.0


@pytest.mark.parametrize(("kind", "erl_db", "near_dbm0", "seed"), CASES)
def test_no_syllable_of_the_near_end_is_chopped(kind, erl_db, near_dbm0, seed):
    _, near, output = _scenario(kind, erl_db, near_dbm0, seed)
    frames_near = near[TALK].reshape(-1, 160)
    frames_out = output[TALK].reshape(-1, 160)
    loud = power_to_dbm0(np.mean(frames_near**2, axis=1)) > near_dbm0 - 6
    kept = np.sum(frames_out[loud] * frames_near[loud], axis=1) / np.sum(
        frames_near[loud] ** 2, axis=1
    )
    assert kept.min() > 0.7  # every loud talker frame keeps most of its amplitude


@pytest.mark.parametrize(("kind", "erl_db", "near_dbm0", "seed"), CASES)
def test_the_echo_path_is_not_unlearnt_during_double_talk(kind, erl_db, near_dbm0, seed):
    echo, _, output = _scenario(kind, erl_db, near_dbm0, seed, nlp=False)
    assert _db(echo[AFTER], output[AFTER]) >= 20.0


def test_during_double_talk_the_echo_is_still_cancelled():
    echo, near, output = _scenario("medium", 12.0, -20.0, 5, nlp=False)
    residual_echo = output[TALK] - near[TALK]
    assert _db(echo[TALK], residual_echo) >= 20.0
