"""SIP over TLS (RFC 3261 §26.2): the TCP transport with SSL contexts, stack to stack, with a
self-signed certificate made for the test by the openssl command."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware.sip.headers import Headers
from firmware.sip.message import Request, make_response, new_branch
from firmware.sip.stack import Address, SipStack
from firmware.sip.transaction import ServerTransaction
from firmware.sip.uri import parse_uri

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A P-256 key and a self-signed certificate for 127.0.0.1, valid for a day."""
    assert OPENSSL is not None
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=pbx.test",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return key, cert


def contexts(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key, cert = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))  # verifies the chain and 127.0.0.1
    return server, client


class Answerer:
    def __init__(self) -> None:
        self.stack: SipStack | None = None
        self.sources: list[Address] = []

    def __call__(self, transaction: ServerTransaction | None, request: Request, source: Address) -> None:
        self.sources.append(source)
        if transaction is not None and self.stack is not None:
            self.stack.respond(transaction, make_response(request, 200))


@pytest.fixture
async def pair(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[SipStack, SipStack, Answerer]]:
    """A stack listening on TLS (with our certificate) and one that trusts it."""
    server_context, client_context = contexts(certificate)
    answerer = Answerer()
    server = SipStack(answerer, tls_server=server_context)
    answerer.stack = server
    client = SipStack(Answerer(), tls_client=client_context)
    await server.start("127.0.0.1", 0)
    await client.start("127.0.0.1", 0)
    try:
        yield server, client, answerer
    finally:
        await client.stop()
        await server.stop()


def tls_address(stack: SipStack) -> Address:
    entry = next(item for item in stack.listening if item.startswith("tls:"))
    _, host, port = entry.split(":")
    return host, int(port)


def options(stack: SipStack, call_id: str) -> Request:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:{stack.local_address[1]};branch={new_branch()}")
    headers.add("From", "<sip:pbx@127.0.0.1>;tag=t1")
    headers.add("To", "<sip:far@127.0.0.1>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", "1 OPTIONS")
    headers.add("Max-Forwards", "70")
    return Request("OPTIONS", parse_uri("sips:far@127.0.0.1"), headers)


async def test_requests_over_tls_are_answered_on_the_same_connection(
    pair: tuple[SipStack, SipStack, Answerer],
) -> None:
    server, client, answerer = pair
    assert [item.split(":")[0] for item in server.listening] == ["udp", "tcp", "tls"]
    destination = tls_address(server)
    assert destination[1] != server.local_address[1]
    for index in range(3):
        final = await asyncio.wait_for(client.request(options(client, f"tls{index}"), destination, transport="tls"), 5.0)
        assert final.status == 200
        assert final.headers.top_via.transport == "TLS"
    assert [getattr(source, "transport", "udp") for source in answerer.sources] == ["tls"] * 3
    assert client.counters.tls.connected == 1, "one TLS connection for every request"
    assert server.counters.tls.accepted == 1
    assert server.counters.tcp.accepted == 0 and server.counters.datagrams_in == 0
    assert server.transport_status()["tls"]["messages_in"] == 3


async def test_an_untrusted_certificate_fails_the_request_with_503(certificate: tuple[Path, Path]) -> None:
    server_context, _ = contexts(certificate)
    server = SipStack(Answerer(), tls_server=server_context)
    stranger = SipStack(Answerer(), tls_client=ssl.create_default_context())  # the system CAs only
    await server.start("127.0.0.1", 0)
    await stranger.start("127.0.0.1", 0)
    try:
        final = await asyncio.wait_for(stranger.request(options(stranger, "x"), tls_address(server), transport="tls"), 10.0)
        assert final.status == 503
        assert stranger.counters.tls.connect_failures == 1
    finally:
        await stranger.stop()
        await server.stop()


async def test_plain_text_on_the_tls_port_is_dropped_and_tls_goes_on(pair: tuple[SipStack, SipStack, Answerer]) -> None:
    server, client, _ = pair
    reader, writer = await asyncio.open_connection(*tls_address(server))
    writer.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    try:
        while await asyncio.wait_for(reader.read(4096), 6.0):
            pass
    except ConnectionError:
        pass
    writer.close()
    final = await asyncio.wait_for(client.request(options(client, "after"), tls_address(server), transport="tls"), 5.0)
    assert final.status == 200


async def test_tls_without_a_context_is_refused_not_sent_in_clear() -> None:
    stack = SipStack(Answerer())
    await stack.start("127.0.0.1", 0)
    try:
        final = await asyncio.wait_for(stack.request(options(stack, "clear"), ("127.0.0.1", 5061), transport="tls"), 5.0)
        assert final.status == 503
        assert stack.counters.send_errors == 1
        assert "tls" not in stack.transport_status()
    finally:
        await stack.stop()
