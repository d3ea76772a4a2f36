"""Call control: who is connected to whom, and what every caller hears.

One coroutine runs each call from the first event (a phone lifted, a line ringing) to its
call record. Legs are channels; this module never asks which technology a leg is, only its
role (an extension's phone, or a line to the outside world). Routing decisions come from
the pure `DialPlan`; audio moves only through the mixer.

The rules a caller must hear correctly:
- off hook: dial tone; first digit stops it; no digit in time: congestion, then lock-out;
- busy extension: busy tone; unknown number: special information tone; no free line:
  congestion; forbidden number: special information tone (and a record, never a line);
- no answer in time: the extension's forward-on-no-answer, else congestion;
- the party left alone when the other hangs up hears busy tone until it hangs up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware.accounting.prepaid import is_chargeable, prepaid_account_for, prepaid_state
from firmware.accounting.tariffs import TariffBook, to_e4
from firmware.calls import account_codes, prepaid_limit
from firmware.calls.cdr import CdrStore, Direction, Disposition, HangupSide, record_to_json
from firmware.calls.channel import CallerId, Channel, ChannelEvent, EventKind, Role
from firmware.calls.dialplan import DialPlan, RouteKind, RoutePlan
from firmware.calls.digitmap import MatchState
from firmware.calls.lifecycle import IllegalTransition, LegState
from firmware.calls.outside import OutsideCalls
from firmware.calls.routes import OutboundRoutes
from firmware.calls.session import CallEnded, CallSession, RecordDraft, utc_now
from firmware.calls.transfer import TransferCalls
from firmware.config.node_fields import is_node_name
from firmware.config.schema import Config
from firmware.features import feature_codes
from firmware.features.context import NodeContext
from firmware.features.runner import run_destination
from firmware.media.mixer import Mixer
from firmware.modes.service import ModeService

log = logging.getLogger("firmware.calls")

_CALLER_ID_WAIT_S = 2.5
_CONFIRMATION_S = 0.6  # the confirmation beeps (3 x 100 ms on/off) before dial tone again
_EARLY_CALLER_ID_S = 10.0  # a caller ID sent before the first ring (UK style) stays valid


_MAX_PENDING_RELAYS = 32

_IDLE_LEG_EVENTS = (EventKind.ON_HOOK, EventKind.OFF_HOOK, EventKind.OUT_OF_SERVICE, EventKind.IN_SERVICE)


@dataclass
class ManagerCounters:
    calls_started: int = 0
    calls_ended: int = 0
    cdr_failures: int = 0
    illegal_transitions: int = 0
    permanent_signal: int = 0
    events_ignored: int = 0
    prepaid_released: int = 0  # calls ended at their prepaid limit


class CallManager(OutsideCalls, TransferCalls):
    def __init__(self, config: Config, mixer: Mixer, cdr: CdrStore) -> None:
        self.mixer = mixer
        self.cdr = cdr
        self._tariffs: tuple[Config, TariffBook] | None = None  # for prepaid checks, per config
        self._prepaid_timers: dict[int, prepaid_limit.LimitTimers] = {}  # by session id
        # Where features keep state that must survive a restart (set by the appliance).
        self.data_dir: Path | None = None
        # Long-lived feature state shared by calls (queues and their agents, ...), by name.
        self.features: dict[str, Any] = {}
        # The office mode service (day/night/...), set by the appliance; None in bare tests.
        self.modes: ModeService | None = None
        # Called with each stored CDR row (a dict of cdr columns) once it is committed.
        self.record_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.channels: list[Channel] = []
        self.sessions: dict[int, CallSession] = {}
        self._owner: dict[str, CallSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lockout_timers: dict[str, asyncio.TimerHandle] = {}
        self._off_hook: set[str] = set()
        self._early_caller_id: dict[str, tuple[float, CallerId]] = {}
        self.counters = ManagerCounters()
        self.on_call_event: Callable[[str, dict[str, object]], None] | None = None
        # Makes an outgoing leg towards a named peer (SIP); None when it has no capacity.
        self.outbound_leg: Callable[[str], Channel | None] | None = None
        # The extra devices of an extension (its registered SIP phones), rung with its port.
        self.extra_devices: Callable[[str], list[Channel]] | None = None
        # Whether a named SIP peer or "sibling:NAME" is up (registered, answering keep-alives).
        self.trunk_available: Callable[[str], bool] | None = None
        self.apply_config(config)

    # ----- configuration -----------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        """Swap numbering and routing; calls in progress keep the legs they have."""
        self.config = config
        self.dialplan = DialPlan(config)
        self.routes = OutboundRoutes(config)
        self._extension_channels: dict[str, Channel] = {}
        self._line_channels: dict[str, Channel] = {}
        for channel in self.channels:
            self._label(channel)

    def _label(self, channel: Channel) -> None:
        port = getattr(channel, "port", None)
        channel.number, channel.display_name = "", ""
        if channel.role == Role.EXTENSION:
            extension = self.config.extension_on_port(port) if port is not None else None
            if extension is not None:
                channel.number, channel.display_name = extension.number, extension.name
                self._extension_channels[extension.number] = channel
        else:
            line = self.config.line_on_port(port) if port is not None else None
            if line is not None:
                channel.number = channel.display_name = line.name
                self._line_channels[line.name] = channel
                configure = getattr(channel, "configure", None)
                if configure is not None:
                    configure(
                        disconnect=line.disconnect,
                        answer_supervision=line.answer_supervision,
                        dial_mode=line.dial_mode,
                        disconnect_tone=line.disconnect_tone,
                        max_silence_s=line.max_silence_s,
                        noise_floor_dbm0=line.noise_floor_dbm0,
                        echo_tail_ms=line.echo_tail_ms,
                    )

    def add_channels(self, channels: list[Channel]) -> None:
        for channel in channels:
            channel.handler = self._on_event
            self.channels.append(channel)
            self._label(channel)

    def extension_channel(self, number: str) -> Channel | None:
        return self._extension_channels.get(number)

    def line_channel(self, name: str) -> Channel | None:
        return self._line_channels.get(name)

    # ----- event dispatch ----------------------------------------------------------------

    def _on_event(self, channel: Channel, event: ChannelEvent) -> None:
        if event.kind == EventKind.OFF_HOOK:
            self._off_hook.add(channel.name)
        elif event.kind == EventKind.ON_HOOK:
            self._off_hook.discard(channel.name)
        session = self._owner.get(channel.name)
        if session is not None:
            session.queue.put_nowait((channel, event))
            return
        try:
            self._idle_event(channel, event)
        except IllegalTransition:
            self.counters.illegal_transitions += 1
            log.exception("event=illegal_transition leg=%s event=%s", channel.name, event.kind)

    def _idle_event(self, channel: Channel, event: ChannelEvent) -> None:
        kind = event.kind
        if kind == EventKind.OUT_OF_SERVICE:
            self._off_hook.discard(channel.name)  # the card's snapshot says again who is off hook
            self._cancel_lockout(channel)
            channel.set_state(LegState.OUT_OF_SERVICE)
            log.warning("event=leg_out_of_service leg=%s reason=%r", channel.name, event.value)
        elif kind == EventKind.IN_SERVICE:
            if channel.state == LegState.OUT_OF_SERVICE:
                channel.set_state(LegState.IDLE)
                log.info("event=leg_in_service leg=%s", channel.name)
                if self.is_off_hook(channel):
                    self._start(self._originate(channel), channel)
        elif channel.state == LegState.OUT_OF_SERVICE:
            self.counters.events_ignored += 1
        elif kind == EventKind.ON_HOOK and channel.state == LegState.CLEARING:
            self._cancel_lockout(channel)
            channel.stop_sound()
            channel.set_state(LegState.IDLE)
        elif (
            kind == EventKind.OFF_HOOK
            and channel.role == Role.EXTENSION
            and channel.state == LegState.IDLE
        ):
            if channel.number:
                self._start(self._originate(channel), channel)
            else:
                self._to_clearing(channel, "congestion")  # a port with no extension configured
        elif kind == EventKind.CALLER_ID and channel.role == Role.LINE and event.caller is not None:
            self._early_caller_id[channel.name] = (asyncio.get_running_loop().time(), event.caller)
        elif (
            kind == EventKind.RING_START
            and channel.role == Role.LINE
            and channel.state == LegState.IDLE
        ):
            if channel.number:
                self._start(self._incoming(channel), channel)
        else:
            self.counters.events_ignored += 1
            log.debug(
                "event=event_ignored leg=%s state=%s kind=%s", channel.name, channel.state, kind
            )

    def is_off_hook(self, channel: Channel) -> bool:
        return channel.name in self._off_hook

    def _start(self, coroutine: object, first_leg: Channel) -> None:
        session = CallSession(None)
        self._claim(session, first_leg)
        self.sessions[session.id] = session
        self.counters.calls_started += 1
        task = asyncio.get_running_loop().create_task(
            self._run(session, coroutine), name=f"call-{session.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, session: CallSession, coroutine_factory: object) -> None:
        try:
            await coroutine_factory(session)  # type: ignore[operator]
        except CallEnded:
            pass
        except IllegalTransition:
            self.counters.illegal_transitions += 1
            log.exception("event=illegal_transition call=%d", session.id)
        except asyncio.CancelledError:
            for draft in session.drafts:
                draft.ended(Disposition.FAILED, HangupSide.SYSTEM, "shutdown")
            await self._finish(session)
            raise
        except Exception:
            log.exception("event=call_failed call=%d", session.id)
            for draft in session.drafts:
                draft.ended(Disposition.FAILED, HangupSide.SYSTEM, "internal_error")
        await self._finish(session)

    def _mode_now(self) -> str | None:
        """The office mode in force, recorded on incoming calls (no I/O: a cached value)."""
        return self.modes.current() if self.modes is not None else None

    def _claim(self, session: CallSession, channel: Channel) -> None:
        self._cancel_lockout(channel)
        self._owner[channel.name] = session
        if channel not in session.legs:
            session.legs.append(channel)

    def _let_go(self, session: CallSession, channel: Channel) -> None:
        if self._owner.get(channel.name) is session:
            del self._owner[channel.name]
        if channel in session.legs:
            session.legs.remove(channel)

    # ----- ending ------------------------------------------------------------------------

    async def _finish(self, session: CallSession) -> None:
        """Write the records first, then give every leg back according to its hook state."""
        if session.id not in self.sessions:
            return
        timers = self._prepaid_timers.pop(session.id, None)
        if timers is not None:
            timers.cancel()
        for draft in session.drafts:
            await self._write_record(draft)
        session.drafts.clear()
        for leg in list(session.legs):
            await self._give_back(session, leg, "busy")
        del self.sessions[session.id]
        self.counters.calls_ended += 1

    async def _write_record(self, draft: RecordDraft) -> None:
        record = draft.build(self.config.site.name)
        try:
            stored = await self.cdr.async_write(record)
        except Exception:
            self.counters.cdr_failures += 1
            log.exception("event=cdr_write_failed call_id=%s", record.call_id)
        else:
            for listener in self.record_listeners:
                try:
                    listener(stored)
                except Exception:
                    log.exception("event=record_listener_failed call_id=%s", record.call_id)
        self._log_call("call_end", record_to_json(record))

    async def _give_back(self, session: CallSession, leg: Channel, tone: str) -> None:
        """Return a leg to the idle pool; a phone still off hook hears `tone` until hung up."""
        self._let_go(session, leg)
        if leg.slot is not None:
            self.mixer.disconnect(leg.slot)
        if leg.state == LegState.OUT_OF_SERVICE:
            return
        if leg.state == LegState.ALERTING and leg.role == Role.EXTENSION:
            await leg.stop_alert()
        if leg.role == Role.LINE or leg.technology == "sip":
            await leg.release()
            leg.stop_sound()
            leg.set_state(LegState.IDLE)
        elif self.is_off_hook(leg):
            self._to_clearing(leg, tone)
        else:
            leg.stop_sound()
            leg.set_state(LegState.IDLE)
        # Events of this leg that the call had not read yet (a quick re-lift, the link
        # going down) now belong to the idle leg; everything else stays queued for the call.
        pending = [session.queue.get_nowait() for _ in range(session.queue.qsize())]
        for channel, event in pending:
            if channel is leg and event.kind in _IDLE_LEG_EVENTS:
                self._idle_event(channel, event)
            elif channel is not leg:
                session.queue.put_nowait((channel, event))

    def _to_clearing(self, leg: Channel, tone: str) -> None:
        if leg.state != LegState.CLEARING:
            leg.set_state(LegState.CLEARING)
        leg.play(tone)
        self._cancel_lockout(leg)
        lockout = self.config.timers.lockout_tone_s
        self._lockout_timers[leg.name] = asyncio.get_running_loop().call_later(
            lockout, leg.stop_sound
        )

    def _cancel_lockout(self, leg: Channel) -> None:
        timer = self._lockout_timers.pop(leg.name, None)
        if timer is not None:
            timer.cancel()

    def _log_call(self, event: str, fields: dict[str, object]) -> None:
        parts = " ".join(
            f"{key}={value!s}" if " " not in str(value) else f"{key}={value!r}"
            for key, value in fields.items()
        )
        log.info("event=%s %s", event, parts)
        if self.on_call_event is not None:
            self.on_call_event(event, fields)

    async def _reject(
        self, session: CallSession, leg: Channel, tone: str, disposition: Disposition, cause: str
    ) -> None:
        """The caller hears `tone` until it hangs up; the record says why."""
        draft = session.draft
        if draft is not None:
            draft.ended(disposition, HangupSide.SYSTEM, cause)
        self._let_go(session, leg)
        if leg.role == Role.LINE or leg.technology == "sip":
            await leg.release(cause)
        if leg.in_service and self.is_off_hook(leg):
            self._to_clearing(leg, tone)
        elif leg.in_service:
            leg.set_state(LegState.IDLE)
        raise CallEnded

    # ----- waiting for events ------------------------------------------------------------

    async def _wait(
        self, session: CallSession, timeout: float | None
    ) -> tuple[Channel, ChannelEvent] | None:
        """Next event; a leg that lost service ends the call for everyone.

        A transfer asked for while the call is not two parties talking (still ringing,
        dialling) is refused at once, so the asking phone is never left waiting."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            item = await session.next_event(remaining)
            if item is None or session.transfers_welcome:
                break
            channel, event = item
            if event.kind == EventKind.TRANSFER:
                log.info("event=transfer_refused call=%d leg=%s reason=not_in_conversation", session.id, channel.name)
                channel.transfer_result(False)
            elif event.kind != EventKind.HANDOVER:
                break
        if item is not None:
            channel, event = item
            if event is prepaid_limit.PREPAID_LIMIT:
                self._prepaid_release(session)
            if event.kind == EventKind.OUT_OF_SERVICE:
                self._off_hook.discard(channel.name)
                channel.set_state(LegState.OUT_OF_SERVICE)
                self._let_go(session, channel)
                log.warning("event=leg_lost_in_call leg=%s reason=%r", channel.name, event.value)
                for draft in session.drafts:
                    draft.ended(Disposition.FAILED, HangupSide.SYSTEM, "out_of_service")
                raise CallEnded
        return item

    # ----- originating: a phone is lifted -------------------------------------------------

    def _originate(self, caller: Channel):
        async def run(session: CallSession) -> None:
            caller.set_state(LegState.DIALLING)
            caller.play("dial")
            extension = self.config.extension(caller.number)
            account_code: str | None = None
            dial_tone_after: float | None = None
            while True:
                digits = await self._collect(session, caller, dial_tone_after)
                plan = self.dialplan.route(extension, digits)
                if plan.kind != RouteKind.FEATURE or plan.feature != account_codes.FEATURE_NAME:
                    break
                account_code = await self._key_account_code(session, caller, digits, collect_started)
                caller.play("confirmation")
                dial_tone_after = _CONFIRMATION_S
            session.drafts.append(
                RecordDraft(
                    Direction.INTERNAL,
                    caller_number=caller.number,
                    caller_name=caller.display_name,
                    dialled=digits,
                    start=collect_started,
                    account_code=account_code,
                )
            )
            self._log_call(
                "call_route",
                {
                    "call": session.id,
                    "from": caller.number,
                    "dialled": digits,
                    "route": plan.kind,
                    "reason": plan.reason,
                },
            )
            if (
                plan.kind == RouteKind.OUTSIDE
                and account_code is None
                and account_codes.required_for(self.config, caller.number) == "forced"
            ):
                session.draft.account_code = await self._key_account_code(
                    session, caller, "", collect_started, prompt=True
                )
            await self._execute(session, caller, plan)

        collect_started = utc_now()
        return run

    async def _key_account_code(
        self,
        session: CallSession,
        caller: Channel,
        keyed: str,
        started: datetime,
        *,
        prompt: bool = False,
    ) -> str:
        """Digits up to '#' (or a pause) as an account code; a refused one ends the call.

        `prompt`: the code was not offered, the class of service forces one; the caller
        hears confirmation beeps as the cue to key it."""
        if prompt:
            caller.play("confirmation")
        else:
            caller.stop_sound()
        code = ""
        timers = self.config.timers
        while True:
            item = await self._wait(session, timers.first_digit_s if not code else timers.inter_digit_s)
            if item is None:
                break
            channel, event = item
            if channel is not caller:
                continue
            if event.kind == EventKind.ON_HOOK:
                if session.draft is None:
                    session.drafts.append(RecordDraft(
                        Direction.INTERNAL, caller_number=caller.number,
                        caller_name=caller.display_name, dialled=keyed + code, start=started,
                    ))  # fmt: skip
                session.draft.ended(Disposition.ABANDONED, HangupSide.CALLER, "hung_up_account_code")
                raise CallEnded
            if event.kind != EventKind.DIGIT:
                continue
            caller.stop_sound()
            if event.value == "#":
                break
            code += event.value
        policy = account_codes.required_for(self.config, caller.number)
        if policy == "none" or not account_codes.code_is_valid(self.config, code):
            log.warning(
                "event=account_code_refused leg=%s reason=%s",
                caller.name,
                "not_allowed" if policy == "none" else "invalid",
            )
            if session.draft is None:
                session.drafts.append(RecordDraft(
                    Direction.INTERNAL, caller_number=caller.number,
                    caller_name=caller.display_name, dialled=keyed + code, start=started,
                ))  # fmt: skip
            reason = "account_code_not_allowed" if policy == "none" else "account_code_invalid"
            await self._reject(session, caller, "special_information", Disposition.REJECTED, reason)
        self._log_call("account_code", {"call": session.id, "leg": caller.name, "code": code})
        return code

    async def _collect(
        self, session: CallSession, caller: Channel, dial_tone_after: float | None = None
    ) -> str:
        """Digits until the dial plan says complete, or a timeout/'#' ends an open number.

        `dial_tone_after`: the caller hears something else first (confirmation beeps);
        dial tone follows after that many seconds unless a digit comes sooner."""
        timers = self.config.timers
        digits = ""
        timeout = timers.first_digit_s
        pending = None
        if dial_tone_after is not None:
            pending = await self._wait(session, dial_tone_after)
            if pending is None:
                caller.play("dial")
                timeout -= dial_tone_after
        while True:
            item, pending = pending or await self._wait(session, timeout), None
            if item is None:
                if not digits:
                    self.counters.permanent_signal += 1
                    log.info("event=permanent_signal leg=%s", caller.name)
                    await self._reject(
                        session, caller, "congestion", Disposition.ABANDONED, "permanent_signal"
                    )
                return digits
            channel, event = item
            if channel is not caller:
                continue
            if event.kind == EventKind.ON_HOOK:
                if digits:
                    start = utc_now()
                    session.drafts.append(
                        RecordDraft(
                            Direction.INTERNAL,
                            caller_number=caller.number,
                            caller_name=caller.display_name,
                            dialled=digits,
                            start=start,
                        )
                    )
                    session.draft.ended(
                        Disposition.ABANDONED, HangupSide.CALLER, "hung_up_dialling"
                    )
                raise CallEnded
            if event.kind != EventKind.DIGIT:
                continue
            if not digits:
                caller.stop_sound()
            if (
                event.value == "#"
                and digits
                and self.dialplan.match(digits).state == MatchState.AMBIGUOUS
            ):
                return digits
            digits += event.value
            state = self.dialplan.match(digits).state
            if state in (MatchState.COMPLETE, MatchState.NO_MATCH):
                return digits
            timeout = timers.inter_digit_s

    async def _execute(self, session: CallSession, caller: Channel, plan: RoutePlan) -> None:
        draft = session.draft
        assert draft is not None
        draft.destination_kind = plan.destination_kind or None
        if plan.kind in (RouteKind.OUTSIDE, RouteKind.EMERGENCY, RouteKind.REJECTED):
            draft.external_number = plan.number or None
        if plan.kind == RouteKind.INTERNAL:
            assert plan.extension is not None
            await self._call_extension(session, caller, plan.extension)
        elif plan.kind in (RouteKind.OUTSIDE, RouteKind.EMERGENCY):
            draft.direction = Direction.OUTGOING
            if plan.kind == RouteKind.OUTSIDE:
                await self._check_prepaid(session, caller, plan)
            await self._call_out(session, caller, plan)
        elif plan.kind == RouteKind.REJECTED:
            log.warning(
                "event=call_rejected from=%s dialled=%s reason=%s",
                caller.number,
                plan.dialled,
                plan.reason,
            )
            await self._reject(
                session, caller, "special_information", Disposition.REJECTED, plan.reason
            )
        elif plan.kind == RouteKind.INVALID:
            await self._reject(
                session, caller, "special_information", Disposition.INVALID, plan.reason
            )
        elif plan.kind == RouteKind.SIBLING:
            await self._call_sibling(session, caller, plan)
        elif plan.kind == RouteKind.NODE:
            await self._to_node(session, caller, plan.target, self._shown_for(session, caller))
        elif plan.feature is not None and (handler := feature_codes.handler_for(plan.feature)):
            draft.destination_kind = "feature"
            await handler(NodeContext(self, session, caller, self._shown_for(session, caller)), plan.feature)
            raise CallEnded
        else:
            await self._reject(
                session,
                caller,
                "special_information",
                Disposition.INVALID,
                f"feature_not_available:{plan.feature}",
            )

    async def _to_node(
        self, session: CallSession, caller: Channel, destination: str, shown: CallerId
    ) -> None:
        """Hand the call to the routing graph (hunt groups, queues, menus...): it ends there."""
        await run_destination(NodeContext(self, session, caller, shown), destination)

    async def _check_prepaid(self, session: CallSession, caller: Channel, plan: RoutePlan) -> None:
        """A caller on a prepaid account with nothing left may not start a chargeable call."""
        draft = session.draft
        account = prepaid_account_for(self.config, caller.number, draft.account_code)
        if account is None:
            return
        if self._tariffs is None or self._tariffs[0] is not self.config:
            accounting = self.config.accounting
            config = self.config  # built off the loop: a holiday calendar reads its country module
            book = await asyncio.to_thread(TariffBook, accounting, config.site.timezone)
            self._tariffs = (config, book)
        lines = [(attempt.group or None, attempt.name) for attempt in self.routes.attempts(plan)]
        if not is_chargeable(self._tariffs[1], plan.number, lines):
            return
        balance, warning, blocked = await asyncio.to_thread(
            prepaid_state, self.cdr.path, account.name, self.config
        )
        if blocked:
            log.warning("event=prepaid_blocked call=%d from=%s account=%s balance=%s",
                        session.id, caller.number, account.name, balance)  # fmt: skip
            await self._reject(
                session, caller, "special_information", Disposition.REJECTED, "prepaid_exhausted"
            )
        if prepaid_limit.cannot_pay_first_increment(
            self._tariffs[1], self.config.accounting, account, plan.number, lines, to_e4(balance)
        ):
            log.warning("event=prepaid_insufficient call=%d from=%s account=%s balance=%s",
                        session.id, caller.number, account.name, balance)  # fmt: skip
            await self._reject(
                session, caller, "special_information", Disposition.REJECTED, "prepaid_insufficient"
            )
        if warning:
            log.warning("event=prepaid_low call=%d account=%s balance=%s",
                        session.id, account.name, balance)  # fmt: skip
        self._prepaid_timers[session.id] = prepaid_limit.LimitTimers(account)

    async def _arm_prepaid_limit(self, session: CallSession) -> None:
        """At the answer of a prepaid chargeable call: the warning and the release, once
        (a transfer or a retrieve from hold comes back here and changes nothing)."""
        timers = self._prepaid_timers.get(session.id)
        draft = session.draft
        if timers is None or timers.armed or draft is None or draft.answer is None:
            return
        timers.armed = True
        balance, _, _ = await asyncio.to_thread(
            prepaid_state, self.cdr.path, timers.account.name, self.config
        )
        assert self._tariffs is not None  # built by _check_prepaid
        limit = prepaid_limit.call_limit_s(
            self._tariffs[1], self.config.accounting, timers.account, draft, to_e4(balance)
        )
        if session.id in self.sessions and session.draft is draft:
            timers.arm(session, draft.answer, limit)

    def _prepaid_release(self, session: CallSession) -> None:
        """The balance is spent: the call ends (answered; cause `prepaid_limit`)."""
        timers = self._prepaid_timers.get(session.id)
        self.counters.prepaid_released += 1
        log.warning("event=prepaid_released call=%d account=%s limit_s=%s", session.id,
                    timers.account.name if timers else "", timers.limit_s if timers else "")  # fmt: skip
        for draft in session.drafts:
            draft.ended(
                Disposition.ANSWERED if draft.answer else Disposition.ABANDONED,
                HangupSide.SYSTEM,
                prepaid_limit.PREPAID_LIMIT_CAUSE,
            )
        raise CallEnded

    # ----- internal calls ----------------------------------------------------------------

    async def _call_extension(self, session: CallSession, caller: Channel, number: str) -> None:
        draft = session.draft
        assert draft is not None
        tried: set[str] = set()
        while True:
            draft.called_extension = draft.called_extension or number
            tried.add(number)
            callee = self.extension_channel(number)
            devices = self._devices_of(number)
            if (callee is None or not callee.in_service) and not devices:
                await self._reject(
                    session, caller, "congestion", Disposition.FAILED, "extension_out_of_service"
                )
            if callee is caller or (callee is not None and self.is_off_hook(callee)):
                await self._reject(session, caller, "busy", Disposition.BUSY, "busy")
            free = [c for c in (callee,) if c is not None and c.in_service and c.state == LegState.IDLE]
            if not free and not devices:
                await self._reject(session, caller, "busy", Disposition.BUSY, "busy")
            outcome = await self._ring(
                session,
                caller,
                free + devices,
                CallerId(caller.number, caller.display_name),
                self.config.timers.ring_timeout_s,
            )
            if outcome is not None:
                draft.answered(outcome.number)
                await self._connected(session, caller, outcome)
                return
            forward = self.config.extension(number)
            target = forward.forward_no_answer if forward else None
            if target is None or target in tried:
                await self._reject(
                    session, caller, "congestion", Disposition.NO_ANSWER, "no_answer"
                )
            log.info("event=forward_no_answer call=%d from=%s to=%s", session.id, number, target)
            number = target

    def _devices_of(self, number: str) -> list[Channel]:
        """The extension's registered SIP phones as fresh legs, their events routed here."""
        devices = self.extra_devices(number) if self.extra_devices is not None else []
        for device in devices:
            device.handler = self._on_event
        return devices

    def _ringable(self, numbers: Sequence[str]) -> list[Channel]:
        """What rings for a call to these extensions: each idle desk phone and every
        registered SIP phone (a busy or lifted desk phone is skipped, its SIP phones not)."""
        desks = [self.extension_channel(number) for number in numbers]
        free = [d for d in desks if d is not None and d.state == LegState.IDLE and d.in_service
                and not self.is_off_hook(d)]  # fmt: skip
        return free + [device for number in numbers for device in self._devices_of(number)]

    async def _ring(
        self,
        session: CallSession,
        caller: Channel,
        callees: list[Channel],
        shown: CallerId,
        timeout: float | None,
        ringback: bool = True,
    ) -> Channel | None:
        """Ring callees together; the first to lift answers. None: nobody answered in time.

        The caller hanging up (or, for a line, the city caller giving up) ends the call.
        """
        for callee in callees:
            self._claim(session, callee)
            callee.set_state(LegState.ALERTING)
            await callee.alert(shown)
        if ringback and caller.role == Role.EXTENSION:
            caller.set_state(LegState.CALLING)
            caller.play("ringback")
        await caller.indicate_ringing()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        ring_gone = self.config.timers.fxo_ring_gone_s
        # A city caller gives up silently: its ringing just stops coming.
        watch_ringing = caller.rings_until_abandoned and caller.state == LegState.ALERTING
        last_ring = loop.time()
        answered: Channel | None = None
        try:
            while answered is None:
                now = loop.time()
                waits = []
                if watch_ringing:
                    waits.append(max(last_ring + ring_gone - now, 0.01))
                if deadline is not None:
                    waits.append(max(deadline - now, 0))
                item = await self._wait(session, min(waits) if waits else None)
                now = loop.time()
                if item is None:
                    if watch_ringing and now - last_ring >= ring_gone:
                        session.draft.ended(
                            Disposition.ABANDONED, HangupSide.CALLER, "caller_gave_up"
                        )
                        raise CallEnded
                    if deadline is not None and now >= deadline:
                        return None
                    continue
                channel, event = item
                if channel is caller:
                    if event.kind in (EventKind.ON_HOOK, EventKind.FAR_END_CLEARED):
                        session.draft.ended(
                            Disposition.ABANDONED, HangupSide.CALLER, "caller_hung_up_ringing"
                        )
                        raise CallEnded
                    if event.kind in (EventKind.RING_START, EventKind.RING_STOP):
                        last_ring = now
                elif channel in callees and event.kind in (EventKind.OFF_HOOK, EventKind.ANSWERED):
                    answered = channel
                elif channel in callees and event.kind == EventKind.FAR_END_CLEARED:
                    # A device that declined or failed (SIP 486, 603...): the others ring on.
                    callees.remove(channel)
                    self._let_go(session, channel)
                    await channel.release(event.value)
                    channel.set_state(LegState.IDLE)
                    if not callees:
                        return None
        finally:
            for callee in callees:
                if (
                    callee is not answered
                    and session.owns(callee)
                    and callee.state == LegState.ALERTING
                ):
                    await callee.stop_alert()
                    self._let_go(session, callee)
                    callee.set_state(LegState.IDLE)
                    if self.is_off_hook(callee):  # lifted just as the call went elsewhere
                        self._to_clearing(callee, "busy")
        if ringback:
            caller.stop_sound()
        return answered

    # ----- two parties talking -----------------------------------------------------------

    async def _connected(self, session: CallSession, a: Channel, b: Channel) -> None:
        """Speech both ways until one side clears; hook flash puts the other on hold."""
        for leg in (a, b):
            await leg.seize()  # both legs taken into the call (a SIP phone answers its INVITE)
            leg.stop_sound()
            leg.set_state(LegState.CONNECTED)
        assert a.slot is not None and b.slot is not None
        self.mixer.connect(a.slot, b.slot)
        self._log_call("call_answer", {"call": session.id, "a": a.name, "b": b.name})
        draft = session.draft
        assert draft is not None
        await self._arm_prepaid_limit(session)
        if session.after_answer is not None and not getattr(b, "awaiting_answer", False):
            self._send_after_answer(session, b)  # a fallback's DTMF suffix, once the line is through
        feature = self.config.feature_codes.get(account_codes.FEATURE_NAME)
        entries = {
            leg.name: account_codes.InCallEntry(feature)
            for leg in (a, b)
            if feature and leg.role == Role.EXTENSION
        }
        while True:
            session.transfers_welcome = True
            try:
                item = await self._wait(session, None)
            finally:
                session.transfers_welcome = False
            assert item is not None
            channel, event = item
            if channel not in (a, b):
                continue
            if event.kind == EventKind.ANSWERED:
                draft.answer = utc_now()  # the far end answered behind a line: billing starts now
                await self._arm_prepaid_limit(session)
                if channel is b and session.after_answer is not None:
                    self._send_after_answer(session, b)
                continue
            other = b if channel is a else a
            side = HangupSide.CALLER if channel is a else HangupSide.CALLEE
            if event.kind == EventKind.DIGIT and channel.name in entries:
                self._account_code_in_call(session, channel, entries[channel.name], event.value)
            if event.kind in (EventKind.ON_HOOK, EventKind.FAR_END_CLEARED):
                outcome = Disposition.ANSWERED if draft.answer else Disposition.NO_ANSWER
                draft.ended(outcome, side, event.value or "normal_clearing")
                raise CallEnded
            if event.kind == EventKind.FLASH and channel.role == Role.EXTENSION:
                back = await self._consult(session, channel, other)
                if not back:
                    raise CallEnded
                self.mixer.connect(a.slot, b.slot)
            elif event.kind == EventKind.DIGIT and "sip" in (channel.technology, other.technology):
                # Digits that arrived as events (RFC 4733, INFO) or that a SIP leg must
                # send as events; analogue-to-analogue DTMF is in the audio already.
                self._relay_digits(session, other, event.value)
            elif event.kind == EventKind.HOLD:
                other.play("hold")
                self._log_call("call_hold", {"call": session.id, "holder": channel.name, "held": other.name})
            elif event.kind == EventKind.RETRIEVE:
                other.stop_sound()
                self._log_call("call_retrieve", {"call": session.id, "holder": channel.name, "held": other.name})
            elif event.kind == EventKind.HANDOVER and self._hand_over(session, channel, other):
                raise CallEnded
            elif event.kind == EventKind.TRANSFER and await self._transfer(session, channel, other, event.value):
                return

    def _account_code_in_call(
        self, session: CallSession, leg: Channel, entry: account_codes.InCallEntry, digit: str
    ) -> None:
        """``*49 <code> #`` keyed in conversation tags the call (digits still reach the far end)."""
        code = entry.feed(digit)
        if code is None:
            return
        allowed = account_codes.required_for(self.config, leg.number) != "none"
        if not allowed or not account_codes.code_is_valid(self.config, code):
            log.warning("event=account_code_refused leg=%s reason=%s in_call=1", leg.name,
                        "invalid" if allowed else "not_allowed")  # fmt: skip
            return
        session.draft.account_code = code
        self._log_call("account_code", {"call": session.id, "leg": leg.name, "code": code})

    async def _consult(self, session: CallSession, holder: Channel, held: Channel) -> bool:
        """Consultation hold: `held` hears the hold tone, `holder` gets dial tone.

        Flash again (or the consulted party hanging up) returns to `held`; the holder
        hanging up rings the holder back with the held party (recall). False: call over.
        """
        assert holder.slot is not None and held.slot is not None
        self.mixer.disconnect(holder.slot)
        held.set_state(LegState.HELD)
        held.play("hold")
        holder.set_state(LegState.DIALLING)
        holder.play("dial")
        self._log_call("call_hold", {"call": session.id, "holder": holder.name, "held": held.name})
        consulted: Channel | None = None
        digits = ""
        timeout: float | None = self.config.timers.first_digit_s
        try:
            while True:
                item = await self._wait(session, timeout)
                if item is None:
                    if digits and self.dialplan.match(digits).state in (
                        MatchState.AMBIGUOUS,
                        MatchState.COMPLETE,
                    ):
                        consulted = await self._consult_call(session, holder, held, digits)
                        digits, timeout = "", None
                        continue
                    holder.play("congestion" if not digits else "special_information")
                    timeout = None
                    continue
                channel, event = item
                if channel is held and event.kind in (EventKind.ON_HOOK, EventKind.FAR_END_CLEARED):
                    session.draft.ended(
                        Disposition.ANSWERED, HangupSide.CALLEE, "held_party_cleared"
                    )
                    return False
                if channel is consulted and event.kind == EventKind.ON_HOOK:
                    consulted = await self._drop_consulted(session, consulted)
                    break
                if channel is not holder:
                    continue
                if event.kind == EventKind.FLASH:
                    break
                if event.kind == EventKind.ON_HOOK:
                    if consulted is not None:
                        consulted = await self._drop_consulted(session, consulted)
                    return await self._recall(session, holder, held)
                if (
                    event.kind == EventKind.DIGIT
                    and consulted is None
                    and holder.state == LegState.DIALLING
                ):
                    holder.stop_sound()
                    digits += event.value
                    state = self.dialplan.match(digits).state
                    if state == MatchState.COMPLETE:
                        consulted = await self._consult_call(session, holder, held, digits)
                        digits, timeout = "", None
                    elif state == MatchState.NO_MATCH:
                        holder.play("special_information")
                        timeout = None
                    else:
                        timeout = self.config.timers.inter_digit_s
        finally:
            if consulted is not None:
                await self._drop_consulted(session, consulted)
        held.stop_sound()
        holder.stop_sound()
        holder.set_state(LegState.CONNECTED)
        held.set_state(LegState.CONNECTED)
        self._log_call(
            "call_retrieve", {"call": session.id, "holder": holder.name, "held": held.name}
        )
        return True

    async def _consult_call(
        self, session: CallSession, holder: Channel, held: Channel, digits: str
    ) -> Channel | None:
        """Ring an extension for consultation; internal numbers only until transfer exists."""
        plan = self.dialplan.route(self.config.extension(holder.number), digits)
        callee = (
            self.extension_channel(plan.extension)
            if plan.kind == RouteKind.INTERNAL and plan.extension
            else None
        )
        if (
            callee is None
            or callee in (holder, held)
            or callee.state != LegState.IDLE
            or not callee.in_service
        ):
            holder.play("busy" if callee is not None else "special_information")
            holder.set_state(LegState.CALLING)
            return None
        draft = RecordDraft(
            Direction.INTERNAL,
            caller_number=holder.number,
            caller_name=holder.display_name,
            dialled=digits,
            called_extension=callee.number,
            destination_kind="internal",
            cause="consultation",
        )
        session.drafts.append(draft)
        self._claim(session, callee)
        callee.set_state(LegState.ALERTING)
        await callee.alert(CallerId(holder.number, holder.display_name))
        holder.set_state(LegState.CALLING)
        holder.play("ringback")
        while True:
            item = await self._wait(session, self.config.timers.ring_timeout_s)
            if item is None:
                draft.ended(Disposition.NO_ANSWER, HangupSide.SYSTEM, "no_answer")
                await self._drop_consulted(session, callee)
                holder.play("congestion")
                return None
            channel, event = item
            if channel is callee and event.kind == EventKind.OFF_HOOK:
                draft.answered(callee.number)
                holder.stop_sound()
                callee.set_state(LegState.CONNECTED)
                holder.set_state(LegState.CONNECTED)
                assert holder.slot is not None and callee.slot is not None
                self.mixer.connect(holder.slot, callee.slot)
                return callee
            # The holder or the held party did something (flash, hang-up): the outer loop
            # decides, and the consulted phone keeps ringing until it is dropped there.
            if channel is holder or channel is held:
                session.queue.put_nowait(item)
                draft.ended(Disposition.ABANDONED, HangupSide.CALLER, "consultation_abandoned")
                return callee

    async def _drop_consulted(self, session: CallSession, consulted: Channel) -> None:
        for draft in session.drafts[1:]:
            if draft.called_extension == consulted.number:
                draft.ended(
                    Disposition.ANSWERED if draft.answer else Disposition.ABANDONED,
                    HangupSide.CALLER,
                    "consultation_ended",
                )
        await self._give_back(session, consulted, "busy")
        return None

    def _shown_for(self, session: CallSession, party: Channel) -> CallerId:
        """Who `party` is to a person: an extension by itself, a line by the caller behind it."""
        draft = session.draft
        if party.role == Role.EXTENSION or draft is None:
            return CallerId(party.number, party.display_name)
        if draft.direction == Direction.INCOMING:
            return CallerId(draft.caller_number, draft.caller_name)
        return CallerId(draft.dialled, party.display_name)

    async def _recall(self, session: CallSession, holder: Channel, held: Channel) -> bool:
        """The holder hung up with someone on hold: ring the holder back."""
        holder.stop_sound()
        holder.set_state(LegState.IDLE)
        self._claim(session, holder)
        self._log_call(
            "call_recall", {"call": session.id, "holder": holder.name, "held": held.name}
        )
        answered = await self._ring(
            session,
            held,
            [holder],
            self._shown_for(session, held),
            self.config.timers.ring_timeout_s,
            ringback=False,
        )
        if answered is None:
            session.draft.ended(Disposition.ANSWERED, HangupSide.SYSTEM, "recall_not_answered")
            return False
        held.stop_sound()
        held.set_state(LegState.CONNECTED)
        holder.set_state(LegState.CONNECTED)
        return True

    # ----- incoming on a line ------------------------------------------------------------

    def _incoming(self, line: Channel):
        async def run(session: CallSession) -> None:
            line.set_state(LegState.ALERTING)
            line_config = next(lc for lc in self.config.lines if lc.name == line.number)
            draft = RecordDraft(
                Direction.INCOMING, line=line.number, line_group=line_config.group,
                account_code=account_codes.account_for_did(self.config, line.number),
                mode=self._mode_now(),
            )  # fmt: skip
            session.drafts.append(draft)
            caller = await self._await_caller_id(session, line)
            draft.caller_number, draft.caller_name = caller.number, caller.name
            if len(line_config.incoming) == 1 and is_node_name(line_config.incoming[0]):
                self._log_call("call_incoming", {"call": session.id, "line": line.number,
                                                 "caller": caller.number, "node": line_config.incoming[0]})  # fmt: skip
                await self._to_node(session, line, line_config.incoming[0], caller)
            free = self._ringable(line_config.incoming)
            draft.called_extension = line_config.incoming[0] if line_config.incoming else None
            self._log_call(
                "call_incoming",
                {
                    "call": session.id,
                    "line": line.number,
                    "caller": caller.number,
                    "ringing": ",".join(t.number for t in free),
                },
            )
            if not free:
                await self._wait_until_caller_leaves(session, line)
                draft.ended(Disposition.BUSY, HangupSide.CALLER, "all_busy")
                raise CallEnded
            answered = await self._ring(session, line, free, caller, None)
            assert answered is not None
            await line.seize()
            draft.answered(answered.number)
            await self._connected(session, line, answered)

        return run

    async def _await_caller_id(self, session: CallSession, line: Channel) -> CallerId:
        """Caller ID comes between the first and second ring (ETSI): wait for it briefly."""
        loop = asyncio.get_running_loop()
        early = self._early_caller_id.pop(line.name, None)
        if early is not None and loop.time() - early[0] < _EARLY_CALLER_ID_S:
            return early[1]
        deadline = loop.time() + _CALLER_ID_WAIT_S
        rings = 1
        while True:
            item = await self._wait(session, max(deadline - loop.time(), 0))
            if item is None:
                return CallerId("", "")
            channel, event = item
            if channel is not line:
                continue
            if event.kind == EventKind.CALLER_ID and event.caller is not None:
                return event.caller
            if event.kind == EventKind.RING_START:
                rings += 1
                if rings >= 2:
                    return CallerId("", "")

    async def _wait_until_caller_leaves(self, session: CallSession, line: Channel) -> None:
        gone = self.config.timers.fxo_ring_gone_s
        while await self._wait(session, gone) is not None:
            pass

    def _send_after_answer(self, session: CallSession, line: Channel) -> None:
        assert session.after_answer is not None
        digits, delay = session.after_answer
        session.after_answer = None
        self._relay_digits(session, line, digits, delay)

    def _relay_digits(self, session: CallSession, to: Channel, digits: str, delay: float = 0.0) -> None:
        """Send DTMF to `to` in order (each relay waits for the one before), off the call loop.

        At most `_MAX_PENDING_RELAYS` wait: a far end sending digits faster than they can
        be played loses the excess (logged) instead of growing a backlog for the whole call."""
        if session.relays_pending >= _MAX_PENDING_RELAYS:
            log.warning("event=dtmf_relay_dropped call=%d to=%s digits=%s", session.id, to.name, digits)
            return
        session.relays_pending += 1
        previous = session.relay

        async def send() -> None:
            try:
                if previous is not None:
                    await asyncio.gather(previous, return_exceptions=True)
                if delay:
                    await asyncio.sleep(delay)
                if session.owns(to):
                    await to.send_digits(digits)
            finally:
                session.relays_pending -= 1

        task = asyncio.get_running_loop().create_task(send(), name=f"dtmf-{session.id}")
        session.relay = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- status ------------------------------------------------------------------------

    def calls_summary(self) -> list[dict[str, object]]:
        return [session.summary() for session in self.sessions.values()]

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for timer in self._lockout_timers.values():
            timer.cancel()
        self._lockout_timers.clear()
        for name, service in list(self.features.items()):
            close = getattr(service, "close", None)
            if close is None:
                continue
            try:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("event=feature_close_failed feature=%s", name)
        self.features.clear()

    @property
    def task_count(self) -> int:
        return len(self._tasks)
