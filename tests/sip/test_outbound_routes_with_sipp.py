"""Outbound routes end to end: a provider that refuses (SIPp, 503) fails over to a city line."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from conftest import office_config, start_pbx
from sipp_tools import (
    SCENARIOS,
    finish,
    free_port,
    needs_sipp,
    sip_with_provider,
    start_sipp,
    stop_sipp,
)

from firmware.calls.cdr import Direction
from firmware.calls.lifecycle import LegState

pytestmark = needs_sipp


def route_config(provider_port: int) -> str:
    routes = '\n[[outbound_routes]]\nname = "mobiles"\npatterns = ["9[1236]xxxxxxx"]\nvia = ["provider", "city"]\n'
    return office_config(sip_with_provider(provider_port, (31000, 31200), routes))


async def test_a_refusing_provider_fails_over_to_a_city_line(data_dir: Path) -> None:
    port = free_port()
    refusing = await start_sipp("-sf", str(SCENARIOS / "uas_refuse.xml"), "-p", str(port), "-m", "1")
    pbx = await start_pbx(route_config(port), data_dir)
    try:
        await asyncio.sleep(0.3)
        sales, city = pbx.phone("202"), pbx.line("city1")
        sales.off_hook()
        await pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("9912345678")
        await pbx.sim.wait_until(lambda: city.calls_dialled == ["912345678"], 8.0, "dialled on city1")
        code, output = await finish(refusing, 10.0)
        assert code == 0, output
        sales.on_hook()
        record = await pbx.last_record()
        assert record.direction == Direction.OUTGOING
        assert (record.line, record.line_group, record.destination_kind) == ("city1", "city", "mobile")
    finally:
        await pbx.app.stop()
        await stop_sipp(refusing)


async def test_a_full_provider_is_skipped_without_waiting(data_dir: Path) -> None:
    """max_channels reached: the route goes straight to the next trunk."""
    port = free_port()
    text = route_config(port).replace(f"port = {port}\n", f"port = {port}\nmax_channels = 1\n", 1)
    pbx = await start_pbx(text, data_dir)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a provider that never answers
    listener.bind(("127.0.0.1", port))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        first, second = pbx.phone("202"), pbx.phone("203")
        first.off_hook()
        await pbx.wait_state("202", LegState.DIALLING)
        await first.dial("9912345678")  # takes the provider's only channel (and waits there)
        invite, _ = await asyncio.wait_for(loop.sock_recvfrom(listener, 65535), 3.0)
        assert invite.startswith(b"INVITE sip:912345678@"), invite[:80]
        second.off_hook()
        await pbx.wait_state("203", LegState.DIALLING)
        await second.dial("9912345679")
        city = pbx.line("city1")
        # A silent provider would hold the call for Timer B (32 s): 6 s proves it was skipped.
        await pbx.sim.wait_until(lambda: "912345679" in city.calls_dialled, 6.0, "second call on city1")
        seen = []
        while True:
            try:
                seen.append(listener.recv(65535))
            except BlockingIOError:
                break
        assert not any(b"912345679" in packet.split(b"\r\n", 1)[0] for packet in seen), "the full provider got the call"
        first.on_hook()
        second.on_hook()
        await pbx.wait_idle(10.0)
    finally:
        await pbx.app.stop()
        listener.close()
