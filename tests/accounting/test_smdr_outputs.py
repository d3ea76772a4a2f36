"""The SMDR outputs: a serial port (a real pty through pyserial) and TCP clients.

Records are stored in a real CdrStore and handed to the service as the call manager does
(`publish(stored_row)`); what the outputs send is read back with plain os/socket calls.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import serial

from firmware.accounting.smdr_output import STATE_FILE, SmdrService, open_serial
from firmware.calls.cdr import CallRecord, CdrStore, Direction, Disposition, HangupSide
from firmware.config.load import default_config_text, parse_config
from firmware.config.schema import Config

HEADER = (
    b"Date     Time    Ext   CO     Dial Number                Ring Duration      Cost "
    b"Acc code     CD\r\n" + b"-" * 96 + b"\r\n"
)


def expected_line(number: int) -> bytes:
    """Typed from the docs table: record `number` of `call()` (11:00 Lisbon, ring 5 s, 60 s)."""
    return (
        f"01/05/24 11:00   202   city1  21234{number:05d}" + " " * 17 + "0'05 00:01'00"
        + " " * 26 + "\r\n"
    ).encode()  # fmt: skip


def call(number: int) -> CallRecord:
    start = datetime(2024, 5, 1, 10, 0, number % 60, tzinfo=UTC)
    return CallRecord(
        start=start, answer=start + timedelta(seconds=5), end=start + timedelta(seconds=65),
        caller_number="202", caller_name="Sales", dialled=f"921234{number:05d}",
        called_extension=None, answered_extension=None, line="city1", line_group="city",
        direction=Direction.OUTGOING, disposition=Disposition.ANSWERED,
        hangup_side=HangupSide.CALLER, external_number=f"21234{number:05d}",
    )  # fmt: skip


def smdr_config(section: str) -> Config:
    return parse_config(default_config_text() + "\n[smdr]\nenabled = true\n" + section)


def synthetic_row(number: int) -> dict[str, Any]:
    """A row as the store hands it over, without storing it (for volume)."""
    record = call(number)
    return {
        "call_id": f"synthetic-{number}",
        "start_utc": record.start.isoformat().replace("+00:00", "Z"),
        "answer_utc": record.answer.isoformat().replace("+00:00", "Z"),  # type: ignore[union-attr]
        "end_utc": record.end.isoformat().replace("+00:00", "Z"),
        "caller_number": "202", "dialled": record.dialled, "called_extension": None,
        "answered_extension": None, "line": "city1", "direction": "outgoing",
        "disposition": "answered", "transferred_by": None, "account_code": None,
        "external_number": record.external_number, "cost_e4": None, "currency": None,
    }  # fmt: skip


async def read_fd(fd: int, size: int, timeout: float = 5.0) -> bytes:
    """Read from a pty master (or socket fd) until `size` bytes came or `timeout` passed."""

    def blocking() -> bytes:
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        return data

    return await asyncio.to_thread(blocking)


async def wait_until(condition, timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def store(tmp_path: Path):
    cdr = CdrStore(tmp_path / "cdr.sqlite3")
    yield cdr
    await asyncio.to_thread(cdr.close)


async def started(config: Config, store: CdrStore, opener=None) -> SmdrService:
    service = SmdrService(config, Path(store.path))
    if opener is not None:
        service.serial_opener = opener
    await service.start()
    return service


async def store_and_publish(service: SmdrService, store: CdrStore, number: int) -> None:
    service.publish(await store.async_write(call(number)))


# ----- serial ----------------------------------------------------------------------------------


async def test_serial_port_gets_a_header_then_each_record_byte_for_byte(store) -> None:
    master, slave = os.openpty()
    try:
        config = smdr_config(f'header_every = 2\n[smdr.serial]\nurl = "{os.ttyname(slave)}"\n')
        service = await started(config, store)
        for number in range(3):
            await store_and_publish(service, store, number)
        expected = HEADER + expected_line(0) + expected_line(1) + HEADER + expected_line(2)
        assert await read_fd(master, len(expected)) == expected
        await service.stop()
        assert service.status["serial"]["sent"] == 3
        assert service.status["serial"]["state"] == "closed"
    finally:
        os.close(master)
        os.close(slave)


async def test_a_vanished_serial_port_is_reopened_and_gets_what_it_missed(store) -> None:
    master, slave = os.openpty()
    current = [os.ttyname(slave)]

    def opener(settings):
        return open_serial(settings.model_copy(update={"url": current[0]}))

    config = smdr_config(f'[smdr.serial]\nurl = "{current[0]}"\nreopen_max_s = 1\n')
    service = await started(config, store, opener)
    await store_and_publish(service, store, 1)
    assert await read_fd(master, len(HEADER) + 98) == HEADER + expected_line(1)

    os.close(master)  # the printer cable is pulled: writes fail with EIO
    os.close(slave)
    current[0] = "/nonexistent/ttyUSB-unplugged"  # and its device node is gone
    await store_and_publish(service, store, 2)
    serial_status = lambda: service.status["serial"]  # noqa: E731
    await wait_until(lambda: serial_status()["open_failures"] >= 1, what="a failed reopen")
    assert serial_status()["errors"] == 1
    assert serial_status()["state"] in ("down", "opening")
    await store_and_publish(service, store, 3)  # written while the port is away

    master, slave = os.openpty()  # plugged in again (as another pty)
    current[0] = os.ttyname(slave)
    try:
        expected = HEADER + expected_line(2) + expected_line(3)
        assert await read_fd(master, len(expected), timeout=8.0) == expected
        await store_and_publish(service, store, 4)  # live again, no duplicates
        assert await read_fd(master, 98) == expected_line(4)
        assert serial_status()["replayed"] == 2
        assert serial_status()["state"] == "open"
        await service.stop()
    finally:
        os.close(master)
        os.close(slave)


async def test_an_absent_serial_port_is_logged_and_counted_and_records_still_flow(
    store, caplog
) -> None:
    config = smdr_config(
        'tcp_listen = "127.0.0.1:0"\n[smdr.serial]\nurl = "/nonexistent/ttySMDR"\n'
    )
    service = await started(config, store)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.tcp.port)
    await wait_until(lambda: not service.tcp.clients[0].replaying, what="replay done")
    await store_and_publish(service, store, 5)
    assert await reader.readexactly(len(HEADER) + 98) == HEADER + expected_line(5)
    await wait_until(lambda: service.status["serial"]["open_failures"] >= 1, what="open failure")
    status = service.status["serial"]
    assert status["state"] in ("down", "opening")
    assert "/nonexistent/ttySMDR" in status["last_error"]
    assert "event=smdr_serial_open_failed" in caplog.text
    writer.close()
    await service.stop()


class GarbledPort:
    """A port that takes a few bytes and then fails, as a dying USB adapter does."""

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> int:
        if self.written:
            return 3  # a short write: the rest never left
        self.written += data
        return len(data)

    def close(self) -> None:
        pass


async def test_a_garbled_serial_port_counts_errors_and_leaves_publish_instant(store) -> None:
    ports: list[GarbledPort] = []

    def opener(settings):
        if len(ports) >= 2:
            raise serial.SerialException("device reports readiness to read but returned no data")
        ports.append(GarbledPort())
        return ports[-1]

    config = smdr_config('[smdr.serial]\nurl = "/dev/ttyFAKE"\nreopen_max_s = 1\n')
    service = await started(config, store, opener)
    begin = time.monotonic()
    for number in range(50):
        service.publish(synthetic_row(number))
    assert time.monotonic() - begin < 0.5, "publishing must never wait for the port"
    number = 50
    while service.status["serial"]["open_failures"] == 0:  # until both ports have failed
        assert number < 200, service.status
        service.publish(synthetic_row(number))
        number += 1
        await asyncio.sleep(0.05)
    status = service.status["serial"]
    assert status["errors"] == 2  # one short write on each of the two ports
    assert "readiness to read" in status["last_error"]
    assert [port.written for port in ports] == [HEADER, HEADER]
    await service.stop()


# ----- TCP --------------------------------------------------------------------------------------


def stalled_client(port: int) -> socket.socket:
    """A client with a tiny receive buffer that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_two_tcp_clients_one_stalled_the_other_gets_every_record(store) -> None:
    config = smdr_config('tcp_listen = "127.0.0.1:0"\nheader_every = 0\nclient_queue_records = 50\n'
                         "stall_timeout_s = 0\n")  # fmt: skip
    service = await started(config, store)
    stalled = stalled_client(service.tcp.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.tcp.port)
    await wait_until(lambda: len(service.tcp.clients) == 2, what="two clients")
    await wait_until(lambda: not any(c.replaying for c in service.tcp.clients), what="replay")

    total = 5000
    expected = HEADER + b"".join(expected_line(n) for n in range(total))
    reading = asyncio.create_task(reader.readexactly(len(expected)))
    slowest = 0.0
    for number in range(total):
        begin = time.perf_counter()
        service.publish(synthetic_row(number))
        slowest = max(slowest, time.perf_counter() - begin)
        if number % 10 == 9:  # calls end a few at a time; the loop runs in between
            await asyncio.sleep(0)
    assert await asyncio.wait_for(reading, 10) == expected
    assert slowest < 0.05, f"one publish took {slowest * 1000:.1f} ms"

    tcp = service.status["tcp"]
    assert tcp["clients"] == 2
    assert 0 < tcp["dropped"] < total, tcp
    taken = total - tcp["dropped"]  # what the stalled client was given before it filled up
    assert tcp["sent"] == total + taken

    # The stalled client finally reads: exactly the start of the stream, no torn line.
    stalled.setblocking(False)
    late = await read_fd(stalled.fileno(), len(HEADER) + taken * 98, timeout=5.0)
    assert late == expected[: len(HEADER) + taken * 98]
    stalled.close()
    writer.close()
    await service.stop()


async def test_a_client_stalled_past_the_timeout_is_disconnected_the_other_stays(store) -> None:
    config = smdr_config('tcp_listen = "127.0.0.1:0"\nclient_queue_records = 2\n'
                         "stall_timeout_s = 0.3\nheader_every = 0\n")  # fmt: skip
    service = await started(config, store)
    stalled = stalled_client(service.tcp.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.tcp.port)
    await wait_until(lambda: len(service.tcp.clients) == 2, what="two clients")
    await wait_until(lambda: not any(c.replaying for c in service.tcp.clients), what="replay")
    await reader.readexactly(len(HEADER))
    number = 0
    while service.status["tcp"]["stall_disconnects"] == 0:
        assert number < 5000, "the stalled client was never disconnected"
        service.publish(synthetic_row(number))
        assert await reader.readexactly(98) == expected_line(number)
        number += 1
        await asyncio.sleep(0.001 if number % 50 == 0 else 0)
    await wait_until(lambda: service.status["tcp"]["clients"] == 1, what="one client left")
    service.publish(synthetic_row(99999))
    assert await reader.readexactly(98) == expected_line(99999)
    stalled.close()
    writer.close()
    await service.stop()


async def test_records_written_while_no_client_was_connected_go_to_the_next_client(
    store,
) -> None:
    config = smdr_config('tcp_listen = "127.0.0.1:0"\n')
    service = await started(config, store)
    for number in (1, 2):
        await store_and_publish(service, store, number)  # nobody listening
    reader, writer = await asyncio.open_connection("127.0.0.1", service.tcp.port)
    expected = HEADER + expected_line(1) + expected_line(2)
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
    await store_and_publish(service, store, 3)
    assert await asyncio.wait_for(reader.readexactly(98), 5) == expected_line(3)

    # A second client while the first is connected gets the live stream only.
    second_reader, second_writer = await asyncio.open_connection("127.0.0.1", service.tcp.port)
    assert await asyncio.wait_for(second_reader.readexactly(len(HEADER)), 5) == HEADER
    await wait_until(lambda: len(service.tcp.clients) == 2, what="second client")
    await store_and_publish(service, store, 4)
    assert await asyncio.wait_for(second_reader.readexactly(98), 5) == expected_line(4)
    assert await asyncio.wait_for(reader.readexactly(98), 5) == expected_line(4)
    writer.close()
    second_writer.close()
    await wait_until(lambda: not service.tcp.clients, what="clients gone")

    # Nobody connected across a restart: the watermark in the state file carries the gap.
    await store_and_publish(service, store, 5)
    await service.stop()
    assert (Path(store.path).parent / STATE_FILE).exists()
    service = await started(config, store)
    await store_and_publish(service, store, 6)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.tcp.port)
    expected = HEADER + expected_line(5) + expected_line(6)
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
    assert service.status["tcp"]["replayed"] == 2
    writer.close()
    await service.stop()


async def test_clients_beyond_the_limit_are_refused(store) -> None:
    config = smdr_config('tcp_listen = "127.0.0.1:0"\ntcp_max_clients = 1\n')
    service = await started(config, store)
    first_reader, first_writer = await asyncio.open_connection("127.0.0.1", service.tcp.port)
    await first_reader.readexactly(len(HEADER))
    second_reader, second_writer = await asyncio.open_connection("127.0.0.1", service.tcp.port)
    assert await asyncio.wait_for(second_reader.read(), 5) == b""
    assert service.status["tcp"]["refused"] == 1
    assert service.status["tcp"]["clients"] == 1
    first_writer.close()
    second_writer.close()
    await service.stop()


async def test_disabled_service_opens_nothing_and_ignores_records(store) -> None:
    config = parse_config(default_config_text())
    service = await started(config, store)
    service.publish(synthetic_row(1))
    assert service.status == {
        "enabled": False, "records": 0, "format_errors": 0, "serial": None, "tcp": None,
    }  # fmt: skip
    await service.stop()


async def test_a_row_that_cannot_be_formatted_is_counted_and_skipped(store) -> None:
    config = smdr_config('tcp_listen = "127.0.0.1:0"\n')
    service = await started(config, store)
    service.publish({"call_id": "broken", "start_utc": "yesterday"})
    assert service.status["format_errors"] == 1
    await service.stop()
