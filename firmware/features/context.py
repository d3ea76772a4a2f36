"""What a routing node may do with a call: the verbs call control lends to features.

Node coroutines never touch the mixer, the dial plan or another session directly; they
get a `NodeContext` and use its verbs. Every verb that waits watches the caller: if the
caller hangs up, the verb records how far the call got and raises `CallEnded`, so a node
never has to check for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firmware.calls.cdr import Disposition, HangupSide
from firmware.calls.channel import CallerId, Channel, ChannelEvent, EventKind, Role
from firmware.calls.lifecycle import LegState
from firmware.calls.session import CallEnded, CallSession, RecordDraft
from firmware.config.schema import Config

if TYPE_CHECKING:
    from firmware.calls.control import CallManager

log = logging.getLogger("firmware.features")

_POLL_S = 0.05  # how often a playing prompt is checked for its end


@dataclass
class NodeContext:
    calls: CallManager
    session: CallSession
    caller: Channel
    shown: CallerId
    answered_by_exchange: bool = False
    # Digits keyed while a prompt played and not yet consumed (dial-through, menus).
    pending_digits: list[str] = field(default_factory=list)

    @property
    def config(self) -> Config:
        return self.calls.config

    @property
    def draft(self) -> RecordDraft:
        draft = self.session.draft
        assert draft is not None
        return draft

    def mode(self) -> str | None:
        """The office mode in force (day, night, ...), or None when modes are not running."""
        return self.calls._mode_now()

    # ----- the caller's leg --------------------------------------------------------------

    async def answer(self) -> None:
        """Answer the caller (the exchange picks up: prompts and music can be heard).

        A city line is seized and listened to for in-band DTMF; a SIP call gets its 200 OK.
        The record counts the call as answered (by the exchange) from now on."""
        if self.answered_by_exchange:
            return
        self.answered_by_exchange = True
        caller = self.caller
        if caller.role == Role.LINE or caller.technology == "sip":
            await caller.seize()
            caller.set_state(LegState.CONNECTED)
        listen = getattr(caller, "listen_for_digits", None)
        if listen is not None:
            listen(True)
        self.draft.answered()

    def play(self, sound: str) -> None:
        """Start a sound (tone, `prompt:NAME`, `music:NAME`) to the caller; a missing one is
        logged and replaced by silence rather than failing the call."""
        if sound not in self.calls.mixer.sounds:
            log.warning("event=sound_missing sound=%s call=%d", sound, self.session.id)
            self.caller.stop_sound()
            return
        self.caller.play(sound)

    def stop_sound(self) -> None:
        self.caller.stop_sound()

    def is_playing(self) -> bool:
        slot = self.caller.slot
        return slot is not None and self.calls.mixer.is_playing(slot)

    # ----- waiting -----------------------------------------------------------------------

    async def next_event(self, timeout: float | None) -> tuple[Channel, ChannelEvent] | None:
        """The next event of the call (None at the timeout); the caller leaving ends it."""
        item = await self.calls._wait(self.session, timeout)
        if item is not None:
            channel, event = item
            if channel is self.caller and event.kind in (EventKind.ON_HOOK, EventKind.FAR_END_CLEARED):
                self.draft.ended(Disposition.ABANDONED, HangupSide.CALLER, "caller_hung_up_in_" + self._where())
                raise CallEnded
        return item

    async def play_prompts(self, sounds: Sequence[str], *, interruptible: bool = False) -> str | None:
        """Play sounds one after the other; with `interruptible`, the first key the caller
        presses stops them and is returned (it stays in `pending_digits` too)."""
        for sound in sounds:
            self.play(sound)
            while self.is_playing():
                item = await self.next_event(_POLL_S)
                if item is None:
                    continue
                channel, event = item
                if channel is self.caller and event.kind == EventKind.DIGIT:
                    self.pending_digits.append(event.value)
                    if interruptible:
                        self.stop_sound()
                        return event.value
        return None

    async def collect_digits(
        self, first_timeout: float, inter_timeout: float, *, max_digits: int = 24,
        terminator: str = "#",
    ) -> str:  # fmt: skip
        """Digits until `terminator`, `max_digits`, or a pause; starts with pending ones."""
        digits = "".join(self.pending_digits)
        self.pending_digits.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (inter_timeout if digits else first_timeout)
        while len(digits) < max_digits:
            item = await self.next_event(max(deadline - loop.time(), 0))
            if item is None:
                break
            channel, event = item
            if channel is not self.caller or event.kind != EventKind.DIGIT:
                continue
            self.stop_sound()
            if event.value == terminator:
                break
            digits += event.value
            deadline = loop.time() + inter_timeout
        return digits

    # ----- putting the caller through -----------------------------------------------------

    def ringable(self, numbers: Iterable[str]) -> list[Channel]:
        """Idle desk phones and registered SIP phones of these extensions."""
        return self.calls._ringable(list(numbers))

    async def ring(
        self, callees: list[Channel], timeout: float | None, *, music: str | None = None
    ) -> Channel | None:
        """Ring callees together until one answers (returned) or `timeout` (None).

        The caller hears ringback, or `music` (then the call is answered first)."""
        if not callees:
            return None
        if music is not None:
            await self.answer()
            self.play(music)
        elif self.answered_by_exchange:
            self.play("ringback")  # the exchange already answered: ringback must be ours
        return await self.calls._ring(
            self.session, self.caller, callees, self.shown, timeout, ringback=music is None
        )

    async def connect(self, callee: Channel) -> None:
        """Caller and `callee` talk; the call ends inside (raises CallEnded)."""
        self.stop_sound()
        if self.caller.role == Role.LINE or self.caller.technology == "sip":
            await self.caller.seize()
        self.draft.answered(callee.number)
        await self.calls._connected(self.session, self.caller, callee)
        raise CallEnded

    async def dial(self, digits: str, *, class_of_service: str | None, unrestricted: bool = False) -> None:
        """Route `digits` as the call's next hop (a DISA user, an external node): the
        dial plan decides, with that class of service."""
        plan = self.calls.dialplan.route(
            None, digits, class_of_service=class_of_service, unrestricted=unrestricted
        )
        await self.calls._execute(self.session, self.caller, plan)
        raise CallEnded

    async def end(self, tone: str, disposition: Disposition, cause: str) -> None:
        """The caller hears `tone` (a line is released); the record says why.

        Ending as ANSWERED (a feature code done, an announcement heard) marks the call
        answered now if nothing answered it before, so its record stays answered."""
        if disposition == Disposition.ANSWERED and self.draft.answer is None:
            self.draft.answered()
        await self.calls._reject(self.session, self.caller, tone, disposition, cause)

    def _where(self) -> str:
        return self.session.node_kind or "routing"


__all__ = ["CallEnded", "NodeContext"]
