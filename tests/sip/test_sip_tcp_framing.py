"""SIP over TCP without sockets: cutting a byte stream into messages, and Via rewriting."""

from __future__ import annotations

import random

import pytest

from firmware.sip.message import parse_message
from firmware.sip.stack import Peer, set_via_transport, set_via_transport_bytes, transport_of
from firmware.sip.tcp import MAX_MESSAGE, Frame, FramingError, Ping, StreamFramer

BODY = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"


def options(call_id: str = "a", body: bytes = b"", length: str | None = None) -> bytes:
    length = str(len(body)) if length is None else length
    return (
        "OPTIONS sip:b2b@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK" + call_id + "\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:b2b@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        + (f"Content-Length: {length}\r\n" if length != "none" else "")
        + "\r\n"
    ).encode() + body


def frames(events: list) -> list[bytes]:
    return [event.data for event in events if isinstance(event, Frame)]


def test_pipelined_messages_in_one_segment_come_out_one_by_one() -> None:
    stream = options("a", BODY) + options("b") + options("c", b"xyz")
    framer = StreamFramer()
    assert frames(framer.feed(stream)) == [options("a", BODY), options("b"), options("c", b"xyz")]
    assert framer.buffered == 0


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
def test_a_message_split_across_segments_anywhere_is_reassembled(size: int) -> None:
    stream = options("a", BODY) + b"\r\n\r\n" + options("b", b"12345")
    framer = StreamFramer()
    events = []
    for start in range(0, len(stream), size):
        events += framer.feed(stream[start : start + size])
    assert frames(events) == [options("a", BODY), options("b", b"12345")]
    assert [type(event) for event in events] == [Frame, Ping, Frame]
    assert parse_message(frames(events)[0], stream=True).body == BODY


def test_crlf_keepalives_between_messages() -> None:
    framer = StreamFramer()
    # RFC 5626 double-CRLF pings are reported (the transport answers them); a lone CRLF
    # (a pong, or padding before a start line, RFC 3261 §7.5) is dropped.
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [Ping(), Ping()]
    assert framer.feed(b"\r\n") == []  # could still be the first half of a ping
    assert framer.feed(b"\r\n") == [Ping()]
    assert frames(framer.feed(b"\r\n" + options())) == [options()]
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n\r\n") == [Ping()]


def test_missing_content_length_is_a_framing_error_with_the_head_for_a_400() -> None:
    framer = StreamFramer()
    events = framer.feed(options("a", length="none") + options("b"))
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert events[0].status == 400
    assert events[0].head == options("a", length="none")
    assert "Content-Length" in events[0].reason
    assert framer.dead and framer.feed(options("c")) == [], "a broken stream stays broken"


@pytest.mark.parametrize("value", ["abc", "-1", "99999999999", "1, 2"])
def test_garbage_content_length_is_a_framing_error(value: str) -> None:
    events = StreamFramer().feed(options(length=value))
    assert [type(event) for event in events] == [FramingError]


def test_conflicting_content_lengths_are_a_framing_error() -> None:
    message = options().replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 5\r\n")
    assert [type(event) for event in StreamFramer().feed(message)] == [FramingError]


def test_a_line_that_is_not_sip_fails_at_once_without_waiting_for_a_blank_line() -> None:
    events = StreamFramer().feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert events[0].head is None
    events = StreamFramer().feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n")  # a TLS hello
    assert [type(event) for event in events] == [FramingError]


def test_random_bytes_never_escape_as_anything_but_events() -> None:
    rng = random.Random(5)
    for _ in range(300):
        framer = StreamFramer(max_message=4096)
        data = rng.randbytes(rng.randint(1, 6000))
        events = framer.feed(data)
        assert all(isinstance(event, Frame | Ping | FramingError) for event in events)
        assert framer.dead or framer.buffered <= 4096


def test_oversized_messages_are_refused_with_513_or_dropped_without_a_head() -> None:
    limit = MAX_MESSAGE
    framer = StreamFramer(limit)
    events = framer.feed(options(body=b"x" * (limit + 1)))
    assert [type(event) for event in events] == [FramingError]
    assert events[0].status == 513 and events[0].head is not None
    # A head that never ends: dropped once it is over the cap, with nothing to answer.
    framer = StreamFramer(1000)
    assert framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n") == []
    events = framer.feed(b"X-Pad: " + b"y" * 1000)
    assert [type(event) for event in events] == [FramingError]
    assert events[0].head is None
    # Announced too large but still arriving: refused as soon as the cap is passed.
    framer = StreamFramer(1000)
    assert framer.feed(options(length="5000")) == []
    assert [type(event) for event in framer.feed(b"z" * 1000)] == [FramingError]


def test_the_top_via_names_the_transport_the_request_leaves_on() -> None:
    request = parse_message(
        options().replace(b"SIP/2.0/TCP", b"SIP/2.0/UDP").replace(
            b"Max-Forwards", b"Via: SIP/2.0/UDP proxy:5060;branch=z9hG4bKp\r\nMax-Forwards"
        )
    )
    set_via_transport(request, "tcp")
    assert request.headers.top_via.transport == "TCP"
    assert request.headers.vias[1].transport == "UDP", "only the top Via is ours"
    assert request.headers.top_via.branch == "z9hG4bKa"
    set_via_transport(request, "udp")
    assert request.headers.top_via.transport == "UDP"


def test_the_via_of_a_request_in_wire_form_is_rewritten_and_a_response_is_left_alone() -> None:
    ack = b"ACK sip:b@c SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\nVia: SIP/2.0/UDP"
    rewritten = set_via_transport_bytes(ack, "tcp")
    assert rewritten == ack.replace(b"SIP/2.0/UDP 1.2.3.4", b"SIP/2.0/TCP 1.2.3.4")
    assert rewritten.endswith(b"Via: SIP/2.0/UDP"), "the body is not touched"
    response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n"
    assert set_via_transport_bytes(response, "tcp") == response


def test_a_peer_is_a_plain_address_that_remembers_its_transport() -> None:
    peer = Peer("10.0.0.5", 5060, "tcp")
    host, port = peer
    assert (host, port) == ("10.0.0.5", 5060) == peer
    assert "{}:{}".format(*peer) == "10.0.0.5:5060"  # log lines unpack it
    assert transport_of(peer) == "tcp"
    assert transport_of(("10.0.0.5", 5060)) == "udp"
    assert transport_of(peer, "UDP") == "udp"
    with pytest.raises(ValueError):
        transport_of(peer, "sctp")


def test_binary_garbage_or_an_endless_start_line_fails_before_the_size_cap() -> None:
    assert [type(event) for event in StreamFramer().feed(b"OPTIONS sip:a\x00b")] == [FramingError]
    framer = StreamFramer()
    assert framer.feed(b"OPTIONS sip:" + b"a" * 8000) == []
    assert [type(event) for event in framer.feed(b"a" * 500)] == [FramingError]
