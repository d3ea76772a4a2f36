"""Calls that leave the building or arrive from it by name: city lines, SIP trunks, siblings.

A mixin of `CallManager` (it uses the manager's sessions, waiting and ending helpers) kept
apart so that call control proper stays about phones. Outgoing calls walk the trunks
`OutboundRoutes` lists: a trunk that is down, full, or fails before the far end answers
is skipped for the next; a busy called party ends the call (another trunk would find the
same person busy). Sibling offices are reached over SIP and, when unreachable, through the
configured public-number fallback with the extension as a DTMF suffix.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from firmware.calls import account_codes
from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.channel import CallerId, Channel, EventKind, Role
from firmware.calls.dialplan import RouteKind, RoutePlan
from firmware.calls.lifecycle import LegState
from firmware.calls.routes import Attempt, TrunkKind
from firmware.calls.session import CallEnded, CallSession, RecordDraft
from firmware.config.node_fields import is_node_name
from firmware.config.schema import SiblingSiteConfig

if TYPE_CHECKING:
    from firmware.calls.control import CallManager

    _Base = CallManager
else:
    _Base = object

log = logging.getLogger("firmware.calls")

_DIAL_DONE_WAIT_S = 60.0
_FIXED_DIAL_DELAY_S = 1.0
# Failures that are about the called party, not the trunk: trying elsewhere cannot help.
_DISPOSITION_FOR_CAUSE = {"no_answer": Disposition.NO_ANSWER, "no_dial_tone": Disposition.FAILED}


class _CallerGone(Exception):
    """The caller hung up while a trunk was being tried."""


class OutsideCalls(_Base):
    # ----- outgoing ----------------------------------------------------------------------

    def _free_line(self, groups: tuple[str, ...], tried: set[str] | None = None) -> tuple[Channel, str] | None:
        for group in groups:
            for line in self.config.lines:
                if line.group != group or (tried and line.name in tried):
                    continue
                channel = self.line_channel(line.name)
                if (
                    channel is not None
                    and channel.state == LegState.IDLE
                    and channel.name not in self._owner
                ):
                    return channel, group
        return None

    def _trunk_up(self, name: str) -> bool:
        return self.trunk_available is None or self.trunk_available(name)

    async def _call_out(self, session: CallSession, caller: Channel, plan: RoutePlan) -> None:
        """Try the plan's trunks in order; the call ends inside (answered) or with a reject."""
        await self._try_trunks(session, caller, self.routes.attempts(plan), "no_free_line")

    async def _try_trunks(
        self, session: CallSession, caller: Channel, attempts: list[Attempt], cause: str
    ) -> None:
        draft = session.draft
        assert draft is not None
        for attempt in attempts:
            if attempt.kind == TrunkKind.LINES:
                tried: set[str] = set()  # hunt the group: a line without dial tone, the next
                while (found := self._free_line((attempt.name,), tried)) is not None:
                    tried.add(found[0].number)
                    draft.line, draft.line_group = found[0].number, attempt.group
                    cause = await self._line_attempt(session, caller, found[0], attempt.number)
            else:
                if not self._trunk_up(attempt.name):
                    log.info("event=trunk_skipped call=%d peer=%s reason=down", session.id, attempt.name)
                    cause = "trunk_down"
                    continue
                out = self.outbound_leg(attempt.name) if self.outbound_leg is not None else None
                if out is None:
                    cause = "no_free_channel"
                    continue
                draft.line, draft.line_group = attempt.name, attempt.group or None
                cause = await self._sip_attempt(session, caller, out, attempt.number)
            if cause == "busy":
                await self._reject(session, caller, "busy", Disposition.BUSY, "busy")
            if cause == "no_such_number":
                await self._reject(session, caller, "special_information", Disposition.FAILED, cause)
            if attempt.kind == TrunkKind.SIP and (session.far_end_alerted or cause == "no_answer"):
                # The called party was reached (it rang, or declined): another trunk would
                # only ring the same person again.
                await self._reject(session, caller, "congestion", Disposition.NO_ANSWER, cause)
            log.info("event=trunk_failover call=%d trunk=%s cause=%s", session.id, attempt.name, cause)
        disposition = _DISPOSITION_FOR_CAUSE.get(cause, Disposition.CONGESTION)
        await self._reject(session, caller, "congestion", disposition, cause)

    async def _line_attempt(self, session: CallSession, caller: Channel, line: Channel, number: str) -> str:
        """Seize a city line and dial. Returns a cause only if the line failed before
        dialling (no dial tone): the next trunk may do better. Once dialled, the call is
        the line's (an analogue line cannot tell an unanswered call from a ringing one)."""
        draft = session.draft
        assert draft is not None
        self._claim(session, line)
        line_config = next(lc for lc in self.config.lines if lc.name == line.number)
        line.set_state(LegState.DIALLING)
        if caller.role == Role.EXTENSION:
            caller.set_state(LegState.CALLING)
        await line.seize()
        if line_config.wait_for_dial_tone:
            listen = getattr(line, "listen_for_dial_tone", None)
            if listen is not None:
                listen()
            if not await self._await_line_event(
                session, caller, line, EventKind.DIAL_TONE, self.config.timers.fxo_dial_tone_wait_s
            ):
                log.warning("event=no_dial_tone line=%s", line.name)
                await self._give_back(session, line, "busy")
                return "no_dial_tone"
        else:
            await self._await_line_event(
                session, caller, line, EventKind.DIAL_TONE, _FIXED_DIAL_DELAY_S
            )
        await line.dial(number)
        if not await self._await_line_event(
            session, caller, line, EventKind.DIAL_DONE, _DIAL_DONE_WAIT_S
        ):
            await self._reject(session, caller, "congestion", Disposition.FAILED, "dialling_failed")
        if getattr(line, "answer_supervision", "none") == "polarity":
            line.awaiting_answer = True  # type: ignore[attr-defined]
        else:
            draft.answered()
        draft.disposition = None if draft.answer is None else Disposition.ANSWERED
        await self._connected(session, caller, line)
        return "normal"  # not reached: _connected ends the call

    async def _await_line_event(
        self,
        session: CallSession,
        caller: Channel,
        line: Channel,
        wanted: EventKind,
        timeout: float,
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            item = await self._wait(session, max(deadline - loop.time(), 0))
            if item is None:
                return False
            channel, event = item
            if channel is caller and event.kind in (EventKind.ON_HOOK, EventKind.FAR_END_CLEARED):
                session.draft.ended(
                    Disposition.ABANDONED, HangupSide.CALLER, "hung_up_during_seizure"
                )
                raise CallEnded
            if channel is line and event.kind == wanted:
                return True
            if channel is line and event.kind == EventKind.FAR_END_CLEARED:
                await self._reject(
                    session, caller, "congestion", Disposition.FAILED, f"line_dropped:{event.value}"
                )

    async def _sip_attempt(self, session: CallSession, caller: Channel, out: Channel, number: str) -> str:
        """One outgoing SIP leg: returns the failure cause; an answered call ends the call.

        `session.far_end_alerted` tells afterwards whether the far end got as far as
        ringing (a sibling that rang was reachable: no fallback then)."""
        draft = session.draft
        assert draft is not None
        session.far_end_alerted = False
        out.handler = self._on_event
        self._claim(session, out)
        out.set_state(LegState.DIALLING)
        if caller.role == Role.EXTENSION and caller.state != LegState.CALLING:
            caller.set_state(LegState.CALLING)
        try:
            await out.dial(number, self._shown_for(session, caller))
        except ValueError as error:  # a number this trunk cannot carry (e.g. '#' in a SIP URI)
            log.warning("event=trunk_dial_failed call=%d trunk=%s number=%s error=%r", session.id, out.name, number, str(error))
            self._let_go(session, out)
            await out.release("invalid")
            out.set_state(LegState.IDLE)
            return "invalid_number"
        while True:
            item = await self._wait(session, None)
            assert item is not None
            channel, event = item
            if channel is caller and event.kind in (EventKind.FAR_END_CLEARED, EventKind.ON_HOOK):
                draft.ended(Disposition.ABANDONED, HangupSide.CALLER, event.value or "caller_gave_up")
                raise CallEnded
            if channel is not out:
                continue
            if event.kind == EventKind.RINGING:
                session.far_end_alerted = True
                if caller.role == Role.EXTENSION or caller.state == LegState.CONNECTED:
                    caller.play("ringback")  # a transferred caller hears it in-band too
                await caller.indicate_ringing()
            elif event.kind == EventKind.ANSWERED:
                caller.stop_sound()
                await caller.seize()
                draft.answered()
                await self._connected(session, caller, out)
            elif event.kind == EventKind.FAR_END_CLEARED:
                caller.stop_sound()
                self._let_go(session, out)
                await out.release(event.value)
                out.set_state(LegState.IDLE)
                return event.value or "failed"

    # ----- sibling offices ---------------------------------------------------------------

    async def _call_sibling(self, session: CallSession, caller: Channel, plan: RoutePlan) -> None:
        """Ring an extension of another office over SIP; when it cannot be reached, the
        configured fallback (its public number with the extension as DTMF suffix)."""
        draft = session.draft
        assert draft is not None and plan.site is not None
        site = self.config.sibling_site(plan.site)
        assert site is not None
        name = f"sibling:{site.name}"
        draft.line, draft.destination_kind = name, "sibling"
        draft.correlation_id = draft.correlation_id or uuid.uuid4().hex
        cause = "sibling_unreachable"
        if site.host and self._trunk_up(name) and self.outbound_leg is not None:
            out = self.outbound_leg(name)
            if out is not None:
                out.correlation_id = draft.correlation_id  # type: ignore[attr-defined]
                cause = await self._sip_attempt(session, caller, out, plan.dialled)
                if cause == "busy":
                    await self._reject(session, caller, "busy", Disposition.BUSY, "busy")
                if cause == "no_such_number":
                    await self._reject(session, caller, "special_information", Disposition.INVALID, cause)
                if session.far_end_alerted:  # reached, rang, not answered: no fallback
                    await self._reject(session, caller, "congestion", Disposition.NO_ANSWER, cause)
        log.warning("event=sibling_unreachable call=%d site=%s cause=%s", session.id, site.name, cause)
        if site.fallback == "pstn":
            await self._sibling_fallback(session, caller, site, plan.dialled)
        await self._reject(session, caller, "congestion", Disposition.FAILED, f"sibling_unreachable:{site.name}")

    async def _sibling_fallback(
        self, session: CallSession, caller: Channel, site: SiblingSiteConfig, extension: str
    ) -> None:
        """Dial the office's public number as this site would (the installer configured it,
        so the caller's class of service does not apply) and send the extension as DTMF."""
        fallback = self.dialplan.route(None, site.fallback_number, unrestricted=True)
        if fallback.kind not in (RouteKind.OUTSIDE, RouteKind.EMERGENCY):
            log.warning("event=sibling_fallback_unroutable site=%s number=%s", site.name, site.fallback_number)
            return
        draft = session.draft
        assert draft is not None
        draft.destination_kind = "sibling_fallback"
        draft.direction = Direction.OUTGOING
        session.after_answer = (extension, site.fallback_dtmf_delay_s)
        self._log_call("sibling_fallback", {"call": session.id, "site": site.name, "number": site.fallback_number})
        await self._try_trunks(session, caller, self.routes.attempts(fallback), "no_free_line")

    def start_from_sibling(
        self, leg: Channel, dialled: str, site: SiblingSiteConfig, caller: CallerId | None = None
    ) -> None:
        """An authenticated call from a sibling office: routed by this site's own rules,
        with the sibling's class of service (none: internal numbers only)."""
        leg.handler = self._on_event
        self._start(self._from_sibling(leg, dialled, site, caller), leg)

    def _from_sibling(self, leg: Channel, dialled: str, site: SiblingSiteConfig, caller: CallerId | None):
        async def run(session: CallSession) -> None:
            leg.set_state(LegState.ALERTING)
            shown = caller or CallerId(leg.number, leg.display_name)
            draft = RecordDraft(
                Direction.INCOMING, caller_number=shown.number, caller_name=shown.name, dialled=dialled,
                line=f"sibling:{site.name}", correlation_id=getattr(leg, "correlation_id", "") or "",
                mode=self._mode_now(),
            )  # fmt: skip
            session.drafts.append(draft)
            leg.number, leg.display_name = shown.number, shown.name
            plan = self.dialplan.route(None, dialled, class_of_service=site.class_of_service)
            self._log_call("call_from_sibling", {"call": session.id, "site": site.name, "from": shown.number,
                                                 "dialled": dialled, "route": plan.kind})  # fmt: skip
            if plan.kind == RouteKind.SIBLING and (site.class_of_service is None or plan.site == site.name):
                plan = RoutePlan(RouteKind.REJECTED, dialled, reason="cos:tandem")
            if draft.correlation_id and any(
                other is not session and other.draft is not None and other.draft.correlation_id == draft.correlation_id
                for other in self.sessions.values()
            ):  # the same call came back round: two sites each think the number is the other's
                log.warning("event=sibling_loop call=%d site=%s correlation=%s", session.id, site.name, draft.correlation_id)
                plan = RoutePlan(RouteKind.REJECTED, dialled, reason="loop")
            await self._execute(session, leg, plan)

        return run

    # ----- calls from the world that name their destination (SIP peers) ------------------

    def start_inbound(self, line: Channel, dialled: str, caller: CallerId, destination: str) -> None:
        """A call arrived on `line` for `dialled`; `destination` comes from the line's config."""
        line.handler = self._on_event
        self._start(self._inbound(line, dialled, caller, destination), line)

    def start_originating(self, phone: Channel, dialled: str) -> None:
        """A phone that sends its number complete (a SIP phone): no dial tone, no collection."""
        phone.handler = self._on_event
        self._start(self._originate_complete(phone, dialled), phone)

    def _originate_complete(self, caller: Channel, dialled: str):
        async def run(session: CallSession) -> None:
            caller.set_state(LegState.DIALLING)
            session.drafts.append(RecordDraft(
                Direction.INTERNAL, caller_number=caller.number, caller_name=caller.display_name, dialled=dialled,
            ))  # fmt: skip
            plan = self.dialplan.route(self.config.extension(caller.number), dialled)
            self._log_call("call_route", {"call": session.id, "from": caller.number, "dialled": dialled,
                                          "route": plan.kind, "reason": plan.reason})  # fmt: skip
            await self._execute(session, caller, plan)

        return run

    def _inbound(self, line: Channel, dialled: str, caller: CallerId, destination: str):
        async def run(session: CallSession) -> None:
            line.set_state(LegState.ALERTING)
            draft = RecordDraft(
                Direction.INCOMING, caller_number=caller.number, caller_name=caller.name,
                dialled=dialled, line=line.number, external_number=dialled or None,
                account_code=account_codes.account_for_did(self.config, dialled),
                mode=self._mode_now(),
            )  # fmt: skip
            session.drafts.append(draft)
            self._log_call("call_incoming", {"call": session.id, "line": line.name, "caller": caller.number,
                                             "dialled": dialled, "to": destination})  # fmt: skip
            if destination.startswith("peer:"):
                await self._call_peer(session, line, destination, dialled)
                return
            if is_node_name(destination):
                await self._to_node(session, line, destination, caller)
            numbers = [number.strip() for number in destination.split(",") if number.strip()]
            draft.called_extension = numbers[0] if numbers else None
            ringing = self._ringable(numbers)
            if not ringing:
                await self._reject(session, line, "busy", Disposition.BUSY, "all_busy")
            answered = await self._ring(session, line, ringing, caller, self.config.timers.ring_timeout_s)
            if answered is None:
                await self._reject(session, line, "congestion", Disposition.NO_ANSWER, "no_answer")
            assert answered is not None
            await line.seize()
            draft.answered(answered.number)
            await self._connected(session, line, answered)

        return run

    async def _call_peer(self, session: CallSession, caller: Channel, destination: str, dialled: str) -> None:
        """Pass a call on to another peer (tandem): allowed only where config says so."""
        draft = session.draft
        assert draft is not None
        peer, _, number = destination.removeprefix("peer:").partition("/")
        draft.called_extension = None
        draft.destination_kind = "tandem"
        attempt = Attempt(TrunkKind.SIP, peer, number or dialled, "")
        await self._try_trunks(session, caller, [attempt], "no_free_channel")
