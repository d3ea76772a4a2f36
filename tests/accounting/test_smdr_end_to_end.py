"""SMDR from the real core: calls through the simulated line card reach a pty serial port and
two TCP clients, one of which has stopped reading, byte for byte as docs/smdr.md lays out.

The expected lines are built here from the stored rows with the docs table only (start
columns and widths), not with the firmware's formatter.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from firmware.calls.lifecycle import LegState
from tests.conftest import office_config

HEADER = (
    b"Date     Time    Ext   CO     Dial Number                Ring Duration      Cost "
    b"Acc code     CD\r\n" + b"-" * 96 + b"\r\n"
)
LISBON = ZoneInfo("Europe/Lisbon")
FLOOD = 2000  # records pushed through first, so the stalled client is really stalled


@pytest.fixture
def pty():
    master, slave = os.openpty()
    os.set_blocking(master, False)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


@pytest.fixture
def pbx_config(pty) -> str:
    return office_config(
        "\n[smdr]\nenabled = true\n"
        'tcp_listen = "127.0.0.1:0"\nheader_every = 0\nclient_queue_records = 5\n'
        f'stall_timeout_s = 0\n[smdr.serial]\nurl = "{pty[1]}"\nqueue_records = 5000\n'
    )


def documented_line(row: dict[str, Any]) -> bytes:
    """A stored row laid out by the docs table (answered calls without transfer or forward)."""
    start = datetime.fromisoformat(row["start_utc"])
    answer = datetime.fromisoformat(row["answer_utc"])
    end = datetime.fromisoformat(row["end_utc"])
    ring = int((answer - start).total_seconds())
    billed_ms = round((end - answer).total_seconds() * 1000)
    billed = (billed_ms + 999) // 1000
    local = start.astimezone(LISBON)
    internal = row["direction"] == "internal"
    dial = row["dialled"] if internal else row["external_number"]
    cost = ""
    if row["cost_e4"] is not None:
        cost = str((Decimal(row["cost_e4"]) / 10000).quantize(Decimal("0.01"), ROUND_HALF_UP))
    duration = f"{billed // 3600:02d}:{billed // 60 % 60:02d}'{billed % 60:02d}"
    text = (
        f"{local:%d/%m/%y} {local:%H:%M}   {row['caller_number']:<5} "
        f"{'' if internal else row['line']:<6} {dial:<25} {ring // 60:>2}'{ring % 60:02d} "
        f"{duration} {cost:>9} {row['account_code'] or '':<12}   \r\n"
    )
    return text.encode("ascii")


def stored_rows(data_dir: Path) -> list[dict[str, Any]]:
    connection = sqlite3.connect(data_dir / "cdr.sqlite3")
    connection.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in connection.execute("SELECT * FROM cdr ORDER BY id")]
    finally:
        connection.close()


async def talk_internally(pbx) -> None:
    caller, callee = pbx.phone("202"), pbx.phone("203")
    caller.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await caller.dial("203")
    await callee.wait_ringing()
    callee.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    await asyncio.sleep(0.3)
    callee.on_hook()
    caller.on_hook()
    await pbx.wait_idle()


async def call_the_city(pbx) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    sales.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await sales.dial("9212345678")
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 3.0, "answer")
    await asyncio.sleep(0.3)
    sales.on_hook()
    await pbx.sim.wait_until(lambda: not line.seized, 3.0, "line released")
    await pbx.wait_idle()


async def test_calls_reach_the_pty_and_the_reading_client_while_the_other_stalls(
    pbx, pty, data_dir
) -> None:
    smdr = pbx.app.smdr
    port = smdr.tcp.port
    master = pty[0]
    serial_bytes = bytearray()
    loop = asyncio.get_running_loop()
    loop.add_reader(master, lambda: serial_bytes.extend(os.read(master, 65536)))

    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    stalled.setblocking(False)
    await loop.sock_connect(stalled, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def keep_reading() -> None:
        while chunk := await reader.read(65536):
            received.extend(chunk)

    reading = asyncio.create_task(keep_reading())
    try:
        await pbx.sim.wait_until(
            lambda: len(smdr.tcp.clients) == 2 and not any(c.replaying for c in smdr.tcp.clients),
            3.0, "two clients connected",
        )  # fmt: skip
        for number in range(FLOOD):  # a burst of records: the stalled client's buffers fill
            smdr.publish(flood_row(number))
            if number % 20 == 19:
                await asyncio.sleep(0)
        await pbx.sim.wait_until(lambda: len(received) == len(HEADER) + FLOOD * 98, 5.0, "flood")
        dropped_before = smdr.status["tcp"]["dropped"]
        assert dropped_before > 0, "the stalled client never filled up"

        await talk_internally(pbx)
        await call_the_city(pbx)

        internal, outgoing = stored_rows(data_dir)
        assert (internal["direction"], outgoing["direction"]) == ("internal", "outgoing")
        calls = documented_line(internal) + documented_line(outgoing)
        total = len(HEADER) + FLOOD * 98 + len(calls)
        await pbx.sim.wait_until(lambda: len(received) >= total, 5.0, "call lines over TCP")
        await pbx.sim.wait_until(lambda: len(serial_bytes) >= total, 5.0, "call lines on pty")
        assert bytes(received[-len(calls) :]) == calls
        assert bytes(serial_bytes[-len(calls) :]) == calls
        assert len(received) == len(serial_bytes) == total
        assert received == serial_bytes, "serial and TCP carry the same stream"
        flood = b"".join(documented_line(flood_row(number)) for number in range(FLOOD))
        assert received == HEADER + flood + calls

        status = smdr.status
        assert status["tcp"]["dropped"] == dropped_before + 2, "both calls dropped for the stalled"
        assert status["tcp"]["clients"] == 2
        assert status["serial"]["state"] == "open"
        assert status["serial"]["sent"] == FLOOD + 2
        assert status["records"] == FLOOD + 2
    finally:
        loop.remove_reader(master)
        writer.close()
        stalled.close()
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


def flood_row(number: int) -> dict[str, Any]:
    """A stored-row shape for the burst (not in the store: replay never reads these)."""
    return {
        "call_id": f"flood-{number}", "start_utc": "2024-05-01T10:00:00.000Z",
        "answer_utc": "2024-05-01T10:00:05.000Z", "end_utc": "2024-05-01T10:01:05.000Z",
        "caller_number": "204", "dialled": "9212345678", "called_extension": None,
        "answered_extension": None, "line": "city2", "direction": "outgoing",
        "disposition": "answered", "transferred_by": None, "account_code": None,
        "external_number": f"21{number:07d}", "cost_e4": 1234, "currency": "EUR",
    }  # fmt: skip
