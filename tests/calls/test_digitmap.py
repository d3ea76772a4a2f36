"""Digit maps: the collector's only basis for acting at once, waiting, or rejecting."""

from __future__ import annotations

import pytest

from firmware.calls.digitmap import (
    DigitMap,
    DigitMapError,
    DigitMatch,
    MatchState,
    validate_pattern,
)

NO = MatchState.NO_MATCH
PARTIAL = MatchState.PARTIAL
AMBIGUOUS = MatchState.AMBIGUOUS
COMPLETE = MatchState.COMPLETE

OFFICE_MAP = ["2xx", "9x.", "112", "*7x", "#"]

CASES = [
    # (patterns, dialled, expected state, expected pattern)
    (["2xx"], "", PARTIAL, None),
    (["2xx"], "2", PARTIAL, None),
    (["2xx"], "20", PARTIAL, None),
    (["2xx"], "201", COMPLETE, "2xx"),
    (["2xx"], "2011", NO, None),
    (["2xx"], "3", NO, None),
    (["2xx"], "2*", NO, None),
    # '.' = one or more of the element before it.
    (["9x."], "9", PARTIAL, None),
    (["9x."], "91", AMBIGUOUS, "9x."),
    (["9x."], "912", AMBIGUOUS, "9x."),
    (["9x."], "9#", NO, None),
    (["9."], "9", AMBIGUOUS, "9."),
    (["9."], "999", AMBIGUOUS, "9."),
    (["9."], "98", NO, None),
    (["0[1-9]x.#"], "012#", COMPLETE, "0[1-9]x.#"),
    (["0[1-9]x.#"], "01#", NO, None),
    (["0[1-9]x.#"], "0123", PARTIAL, None),
    # A mixed office map.
    (OFFICE_MAP, "1", PARTIAL, None),
    (OFFICE_MAP, "11", PARTIAL, None),
    (OFFICE_MAP, "112", COMPLETE, "112"),
    (OFFICE_MAP, "113", NO, None),
    (OFFICE_MAP, "9", PARTIAL, None),
    (OFFICE_MAP, "90", AMBIGUOUS, "9x."),
    (OFFICE_MAP, "*", PARTIAL, None),
    (OFFICE_MAP, "*7", PARTIAL, None),
    (OFFICE_MAP, "*72", COMPLETE, "*7x"),
    (OFFICE_MAP, "*8", NO, None),
    (OFFICE_MAP, "#", COMPLETE, "#"),
    (OFFICE_MAP, "##", NO, None),
    (OFFICE_MAP, "5", NO, None),
    # Overlapping patterns: a full match that another pattern can extend.
    (["11", "112"], "11", AMBIGUOUS, "11"),
    (["11", "112"], "112", COMPLETE, "112"),
    (["11", "112"], "1", PARTIAL, None),
    # First full match in list order wins.
    (["2xx", "20x"], "201", COMPLETE, "2xx"),
    (["20x", "2xx"], "201", COMPLETE, "20x"),
    (["2xx", "2xxx"], "201", AMBIGUOUS, "2xx"),
    # National numbers.
    (["[2-9]xxxxxxxx"], "1", NO, None),
    (["[2-9]xxxxxxxx"], "21234567", PARTIAL, None),
    (["[2-9]xxxxxxxx"], "212345678", COMPLETE, "[2-9]xxxxxxxx"),
    (["[2-9]xxxxxxxx"], "2123456789", NO, None),
    # Sets.
    (["[135]"], "3", COMPLETE, "[135]"),
    (["[135]"], "2", NO, None),
    (["[1-35]"], "2", COMPLETE, "[1-35]"),
    (["[1-35]"], "4", NO, None),
    (["[1-35]"], "5", COMPLETE, "[1-35]"),
    (["[*#]x"], "#1", COMPLETE, "[*#]x"),
    # '*' and '#' are literals, never wildcards.
    (["*"], "*", COMPLETE, "*"),
    (["*"], "1", NO, None),
    (["x"], "*", NO, None),
    (["x"], "#", NO, None),
    (["*#"], "*#", COMPLETE, "*#"),
    # Keys outside the dial alphabet never match.
    (["x"], "A", NO, None),
    # An empty map matches nothing.
    ([], "", NO, None),
    ([], "1", NO, None),
]


@pytest.mark.parametrize(("patterns", "dialled", "state", "pattern"), CASES)
def test_match(patterns: list[str], dialled: str, state: MatchState, pattern: str | None) -> None:
    assert DigitMap(patterns).match(dialled) == DigitMatch(state, pattern)


def test_match_is_repeatable_per_digit() -> None:
    """The collector calls match() after each key; the map must not keep state between calls."""
    digit_map = DigitMap(OFFICE_MAP)
    states = [digit_map.match("112"[:length]).state for length in range(1, 4)]
    assert states == [PARTIAL, PARTIAL, COMPLETE]
    assert digit_map.match("1").state is PARTIAL


def test_patterns_property_keeps_order() -> None:
    digit_map = DigitMap(iter(OFFICE_MAP))
    assert digit_map.patterns == tuple(OFFICE_MAP)


ERRORS = [
    # (pattern, position, fragment of the reason)
    ("[", 0, "never closed"),
    ("2[35", 1, "never closed"),
    ("[9-2]", 1, "runs backwards; write '2-9'"),
    (".", 0, "nothing comes before"),
    (".9", 0, "nothing comes before"),
    ("a", 0, "unknown character 'a'"),
    ("2a1", 1, "unknown character 'a'"),
    ("", 0, "empty pattern"),
    ("[]", 0, "empty set"),
    ("9x..", 3, "'..'"),
    ("[2-]", 2, "'-' must join two digits"),
    ("[-2]", 1, "'-' must join two digits"),
    ("[2-*]", 2, "'-' must join two digits"),
    ("[[2]]", 1, "nested"),
    ("[x]", 1, "not allowed inside"),
    ("2X", 1, "lowercase 'x'"),
    ("9xT", 2, "timer letter 'T'"),
    ("11|112", 2, "list each pattern separately"),
    ("2]", 1, "without a matching '['"),
    ("2 1", 1, "whitespace"),
]


@pytest.mark.parametrize(("pattern", "position", "reason"), ERRORS)
def test_bad_pattern_is_explained(pattern: str, position: int, reason: str) -> None:
    with pytest.raises(DigitMapError) as caught:
        validate_pattern(pattern)
    error = caught.value
    assert error.position == position
    assert error.pattern == pattern
    assert reason in error.reason
    assert f"position {position}" in str(error)
    assert repr(pattern) in str(error)


def test_digit_map_error_is_a_value_error() -> None:
    """Config validation catches ValueError; the digit map must fit that."""
    with pytest.raises(ValueError, match="runs backwards"):
        DigitMap(["2xx", "[9-2]"])


def test_valid_patterns_pass_validation() -> None:
    for pattern in [*OFFICE_MAP, "[2-9]xxxxxxxx", "[1-35]", "0[0-9*#]x.", "9."]:
        validate_pattern(pattern)
