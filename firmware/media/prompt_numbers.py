"""Numbers spoken from the shipped number prompts: queue positions, waiting minutes.

The library has `number_0` to `number_20` and the tens `number_30` to `number_90` in
each language, plus `and` ("e" in Portuguese). A number is the list of sound names to
play one after the other:

* 0-20 and the round tens: one prompt;
* 21-99: tens then units ("twenty" "three"; Portuguese "vinte" "e" "três");
* 100 and more: digit by digit ("one" "two" "five"), as a caller reads a long number.

Portuguese numbers are the masculine forms ("um", "dois"), which agree with the
announcements that precede them ("número", "minutos").
"""

from __future__ import annotations

import numpy as np

from firmware.media.prompts import LANGUAGES, sound_name
from firmware.media.soundbank import SoundBank

_TENS_JOINER = {"en": None, "pt": "and"}


def number_sounds(number: int, language: str) -> list[str]:
    """Sound names that say `number` (a non-negative integer) in `language`."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown prompt language {language!r} (known: {', '.join(LANGUAGES)})")
    if number < 0:
        raise ValueError(f"cannot announce a negative number ({number})")
    if number <= 20 or (number < 100 and number % 10 == 0):
        return [_number(number)]
    if number < 100:
        tens, units = divmod(number, 10)
        joiner = _TENS_JOINER[language]
        middle = [sound_name(joiner)] if joiner else []
        return [_number(tens * 10), *middle, _number(units)]
    return [_number(int(digit)) for digit in str(number)]


def position_announcement(position: int, language: str) -> list[str]:
    """'You are caller number N' (Portuguese: 'A sua posição na fila é N')."""
    if position < 1:
        raise ValueError(f"a queue position starts at 1, got {position}")
    return [sound_name("you_are_caller_number"), *number_sounds(position, language)]


def wait_announcement(minutes: int, language: str) -> list[str]:
    """'The expected waiting time is about N minutes' (at least one minute is said)."""
    minutes = max(1, minutes)
    unit = "minute" if minutes == 1 else "minutes"
    return [
        sound_name("expected_wait"),
        *number_sounds(minutes, language),
        sound_name(unit),
    ]


def join_sounds(bank: SoundBank, names: list[str], gap_ms: int = 60) -> np.ndarray:
    """One int16 buffer of the named sounds with short silences between them.

    The mixer plays one sound per slot; a feature that wants a whole sentence joins it
    once and adds it to the bank under a name of its own (a handful of positions).
    """
    if not names:
        raise ValueError("nothing to join")
    gap = np.zeros(round(gap_ms * 8), dtype=np.int16)
    pieces: list[np.ndarray] = []
    for index, name in enumerate(names):
        if index:
            pieces.append(gap)
        pieces.append(bank.samples_of(name))
    return np.concatenate(pieces)


def _number(value: int) -> str:
    return sound_name(f"number_{value}")
