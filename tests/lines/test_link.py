"""Reliable link endpoint (firmware/lines/link.py): time is a float the tests advance."""

from __future__ import annotations

import heapq
import random

import pytest

from firmware.lines.link import LinkEndpoint
from firmware.lines.protocol import (
    Ack,
    Digit,
    Fault,
    Frame,
    FrameDecoder,
    Heartbeat,
    Hello,
    Hook,
    Inventory,
    LoopCurrent,
    Message,
    PortKind,
    RingDetect,
    encode_frame,
)


def frames_in(data: bytes) -> list[Frame]:
    return FrameDecoder().feed(data)


def split_frames(data: bytes) -> list[bytes]:
    """Endpoints always write whole frames, each with both flags."""
    return [b"\x7e" + body + b"\x7e" for body in data.split(b"\x7e") if body]


def numbered(count: int, offset: int = 0) -> list[Message]:
    """Distinct messages so that order and duplicates are visible."""
    return [Fault(port=0, code=(offset + index) % 256, text=str(index)) for index in range(count)]


def pump(
    a: LinkEndpoint, b: LinkEndpoint, a_output: bytes, now: float
) -> tuple[list[Message], list[Message]]:
    """Lossless back-to-back wire: shuttle bytes until both sides are quiet.

    Returns (messages a received, messages b received).
    """
    to_b, to_a = a_output, b""
    got_a: list[Message] = []
    got_b: list[Message] = []
    while to_b or to_a:
        messages, to_a_more = b.receive(to_b, now)
        got_b += messages
        messages, to_b = a.receive(to_a + to_a_more, now)
        got_a += messages
        to_a = b""
    return got_a, got_b


def established_pair(window: int = 32) -> tuple[LinkEndpoint, LinkEndpoint]:
    host = LinkEndpoint(window=window)
    card = LinkEndpoint(window=window)
    host.start_session(0.0)
    _, got_card = pump(host, card, host.send(Hello(), 0.0), 0.0)
    assert got_card == [Hello()]
    card.start_session(0.0)
    _, got_host = pump(card, host, card.send(Inventory("1.0", [PortKind.FXS]), 0.0), 0.0)
    assert got_host == [Inventory("1.0", [PortKind.FXS])]
    return host, card


def test_back_to_back_delivers_in_order_both_ways() -> None:
    host, card = established_pair()
    outgoing = numbered(100)
    data = b"".join(host.send(message, 1.0) for message in outgoing)
    _, got_card = pump(host, card, data, 1.0)
    assert got_card == outgoing
    incoming = numbered(50, offset=7)
    _, got_host = pump(card, host, b"".join(card.send(m, 1.0) for m in incoming), 1.0)
    assert got_host == incoming
    assert host.pending == card.pending == 0
    assert host.next_deadline() is None
    assert host.counters["sent"] == 101
    assert card.counters["received"] == 101
    assert card.counters["acks_sent"] == 101
    assert host.counters["retransmits"] == 0


def test_first_frame_carries_syn_and_holds_the_rest_until_acked() -> None:
    host, card = LinkEndpoint(), LinkEndpoint()
    host.start_session(0.0)
    first = host.send(Hello(), 0.0)
    assert host.send(Heartbeat(), 0.0) == b""
    assert host.send(Heartbeat(), 0.0) == b""
    assert [(frame.seq, frame.syn) for frame in frames_in(first)] == [(0, True)]
    delivered, ack = card.receive(first, 0.01)
    assert delivered == [Hello()]
    _, released = host.receive(ack, 0.02)
    assert [(frame.seq, frame.syn) for frame in frames_in(released)] == [(1, False), (2, False)]


class LossyChannel:
    """Drops, duplicates and reorders whole frames (random delay per copy)."""

    def __init__(self, rng: random.Random, loss: float, duplicate: float, max_delay: float):
        self._rng = rng
        self._loss = loss
        self._duplicate = duplicate
        self._max_delay = max_delay
        self._in_transit: list[tuple[float, int, bytes]] = []
        self._counter = 0

    def put(self, data: bytes, now: float) -> None:
        for frame in split_frames(data):
            if self._rng.random() < self._loss:
                continue
            copies = 2 if self._rng.random() < self._duplicate else 1
            for _ in range(copies):
                arrival = now + self._rng.uniform(0.001, self._max_delay)
                self._counter += 1
                heapq.heappush(self._in_transit, (arrival, self._counter, frame))

    def take(self, now: float) -> bytes:
        out = bytearray()
        while self._in_transit and self._in_transit[0][0] <= now:
            out += heapq.heappop(self._in_transit)[2]
        return bytes(out)

    @property
    def empty(self) -> bool:
        return not self._in_transit


@pytest.mark.parametrize("seed", range(6))
def test_lossy_channel_delivers_everything_exactly_once_in_order(seed: int) -> None:
    rng = random.Random(seed)
    # Enough attempts that losing one frame 20 times in a row (both ways) never happens.
    ends = [LinkEndpoint(max_attempts=20, window=8), LinkEndpoint(max_attempts=20, window=8)]
    channels = [LossyChannel(rng, 0.2, 0.1, 0.04), LossyChannel(rng, 0.2, 0.1, 0.04)]
    to_send = [numbered(300), numbered(300, offset=100)]
    expected = [list(to_send[1]), list(to_send[0])]  # what each end must receive
    received: list[list[Message]] = [[], []]
    now = 0.0
    for end in ends:
        end.start_session(now)
    for _ in range(20000):
        now += 0.005
        for index, end in enumerate(ends):
            out_channel, in_channel = channels[index], channels[1 - index]
            if to_send[index] and rng.random() < 0.6:
                out_channel.put(end.send(to_send[index].pop(0), now), now)
            messages, out = end.receive(in_channel.take(now), now)
            received[index] += messages
            out_channel.put(out, now)
            out, given_up = end.poll(now)
            assert given_up == []
            out_channel.put(out, now)
        idle = all(not queue for queue in to_send) and all(end.pending == 0 for end in ends)
        if idle and all(channel.empty for channel in channels):
            break
    assert received == expected
    for end in ends:
        assert end.counters["retransmits"] > 0
        assert end.counters["duplicates"] > 0
        assert end.counters["resyncs"] == 1
        assert end.counters["given_up"] == 0


def test_out_of_order_frames_wait_for_the_gap() -> None:
    host, card = established_pair()
    first = host.send(Digit(port=1, digit="1"), 1.0)
    second = host.send(Digit(port=1, digit="2"), 1.0)
    delivered, ack_second = card.receive(second, 1.01)
    assert delivered == []
    assert [frame.message for frame in frames_in(ack_second)] == [Ack(acked_seq=2)]
    delivered, _ = card.receive(first, 1.02)
    assert delivered == [Digit(port=1, digit="1"), Digit(port=1, digit="2")]


def test_retransmission_timing_and_give_up() -> None:
    host = LinkEndpoint(retransmit_after=0.1, max_attempts=5)
    host.start_session(10.0)
    frame = host.send(Hello(), 10.0)
    assert host.next_deadline() == pytest.approx(10.1)
    assert host.poll(10.099) == (b"", [])
    for attempt_time in (10.1, 10.2, 10.3, 10.4):
        assert host.poll(attempt_time) == (frame, [])  # the same bytes, SYN included
        assert host.next_deadline() == pytest.approx(attempt_time + 0.1)
        assert host.poll(attempt_time + 0.05) == (b"", [])
    assert host.poll(10.5) == (b"", [Hello()])
    assert host.counters["retransmits"] == 4
    assert host.counters["given_up"] == 1
    assert host.pending == 0
    assert host.next_deadline() is None


def test_late_poll_spaces_retransmissions_from_now() -> None:
    host = LinkEndpoint(retransmit_after=0.1)
    frame = host.send(Hello(), 0.0)
    assert host.poll(0.35) == (frame, [])
    assert host.next_deadline() == pytest.approx(0.45)


def test_ack_stops_retransmission() -> None:
    host, card = LinkEndpoint(), LinkEndpoint()
    frame = host.send(Hello(), 0.0)
    _, ack = card.receive(frame, 0.01)
    host.receive(ack, 0.02)
    assert host.next_deadline() is None
    assert host.poll(5.0) == (b"", [])


def test_give_up_hands_back_everything_unconfirmed_and_next_frame_resyncs() -> None:
    host, card = established_pair(window=2)
    lost = host.send(Digit(port=1, digit="1"), 1.0)
    behind_gap = host.send(Digit(port=1, digit="2"), 1.0)
    assert host.send(Digit(port=1, digit="3"), 1.0) == b""  # window full: backlog
    assert lost and behind_gap
    # The second frame arrives and is acked, the first never does.
    delivered, ack = card.receive(behind_gap, 1.01)
    assert delivered == []
    assert host.receive(ack, 1.02) == ([], b"")
    now = 1.0
    given_up: list[Message] = []
    while not given_up:
        now += 0.1
        _, given_up = host.poll(now)
    assert given_up == [
        Digit(port=1, digit="1"),
        Digit(port=1, digit="2"),
        Digit(port=1, digit="3"),
    ]
    assert host.pending == 0
    fresh = host.send(Heartbeat(), now)
    assert [frame.syn for frame in frames_in(fresh)] == [True]
    delivered, _ = card.receive(fresh, now)
    assert delivered == [Heartbeat()]
    assert card.counters["resyncs"] == 2


def test_peer_restart_resyncs_receiver() -> None:
    host, card = established_pair()
    _, got = pump(host, card, b"".join(host.send(m, 1.0) for m in numbered(40)), 1.0)
    assert len(got) == 40
    restarted_host = LinkEndpoint()  # a new process: seq starts again at 0
    first = restarted_host.send(Hello(), 5.0)
    assert [(frame.seq, frame.syn) for frame in frames_in(first)] == [(0, True)]
    _, got = pump(restarted_host, card, first, 5.0)
    assert got == [Hello()]
    _, got = pump(restarted_host, card, restarted_host.send(Heartbeat(), 5.1), 5.1)
    assert got == [Heartbeat()]
    assert card.counters["resyncs"] == 2


def test_new_session_on_the_same_endpoint_is_accepted_at_once() -> None:
    host, card = established_pair()
    in_flight = host.send(Digit(port=1, digit="7"), 0.0)
    card.receive(in_flight[:-3], 0.0)  # cut short: never arrives
    host.start_session(0.01)
    assert host.pending == 0
    frame = host.send(Hello(), 0.01)
    assert [frame.syn for frame in frames_in(frame)] == [True]
    _, got = pump(host, card, frame, 0.02)
    assert got == [Hello()]


def test_retransmitted_syn_is_not_delivered_twice() -> None:
    host, card = LinkEndpoint(), LinkEndpoint()
    frame = host.send(Hello(), 0.0)
    delivered, _lost_ack = card.receive(frame, 0.01)
    assert delivered == [Hello()]
    retransmission, _ = host.poll(0.1)
    assert retransmission == frame
    delivered, ack = card.receive(retransmission, 0.11)
    assert delivered == []
    assert [f.message for f in frames_in(ack)] == [Ack(acked_seq=0)]
    assert card.counters["duplicates"] == 1
    assert card.counters["resyncs"] == 1
    host.receive(ack, 0.12)
    _, got = pump(host, card, host.send(Heartbeat(), 0.2), 0.2)
    assert got == [Heartbeat()]


def test_duplicate_frames_are_reacked_and_dropped() -> None:
    host, card = established_pair()
    frame = host.send(Digit(port=1, digit="9"), 1.0)
    assert card.receive(frame, 1.0)[0] == [Digit(port=1, digit="9")]
    delivered, ack = card.receive(frame + frame, 1.1)
    assert delivered == []
    assert len(frames_in(ack)) == 2
    assert card.counters["duplicates"] == 2


def test_frames_without_a_session_are_dropped_unacked() -> None:
    rebooted_card = LinkEndpoint()
    stale = encode_frame(Heartbeat(), seq=57)
    assert rebooted_card.receive(stale, 0.0) == ([], b"")
    assert rebooted_card.counters["out_of_session"] == 1


def test_window_full_then_drains() -> None:
    host, card = established_pair(window=4)
    outgoing = numbered(10)
    written = [host.send(message, 1.0) for message in outgoing]
    assert [len(frames_in(data)) for data in written] == [1, 1, 1, 1] + [0] * 6
    assert host.pending == 10
    # Nothing is due by time alone: the backlog waits for ACKs, not for poll().
    assert host.poll(1.01) == (b"", [])
    _, got = pump(host, card, b"".join(written), 1.02)
    assert got == outgoing
    assert host.pending == 0
    assert host.counters["sent"] == 11


def test_late_and_foreign_acks_are_harmless() -> None:
    host, _card = established_pair()
    messages, out = host.receive(encode_frame(Ack(acked_seq=200), 0) * 2, 1.0)
    assert (messages, out) == ([], b"")
    assert host.counters["acks_received"] == 3


def test_refuses_acks_and_unencodable_messages() -> None:
    host = LinkEndpoint()
    with pytest.raises(ValueError):
        host.send(Ack(acked_seq=1), 0.0)
    with pytest.raises(ValueError):
        host.send(Fault(port=1, code=1, text="x" * 250), 0.0)
    assert host.pending == 0


@pytest.mark.parametrize(
    "options", [{"window": 0}, {"window": 65}, {"max_attempts": 0}, {"retransmit_after": 0}]
)
def test_rejects_bad_configuration(options: dict) -> None:
    with pytest.raises(ValueError):
        LinkEndpoint(**options)


def test_counters_include_the_decoder() -> None:
    counters = LinkEndpoint().counters
    expected = [
        *("frames_ok", "bad_crc", "too_short", "too_long", "unknown_type", "bad_payload"),
        *("garbage_bytes", "sent", "received", "retransmits", "duplicates", "given_up"),
        *("acks_sent", "acks_received", "resyncs"),
    ]
    for name in expected:
        assert counters[name] == 0


# A recorded start-up, as the host saw it on the wire (hex, card -> host).  Guards the byte
# format against accidental change: the card ACKs HELLO, answers INVENTORY (SYN, seq 0) and
# reports the state of its three ports.
RECORDED_CARD_TO_HOST = (
    "7e0000000084c07e"
    "7e80010005312e322e300301010299457e"
    "7e81000101018dad7e"
    "7e8100020200918f7e"
    "7e8400030300b6d97e"
    "7e8700040300dd9b7e"
)
RECORDED_HOST_TO_CARD = (
    "7e010100c89d7e"  # HELLO, SYN, seq 0
    "7e0000000084c07e"  # ACK 0 ... 4
    "7e0000000194e17e"
    "7e00000002a4827e"
    "7e00000003b4a37e"
    "7e00000004c4447e"
)


def test_recorded_trace_replays() -> None:
    host = LinkEndpoint()
    host.start_session(0.0)
    written = host.send(Hello(), 0.0)
    trace = bytes.fromhex(RECORDED_CARD_TO_HOST)
    delivered: list[Message] = []
    for start in range(0, len(trace), 7):  # arbitrary serial read sizes
        messages, out = host.receive(trace[start : start + 7], 0.01)
        delivered += messages
        written += out
    assert written.hex() == RECORDED_HOST_TO_CARD
    assert delivered == [
        Inventory(firmware_version="1.2.0", ports=[PortKind.FXS, PortKind.FXS, PortKind.FXO]),
        Hook(port=1, off_hook=True),
        Hook(port=2, off_hook=False),
        RingDetect(port=3, ringing=False),
        LoopCurrent(port=3, present=False),
    ]
    assert host.pending == 0
    assert host.counters["frames_ok"] == 6
