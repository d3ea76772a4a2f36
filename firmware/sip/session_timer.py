"""SIP session timers (RFC 4028): the Session-Expires and Min-SE header fields, who
refreshes, and when.

Why: a far end that vanished without a BYE is normally noticed by its RTP going silent,
but a held call carries no RTP, so it would stay up for ever. With a session timer the
dialog itself proves it is alive: one side (the refresher) sends a re-INVITE or UPDATE
every half interval, and the other ends the call with BYE when no refresh came in time.

Pure functions and values only; the waiting and the requests live in `SipCallLeg`.
Our Min-SE is fixed at RFC 4028's floor of 90 s: no config, since nothing is gained by a
larger floor (the far end picks the interval) and a smaller one is not allowed.
`TIME_SCALE` multiplies every delay this module computes, so tests can run a 90 s
interval in 2 s without changing what is negotiated or written in headers.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_SE_S = 90  # RFC 4028 4/5: nobody may ask for less; ours is exactly the floor
TIMER = "timer"  # the option tag in Supported and Require
MAX_INTERVAL_S = 2**32 - 1
_BYE_MARGIN_MAX_S = 32  # RFC 4028 10: BYE at interval - min(32, interval / 3)
TIME_SCALE = 1.0  # tests shrink time (1/45: 90 s -> 2 s); headers keep the real values


class SessionTimerError(ValueError):
    """A Session-Expires or Min-SE value we cannot read."""


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A Session-Expires value: the interval and, when said, who refreshes ("uac"/"uas")."""

    interval: int
    refresher: str | None = None

    def __str__(self) -> str:
        return f"{self.interval};refresher={self.refresher}" if self.refresher else str(self.interval)


def _delta_seconds(text: str, what: str) -> int:
    value = text.strip(" \t")
    if not value.isdigit() or not value.isascii():
        raise SessionTimerError(f"malformed {what} {text.strip()[:40]!r}")
    number = int(value)
    if number == 0 or number > MAX_INTERVAL_S:
        raise SessionTimerError(f"{what} {number} is out of range")
    return number


def parse_session_expires(text: str) -> SessionExpires:
    """`delta-seconds *(;refresher=uac|uas / ;generic-param)` (RFC 4028 4); unknown
    parameters are ignored, an unknown refresher is an error."""
    head, *params = text.split(";")
    interval = _delta_seconds(head, "Session-Expires")
    refresher = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip(" \t").lower() != "refresher":
            continue
        refresher = value.strip(" \t").lower()
        if refresher not in ("uac", "uas"):
            raise SessionTimerError(f"unknown refresher {value.strip()[:20]!r}")
    return SessionExpires(interval, refresher)


def parse_min_se(text: str) -> int:
    """`delta-seconds *(;generic-param)` (RFC 4028 5)."""
    return _delta_seconds(text.split(";", 1)[0], "Min-SE")


@dataclass(frozen=True, slots=True)
class Timer:
    """What a dialog agreed: the interval, and whether we are the refresher."""

    interval: int
    we_refresh: bool


@dataclass(frozen=True, slots=True)
class UasAnswer:
    """How our 2xx answers a request that asked for a session timer (or refreshed one)."""

    interval: int
    refresher: str  # as written in our 2xx: "uac" is the far end, "uas" is us
    require: bool  # Require: timer (the far end said it supports timers)

    @property
    def session_expires(self) -> SessionExpires:
        return SessionExpires(self.interval, self.refresher)

    @property
    def timer(self) -> Timer:
        return Timer(self.interval, self.refresher == "uas")


@dataclass(frozen=True, slots=True)
class TooSmall:
    """The request asked for less than we allow: 422 with this Min-SE."""

    min_se: int


def answer_request(
    requested: SessionExpires | None,
    uac_supports_timer: bool,
    current: Timer | None = None,
    min_se: int = MIN_SE_S,
) -> UasAnswer | TooSmall | None:
    """Our answer, as UAS, to an INVITE, re-INVITE or UPDATE (RFC 4028 9).

    The interval asked for is kept (never raised, never lowered), or refused with 422
    when under `min_se`. The refresher is the one the request named, else the far end
    (refresher=uac), except that a far end which did not list "timer" in Supported cannot
    be trusted to refresh: then we do (refresher=uas). A refresh that asks for nothing
    keeps the dialog's `current` timer going with the same refresher, so a phone's hold
    re-INVITE without Session-Expires does not switch the protection off. None: no timer.
    """
    if requested is None:
        if current is None:
            return None
        keep = "uas" if current.we_refresh else "uac"
        return UasAnswer(current.interval, keep if uac_supports_timer else "uas", uac_supports_timer)
    if requested.interval < min_se:
        return TooSmall(min_se)
    refresher = (requested.refresher or "uac") if uac_supports_timer else "uas"
    return UasAnswer(requested.interval, refresher, uac_supports_timer)


def follow_response(answered: SessionExpires | None, requested: SessionExpires | None) -> Timer | None:
    """As UAC, the timer a 2xx settles (RFC 4028 7.2): its Session-Expires decides
    (refresher=uac, or none said, is us). A 2xx without one to a request that asked for a
    timer comes from a UAS without the extension: we keep our interval and refresh
    ourselves. Neither side asked: no timer."""
    if answered is not None:
        return Timer(answered.interval, answered.refresher != "uas")
    if requested is not None:
        return Timer(requested.interval, True)
    return None


def refresh_delay(interval: int) -> float:
    """Seconds (scaled) from the last refresh until the refresher sends the next one."""
    return interval / 2 * TIME_SCALE


def expiry_delay(interval: int) -> float:
    """Seconds (scaled) from the last refresh until the side that does not refresh gives
    up and sends BYE (RFC 4028 10)."""
    return (interval - min(_BYE_MARGIN_MAX_S, interval / 3)) * TIME_SCALE


def retry_delay(until_expiry: float) -> float:
    """After a refused refresh: try again halfway to the expiry (scaled seconds in, out)."""
    return max(until_expiry / 2, 0.0)
