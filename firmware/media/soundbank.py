"""Named sounds (tones, prompts) stored once in one flat array.

The mixer plays any number of them to any number of legs with a single fancy-indexing
gather per tick, so every sound lives in one contiguous int16 buffer addressed by
(offset, length).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sound:
    name: str
    offset: int
    length: int
    loop: bool


class SoundBank:
    """Append-only store: sounds are few and long-lived (tone plan, prompts)."""

    def __init__(self) -> None:
        self._samples = np.zeros(0, dtype=np.int16)
        self._sounds: dict[str, Sound] = {}

    def add(self, name: str, samples: np.ndarray, *, loop: bool) -> Sound:
        """Store `samples` under `name`; replacing a name keeps the old samples unreachable."""
        samples = np.asarray(samples, dtype=np.int16).ravel()
        if samples.size == 0:
            raise ValueError(f"sound {name!r} is empty")
        sound = Sound(name, self._samples.size, samples.size, loop)
        self._samples = np.concatenate([self._samples, samples])
        self._sounds[name] = sound
        return sound

    def get(self, name: str) -> Sound:
        try:
            return self._sounds[name]
        except KeyError:
            raise KeyError(f"no sound named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._sounds

    @property
    def samples(self) -> np.ndarray:
        return self._samples

    @property
    def names(self) -> list[str]:
        return sorted(self._sounds)
