"""The one interface through which call control and features see every leg.

A technology (analogue FXS/FXO today, SIP and DECT later) plugs in by subclassing `Channel`
and implementing its few hardware verbs. Call control never imports a driver, and features
never ask which technology a leg is. Audio never passes through a channel: the channel owns
a mixer slot while it is active and the mixer moves the frames.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from firmware.calls.lifecycle import LegState, check_transition
from firmware.media.mixer import Mixer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallerId:
    number: str
    name: str = ""


class EventKind(StrEnum):
    OFF_HOOK = "off_hook"  # a phone was lifted (also: answers when the leg is ringing)
    ON_HOOK = "on_hook"  # a phone was hung up
    DIGIT = "digit"
    FLASH = "flash"
    RING_START = "ring_start"  # a line is being rung by the exchange
    RING_STOP = "ring_stop"
    CALLER_ID = "caller_id"
    RINGING = "ringing"  # the far end of an outgoing call is being alerted (SIP 180)
    ANSWERED = "answered"  # the far end of an outgoing line call answered (polarity reversal)
    FAR_END_CLEARED = "far_end_cleared"  # loop current drop, reversal or disconnect tone
    DIAL_DONE = "dial_done"
    DIAL_TONE = "dial_tone"  # the exchange's dial tone was heard on a seized line
    OUT_OF_SERVICE = "out_of_service"
    IN_SERVICE = "in_service"
    HOLD = "hold"  # the far end put the call on hold (SIP re-INVITE sendonly/inactive)
    RETRIEVE = "retrieve"  # ... and took it back (sendrecv again)
    TRANSFER = "transfer"  # the leg asks its partner be connected to `value` (SIP REFER)
    HANDOVER = "handover"  # internal: another call asks for this call's partner (attended transfer)


@dataclass(frozen=True)
class ChannelEvent:
    kind: EventKind
    value: str = ""  # the digit, or the reason for clearing / out of service
    caller: CallerId | None = None


DTMF_SOUND_S = 0.16  # each `dtmf_X` sound: 80 ms of tone, 80 ms of silence

EventHandler = Callable[["Channel", ChannelEvent], None]


class Role(StrEnum):
    EXTENSION = "extension"  # a user's phone: it originates calls and is rung
    LINE = "line"  # an exchange line or trunk: it carries calls to and from the world


class Channel(ABC):
    """A leg's technology-neutral face: state, a mixer slot while active, and verbs."""

    technology: str = "abstract"
    role: Role = Role.EXTENSION
    # A line whose caller gives up silently (analogue ringing just stops coming).
    rings_until_abandoned: bool = False

    def __init__(self, name: str, mixer: Mixer) -> None:
        self.name = name
        self.mixer = mixer
        self.state = LegState.OUT_OF_SERVICE
        self.slot: int | None = None
        self.handler: EventHandler | None = None
        self.number = ""  # extension number or line name, set by call control from config
        self.display_name = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.state}>"

    # ----- lifecycle ---------------------------------------------------------------------

    def set_state(self, new: LegState) -> None:
        """Move along the lifecycle; the mixer slot lives exactly while the leg is active."""
        old = self.state
        if old == new:
            return
        check_transition(old, new, self.name)
        self.state = new
        active = new not in (LegState.IDLE, LegState.OUT_OF_SERVICE)
        if active and self.slot is None:
            self.slot = self.mixer.allocate(self.name)
            self._attach_audio(self.slot)
        elif not active and self.slot is not None:
            self._detach_audio()
            self.mixer.release(self.slot)
            self.slot = None
        log.debug("event=leg_state leg=%s from=%s to=%s", self.name, old, new)

    def emit(self, event: ChannelEvent) -> None:
        """Technology side: hand an event to call control."""
        if self.handler is not None:
            self.handler(self, event)

    @property
    def in_service(self) -> bool:
        return self.state != LegState.OUT_OF_SERVICE

    # ----- audio, through the mixer only -------------------------------------------------

    def play(self, sound: str) -> None:
        if self.slot is not None:
            self.mixer.play(self.slot, sound)

    def stop_sound(self) -> None:
        if self.slot is not None:
            self.mixer.stop_sound(self.slot)

    # ----- verbs each technology implements ----------------------------------------------

    @abstractmethod
    def _attach_audio(self, slot: int) -> None: ...

    @abstractmethod
    def _detach_audio(self) -> None: ...

    @abstractmethod
    async def alert(self, caller: CallerId) -> None:
        """Ring the leg, showing the caller."""

    @abstractmethod
    async def stop_alert(self) -> None: ...

    @abstractmethod
    async def seize(self) -> None:
        """Take the leg into a call (FXO: go off hook); a phone has nothing to do."""

    @abstractmethod
    async def release(self, cause: str = "normal") -> None:
        """Give the leg back (FXO: on hook; FXS: stop ringing; SIP: final response or BYE)."""

    async def send_digits(self, digits: str) -> None:
        """DTMF towards the far end during a call (a digit from the partner, a fallback's
        extension suffix). In-band tones by default, as an analogue line carries them; SIP
        legs send RFC 4733 events or INFO as their peer wants."""
        for digit in digits:
            sound = f"dtmf_{digit.upper()}"
            if self.slot is None or sound not in self.mixer.sounds:
                return
            self.mixer.play(self.slot, sound)
            await asyncio.sleep(DTMF_SOUND_S)

    def transfer_result(self, succeeded: bool) -> None:
        """Tell the leg that asked for a TRANSFER how it went (SIP: NOTIFY); most ignore it."""
        return None

    async def indicate_ringing(self) -> None:
        """Tell a calling line that the callee is being alerted (SIP 180); most have nothing to do."""
        return None

    @abstractmethod
    async def dial(self, digits: str, caller: CallerId | None = None) -> None:
        """Send digits towards the far end (lines); completion arrives as DIAL_DONE."""
