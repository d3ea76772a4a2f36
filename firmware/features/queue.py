"""The queue node kind: a caller waits with announcements and music for a free agent.

Each waiting caller is its own call coroutine running `QueueCall`: the call is answered,
the entry announcement plays, then music with a comfort announcement every
`comfort_every_s`; meanwhile, when the caller may be offered (see `QueueService`) and an
agent is free, agents ring by the queue's strategy while the caller keeps hearing the
music. The first agent to answer is connected. The queue full on arrival or `max_wait_s`
waited sends the caller to `overflow`; the leave key to `leave_to`. Every call's outcome
becomes a row of the queue statistics.

Agents are rung here rather than through the call manager's `_ring` because the caller's
keys and its announcements must keep working while an agent's phone rings.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from firmware.calls.channel import Channel, EventKind
from firmware.calls.lifecycle import LegState
from firmware.calls.session import CallEnded, utc_now
from firmware.config.queue_schema import QueueNode
from firmware.features import queue_codes
from firmware.features.context import NodeContext
from firmware.features.queue_service import QueueService, Waiter, queue_service
from firmware.features.queue_sounds import Announcements, Soundtrack
from firmware.features.queue_store import (
    ABANDONED,
    ANSWERED,
    LEFT,
    OVERFLOW_FULL,
    OVERFLOW_TIMEOUT,
    QueueCallRow,
)
from firmware.media.prompt_library import prompt_language
from firmware.media.prompts import sound_name

log = logging.getLogger("firmware.features")

POLL_S = 0.2  # how often a waiting caller looks for a free agent (agents free up silently)
_SOUND_POLL_S = 0.05  # how often a playing announcement is checked for its end
_MIN_WAIT_S = 0.02

__all__ = ["QueueCall", "queue_codes", "run"]  # queue_codes: registers the log-in feature codes


async def run(ctx: NodeContext, node: QueueNode) -> str:
    service = await queue_service(ctx.calls)
    return await QueueCall(ctx, node, service).run()


class QueueCall:
    """One caller's time in one queue."""

    def __init__(self, ctx: NodeContext, node: QueueNode, service: QueueService) -> None:
        self.ctx = ctx
        self.node = node
        self.service = service
        self.loop = asyncio.get_running_loop()
        self.arrival = self.loop.time()
        self.arrival_utc: datetime = utc_now()
        self.waiter: Waiter | None = None
        self.ringing: dict[Channel, str] = {}  # legs being rung -> their agent
        self.ring_until = 0.0
        self.tried: set[str] = set()  # agents rung without an answer in this pass
        leave_key = node.leave_key if node.announce_leave_key else None
        self.sentences = Announcements(
            prompt_language(ctx.config), node.entry_prompt, node.comfort_prompt,
            node.announce_position, node.announce_wait, leave_key,
        )  # fmt: skip
        self.soundtrack = Soundtrack(sound_name(node.music, music=True), node.comfort_every_s)

    @property
    def ring_all(self) -> bool:
        """Ring all: every free agent rings until one answers, agents coming free join in."""
        return self.node.strategy == "ring_all"

    @property
    def call_id(self) -> int:
        return self.ctx.session.id

    async def run(self) -> str:
        node, service = self.node, self.service
        if service.waiting_count(node.name) >= node.max_waiting:
            log.info("event=queue_overflow call=%d queue=%s reason=full waiting=%d",
                     self.call_id, node.name, service.waiting_count(node.name))  # fmt: skip
            self._record(OVERFLOW_FULL, waited_s=0.0)
            return node.overflow
        self.waiter = service.join(node.name, self.call_id)  # before any await: the count holds
        log.info("event=queue_join call=%d queue=%s position=%d", self.call_id, node.name,
                 service.position(self.waiter))  # fmt: skip
        try:
            await self.ctx.answer()
            return await self._wait()
        except CallEnded:
            if not self.waiter.done:
                self._record(ABANDONED)
            raise
        finally:
            service.release(list(self.ringing.values()))
            service.leave(self.waiter)

    # ----- the waiting loop -----------------------------------------------------------------

    async def _wait(self) -> str:
        node, ctx = self.node, self.ctx
        assert self.waiter is not None
        deadline = self.arrival + node.max_wait_s
        self.soundtrack.announce(self.sentences.entry(self._position(), self._expected_wait()))
        while True:
            now = self.loop.time()
            if now >= deadline:
                await self._stop_ringing()
                log.info("event=queue_overflow call=%d queue=%s reason=max_wait waited=%.1f",
                         self.call_id, node.name, now - self.arrival)  # fmt: skip
                self._finish(OVERFLOW_TIMEOUT)
                return node.overflow
            if self.ringing and not self.ring_all and now >= self.ring_until:
                log.info("event=queue_no_answer call=%d queue=%s agents=%s", self.call_id,
                         node.name, ",".join(sorted(set(self.ringing.values()))))  # fmt: skip
                await self._stop_ringing()
            self._sound(now)
            if (self.ring_all or not self.ringing) and self.service.may_ring(self.waiter, node):
                await self._offer()
            item = await ctx.next_event(self._timeout(now, deadline))
            if item is None:
                continue
            channel, event = item
            if channel is ctx.caller:
                if event.kind == EventKind.DIGIT and event.value == node.leave_key:
                    await self._stop_ringing()
                    log.info("event=queue_left call=%d queue=%s key=%s", self.call_id,
                             node.name, event.value)  # fmt: skip
                    self._finish(LEFT)
                    return node.leave_to
            elif channel in self.ringing:
                if event.kind in (EventKind.OFF_HOOK, EventKind.ANSWERED):
                    await self._answered(channel)
                elif event.kind == EventKind.FAR_END_CLEARED:
                    await self._declined(channel, event.value)

    def _timeout(self, now: float, deadline: float) -> float:
        waits = [deadline - now, self.soundtrack.wake_in(now, _SOUND_POLL_S)]
        waits.append(self.ring_until - now if self.ringing and not self.ring_all else POLL_S)
        return max(min(waits), _MIN_WAIT_S)

    def _sound(self, now: float) -> None:
        if self.soundtrack.due(now):
            self.soundtrack.announce(
                self.sentences.comfort(self._position(), self._expected_wait())
            )
        sound = self.soundtrack.step(now, self.ctx.is_playing())
        if sound is not None:
            self.ctx.play(sound)

    def _position(self) -> int:
        assert self.waiter is not None
        return self.service.position(self.waiter)

    def _expected_wait(self) -> float | None:
        return self.service.expected_wait.get(self.node.name)

    # ----- ringing agents -------------------------------------------------------------------

    async def _offer(self) -> None:
        """Ring the agent(s) the strategy picks, if any is free (ring all: those not
        ringing yet join the ones that are)."""
        service, node = self.service, self.node
        agents = service.choose(node, self.tried)
        if not agents and self.tried:
            self.tried.clear()  # everyone free was tried once: a new pass
            agents = service.choose(node, self.tried)
        if not agents:
            return
        calls, session = self.ctx.calls, self.ctx.session
        legs: dict[Channel, str] = {}
        for agent in agents:
            for leg in calls._ringable([agent]):
                legs[leg] = agent
        rung = set(legs.values())
        unreachable = [agent for agent in agents if agent not in rung]
        if unreachable:
            service.release(unreachable)
            self.tried.update(unreachable)
            log.warning("event=queue_agent_unreachable call=%d queue=%s agents=%s",
                        self.call_id, node.name, ",".join(unreachable))  # fmt: skip
        if not legs:
            return
        # Every leg is taken before the first await, so no other call can grab one meanwhile.
        for leg in legs:
            calls._claim(session, leg)
            leg.set_state(LegState.ALERTING)
        if not self.ringing:
            self.ring_until = self.loop.time() + node.agent_ring_s
        self.ringing.update(legs)
        assert self.waiter is not None
        self.waiter.ringing = True
        log.info("event=queue_offer call=%d queue=%s strategy=%s agents=%s", self.call_id,
                 node.name, node.strategy, ",".join(sorted(rung)))  # fmt: skip
        for leg in legs:
            if leg in self.ringing:  # not declined while an earlier one was alerted
                await leg.alert(self.ctx.shown)

    async def _stop_ringing(self, keep: Channel | None = None) -> None:
        """Stop every ringing leg but `keep`; their agents are free for other callers."""
        calls, session = self.ctx.calls, self.ctx.session
        ringing, self.ringing = self.ringing, {}
        if self.waiter is not None:
            self.waiter.ringing = False
        agents = sorted(set(ringing.values()))
        self.service.release(agents)
        if keep is None:
            self.tried.update(agents)
        for leg in ringing:
            if leg is keep or not session.owns(leg) or leg.state != LegState.ALERTING:
                continue
            await leg.stop_alert()
            calls._let_go(session, leg)
            leg.set_state(LegState.IDLE)
            if calls.is_off_hook(leg):  # lifted just as the call went elsewhere
                calls._to_clearing(leg, "busy")

    async def _declined(self, leg: Channel, cause: str) -> None:
        """A device that declined or failed (SIP 486, 603...): the others ring on."""
        agent = self.ringing.pop(leg)
        calls = self.ctx.calls
        calls._let_go(self.ctx.session, leg)
        await leg.release(cause)
        leg.set_state(LegState.IDLE)
        if agent not in self.ringing.values():
            self.service.release([agent])
            self.tried.add(agent)
        if not self.ringing and self.waiter is not None:
            self.waiter.ringing = False

    async def _answered(self, leg: Channel) -> None:
        """The agent behind `leg` answered: connect the caller (the call ends inside)."""
        agent = self.ringing[leg]
        await self._stop_ringing(keep=leg)
        waited = self.loop.time() - self.arrival
        self.service.answered(self.node, agent, waited)
        log.info("event=queue_answered call=%d queue=%s agent=%s waited=%.1f", self.call_id,
                 self.node.name, agent, waited)  # fmt: skip
        self._finish(ANSWERED, agent)
        try:
            await self.ctx.connect(leg)
        finally:
            self.service.call_ended(agent)

    # ----- outcomes -------------------------------------------------------------------------

    def _finish(self, outcome: str, agent: str | None = None) -> None:
        """The caller stops waiting: out of the queue, the music off, the outcome recorded."""
        assert self.waiter is not None
        self.service.leave(self.waiter)
        if outcome != ANSWERED:
            self.ctx.stop_sound()
        self._record(outcome, agent=agent)

    def _record(
        self, outcome: str, *, agent: str | None = None, waited_s: float | None = None
    ) -> None:
        waited = self.loop.time() - self.arrival if waited_s is None else waited_s
        self.service.record(QueueCallRow(
            self.node.name, self.ctx.shown.number, self.arrival_utc, outcome,
            round(waited * 1000), agent,
        ))  # fmt: skip
