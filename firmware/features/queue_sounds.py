"""What a waiting caller hears: announcements one sound after another, music between.

The mixer plays one sound per slot, so an announcement made of several prompts ("you are
caller number" "three") is played piece by piece. `Soundtrack` is the schedule without
I/O: the queue's call loop asks it what to start now (given whether the last sound is
still playing) and how long it may sleep; `Announcements` builds the sentences.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from firmware.media.prompt_numbers import position_announcement, wait_announcement
from firmware.media.prompts import sound_name

_KEY_SOUNDS = {"*": "key_star", "#": "key_hash"}


class Soundtrack:
    """Announcements, then music for `every_s` seconds, then the next announcement."""

    def __init__(self, music: str, every_s: float) -> None:
        self.music = music
        self.every_s = every_s
        self.next_due = math.inf  # when the next comfort announcement starts
        self._pending: deque[str] = deque()
        self._announcing = False
        self._started = False  # the first sound of the announcement has been started

    @property
    def announcing(self) -> bool:
        return self._announcing

    def announce(self, sounds: list[str]) -> None:
        """Start these sounds at the next step (cutting the music); none: music."""
        self._pending = deque(sounds)
        self._announcing = True
        self._started = False
        self.next_due = math.inf

    def due(self, now: float) -> bool:
        return not self._announcing and now >= self.next_due

    def step(self, now: float, playing: bool) -> str | None:
        """The sound to start now, if any: the next piece of the announcement once the
        previous one ended, or the music when the announcement is over."""
        if not self._announcing:
            return None
        if self._started and playing:
            return None
        if self._pending:
            self._started = True
            return self._pending.popleft()
        self._announcing = False
        self.next_due = now + self.every_s
        return self.music

    def wake_in(self, now: float, poll_s: float) -> float:
        """How long the caller's loop may wait before the soundtrack needs it again."""
        if self._announcing:
            return poll_s
        return max(self.next_due - now, 0.0)


@dataclass(frozen=True)
class Announcements:
    """The sentences of one queue in one language, as sound names."""

    language: str
    entry_prompt: str | None
    comfort_prompt: str | None
    announce_position: bool
    announce_wait: bool
    leave_key: str | None

    def entry(self, position: int, expected_wait_s: float | None) -> list[str]:
        sounds = self._opening(self.entry_prompt, position, expected_wait_s)
        if self.leave_key is not None:
            sounds += [sound_name("press_to_leave"), self.key_sound(self.leave_key)]
        return sounds

    def comfort(self, position: int, expected_wait_s: float | None) -> list[str]:
        return self._opening(self.comfort_prompt, position, expected_wait_s)

    def has_comfort(self) -> bool:
        return self.comfort_prompt is not None or self.announce_position or self.announce_wait

    def _opening(
        self, prompt: str | None, position: int, expected_wait_s: float | None
    ) -> list[str]:
        sounds = [sound_name(prompt)] if prompt else []
        if self.announce_position:
            sounds += position_announcement(position, self.language)
        if self.announce_wait and expected_wait_s is not None:
            sounds += wait_announcement(round(expected_wait_s / 60), self.language)
        return sounds

    @staticmethod
    def key_sound(key: str) -> str:
        return sound_name(_KEY_SOUNDS.get(key, f"number_{key}"))
