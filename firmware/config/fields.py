"""Small named field types and the base section, shared by every config schema module.

Kept apart from `schema.py` so that feature schemas (accounting, SMDR, reports) can use
them without importing the whole configuration.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from firmware.calls.digitmap import DigitMapError, validate_pattern


def _extension_number(value: str) -> str:
    if not re.fullmatch(r"[0-9]{2,4}", value):
        raise ValueError(f"extension number {value!r} must be 2 to 4 digits, e.g. '201'")
    return value


def _dial_code(value: str) -> str:
    if not re.fullmatch(r"[0-9*#]{1,6}", value):
        raise ValueError(f"code {value!r} must be 1 to 6 of the keys 0-9 * #")
    return value


def _feature_code(value: str) -> str:
    if not re.fullmatch(r"[*#][0-9*#]{1,5}", value):
        raise ValueError(f"feature code {value!r} must start with * or # (e.g. '*72')")
    return value


def _digit_pattern(value: str) -> str:
    try:
        validate_pattern(value)
    except DigitMapError as error:
        raise ValueError(f"bad digit pattern {value!r}: {error}") from None
    return value


def _name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", value):
        raise ValueError(
            f"name {value!r} must start with a letter and use only letters, digits, _ and -"
        )
    return value


ExtensionNumber = Annotated[str, AfterValidator(_extension_number)]
DialCode = Annotated[str, AfterValidator(_dial_code)]
FeatureCode = Annotated[str, AfterValidator(_feature_code)]
DigitPattern = Annotated[str, AfterValidator(_digit_pattern)]
Name = Annotated[str, AfterValidator(_name)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
