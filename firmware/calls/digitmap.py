"""Digit maps: decide, digit by digit, whether a dialled number is complete.

Pattern syntax (a simplified subset of the MGCP digit map, RFC 3435 §2.1.5).
Each pattern is one alternative; give alternatives as separate patterns
instead of MGCP's ``(a|b)``.

``0``-``9`` ``*`` ``#``
    the literal key.
``x``
    any digit ``0``-``9`` (not ``*`` or ``#``).
``[...]``
    one key out of a set: digits, ``*``, ``#`` and digit ranges, e.g.
    ``[2-9]``, ``[135]``, ``[1-35]`` (= 1, 2, 3 or 5), ``[0-9*]``.
``.``
    the element just before it may repeat: it occurs once, then zero or more
    further times (one or more in total).  So ``9x.`` is "9, then at least one
    digit" and ``9.`` is "one or more 9s" (not "9 then anything").  This
    differs from strict RFC 3435, where ``x.`` also matches *no* digit; here a
    ``.`` never makes its element optional, so ``9x.`` cannot fire on a lone
    "9" and no pattern can match an empty number.

There is no ``T`` timer letter: when a dialled string is a complete number *and*
could still grow (``AMBIGUOUS``), the caller waits for the inter-digit timeout
or for ``#`` and then acts on :attr:`DigitMatch.pattern`.

Matching simulates each pattern as an NFA over a set of positions (``e.`` is
compiled to ``e`` followed by a zero-or-more ``e``), so there is no regex to
escape and every dialled prefix costs O(patterns × digits).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "DIAL_KEYS",
    "DigitMap",
    "DigitMapError",
    "DigitMatch",
    "MatchState",
    "validate_pattern",
]

DIGITS = frozenset("0123456789")
DIAL_KEYS = frozenset("0123456789*#")
"""Keys a digit map knows about; any other key in the dialled string never matches."""


class DigitMapError(ValueError):
    """A pattern is malformed; the message says where and how to fix it.

    ``position`` is the 0-based index of the offending character in ``pattern``.
    """

    def __init__(self, pattern: str, position: int, reason: str) -> None:
        self.pattern = pattern
        self.position = position
        self.reason = reason
        super().__init__(f"digit map pattern {pattern!r}, position {position}: {reason}")


class MatchState(Enum):
    """What the collector should do after the digits dialled so far."""

    NO_MATCH = "no_match"
    """No pattern can match, whatever follows: reject at once."""
    PARTIAL = "partial"
    """A prefix of some pattern but no full match yet: keep collecting."""
    AMBIGUOUS = "ambiguous"
    """A full match that could also grow into a longer match: wait for the
    inter-digit timeout or ``#``, then use the pattern."""
    COMPLETE = "complete"
    """A full match that no pattern can extend: act at once."""


@dataclass(frozen=True)
class DigitMatch:
    """Result of :meth:`DigitMap.match`.

    ``pattern`` is the first pattern (in map order) that fully matches, for
    ``COMPLETE`` and ``AMBIGUOUS``; otherwise ``None``.
    """

    state: MatchState
    pattern: str | None = None


@dataclass(frozen=True)
class _Element:
    """One key position of a compiled pattern."""

    keys: frozenset[str]
    repeated: bool


def _compile(pattern: str) -> tuple[_Element, ...]:
    """Parse ``pattern`` into elements, raising DigitMapError with a teaching message."""
    if not isinstance(pattern, str):
        raise DigitMapError(repr(pattern), 0, "a pattern must be a string")
    if not pattern:
        raise DigitMapError(pattern, 0, "empty pattern; a pattern needs at least one key")
    elements: list[_Element] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char in DIAL_KEYS:
            elements.append(_Element(frozenset(char), repeated=False))
            index += 1
        elif char == "x":
            elements.append(_Element(DIGITS, repeated=False))
            index += 1
        elif char == "[":
            keys, index = _parse_set(pattern, index)
            elements.append(_Element(keys, repeated=False))
        elif char == ".":
            if not elements:
                raise DigitMapError(
                    pattern, index, "'.' repeats the element before it, but nothing comes before"
                )
            if elements[-1].repeated:
                raise DigitMapError(
                    pattern, index, "'..' is not allowed; one '.' already means 'repeat'"
                )
            # "e." = one "e", then zero or more: the NFA only needs a star element.
            elements.append(_Element(elements[-1].keys, repeated=True))
            index += 1
        else:
            raise DigitMapError(pattern, index, _unknown_char_reason(char))
    return tuple(elements)


def _parse_set(pattern: str, start: int) -> tuple[frozenset[str], int]:
    """Parse ``[...]`` beginning at ``start``; return its keys and the index after ``]``."""
    keys: set[str] = set()
    index = start + 1
    while True:
        if index >= len(pattern):
            raise DigitMapError(pattern, start, "'[' is never closed; add ']'")
        char = pattern[index]
        if char == "]":
            break
        if char in DIGITS and index + 1 < len(pattern) and pattern[index + 1] == "-":
            if index + 2 >= len(pattern) or pattern[index + 2] not in DIGITS:
                raise DigitMapError(pattern, index + 1, "'-' must join two digits, as in '[2-9]'")
            low, high = char, pattern[index + 2]
            if low > high:
                raise DigitMapError(
                    pattern,
                    index,
                    f"range '{low}-{high}' runs backwards; write '{high}-{low}'",
                )
            keys.update(str(digit) for digit in range(int(low), int(high) + 1))
            index += 3
        elif char in DIAL_KEYS:
            keys.add(char)
            index += 1
        elif char == "-":
            raise DigitMapError(pattern, index, "'-' must join two digits, as in '[2-9]'")
        elif char == "[":
            raise DigitMapError(pattern, index, "sets cannot be nested; close the first '[' first")
        elif char in "x.":
            raise DigitMapError(
                pattern, index, f"{char!r} is not allowed inside '[...]'; list keys or ranges"
            )
        else:
            raise DigitMapError(pattern, index, _unknown_char_reason(char))
    if not keys:
        raise DigitMapError(pattern, start, "empty set '[]'; list at least one key")
    return frozenset(keys), index + 1


def _unknown_char_reason(char: str) -> str:
    """Explain an unsupported character, with the fix for the common mistakes."""
    if char == "X":
        return "use lowercase 'x' for 'any digit'"
    if char in "Tt":
        return "the timer letter 'T' is not supported; the inter-digit timeout is automatic"
    if char in "|()":
        return "alternatives are not written with '|' or '()'; list each pattern separately"
    if char == "]":
        return "']' without a matching '['"
    if char.isspace():
        return "whitespace is not allowed in a pattern"
    return f"unknown character {char!r}; use digits, '*', '#', 'x', '[...]' sets and '.'"


def validate_pattern(pattern: str) -> None:
    """Check one pattern, raising DigitMapError so config validation can show the reason."""
    _compile(pattern)


def _closure(elements: tuple[_Element, ...], positions: set[int]) -> set[int]:
    """Add the positions reachable by skipping repeated (zero-or-more) elements."""
    result = set(positions)
    for position in sorted(positions):
        while position < len(elements) and elements[position].repeated:
            position += 1
            result.add(position)
    return result


def _step(elements: tuple[_Element, ...], positions: set[int], key: str) -> set[int]:
    """Positions after consuming ``key`` (closure included)."""
    following: set[int] = set()
    for position in positions:
        if position < len(elements) and key in elements[position].keys:
            following.add(position if elements[position].repeated else position + 1)
    return _closure(elements, following)


class DigitMap:
    """An ordered list of patterns; earlier patterns win when several match fully."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(patterns)
        self._compiled = tuple(_compile(pattern) for pattern in self._patterns)

    @property
    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    def match(self, digits: str) -> DigitMatch:
        """Classify the keys dialled so far (called again after every key)."""
        first_full: str | None = None
        can_grow = False
        for pattern, elements in zip(self._patterns, self._compiled, strict=True):
            positions = _closure(elements, {0})
            for key in digits:
                positions = _step(elements, positions, key)
                if not positions:
                    break
            if not positions:
                continue
            end = len(elements)
            if end in positions and first_full is None:
                first_full = pattern
            # Every element accepts at least one key, so any position short of
            # the end can still be walked to the end: a longer match exists.
            if any(position < end for position in positions):
                can_grow = True
        if first_full is not None:
            state = MatchState.AMBIGUOUS if can_grow else MatchState.COMPLETE
            return DigitMatch(state, first_full)
        if can_grow:
            return DigitMatch(MatchState.PARTIAL)
        return DigitMatch(MatchState.NO_MATCH)

    def __repr__(self) -> str:
        return f"DigitMap({list(self._patterns)!r})"
