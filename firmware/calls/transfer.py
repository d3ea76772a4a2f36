"""Transfers a phone asks for (SIP REFER): the partner is connected to another number.

A mixin of `CallManager`. The number is routed with the transferring extension's own class
of service, so a transfer can never reach what that extension could not dial itself (toll
fraud through transfer is a classic). The transferor's part of the call gets its own record
the moment it leaves; the partner's onward call gets a new one naming who transferred it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.channel import Channel, Role
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


class TransferCalls(_Base):
    async def _transfer(self, session: CallSession, transferor: Channel, transferee: Channel, target: str) -> bool:
        """Blind transfer. False: refused (the two stay connected); True: the call went on
        to `target` and is over for this coroutine."""
        draft = session.draft
        assert draft is not None
        caller_config = self.config.extension(transferor.number) if transferor.role == Role.EXTENSION else None
        plan = self.dialplan.route(caller_config, target) if not target.startswith("replaces:") else None
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
        transferor.transfer_result(True)
        side = HangupSide.CALLER if session.legs and session.legs[0] is transferor else HangupSide.CALLEE
        draft.ended(Disposition.ANSWERED, side, f"transferred:{target}")
        session.drafts.remove(draft)
        await self._write_record(draft)
        if transferee.slot is not None:
            self.mixer.disconnect(transferee.slot)
        await self._give_back(session, transferor, "busy")
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
