"""Checks of `[modes]` against other sections, for `firmware.config.load.cross_check`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from firmware.modes.policy import FEATURE_AUTO, FEATURE_PREFIX, mode_feature, override_extensions

if TYPE_CHECKING:
    from firmware.config.schema import Config


def cross_check_modes(config: Config) -> Iterator[str]:
    """Override extensions that exist, mode feature codes that name real modes."""
    modes = config.modes
    numbers = {extension.number for extension in config.extensions}
    for number in modes.override_extensions:
        if number not in numbers:
            yield f"modes.override_extensions: no extension {number}"
    mode_codes = []
    for name in config.feature_codes:
        request = mode_feature(name)
        if request is None:
            continue
        mode_codes.append(name)
        if request.mode is not None and request.mode not in modes.all_names:
            yield (
                f"feature_codes.{name}: {request.mode!r} is not a mode; name mode codes "
                f"{FEATURE_PREFIX}<mode> ({', '.join(modes.all_names)}) or {FEATURE_AUTO}"
            )
    if mode_codes and not override_extensions(config):
        yield (
            f"modes.override_extensions: feature codes {', '.join(mode_codes)} are set but no "
            f"extension may use them; list extensions here (or set numbering.operator)"
        )
