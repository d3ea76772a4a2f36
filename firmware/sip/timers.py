"""SIP transaction timers: RFC 3261 Table 4 (plus RFC 6026's L and M) and a deadline heap.

Sans-I/O: a deadline is a float of whatever clock the caller passes as `now`; nothing here
reads a clock or sleeps.  The transaction layer keeps every timer of every transaction on one
TimerHeap, so the asyncio shell needs a single wake-up: `next_deadline()`.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar


class Timer(StrEnum):
    """RFC 3261's own timer names, so traces and tests read like the RFC."""

    A = "A"  # INVITE request retransmission (unreliable transports only)
    B = "B"  # INVITE client transaction timeout
    D = "D"  # INVITE client: wait for response retransmissions after a non-2xx
    E = "E"  # non-INVITE request retransmission (unreliable transports only)
    F = "F"  # non-INVITE client transaction timeout
    G = "G"  # INVITE server: non-2xx response retransmission (unreliable only)
    H = "H"  # INVITE server: wait for the ACK
    I = "I"  # INVITE server: absorb ACK retransmissions  # noqa: E741 - the RFC's name
    J = "J"  # non-INVITE server: absorb request retransmissions
    K = "K"  # non-INVITE client: absorb response retransmissions
    L = "L"  # RFC 6026 INVITE server Accepted: absorb INVITE retransmissions
    M = "M"  # RFC 6026 INVITE client Accepted: pass 2xx retransmissions to the TU
    TRYING = "Trying"  # §17.2.1: the INVITE server sends 100 itself if the TU is silent 200 ms


# Timers that retransmit: they start at T1 and are not used at all on reliable transports.
RETRANSMISSION_TIMERS = frozenset({Timer.A, Timer.E, Timer.G})


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1, T2, T4 and the durations derived from them (RFC 3261 §17.1.1.1, Table 4).

    Defaults are the RFC's.  A site on a slow or lossy link may raise T1 (every 64*T1
    timeout scales with it); tests shrink nothing, they drive a fake clock instead.
    """

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # longest retransmission interval: non-INVITE requests, INVITE responses
    t4: float = 5.0  # longest time a message stays in the network
    timer_d: float = 32.0  # "at least 32 seconds" for unreliable transports
    trying_delay: float = 0.2  # §17.2.1's 200 ms before an automatic 100 Trying
    _unreliable: dict[Timer, float] = field(init=False, repr=False, compare=False)
    _reliable: dict[Timer, float | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("t1", "t2", "t4", "trying_delay"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.t2 < self.t1:
            raise ValueError(f"t2 ({self.t2}) must not be shorter than t1 ({self.t1})")
        if self.timer_d < 0:
            raise ValueError(f"timer_d must not be negative, got {self.timer_d}")
        transaction_timeout = 64 * self.t1
        unreliable: dict[Timer, float] = {
            Timer.A: self.t1,
            Timer.B: transaction_timeout,
            Timer.D: self.timer_d,
            Timer.E: self.t1,
            Timer.F: transaction_timeout,
            Timer.G: self.t1,
            Timer.H: transaction_timeout,
            Timer.I: self.t4,
            Timer.J: transaction_timeout,
            Timer.K: self.t4,
            Timer.L: transaction_timeout,
            Timer.M: transaction_timeout,
            Timer.TRYING: self.trying_delay,
        }
        # Reliable transports: no retransmissions, and D, I, J, K are zero (they only exist to
        # absorb retransmissions, which a reliable transport never delivers).
        reliable: dict[Timer, float | None] = {
            **unreliable,
            Timer.A: None,
            Timer.E: None,
            Timer.G: None,
            Timer.D: 0.0,
            Timer.I: 0.0,
            Timer.J: 0.0,
            Timer.K: 0.0,
        }
        object.__setattr__(self, "_unreliable", unreliable)
        object.__setattr__(self, "_reliable", reliable)

    def duration(self, timer: Timer, *, reliable: bool) -> float | None:
        """Initial duration of `timer`; None when the timer is not used on this transport."""
        return self._reliable[timer] if reliable else self._unreliable[timer]


T = TypeVar("T")


class TimerHandle(Generic[T]):
    """One scheduled deadline; cancelling it is O(1) (the heap drops it lazily)."""

    __slots__ = ("at", "cancelled", "payload")

    def __init__(self, at: float, payload: T) -> None:
        self.at = at
        self.payload = payload
        self.cancelled = False


class TimerHeap(Generic[T]):
    """Deadlines in a binary heap with lazy cancellation, like asyncio's own scheduler.

    Cancelled entries stay in the heap until they reach the top or until they outnumber the
    live ones, when the heap is rebuilt; that keeps cancel O(1) and the heap small.
    """

    _COMPACT_AT_LEAST = 64

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle[T]]] = []
        self._sequence = itertools.count()  # ties fire in scheduling order
        self._cancelled_in_heap = 0

    def schedule(self, at: float, payload: T) -> TimerHandle[T]:
        handle = TimerHandle(at, payload)
        heapq.heappush(self._heap, (at, next(self._sequence), handle))
        return handle

    def cancel(self, handle: TimerHandle[T]) -> None:
        if handle.cancelled:
            return
        handle.cancelled = True
        self._cancelled_in_heap += 1
        if self._cancelled_in_heap >= self._COMPACT_AT_LEAST and self._cancelled_in_heap * 2 > len(
            self._heap
        ):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled_in_heap = 0

    def next_deadline(self) -> float | None:
        self._drop_cancelled_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> T | None:
        """The payload of the earliest live deadline at or before `now`, or None.

        One at a time, so that firing one timer can still cancel another that is also due.
        """
        self._drop_cancelled_top()
        if not self._heap or self._heap[0][0] > now:
            return None
        handle = heapq.heappop(self._heap)[2]
        handle.cancelled = True  # fired: a later cancel() is a no-op, not a miscount
        return handle.payload

    def __len__(self) -> int:
        """Live (not cancelled, not fired) deadlines."""
        return len(self._heap) - self._cancelled_in_heap

    def _drop_cancelled_top(self) -> None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled_in_heap -= 1
