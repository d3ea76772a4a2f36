"""SIP transactions, RFC 3261 §17 with RFC 6026's Accepted states, sans-I/O.

Four machines, each with one transition table in this file, and a TransactionLayer that
matches messages to them (§17.1.3, §17.2.3), creates server transactions, absorbs
retransmissions and runs every timer on one heap.  Nothing here opens a socket or reads a
clock: messages and `now` go in, actions come out.  The asyncio shell sends `Send` actions,
hands `Deliver*` actions to the transaction user (TU: the UA core / dialog layer), reports
send failures with `transport_error()`, and calls `poll(now)` at `next_deadline()`.

What this module needs from a message (the parser's class, or an adapter over it, must
provide these read-only attributes; see `SipMessage`):

    status       int for a response, None for a request
    method       request method, upper case                (read on requests only)
    cseq_method  method in the CSeq header field           (read on responses only)
    branch       branch parameter of the top Via, exactly as received
    sent_by      sent-by of the top Via, normalised by the adapter: host in lower case and
                 the port always written out ("10.0.0.5:5060"), so equal sent-bys compare equal

and two message builders injected into the layer, so this module never builds a message:

    build_ack(invite, response) -> ACK     §17.1.1.3: same Request-URI, Call-ID, From, CSeq
                                           number and top Via (same branch) as the INVITE,
                                           To (with tag) of the response, the INVITE's Route
    build_trying(invite) -> 100 response   §8.2.6.1: Via, From, To, Call-ID, CSeq copied,
                                           Timestamp echoed, no To tag needed

and, optionally, `freeze(message) -> what is kept to send it again` (default: the message
itself). A transaction that comes to rest (Completed, Confirmed, Accepted) only waits out its
timers (D, H, I, J, K, L, M: up to 64*T1) absorbing or resending copies, so from then on it
keeps its messages frozen: the shell keeps their bytes and drops the parsed form. At 100
calls a second that is thousands of transactions, and their parsed messages were most of
the objects the garbage collector had to walk. `freeze` must be idempotent, and what it
returns need only be sendable by the shell: nothing here reads a frozen message.

Deliberate extensions and interpretations (recorded so that nobody "fixes" them back):

- Both INVITE machines follow RFC 6026, the client too: it has Accepted with timer M, as the
  server has Accepted with L.  Without it, a 2xx retransmitted because our ACK was lost would match nothing and
  be dropped (RFC 6026 amends §18.1.2: unmatched responses are discarded), the UAS never gets
  an ACK, and it ends the call after 64*T1.
- Timer B is cancelled on leaving Calling (it only acts in Calling, §17.1.1.2), so an INVITE
  in Proceeding waits as long as the TU lets it: the TU bounds ringing with CANCEL and, if no
  final response follows within 64*T1 (§9.1), calls `abandon()`.
- A transport error in the INVITE server's Accepted state is reported to the TU and the
  transaction stays: the TU owns 2xx retransmission and decides whether to give up (BYE).
  RFC 6026 defines no transition for it.
- Zero-length timers (D, I, J, K on reliable transports) fire inside the same `handle()` call
  that starts them, so the transaction passes through its Completed/Confirmed state and is
  Terminated when the call returns.
- Illegal TU input (a response in the wrong state) raises IllegalTransition; unexpected
  network input and stale timers are absorbed, as §17 requires of a UDP element.

Not done here: RFC 2543 matching of requests whose branch lacks the z9hG4bK cookie (an
adapter can synthesise a branch from the 2543 fields), RFC 3262 reliable provisionals,
RFC 4320's non-INVITE 100 rules, stateless response sending (the TU may emit `Send` itself).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from firmware.sip.timers import (
    RETRANSMISSION_TIMERS,
    Timer,
    TimerHandle,
    TimerHeap,
    TimerSettings,
)

# --------------------------------------------------------------------------- the interface


class SipMessage(Protocol):
    """What a transaction reads from a message; everything else stays opaque."""

    @property
    def status(self) -> int | None: ...

    @property
    def method(self) -> str: ...

    @property
    def cseq_method(self) -> str: ...

    @property
    def branch(self) -> str: ...

    @property
    def sent_by(self) -> str: ...


BuildAck = Callable[[Any, Any], Any]  # (INVITE, non-2xx final response) -> ACK request
BuildTrying = Callable[[Any], Any]  # (INVITE) -> 100 Trying response
Freeze = Callable[[Any], Any]  # message -> what a resting transaction keeps to send it again
# Where a message goes or came from, as the transport shell names it, e.g. ("udp", host, port).
Address = Hashable


class IllegalTransition(RuntimeError):
    """The TU asked a transaction for something its state does not allow."""


class State(StrEnum):
    """RFC 3261 Figures 5-8 and RFC 6026 state names."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(StrEnum):
    """What a transition reacts to: the labels on the RFC's arrows."""

    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    REQUEST = "request retransmission"
    ACK = "ACK"
    TU_PROVISIONAL = "1xx from TU"
    TU_SUCCESS = "2xx from TU"
    TU_FAILURE = "300-699 from TU"
    TRANSPORT_ERROR = "transport error"
    ABANDON = "abandoned by TU"
    TIMER_A = "timer A"
    TIMER_B = "timer B"
    TIMER_D = "timer D"
    TIMER_E = "timer E"
    TIMER_F = "timer F"
    TIMER_G = "timer G"
    TIMER_H = "timer H"
    TIMER_I = "timer I"
    TIMER_J = "timer J"
    TIMER_K = "timer K"
    TIMER_L = "timer L"
    TIMER_M = "timer M"
    TIMER_TRYING = "timer Trying"


_TIMER_INPUT: dict[Timer, Input] = {timer: Input(f"timer {timer.value}") for timer in Timer}
# States in which a transaction only waits out a timer: its messages may be frozen.
_RESTING = frozenset({State.COMPLETED, State.CONFIRMED, State.ACCEPTED})
_TU_INPUTS = frozenset({Input.TU_PROVISIONAL, Input.TU_SUCCESS, Input.TU_FAILURE})


# --------------------------------------------------------------------------- events in


@dataclass(frozen=True, slots=True)
class Received:
    """A message from the network that the layer matched to this transaction."""

    message: Any


@dataclass(frozen=True, slots=True)
class SendResponse:
    """The TU hands a server transaction a response to send."""

    response: Any


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport could not send a message of this transaction."""


@dataclass(frozen=True, slots=True)
class Abandon:
    """The TU gives up on the transaction (shutdown, §9.1's CANCEL with no final response)."""


Event = Received | SendResponse | TimerFired | TransportError | Abandon


# --------------------------------------------------------------------------- actions out


@dataclass(frozen=True, slots=True)
class Send:
    transaction: Transaction
    message: Any
    destination: Address


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Arm (or re-arm) `timer` to fire at `at`; consumed by the layer, never seen by the shell."""

    transaction: Transaction
    timer: Timer
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    transaction: Transaction
    timer: Timer


@dataclass(frozen=True, slots=True)
class DeliverResponse:
    transaction: ClientTransaction
    response: Any


@dataclass(frozen=True, slots=True)
class DeliverRequest:
    """A new request for the TU (or an ACK; `transaction` is None for an ACK to a 2xx).

    For a CANCEL, `cancels` is the INVITE server transaction it matches (§9.2), or None:
    the TU answers the CANCEL 200 (and the INVITE 487) or, with None, the CANCEL 481.
    """

    transaction: ServerTransaction | None
    request: Any
    source: Address
    cancels: InviteServerTransaction | None = None


@dataclass(frozen=True, slots=True)
class DeliverTimeout:
    """Timer B or F (the TU treats it as a 408, §8.1.3.1), or H (the ACK never came)."""

    transaction: Transaction
    timer: Timer


@dataclass(frozen=True, slots=True)
class DeliverTransportError:
    transaction: Transaction


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is gone: the layer has forgotten it; the TU may drop its references."""

    transaction: Transaction


Action = (
    Send
    | StartTimer
    | CancelTimer
    | DeliverResponse
    | DeliverRequest
    | DeliverTimeout
    | DeliverTransportError
    | Terminated
)

# A step is one thing a transition does, in the order the table lists them.
Step = Callable[[Any, Any, float, list[Action]], None]
Transitions = dict[tuple[State, Input], tuple[State, tuple[Step, ...]]]


# --------------------------------------------------------------------------- the machines


class Transaction:
    """Mechanics shared by the four machines; each subclass brings its table."""

    INITIAL: ClassVar[tuple[State, tuple[Step, ...]]]
    TRANSITIONS: ClassVar[Transitions]
    is_client: ClassVar[bool]

    __slots__ = (
        "_fire_now",
        "_freeze",
        "_started",
        "armed",
        "destination",
        "interval",
        "key",
        "reliable",
        "request",
        "retransmissions",
        "settings",
        "state",
    )

    def __init__(
        self,
        request: Any,
        destination: Address,
        *,
        key: tuple[str, ...],
        reliable: bool,
        settings: TimerSettings,
        freeze: Freeze | None = None,
    ) -> None:
        self.request = request
        self.destination = destination  # where this transaction sends: request's target / source
        self.key = key
        self.reliable = reliable
        self.settings = settings
        self._freeze = freeze
        self.state = self.INITIAL[0]
        self.armed: dict[Timer, float] = {}  # timer -> deadline, as last started
        self.interval = 0.0  # current interval of the retransmission timer (A, E or G)
        self.retransmissions = 0  # copies sent again by this transaction (metrics, tests)
        self._fire_now: Timer | None = None
        self._started = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state}>"

    def start(self, now: float) -> list[Action]:
        """Enter the initial state: client transactions send, server ones deliver."""
        if self._started:
            raise IllegalTransition(f"{self!r} has already started")
        self._started = True
        return self._run(self.INITIAL[0], self.INITIAL[1], None, now)

    def handle(self, event: Event, now: float) -> list[Action]:
        """One event in, the actions of its transition out (timer actions included)."""
        event_input = self._classify(event)
        if event_input is None:
            return []
        entry = self.TRANSITIONS.get((self.state, event_input))
        if entry is None:
            if event_input in _TU_INPUTS:
                raise IllegalTransition(
                    f"{type(self).__name__} {self.key}: {event_input} is not allowed in {self.state}"
                )
            return []  # late, stray or stale: §17 absorbs it
        return self._run(entry[0], entry[1], event, now)

    def _run(
        self, next_state: State, steps: tuple[Step, ...], event: Any, now: float
    ) -> list[Action]:
        actions: list[Action] = []
        self.state = next_state
        for step in steps:
            step(self, event, now, actions)
        if next_state is State.TERMINATED:
            for timer in self.armed:
                actions.append(CancelTimer(self, timer))
            self.armed.clear()
            self._fire_now = None
            actions.append(Terminated(self))
        elif self._fire_now is not None:
            timer, self._fire_now = self._fire_now, None
            actions += self.handle(TimerFired(timer), now)
        elif next_state in _RESTING and self._freeze is not None:
            self._rest(self._freeze)
        return actions

    def _rest(self, freeze: Freeze) -> None:
        """Keep only the frozen form of the messages this transaction may still send."""
        self.request = freeze(self.request)

    def _classify(self, event: Event) -> Input | None:
        if isinstance(event, Received):
            message = event.message
            status = message.status
            if status is None:
                return Input.ACK if message.method == "ACK" else Input.REQUEST
            if status < 100:
                return None
            if status < 200:
                return Input.PROVISIONAL
            return Input.SUCCESS if status < 300 else Input.FAILURE
        if isinstance(event, TimerFired):
            timer = event.timer
            if self.armed.pop(timer, None) is None:
                return None  # cancelled or superseded: stale
            return _TIMER_INPUT[timer]
        if isinstance(event, SendResponse):
            status = event.response.status
            if status is None or not 100 <= status <= 699:
                raise ValueError(f"a server transaction sends responses 100-699, not {status!r}")
            if status < 200:
                return Input.TU_PROVISIONAL
            return Input.TU_SUCCESS if status < 300 else Input.TU_FAILURE
        if isinstance(event, TransportError):
            return Input.TRANSPORT_ERROR
        if isinstance(event, Abandon):
            return Input.ABANDON
        raise TypeError(f"not a transaction event: {event!r}")

    # Timer bookkeeping used by the steps.

    def _arm(self, timer: Timer, duration: float, now: float, actions: list[Action]) -> None:
        if duration == 0:
            self._fire_now = timer  # Terminated by the time handle() returns
            self.armed[timer] = now
            return
        at = now + duration
        self.armed[timer] = at
        actions.append(StartTimer(self, timer, at))


class ClientTransaction(Transaction):
    is_client = True
    __slots__ = ("_build_ack", "ack")

    def __init__(
        self,
        request: Any,
        destination: Address,
        *,
        key: tuple[str, ...],
        reliable: bool,
        settings: TimerSettings,
        build_ack: BuildAck,
        freeze: Freeze | None = None,
    ) -> None:
        super().__init__(
            request, destination, key=key, reliable=reliable, settings=settings, freeze=freeze
        )
        self._build_ack = build_ack
        self.ack: Any = None  # the ACK for a non-2xx, kept to answer retransmissions

    def _rest(self, freeze: Freeze) -> None:
        self.request = freeze(self.request)
        if self.ack is not None:
            self.ack = freeze(self.ack)


class ServerTransaction(Transaction):
    is_client = False
    __slots__ = ("_build_trying", "cancels", "last_response")

    def __init__(
        self,
        request: Any,
        source: Address,
        *,
        key: tuple[str, ...],
        reliable: bool,
        settings: TimerSettings,
        build_trying: BuildTrying,
        cancels: InviteServerTransaction | None = None,
        freeze: Freeze | None = None,
    ) -> None:
        super().__init__(
            request, source, key=key, reliable=reliable, settings=settings, freeze=freeze
        )
        self._build_trying = build_trying
        self.cancels = cancels  # for a CANCEL: the INVITE transaction it matches
        self.last_response: Any = None

    def _rest(self, freeze: Freeze) -> None:
        self.request = freeze(self.request)
        if self.last_response is not None:
            self.last_response = freeze(self.last_response)


# --------------------------------------------------------------------------- steps


def send_request(
    transaction: ClientTransaction, event: Any, now: float, actions: list[Action]
) -> None:
    actions.append(Send(transaction, transaction.request, transaction.destination))


def retransmit_request(
    transaction: ClientTransaction, event: Any, now: float, actions: list[Action]
) -> None:
    transaction.retransmissions += 1
    actions.append(Send(transaction, transaction.request, transaction.destination))


def send_ack(
    transaction: ClientTransaction, event: Received, now: float, actions: list[Action]
) -> None:
    """§17.1.1.3: the transaction, not the TU, acknowledges a non-2xx final response."""
    transaction.ack = transaction._build_ack(transaction.request, event.message)
    actions.append(Send(transaction, transaction.ack, transaction.destination))


def resend_ack(
    transaction: ClientTransaction, event: Any, now: float, actions: list[Action]
) -> None:
    transaction.retransmissions += 1
    actions.append(Send(transaction, transaction.ack, transaction.destination))


def deliver_response(
    transaction: ClientTransaction, event: Received, now: float, actions: list[Action]
) -> None:
    actions.append(DeliverResponse(transaction, event.message))


def deliver_request(
    transaction: ServerTransaction, event: Any, now: float, actions: list[Action]
) -> None:
    actions.append(
        DeliverRequest(
            transaction, transaction.request, transaction.destination, transaction.cancels
        )
    )


def deliver_ack(
    transaction: ServerTransaction, event: Received, now: float, actions: list[Action]
) -> None:
    """RFC 6026 (UAS impacts): an ACK matching a transaction in Accepted goes to the TU."""
    actions.append(DeliverRequest(transaction, event.message, transaction.destination))


def deliver_timeout(
    transaction: Transaction, event: TimerFired, now: float, actions: list[Action]
) -> None:
    actions.append(DeliverTimeout(transaction, event.timer))


def deliver_transport_error(
    transaction: Transaction, event: Any, now: float, actions: list[Action]
) -> None:
    actions.append(DeliverTransportError(transaction))


def send_response(
    transaction: ServerTransaction, event: SendResponse, now: float, actions: list[Action]
) -> None:
    transaction.last_response = event.response
    actions.append(Send(transaction, event.response, transaction.destination))


def resend_response(
    transaction: ServerTransaction, event: Any, now: float, actions: list[Action]
) -> None:
    """The most recent response again; nothing if none was sent yet."""
    if transaction.last_response is not None:
        transaction.retransmissions += 1
        actions.append(Send(transaction, transaction.last_response, transaction.destination))


def send_trying(
    transaction: ServerTransaction, event: Any, now: float, actions: list[Action]
) -> None:
    """§17.2.1: the TU said nothing for 200 ms, so the transaction answers 100 itself."""
    transaction.last_response = transaction._build_trying(transaction.request)
    actions.append(Send(transaction, transaction.last_response, transaction.destination))


def start(timer: Timer) -> Step:
    """Arm `timer` with its Table 4 duration for this transport (retransmission timers: T1)."""

    def start_timer(
        transaction: Transaction, event: Any, now: float, actions: list[Action]
    ) -> None:
        duration = transaction.settings.duration(timer, reliable=transaction.reliable)
        if duration is None:
            return  # a retransmission timer on a reliable transport
        if timer in RETRANSMISSION_TIMERS:
            transaction.interval = duration
        transaction._arm(timer, duration, now, actions)

    start_timer.__name__ = f"start_timer_{timer.value}"
    return start_timer


def double(timer: Timer, *, cap_at_t2: bool) -> Step:
    """Re-arm a retransmission timer with twice its interval (A: no cap; E, G: at most T2)."""

    def double_timer(
        transaction: Transaction, event: Any, now: float, actions: list[Action]
    ) -> None:
        interval = transaction.interval * 2
        if cap_at_t2:
            interval = min(interval, transaction.settings.t2)
        transaction.interval = interval
        transaction._arm(timer, interval, now, actions)

    double_timer.__name__ = f"double_timer_{timer.value}"
    return double_timer


def restart_at_t2(timer: Timer) -> Step:
    """§17.1.2.2: in Proceeding, timer E is reset to T2."""

    def restart_timer(
        transaction: Transaction, event: Any, now: float, actions: list[Action]
    ) -> None:
        transaction.interval = transaction.settings.t2
        transaction._arm(timer, transaction.interval, now, actions)

    restart_timer.__name__ = f"restart_timer_{timer.value}_at_t2"
    return restart_timer


def cancel(timer: Timer) -> Step:
    def cancel_timer(
        transaction: Transaction, event: Any, now: float, actions: list[Action]
    ) -> None:
        if transaction.armed.pop(timer, None) is not None:
            actions.append(CancelTimer(transaction, timer))

    cancel_timer.__name__ = f"cancel_timer_{timer.value}"
    return cancel_timer


def _abandon_from(*states: State) -> Transitions:
    return {(state, Input.ABANDON): (State.TERMINATED, ()) for state in states}


# --------------------------------------------------------------------------- the four tables
# Entries with no steps that keep the state are absorptions the RFC asks for; a TU input not
# listed raises IllegalTransition, any other input not listed is dropped.

CALLING, TRYING, PROCEEDING = State.CALLING, State.TRYING, State.PROCEEDING
COMPLETED, CONFIRMED, ACCEPTED, TERMINATED = (
    State.COMPLETED,
    State.CONFIRMED,
    State.ACCEPTED,
    State.TERMINATED,
)


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 (Figure 5) with the Accepted state of RFC 6026 (UAC impacts)."""

    __slots__ = ()
    INITIAL = (CALLING, (send_request, start(Timer.A), start(Timer.B)))
    TRANSITIONS: ClassVar[Transitions] = {
        (CALLING, Input.TIMER_A): (CALLING, (retransmit_request, double(Timer.A, cap_at_t2=False))),
        (CALLING, Input.TIMER_B): (TERMINATED, (deliver_timeout,)),
        (CALLING, Input.TRANSPORT_ERROR): (TERMINATED, (deliver_transport_error,)),
        (CALLING, Input.PROVISIONAL): (
            PROCEEDING,
            (cancel(Timer.A), cancel(Timer.B), deliver_response),
        ),
        (CALLING, Input.SUCCESS): (
            ACCEPTED,
            (cancel(Timer.A), cancel(Timer.B), deliver_response, start(Timer.M)),
        ),
        (CALLING, Input.FAILURE): (
            COMPLETED,
            (cancel(Timer.A), cancel(Timer.B), send_ack, deliver_response, start(Timer.D)),
        ),
        (PROCEEDING, Input.PROVISIONAL): (PROCEEDING, (deliver_response,)),
        (PROCEEDING, Input.SUCCESS): (ACCEPTED, (deliver_response, start(Timer.M))),
        (PROCEEDING, Input.FAILURE): (COMPLETED, (send_ack, deliver_response, start(Timer.D))),
        (COMPLETED, Input.FAILURE): (COMPLETED, (resend_ack,)),
        (COMPLETED, Input.PROVISIONAL): (COMPLETED, ()),
        (COMPLETED, Input.SUCCESS): (COMPLETED, ()),
        (COMPLETED, Input.TIMER_D): (TERMINATED, ()),
        (COMPLETED, Input.TRANSPORT_ERROR): (TERMINATED, (deliver_transport_error,)),
        (ACCEPTED, Input.SUCCESS): (ACCEPTED, (deliver_response,)),  # the TU ACKs each 2xx
        (ACCEPTED, Input.PROVISIONAL): (ACCEPTED, ()),
        (ACCEPTED, Input.FAILURE): (ACCEPTED, ()),
        (ACCEPTED, Input.TIMER_M): (TERMINATED, ()),
        **_abandon_from(CALLING, PROCEEDING, COMPLETED, ACCEPTED),
    }


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2 (Figure 6)."""

    __slots__ = ()
    INITIAL = (TRYING, (send_request, start(Timer.E), start(Timer.F)))
    _FINAL: ClassVar[tuple[Step, ...]] = (
        cancel(Timer.E),
        cancel(Timer.F),
        deliver_response,
        start(Timer.K),
    )
    TRANSITIONS: ClassVar[Transitions] = {
        (TRYING, Input.TIMER_E): (TRYING, (retransmit_request, double(Timer.E, cap_at_t2=True))),
        (TRYING, Input.TIMER_F): (TERMINATED, (deliver_timeout,)),
        (TRYING, Input.TRANSPORT_ERROR): (TERMINATED, (deliver_transport_error,)),
        (TRYING, Input.PROVISIONAL): (PROCEEDING, (deliver_response,)),
        (TRYING, Input.SUCCESS): (COMPLETED, _FINAL),
        (TRYING, Input.FAILURE): (COMPLETED, _FINAL),
        (PROCEEDING, Input.TIMER_E): (PROCEEDING, (retransmit_request, restart_at_t2(Timer.E))),
        (PROCEEDING, Input.TIMER_F): (TERMINATED, (deliver_timeout,)),
        (PROCEEDING, Input.TRANSPORT_ERROR): (TERMINATED, (deliver_transport_error,)),
        (PROCEEDING, Input.PROVISIONAL): (PROCEEDING, (deliver_response,)),
        (PROCEEDING, Input.SUCCESS): (COMPLETED, _FINAL),
        (PROCEEDING, Input.FAILURE): (COMPLETED, _FINAL),
        (COMPLETED, Input.PROVISIONAL): (COMPLETED, ()),
        (COMPLETED, Input.SUCCESS): (COMPLETED, ()),
        (COMPLETED, Input.FAILURE): (COMPLETED, ()),
        (COMPLETED, Input.TIMER_K): (TERMINATED, ()),
        **_abandon_from(TRYING, PROCEEDING, COMPLETED),
    }


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 (Figure 7) with the Accepted state of RFC 6026 (UAS impacts)."""

    __slots__ = ()
    INITIAL = (PROCEEDING, (deliver_request, start(Timer.TRYING)))
    TRANSITIONS: ClassVar[Transitions] = {
        (PROCEEDING, Input.REQUEST): (PROCEEDING, (resend_response,)),
        (PROCEEDING, Input.ACK): (PROCEEDING, ()),
        (PROCEEDING, Input.TIMER_TRYING): (PROCEEDING, (send_trying,)),
        (PROCEEDING, Input.TU_PROVISIONAL): (PROCEEDING, (cancel(Timer.TRYING), send_response)),
        (PROCEEDING, Input.TU_SUCCESS): (
            ACCEPTED,
            (cancel(Timer.TRYING), send_response, start(Timer.L)),
        ),
        (PROCEEDING, Input.TU_FAILURE): (
            COMPLETED,
            (cancel(Timer.TRYING), send_response, start(Timer.G), start(Timer.H)),
        ),
        (PROCEEDING, Input.TRANSPORT_ERROR): (TERMINATED, (deliver_transport_error,)),
        (COMPLETED, Input.REQUEST): (COMPLETED, (resend_response,)),
        (COMPLETED, Input.TIMER_G): (COMPLETED, (resend_response, double(Timer.G, cap_at_t2=True))),
        (COMPLETED, Input.ACK): (CONFIRMED, (cancel(Timer.G), cancel(Timer.H), start(Timer.I))),
        (COMPLETED, Input.TIMER_H): (TERMINATED, (deliver_timeout,)),
        (COMPLETED, Input.TRANSPORT_ERROR): (TERMINATED, (deliver_transport_error,)),
        (CONFIRMED, Input.REQUEST): (CONFIRMED, ()),
        (CONFIRMED, Input.ACK): (CONFIRMED, ()),
        (CONFIRMED, Input.TIMER_I): (TERMINATED, ()),
        (ACCEPTED, Input.REQUEST): (ACCEPTED, ()),  # RFC 6026: absorbed, not passed up
        (ACCEPTED, Input.ACK): (ACCEPTED, (deliver_ack,)),
        (ACCEPTED, Input.TU_SUCCESS): (ACCEPTED, (send_response,)),  # the TU's 2xx retransmissions
        (ACCEPTED, Input.TRANSPORT_ERROR): (ACCEPTED, (deliver_transport_error,)),
        (ACCEPTED, Input.TIMER_L): (TERMINATED, ()),
        **_abandon_from(PROCEEDING, COMPLETED, CONFIRMED, ACCEPTED),
    }


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2 (Figure 8)."""

    __slots__ = ()
    INITIAL = (TRYING, (deliver_request,))
    TRANSITIONS: ClassVar[Transitions] = {
        (TRYING, Input.REQUEST): (TRYING, ()),
        (TRYING, Input.TU_PROVISIONAL): (PROCEEDING, (send_response,)),
        (TRYING, Input.TU_SUCCESS): (COMPLETED, (send_response, start(Timer.J))),
        (TRYING, Input.TU_FAILURE): (COMPLETED, (send_response, start(Timer.J))),
        (PROCEEDING, Input.REQUEST): (PROCEEDING, (resend_response,)),
        (PROCEEDING, Input.TU_PROVISIONAL): (PROCEEDING, (send_response,)),
        (PROCEEDING, Input.TU_SUCCESS): (COMPLETED, (send_response, start(Timer.J))),
        (PROCEEDING, Input.TU_FAILURE): (COMPLETED, (send_response, start(Timer.J))),
        (PROCEEDING, Input.TRANSPORT_ERROR): (TERMINATED, (deliver_transport_error,)),
        (COMPLETED, Input.REQUEST): (COMPLETED, (resend_response,)),
        (COMPLETED, Input.TIMER_J): (TERMINATED, ()),
        (COMPLETED, Input.TRANSPORT_ERROR): (TERMINATED, (deliver_transport_error,)),
        **_abandon_from(TRYING, PROCEEDING, COMPLETED),
    }


# --------------------------------------------------------------------------- the layer

_LAYER_COUNTER_NAMES = (
    "client_transactions",  # started by the TU
    "server_transactions",  # created for new requests
    "requests_matched",  # retransmitted requests and ACKs that matched a server transaction
    "responses_matched",
    "stray_responses",  # matched no client transaction: dropped (RFC 6026 on §18.1.2)
    "unmatched_acks",  # matched no server transaction: passed to the TU (ACKs for 2xx)
    "retransmissions",  # requests, ACKs and responses this layer sent again
    "timeouts",
    "transport_errors",
)


class TransactionLayer:
    """Every transaction of one SIP endpoint, matched by §17.1.3 / §17.2.3 keys.

    Client key: (branch, CSeq method).  Server key: (branch, sent-by, method), with an ACK
    looked up under method INVITE and a CANCEL under its own method (so it gets its own
    transaction) while `cancels` points at the INVITE transaction with the same branch.
    Every method returns the actions for the shell: Send, Deliver*, Terminated.
    """

    def __init__(
        self,
        *,
        build_ack: BuildAck,
        build_trying: BuildTrying,
        settings: TimerSettings | None = None,
        freeze: Freeze | None = None,
    ) -> None:
        self.settings = settings if settings is not None else TimerSettings()
        self._build_ack = build_ack
        self._build_trying = build_trying
        self._freeze = freeze
        self._clients: dict[tuple[str, ...], ClientTransaction] = {}
        self._servers: dict[tuple[str, ...], ServerTransaction] = {}
        self._timers: TimerHeap[tuple[Transaction, Timer]] = TimerHeap()
        self._timer_handles: dict[
            tuple[Transaction, Timer], TimerHandle[tuple[Transaction, Timer]]
        ] = {}
        self._counters = dict.fromkeys(_LAYER_COUNTER_NAMES, 0)

    # ------------------------------------------------------------------ TU side

    def send_request(
        self, request: Any, destination: Address, now: float, *, reliable: bool = False
    ) -> tuple[ClientTransaction, list[Action]]:
        """Start a client transaction; its responses come back as DeliverResponse."""
        method = request.method
        if method == "ACK":
            raise ValueError(
                "an ACK is not a transaction: send an ACK for a 2xx straight to the transport"
            )
        key = (request.branch, method)
        if key in self._clients:
            raise ValueError(
                f"a client transaction with branch {request.branch!r} and method {method} exists"
            )
        kind = InviteClientTransaction if method == "INVITE" else NonInviteClientTransaction
        transaction = kind(
            request,
            destination,
            key=key,
            reliable=reliable,
            settings=self.settings,
            build_ack=self._build_ack,
            freeze=self._freeze,
        )
        self._clients[key] = transaction
        self._counters["client_transactions"] += 1
        return transaction, self._dispatch(transaction, None, now)

    def respond(self, transaction: ServerTransaction, response: Any, now: float) -> list[Action]:
        """Send a response on a server transaction the TU got from DeliverRequest."""
        return self._dispatch(transaction, SendResponse(response), now)

    def transport_error(self, transaction: Transaction, now: float) -> list[Action]:
        """The shell could not send a message of `transaction` (ICMP, TCP reset, no route)."""
        self._counters["transport_errors"] += 1
        return self._dispatch(transaction, TransportError(), now)

    def abandon(self, transaction: Transaction, now: float) -> list[Action]:
        """End a transaction without telling anyone but the caller (idempotent)."""
        return self._dispatch(transaction, Abandon(), now)

    # ------------------------------------------------------------------ network side

    def receive(
        self, message: Any, source: Address, now: float, *, reliable: bool = False
    ) -> list[Action]:
        """A parsed message from the transport; `reliable` is true for TCP/TLS/SCTP."""
        if message.status is None:
            return self._receive_request(message, source, now, reliable)
        transaction = self._clients.get((message.branch, message.cseq_method))
        if transaction is None:
            self._counters["stray_responses"] += 1
            return []
        self._counters["responses_matched"] += 1
        return self._dispatch(transaction, Received(message), now)

    def _receive_request(
        self, request: Any, source: Address, now: float, reliable: bool
    ) -> list[Action]:
        method = request.method
        branch = request.branch
        sent_by = request.sent_by
        if method == "ACK":
            invite = self._servers.get((branch, sent_by, "INVITE"))
            if invite is None:
                self._counters["unmatched_acks"] += 1
                return [DeliverRequest(None, request, source)]
            self._counters["requests_matched"] += 1
            return self._dispatch(invite, Received(request), now)
        key = (branch, sent_by, method)
        existing = self._servers.get(key)
        if existing is not None:
            self._counters["requests_matched"] += 1
            return self._dispatch(existing, Received(request), now)
        transaction: ServerTransaction
        if method == "INVITE":
            transaction = InviteServerTransaction(
                request,
                source,
                key=key,
                reliable=reliable,
                settings=self.settings,
                build_trying=self._build_trying,
                freeze=self._freeze,
            )
        else:
            cancelled = None
            if method == "CANCEL":
                cancelled = self._servers.get((branch, sent_by, "INVITE"))  # type: ignore[assignment]
            transaction = NonInviteServerTransaction(
                request,
                source,
                key=key,
                reliable=reliable,
                settings=self.settings,
                build_trying=self._build_trying,
                cancels=cancelled,
                freeze=self._freeze,
            )
        self._servers[key] = transaction
        self._counters["server_transactions"] += 1
        return self._dispatch(transaction, None, now)

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        """When poll() next has work; None when no transaction is waiting on a timer."""
        return self._timers.next_deadline()

    def poll(self, now: float) -> list[Action]:
        """Fire every timer due at `now`, earliest first."""
        actions: list[Action] = []
        timers = self._timers
        while (due := timers.pop_due(now)) is not None:
            transaction, timer = due
            del self._timer_handles[due]
            actions += self._dispatch(transaction, TimerFired(timer), now)
        return actions

    # ------------------------------------------------------------------ inspection

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def __len__(self) -> int:
        """Transactions alive (not yet Terminated)."""
        return len(self._clients) + len(self._servers)

    def find_client(self, branch: str, method: str) -> ClientTransaction | None:
        return self._clients.get((branch, method))

    def find_server(self, branch: str, sent_by: str, method: str) -> ServerTransaction | None:
        return self._servers.get((branch, sent_by, method))

    # ------------------------------------------------------------------ internals

    def _dispatch(self, transaction: Transaction, event: Event | None, now: float) -> list[Action]:
        """Run one event (None: start) and keep the timer actions for ourselves."""
        retransmitted_before = transaction.retransmissions
        actions = transaction.start(now) if event is None else transaction.handle(event, now)
        self._counters["retransmissions"] += transaction.retransmissions - retransmitted_before
        out: list[Action] = []
        for action in actions:
            if isinstance(action, StartTimer):
                handle_key = (action.transaction, action.timer)
                previous = self._timer_handles.get(handle_key)
                if previous is not None:
                    self._timers.cancel(previous)
                self._timer_handles[handle_key] = self._timers.schedule(action.at, handle_key)
            elif isinstance(action, CancelTimer):
                handle = self._timer_handles.pop((action.transaction, action.timer), None)
                if handle is not None:
                    self._timers.cancel(handle)
            else:
                if isinstance(action, Terminated):
                    self._forget(action.transaction)
                elif isinstance(action, DeliverTimeout):
                    self._counters["timeouts"] += 1
                out.append(action)
        return out

    def _forget(self, transaction: Transaction) -> None:
        table: dict[tuple[str, ...], Any] = (
            self._clients if transaction.is_client else self._servers
        )
        if table.get(transaction.key) is transaction:
            del table[transaction.key]
