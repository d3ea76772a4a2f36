"""Software caller ID on the analogue ports: what config chooses, and how a CLIP result
becomes call control's `CallerId` (and back).

The DSP lives in `firmware.media.clip_audio` (spill plans for FXS ports, the FXO
receiver); the channels (`firmware.lines.channels`) run it. This module holds the small
pure pieces they share, so that the channels stay about ports and events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.calls.channel import CallerId
from firmware.media.clip import Absence, CallerIdInfo, caller_id_info
from firmware.media.clip_audio import ClipProfile, ClipResult, get_profile, profile_for_country

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class ClipCallerId(CallerId):
    """A caller whose number is missing because it was withheld (CLIP reason "P").

    `CallerId` has no such flag yet; an FXO line decoding a withheld caller passes this
    through call control unchanged, so an FXS port can announce it as "private" rather
    than "unavailable". Read it with `is_private`, which also honours a future
    `CallerId.private` field.
    """

    private: bool = False


def is_private(caller: CallerId) -> bool:
    return bool(getattr(caller, "private", False))


def resolve_profile(name: str | None, country: str) -> ClipProfile:
    """The profile called `name`; "auto" (or None) is the country's default."""
    if name is None or name == AUTO:
        return profile_for_country(country)
    return get_profile(name)


def site_zone(name: str) -> tzinfo:
    """The site's time zone for the date/time field; UTC (logged) if the name is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("event=caller_id_timezone_unknown timezone=%r using=UTC", name)
        return UTC


def announced_info(caller: CallerId, profile: ClipProfile, when: datetime) -> CallerIdInfo:
    """What an FXS port announces for `caller`: "private" when withheld, "unavailable"
    when there is no number or the format cannot carry it (never a cut number)."""
    return caller_id_info(
        caller.number or None,
        caller.name or None,
        private=is_private(caller),
        when=when,
        message_format=profile.message_format,
    )


def caller_from_result(result: ClipResult) -> CallerId:
    """The caller an FXO line reports: the number and name, or empty ("unknown caller")."""
    info = result.info
    if info is None:
        return CallerId("", "")
    if info.number is None and info.number_absence is Absence.PRIVATE:
        return ClipCallerId("", info.name or "", private=True)
    return CallerId(info.number or "", info.name or "")


@dataclass
class CallerIdCounters:
    """What the caller-ID receiver of one line found (`decoded` includes "withheld" and
    "unavailable" messages read whole; `unknown`: nothing trustworthy was heard)."""

    decoded: int = 0
    withheld: int = 0
    unknown: int = 0
    card_messages_ignored: int = 0  # CALLER_ID from the card while decoding in software
    last_unknown_reason: str = ""
