"""Outbound routes end to end: a provider that refuses (SIPp, 503) fails over to a city line."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest
from conftest import office_config, start_pbx

from firmware.calls.cdr import Direction
from firmware.calls.lifecycle import LegState

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp")
pytestmark = pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def route_config(provider_port: int) -> str:
    return office_config(
        f"""
[sip]
listen = "127.0.0.1:0"
rtp_ports = [31000, 31200]

[[sip.peers]]
name = "provider"
host = "127.0.0.1"
port = {provider_port}

[[outbound_routes]]
name = "mobiles"
patterns = ["9[1236]xxxxxxx"]
via = ["provider", "city"]
"""
    )


async def test_a_refusing_provider_fails_over_to_a_city_line(data_dir: Path) -> None:
    port = free_udp_port()
    assert SIPP is not None
    refusing = await asyncio.create_subprocess_exec(
        SIPP, "-i", "127.0.0.1", "-sf", str(SCENARIOS / "uas_refuse.xml"), "-p", str(port), "-m", "1",
        "-nostdin", "-timeout", "20s", "-timeout_error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    pbx = await start_pbx(route_config(port), data_dir)
    try:
        await asyncio.sleep(0.3)
        sales, city = pbx.phone("202"), pbx.line("city1")
        sales.off_hook()
        await pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("9912345678")
        await pbx.sim.wait_until(lambda: city.calls_dialled == ["912345678"], 8.0, "dialled on city1")
        output, _ = await asyncio.wait_for(refusing.communicate(), 10.0)
        assert refusing.returncode == 0, output.decode(errors="replace")[-2000:]
        sales.on_hook()
        record = await pbx.last_record()
        assert record.direction == Direction.OUTGOING
        assert (record.line, record.line_group, record.destination_kind) == ("city1", "city", "mobile")
    finally:
        await pbx.app.stop()
        if refusing.returncode is None:
            refusing.kill()
            await refusing.wait()


async def test_a_full_provider_is_skipped_without_waiting(data_dir: Path) -> None:
    """max_channels reached: the route goes straight to the next trunk."""
    port = free_udp_port()
    text = route_config(port).replace(f"port = {port}\n", f"port = {port}\nmax_channels = 1\n", 1)
    pbx = await start_pbx(text, data_dir)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a provider that never answers
    listener.bind(("127.0.0.1", port))
    try:
        first, second = pbx.phone("202"), pbx.phone("203")
        first.off_hook()
        await pbx.wait_state("202", LegState.DIALLING)
        await first.dial("9912345678")  # takes the provider's only channel (and waits there)
        await asyncio.sleep(0.5)
        second.off_hook()
        await pbx.wait_state("203", LegState.DIALLING)
        await second.dial("9912345679")
        city = pbx.line("city1")
        await pbx.sim.wait_until(lambda: "912345679" in city.calls_dialled, 6.0, "second call on city1")
        first.on_hook()
        second.on_hook()
        await pbx.wait_idle(10.0)
    finally:
        await pbx.app.stop()
        listener.close()
