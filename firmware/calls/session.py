"""A call in progress: its legs, its event queue and the call record in the making.

Every event of every leg a call owns arrives in the call's one queue, so the coroutine that
runs the call reads its whole story in order. The call record is filled in at each step
(timestamps taken as things happen) and built once, in `CallSession.report`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from firmware.calls.cdr import CallRecord, Direction, Disposition, HangupSide
from firmware.calls.channel import Channel, ChannelEvent


class CallEnded(Exception):
    """Raised inside a call coroutine when the call is over; carries nothing, the draft does."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RecordDraft:
    """The facts of one call as they become known; turned into a `CallRecord` at the end."""

    direction: Direction
    caller_number: str = ""
    caller_name: str = ""
    dialled: str = ""
    called_extension: str | None = None
    answered_extension: str | None = None
    line: str | None = None
    line_group: str | None = None
    destination_kind: str | None = None
    start: datetime = field(default_factory=utc_now)
    answer: datetime | None = None
    disposition: Disposition | None = None
    hangup_side: HangupSide = HangupSide.SYSTEM
    cause: str = ""
    correlation_id: str = ""
    transferred_by: str | None = None
    account_code: str | None = None
    external_number: str | None = None
    mode: str | None = None

    def answered(self, extension: str | None = None) -> None:
        if self.answer is None:
            self.answer = utc_now()
            self.disposition = Disposition.ANSWERED
        if extension is not None:
            self.answered_extension = extension

    def ended(self, disposition: Disposition, side: HangupSide, cause: str = "") -> None:
        """First conclusion wins: an answered call stays answered whoever hangs up."""
        if self.disposition is None:
            self.disposition = disposition
        if not self.cause:
            self.cause = cause
        self.hangup_side = side

    def build(self, site: str) -> CallRecord:
        end = utc_now()
        disposition = self.disposition or Disposition.FAILED
        if disposition == Disposition.ANSWERED and self.answer is None:
            disposition = Disposition.FAILED
        return CallRecord(
            start=self.start,
            answer=self.answer if disposition == Disposition.ANSWERED else None,
            end=end,
            caller_number=self.caller_number,
            caller_name=self.caller_name,
            dialled=self.dialled,
            called_extension=self.called_extension,
            answered_extension=self.answered_extension,
            line=self.line,
            line_group=self.line_group,
            direction=self.direction,
            disposition=disposition,
            hangup_side=self.hangup_side,
            cause=self.cause,
            destination_kind=self.destination_kind,
            site=site,
            correlation_id=self.correlation_id,
            transferred_by=self.transferred_by,
            account_code=self.account_code,
            external_number=self.external_number,
            mode=self.mode,
        )


class CallSession:
    """The legs a call owns and the events they produce, in one queue."""

    _counter = 0

    def __init__(self, draft: RecordDraft | None) -> None:
        CallSession._counter += 1
        self.id = CallSession._counter
        self.legs: list[Channel] = []
        self.drafts: list[RecordDraft] = [draft] if draft is not None else []
        self.queue: asyncio.Queue[tuple[Channel, ChannelEvent]] = asyncio.Queue()
        self.started = time.monotonic()
        self.far_end_alerted = False  # the last outgoing SIP attempt got as far as ringing
        self.after_answer: tuple[str, float] | None = None  # DTMF (digits, delay) once through
        self.relay: asyncio.Task[None] | None = None  # the last DTMF relay, to keep order
        # Set by an attended transfer waiting for this call's partner (see TransferCalls):
        # the answer and the waiting call.
        self.handover: tuple[asyncio.Future[Channel], CallSession] | None = None
        self.transfers_welcome = False  # two parties are talking: TRANSFER/HANDOVER are handled
        self.relays_pending = 0  # DTMF relays not yet sent (bounded)
        self.node_kind: str | None = None  # the routing node the call is in, if any

    @property
    def draft(self) -> RecordDraft | None:
        return self.drafts[0] if self.drafts else None

    def owns(self, channel: Channel) -> bool:
        return channel in self.legs

    async def next_event(self, timeout: float | None) -> tuple[Channel, ChannelEvent] | None:
        """The next event of any leg, or None when `timeout` (seconds) passes first."""
        if timeout is not None and timeout <= 0:
            return self.queue.get_nowait() if not self.queue.empty() else None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def summary(self) -> dict[str, object]:
        draft = self.draft
        return {
            "id": self.id,
            "legs": [
                {"leg": leg.name, "number": leg.number, "state": str(leg.state)}
                for leg in self.legs
            ],
            "direction": str(draft.direction) if draft else "",
            "caller": draft.caller_number if draft else "",
            "dialled": draft.dialled if draft else "",
            "answered": bool(draft and draft.answer),
            "seconds": round(time.monotonic() - self.started, 1),
        }
