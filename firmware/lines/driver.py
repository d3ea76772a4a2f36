"""Host side of the line-card link: the serial port, the session, link supervision.

The same code drives the real card (`/dev/ttyAMA0`) and the simulator (`socket://...` or a
pty), because pyserial opens either by URL. Blocking serial calls run in two threads of
their own (reader, writer); the protocol state (`LinkEndpoint`) lives on the event loop and
is only touched there. When the card stops answering (unplugged, dead, rebooting) the driver
reports the link down, closes the port and keeps trying to reopen it by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import select
import socket
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import serial

from firmware.lines.link import LinkEndpoint
from firmware.lines.protocol import Fault, FaultCode, Heartbeat, Hello, Inventory, Message
from firmware.lines.wakeup import Wakeup

log = logging.getLogger(__name__)

MessageHandler = Callable[[Message], None]
LinkHandler = Callable[[bool, Inventory | None], None]

_SUPERVISE_MAX_S = 0.5  # the longest sleep between looks at the link
_REOPEN_MIN_S = 0.5
_REOPEN_MAX_S = 5.0


class LinkStatus(StrEnum):
    DOWN = "down"
    CONNECTING = "connecting"  # port open, HELLO sent, waiting for the INVENTORY
    UP = "up"


class _SerialThreads:
    """Owns one open serial port and the two threads that block on it."""

    def __init__(
        self,
        port: serial.SerialBase,
        loop: asyncio.AbstractEventLoop,
        on_bytes: Callable[[bytes], None],
        on_error: Callable[[str], None],
    ) -> None:
        self._port = port
        self._loop = loop
        self._on_bytes = on_bytes
        self._on_error = on_error
        self._outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="linecard-reader", daemon=True)
        self._writer = threading.Thread(
            target=self._write_loop, name="linecard-writer", daemon=True
        )
        self._reader.start()
        self._writer.start()

    def write(self, data: bytes) -> None:
        if data and not self._closed.is_set():
            self._outgoing.put(data)

    def _read_available(self) -> bytes:
        """Block up to the port timeout for data, then take everything that is waiting.

        pyserial's socket:// handler reports `in_waiting` as 0 or 1, which would make
        every byte its own hand-off to the loop; its socket is read directly instead.
        """
        sock = getattr(self._port, "_socket", None)
        if sock is None:
            return self._port.read(max(1, self._port.in_waiting))
        readable, _, _ = select.select([sock], [], [], 0.1)
        if not readable:
            return b""
        data = sock.recv(4096)
        if not data:
            raise serial.SerialException("the socket was closed by the other end")
        return data

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._read_available()
            except (serial.SerialException, OSError, TypeError, AttributeError) as error:
                self._report(f"read failed: {error}")
                return
            if data and not self._closed.is_set():
                self._loop.call_soon_threadsafe(self._on_bytes, data)

    def _write_loop(self) -> None:
        while True:
            data = self._outgoing.get()
            if data is None or self._closed.is_set():
                return
            try:
                self._port.write(data)
            except (serial.SerialException, OSError, TypeError, AttributeError) as error:
                self._report(f"write failed: {error}")
                return

    def _report(self, reason: str) -> None:
        if not self._closed.is_set():
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                self._loop.call_soon_threadsafe(self._on_error, reason)

    def close(self) -> None:
        """Blocking (joins threads): run in an executor."""
        self._closed.set()
        self._outgoing.put(None)
        with contextlib.suppress(Exception):
            self._port.close()
        self._reader.join(timeout=2)
        self._writer.join(timeout=2)


class LineCardDriver:
    """Keeps a session with the card and hands its messages to the line-card service."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 115200,
        heartbeat_s: float = 1.0,
        link_timeout_s: float = 3.0,
        on_message: MessageHandler,
        on_link: LinkHandler,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.heartbeat_s = heartbeat_s
        self.link_timeout_s = link_timeout_s
        self._on_message = on_message
        self._on_link = on_link
        self.status = LinkStatus.DOWN
        self.inventory: Inventory | None = None
        self._link = LinkEndpoint()
        self._threads: _SerialThreads | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link_lost = asyncio.Event()
        self._wakeup = Wakeup()
        self._last_heard = 0.0
        self._last_sent = 0.0
        self.link_losses = 0
        self.reconnects = 0
        self.resyncs = 0
        self.last_error = ""
        self._link_counters_total: dict[str, int] = {}

    # ----- public ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="linecard-driver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_port()

    def send(self, message: Message) -> None:
        """Queue a command reliably; silently refused while the link is down (ports are OOS)."""
        if self.status == LinkStatus.DOWN or self._threads is None or self._loop is None:
            log.warning(
                "event=linecard_send_dropped reason=link_down message=%s", type(message).__name__
            )
            return
        now = self._loop.time()
        self._last_sent = now
        self._threads.write(self._link.send(message, now))
        self._wakeup.poke()  # its retransmission may be due before the supervisor would look

    @property
    def counters(self) -> dict[str, Any]:
        merged = dict(self._link_counters_total)
        for name, value in self._link.counters.items():
            merged[name] = merged.get(name, 0) + value
        merged.update(link_losses=self.link_losses, reconnects=self.reconnects, resyncs=self.resyncs)
        return merged

    # ----- the session loop --------------------------------------------------------------

    async def _run(self) -> None:
        backoff = _REOPEN_MIN_S
        while True:
            try:
                await self._open_port()
            except (serial.SerialException, OSError, ValueError) as error:
                self._note_error(f"cannot open {self.url}: {error}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _REOPEN_MAX_S)
                continue
            backoff = _REOPEN_MIN_S
            await self._supervise()
            await self._close_port()
            self._set_down()
            await asyncio.sleep(_REOPEN_MIN_S)
            self.reconnects += 1

    async def _open_port(self) -> None:
        assert self._loop is not None
        port = await self._loop.run_in_executor(
            None, lambda: serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=0.1)
        )
        sock = getattr(port, "_socket", None)
        if sock is not None:  # socket:// (simulator, serial-over-IP): no Nagle delay on commands
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._link_lost.clear()
        self._threads = _SerialThreads(port, self._loop, self._on_bytes, self._on_serial_error)
        now = self._loop.time()
        self._link = LinkEndpoint()
        self._link.start_session(now)
        self._last_heard = now
        self._last_sent = now
        self.status = LinkStatus.CONNECTING
        self._threads.write(self._link.send(Hello(), now))
        log.info("event=linecard_open url=%s", self.url)

    async def _supervise(self) -> None:
        """Retransmit, heartbeat and watch for silence until the link is lost."""
        assert self._loop is not None
        while not self._link_lost.is_set():
            now = self._loop.time()
            data, given_up = self._link.poll(now)
            if data and self._threads is not None:
                self._threads.write(data)
            if given_up:
                self._note_error(f"{len(given_up)} message(s) never acknowledged")
                return
            if now - self._last_heard > self.link_timeout_s:
                self._note_error(f"no frame from the card for {self.link_timeout_s:.1f} s")
                return
            if now - self._last_sent >= self.heartbeat_s:
                self.send(Heartbeat())
            # Asleep until something is due: a retransmission, the heartbeat, the silence
            # limit; a send, an ack or a lost link pokes it earlier.
            wake = min(
                self._last_sent + self.heartbeat_s,
                self._last_heard + self.link_timeout_s + 0.001,
                now + _SUPERVISE_MAX_S,
            )
            due = self._link.next_deadline()
            if due is not None:
                wake = min(wake, due)
            await self._wakeup.sleep(wake - self._loop.time())

    async def _close_port(self) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            assert self._loop is not None
            await self._loop.run_in_executor(None, threads.close)
        for name, value in self._link.counters.items():
            self._link_counters_total[name] = self._link_counters_total.get(name, 0) + value
        self._link = LinkEndpoint()

    def _set_down(self) -> None:
        was_up = self.status == LinkStatus.UP
        self.status = LinkStatus.DOWN
        if was_up:
            self.link_losses += 1
            log.error("event=linecard_link_down url=%s reason=%r", self.url, self.last_error)
            self._on_link(False, None)

    def _note_error(self, reason: str) -> None:
        if reason != self.last_error or self.status != LinkStatus.DOWN:
            log.warning("event=linecard_problem url=%s reason=%r", self.url, reason)
        self.last_error = reason
        self._link_lost.set()
        self._wakeup.poke()

    # ----- callbacks from the serial threads (on the loop) -------------------------------

    def _on_serial_error(self, reason: str) -> None:
        self._note_error(reason)

    def _on_bytes(self, data: bytes) -> None:
        if self._threads is None or self._loop is None:
            return
        now = self._loop.time()
        messages, replies = self._link.receive(data, now)
        if replies:
            self._threads.write(replies)
            self._wakeup.poke()  # acks may have let queued frames out: new deadlines
        if self._link.last_received_at is not None:
            self._last_heard = max(self._last_heard, self._link.last_received_at)
        for message in messages:
            if isinstance(message, Inventory):
                self.inventory = message
                self.status = LinkStatus.UP
                self.last_error = ""
                log.info(
                    "event=linecard_up firmware=%s ports=%d",
                    message.firmware_version,
                    len(message.ports),
                )
                self._on_link(True, message)
            elif isinstance(message, Heartbeat):
                continue
            elif isinstance(message, Fault) and message.code == FaultCode.MESSAGES_LOST:
                # The card lost events: a new session makes it send a full snapshot.
                log.warning("event=linecard_resync reason=card_lost_messages")
                self._link.start_session(now)
                self._threads.write(self._link.send(Hello(), now))
                self._wakeup.poke()
                self.resyncs += 1
            elif self.status == LinkStatus.UP:
                try:
                    self._on_message(message)
                except Exception:
                    log.exception("event=linecard_message_failed message=%r", message)
