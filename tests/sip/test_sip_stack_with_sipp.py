"""The SIP stack on a real socket, against SIPp as an independent SIP implementation."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
from pathlib import Path

import pytest

from firmware.sip.service import SipService

SCENARIOS = Path(__file__).parent / "scenarios"
TORTURE = Path(__file__).parent / "torture"
SIPP = shutil.which("sipp")

needs_sipp = pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run_sipp(scenario: str, target: tuple[str, int], calls: int = 5, timeout: float = 20.0) -> tuple[int, str]:
    """SIPp as a UAC on 127.0.0.1, bounded in calls and time; its exit code and output."""
    assert SIPP is not None
    process = await asyncio.create_subprocess_exec(
        SIPP, f"{target[0]}:{target[1]}", "-sf", str(SCENARIOS / scenario),
        "-i", "127.0.0.1", "-p", str(free_udp_port()), "-m", str(calls), "-r", "20",
        "-s", "b2b", "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin", "-trace_err",
        "-error_file", "/dev/stderr",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout + 10)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, output.decode(errors="replace")


@pytest.fixture
async def sip() -> SipService:
    service = SipService("test")
    await service.start("127.0.0.1", 0)
    try:
        yield service
    finally:
        await service.stop()


@needs_sipp
async def test_options_from_sipp_get_200_with_the_allow_list(sip: SipService) -> None:
    code, output = await run_sipp("options.xml", sip.stack.local_address, calls=10)
    assert code == 0, output
    assert sip.requests_by_method.get("OPTIONS", 0) >= 10


@needs_sipp
async def test_invite_is_refused_with_405_and_the_ack_ends_the_transaction(sip: SipService) -> None:
    code, output = await run_sipp("invite_405.xml", sip.stack.local_address, calls=3)
    assert code == 0, output
    await asyncio.sleep(0.1)
    assert sip.requests_by_method.get("INVITE", 0) == 3
    assert sip.requests_by_method.get("ACK", 0) == 0, "the ACK for a non-2xx stays in its transaction"


def garbage_datagrams(count: int, seed: int = 7) -> list[bytes]:
    """Random bytes, truncated and mutated SIP requests: what a scanner or a bad NAT sends."""
    rng = random.Random(seed)
    valid = (
        b"OPTIONS sip:b2b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:b2b@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    datagrams = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            datagrams.append(rng.randbytes(rng.randint(1, 1400)))
        elif kind == 1:
            datagrams.append(valid[: rng.randint(1, len(valid) - 5)])
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            datagrams.append(bytes(mutated))
    return datagrams


@needs_sipp
async def test_a_thousand_malformed_datagrams_leave_it_answering(sip: SipService) -> None:
    target = sip.stack.local_address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        sender.setblocking(False)
        for index, datagram in enumerate(garbage_datagrams(1000)):
            sender.sendto(datagram, target)
            if index % 50 == 0:
                await asyncio.sleep(0.005)  # let the stack read: the socket buffer is finite
    await asyncio.sleep(0.2)
    counters = sip.stack.counters
    assert counters.datagrams_in >= 950
    assert counters.malformed >= 500, counters
    assert counters.answered_400 > 0, "a bad request with a readable Via gets 400"
    code, output = await run_sipp("options.xml", target, calls=5)
    assert code == 0, output


async def ask(target: tuple[str, int], cseq: str, call_id: str) -> bytes:
    """Send one OPTIONS (with the given CSeq line value) from a fresh socket; the answer."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        port = client.getsockname()[1]
        request = (
            f"OPTIONS sip:b2b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:a@b>;tag=1\r\nTo: <sip:b2b@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        client.sendto(request, target)
        return await asyncio.wait_for(loop.sock_recv(client, 4096), 2.0)


async def test_bad_request_with_a_readable_via_gets_400_back_to_its_source(sip: SipService) -> None:
    answer = await ask(sip.stack.local_address, "one OPTIONS", "bad")
    assert answer.startswith(b"SIP/2.0 400 "), answer[:80]
    assert b"Call-ID: bad" in answer


async def test_torture_messages_never_break_the_stack(sip: SipService) -> None:
    """RFC 4475 messages over UDP: each is answered or dropped, and OPTIONS still work after."""
    files = sorted(TORTURE.glob("*.dat")) if TORTURE.exists() else []
    if not files:
        pytest.skip("no RFC 4475 torture messages in tests/sip/torture")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        for path in files:
            sender.sendto(path.read_bytes()[:65000], sip.stack.local_address)
            await asyncio.sleep(0.002)
    await asyncio.sleep(0.2)
    assert sip.stack.counters.datagrams_in >= len(files) * 0.9
    answer = await ask(sip.stack.local_address, "1 OPTIONS", "ok")
    assert answer.startswith(b"SIP/2.0 200 "), answer[:80]


@needs_sipp
async def test_the_appliance_listens_for_sip_when_configured(data_dir) -> None:
    from conftest import office_config, start_pbx

    pbx = await start_pbx(office_config('[sip]\nlisten = "127.0.0.1:0"\n'), data_dir)
    try:
        assert pbx.app.sip is not None
        code, output = await run_sipp("options.xml", pbx.app.sip.stack.local_address, calls=2)
        assert code == 0, output
        status = pbx.app.status()["sip"]
        assert status["requests"]["OPTIONS"] == 2
        assert status["listen"].startswith("udp:127.0.0.1:")
    finally:
        await pbx.app.stop()
