"""The one lifecycle of a call leg, with its whole transition table in this file.

Every technology (FXS, FXO, SIP, DECT) uses the same states; what users see in
`minipbx status` is derived from them. An illegal transition raises `IllegalTransition`,
which call control logs: a bug shows up, it is never silently absorbed.
"""

from __future__ import annotations

from enum import StrEnum


class LegState(StrEnum):
    OUT_OF_SERVICE = "out_of_service"  # hardware or link gone; nothing may use the leg
    IDLE = "idle"
    DIALLING = "dialling"  # off hook hearing dial tone / collecting digits; FXO: seized, dialling
    CALLING = "calling"  # number complete, the far end is being reached or alerted
    ALERTING = "alerting"  # this leg is being rung (FXS bell, FXO ring detected)
    CONNECTED = "connected"
    HELD = "held"  # parked on consultation hold by the other party
    CLEARING = "clearing"  # call over; hears busy/congestion until it goes on hook


class IllegalTransition(RuntimeError):
    pass


_ANY_ACTIVE = {LegState.IDLE, LegState.CLEARING, LegState.OUT_OF_SERVICE}

TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    LegState.OUT_OF_SERVICE: frozenset({LegState.IDLE}),
    LegState.IDLE: frozenset(
        {LegState.DIALLING, LegState.ALERTING, LegState.CLEARING, LegState.OUT_OF_SERVICE}
    ),
    LegState.DIALLING: frozenset({LegState.CALLING, LegState.CONNECTED, *_ANY_ACTIVE}),
    LegState.CALLING: frozenset({LegState.CONNECTED, LegState.DIALLING, *_ANY_ACTIVE}),
    LegState.ALERTING: frozenset({LegState.CONNECTED, *_ANY_ACTIVE}),
    LegState.CONNECTED: frozenset({LegState.HELD, LegState.DIALLING, *_ANY_ACTIVE}),
    LegState.HELD: frozenset({LegState.CONNECTED, LegState.ALERTING, *_ANY_ACTIVE}),
    LegState.CLEARING: frozenset({LegState.IDLE, LegState.OUT_OF_SERVICE}),
}


def check_transition(old: LegState, new: LegState, leg: str) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{leg}: {old} -> {new} is not a legal transition")


# What a person would call each state, for status displays.
STATE_LABELS: dict[LegState, str] = {
    LegState.OUT_OF_SERVICE: "out of service",
    LegState.IDLE: "idle",
    LegState.DIALLING: "dialling",
    LegState.CALLING: "calling",
    LegState.ALERTING: "ringing",
    LegState.CONNECTED: "in call",
    LegState.HELD: "on hold",
    LegState.CLEARING: "hung up by other party",
}
