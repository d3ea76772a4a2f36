"""The state every queue call shares: who waits where, and which agents may be offered a call.

One `QueueService` per call manager, in `calls.features["queues"]`, made on first use.
Waiting callers are kept per queue in arrival order (the head is offered first; a caller
further back may ring an agent only while everyone ahead of it is already ringing one).
An agent may be offered a call when logged in to that queue, idle (no call of any kind,
phone on hook), past the wrap-up time of its last queue call, and not being rung by
another queue caller.

Log-ins, answered counts, the end of each agent's last queue call and the round-robin
memory are kept in DATA_DIR/queues.sqlite3 through one database thread; the decisions
read only the in-memory copy, so nothing on the event loop waits for the disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from firmware.calls.channel import Role
from firmware.calls.lifecycle import LegState
from firmware.config.queue_schema import QueueNode
from firmware.features.queue_store import DB_NAME, QueueCallRow, QueueStore, StoredState
from firmware.features.queue_strategy import agent_order

if TYPE_CHECKING:
    from firmware.calls.control import CallManager

log = logging.getLogger("firmware.features")

FEATURE_KEY = "queues"
_WAIT_WEIGHT = 0.25  # weight of the newest answered wait in the expected-wait average


@dataclass(eq=False)
class Waiter:
    """One caller in a queue."""

    queue: str
    call: int
    ringing: bool = False  # an agent is being rung for this caller right now
    done: bool = False  # answered, or gone: no longer waiting


@dataclass
class _AgentCalls:
    day: str = ""
    count: int = 0


@dataclass
class QueueService:
    calls: CallManager
    store: QueueStore | None = None
    waiting: dict[str, list[Waiter]] = field(default_factory=dict)
    reserved: set[str] = field(default_factory=set)  # agents being rung by a queue caller
    logins: dict[tuple[str, str], bool] = field(default_factory=dict)
    last_end: dict[str, float] = field(default_factory=dict)  # agent -> epoch seconds
    last_answered: dict[str, str] = field(default_factory=dict)  # queue -> agent
    answered_calls: dict[tuple[str, str], _AgentCalls] = field(default_factory=dict)
    expected_wait: dict[str, float] = field(default_factory=dict)  # queue -> seconds
    store_failures: int = 0
    _executor: concurrent.futures.ThreadPoolExecutor | None = None
    _loaded: asyncio.Future[StoredState] | None = None
    _applied: bool = False

    # ----- start and persistence ------------------------------------------------------------

    async def ready(self) -> None:
        """Read the stored state once (callers arriving meanwhile wait for the same read).

        A database that cannot be read is logged once; the queues then run from defaults."""
        if self._applied:
            return
        if self._loaded is None:
            if self.store is None:
                self._applied = True
                return
            self._loaded = asyncio.wrap_future(self._submit(self._load, self.store))
        try:
            state = await asyncio.shield(self._loaded)
        except Exception as error:
            if not self._applied:
                self._applied = True
                self.store_failures += 1
                log.error("event=queue_store_failed op=load path=%s error=%r",
                          self.store.path if self.store else "-", str(error))  # fmt: skip
            return
        if not self._applied:
            self._applied = True
            self._apply(state)

    def _load(self, store: QueueStore) -> StoredState:
        """On the database thread: the stored state, and the site's time zone read from
        disk once (ZoneInfo caches it) so counting today's calls never reads it on the loop."""
        ZoneInfo(self.calls.config.site.timezone)
        return store.load()

    def _apply(self, state: StoredState) -> None:
        self.logins.update(state.logins)
        for agent, moment in state.last_end.items():
            self.last_end.setdefault(agent, moment)
        for queue, agent in state.last_answered.items():
            self.last_answered.setdefault(queue, agent)
        for key, (day, count) in state.calls_today.items():
            self.answered_calls.setdefault(key, _AgentCalls(day, count))
        for queue, waits in state.answered_waits.items():
            average: float | None = None
            for wait_ms in waits:
                average = _blend(average, wait_ms / 1000)
            if average is not None:
                self.expected_wait.setdefault(queue, average)

    def _submit(self, job: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="queue-db")
        return self._executor.submit(job, *args)

    def _persist(self, operation: str, job: Callable[[QueueStore], None]) -> None:
        """Run a store write on the database thread; a failure is logged and counted."""
        if self.store is None:
            return
        future = self._submit(job, self.store)

        def done(finished: concurrent.futures.Future[Any]) -> None:
            error = finished.exception()
            if error is not None:
                self.store_failures += 1
                log.error("event=queue_store_failed op=%s error=%r", operation, str(error))

        future.add_done_callback(done)

    async def flush(self) -> None:
        """Until every write asked for so far is done (tests, reports)."""
        if self._executor is not None:
            await asyncio.wrap_future(self._executor.submit(lambda: None))

    async def close(self) -> None:
        """At shutdown: finish the writes already asked for, then stop the database thread."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True)

    # ----- waiting callers ------------------------------------------------------------------

    def waiting_count(self, queue: str) -> int:
        return len(self.waiting.get(queue, ()))

    def join(self, queue: str, call: int) -> Waiter:
        waiter = Waiter(queue, call)
        self.waiting.setdefault(queue, []).append(waiter)
        return waiter

    def leave(self, waiter: Waiter) -> None:
        waiter.done = True
        waiter.ringing = False
        callers = self.waiting.get(waiter.queue, [])
        if waiter in callers:
            callers.remove(waiter)

    def position(self, waiter: Waiter) -> int:
        """1 for the head of the queue."""
        callers = self.waiting.get(waiter.queue, [])
        return callers.index(waiter) + 1 if waiter in callers else 1

    def may_ring(self, waiter: Waiter, node: QueueNode) -> bool:
        """The head may; with one agent at a time, a caller further back may too while all
        ahead are ringing an agent (ring all: every free agent is the head's)."""
        callers = self.waiting.get(waiter.queue, [])
        if node.strategy == "ring_all":
            return bool(callers) and callers[0] is waiter
        for other in callers:
            if other is waiter:
                return True
            if not other.ringing:
                return False
        return False

    # ----- agents ---------------------------------------------------------------------------

    def logged_in(self, node: QueueNode, agent: str) -> bool:
        return self.logins.get((node.name, agent), node.agents_start_logged_in)

    def set_logged_in(self, queue: str, agent: str, logged_in: bool) -> None:
        self.logins[(queue, agent)] = logged_in
        at = datetime.now(UTC)
        self._persist("login", lambda store: store.set_login(queue, agent, logged_in, at))

    def busy(self, agent: str) -> bool:
        """In a call of any kind (desk phone or a SIP phone of the extension), or off hook."""
        calls = self.calls
        desk = calls.extension_channel(agent)
        if (
            desk is not None
            and desk.in_service
            and (desk.state != LegState.IDLE or calls.is_off_hook(desk))
        ):
            return True
        return any(
            leg.role == Role.EXTENSION and leg.number == agent
            for session in calls.sessions.values()
            for leg in session.legs
        )

    def offerable(self, node: QueueNode, agent: str, now: float) -> bool:
        if agent in self.reserved or not self.logged_in(node, agent):
            return False
        if now < self.last_end.get(agent, -node.wrap_up_s) + node.wrap_up_s:
            return False
        return not self.busy(agent)

    def choose(self, node: QueueNode, tried: set[str]) -> list[str]:
        """The agents to ring now for a call of `node` (reserved until `release`): all free
        ones for ring_all, else the first free one by strategy not `tried` in this pass."""
        now = time.time()
        free = {agent for agent in node.agents if self.offerable(node, agent, now)}
        day = self._today()
        order = agent_order(
            node.strategy,
            node.agents,
            free,
            last_end=self.last_end,
            calls={
                agent: counted.count
                for (queue, agent), counted in self.answered_calls.items()
                if queue == node.name and counted.day == day
            },
            last_answered=self.last_answered.get(node.name),
        )
        if node.strategy != "ring_all":
            order = [agent for agent in order if agent not in tried][:1]
        self.reserved.update(order)
        return order

    def release(self, agents: list[str]) -> None:
        self.reserved.difference_update(agents)

    def answered(self, node: QueueNode, agent: str, waited_s: float) -> None:
        """`agent` took a call of `node`: counts, memory and the expected wait move on."""
        self.reserved.discard(agent)
        day = self._today()
        counted = self.answered_calls.setdefault((node.name, agent), _AgentCalls())
        if counted.day != day:
            counted.day, counted.count = day, 0
        counted.count += 1
        self.last_answered[node.name] = agent
        self.expected_wait[node.name] = _blend(self.expected_wait.get(node.name), waited_s)
        count = counted.count
        self._persist("answered", lambda store: store.agent_answered(node.name, agent, day, count))

    def call_ended(self, agent: str) -> None:
        """An agent's queue call is over: wrap-up starts, longest idle counts from now."""
        now = datetime.now(UTC)
        self.last_end[agent] = now.timestamp()
        self._persist("call_ended", lambda store: store.agent_call_ended(agent, now))

    # ----- statistics -----------------------------------------------------------------------

    def record(self, row: QueueCallRow) -> None:
        log.info(
            "event=queue_call queue=%s outcome=%s waited=%.1f agent=%s caller=%s",
            row.queue, row.outcome, row.wait_ms / 1000, row.agent or "-", row.caller or "-",
        )  # fmt: skip
        self._persist("record", lambda store: store.add_call(row))

    def _today(self) -> str:
        return datetime.now(ZoneInfo(self.calls.config.site.timezone)).date().isoformat()


def _blend(average: float | None, value: float) -> float:
    return value if average is None else average + _WAIT_WEIGHT * (value - average)


async def queue_service(calls: CallManager) -> QueueService:
    """The call manager's queue service, made (and its stored state read) on first use."""
    service = calls.features.get(FEATURE_KEY)
    if service is None:
        store = QueueStore(calls.data_dir / DB_NAME) if calls.data_dir is not None else None
        service = QueueService(calls, store)
        calls.features[FEATURE_KEY] = service
    await service.ready()
    return service
