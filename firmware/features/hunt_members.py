"""Offering a hunt-group call to one member, whatever the member is.

A member is digits as an extension would dial them, routed with the installer's authority:
- an extension: its idle desk phone and its registered SIP phones ring (a busy, lifted,
  out-of-service or do-not-disturb phone is left out; none left: skipped at once);
- a sibling office's extension: an outgoing SIP leg to that office (INVITE, 180, 200);
- an outside number: the first usable trunk of its route. A SIP trunk rings like a sibling.
  A city line is seized and dialled: with `answer_supervision = "polarity"` it counts as
  answered when the exchange reverses polarity; without it an analogue line cannot tell a
  ringing far end from an answered one, so the member counts as answered as soon as the
  number is dialled (the caller is put through and hears the far end ring). Such a line
  is never used for simultaneous ringing, where it would end everyone else's ringing.

`MemberOffers` keeps the offers of one call, turns their legs' events into "answered" or
"dropped", and gives every leg back when the offers end. Legs are claimed by the call's
session, so their events arrive in its one queue.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum

from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.dialplan import RouteKind, RoutePlan
from firmware.calls.lifecycle import LegState
from firmware.calls.routes import TrunkKind
from firmware.features.context import NodeContext

log = logging.getLogger("firmware.features")

_FIXED_DIAL_DELAY_S = 1.0  # a line without dial-tone detection is dialled after this
_DIAL_DONE_WAIT_S = 60.0


class OfferKind(StrEnum):
    PHONES = "phones"  # an extension's phones, alerted
    SIP = "sip"  # an outgoing SIP leg (trunk or sibling office)
    LINE = "line"  # a city line, seized and dialled


class LineStage(StrEnum):
    DIAL_TONE = "dial_tone"  # seized, waiting for the exchange's dial tone (or a fixed delay)
    DIALLING = "dialling"  # the card is dialling
    RINGING = "ringing"  # dialled; waiting for the polarity reversal that means answered


@dataclass
class Offer:
    """One member being offered the call, and the legs that ring for it."""

    member: str
    kind: OfferKind
    channels: list[Channel]
    extension: str | None = None  # an internal member's extension
    trunk: str = ""  # the line, SIP peer or "sibling:NAME" an external member is called on
    line_group: str | None = None
    number: str = ""  # what the trunk was asked to call
    sibling: bool = False
    # City lines only.
    stage: LineStage = LineStage.RINGING
    due: float | None = None  # when the current stage gives up (or, without detection, dials)
    waits_for_dial_tone: bool = False
    polarity: bool = False
    # When the member started ringing (a line: once dialled); None: not yet.
    ringing_since: float | None = None

    @property
    def external(self) -> bool:
        return self.kind != OfferKind.PHONES


def _now() -> float:
    return asyncio.get_running_loop().time()


def do_not_disturb(channel: Channel) -> bool:
    """A phone whose user asked not to be disturbed (honoured once a DND feature sets it)."""
    return bool(getattr(channel, "do_not_disturb", False))


class MemberOffers:
    """The live offers of one hunt call."""

    def __init__(self, ctx: NodeContext, node_name: str) -> None:
        self.ctx = ctx
        self.node_name = node_name
        self.live: list[Offer] = []

    # ----- starting ----------------------------------------------------------------------

    async def offer(self, member: str, *, simultaneous: bool) -> Offer | None:
        """Start ringing `member`; None when it is skipped at once (busy, DND, no trunk...)."""
        plan = self.ctx.calls.dialplan.route(None, member, unrestricted=True)
        if plan.kind == RouteKind.INTERNAL and plan.extension:
            offer = await self._phones(member, plan.extension)
        elif plan.kind == RouteKind.SIBLING:
            offer = await self._sibling(member, plan)
        elif plan.kind == RouteKind.OUTSIDE:
            offer = await self._outside(member, plan, simultaneous)
        else:
            self._skipped(member, f"unroutable:{plan.kind}")
            return None
        if offer is not None:
            self.live.append(offer)
            self._log("hunt_offer", offer.member, kind=offer.kind,
                      legs=",".join(channel.name for channel in offer.channels))  # fmt: skip
        return offer

    async def _phones(self, member: str, extension: str) -> Offer | None:
        taken = {channel.name for offer in self.live for channel in offer.channels}
        ringable = self.ctx.ringable([extension])
        willing = [channel for channel in ringable if not do_not_disturb(channel)]
        channels = [channel for channel in willing if channel.name not in taken]
        if not channels:
            reason = "already_ringing" if willing else "do_not_disturb" if ringable else "busy"
            self._skipped(member, reason)
            return None
        calls, session = self.ctx.calls, self.ctx.session
        for channel in channels:
            calls._claim(session, channel)
            channel.set_state(LegState.ALERTING)
            await channel.alert(self.ctx.shown)
        return Offer(member, OfferKind.PHONES, channels, extension=extension, ringing_since=_now())

    async def _sibling(self, member: str, plan: RoutePlan) -> Offer | None:
        calls = self.ctx.calls
        site = calls.config.sibling_site(plan.site or "")
        name = f"sibling:{plan.site}"
        if site is None or not site.host or not calls._trunk_up(name):
            self._skipped(member, "sibling_unreachable")
            return None
        draft = self.ctx.draft
        draft.correlation_id = draft.correlation_id or uuid.uuid4().hex
        return await self._sip(member, name, plan.dialled, None, sibling=True)

    async def _outside(self, member: str, plan: RoutePlan, simultaneous: bool) -> Offer | None:
        calls = self.ctx.calls
        reason = "no_trunk"
        for attempt in calls.routes.attempts(plan):
            if attempt.kind == TrunkKind.LINES:
                found = calls._free_line((attempt.name,))
                if found is None:
                    reason = "no_free_line"
                    continue
                line_config = next(lc for lc in calls.config.lines if lc.name == found[0].number)
                polarity = line_config.answer_supervision == "polarity"
                if simultaneous and not polarity:
                    reason = "line_cannot_report_answer"
                    continue
                return await self._line(member, found[0], attempt.group, attempt.number,
                                        line_config.wait_for_dial_tone, polarity)  # fmt: skip
            if not calls._trunk_up(attempt.name):
                reason = "trunk_down"
                continue
            offer = await self._sip(member, attempt.name, attempt.number, attempt.group or None)
            if offer is not None:
                return offer
            reason = "no_free_channel"
        self._skipped(member, reason)
        return None

    async def _sip(
        self, member: str, trunk: str, number: str, group: str | None, *, sibling: bool = False
    ) -> Offer | None:
        calls, session = self.ctx.calls, self.ctx.session
        out = calls.outbound_leg(trunk) if calls.outbound_leg is not None else None
        if out is None:
            if sibling:
                self._skipped(member, "sibling_unreachable")
            return None
        if sibling:
            out.correlation_id = self.ctx.draft.correlation_id  # type: ignore[attr-defined]
        out.handler = calls._on_event
        calls._claim(session, out)
        out.set_state(LegState.DIALLING)
        offer = Offer(member, OfferKind.SIP, [out], trunk=trunk, line_group=group, number=number,
                      sibling=sibling, ringing_since=_now())  # fmt: skip
        try:
            await out.dial(number, self.ctx.shown)
        except ValueError as error:  # a number the trunk cannot carry ('#' in a SIP URI)
            log.warning("event=hunt_member_dial_failed call=%d node=%s member=%s trunk=%s error=%r",
                        session.id, self.node_name, member, trunk, str(error))  # fmt: skip
            await calls._give_back(session, out, "busy")
            return None
        return offer

    async def _line(
        self, member: str, line: Channel, group: str, number: str, wait_tone: bool, polarity: bool
    ) -> Offer:
        calls, session = self.ctx.calls, self.ctx.session
        calls._claim(session, line)
        line.set_state(LegState.DIALLING)
        await line.seize()
        timers = calls.config.timers
        if wait_tone:
            listen = getattr(line, "listen_for_dial_tone", None)
            if listen is not None:
                listen()
        wait = timers.fxo_dial_tone_wait_s if wait_tone else _FIXED_DIAL_DELAY_S
        return Offer(member, OfferKind.LINE, [line], trunk=line.number, line_group=group,
                     number=number, stage=LineStage.DIAL_TONE, due=_now() + wait,
                     waits_for_dial_tone=wait_tone, polarity=polarity)  # fmt: skip

    # ----- events ------------------------------------------------------------------------

    def offer_of(self, channel: Channel) -> Offer | None:
        return next((offer for offer in self.live if channel in offer.channels), None)

    async def handle(self, channel: Channel, event: ChannelEvent) -> Channel | None:
        """Feed one event of a member's leg; returns the leg that answered, if it did."""
        offer = self.offer_of(channel)
        if offer is None:
            return None  # a leg given back a moment ago: its news is stale
        kind = event.kind
        if kind == EventKind.FAR_END_CLEARED:
            await self._drop_channel(offer, channel, f"declined:{event.value or 'failed'}")
            return None
        if offer.kind == OfferKind.PHONES and kind in (EventKind.OFF_HOOK, EventKind.ANSWERED):
            return channel  # one of the extension's phones: its others stop with the rest
        if offer.kind == OfferKind.SIP:
            if kind == EventKind.RINGING:
                self._log("hunt_member_ringing", offer.member)
            return channel if kind == EventKind.ANSWERED else None
        if offer.kind == OfferKind.LINE and await self._line_event(offer, channel, kind):
            return channel
        return None

    async def _line_event(self, offer: Offer, line: Channel, kind: EventKind) -> bool:
        """A line member's progress; True when it counts as answered."""
        if kind == EventKind.DIAL_TONE and offer.stage == LineStage.DIAL_TONE:
            await self._dial_line(offer, line)
        elif kind == EventKind.DIAL_DONE and offer.stage == LineStage.DIALLING:
            offer.ringing_since = _now()
            if not offer.polarity:
                return True  # an analogue line tells nothing more: put through now
            offer.stage, offer.due = LineStage.RINGING, None
            line.awaiting_answer = True  # type: ignore[attr-defined]
        elif kind == EventKind.ANSWERED and offer.stage == LineStage.RINGING:
            return True
        return False

    async def _dial_line(self, offer: Offer, line: Channel) -> None:
        offer.stage = LineStage.DIALLING
        offer.due = _now() + _DIAL_DONE_WAIT_S
        await line.dial(offer.number)

    def next_due(self) -> float | None:
        dues = [offer.due for offer in self.live if offer.due is not None]
        return min(dues) if dues else None

    async def expire(self, now: float) -> None:
        """Line stages whose time is up: dial after the fixed delay, or give the member up."""
        for offer in [o for o in self.live if o.due is not None and o.due <= now]:
            line = offer.channels[0]
            if offer.stage == LineStage.DIAL_TONE and not offer.waits_for_dial_tone:
                await self._dial_line(offer, line)
            elif offer.stage == LineStage.DIAL_TONE:
                log.warning("event=no_dial_tone line=%s", line.name)
                await self._drop(offer, "no_dial_tone")
            else:
                await self._drop(offer, "dialling_failed")

    # ----- ending ------------------------------------------------------------------------

    async def _drop_channel(self, offer: Offer, channel: Channel, reason: str) -> None:
        """One leg declined or failed (SIP 486/603, a line dropped): the rest ring on."""
        offer.channels.remove(channel)
        await self.ctx.calls._give_back(self.ctx.session, channel, "busy")
        if not offer.channels:
            self.live.remove(offer)
            self._log("hunt_member_dropped", offer.member, reason=reason)

    async def _drop(self, offer: Offer, reason: str) -> None:
        self.live.remove(offer)
        for channel in offer.channels:
            await self.ctx.calls._give_back(self.ctx.session, channel, "busy")
        self._log("hunt_member_dropped", offer.member, reason=reason)

    async def stop_all(self, keep: Channel | None = None) -> None:
        """Every leg stops ringing and is given back, except `keep` (the one who answered)."""
        offers, self.live = self.live, []
        session = self.ctx.session
        for offer in offers:
            for channel in offer.channels:
                if channel is not keep and session.owns(channel):
                    await self.ctx.calls._give_back(session, channel, "busy")

    def _skipped(self, member: str, reason: str) -> None:
        self._log("hunt_member_skipped", member, reason=reason)

    def _log(self, event: str, member: str, **fields: object) -> None:
        extra = "".join(f" {key}={value}" for key, value in fields.items())
        log.info("event=%s call=%d node=%s member=%s%s",
                 event, self.ctx.session.id, self.node_name, member, extra)  # fmt: skip
