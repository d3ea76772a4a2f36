"""A prepaid call in progress ends when its balance is spent, with a warning before.

When a chargeable call of a prepaid account is answered, call control asks
:func:`call_limit_s` for the longest call the balance pays for (priced as the rater will
price it: the line's tariff, the destination's class, the band at the answer time) and
arms a :class:`LimitTimers`: short beeps in the caller's ear `warning_before_s` before the
end, then the release. The release is an event in the call's own queue, so whatever the
call is doing then (talking, on hold, being transferred) ends it the same way; a call that
ends earlier cancels both timers. The clock runs from the answer and is never reset.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from decimal import Decimal

from firmware.accounting.prepaid import longest_affordable_s
from firmware.accounting.tariffs import TariffBook
from firmware.calls.channel import ChannelEvent, EventKind, Role
from firmware.calls.lifecycle import LegState
from firmware.calls.session import CallSession, RecordDraft, utc_now
from firmware.config.accounting_schema import AccountingConfig, PrepaidConfig

log = logging.getLogger("firmware.calls")

PREPAID_LIMIT_CAUSE = "prepaid_limit"
PREPAID_LIMIT = ChannelEvent(EventKind.FAR_END_CLEARED, PREPAID_LIMIT_CAUSE)
"""Put in a call's queue at its limit; recognised by identity, never sent by a leg."""
WARNING_TONE = "confirmation"
"""Three short beeps (played once, over the speech): every tone plan has them."""
RELEASE_MARGIN_S = 0.5
"""Released this much before the limit, so the end time the rater sees (taken a few
milliseconds after the release, rounded up to whole seconds) stays inside the limit."""


def call_limit_s(
    book: TariffBook, accounting: AccountingConfig, account: PrepaidConfig,
    draft: RecordDraft, balance_e4: int,
) -> int | None:  # fmt: skip
    """The longest the answered call `draft` may last on `balance_e4`; None: no limit.

    Priced like the rater: the tariff of the call's line group or line, the class of its
    external number, the band at its answer time.
    """
    assert draft.answer is not None
    return limit_on_line(
        book, accounting, account, draft.external_number or "",
        (draft.line_group, draft.line), draft.answer, balance_e4,
    )  # fmt: skip


def limit_on_line(
    book: TariffBook, accounting: AccountingConfig, account: PrepaidConfig, number: str,
    line: tuple[str | None, str | None], answer: datetime, balance_e4: int,
) -> int | None:  # fmt: skip
    """The limit of a call to `number` on `line` (line group, line) answered at `answer`.

    A tiered class counts its dearest tier (the month's count is the rater's). A number
    no tariff classifies is not rated, so it draws nothing and has no limit.
    """
    tariff = book.tariff_for(*line)
    destination = book.classify(tariff, number, "outgoing") if tariff and number else None
    if tariff is None or destination is None:
        return None
    pricing = destination.pricing
    per_call = max((price for _, price in pricing.tiers), default=None)
    band = book.band(tariff, answer)
    return longest_affordable_s(
        pricing, band, balance_e4, account, Decimal(accounting.vat_percent), per_call
    )


def cannot_pay_first_increment(
    book: TariffBook, accounting: AccountingConfig, account: PrepaidConfig, number: str,
    lines: list[tuple[str | None, str | None]], balance_e4: int,
) -> bool:  # fmt: skip
    """True when, on any line the call may take, the balance does not pay for its first
    increment (with the connection fee and minimum): such a call is refused before it is
    dialled, as it would otherwise be answered and cut at once, and still be charged."""
    now = utc_now()
    return any(
        limit_on_line(book, accounting, account, number, line, now, balance_e4) == 0
        for line in lines
    )


class LimitTimers:
    """The warning and the release of one prepaid call, armed once at its answer."""

    def __init__(self, account: PrepaidConfig) -> None:
        self.account = account
        self.armed = False
        self.limit_s: int | None = None
        self._handles: list[asyncio.TimerHandle] = []

    def arm(self, session: CallSession, answer: datetime, limit_s: int | None) -> None:
        """Schedule the beeps and the release, counted from `answer` (wall clock)."""
        self.armed, self.limit_s = True, limit_s
        if limit_s is None:
            return
        loop = asyncio.get_running_loop()
        elapsed = (utc_now() - answer).total_seconds()
        release_in = max(limit_s - RELEASE_MARGIN_S - elapsed, 0.0)
        warn_before = self.account.warning_before_s
        if warn_before and limit_s > 0:
            warn_in = max(release_in - warn_before, 0.0)
            self._handles.append(loop.call_later(warn_in, _warn, session))
        self._handles.append(loop.call_later(release_in, _release, session))
        log.info("event=prepaid_limit_armed call=%d account=%s limit_s=%d release_in_s=%.1f",
                 session.id, self.account.name, limit_s, release_in)  # fmt: skip

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()


def _warn(session: CallSession) -> None:
    """Beeps to the phones of the call that are talking (not to the line: the far end
    is not the one paying)."""
    for leg in session.legs:
        if leg.role == Role.EXTENSION and leg.state == LegState.CONNECTED:
            leg.play(WARNING_TONE)
    log.info("event=prepaid_limit_warning call=%d", session.id)


def _release(session: CallSession) -> None:
    if session.legs:
        session.queue.put_nowait((session.legs[0], PREPAID_LIMIT))
