"""Named sounds (tones, prompts) stored once in one flat array.

The mixer plays any number of them to any number of legs with a single fancy-indexing
gather per tick, so every sound lives in one contiguous int16 buffer addressed by
(offset, length).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sound:
    name: str
    offset: int
    length: int
    loop: bool
    capacity: int = 0  # samples reserved at `offset` (>= length); 0: exactly `length`


class SoundBank:
    """Append-only store: sounds are few and long-lived (tone plan, prompts)."""

    def __init__(self) -> None:
        self._samples = np.zeros(0, dtype=np.int16)
        self._sounds: dict[str, Sound] = {}
        self._regions: dict[str, Sound] = {}  # where each name's samples were, even discarded

    def add(self, name: str, samples: np.ndarray, *, loop: bool, capacity: int = 0) -> Sound:
        """Store `samples` under `name`; replacing a name keeps the old samples unreachable.

        `capacity` reserves room for later sounds of that name: `rewrite` then reuses the
        region instead of growing the append-only bank (a per-port caller-ID spill)."""
        samples = np.asarray(samples, dtype=np.int16).ravel()
        if samples.size == 0:
            raise ValueError(f"sound {name!r} is empty")
        room = max(capacity, samples.size)
        sound = Sound(name, self._samples.size, samples.size, loop, room if capacity else 0)
        padded = np.zeros(room, dtype=np.int16)
        padded[: samples.size] = samples
        self._samples = np.concatenate([self._samples, padded])
        self._sounds[name] = sound
        self._regions[name] = sound
        return sound

    def rewrite(self, name: str, samples: np.ndarray, *, loop: bool, capacity: int = 0) -> Sound:
        """Put `samples` under `name` in the region that name had, when they fit; else add.

        For sounds made per call: the bank stays the same size however many calls. A slot
        still playing the old sound of that name hears the new one from its position."""
        samples = np.asarray(samples, dtype=np.int16).ravel()
        region = self._regions.get(name)
        if region is None or samples.size == 0 or samples.size > (region.capacity or region.length):
            return self.add(name, samples, loop=loop, capacity=capacity)
        self._samples[region.offset : region.offset + samples.size] = samples
        sound = Sound(name, region.offset, samples.size, loop, region.capacity or region.length)
        self._sounds[name] = sound
        self._regions[name] = sound
        return sound

    def add_many(self, items: Iterable[tuple[str, np.ndarray, bool]]) -> list[Sound]:
        """Store several `(name, samples, loop)` with one copy of the bank (a prompt library).

        All or nothing: an empty sound refuses the whole batch before anything changes.
        """
        prepared = [
            (name, np.asarray(samples, dtype=np.int16).ravel(), loop)
            for name, samples, loop in items
        ]
        for name, samples, _ in prepared:
            if samples.size == 0:
                raise ValueError(f"sound {name!r} is empty")
        offset = self._samples.size
        added: list[Sound] = []
        for name, samples, loop in prepared:
            added.append(Sound(name, offset, samples.size, loop))
            offset += samples.size
        if prepared:
            self._samples = np.concatenate([self._samples, *(item[1] for item in prepared)])
        for sound in added:  # names last: the mixer never finds a name before its samples
            self._sounds[sound.name] = sound
        return added

    def discard(self, name: str) -> None:
        """Forget a name; its samples stay, so a slot still playing it plays on to the end."""
        self._sounds.pop(name, None)

    def get(self, name: str) -> Sound:
        try:
            return self._sounds[name]
        except KeyError:
            raise KeyError(f"no sound named {name!r}") from None

    def samples_of(self, name: str) -> np.ndarray:
        """A read-only view of one sound's samples."""
        sound = self.get(name)
        view = self._samples[sound.offset : sound.offset + sound.length]
        view.flags.writeable = False
        return view

    def __contains__(self, name: object) -> bool:
        return name in self._sounds

    @property
    def samples(self) -> np.ndarray:
        return self._samples

    @property
    def names(self) -> list[str]:
        return sorted(self._sounds)
