"""Per-mode choices (an inbound route's destination, a menu) and their fallback chain.

A route or menu lists what to do in some modes, e.g. `{day = "201", night = "closed"}`;
a mode without its own entry takes its fallback's (`modes.fallbacks`, then lunch and
holiday -> night, then `default`), so a config need not repeat itself for every mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

from firmware.config.modes_schema import ModesConfig

Choice = TypeVar("Choice")


def fallback_chain(modes: ModesConfig, mode: str) -> tuple[str, ...]:
    """`mode` then each fallback in turn, ending at `default` (config forbids loops)."""
    chain = [mode]
    following = modes.fallback_of(mode)
    while following is not None and following not in chain:
        chain.append(following)
        following = modes.fallback_of(following)
    return tuple(chain)


def pick(per_mode: Mapping[str, Choice], mode: str, modes: ModesConfig) -> Choice | None:
    """The entry for `mode`, or for the first mode of its chain that has one; else None."""
    for name in fallback_chain(modes, mode):
        if name in per_mode:
            return per_mode[name]
    return None


def check_per_mode(per_mode: Mapping[str, object], modes: ModesConfig, where: str) -> Iterator[str]:
    """Config errors of a per-mode table: unknown mode names, or no entry `default` reaches."""
    known = modes.all_names
    for name in per_mode:
        if name not in known:
            yield f"{where}.{name}: {name!r} is not a mode; modes are {', '.join(known)}"
    if per_mode and modes.default not in per_mode:
        unreached = [name for name in known if pick(per_mode, name, modes) is None]
        if unreached:
            yield (
                f"{where}: no entry for mode(s) {', '.join(unreached)}: add one for "
                f"{modes.default!r} (the default every mode falls back to)"
            )
