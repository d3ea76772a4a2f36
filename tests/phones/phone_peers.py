"""Real SIP phones for the tests: pjsua2 and baresip in their own processes, plus checks.

Both phones are independent implementations of SIP and RTP; each runs as a child process
so a crash in it fails one test and cannot stall the appliance's event loop. Their audio
is checked with a Goertzel filter of our own (not the firmware's detector), so a detector
bug in the firmware cannot hide a broken speech path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sys
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from conftest import Pbx, office_config, start_pbx
from sipp_tools import free_port, sip_section

from firmware.calls.cdr import Direction, Disposition, HangupSide

PJSUA_SCRIPT = Path(__file__).with_name("pjsua_phone.py")
BARESIP = shutil.which("baresip")
BARESIP_MODULES = Path("/usr/lib/baresip/modules")


def _pjsua2_imports() -> bool:
    """The wheel exists for x86_64 CPython 3.11 only; elsewhere the pjsua2 tests skip."""
    try:
        import pjsua2  # noqa: F401  (only loaded here; the phone runs in its own process)
    except ImportError:
        return False
    return True


HAVE_PJSUA2 = _pjsua2_imports()

PHONE_PASSWORD = "phone-205-pass"

Event = dict[str, Any]


def phone_office(extra: str, rtp_ports: tuple[int, int]) -> str:
    """The office with SIP on, 205 a SIP-only extension (no desk phone) with a password.

    Calls ring for 8 s, not the fast timers' 2 s: a phone process on a loaded machine must
    not lose a call the test is about to answer.
    """
    text = office_config(sip_section(rtp_ports) + extra)
    assert "ring_timeout_s = 2.0\n" in text
    text = text.replace("ring_timeout_s = 2.0\n", "ring_timeout_s = 8.0\n")
    # Busy tone for 5 s, not 1 s: a phone process slow to report its hang-up must not make
    # the desk phone's busy cadence end before the test listens.
    assert "lockout_tone_s = 1.0\n" in text
    text = text.replace("lockout_tone_s = 1.0\n", "lockout_tone_s = 5.0\n")
    desk = 'number = "205"\nname = "Warehouse"\nport = 5\n'
    assert desk in text
    return text.replace(desk, f'number = "205"\nname = "Warehouse"\nsip_password = "{PHONE_PASSWORD}"\n')


@contextlib.asynccontextmanager
async def running_office(extra: str, rtp_ports: tuple[int, int], data_dir: Path) -> AsyncIterator[Pbx]:
    """The office of `phone_office` running, stopped on the way out (after the phone)."""
    pbx = await start_pbx(phone_office(extra, rtp_ports), data_dir)
    try:
        yield pbx
    finally:
        await pbx.app.stop()


async def assert_answered_internal_call(pbx: Pbx, caller: str, dialled: str, hangup_side: HangupSide) -> None:
    """The last call record: `caller` called `dialled`, which answered; `hangup_side` ended it."""
    record = await pbx.last_record()
    assert (record.caller_number, record.dialled, record.answered_extension) == (caller, dialled, dialled)
    assert (record.direction, record.disposition) == (Direction.INTERNAL, Disposition.ANSWERED)
    assert record.hangup_side == hangup_side


# ----- tone checks ---------------------------------------------------------------------------


def goertzel_ratio(block: np.ndarray, freq: float, rate: int) -> float:
    """Share of the block's energy at `freq` (0..1): one DFT term, as a Goertzel filter gives."""
    x = block.astype(np.float64)
    n = np.arange(x.size)
    term = np.sum(x * np.exp(-2j * np.pi * freq * n / rate))
    total = float(np.sum(x * x)) * x.size / 2
    return float(abs(term) ** 2 / total) if total > 0 else 0.0


def wav_tone_ms(path: Path, freq: float, min_level: float = 300.0) -> int:
    """How many milliseconds of the WAV carry `freq` as their main content (20 ms blocks)."""
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        assert wav.getsampwidth() == 2, "16-bit PCM expected"
        channels = wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    samples = data[::channels]
    block = rate // 50
    hits = 0
    for start in range(0, samples.size - block + 1, block):
        chunk = samples[start : start + block]
        rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
        if rms >= min_level and goertzel_ratio(chunk, freq, rate) > 0.6:
            hits += 1
    return hits * 20


# ----- pjsua2 ----------------------------------------------------------------------------------


class EventStream:
    """JSON-line events of a child process, awaited by predicate from a cursor."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Event] = []
        self.raw: list[str] = []
        self.taken = 0  # events before this index are never matched again
        self._used: set[int] = set()
        self.closed = False
        self._changed = asyncio.Event()

    def push(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def expect(self, predicate: Callable[[Event], bool], timeout: float, what: str) -> Event:
        """The oldest event not yet taken that matches; it is taken (others stay for later)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index in range(self.taken, len(self.events)):
                event = self.events[index]
                if index not in self._used and predicate(event):
                    self._used.add(index)
                    return event
            if self.closed:
                raise AssertionError(f"{self.name} ended while waiting for {what}; events: {self.events[-15:]}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout}s; events: {self.events[-15:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def forget(self) -> None:
        """Events so far are history: later expectations look only at newer ones."""
        self.taken = len(self.events)


class PjsuaPhone:
    """pjsua2 registered as an extension, in its own process (tests/phones/pjsua_phone.py)."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.stream = EventStream("pjsua2")
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, registrar: str, user: str, password: str, workdir: Path, rtp_port: int, lifetime: float = 40.0
    ) -> PjsuaPhone:
        log = workdir / f"pjsua-{user}.log"
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(PJSUA_SCRIPT), "--registrar", registrar, "--user", user,
            "--password", password, "--rtp-port", str(rtp_port), "--log", str(log),
            "--lifetime", str(lifetime),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        phone = cls(process, log)
        await phone.expect("ready", timeout=10.0)
        return phone

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            async for line in self.process.stdout:
                text = line.decode(errors="replace").strip()
                self.stream.raw.append(text)
                if text.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        self.stream.push(json.loads(text))
        finally:
            self.stream.close()

    def send(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())

    async def expect(self, event: str, timeout: float = 5.0, **fields: Any) -> Event:
        def match(item: Event) -> bool:
            if item.get("event") == "error":
                raise AssertionError(f"pjsua2 reported an error: {item}")
            return item.get("event") == event and all(item.get(k) == v for k, v in fields.items())

        return await self.stream.expect(match, timeout, f"{event} {fields}")

    async def call_state(self, state: str, timeout: float = 5.0) -> Event:
        return await self.expect("call_state", timeout, state=state)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.send("quit")
            try:
                await asyncio.wait_for(self.process.wait(), 5.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


# ----- baresip ---------------------------------------------------------------------------------


def write_tone_wav(path: Path, freq: float, seconds: float, rate: int = 8000) -> Path:
    """A mono 16-bit WAV of one tone at -10 dBFS-ish, for baresip's aufile source."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (10000 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return path


def baresip_missing() -> str | None:
    """Why the baresip tests cannot run here, or None."""
    if BARESIP is None:
        return "baresip is not installed (apt-get install baresip; make test does it)"
    for module in ("g711", "aufile", "sndfile", "ctrl_tcp", "menu", "account", "alsa"):
        if not (BARESIP_MODULES / f"{module}.so").exists():
            return f"baresip module {module}.so is missing from {BARESIP_MODULES}"
    return None


def netstrings(buffer: bytearray) -> list[bytes]:
    """Complete netstrings (len:payload,) taken off the front of `buffer`."""
    out = []
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            return out
        length = int(buffer[:colon])
        end = colon + 1 + length
        if len(buffer) < end + 1:
            return out
        out.append(bytes(buffer[colon + 1 : end]))
        del buffer[: end + 1]


class BaresipPhone:
    """baresip 1.x registered as an extension, driven through its ctrl_tcp module.

    It sends a 1004 Hz tone from a WAV file (aufile) all through every call, plays what it
    receives into ALSA's null device, and the sndfile module dumps the decoded (received)
    audio of each call to `workdir/dump-*-dec.wav`, complete once the call is closed.
    """

    SENT_TONE = 1004.0

    def __init__(self, process: asyncio.subprocess.Process, workdir: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.stream = EventStream("baresip")
        self.writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._token = 0

    @classmethod
    async def start(cls, registrar: str, user: str, password: str, workdir: Path, rtp_ports: tuple[int, int]) -> BaresipPhone:
        workdir.mkdir(parents=True, exist_ok=True)
        tone = write_tone_wav(workdir / "tone.wav", cls.SENT_TONE, 30.0)
        control = free_port(socket.SOCK_STREAM)
        (workdir / "config").write_text(
            f"""poll_method epoll
sip_listen 127.0.0.1:{free_port()}
call_local_timeout 20
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{tone}
ausrc_srate 8000
ausrc_channels 1
rtp_ports {rtp_ports[0]}-{rtp_ports[1]}
net_interface 127.0.0.1
module_path {BARESIP_MODULES}
module g711.so
module alsa.so
module aufile.so
module sndfile.so
snd_path {workdir}
module ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{control}
module_app account.so
module_app menu.so
"""
        )
        (workdir / "accounts").write_text(
            f"<sip:{user}@{registrar}>;auth_pass={password};regint=60;answermode=auto;audio_codecs=PCMU,PCMA\n"
        )
        log = (workdir / "baresip.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            BARESIP, "-4", "-v", "-s", "-f", str(workdir), "-t", "40",  # quits by itself after 40 s
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        phone = cls(process, workdir)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while True:
            try:
                reader, phone.writer = await asyncio.open_connection("127.0.0.1", control)
                break
            except OSError:
                if loop.time() > deadline or process.returncode is not None:
                    await phone.close()
                    raise AssertionError(f"baresip control socket never opened:\n{phone.log_tail()}") from None
                await asyncio.sleep(0.1)
        phone._reader = asyncio.create_task(phone._read(reader))
        return phone

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        try:
            while data := await reader.read(65536):
                buffer += data
                for payload in netstrings(buffer):
                    self.stream.raw.append(payload.decode(errors="replace"))
                    with contextlib.suppress(json.JSONDecodeError):
                        self.stream.push(json.loads(payload))
        finally:
            self.stream.close()

    async def command(self, command: str, params: str = "", timeout: float = 3.0) -> Event:
        """A menu command (dial, accept, hangup, ...) and baresip's response to it."""
        assert self.writer is not None
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.writer.write(b"%d:%s," % (len(body), body))
        await self.writer.drain()
        return await self.stream.expect(
            lambda e: bool(e.get("response")) and e.get("token") == token, timeout, f"response to {command}"
        )

    async def expect(self, kind: str, timeout: float = 5.0) -> Event:
        """The next ctrl_tcp event of this type (REGISTER_OK, CALL_INCOMING, CALL_ESTABLISHED...)."""
        return await self.stream.expect(lambda e: bool(e.get("event")) and e.get("type") == kind, timeout, kind)

    async def received_audio(self, timeout: float = 3.0) -> Path:
        """The decoded-audio dump of the last call, once sndfile has closed it.

        libsndfile writes the RIFF size when the call's filter is destroyed, which may be a
        moment after ctrl_tcp reported CALL_CLOSED.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            dumps = sorted(self.workdir.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)
            if dumps:
                data = dumps[-1].read_bytes()
                if len(data) > 44 and int.from_bytes(data[4:8], "little") == len(data) - 8:
                    return dumps[-1]
            if loop.time() > deadline:
                raise AssertionError(f"baresip wrote no complete dump of received audio: {dumps}\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join((self.workdir / "baresip.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def close(self) -> None:
        if self.process.returncode is None and self.writer is not None:
            with contextlib.suppress(OSError, AssertionError):
                await self.command("quit", timeout=1.0)
        if self.writer is not None:
            self.writer.close()
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 5.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# ----- either phone ----------------------------------------------------------------------------

PhoneT = TypeVar("PhoneT", PjsuaPhone, BaresipPhone)


@contextlib.asynccontextmanager
async def closing_phone(phone: PhoneT) -> AsyncIterator[PhoneT]:
    """The phone, closed on the way out (before the office stops); if getting it ready fails,
    its log's tail is printed first, as the test's captured output."""
    try:
        yield phone
    except BaseException:
        print(phone.log_tail())
        raise
    finally:
        await phone.close()
