"""SIP transactions (firmware/sip/transaction.py): RFC 3261 §17 and RFC 6026 on a fake clock.

Time is a float the tests advance; messages are small stand-ins with just the attributes the
transaction layer reads.  Schedules are compared exactly: T1 = 0.5 s makes every deadline a
binary fraction.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

from firmware.sip.timers import Timer, TimerHeap, TimerSettings
from firmware.sip.transaction import (
    Action,
    CancelTimer,
    DeliverRequest,
    DeliverResponse,
    DeliverTimeout,
    DeliverTransportError,
    IllegalTransition,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Received,
    Send,
    StartTimer,
    State,
    Terminated,
    TimerFired,
    TransactionLayer,
)

ActionT = TypeVar("ActionT")

PEER = ("udp", "10.0.0.2", 5060)
PEER_SENT_BY = "10.0.0.2:5060"


@dataclass(frozen=True)
class Msg:
    """A request (status None) or a response; `method` is the CSeq method for both."""

    method: str
    branch: str
    sent_by: str = PEER_SENT_BY
    status: int | None = None
    label: str = ""  # tells apart messages the layer must not confuse (to-tags, which 2xx)

    @property
    def cseq_method(self) -> str:
        return self.method


def request(
    method: str, branch: str = "z9hG4bK-1", sent_by: str = PEER_SENT_BY, label: str = ""
) -> Msg:
    return Msg(method, branch, sent_by, None, label)


def response(to: Msg, status: int, label: str = "") -> Msg:
    return Msg(to.method, to.branch, to.sent_by, status, label)


def build_ack(invite: Msg, final: Msg) -> Msg:
    return Msg("ACK", invite.branch, invite.sent_by, None, f"ack for {final.status}")


def build_trying(invite: Msg) -> Msg:
    return response(invite, 100, "automatic")


def new_layer(**settings: float) -> TransactionLayer:
    return TransactionLayer(
        build_ack=build_ack, build_trying=build_trying, settings=TimerSettings(**settings)
    )


def sent(actions: list[Action]) -> list[Msg]:
    return [action.message for action in actions if isinstance(action, Send)]


def of_type(actions: list[Action], kind: type[ActionT]) -> list[ActionT]:
    return [action for action in actions if isinstance(action, kind)]


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, Action]]:
    """Poll the layer at each deadline up to `end`, like the asyncio shell would."""
    timeline: list[tuple[float, Action]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        timeline += [(deadline, action) for action in layer.poll(deadline)]
    return timeline


def send_times(timeline: list[tuple[float, Action]]) -> list[float]:
    return [time for time, action in timeline if isinstance(action, Send)]


# --------------------------------------------------------------------------- timers module


def test_timer_settings_follow_rfc_table_4() -> None:
    settings = TimerSettings()
    assert (settings.t1, settings.t2, settings.t4) == (0.5, 4.0, 5.0)
    for timer in (Timer.B, Timer.F, Timer.H, Timer.L, Timer.M):
        assert settings.duration(timer, reliable=False) == 32.0
        assert settings.duration(timer, reliable=True) == 32.0
    assert settings.duration(Timer.J, reliable=False) == 32.0
    assert settings.duration(Timer.D, reliable=False) == 32.0
    assert settings.duration(Timer.I, reliable=False) == 5.0
    assert settings.duration(Timer.K, reliable=False) == 5.0
    for timer in (Timer.D, Timer.I, Timer.J, Timer.K):
        assert settings.duration(timer, reliable=True) == 0.0
    for timer in (Timer.A, Timer.E, Timer.G):
        assert settings.duration(timer, reliable=False) == 0.5
        assert settings.duration(timer, reliable=True) is None
    assert settings.duration(Timer.TRYING, reliable=True) == 0.2


def test_timer_settings_scale_with_t1_and_reject_nonsense() -> None:
    assert TimerSettings(t1=1.0).duration(Timer.B, reliable=False) == 64.0
    with pytest.raises(ValueError, match="t1"):
        TimerSettings(t1=0)
    with pytest.raises(ValueError, match="t2"):
        TimerSettings(t1=5.0, t2=4.0)
    with pytest.raises(ValueError, match="timer_d"):
        TimerSettings(timer_d=-1)


def test_timer_heap_fires_in_deadline_order_and_skips_cancelled() -> None:
    heap: TimerHeap[str] = TimerHeap()
    late = heap.schedule(3.0, "late")
    heap.schedule(1.0, "first")
    heap.schedule(1.0, "second")  # same deadline: scheduling order
    cancelled = heap.schedule(0.5, "cancelled")
    heap.cancel(cancelled)
    heap.cancel(cancelled)  # twice is harmless
    assert len(heap) == 3
    assert heap.next_deadline() == 1.0
    assert heap.pop_due(0.9) is None
    assert heap.pop_due(1.0) == "first"
    assert heap.pop_due(1.0) == "second"
    assert heap.pop_due(1.0) is None
    heap.cancel(late)
    assert heap.next_deadline() is None
    assert len(heap) == 0


def test_timer_heap_compacts_when_cancelled_entries_dominate() -> None:
    heap: TimerHeap[int] = TimerHeap()
    handles = [heap.schedule(float(index), index) for index in range(200)]
    for handle in handles[:150]:
        heap.cancel(handle)
    assert len(heap._heap) < 200  # rebuilt, not just marked
    assert len(heap) == 50
    fired = []
    while (payload := heap.pop_due(1000.0)) is not None:
        fired.append(payload)
    assert fired == list(range(150, 200))
    heap.cancel(handles[199])  # already fired: no miscount
    assert len(heap) == 0


# --------------------------------------------------------------------------- INVITE client


def test_invite_retransmits_with_timer_a_doubling_without_cap_until_timer_b_gives_408() -> None:
    layer = new_layer()
    invite = request("INVITE")
    transaction, actions = layer.send_request(invite, PEER, 0.0)
    assert isinstance(transaction, InviteClientTransaction)
    assert transaction.state is State.CALLING
    assert sent(actions) == [invite]
    assert [action.destination for action in of_type(actions, Send)] == [PEER]

    timeline = run_until(layer, 100.0)
    # A: 0.5, 1, 2, 4, 8, 16 (no T2 cap for INVITE); B = 64*T1 = 32 s ends it first.
    assert send_times(timeline) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    timeouts = [(time, action) for time, action in timeline if isinstance(action, DeliverTimeout)]
    assert timeouts == [(32.0, DeliverTimeout(transaction, Timer.B))]
    assert isinstance(timeline[-1][1], Terminated)
    assert transaction.state is State.TERMINATED
    assert len(layer) == 0
    assert layer.next_deadline() is None
    assert layer.counters["retransmissions"] == 6
    assert layer.counters["timeouts"] == 1


def test_invite_over_tcp_is_sent_once_and_still_times_out_on_timer_b() -> None:
    layer = new_layer()
    _, actions = layer.send_request(request("INVITE"), PEER, 0.0, reliable=True)
    assert len(sent(actions)) == 1
    timeline = run_until(layer, 100.0)
    assert send_times(timeline) == []
    assert [time for time, action in timeline if isinstance(action, DeliverTimeout)] == [32.0]


def test_provisional_stops_invite_retransmissions_and_every_1xx_reaches_the_tu() -> None:
    layer = new_layer()
    invite = request("INVITE")
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    run_until(layer, 0.6)  # one retransmission at 0.5
    trying, ringing = response(invite, 100), response(invite, 180)
    assert layer.receive(trying, PEER, 0.7) == [DeliverResponse(transaction, trying)]
    assert transaction.state is State.PROCEEDING
    assert layer.next_deadline() is None  # A and B cancelled: Proceeding waits for the TU
    assert layer.receive(ringing, PEER, 1.0) == [DeliverResponse(transaction, ringing)]
    assert layer.receive(ringing, PEER, 1.1) == [DeliverResponse(transaction, ringing)]
    assert run_until(layer, 500.0) == []
    assert len(layer) == 1


@pytest.mark.parametrize(
    "provisional_first", [False, True], ids=["from Calling", "from Proceeding"]
)
def test_non_2xx_final_is_acked_by_the_transaction_and_retransmissions_reacked(
    provisional_first: bool,
) -> None:
    layer = new_layer()
    invite = request("INVITE")
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    if provisional_first:
        layer.receive(response(invite, 180), PEER, 0.1)
    busy = response(invite, 486)
    actions = layer.receive(busy, PEER, 0.2)
    ack = build_ack(invite, busy)
    assert actions == [Send(transaction, ack, PEER), DeliverResponse(transaction, busy)]
    assert ack.branch == invite.branch  # §17.1.1.3: same branch as the INVITE
    assert transaction.state is State.COMPLETED

    # A retransmitted 486 is answered with the same ACK, never passed to the TU again;
    # late 1xx and 2xx are absorbed.
    assert layer.receive(busy, PEER, 5.0) == [Send(transaction, ack, PEER)]
    assert layer.receive(response(invite, 180), PEER, 5.1) == []
    assert layer.receive(response(invite, 200), PEER, 5.2) == []

    # Timer D: at least 32 s on UDP; no retransmission of the INVITE in the meantime.
    timeline = run_until(layer, 100.0)
    assert timeline == [(32.2, Terminated(transaction))]
    assert layer.receive(busy, PEER, 40.0) == []
    assert layer.counters["stray_responses"] == 1


def test_non_2xx_final_over_tcp_terminates_at_once_timer_d_zero() -> None:
    layer = new_layer()
    invite = request("INVITE")
    transaction, _ = layer.send_request(invite, PEER, 0.0, reliable=True)
    busy = response(invite, 603)
    actions = layer.receive(busy, PEER, 0.3)
    assert actions == [
        Send(transaction, build_ack(invite, busy), PEER),
        DeliverResponse(transaction, busy),
        Terminated(transaction),
    ]
    assert len(layer) == 0
    assert layer.next_deadline() is None


@pytest.mark.parametrize(
    "provisional_first", [False, True], ids=["from Calling", "from Proceeding"]
)
def test_2xx_enters_accepted_and_every_2xx_reaches_the_tu_until_timer_m(
    provisional_first: bool,
) -> None:
    layer = new_layer()
    invite = request("INVITE")
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    if provisional_first:
        layer.receive(response(invite, 183), PEER, 0.1)
    ok = response(invite, 200, "to-tag a")
    assert layer.receive(ok, PEER, 1.0) == [DeliverResponse(transaction, ok)]
    assert transaction.state is State.ACCEPTED

    # No ACK from the transaction: the TU ACKs every 2xx (retransmitted or forked).
    forked_ok = response(invite, 200, "to-tag b")
    assert layer.receive(ok, PEER, 1.5) == [DeliverResponse(transaction, ok)]
    assert layer.receive(forked_ok, PEER, 1.6) == [DeliverResponse(transaction, forked_ok)]
    assert layer.receive(response(invite, 180), PEER, 1.7) == []
    assert layer.receive(response(invite, 486), PEER, 1.8) == []

    timeline = run_until(layer, 100.0)
    assert timeline == [(33.0, Terminated(transaction))]  # M = 64*T1 after the first 2xx
    assert layer.receive(ok, PEER, 34.0) == []  # stray now: dropped (RFC 6026 on §18.1.2)


def test_transport_error_while_calling_informs_the_tu() -> None:
    layer = new_layer()
    transaction, _ = layer.send_request(request("INVITE"), PEER, 0.0)
    actions = layer.transport_error(transaction, 0.0)
    assert actions == [DeliverTransportError(transaction), Terminated(transaction)]
    assert layer.next_deadline() is None
    assert len(layer) == 0


def test_transport_error_sending_the_ack_informs_the_tu() -> None:
    layer = new_layer()
    invite = request("INVITE")
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    layer.receive(response(invite, 404), PEER, 0.1)
    actions = layer.transport_error(transaction, 0.1)
    assert actions == [DeliverTransportError(transaction), Terminated(transaction)]
    assert layer.next_deadline() is None


def test_transport_error_is_ignored_where_the_rfc_sends_nothing() -> None:
    layer = new_layer()
    invite = request("INVITE")
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    layer.receive(response(invite, 180), PEER, 0.1)
    assert layer.transport_error(transaction, 0.2) == []  # Proceeding sends nothing
    assert transaction.state is State.PROCEEDING


# --------------------------------------------------------------------------- non-INVITE client


def test_non_invite_retransmission_doubles_to_t2_and_timer_f_gives_408() -> None:
    layer = new_layer()
    transaction, actions = layer.send_request(request("OPTIONS"), PEER, 0.0)
    assert isinstance(transaction, NonInviteClientTransaction)
    assert transaction.state is State.TRYING
    assert len(sent(actions)) == 1
    timeline = run_until(layer, 100.0)
    # E: 0.5, 1, 2, 4, then T2 = 4 s; F = 32 s.
    assert send_times(timeline) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert of_type([action for _, action in timeline], DeliverTimeout) == [
        DeliverTimeout(transaction, Timer.F)
    ]
    assert [time for time, action in timeline if isinstance(action, DeliverTimeout)] == [32.0]
    assert len(layer) == 0


def test_non_invite_provisional_makes_timer_e_fire_every_t2() -> None:
    layer = new_layer()
    register = request("REGISTER")
    transaction, _ = layer.send_request(register, PEER, 0.0)
    timeline = run_until(layer, 0.6)  # retransmitted at 0.5; next E due at 1.5
    trying = response(register, 100)
    assert layer.receive(trying, PEER, 0.7) == [DeliverResponse(transaction, trying)]
    assert transaction.state is State.PROCEEDING
    timeline = run_until(layer, 14.0)
    assert send_times(timeline) == [1.5, 5.5, 9.5, 13.5]
    assert layer.receive(trying, PEER, 14.0) == [DeliverResponse(transaction, trying)]
    timeline = run_until(layer, 100.0)
    assert [time for time, action in timeline if isinstance(action, DeliverTimeout)] == [32.0]


@pytest.mark.parametrize("status", [200, 202, 401, 503])
@pytest.mark.parametrize("provisional_first", [False, True], ids=["from Trying", "from Proceeding"])
def test_non_invite_final_is_delivered_once_and_retransmissions_absorbed_until_timer_k(
    status: int, provisional_first: bool
) -> None:
    layer = new_layer()
    bye = request("BYE")
    transaction, _ = layer.send_request(bye, PEER, 0.0)
    if provisional_first:
        layer.receive(response(bye, 100), PEER, 0.1)
    final = response(bye, status)
    assert layer.receive(final, PEER, 0.2) == [DeliverResponse(transaction, final)]
    assert transaction.state is State.COMPLETED
    assert layer.receive(final, PEER, 1.0) == []
    assert layer.receive(response(bye, 180), PEER, 1.0) == []
    timeline = run_until(layer, 100.0)
    assert timeline == [(5.2, Terminated(transaction))]  # K = T4, no retransmission before


def test_non_invite_over_tcp_is_sent_once_and_ends_on_the_final_response() -> None:
    layer = new_layer()
    options = request("OPTIONS")
    transaction, _ = layer.send_request(options, PEER, 0.0, reliable=True)
    assert layer.next_deadline() == 32.0  # only F
    ok = response(options, 200)
    assert layer.receive(ok, PEER, 0.1) == [
        DeliverResponse(transaction, ok),
        Terminated(transaction),
    ]
    assert layer.next_deadline() is None

    transaction, _ = layer.send_request(request("OPTIONS", "z9hG4bK-2"), PEER, 1.0, reliable=True)
    timeline = run_until(layer, 100.0)
    assert send_times(timeline) == []
    assert timeline == [
        (33.0, DeliverTimeout(transaction, Timer.F)),
        (33.0, Terminated(transaction)),
    ]


@pytest.mark.parametrize("provisional_first", [False, True], ids=["in Trying", "in Proceeding"])
def test_non_invite_transport_error_informs_the_tu(provisional_first: bool) -> None:
    layer = new_layer()
    message = request("MESSAGE")
    transaction, _ = layer.send_request(message, PEER, 0.0)
    if provisional_first:
        layer.receive(response(message, 100), PEER, 0.1)
    actions = layer.transport_error(transaction, 0.5)
    assert actions == [DeliverTransportError(transaction), Terminated(transaction)]
    assert layer.next_deadline() is None
    assert layer.counters["transport_errors"] == 1


# --------------------------------------------------------------------------- INVITE server


def receive_invite(
    layer: TransactionLayer, now: float = 0.0, **kwargs: bool
) -> tuple[Msg, InviteServerTransaction]:
    invite = request("INVITE")
    actions = layer.receive(invite, PEER, now, **kwargs)
    (delivered,) = actions
    assert isinstance(delivered, DeliverRequest)
    assert delivered.request is invite and delivered.source == PEER and delivered.cancels is None
    transaction = delivered.transaction
    assert isinstance(transaction, InviteServerTransaction)
    return invite, transaction


def test_new_invite_is_delivered_once_and_100_trying_follows_after_200_ms() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    assert transaction.state is State.PROCEEDING
    assert layer.receive(invite, PEER, 0.1) == []  # retransmission before any response: absorbed
    assert layer.next_deadline() == pytest.approx(0.2)
    timeline = run_until(layer, 0.3)
    assert [action for _, action in timeline] == [Send(transaction, build_trying(invite), PEER)]
    # A retransmitted INVITE now gets the latest provisional again.
    assert layer.receive(invite, PEER, 0.6) == [Send(transaction, build_trying(invite), PEER)]
    assert layer.counters["server_transactions"] == 1
    assert layer.counters["requests_matched"] == 2


def test_tu_provisional_within_200_ms_suppresses_100_trying() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    ringing = response(invite, 180)
    assert layer.respond(transaction, ringing, 0.05) == [Send(transaction, ringing, PEER)]
    assert layer.next_deadline() is None
    assert layer.receive(invite, PEER, 0.5) == [Send(transaction, ringing, PEER)]
    progress = response(invite, 183)
    layer.respond(transaction, progress, 0.6)
    assert layer.receive(invite, PEER, 1.5) == [Send(transaction, progress, PEER)]


def test_non_2xx_is_retransmitted_on_timer_g_until_the_ack_confirms_it() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    busy = response(invite, 486)
    assert layer.respond(transaction, busy, 0.1) == [Send(transaction, busy, PEER)]
    assert transaction.state is State.COMPLETED
    timeline = run_until(layer, 12.0)
    # G: 0.5, 1, 2, 4, then T2 = 4 s.
    assert send_times(timeline) == [0.6, 1.6, 3.6, 7.6, 11.6]
    assert layer.receive(invite, PEER, 12.0) == [Send(transaction, busy, PEER)]

    ack = build_ack(invite, busy)
    assert layer.receive(ack, PEER, 12.5) == []  # absorbed, not passed to the TU
    assert transaction.state is State.CONFIRMED
    assert layer.receive(ack, PEER, 13.0) == []
    assert layer.receive(invite, PEER, 13.0) == []
    timeline = run_until(layer, 100.0)
    assert timeline == [(17.5, Terminated(transaction))]  # I = T4
    assert layer.counters["unmatched_acks"] == 0


def test_timer_h_ends_the_transaction_when_no_ack_comes() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    layer.respond(transaction, response(invite, 480), 0.0)
    timeline = run_until(layer, 100.0)
    assert send_times(timeline) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(time, action) for time, action in timeline if not isinstance(action, Send)] == [
        (32.0, DeliverTimeout(transaction, Timer.H)),
        (32.0, Terminated(transaction)),
    ]


def test_2xx_enters_accepted_which_absorbs_invite_retransmissions_until_timer_l() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    layer.respond(transaction, response(invite, 180), 0.1)
    ok = response(invite, 200)
    assert layer.respond(transaction, ok, 2.0) == [Send(transaction, ok, PEER)]
    assert transaction.state is State.ACCEPTED
    assert layer.receive(invite, PEER, 2.1) == []  # absorbed: no new transaction, no response
    assert layer.counters["server_transactions"] == 1
    # The TU retransmits its 2xx through the transaction (RFC 6026).
    assert layer.respond(transaction, ok, 2.5) == [Send(transaction, ok, PEER)]
    # An ACK that matches (same branch) goes to the TU; the usual ACK for a 2xx has its own
    # branch, matches nothing, and goes to the TU without a transaction.
    same_branch_ack = build_ack(invite, ok)
    assert layer.receive(same_branch_ack, PEER, 2.6) == [
        DeliverRequest(transaction, same_branch_ack, PEER)
    ]
    own_branch_ack = request("ACK", "z9hG4bK-ack")
    assert layer.receive(own_branch_ack, PEER, 2.7) == [DeliverRequest(None, own_branch_ack, PEER)]
    assert layer.counters["unmatched_acks"] == 1
    with pytest.raises(IllegalTransition):
        layer.respond(transaction, response(invite, 486), 3.0)
    with pytest.raises(IllegalTransition):
        layer.respond(transaction, response(invite, 180), 3.0)
    timeline = run_until(layer, 100.0)
    assert timeline == [(34.0, Terminated(transaction))]  # L = 64*T1 after the first 2xx


def test_invite_server_over_tcp_never_retransmits_and_ends_on_the_ack() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer, reliable=True)
    run_until(layer, 0.3)  # 100 Trying is sent on TCP too
    busy = response(invite, 486)
    layer.respond(transaction, busy, 1.0)
    assert layer.next_deadline() == 33.0  # only H
    actions = layer.receive(build_ack(invite, busy), PEER, 1.2)
    assert actions == [Terminated(transaction)]  # Confirmed, then I = 0
    assert len(layer) == 0


def test_invite_server_over_tcp_still_waits_64_t1_for_the_ack() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer, reliable=True)
    layer.respond(transaction, response(invite, 486), 0.0)
    timeline = run_until(layer, 100.0)
    assert timeline == [
        (32.0, DeliverTimeout(transaction, Timer.H)),
        (32.0, Terminated(transaction)),
    ]


@pytest.mark.parametrize("final_status", [None, 500], ids=["in Proceeding", "in Completed"])
def test_invite_server_transport_error_informs_the_tu_and_ends(final_status: int | None) -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    layer.respond(transaction, response(invite, 180), 0.0)
    if final_status is not None:
        layer.respond(transaction, response(invite, final_status), 0.1)
    actions = layer.transport_error(transaction, 0.2)
    assert actions == [DeliverTransportError(transaction), Terminated(transaction)]
    assert layer.next_deadline() is None
    with pytest.raises(IllegalTransition):
        layer.respond(transaction, response(invite, 200), 0.3)


def test_invite_server_transport_error_in_accepted_informs_the_tu_which_decides() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    layer.respond(transaction, response(invite, 200), 0.0)
    assert layer.transport_error(transaction, 0.1) == [DeliverTransportError(transaction)]
    assert transaction.state is State.ACCEPTED


def test_invite_server_rejects_responses_out_of_order() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    layer.respond(transaction, response(invite, 404), 0.0)
    with pytest.raises(IllegalTransition, match="1xx from TU is not allowed in Completed"):
        layer.respond(transaction, response(invite, 180), 0.1)
    with pytest.raises(IllegalTransition):
        layer.respond(transaction, response(invite, 200), 0.1)
    with pytest.raises(ValueError, match="100-699"):
        layer.respond(transaction, response(invite, 99), 0.1)
    with pytest.raises(ValueError):
        layer.respond(transaction, request("INVITE"), 0.1)


# --------------------------------------------------------------------------- non-INVITE server


def receive_non_invite(
    layer: TransactionLayer, method: str = "REGISTER", **kwargs: bool
) -> tuple[Msg, NonInviteServerTransaction]:
    message = request(method)
    (delivered,) = layer.receive(message, PEER, 0.0, **kwargs)
    assert isinstance(delivered, DeliverRequest)
    transaction = delivered.transaction
    assert isinstance(transaction, NonInviteServerTransaction)
    return message, transaction


def test_non_invite_request_is_delivered_once_and_its_final_resent_until_timer_j() -> None:
    layer = new_layer()
    register, transaction = receive_non_invite(layer)
    assert transaction.state is State.TRYING
    assert layer.next_deadline() is None  # no automatic 100 for non-INVITE
    assert layer.receive(register, PEER, 0.5) == []  # Trying absorbs retransmissions
    ok = response(register, 200)
    assert layer.respond(transaction, ok, 1.0) == [Send(transaction, ok, PEER)]
    assert transaction.state is State.COMPLETED
    assert layer.receive(register, PEER, 1.5) == [Send(transaction, ok, PEER)]
    with pytest.raises(IllegalTransition):
        layer.respond(transaction, response(register, 500), 2.0)
    timeline = run_until(layer, 100.0)
    assert timeline == [(33.0, Terminated(transaction))]  # J = 64*T1
    # After J a retransmission would be a new request; the RFC makes that too late to happen.
    assert len(layer.receive(register, PEER, 34.0)) == 1


def test_non_invite_provisional_is_resent_on_request_retransmission() -> None:
    layer = new_layer()
    register, transaction = receive_non_invite(layer)
    trying = response(register, 100)
    assert layer.respond(transaction, trying, 0.1) == [Send(transaction, trying, PEER)]
    assert transaction.state is State.PROCEEDING
    assert layer.receive(register, PEER, 0.5) == [Send(transaction, trying, PEER)]
    progress = response(register, 182)
    layer.respond(transaction, progress, 0.6)
    assert layer.receive(register, PEER, 1.5) == [Send(transaction, progress, PEER)]
    unauthorized = response(register, 401)
    layer.respond(transaction, unauthorized, 2.0)
    assert layer.receive(register, PEER, 2.5) == [Send(transaction, unauthorized, PEER)]


def test_non_invite_server_over_tcp_ends_on_its_final_response() -> None:
    layer = new_layer()
    register, transaction = receive_non_invite(layer, reliable=True)
    ok = response(register, 200)
    assert layer.respond(transaction, ok, 0.1) == [
        Send(transaction, ok, PEER),
        Terminated(transaction),
    ]
    assert len(layer) == 0


@pytest.mark.parametrize("final_first", [False, True], ids=["in Proceeding", "in Completed"])
def test_non_invite_server_transport_error_informs_the_tu(final_first: bool) -> None:
    layer = new_layer()
    register, transaction = receive_non_invite(layer)
    layer.respond(transaction, response(register, 100), 0.0)
    if final_first:
        layer.respond(transaction, response(register, 200), 0.1)
    actions = layer.transport_error(transaction, 0.2)
    assert actions == [DeliverTransportError(transaction), Terminated(transaction)]
    assert layer.next_deadline() is None


# --------------------------------------------------------------------------- matching, CANCEL


def test_cancel_gets_its_own_transaction_that_points_at_the_invite() -> None:
    layer = new_layer()
    invite, invite_transaction = receive_invite(layer)
    layer.respond(invite_transaction, response(invite, 180), 0.05)
    cancel = request("CANCEL", invite.branch)
    (delivered,) = layer.receive(cancel, PEER, 1.0)
    assert isinstance(delivered, DeliverRequest)
    assert delivered.cancels is invite_transaction
    cancel_transaction = delivered.transaction
    assert isinstance(cancel_transaction, NonInviteServerTransaction)
    assert cancel_transaction is not invite_transaction
    ok, terminated = response(cancel, 200), response(invite, 487)
    assert layer.respond(cancel_transaction, ok, 1.0) == [Send(cancel_transaction, ok, PEER)]
    assert layer.respond(invite_transaction, terminated, 1.0) == [
        Send(invite_transaction, terminated, PEER)
    ]
    assert layer.receive(cancel, PEER, 1.5) == [Send(cancel_transaction, ok, PEER)]
    assert layer.receive(build_ack(invite, terminated), PEER, 1.6) == []
    assert invite_transaction.state is State.CONFIRMED


def test_cancel_without_its_invite_is_delivered_with_nothing_to_cancel() -> None:
    layer = new_layer()
    (delivered,) = layer.receive(request("CANCEL", "z9hG4bK-unknown"), PEER, 0.0)
    assert isinstance(delivered, DeliverRequest)
    assert delivered.cancels is None  # the TU answers 481


def test_client_cancel_and_invite_share_a_branch_but_not_a_transaction() -> None:
    layer = new_layer()
    invite = request("INVITE")
    invite_transaction, _ = layer.send_request(invite, PEER, 0.0)
    layer.receive(response(invite, 180), PEER, 0.1)
    cancel = request("CANCEL", invite.branch)
    cancel_transaction, actions = layer.send_request(cancel, PEER, 1.0)
    assert sent(actions) == [cancel]
    assert layer.find_client(invite.branch, "CANCEL") is cancel_transaction
    assert layer.find_client(invite.branch, "INVITE") is invite_transaction
    cancel_ok, terminated = response(cancel, 200), response(invite, 487)
    assert layer.receive(cancel_ok, PEER, 1.1) == [DeliverResponse(cancel_transaction, cancel_ok)]
    actions = layer.receive(terminated, PEER, 1.2)
    assert actions == [
        Send(invite_transaction, build_ack(invite, terminated), PEER),
        DeliverResponse(invite_transaction, terminated),
    ]


def test_server_matching_needs_branch_sent_by_and_method() -> None:
    layer = new_layer()
    invite, transaction = receive_invite(layer)
    other_host = request("INVITE", invite.branch, sent_by="10.0.0.3:5060")
    (delivered,) = layer.receive(other_host, ("udp", "10.0.0.3", 5060), 0.1)
    assert isinstance(delivered, DeliverRequest)
    assert delivered.transaction is not transaction
    other_branch = request("INVITE", "z9hG4bK-2")
    assert of_type(layer.receive(other_branch, PEER, 0.1), DeliverRequest)
    same_branch_other_method = request("OPTIONS", invite.branch)
    assert of_type(layer.receive(same_branch_other_method, PEER, 0.1), DeliverRequest)
    assert layer.counters["server_transactions"] == 4
    assert layer.find_server(invite.branch, PEER_SENT_BY, "INVITE") is transaction


def test_responses_match_on_branch_and_cseq_method_only() -> None:
    layer = new_layer()
    options = request("OPTIONS")
    transaction, _ = layer.send_request(options, PEER, 0.0)
    assert layer.receive(response(request("OPTIONS", "z9hG4bK-other"), 200), PEER, 0.1) == []
    assert layer.receive(response(request("INFO", options.branch), 200), PEER, 0.1) == []
    assert layer.counters["stray_responses"] == 2
    from_elsewhere = Msg("OPTIONS", options.branch, "192.0.2.9:5060", 200)
    assert layer.receive(from_elsewhere, ("udp", "192.0.2.9", 5060), 0.2) == [
        DeliverResponse(transaction, from_elsewhere)
    ]
    assert layer.receive(Msg("OPTIONS", options.branch, status=99), PEER, 0.3) == []


def test_tu_cannot_reuse_a_branch_or_send_ack_as_a_transaction() -> None:
    layer = new_layer()
    layer.send_request(request("INVITE"), PEER, 0.0)
    with pytest.raises(ValueError, match="exists"):
        layer.send_request(request("INVITE"), PEER, 0.1)
    with pytest.raises(ValueError, match="ACK"):
        layer.send_request(request("ACK"), PEER, 0.1)


def test_abandon_ends_a_transaction_quietly_and_cancels_its_timers() -> None:
    layer = new_layer()
    invite = request("INVITE")
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    layer.receive(response(invite, 180), PEER, 0.1)
    assert layer.abandon(transaction, 40.0) == [Terminated(transaction)]
    assert layer.abandon(transaction, 41.0) == []  # idempotent
    options, _ = layer.send_request(request("OPTIONS", "z9hG4bK-2"), PEER, 50.0)
    assert layer.abandon(options, 50.1) == [Terminated(options)]
    assert layer.next_deadline() is None
    assert len(layer) == 0


def test_poll_before_a_deadline_does_nothing_and_idle_layer_has_no_deadline() -> None:
    layer = new_layer()
    assert layer.next_deadline() is None
    assert layer.poll(1000.0) == []
    layer.send_request(request("OPTIONS"), PEER, 0.0)
    assert layer.poll(0.49) == []
    assert len(sent(layer.poll(0.5))) == 1


def test_custom_t1_and_t2_scale_the_whole_schedule() -> None:
    layer = new_layer(t1=0.25, t2=1.0)
    layer.send_request(request("OPTIONS"), PEER, 0.0)
    timeline = run_until(layer, 100.0)
    # E: 0.25, 0.5, then 1 s; F = 64 * 0.25 = 16 s.
    assert send_times(timeline)[:5] == [0.25, 0.75, 1.75, 2.75, 3.75]
    assert [time for time, action in timeline if isinstance(action, DeliverTimeout)] == [16.0]


# --------------------------------------------------------------------------- machines alone


def test_machines_emit_timer_actions_with_rfc_deadlines() -> None:
    """The machine alone, without the layer: StartTimer/CancelTimer are visible."""
    invite = request("INVITE")
    transaction = InviteClientTransaction(
        invite,
        PEER,
        key=("b", "INVITE"),
        reliable=False,
        settings=TimerSettings(),
        build_ack=build_ack,
    )
    actions = transaction.start(10.0)
    assert actions == [
        Send(transaction, invite, PEER),
        StartTimer(transaction, Timer.A, 10.5),
        StartTimer(transaction, Timer.B, 42.0),
    ]
    assert transaction.handle(TimerFired(Timer.A), 10.5) == [
        Send(transaction, invite, PEER),
        StartTimer(transaction, Timer.A, 11.5),
    ]
    assert transaction.handle(TimerFired(Timer.D), 11.0) == []  # not armed: stale, ignored
    ringing = response(invite, 180)
    assert transaction.handle(Received(ringing), 11.0) == [
        CancelTimer(transaction, Timer.A),
        CancelTimer(transaction, Timer.B),
        DeliverResponse(transaction, ringing),
    ]
    assert transaction.handle(TimerFired(Timer.A), 11.5) == []  # cancelled: stale
    with pytest.raises(IllegalTransition):
        transaction.start(12.0)


@pytest.mark.parametrize(
    "machine",
    [
        InviteClientTransaction,
        NonInviteClientTransaction,
        InviteServerTransaction,
        NonInviteServerTransaction,
    ],
)
def test_every_state_of_every_table_can_be_left_and_terminated_is_final(machine: type) -> None:
    table = machine.TRANSITIONS
    states = {state for state, _ in table} | {machine.INITIAL[0]}
    assert State.TERMINATED not in states
    for state in states:
        assert (state, Input.ABANDON) in table
    reachable = {machine.INITIAL[0]} | {next_state for next_state, _ in table.values()}
    assert reachable == states | {State.TERMINATED}


# --------------------------------------------------------------------------- lossy network


@dataclass
class CallRecord:
    scenario: str
    finals: list[int]
    provisional_count: int = 0
    cancelled: bool = False
    bye_status: int | None = None


class LossyNetwork:
    """Two layers back to back over UDP that drops, duplicates and reorders datagrams."""

    def __init__(self, seed: int, loss: float = 0.10, duplicate: float = 0.05) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self.layers = {"uac": new_layer(), "uas": new_layer()}
        self.failures: list[Action] = []
        self.calls: dict[str, CallRecord] = {}
        self.client_transactions: dict[str, list[object]] = defaultdict(list)
        self.delivered_to_uas: Counter[tuple[str, str]] = Counter()
        self.acked_calls: set[str] = set()
        self.datagrams = 0
        self.dropped = 0

    def at(self, time: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._events, (time, next(self._sequence), callback))

    def transmit(self, destination: str, message: Msg) -> None:
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self.datagrams += 1
            if self.rng.random() < self.loss:
                self.dropped += 1
                continue
            delay = self.rng.uniform(0.005, 0.08)  # enough spread to reorder
            self.at(self.now + delay, lambda: self.arrive(destination, message))

    def arrive(self, side: str, message: Msg) -> None:
        source = "uac" if side == "uas" else "uas"
        self.dispatch(side, self.layers[side].receive(message, source, self.now))

    def dispatch(self, side: str, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.transmit(action.destination, action.message)
            elif isinstance(action, DeliverTimeout | DeliverTransportError):
                self.failures.append(action)
            elif isinstance(action, DeliverRequest):
                assert side == "uas"
                self.server_tu(action)
            elif isinstance(action, DeliverResponse):
                assert side == "uac"
                self.client_tu(action)

    def run(self, until: float) -> None:
        while True:
            candidates = [
                (deadline, name)
                for name, layer in self.layers.items()
                if (deadline := layer.next_deadline()) is not None
            ]
            if self._events:
                candidates.append((self._events[0][0], ""))
            if not candidates:
                return
            time, name = min(candidates)
            if time > until:
                return
            self.now = time
            if name:
                self.dispatch(name, self.layers[name].poll(time))
            else:
                heapq.heappop(self._events)[2]()

    # The client TU: starts calls, ACKs 2xx itself, cancels, hangs up.

    def start_call(self, call: str, scenario: str) -> None:
        self.calls[call] = CallRecord(scenario, [])
        method = {"options": "OPTIONS", "register": "REGISTER"}.get(scenario, "INVITE")
        message = request(method, f"z9hG4bK-{call}", label=scenario)
        transaction, actions = self.layers["uac"].send_request(message, "uas", self.now)
        self.client_transactions[call].append(transaction)
        self.dispatch("uac", actions)

    def client_tu(self, action: DeliverResponse) -> None:
        message = action.response
        call = message.branch.removeprefix("z9hG4bK-")
        record = self.calls[call]
        if message.method == "CANCEL":
            return
        if message.method == "BYE":
            if message.status >= 200:
                record.bye_status = message.status
            return
        if message.status < 200:
            record.provisional_count += 1
            if record.scenario == "cancel" and not record.cancelled and message.status == 180:
                record.cancelled = True
                cancel = request("CANCEL", message.branch)
                _, actions = self.layers["uac"].send_request(cancel, "uas", self.now)
                self.dispatch("uac", actions)
            return
        record.finals.append(message.status)
        if message.method == "INVITE" and message.status < 300:
            self.transmit("uas", request("ACK", f"z9hG4bK-ack-{call}", label=call))
            if len(record.finals) == 1:
                self.at(self.now + 0.5, lambda: self.hang_up(call))

    def hang_up(self, call: str) -> None:
        bye = request("BYE", f"z9hG4bK-{call}", label="bye")
        _, actions = self.layers["uac"].send_request(bye, "uas", self.now)
        self.dispatch("uac", actions)

    # The server TU: rings, answers, rejects, retransmits its 2xx until the ACK comes.

    def server_tu(self, action: DeliverRequest) -> None:
        message = action.request
        if action.transaction is None:
            assert message.method == "ACK"
            self.acked_calls.add(message.label)
            return
        transaction = action.transaction
        self.delivered_to_uas[(message.branch, message.method)] += 1
        uas = self.layers["uas"]

        def respond_later(delay: float, status: int) -> None:
            def respond() -> None:
                if transaction.state is State.TERMINATED:
                    return
                self.dispatch("uas", uas.respond(transaction, response(message, status), self.now))

            self.at(self.now + delay, respond)

        if message.method == "INVITE":
            respond_later(0.05, 180)
            if message.label == "answer":
                respond_later(1.0, 200)
                self.at(self.now + 1.0, lambda: self.retransmit_2xx(transaction, message, 0.5))
            elif message.label == "busy":
                respond_later(1.0, 486)
        elif message.method == "CANCEL":
            self.dispatch("uas", uas.respond(transaction, response(message, 200), self.now))
            invite = action.cancels
            if invite is not None and invite.state is State.PROCEEDING:
                self.dispatch("uas", uas.respond(invite, response(invite.request, 487), self.now))
        elif message.label == "register":
            self.dispatch("uas", uas.respond(transaction, response(message, 100), self.now))
            respond_later(1.5, 200)
        else:
            self.dispatch("uas", uas.respond(transaction, response(message, 200), self.now))

    def retransmit_2xx(
        self, transaction: InviteServerTransaction, invite: Msg, interval: float
    ) -> None:
        """RFC 3261 §13.3.1.4, the TU's job: T1 doubling to T2 until the ACK arrives."""
        call = invite.branch.removeprefix("z9hG4bK-")
        if call in self.acked_calls or transaction.state is not State.ACCEPTED:
            return
        self.at(self.now + interval, lambda: self._resend_2xx(transaction, invite, interval))

    def _resend_2xx(
        self, transaction: InviteServerTransaction, invite: Msg, interval: float
    ) -> None:
        call = invite.branch.removeprefix("z9hG4bK-")
        if call in self.acked_calls or transaction.state is not State.ACCEPTED:
            return
        self.dispatch(
            "uas", self.layers["uas"].respond(transaction, response(invite, 200), self.now)
        )
        self.retransmit_2xx(transaction, invite, min(interval * 2, 4.0))


EXPECTED_FINAL = {"answer": 200, "busy": 486, "cancel": 487, "options": 200, "register": 200}


@pytest.mark.parametrize("seed", range(6))
def test_transactions_complete_across_a_network_losing_10_percent(seed: int) -> None:
    network = LossyNetwork(seed)
    scenarios = list(EXPECTED_FINAL)
    for index in range(60):
        call = f"{seed}-{index}"
        scenario = scenarios[index % len(scenarios)]
        start_at = network.rng.uniform(0.0, 20.0)
        network.at(
            start_at, lambda call=call, scenario=scenario: network.start_call(call, scenario)
        )
    network.run(until=300.0)

    assert network.failures == []
    assert network.dropped > 0
    for call, record in network.calls.items():
        expected = EXPECTED_FINAL[record.scenario]
        assert record.finals, f"call {call} ({record.scenario}) got no final response"
        assert set(record.finals) == {expected}, call
        if record.scenario == "answer":
            assert call in network.acked_calls  # the 2xx/ACK exchange survived the losses
            assert record.bye_status == 200
        else:
            assert len(record.finals) == 1, call  # non-2xx finals reach the TU exactly once
    # Every request reached the server TU exactly once, retransmissions notwithstanding.
    assert network.delivered_to_uas and set(network.delivered_to_uas.values()) == {1}
    for layer in network.layers.values():
        assert len(layer) == 0
        assert layer.next_deadline() is None
        assert layer.counters["retransmissions"] > 0
        assert layer.counters["timeouts"] == 0


# --------------------------------------------------------------------------- resting transactions


@dataclass(frozen=True)
class FrozenMsg:
    """What the test's freeze hook keeps: which message it was, nothing to parse."""

    of: Msg


def freeze_msg(message: Msg | FrozenMsg) -> FrozenMsg:
    return message if isinstance(message, FrozenMsg) else FrozenMsg(message)


def freezing_layer() -> TransactionLayer:
    return TransactionLayer(build_ack=build_ack, build_trying=build_trying, freeze=freeze_msg)


def test_a_server_transaction_at_rest_keeps_and_resends_only_frozen_messages() -> None:
    layer = freezing_layer()
    invite = request("INVITE")
    (delivered,) = layer.receive(invite, PEER, 0.0)
    transaction = delivered.transaction
    assert transaction.request is invite  # Proceeding: may still build a 100 from it
    busy = response(invite, 486)
    # The first send is the TU's message; from then on the transaction holds its frozen form.
    assert layer.respond(transaction, busy, 0.1) == [Send(transaction, busy, PEER)]
    assert transaction.state is State.COMPLETED
    assert transaction.request == FrozenMsg(invite)
    assert transaction.last_response == FrozenMsg(busy)
    assert layer.receive(invite, PEER, 0.2) == [Send(transaction, FrozenMsg(busy), PEER)]
    assert send_times(run_until(layer, 0.7)) == [0.6]  # timer G resends the frozen copy too


def test_an_invite_server_in_accepted_freezes_each_2xx_the_tu_resends() -> None:
    layer = freezing_layer()
    invite = request("INVITE")
    (delivered,) = layer.receive(invite, PEER, 0.0)
    transaction = delivered.transaction
    ok = response(invite, 200)
    layer.respond(transaction, ok, 0.1)
    assert transaction.state is State.ACCEPTED
    again = response(invite, 200, "retransmitted by the TU")
    assert layer.respond(transaction, again, 0.6) == [Send(transaction, again, PEER)]
    assert transaction.last_response == FrozenMsg(again)  # not FrozenMsg(FrozenMsg(...))
    ack = build_ack(invite, ok)
    (passed_up,) = layer.receive(ack, PEER, 0.7)
    assert isinstance(passed_up, DeliverRequest) and passed_up.request is ack


def test_client_transactions_at_rest_freeze_request_and_ack() -> None:
    layer = freezing_layer()
    invite = request("INVITE", "z9hG4bK-c1")
    transaction, _ = layer.send_request(invite, PEER, 0.0)
    busy = response(invite, 486)
    actions = layer.receive(busy, PEER, 0.1)
    ack = build_ack(invite, busy)
    assert sent(actions) == [ack]  # built from the live INVITE before it was frozen
    assert transaction.request == FrozenMsg(invite) and transaction.ack == FrozenMsg(ack)
    assert sent(layer.receive(busy, PEER, 0.2)) == [FrozenMsg(ack)]
    bye = request("BYE", "z9hG4bK-c2")
    bye_transaction, _ = layer.send_request(bye, PEER, 0.0)
    assert bye_transaction.request is bye  # Trying: retransmits the live request
    layer.receive(response(bye, 200), PEER, 0.1)
    assert bye_transaction.state is State.COMPLETED
    assert bye_transaction.request == FrozenMsg(bye)
