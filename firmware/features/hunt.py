"""The hunt-group node kind: several members answer one number; see docs/routing.md.

Strategies:
- simultaneous: every available member rings until one answers or the group times out;
- sequential: the members in the configured order, `ring_s` each, round again until the
  group's `timeout_s`;
- circular: the same, starting after the member who answered the group last (kept in
  SQLite by `hunt_memory`, so the turn survives a restart).

A busy, lifted, out-of-service or do-not-disturb member is skipped at once; so is one with
no free trunk. A round in which no member could ring ends the hunt at once: waiting would
only keep the caller listening to ringback that nobody hears. Unanswered, the caller goes
on to `then` ("" = the runner's "cannot be answered now" announcement). Meanwhile the
caller hears ringback, or music (the call is answered first, as a queue does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.channel import Channel, EventKind, Role
from firmware.calls.lifecycle import LegState
from firmware.calls.session import CallEnded
from firmware.config.hunt_schema import HuntGroupNode
from firmware.features.context import NodeContext
from firmware.features.hunt_members import MemberOffers, Offer
from firmware.features.hunt_memory import HuntMemory, memory_of

log = logging.getLogger("firmware.features")


async def run(ctx: NodeContext, node: HuntGroupNode) -> str:
    """Hunt for a member to answer; answered: connected (never returns), else `node.then`."""
    draft = ctx.draft
    if draft.called_extension is None:
        draft.called_extension = node.members[0]
    memory = memory_of(ctx.calls.features, ctx.calls.data_dir)
    order = await member_order(node, memory)
    log.info("event=hunt_start call=%d node=%s strategy=%s order=%s",
             ctx.session.id, node.name, node.strategy, ",".join(order))  # fmt: skip
    hunt = _Hunt(ctx, node)
    await hunt.caller_waits()
    answered = await hunt.run(order)
    if answered is None:
        ctx.stop_sound()
        log.info("event=hunt_unanswered call=%d node=%s then=%s",
                 ctx.session.id, node.name, node.then or "-")  # fmt: skip
        return node.then
    offer, channel = answered
    log.info("event=hunt_answered call=%d node=%s member=%s leg=%s",
             ctx.session.id, node.name, offer.member, channel.name)  # fmt: skip
    if node.strategy == "circular":
        await memory.remember(node.name, offer.member)
    await _connect(ctx, offer, channel)
    return node.then  # not reached: _connect ends the call


async def member_order(node: HuntGroupNode, memory: HuntMemory) -> list[str]:
    """The order members are tried in: as configured, or (circular) after the last to answer."""
    members = list(node.members)
    if node.strategy != "circular":
        return members
    last = await memory.last(node.name)
    start = members.index(last) + 1 if last in members else 0
    return members[start:] + members[:start]


class _Hunt:
    """One call's hunt: the offers, the group's deadline, and the caller meanwhile."""

    def __init__(self, ctx: NodeContext, node: HuntGroupNode) -> None:
        self.ctx = ctx
        self.node = node
        self.offers = MemberOffers(ctx, node.name)
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + node.timeout_s
        self.last_ring = self.loop.time()

    async def caller_waits(self) -> None:
        """Ringback (a phone hears it from us, a SIP caller gets 180), or music once answered."""
        ctx, caller = self.ctx, self.ctx.caller
        if self.node.caller_hears == "music":
            await ctx.answer()
        if caller.role == Role.EXTENSION and caller.state == LegState.DIALLING:
            caller.set_state(LegState.CALLING)
        if self.node.caller_hears == "music":
            ctx.play(f"music:{self.node.music}")
        elif caller.role == Role.EXTENSION or caller.state == LegState.CONNECTED:
            ctx.play("ringback")  # a caller already answered (by a menu) hears it in-band
        else:
            await caller.indicate_ringing()

    async def run(self, order: list[str]) -> tuple[Offer, Channel] | None:
        answered: Channel | None = None
        try:
            if self.node.strategy == "simultaneous":
                answered = await self._simultaneous(order)
            else:
                answered = await self._in_turn(order)
            offer = self.offers.offer_of(answered) if answered is not None else None
        finally:
            await self.offers.stop_all(keep=answered)
        return (offer, answered) if offer is not None and answered is not None else None

    async def _simultaneous(self, order: list[str]) -> Channel | None:
        for member in order:
            await self.offers.offer(member, simultaneous=True)
        return await self._wait_for_answer(lambda: self.deadline)

    async def _in_turn(self, order: list[str]) -> Channel | None:
        """Each member for `ring_s`, round after round until the group's timeout. A round in
        which nobody rang out (all skipped, or all declined at once) ends the hunt."""
        position, rang_out = 0, False
        while self.loop.time() < self.deadline:
            if position == len(order):
                if not rang_out:
                    return None
                position, rang_out = 0, False
            member = order[position]
            position += 1
            offer = await self.offers.offer(member, simultaneous=False)
            if offer is None:
                continue
            answered = await self._wait_for_answer(lambda offer=offer: self._member_until(offer))
            if answered is not None:
                return answered
            rang_out = rang_out or bool(self.offers.live)
            await self.offers.stop_all()
        return None

    def _member_until(self, offer: Offer) -> float:
        """A member rings `ring_s` from when it rings (a line: from when it is dialled)."""
        if offer.ringing_since is None:
            return self.deadline
        return min(self.deadline, offer.ringing_since + self.node.ring_s)

    async def _wait_for_answer(self, until: Callable[[], float]) -> Channel | None:
        """Events until a member answers (its leg), every offer is gone or `until()` passes.

        The caller hanging up ends the call (NodeContext.next_event); a city caller giving
        up shows only as its ringing no longer coming."""
        ctx, caller = self.ctx, self.ctx.caller
        ring_gone = ctx.config.timers.fxo_ring_gone_s
        while self.offers.live:
            now = self.loop.time()
            end = until()
            if now >= end:
                return None
            waits = [end - now]
            due = self.offers.next_due()
            if due is not None:
                waits.append(due - now)
            watch_ringing = caller.rings_until_abandoned and caller.state == LegState.ALERTING
            if watch_ringing:
                waits.append(self.last_ring + ring_gone - now)
            item = await ctx.next_event(max(min(waits), 0.0))
            now = self.loop.time()
            if item is None:
                if watch_ringing and now - self.last_ring >= ring_gone:
                    ctx.draft.ended(Disposition.ABANDONED, HangupSide.CALLER, "caller_gave_up")
                    raise CallEnded
                await self.offers.expire(now)
                continue
            channel, event = item
            if channel is caller:
                if event.kind in (EventKind.RING_START, EventKind.RING_STOP):
                    self.last_ring = now
                continue
            answered = await self.offers.handle(channel, event)
            if answered is not None:
                return answered
        return None


async def _connect(ctx: NodeContext, offer: Offer, channel: Channel) -> None:
    """Caller and the answering member talk; the record says who answered (the extension,
    or the member's digits for an outside number, whose leg the call then is)."""
    draft = ctx.draft
    if offer.external:
        draft.line, draft.line_group = offer.trunk, offer.line_group
        if not offer.sibling:
            draft.direction = Direction.OUTGOING  # as an external node: the leg that costs
            draft.external_number = offer.number
    ctx.stop_sound()
    caller = ctx.caller
    if caller.role == Role.LINE or caller.technology == "sip":
        await caller.seize()
    draft.answered(offer.extension or offer.member)
    await ctx.calls._connected(ctx.session, caller, channel)
    raise CallEnded
