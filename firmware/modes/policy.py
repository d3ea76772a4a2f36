"""Who may force a mode from a phone, which feature codes do it, and for how long.

Pure functions of config, so call control and its tests need no service to ask.
Feature codes are named `mode_<mode>` (force that mode) and `mode_auto` (back to the
schedule) in `[feature_codes]`, e.g. `mode_night = "*61"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from firmware.config.schema import Config
    from firmware.modes.schedule import ModeDecision

FEATURE_PREFIX = "mode_"
FEATURE_AUTO = "mode_auto"


@dataclass(frozen=True, slots=True)
class ModeFeature:
    """What a mode feature code asks for: a mode to force, or None for automatic."""

    mode: str | None


def mode_feature(feature: str | None) -> ModeFeature | None:
    """The request behind a feature name, or None when it is not a mode feature."""
    if not feature or not feature.startswith(FEATURE_PREFIX):
        return None
    if feature == FEATURE_AUTO:
        return ModeFeature(None)
    return ModeFeature(feature.removeprefix(FEATURE_PREFIX))


def override_extensions(config: Config) -> tuple[str, ...]:
    """`modes.override_extensions`, or the operator's extension when that list is empty."""
    if config.modes.override_extensions:
        return config.modes.override_extensions
    operator = config.numbering.operator
    return (operator,) if operator else ()


def may_override(config: Config, extension: str | None) -> bool:
    """May this extension force a mode (or go back to automatic) by feature code?"""
    return extension is not None and extension in override_extensions(config)


def phone_override_expiry(config: Config, automatic: ModeDecision) -> datetime | None:
    """When an override set from a phone ends: at the schedule's next change, or never."""
    if config.modes.phone_override == "next_change":
        return automatic.until
    return None
