"""The live SMDR stream: a serial port and a TCP listener, never slowing call handling.

``publish`` runs on the event loop for every stored CDR row: it formats the line once and
hands it to each output without waiting for any of them.

- The serial port is written by a thread of its own through a bounded queue. A lost port
  is reopened with back-off; whatever was not written meanwhile (and whatever did not fit
  in the queue) is read back from the CDR store after the last record the port took.
- Each TCP client has its own bounded buffer (the transport's, with a high-water mark).
  A client that stops reading gets records dropped for it (counted, logged once per
  episode) and is disconnected once it has taken nothing for ``stall_timeout_s``. The
  first client to connect while nobody was connected gets the records written meanwhile.

Where the outputs stand (the last call_id each delivered) is kept in ``smdr_state.json``
next to the CDR database. Every SQLite read and file write happens in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import serial

from firmware.accounting.smdr import LINE_END, LINE_WIDTH, SmdrFormatter
from firmware.calls.cdr import open_readonly
from firmware.config.schema import Config
from firmware.config.smdr_schema import SmdrSerialConfig

log = logging.getLogger(__name__)

STATE_FILE = "smdr_state.json"
_REPLAY_CHUNK = 500  # rows read from the store at a time while catching up
_SAVE_EVERY_S = 2.0  # how often a moved watermark is written to the state file
_FIRST_REOPEN_S = 0.5
KERNEL_SEND_BUFFER = 32768  # per TCP client, on top of client_queue_records
_PARITIES = {"none": serial.PARITY_NONE, "even": serial.PARITY_EVEN, "odd": serial.PARITY_ODD}

Item = tuple[str, bytes]  # (call_id, line)


# ----- the CDR store, read in threads ---------------------------------------------------------


class UnknownWatermarkError(LookupError):
    """The call an output last delivered is no longer in the store (pruned or replaced)."""


def latest_call_id(cdr_path: Path) -> str | None:
    """The newest stored record's call_id; None for an empty or missing store. Blocking."""
    if not cdr_path.exists():
        return None
    connection = open_readonly(cdr_path)
    try:
        row = connection.execute("SELECT call_id FROM cdr ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        connection.close()
    return None if row is None else row[0]


def rows_after(cdr_path: Path, call_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` rows stored after `call_id` (all when None), oldest first. Blocking.

    Rows get ids in commit order from the store's single writer, which is also the order
    in which they are published, so "after" means "not yet delivered".
    """
    if not cdr_path.exists():
        return []
    connection = open_readonly(cdr_path)
    try:
        after = _id_of(connection, call_id)
        rows = connection.execute(
            "SELECT * FROM cdr WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
    finally:
        connection.close()
    return [dict(row) for row in rows]


def count_after(cdr_path: Path, call_id: str | None) -> int:
    """How many rows are stored after `call_id` (all when None, 0 when unknown). Blocking."""
    if not cdr_path.exists():
        return 0
    connection = open_readonly(cdr_path)
    try:
        after = _id_of(connection, call_id)
        row = connection.execute("SELECT count(*) FROM cdr WHERE id > ?", (after,)).fetchone()
    except UnknownWatermarkError:
        return 0
    finally:
        connection.close()
    return int(row[0])


def _id_of(connection: sqlite3.Connection, call_id: str | None) -> int:
    if call_id is None:
        return 0
    found = connection.execute("SELECT id FROM cdr WHERE call_id = ?", (call_id,)).fetchone()
    if found is None:
        raise UnknownWatermarkError(call_id)
    return int(found[0])


class Watermarks:
    """The last call_id each output delivered, in a small JSON file (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._values: dict[str, str | None] = {}

    def load(self) -> dict[str, str | None]:
        """Blocking. A missing or unreadable file is an empty state (logged when unreadable)."""
        with self._lock:
            try:
                values = json.loads(self.path.read_text("utf-8"))
                if not isinstance(values, dict):
                    raise ValueError("not a JSON object")
                self._values = {str(key): value for key, value in values.items()}
            except FileNotFoundError:
                self._values = {}
            except (OSError, ValueError) as error:
                log.error("event=smdr_state_unreadable path=%s error=%r", self.path, str(error))
                self._values = {}
            return dict(self._values)

    def save(self, key: str, call_id: str | None) -> None:
        """Blocking: write the file with `key` set (no fsync: losing it costs a re-send)."""
        with self._lock:
            if self._values.get(key) == call_id and self.path.exists():
                return
            self._values[key] = call_id
            temporary = self.path.with_suffix(".tmp")
            try:
                temporary.write_text(json.dumps(self._values), "utf-8")
                os.replace(temporary, self.path)
            except OSError as error:
                log.error("event=smdr_state_not_saved path=%s error=%r", self.path, str(error))


# ----- serial -----------------------------------------------------------------------------------


def open_serial(settings: SmdrSerialConfig) -> serial.SerialBase:
    """Open the configured port (blocking; raises SerialException, OSError or ValueError)."""
    return serial.serial_for_url(
        settings.url,
        baudrate=settings.baud,
        bytesize=settings.data_bits,
        parity=_PARITIES[settings.parity],
        stopbits=settings.stop_bits,
        rtscts=settings.flow_control == "rtscts",
        xonxoff=settings.flow_control == "xonxoff",
        write_timeout=settings.write_timeout_s,
    )


class SerialOutput:
    """One thread owns the port: it writes queued lines and catches up from the store."""

    def __init__(
        self,
        settings: SmdrSerialConfig,
        formatter: SmdrFormatter,
        header_every: int,
        cdr_path: Path,
        watermarks: Watermarks,
        replay_limit: int,
        opener: Callable[[SmdrSerialConfig], Any] = open_serial,
    ) -> None:
        self.settings = settings
        self.formatter = formatter
        self.header_every = header_every
        self.cdr_path = cdr_path
        self.watermarks = watermarks
        self.replay_limit = replay_limit
        self.opener = opener
        self.queue: queue.Queue[Item | None] = queue.Queue(settings.queue_records)
        self.gap = threading.Event()  # a line did not fit in the queue: read it back later
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.state = "closed"
        self.last_error = ""
        self.counters = dict.fromkeys(
            ("sent", "replayed", "overflows", "errors", "open_failures", "not_replayed"), 0
        )
        self.last_call_id: str | None = None
        self._port: Any = None
        self._lines_since_header = 0
        self._sent_since_open = 0
        self._replayed: set[str] = set()
        self._saved_at = 0.0
        self.thread = threading.Thread(target=self._run, name="smdr-serial", daemon=True)

    def start(self, last_call_id: str | None) -> None:
        self.last_call_id = last_call_id
        self.thread.start()

    def publish(self, item: Item) -> None:
        """Never blocks: a full queue sets the gap flag, and the store fills the gap."""
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            with self.lock:
                self.counters["overflows"] += 1
            self.gap.set()

    def stop(self, timeout: float) -> None:
        """Blocking: let the thread finish the line in hand, then save where it stands."""
        self.stopping.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)
        if self.thread.is_alive():
            self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("event=smdr_serial_stop_timeout url=%s", self.settings.url)

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "url": self.settings.url,
                "state": self.state,
                "queued": self.queue.qsize(),
                "last_error": self.last_error,
                **self.counters,
            }

    # ----- thread side --------------------------------------------------------------------

    def _run(self) -> None:
        delay = _FIRST_REOPEN_S
        failures = 0
        try:
            while not self.stopping.is_set():
                if self._port is None:
                    if not self._open(failures):
                        failures += 1
                        self.stopping.wait(delay)
                        delay = min(delay * 2, self.settings.reopen_max_s)
                        continue
                    failures = 0
                try:
                    self._serve()
                except (serial.SerialException, OSError) as error:
                    self._lost(error)
                except Exception as error:  # A bug must not end the output for good.
                    log.exception("event=smdr_serial_failed url=%s", self.settings.url)
                    self._lost(error)
                if self._port is None:
                    # A port that opens but fails at once must not spin: back off here too,
                    # unless it had carried records since it opened.
                    delay = _FIRST_REOPEN_S if self._sent_since_open else delay
                    self.stopping.wait(delay)
                    delay = min(delay * 2, self.settings.reopen_max_s)
        finally:
            self._close()
            self.watermarks.save("serial", self.last_call_id)
            self._set_state("closed")

    def _open(self, failures: int) -> bool:
        self._set_state("opening")
        try:
            self._port = self.opener(self.settings)
        except Exception as error:  # pyserial raises SerialException, OSError or ValueError
            with self.lock:
                self.counters["open_failures"] += 1
                self.last_error = f"open: {error}"
            level = logging.WARNING if failures == 0 else logging.DEBUG
            log.log(level, "event=smdr_serial_open_failed url=%s error=%r", self.settings.url,
                    str(error))  # fmt: skip
            self._set_state("down")
            return False
        log.info("event=smdr_serial_open url=%s attempts=%d", self.settings.url, failures + 1)
        self._set_state("open")
        self._sent_since_open = 0
        self.gap.set()  # whatever was published while the port was away is in the store
        return True

    def _serve(self) -> None:
        """Write lines until told to stop; a gap first sends what the store has after us."""
        self._write(self.formatter.header())
        self._lines_since_header = 0
        while not self.stopping.is_set():
            if self.gap.is_set():
                self._catch_up()
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                self._save_now_and_then()
                continue
            if item is None:
                return
            call_id, line = item
            if self._replayed:
                if call_id in self._replayed:
                    continue  # already sent while catching up
                self._replayed.clear()
            self._send(call_id, line)
            self._save_now_and_then()

    def _catch_up(self) -> None:
        """Discard the queue (all of it is stored), then send the rows after the watermark."""
        self.gap.clear()
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self._replayed = set()
        budget = self.replay_limit
        try:
            while budget > 0 and not self.stopping.is_set():
                rows = rows_after(self.cdr_path, self.last_call_id, min(_REPLAY_CHUNK, budget))
                if not rows:
                    return
                for row in rows:
                    self._send(row["call_id"], self.formatter.line(row))
                    self._replayed.add(row["call_id"])
                    budget -= 1
                    with self.lock:
                        self.counters["replayed"] += 1
            self._skip_to_latest("replay_limit_reached")
        except UnknownWatermarkError:
            self._skip_to_latest("last_delivered_record_not_in_store")
        except sqlite3.Error as error:
            # The live lines were discarded: leave the gap open and try again shortly.
            with self.lock:
                self.last_error = f"reading the CDR store: {error}"
            log.error("event=smdr_serial_replay_failed error=%r", str(error))
            self.gap.set()
            self.stopping.wait(1.0)

    def _skip_to_latest(self, reason: str) -> None:
        """Give up on older missed records (the CLI replay prints them) and go live."""
        skipped = 0
        if reason == "replay_limit_reached":
            skipped = count_after(self.cdr_path, self.last_call_id)
        with self.lock:
            self.counters["not_replayed"] += skipped
        log.warning("event=smdr_serial_replay_skipped reason=%s records=%d last_sent=%s",
                    reason, skipped, self.last_call_id)  # fmt: skip
        self.last_call_id = latest_call_id(self.cdr_path)

    def _send(self, call_id: str, line: bytes) -> None:
        if self.header_every and self._lines_since_header >= self.header_every:
            self._write(self.formatter.header())
            self._lines_since_header = 0
        self._write(line)
        self._lines_since_header += 1
        self._sent_since_open += 1
        self.last_call_id = call_id
        with self.lock:
            self.counters["sent"] += 1

    def _write(self, data: bytes) -> None:
        written = self._port.write(data)
        if written is not None and written != len(data):
            raise serial.SerialTimeoutException(f"wrote {written} of {len(data)} bytes")

    def _lost(self, error: BaseException) -> None:
        with self.lock:
            self.counters["errors"] += 1
            self.last_error = f"write: {error}"
        log.error("event=smdr_serial_lost url=%s error=%r", self.settings.url, str(error))
        self._close()
        self._set_state("down")

    def _close(self) -> None:
        if self._port is None:
            return
        try:
            self._port.close()
        except Exception as error:  # closing a port that is gone may fail in many ways
            log.debug("event=smdr_serial_close_failed error=%r", str(error))
        self._port = None

    def _save_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._saved_at >= _SAVE_EVERY_S:
            self._saved_at = now
            self.watermarks.save("serial", self.last_call_id)

    def _set_state(self, state: str) -> None:
        with self.lock:
            self.state = state


# ----- TCP --------------------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One connected reader. Writes never wait: beyond its buffer, records are dropped."""

    def __init__(self, output: TcpOutput) -> None:
        self.output = output
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.paused = False
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.replaying = False
        self.pending: deque[Item] = deque()
        self.dropping = 0  # records dropped in the current episode
        self.lines_since_header = 0
        self.stall_timer: asyncio.TimerHandle | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance).
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.output.client_connected(self)

    def data_received(self, data: bytes) -> None:
        """Input from clients is ignored (docs/smdr.md)."""

    def eof_received(self) -> bool:
        """A client that closes its side has gone: a record sent after that would be lost."""
        return False

    def pause_writing(self) -> None:
        self.paused = True
        self.resumed.clear()
        timeout = self.output.stall_timeout_s
        if timeout > 0 and self.stall_timer is None:
            self.stall_timer = asyncio.get_running_loop().call_later(timeout, self._stalled)

    def resume_writing(self) -> None:
        self.paused = False
        self.resumed.set()
        self._cancel_stall_timer()
        if self.dropping:
            log.warning("event=smdr_tcp_client_resumed peer=%s dropped=%d", self.peer,
                        self.dropping)  # fmt: skip
            self.dropping = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_stall_timer()
        self.resumed.set()  # wake a replay waiting for room
        self.output.client_gone(self, exc)

    # sending
    def send(self, call_id: str, line: bytes) -> bool:
        """Write one record (with a header when due); False when dropped for this client."""
        assert self.transport is not None
        if self.paused or self.transport.is_closing():
            if self.dropping == 0:
                log.warning("event=smdr_tcp_client_stalled peer=%s", self.peer)
            self.dropping += 1
            return False
        header_every = self.output.header_every
        if header_every and self.lines_since_header >= header_every:
            self.transport.write(self.output.formatter.header())
            self.lines_since_header = 0
        self.transport.write(line)
        self.lines_since_header += 1
        return True

    def _stalled(self) -> None:
        self.stall_timer = None
        log.warning("event=smdr_tcp_client_disconnected peer=%s reason=stalled dropped=%d",
                    self.peer, self.dropping)  # fmt: skip
        self.output.counters["stall_disconnects"] += 1
        if self.transport is not None:
            self.transport.abort()

    def _cancel_stall_timer(self) -> None:
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None


class TcpOutput:
    """The listener and its clients, all on the event loop; store reads go to a thread."""

    def __init__(
        self,
        config: Config,
        formatter: SmdrFormatter,
        cdr_path: Path,
        watermarks: Watermarks,
    ) -> None:
        smdr = config.smdr
        self.listen = smdr.tcp_listen
        self.max_clients = smdr.tcp_max_clients
        self.queue_records = smdr.client_queue_records
        self.stall_timeout_s = smdr.stall_timeout_s
        self.header_every = smdr.header_every
        self.replay_limit = smdr.replay_limit
        self.formatter = formatter
        self.cdr_path = cdr_path
        self.watermarks = watermarks
        self.clients: list[_Client] = []
        self.server: asyncio.Server | None = None
        self.address = ""
        self.port = 0
        self.last_call_id: str | None = None  # the newest record written to some client
        self.delivered = 0  # records written to at least one client (moves the watermark)
        self.counters = dict.fromkeys(
            ("connections", "sent", "dropped", "stall_disconnects", "refused", "replayed"), 0
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._saved_at = 0.0

    @property
    def high_water(self) -> int:
        return self.queue_records * (LINE_WIDTH + len(LINE_END))

    async def start(self, last_call_id: str | None) -> None:
        self.last_call_id = last_call_id
        host, _, port = self.listen.rpartition(":")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Client(self), host.strip("[]"), int(port), reuse_address=True
        )
        bound = self.server.sockets[0].getsockname()
        self.port = int(bound[1])  # the real one when tcp_listen asks for port 0
        self.address = f"{bound[0]}:{bound[1]}"
        log.info("event=smdr_tcp_listening address=%s", self.address)

    async def stop(self) -> None:
        self._stopping = True
        if self.server is not None:
            self.server.close()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
        await asyncio.sleep(0)  # let the aborted connections report themselves lost
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.to_thread(self.watermarks.save, "tcp", self.last_call_id)

    def status(self) -> dict[str, Any]:
        return {
            "listen": self.listen,
            "address": self.address,
            "clients": len(self.clients),
            "peers": [client.peer for client in self.clients],
            **self.counters,
        }

    # ----- records ------------------------------------------------------------------------

    def publish(self, item: Item) -> None:
        call_id, line = item
        written = False
        for client in self.clients:
            if client.replaying:
                if len(client.pending) >= self.queue_records:
                    client.dropping += 1
                    self.counters["dropped"] += 1
                else:
                    client.pending.append(item)
                continue
            if client.send(call_id, line):
                self.counters["sent"] += 1
                written = True
            else:
                self.counters["dropped"] += 1
        if written:
            self.last_call_id = call_id
            self.delivered += 1
            self._save_now_and_then()

    def _save_now_and_then(self) -> None:
        """Keep the state file near the truth, so a crash re-sends little to the next client."""
        now = time.monotonic()
        if now - self._saved_at < _SAVE_EVERY_S or self._stopping:
            return
        self._saved_at = now
        self._track(asyncio.to_thread(self.watermarks.save, "tcp", self.last_call_id))

    def _track(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- clients ------------------------------------------------------------------------

    def client_connected(self, client: _Client) -> None:
        assert client.transport is not None
        if len(self.clients) >= self.max_clients:
            self.counters["refused"] += 1
            log.warning("event=smdr_tcp_client_refused peer=%s clients=%d", client.peer,
                        len(self.clients))  # fmt: skip
            client.transport.abort()
            return
        sock = client.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                # Bound what the kernel holds for a reader that stopped (Linux doubles it):
                # beyond it, the stall shows in our own buffer, where it is counted.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        client.transport.set_write_buffer_limits(high=self.high_water)
        first = not self.clients
        self.clients.append(client)
        self.counters["connections"] += 1
        log.info("event=smdr_tcp_client_connected peer=%s clients=%d", client.peer,
                 len(self.clients))  # fmt: skip
        client.transport.write(self.formatter.header())
        if first and self.replay_limit > 0:
            client.replaying = True
            self._track(self._replay(client))

    def client_gone(self, client: _Client, error: Exception | None) -> None:
        if client not in self.clients:
            return
        self.clients.remove(client)
        log.info("event=smdr_tcp_client_gone peer=%s error=%r clients=%d", client.peer,
                 str(error or ""), len(self.clients))  # fmt: skip
        if not self.clients and not self._stopping:
            self._track(asyncio.to_thread(self.watermarks.save, "tcp", self.last_call_id))

    async def _replay(self, client: _Client) -> None:
        """Send the records stored after the last one any client took, then go live."""
        start_mark, delivered_before = self.last_call_id, self.delivered
        sent: set[str] = set()
        last = None
        try:
            items = await asyncio.to_thread(self._read_missed, start_mark)
            for call_id, line in items:
                while client.paused and client in self.clients:
                    await client.resumed.wait()
                if client not in self.clients:
                    return
                if client.send(call_id, line):
                    self.counters["replayed"] += 1
                    sent.add(call_id)
                    last = call_id
        except Exception:
            log.exception("event=smdr_tcp_replay_failed peer=%s", client.peer)
        finally:
            client.replaying = False
            if last is not None and self.delivered == delivered_before:
                self.last_call_id = last  # nothing newer went out live meanwhile
            for call_id, line in client.pending:
                if call_id in sent:
                    continue
                if client in self.clients and client.send(call_id, line):
                    self.counters["sent"] += 1
                    self.last_call_id = call_id
                else:
                    self.counters["dropped"] += 1
            client.pending.clear()

    def _read_missed(self, call_id: str | None) -> list[Item]:
        """Blocking: the missed records as formatted lines (formatting off the loop too)."""
        try:
            rows = rows_after(self.cdr_path, call_id, self.replay_limit)
        except UnknownWatermarkError:
            log.warning("event=smdr_tcp_replay_skipped reason=last_delivered_record_not_in_store")
            return []
        return [(row["call_id"], self.formatter.line(row)) for row in rows]


# ----- the service ----------------------------------------------------------------------------


class SmdrService:
    """Fed one stored CDR row per finished call by the call manager (``publish``).

    Reads ``[smdr]`` once at start: changes need a restart.
    """

    def __init__(self, config: Config, cdr_path: Path) -> None:
        self.config = config
        self.cdr_path = cdr_path
        self.formatter: SmdrFormatter | None = None
        self.serial: SerialOutput | None = None
        self.tcp: TcpOutput | None = None
        self.watermarks = Watermarks(cdr_path.parent / STATE_FILE)
        self.counters = {"records": 0, "format_errors": 0}
        self.serial_opener: Callable[[SmdrSerialConfig], Any] = open_serial  # tests swap it

    async def start(self) -> None:
        """Open the configured outputs; a bad setting is logged and leaves calls unaffected."""
        smdr = self.config.smdr
        if not smdr.enabled:
            return
        try:
            self.formatter = await asyncio.to_thread(SmdrFormatter.from_config, self.config)
        except ValueError as error:
            log.error("event=smdr_config_error error=%r fallback=UTC", str(error))
            self.formatter = SmdrFormatter.from_config(self.config, timezone=UTC)
        marks = await asyncio.to_thread(self._load_watermarks)
        if smdr.serial.url:
            self.serial = SerialOutput(
                smdr.serial, self.formatter, smdr.header_every, self.cdr_path,
                self.watermarks, smdr.replay_limit, self.serial_opener,
            )  # fmt: skip
            self.serial.start(marks["serial"])
        if smdr.tcp_listen:
            tcp = TcpOutput(self.config, self.formatter, self.cdr_path, self.watermarks)
            try:
                await tcp.start(marks["tcp"])
            except OSError as error:
                log.error("event=smdr_tcp_listen_failed listen=%s error=%r", smdr.tcp_listen,
                          str(error))  # fmt: skip
            else:
                self.tcp = tcp

    def _load_watermarks(self) -> dict[str, str | None]:
        """Blocking. Outputs seen for the first time start at the newest stored record."""
        marks = self.watermarks.load()
        latest: str | None = None
        if "serial" not in marks or "tcp" not in marks:
            try:
                latest = latest_call_id(self.cdr_path)
            except sqlite3.Error as error:
                log.error("event=smdr_store_unreadable error=%r", str(error))
        result = {key: marks.get(key, latest) for key in ("serial", "tcp")}
        for key, value in result.items():
            if key not in marks:
                self.watermarks.save(key, value)
        return result

    async def stop(self) -> None:
        """Close the outputs."""
        if self.tcp is not None:
            await self.tcp.stop()
        if self.serial is not None:
            timeout = self.config.smdr.serial.write_timeout_s + 1.0
            await asyncio.to_thread(self.serial.stop, timeout)

    def publish(self, row: dict[str, Any]) -> None:
        """Queue one stored record for every output; never blocks."""
        if self.formatter is None:
            return
        self.counters["records"] += 1
        try:
            item = (row["call_id"], self.formatter.line(row))
        except Exception:
            self.counters["format_errors"] += 1
            log.exception("event=smdr_format_failed call_id=%s", row.get("call_id"))
            return
        if self.serial is not None:
            self.serial.publish(item)
        if self.tcp is not None:
            self.tcp.publish(item)

    @property
    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.config.smdr.enabled,
            **self.counters,
            "serial": self.serial.status() if self.serial is not None else None,
            "tcp": self.tcp.status() if self.tcp is not None else None,
        }
