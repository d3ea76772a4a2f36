"""Transfers a phone asks for (SIP REFER): the partner is connected to another number.

A mixin of `CallManager`. The number is routed with the transferring extension's own class
of service, so a transfer can never reach what that extension could not dial itself (toll
fraud through transfer is a classic). The transferor's part of the call gets its own record
the moment it leaves; the partner's onward call gets a new one naming who transferred it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.channel import Channel, ChannelEvent, EventKind, Role
from firmware.calls.dialplan import RouteKind
from firmware.calls.lifecycle import LegState
from firmware.calls.session import CallSession, RecordDraft

if TYPE_CHECKING:
    from firmware.calls.control import CallManager

    _Base = CallManager
else:
    _Base = object

log = logging.getLogger("firmware.calls")

_TRANSFERABLE = (RouteKind.INTERNAL, RouteKind.OUTSIDE, RouteKind.SIBLING)
REPLACES = "replaces:"  # the TRANSFER value of a REFER with Replaces (attended transfer)
_HANDOVER_WAIT_S = 2.0


class TransferCalls(_Base):
    async def _transfer(self, session: CallSession, transferor: Channel, transferee: Channel, target: str) -> bool:
        """Blind transfer. False: refused (the two stay connected); True: the call went on
        to `target` and is over for this coroutine."""
        draft = session.draft
        assert draft is not None
        if target.startswith(REPLACES):
            return await self._attended_transfer(session, transferor, transferee, target.removeprefix(REPLACES))
        caller_config = self.config.extension(transferor.number) if transferor.role == Role.EXTENSION else None
        plan = self.dialplan.route(caller_config, target)
        refused = (
            plan is None
            or plan.kind not in _TRANSFERABLE
            or (plan.kind == RouteKind.INTERNAL and plan.extension in (transferor.number, transferee.number))
        )
        self._log_call("call_transfer", {"call": session.id, "by": transferor.name, "party": transferee.name,
                                         "to": target, "accepted": not refused})  # fmt: skip
        if refused or plan is None:
            transferor.transfer_result(False)
            return False
        draft = await self._transferor_leaves(session, transferor, transferee, target)
        onward = RecordDraft(
            draft.direction if transferee.role == Role.LINE else Direction.INTERNAL,
            caller_number=draft.caller_number if transferee.role == Role.LINE else transferee.number,
            caller_name=draft.caller_name if transferee.role == Role.LINE else transferee.display_name,
            dialled=draft.dialled if transferee.role == Role.LINE else target,
            line=draft.line, line_group=draft.line_group, correlation_id=draft.correlation_id,
            transferred_by=transferor.number,
        )  # fmt: skip
        if transferee.role == Role.LINE and draft.answer is not None:
            onward.answer = draft.answer  # the outside party's call goes on being billed
        session.drafts.insert(0, onward)
        if transferee.role == Role.EXTENSION:
            transferee.set_state(LegState.DIALLING)
        else:
            transferee.play("ringback")
        log.info("event=transfer_started call=%d to=%s route=%s", session.id, target, plan.kind)
        await self._execute(session, transferee, plan)
        return True

    async def _transferor_leaves(
        self, session: CallSession, transferor: Channel, transferee: Channel, target: str
    ) -> RecordDraft:
        """The transfer is on: NOTIFY success, write the transferor's record, let it go."""
        draft = session.draft
        assert draft is not None
        transferor.transfer_result(True)
        side = HangupSide.CALLER if session.legs and session.legs[0] is transferor else HangupSide.CALLEE
        draft.ended(Disposition.ANSWERED, side, f"transferred:{target}")
        session.drafts.remove(draft)
        await self._write_record(draft)
        if transferee.slot is not None:
            self.mixer.disconnect(transferee.slot)
        await self._give_back(session, transferor, "busy")
        return draft

    async def _attended_transfer(
        self, session: CallSession, transferor: Channel, transferee: Channel, call_id: str
    ) -> bool:
        """REFER with Replaces: the transferor's consultation call (another session) hands
        its partner over, and the partner and `transferee` talk; both of the transferor's
        legs end. False when the consultation call is unknown or not connected."""
        found = self._session_with_leg(call_id)
        handed: Channel | None = None
        # Only the transferring phone's own consultation call may be joined: the same
        # extension on both, never a trunk or sibling leg (no joining of strangers' calls).
        if (
            found is not None
            and found[0] is not session
            and transferor.role == Role.EXTENSION
            and found[1].role == Role.EXTENSION
            and found[1].number == transferor.number
        ):
            other_session, consult_leg = found
            handover: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
            other_session.handover = (handover, session)
            other_session.queue.put_nowait((consult_leg, ChannelEvent(EventKind.HANDOVER)))
            try:
                handed = await asyncio.wait_for(handover, _HANDOVER_WAIT_S)
            except TimeoutError:
                other_session.handover = None
        self._log_call("call_transfer", {"call": session.id, "by": transferor.name, "party": transferee.name,
                                         "to": handed.name if handed else f"replaces:{call_id}",
                                         "accepted": handed is not None})  # fmt: skip
        if handed is None:
            transferor.transfer_result(False)
            return False
        draft = await self._transferor_leaves(session, transferor, transferee, handed.number)
        self._claim(session, handed)
        handed.handler = self._on_event
        onward = RecordDraft(
            draft.direction if transferee.role == Role.LINE else Direction.INTERNAL,
            caller_number=draft.caller_number if transferee.role == Role.LINE else transferee.number,
            caller_name=draft.caller_name if transferee.role == Role.LINE else transferee.display_name,
            dialled=draft.dialled if transferee.role == Role.LINE else handed.number,
            called_extension=handed.number, line=draft.line, line_group=draft.line_group,
            correlation_id=draft.correlation_id, transferred_by=transferor.number,
        )  # fmt: skip
        onward.answered(handed.number)
        session.drafts.insert(0, onward)
        await self._connected(session, transferee, handed)
        return True

    def _session_with_leg(self, call_id: str) -> tuple[CallSession, Channel] | None:
        for candidate in self.sessions.values():
            for leg in candidate.legs:
                if getattr(leg, "call_id", None) == call_id:
                    return candidate, leg
        return None

    def _hand_over(self, session: CallSession, consult_leg: Channel, partner: Channel) -> bool:
        """This call's partner goes to the call that asked for it (attended transfer): its
        ownership and its unread events move now, so nothing it does is lost. True: this
        call is over (its transferor leg is released by the normal ending)."""
        pending, session.handover = session.handover, None
        if pending is None or pending[0].done():
            return False
        handover, waiting = pending
        draft = session.draft
        if draft is not None:
            draft.ended(Disposition.ANSWERED, HangupSide.CALLER, "transferred")
        if partner.slot is not None:
            self.mixer.disconnect(partner.slot)
        self._let_go(session, partner)
        self._claim(waiting, partner)
        unread = [session.queue.get_nowait() for _ in range(session.queue.qsize())]
        for channel, event in unread:
            (waiting.queue if channel is partner else session.queue).put_nowait((channel, event))
        handover.set_result(partner)
        log.info("event=transfer_handover call=%d leg=%s partner=%s", session.id, consult_leg.name, partner.name)
        return True
