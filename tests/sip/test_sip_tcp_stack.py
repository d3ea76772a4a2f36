"""The SIP stack over TCP on real sockets: framing, keep-alives, limits, connection reuse,
responses on the request's connection (or a new one, RFC 3261 §18.2.2), client requests."""

from __future__ import annotations

import asyncio
import random
import re
import socket
from collections.abc import AsyncIterator

import pytest

from firmware.sip.headers import Headers
from firmware.sip.message import Request, make_response, new_branch, parse_message
from firmware.sip.stack import Address, SipStack
from firmware.sip.tcp import TcpLimits
from firmware.sip.timers import TimerSettings
from firmware.sip.transaction import ServerTransaction
from firmware.sip.uri import parse_uri

_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)")


def options(call_id: str, via_port: int = 5099, body: bytes = b"", transport: str = "TCP") -> bytes:
    return (
        "OPTIONS sip:b2b@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{via_port};branch=z9hG4bK{call_id}\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:b2b@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_message(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    """One message off a stream, framed by its Content-Length (the test's own framing)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    match = _LENGTH.search(head)
    length = int(match.group(1)) if match else 0
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    return head + body


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    """True when the far end closed the connection (EOF or reset) within `timeout`."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except ConnectionError:
        pass
    return True


class Answerer:
    """A minimal transaction user: 200 to everything (after `delay`), remembering requests."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[tuple[Request, Address]] = []
        self.stack: SipStack | None = None

    def __call__(self, transaction: ServerTransaction | None, request: Request, source: Address) -> None:
        self.requests.append((request, source))
        if transaction is None or request.method == "ACK":
            return
        response = make_response(request, 200)
        response.headers.add("X-Body-Length", str(len(request.body)))
        assert self.stack is not None
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self.stack.respond, transaction, response)
        else:
            self.stack.respond(transaction, response)


async def start_stack(answerer: Answerer | None = None, **kwargs: object) -> tuple[SipStack, Answerer]:
    answerer = answerer or Answerer()
    stack = SipStack(answerer, **kwargs)  # type: ignore[arg-type]
    answerer.stack = stack
    await stack.start("127.0.0.1", 0)
    return stack, answerer


@pytest.fixture
async def served() -> AsyncIterator[tuple[SipStack, Answerer]]:
    stack, answerer = await start_stack()
    try:
        yield stack, answerer
    finally:
        await stack.stop()


async def udp_options(target: Address, call_id: str) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        client.sendto(options(call_id, client.getsockname()[1], transport="UDP"), target)
        return await asyncio.wait_for(loop.sock_recv(client, 4096), 2.0)


def outgoing(method: str, port: int, call_id: str = "out1") -> Request:
    """A request the way a dialog builds it: Via says UDP, the stack must fix it."""
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()};rport")
    headers.add("From", "<sip:pbx@127.0.0.1>;tag=abc")
    headers.add("To", "<sip:far@127.0.0.1>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"1 {method}")
    headers.add("Max-Forwards", "70")
    return Request(method, parse_uri("sip:far@127.0.0.1"), headers)


# ----------------------------------------------------------------------------- receiving


async def test_the_stack_listens_on_udp_and_tcp_on_the_same_port(served: tuple[SipStack, Answerer]) -> None:
    stack, _ = served
    host, port = stack.local_address
    assert stack.listening == [f"udp:{host}:{port}", f"tcp:{host}:{port}"]
    status = stack.transport_status()
    assert status["listening"] == stack.listening
    assert status["tcp"]["open"] == 0


async def test_pipelined_and_split_requests_are_all_answered_on_their_connection(
    served: tuple[SipStack, Answerer],
) -> None:
    stack, answerer = served
    reader, writer = await asyncio.open_connection(*stack.local_address)
    try:
        writer.write(options("p1") + options("p2", body=b"hello") + options("p3"))
        answers = [await read_message(reader) for _ in range(3)]
        for call_id, answer in zip(("p1", "p2", "p3"), answers, strict=True):
            assert answer.startswith(b"SIP/2.0 200 "), answer[:60]
            assert f"Call-ID: {call_id}".encode() in answer
        assert b"X-Body-Length: 5" in answers[1]
        # One message in pieces: inside the start line, inside Content-Length, inside the body.
        split = options("s1", body=b"0123456789")
        for piece in (split[:5], split[5:150], split[150:-4], split[-4:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        answer = await read_message(reader)
        assert b"Call-ID: s1" in answer and b"X-Body-Length: 10" in answer
    finally:
        writer.close()
    sources = [source for _, source in answerer.requests]
    assert all(source.transport == "tcp" for source in sources)  # type: ignore[attr-defined]
    assert len({source.connection for source in sources}) == 1  # type: ignore[attr-defined]
    tcp = stack.counters.tcp
    assert (tcp.accepted, tcp.messages_in, tcp.messages_out) == (1, 4, 4)
    assert stack.layer.counters["retransmissions"] == 0


async def test_crlf_ping_gets_a_crlf_pong_and_the_connection_stays_up(served: tuple[SipStack, Answerer]) -> None:
    stack, _ = served
    reader, writer = await asyncio.open_connection(*stack.local_address)
    try:
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2.0) == b"\r\n"
        writer.write(b"\r\n\r\n" + options("after-ping"))
        assert await asyncio.wait_for(reader.readexactly(2), 2.0) == b"\r\n"
        assert (await read_message(reader)).startswith(b"SIP/2.0 200 ")
    finally:
        writer.close()
    assert stack.counters.tcp.keepalives == 2


async def test_no_content_length_gets_400_then_the_connection_is_closed(served: tuple[SipStack, Answerer]) -> None:
    stack, answerer = served
    reader, writer = await asyncio.open_connection(*stack.local_address)
    try:
        writer.write(options("nolength").replace(b"Content-Length: 0\r\n", b""))
        answer = await read_message(reader)
        assert answer.startswith(b"SIP/2.0 400 "), answer[:80]
        assert b"Call-ID: nolength" in answer
        assert await closed_by_peer(reader)
    finally:
        writer.close()
    assert stack.counters.tcp.framing_errors == 1
    assert answerer.requests == [], "a message that could not be framed never reaches the TU"
    await asyncio.sleep(0.05)
    assert stack.counters.tcp.open == 0


async def test_a_malformed_but_framed_request_gets_400_and_the_stream_goes_on(
    served: tuple[SipStack, Answerer],
) -> None:
    stack, _ = served
    reader, writer = await asyncio.open_connection(*stack.local_address)
    try:
        writer.write(options("bad").replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS") + options("good"))
        assert (await read_message(reader)).startswith(b"SIP/2.0 400 ")
        good = await read_message(reader)
        assert good.startswith(b"SIP/2.0 200 ") and b"Call-ID: good" in good
    finally:
        writer.close()
    assert stack.counters.tcp.framing_errors == 0
    assert stack.counters.malformed == 1


async def test_garbage_and_oversized_streams_are_dropped_while_udp_and_tcp_keep_answering(
    served: tuple[SipStack, Answerer],
) -> None:
    stack, _ = served
    target = stack.local_address
    rng = random.Random(11)
    # Random bytes: not a SIP start line, closed at once.
    reader, writer = await asyncio.open_connection(*target)
    writer.write(rng.randbytes(3000))
    assert await closed_by_peer(reader)
    writer.close()
    # A head that never ends: closed once it passes the 64 KiB cap.
    reader, writer = await asyncio.open_connection(*target)
    writer.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n")
    try:
        for _ in range(20):
            writer.write(b"X-Pad: " + b"a" * 8000 + b"\r\n")
            await writer.drain()
    except ConnectionError:
        pass
    assert await closed_by_peer(reader)
    writer.close()
    # A whole head announcing a body over the cap: 513, then closed.
    reader, writer = await asyncio.open_connection(*target)
    writer.write(options("big", body=b"b" * 70000))
    answer = await read_message(reader)
    assert answer.startswith(b"SIP/2.0 513 "), answer[:80]
    assert await closed_by_peer(reader)
    writer.close()
    assert stack.counters.tcp.framing_errors == 3
    # Still answering both ways.
    assert (await udp_options(target, "udp-after")).startswith(b"SIP/2.0 200 ")
    reader, writer = await asyncio.open_connection(*target)
    writer.write(options("tcp-after"))
    assert (await read_message(reader)).startswith(b"SIP/2.0 200 ")
    writer.close()


async def test_idle_connections_are_closed() -> None:
    stack, _ = await start_stack(tcp_limits=TcpLimits(idle_timeout=0.3))
    try:
        reader, writer = await asyncio.open_connection(*stack.local_address)
        writer.write(options("idle"))
        assert (await read_message(reader)).startswith(b"SIP/2.0 200 ")
        assert await closed_by_peer(reader, timeout=3.0)
        writer.close()
        assert stack.counters.tcp.idle_closed == 1
        assert stack.counters.tcp.open == 0
    finally:
        await stack.stop()


async def test_connections_over_the_cap_are_refused_and_the_others_keep_working() -> None:
    stack, _ = await start_stack(tcp_limits=TcpLimits(max_connections=2))
    clients = []
    try:
        for _ in range(2):
            clients.append(await asyncio.open_connection(*stack.local_address))
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection(*stack.local_address)
        assert await closed_by_peer(reader)
        writer.close()
        assert stack.counters.tcp.refused == 1
        for index, (reader, writer) in enumerate(clients):
            writer.write(options(f"kept{index}"))
            assert (await read_message(reader)).startswith(b"SIP/2.0 200 ")
    finally:
        for _, writer in clients:
            writer.close()
        await stack.stop()


async def test_one_address_cannot_take_every_connection() -> None:
    """Over max_per_address from one IP: refused; the cap is per host, not global."""
    stack, _ = await start_stack(tcp_limits=TcpLimits(max_connections=100, max_per_address=2))
    clients = []
    try:
        for _ in range(2):
            clients.append(await asyncio.open_connection(*stack.local_address))
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection(*stack.local_address)
        assert await closed_by_peer(reader)
        writer.close()
        assert stack.counters.tcp.refused == 1
        other_reader, other_writer = await asyncio.open_connection(
            stack.local_address[0], stack.local_address[1], local_addr=("127.0.0.2", 0)
        )
        other_writer.write(options("other-host"))
        assert (await read_message(other_reader)).startswith(b"SIP/2.0 200 ")
        other_writer.close()
    finally:
        for _, writer in clients:
            writer.close()
        await stack.stop()


async def test_a_response_whose_connection_is_gone_goes_to_the_via_sent_by() -> None:
    """§18.2.2: the request's connection closed before the answer: connect to received:sent-by."""
    stack, _ = await start_stack(Answerer(delay=0.3))
    arrived: asyncio.Queue[bytes] = asyncio.Queue()

    async def via_listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.put_nowait(await read_message(reader))
        writer.close()

    server = await asyncio.start_server(via_listener, "127.0.0.1", 0)
    via_port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection(*stack.local_address)
        writer.write(options("gone", via_port=via_port))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # before the TU answers
        answer = await asyncio.wait_for(arrived.get(), 3.0)
        assert answer.startswith(b"SIP/2.0 200 ") and b"Call-ID: gone" in answer
        assert stack.counters.tcp.connected == 1
    finally:
        server.close()
        await stack.stop()


# ----------------------------------------------------------------------------- sending


async def test_client_requests_over_tcp_are_sent_once_on_one_connection_with_a_tcp_via() -> None:
    """Fast timers (T1 = 50 ms): over UDP the OPTIONS would have been sent again 4 times."""
    stack, _ = await start_stack(timer_settings=TimerSettings(t1=0.05, t2=0.4))
    received: list[bytes] = []
    connections = 0

    async def slow_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                message = await read_message(reader, timeout=5.0)
                received.append(message)
                await asyncio.sleep(0.6)
                writer.write(make_response(parse_message(message), 200).to_bytes())
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(slow_server, "127.0.0.1", 0)
    destination = ("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        first = await stack.request(outgoing("OPTIONS", stack.local_address[1], "c1"), destination, transport="tcp")
        second = await stack.request(outgoing("OPTIONS", stack.local_address[1], "c2"), destination, transport="tcp")
        assert (first.status, second.status) == (200, 200)
        assert len(received) == 2, "no retransmission over TCP"
        assert connections == 1, "the second request reuses the connection"
        for message in received:
            request = parse_message(message)
            assert request.headers.top_via.transport == "TCP"
            assert request.headers.top_via.port == stack.local_address[1]
        assert stack.layer.counters["retransmissions"] == 0
        assert stack.counters.tcp.connected == 1
    finally:
        server.close()
        await stack.stop()


async def test_a_refused_connection_fails_the_request_with_503() -> None:
    stack, _ = await start_stack()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound, never listening: connections are refused
        try:
            final = await asyncio.wait_for(
                stack.request(outgoing("OPTIONS", stack.local_address[1]), ("127.0.0.1", closed_port), transport="tcp"),
                5.0,
            )
            assert final.status == 503
            assert stack.counters.tcp.connect_failures == 1
            assert len(stack.layer) == 0, "the client transaction ended"
        finally:
            await stack.stop()


async def test_a_request_to_a_peer_reuses_the_connection_it_opened_to_us(served: tuple[SipStack, Answerer]) -> None:
    stack, answerer = served
    reader, writer = await asyncio.open_connection(*stack.local_address)
    try:
        writer.write(options("hello"))
        assert (await read_message(reader)).startswith(b"SIP/2.0 200 ")
        _, source = answerer.requests[-1]
        # The source the TU got carries the transport: a request to it goes the same way,
        # and a plain (host, port) with transport="tcp" finds the same connection.
        our_end = writer.get_extra_info("sockname")
        ways = [(source, None), ((our_end[0], our_end[1]), "tcp")]
        for destination, transport in ways:
            request = outgoing("OPTIONS", stack.local_address[1], "back")
            pending = asyncio.ensure_future(stack.request(request, destination, transport=transport))
            sent = parse_message(await read_message(reader))
            assert sent.method == "OPTIONS" and sent.headers.top_via.transport == "TCP"
            writer.write(make_response(sent, 200).to_bytes())
            assert (await asyncio.wait_for(pending, 2.0)).status == 200
    finally:
        writer.close()
    assert stack.counters.tcp.connected == 0, "no new connection was opened"


async def test_send_raw_over_tcp_rewrites_the_via_of_a_request(served: tuple[SipStack, Answerer]) -> None:
    stack, _ = served
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await read_message(reader))
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    try:
        ack = outgoing("ACK", stack.local_address[1]).to_bytes()
        stack.send_raw(ack, ("127.0.0.1", server.sockets[0].getsockname()[1]), transport="tcp")
        sent = parse_message(await asyncio.wait_for(got.get(), 2.0))
        assert sent.method == "ACK" and sent.headers.top_via.transport == "TCP"
    finally:
        server.close()


async def test_stop_closes_every_connection(served: tuple[SipStack, Answerer]) -> None:
    stack, _ = served
    reader, writer = await asyncio.open_connection(*stack.local_address)
    writer.write(options("bye"))
    await read_message(reader)
    await stack.stop()
    assert await closed_by_peer(reader)
    writer.close()
    assert stack.counters.tcp.open == 0
