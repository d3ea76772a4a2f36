"""SIP over TCP against SIPp (`-t t1`: TCP, one socket) as an independent implementation:
SIPp calling the stack, and the stack calling SIPp."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sipp_tools import SCENARIOS, Process, finish, free_port, host_port, needs_sipp, start_sipp

from firmware.sip.headers import Headers
from firmware.sip.message import Request, Response, make_response, new_branch, new_tag
from firmware.sip.service import SipService
from firmware.sip.stack import Address, SipStack
from firmware.sip.transaction import ServerTransaction
from firmware.sip.uri import parse_uri

pytestmark = needs_sipp

ANSWER_SDP = b"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"


def tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


def sipp_over_tcp(*args: str) -> Awaitable[Process]:
    """SIPp with `-t t1` (TCP, one socket for every call), the messages it did not expect in
    its output."""
    return start_sipp(*args, transport="t1", trace_errors=True)


class CallAnswerer:
    """A minimal UAS core on the bare stack: INVITE -> 180 + 200 with SDP, BYE -> 200."""

    def __init__(self) -> None:
        self.stack = SipStack(self)
        self.seen: list[tuple[str, str]] = []  # (method, transport it came by)

    def __call__(self, transaction: ServerTransaction | None, request: Request, source: Address) -> None:
        self.seen.append((request.method, getattr(source, "transport", "udp")))
        if transaction is None or request.method == "ACK":
            return
        if request.method == "INVITE":
            tag = new_tag()
            self.stack.respond(transaction, make_response(request, 180, to_tag=tag))
            ok = make_response(request, 200, to_tag=tag)
            ok.headers.add("Contact", f"<sip:pbx@127.0.0.1:{self.stack.local_address[1]};transport=tcp>")
            ok.headers.add("Content-Type", "application/sdp")
            ok.body = ANSWER_SDP
            self.stack.respond(transaction, ok)
            return
        response = make_response(request, 200)
        response.headers.add("Allow", "INVITE, ACK, BYE, OPTIONS")  # options.xml checks it
        self.stack.respond(transaction, response)


@pytest.fixture
async def answerer() -> AsyncIterator[CallAnswerer]:
    uas = CallAnswerer()
    await uas.stack.start("127.0.0.1", 0)
    try:
        yield uas
    finally:
        await uas.stack.stop()


# ----------------------------------------------------------------------------- SIPp calls us


async def test_options_from_sipp_over_tcp_reach_the_service() -> None:
    service = SipService("test")
    await service.start("127.0.0.1", 0)
    try:
        uac = await sipp_over_tcp(host_port(service.stack.local_address), "-sf", str(SCENARIOS / "options.xml"),
                                  "-s", "b2b", "-m", "10", "-r", "20", "-p", str(tcp_port()))  # fmt: skip
        code, output = await finish(uac)
        assert code == 0, output
        assert service.requests_by_method.get("OPTIONS") == 10
        tcp = service.stack.counters.tcp
        assert tcp.accepted == 1, "SIPp t1 uses one connection for every call"
        assert tcp.messages_in == 10 and tcp.messages_out == 10
        assert service.stack.counters.datagrams_in == 0
        assert "tcp:127.0.0.1:" in " ".join(service.stack.listening)
    finally:
        await service.stop()


async def test_calls_from_sipp_over_tcp_are_answered_acked_and_cleared(answerer: CallAnswerer) -> None:
    uac = await sipp_over_tcp(host_port(answerer.stack.local_address), "-sf", str(SCENARIOS / "tcp_uac_call.xml"),
                              "-s", "201", "-m", "5", "-r", "10", "-p", str(tcp_port()), "-mp", str(free_port()))  # fmt: skip
    code, output = await finish(uac)
    assert code == 0, output
    methods = [method for method, _ in answerer.seen]
    assert (methods.count("INVITE"), methods.count("ACK"), methods.count("BYE")) == (5, 5, 5)
    assert {transport for _, transport in answerer.seen} == {"tcp"}
    assert answerer.stack.layer.counters["retransmissions"] == 0
    await asyncio.sleep(0.05)
    assert len(answerer.stack.layer) == 5, "only the RFC 6026 Accepted INVITE servers wait (Timer L)"


async def test_udp_and_tcp_callers_at_once(answerer: CallAnswerer) -> None:
    address = host_port(answerer.stack.local_address)
    over_tcp = await sipp_over_tcp(address, "-sf", str(SCENARIOS / "tcp_uac_call.xml"), "-s", "201", "-m", "3",
                                   "-p", str(tcp_port()), "-mp", str(free_port()))  # fmt: skip
    over_udp = await start_sipp(address, "-sf", str(SCENARIOS / "options.xml"), "-s", "b2b", "-m", "3",
                                "-p", str(free_port()))  # fmt: skip
    (tcp_code, tcp_output), (udp_code, udp_output) = await asyncio.gather(finish(over_tcp), finish(over_udp))
    assert tcp_code == 0, tcp_output
    assert udp_code == 0, udp_output
    assert answerer.seen.count(("OPTIONS", "udp")) == 3
    assert answerer.seen.count(("INVITE", "tcp")) == 3


# ----------------------------------------------------------------------------- we call SIPp


def outgoing(method: str, stack: SipStack, call_id: str, cseq: int, to: str = "<sip:far@127.0.0.1>") -> Request:
    """As a dialog builds it: the Via says UDP and the stack must make it TCP."""
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:{stack.local_address[1]};branch={new_branch()};rport")
    headers.add("From", "<sip:pbx@127.0.0.1>;tag=pbx1")
    headers.add("To", to)
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Contact", f"<sip:pbx@127.0.0.1:{stack.local_address[1]};transport=tcp>")
    headers.add("Max-Forwards", "70")
    return Request(method, parse_uri("sip:far@127.0.0.1;transport=tcp"), headers)


async def until_listening(attempt: Callable[[], Awaitable[Response]]) -> Response:
    """SIPp needs a moment to listen: a refused connection (503) is tried again, for 5 s."""
    for _ in range(50):
        final = await attempt()
        if final.status != 503:
            break
        await asyncio.sleep(0.1)
    return final


async def test_our_options_over_tcp_are_answered_by_sipp(answerer: CallAnswerer) -> None:
    stack = answerer.stack
    port = tcp_port()
    uas = await sipp_over_tcp("-sf", str(SCENARIOS / "tcp_uas_options.xml"), "-p", str(port), "-m", "1")
    destination = ("127.0.0.1", port)
    final = await until_listening(
        lambda: stack.request(outgoing("OPTIONS", stack, "opt1", 1), destination, transport="tcp")
    )
    assert final.status == 200
    code, output = await finish(uas)
    assert code == 0, output
    assert stack.layer.counters["retransmissions"] == 0


async def test_our_call_over_tcp_to_sipp_rings_answers_acks_and_hangs_up(answerer: CallAnswerer) -> None:
    stack = answerer.stack
    port = tcp_port()
    destination = ("127.0.0.1", port)
    uas = await sipp_over_tcp("-sf", str(SCENARIOS / "tcp_uas_call.xml"), "-p", str(port), "-m", "1",
                              "-mp", str(free_port()))  # fmt: skip
    provisional: list[int] = []

    def invite_attempt() -> Awaitable[Response]:
        invite = outgoing("INVITE", stack, "call1", 1)
        invite.headers.add("Content-Type", "application/sdp")
        invite.body = ANSWER_SDP
        return stack.request(invite, destination, lambda response: provisional.append(response.status), transport="tcp")

    final = await until_listening(invite_attempt)
    assert final.status == 200, final
    assert 180 in provisional
    to = final.headers.get("To")
    assert to is not None and "tag=" in to
    ack = outgoing("ACK", stack, "call1", 1, to)
    stack.send_raw(ack.to_bytes(), destination, transport="tcp")
    await asyncio.sleep(0.2)
    bye = await stack.request(outgoing("BYE", stack, "call1", 2, to), destination, transport="tcp")
    assert bye.status == 200
    code, output = await finish(uas)
    assert code == 0, output
    assert stack.counters.tcp.connected >= 1
    assert stack.layer.counters["retransmissions"] == 0
