"""A virtual line card that speaks exactly the documented protocol, plus the world behind it.

It serves the protocol on a TCP socket (the driver opens it as `socket://127.0.0.1:PORT`,
the same bytes a real card sends over its UART). Behind its FXS ports are scriptable desk
phones (`SimPhone`), behind its FXO ports a scriptable telephone exchange (`SimCityLine`):
the city rings the office with a caller ID, plays dial tone when a line is seized, takes the
digits the card dials, answers, is busy, or hangs up by loop-current drop, polarity reversal
or busy tone. Audio goes through a shared `MemoryAudio`, like the real card's sound device.

Each city line may have its own tone plan (`SimCityLine.tone_plan`, e.g. one drawn by
`sim_acoustics.random_tone_plan`) and its own acoustics (`set_acoustics`: level, noise and
the hybrid's echo), so disconnect detection and line calibration meet exchanges and lines
the firmware has never seen. By default a line is perfect and uses the card's plan.

Caller ID: by default the card decodes it and sends a CALLER_ID message (as a card with
its own CLIP receiver). A line given a `caller_id_profile` (`set_caller_id_profile`) is an
exchange that sends the spill as line audio instead, with its rings and reversals
(`clip_audio.build_spill`), for the appliance's software decoder; a phone's caller ID in
software mode is audio on its port (`SimPhone.heard`, `SimPhone.caller_id_heard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from firmware.lines.audio import MemoryAudio
from firmware.lines.link import LinkEndpoint
from firmware.lines.protocol import (
    CallerId,
    Dial,
    DialDone,
    Digit,
    Fault,
    FaultCode,
    Flash,
    Hello,
    Hook,
    HookSet,
    Inventory,
    LoopCurrent,
    Message,
    Polarity,
    PolaritySet,
    PortKind,
    Ring,
    RingDetect,
    RingStop,
)
from firmware.lines.sim_acoustics import AcousticsTap, LineAcoustics
from firmware.lines.wakeup import Wakeup
from firmware.media.clip import caller_id_info
from firmware.media.clip_audio import (
    ClipProfile,
    ClipResult,
    Signalling,
    SpillPlan,
    StepKind,
    build_spill,
    decode_spill,
)
from firmware.media.tones import TonePlan, render_cycle

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "sim-1.0"
_IDLE_POLL_S = 0.5  # the longest sleep of the link loop: host-silence checks at this pace
_CARD_LINK_TIMEOUT_S = 3.0


@dataclass
class RingState:
    cadence: tuple[tuple[int, int], ...]
    caller_number: str
    caller_name: str
    started_at: float


class SimPort:
    def __init__(self, card: SimulatedLineCard, port: int) -> None:
        self.card = card
        self.port = port

    @property
    def audio(self) -> MemoryAudio:
        return self.card.audio

    def say(self, samples: np.ndarray) -> None:
        """Send audio into the appliance from this port (a voice, a test tone, DTMF)."""
        self.audio.say(self.port, samples)

    def mark(self) -> int:
        """A position in the captured audio; `heard(mark)` returns what came after it."""
        return self.audio.position

    def heard(self, since: int) -> np.ndarray:
        return self.audio.heard(self.port, since)


class SimPhone(SimPort):
    """A desk phone on an FXS port."""

    def __init__(self, card: SimulatedLineCard, port: int) -> None:
        super().__init__(card, port)
        self.off_hook_state = False
        self.ringing: RingState | None = None
        self.last_caller: tuple[str, str] | None = None
        self.rings_received = 0
        self.polarity_reversed = False

    def off_hook(self) -> None:
        self.off_hook_state = True
        self.ringing = None
        self.card.send(Hook(port=self.port, off_hook=True))

    def on_hook(self) -> None:
        self.off_hook_state = False
        self.card.audio.silence(self.port)
        self.card.send(Hook(port=self.port, off_hook=False))

    def flash(self) -> None:
        self.card.send(Flash(port=self.port))

    async def dial(self, digits: str, inter_digit_s: float = 0.05) -> None:
        """Key the digits as the card's DTMF receiver would report them."""
        for index, digit in enumerate(digits):
            if index:
                await asyncio.sleep(inter_digit_s)
            self.card.send(Digit(port=self.port, digit=digit))

    async def wait_ringing(self, timeout: float = 5.0) -> RingState:
        await self.card.wait_until(
            lambda: self.ringing is not None, timeout, f"port {self.port} ringing"
        )
        assert self.ringing is not None
        return self.ringing

    async def wait_not_ringing(self, timeout: float = 5.0) -> None:
        await self.card.wait_until(
            lambda: self.ringing is None, timeout, f"port {self.port} silent"
        )

    def caller_id_heard(self, since: int, signalling: Signalling | str) -> ClipResult:
        """The caller ID in what the port heard since `since` (software caller ID: the
        spill is audio on the port while it rings, captured on hook like any audio)."""
        return decode_spill(self.heard(since).astype(np.float64), Signalling(signalling))


@dataclass
class CityBehaviour:
    """How the exchange and the far party behave on outgoing calls from this line."""

    answer: str = "answer"  # "answer", "busy", "congestion", "no_answer"
    answer_delay_s: float = 0.3
    reverse_polarity_on_answer: bool = False
    dial_tone: bool = True
    digit_time_s: float = 0.01  # per digit dialled by the card (sped up for tests)
    clear_tone: str = "busy"  # what the exchange plays when the far party clears ("tone")
    # The far party answers, then hangs up after this many seconds (None: it stays).
    hang_up_after_s: float | None = None
    hang_up_method: str = "tone"


@dataclass
class CityCall:
    direction: str  # "in" (the city rings the office) or "out"
    caller_number: str = ""
    caller_name: str = ""
    dialled: str = ""
    answered: bool = False
    started_at: float = field(default_factory=time.monotonic)


class SimCityLine(SimPort):
    """An exchange line on an FXO port, seen from the exchange."""

    def __init__(self, card: SimulatedLineCard, port: int, tone_plan: TonePlan) -> None:
        super().__init__(card, port)
        self.tone_plan = tone_plan  # this line's exchange; replace it to simulate another
        self.behaviour = CityBehaviour()
        self.acoustics: LineAcoustics | None = None
        self.seized = False
        self.call: CityCall | None = None
        self.calls_dialled: list[str] = []
        self._ringer: asyncio.Task[None] | None = None
        self._answerer: asyncio.Task[None] | None = None
        # None: caller ID goes as a CALLER_ID message; a profile: as line audio (a spill).
        self.caller_id_profile: ClipProfile | None = None
        self.spills: list[SpillPlan] = []  # every spill sent, for tests

    def set_acoustics(self, acoustics: LineAcoustics | None) -> None:
        """Give the line a level, a noise floor and an echo path (None: a perfect line)."""
        self.acoustics = acoustics
        self.card.set_line_acoustics(self.port, acoustics)

    def _play(self, tone: str | None) -> None:
        if tone is None:
            self.audio.set_tone(self.port, None)
        else:
            self.audio.set_tone(self.port, render_cycle(self.tone_plan.tone(tone)))

    def ring(
        self,
        number: str = "",
        name: str = "",
        cid_after_first_ring: bool = True,
        *,
        private: bool = False,
        damage: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """The city calls the office on this line, with a caller ID, until answered or `hang_up`.

        With a `caller_id_profile` the caller ID is a spill of line audio in that profile's
        timing (`cid_after_first_ring` is then the profile's business); `private` withholds
        the number, `damage` changes the spill's audio (a noisy or cut spill).
        """
        if self.seized or self.call is not None:
            raise RuntimeError(f"line {self.port} is busy")
        self.call = CityCall("in", caller_number=number, caller_name=name)
        if self.caller_id_profile is not None:
            ringing = self._ring_with_spill(self._spill(number, name, private), damage)
        else:
            ringing = self._ring_loop(number, name, cid_after_first_ring)
        self._ringer = asyncio.get_running_loop().create_task(
            ringing, name=f"sim-ring-{self.port}"
        )

    def _spill(self, number: str, name: str, private: bool) -> SpillPlan:
        profile = self.caller_id_profile
        assert profile is not None
        info = caller_id_info(
            number or None,
            name or None,
            private=private,
            when=datetime.now(UTC),
            message_format=profile.message_format,
        )
        plan = build_spill(info, profile, self.tone_plan.ring_cadence_ms)
        self.spills.append(plan)
        return plan

    async def _ring_with_spill(
        self, plan: SpillPlan, damage: Callable[[np.ndarray], np.ndarray] | None
    ) -> None:
        """The spill as the exchange sends it (rings, reversals, audio), then ringing."""
        for step in plan.steps:
            if step.kind is StepKind.RING:
                self.card.send(RingDetect(port=self.port, ringing=True))
                await asyncio.sleep(step.duration_ms / 1000)
                self.card.send(RingDetect(port=self.port, ringing=False))
            elif step.kind is StepKind.PLAY:
                assert step.samples is not None
                samples = step.samples if damage is None else damage(step.samples.copy())
                self.say(samples)
                await asyncio.sleep(step.duration_ms / 1000)
            elif step.kind in (StepKind.REVERSE_POLARITY, StepKind.RESTORE_POLARITY):
                self.card.send(Polarity(port=self.port))
            elif step.kind is StepKind.START_RINGING:
                break
            else:
                await asyncio.sleep(step.duration_ms / 1000)
        await self._ring_loop("", "", cid_after_first_ring=False)

    async def _ring_loop(self, number: str, name: str, cid_after_first_ring: bool) -> None:
        cadence = self.tone_plan.ring_cadence_ms
        if not cid_after_first_ring and number:
            self.card.send(CallerId(port=self.port, number=number, name=name))
        first = True
        while True:
            for index in range(0, len(cadence), 2):
                self.card.send(RingDetect(port=self.port, ringing=True))
                await asyncio.sleep(cadence[index] / 1000)
                self.card.send(RingDetect(port=self.port, ringing=False))
                if first and cid_after_first_ring and (number or name):
                    await asyncio.sleep(0.05)
                    self.card.send(CallerId(port=self.port, number=number, name=name))
                first = False
                await asyncio.sleep(cadence[index + 1] / 1000)

    def _stop_ringing(self) -> None:
        if self._ringer is not None:
            self._ringer.cancel()
            self._ringer = None
            if self.caller_id_profile is not None and not self.seized:
                self.audio.silence(self.port)  # the rest of a spill cut short

    def hang_up(self, method: str = "loop_current") -> None:
        """The far party (or the city caller) clears: stop ringing, or signal the disconnect."""
        self._stop_ringing()
        if self._answerer is not None:
            self._answerer.cancel()
            self._answerer = None
        if not self.seized:
            if self.call is not None:
                self.card.send(RingDetect(port=self.port, ringing=False))
            self.call = None
            return
        self.call = None
        if method == "loop_current":
            self._play(None)
            self.card.send(LoopCurrent(port=self.port, present=False))
        elif method == "polarity":
            self._play(None)
            self.card.send(Polarity(port=self.port))
        elif method == "tone":
            self._play(self.behaviour.clear_tone)
        elif method == "silence":
            self._play(None)
        else:
            raise ValueError(f"unknown hang-up method {method!r}")

    # ----- commands from the appliance ---------------------------------------------------

    def on_hook_set(self, off_hook: bool) -> None:
        was_seized, self.seized = self.seized, off_hook
        if not off_hook and not was_seized:
            return  # already on hook: a repeated command changes nothing (e.g. after HELLO)
        if off_hook:
            self._stop_ringing()
            self.card.send(LoopCurrent(port=self.port, present=True))
            if self.call is not None and self.call.direction == "in":
                self.call.answered = True
                self._play(None)
            else:
                self.call = CityCall("out")
                self._play("dial" if self.behaviour.dial_tone else None)
        else:
            if self._answerer is not None:
                self._answerer.cancel()
                self._answerer = None
            self._play(None)
            self.audio.silence(self.port)
            self.call = None

    def on_dial(self, digits: str) -> None:
        if not self.seized or self.call is None:
            self.card.send(
                Fault(port=self.port, code=FaultCode.BAD_COMMAND, text="dial while on hook")
            )
            return
        self._play(None)
        self.call.dialled += digits.replace(",", "")
        self._answerer = asyncio.get_running_loop().create_task(
            self._after_dialling(digits), name=f"sim-dial-{self.port}"
        )

    async def _after_dialling(self, digits: str) -> None:
        await asyncio.sleep(self.behaviour.digit_time_s * len(digits))
        self.card.send(DialDone(port=self.port))
        assert self.call is not None
        self.calls_dialled.append(self.call.dialled)
        if self.behaviour.answer in ("busy", "congestion"):
            self._play(self.behaviour.answer)
            return
        self._play("ringback")
        if self.behaviour.answer == "no_answer":
            return
        await asyncio.sleep(self.behaviour.answer_delay_s)
        self._play(None)
        if self.call is not None:
            self.call.answered = True
        if self.behaviour.reverse_polarity_on_answer:
            self.card.send(Polarity(port=self.port))
        if self.behaviour.hang_up_after_s is not None:
            await asyncio.sleep(self.behaviour.hang_up_after_s)
            self._answerer = None  # this task: hang_up must not cancel itself
            self.hang_up(self.behaviour.hang_up_method)


class SimulatedLineCard:
    """The card: ports, the link endpoint, and a TCP server standing in for the UART."""

    def __init__(
        self, fxs_ports: int, fxo_ports: int, audio: MemoryAudio, tone_plan: TonePlan
    ) -> None:
        self.audio = audio
        self.tone_plan = tone_plan
        self.kinds = (PortKind.FXS,) * fxs_ports + (PortKind.FXO,) * fxo_ports
        self.phones = {port: SimPhone(self, port) for port in range(1, fxs_ports + 1)}
        self.lines = {
            port: SimCityLine(self, port, tone_plan)
            for port in range(fxs_ports + 1, fxs_ports + fxo_ports + 1)
        }
        self._link = LinkEndpoint()
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._poller: asyncio.Task[None] | None = None
        self._session = False
        self._last_heard = 0.0
        self.unplugged = False
        self.received: list[Message] = []
        self.port_number = 0
        self._acoustics: AcousticsTap | None = None
        self._wakeup = Wakeup()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port_number}"

    async def start(self, port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port_number = self._server.sockets[0].getsockname()[1]
        self._poller = asyncio.get_running_loop().create_task(
            self._poll_loop(), name="sim-card-poll"
        )
        log.info(
            "event=sim_card_listening url=%s fxs=%d fxo=%d",
            self.url,
            len(self.phones),
            len(self.lines),
        )
        return self.url

    async def stop(self) -> None:
        for line in self.lines.values():
            line._stop_ringing()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self._drop_connection()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def set_caller_id_profile(self, profile: ClipProfile | None) -> None:
        """Every city line sends caller ID as line audio in `profile` (None: as messages)."""
        for line in self.lines.values():
            line.caller_id_profile = profile

    def set_line_acoustics(self, port: int, acoustics: LineAcoustics | None) -> None:
        """Level, noise and echo of the line on `port` (installed on the audio at first use)."""
        if self._acoustics is None:
            if acoustics is None or acoustics.is_perfect:
                return
            self._acoustics = AcousticsTap(self.audio)
        self._acoustics.set_line(port, acoustics)

    # ----- fault injection ---------------------------------------------------------------

    def unplug(self) -> None:
        """As if the USB-serial cable was pulled: the link goes silent and refuses sessions."""
        self.unplugged = True
        self._drop_connection()

    def plug(self) -> None:
        self.unplugged = False

    def inject_raw(self, data: bytes) -> None:
        """Write bytes as they are (garbage, corrupted frames) onto the link."""
        if self._writer is not None:
            self._writer.write(data)

    # ----- the link ----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unplugged:
            writer.close()
            return
        self._drop_connection()
        self._writer = writer
        self._link = LinkEndpoint()
        self._session = False
        self._last_heard = time.monotonic()
        try:
            while not self.unplugged:
                data = await reader.read(4096)
                if not data:
                    break
                self._on_bytes(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._writer is writer:
                self._drop_connection()

    def _drop_connection(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if self._session:
            self._session = False
            self._safe_state()

    def _safe_state(self) -> None:
        """What a real card does when the host vanishes: stop ringing, release lines."""
        for phone in self.phones.values():
            phone.ringing = None
            phone.polarity_reversed = False
        for line in self.lines.values():
            if line.seized:
                line.on_hook_set(False)

    def _on_bytes(self, data: bytes) -> None:
        now = time.monotonic()
        messages, replies = self._link.receive(data, now)
        self._write(replies)
        if replies:
            self._wakeup.poke()  # acks may have let queued frames out: new deadlines
        self._last_heard = now
        for message in messages:
            self.received.append(message)
            if len(self.received) > 1000:
                del self.received[:500]
            self._handle(message)

    def _write(self, data: bytes) -> None:
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    def send(self, message: Message) -> None:
        """Card -> host, reliably; dropped while no session (the host resyncs with a snapshot)."""
        if self._writer is None or not self._session:
            return
        self._write(self._link.send(message, time.monotonic()))
        self._wakeup.poke()  # its retransmission may be due before the loop would look

    async def _poll_loop(self) -> None:
        """Retransmissions when due, and the host's silence; asleep in between."""
        while True:
            due = self._link.next_deadline()
            wait = _IDLE_POLL_S if due is None else min(due - time.monotonic(), _IDLE_POLL_S)
            await self._wakeup.sleep(wait)
            now = time.monotonic()
            data, given_up = self._link.poll(now)
            self._write(data)
            if given_up and self._session:
                # docs/line-card-protocol.md 5.4: tell the host, which answers with HELLO.
                log.warning("event=sim_card_messages_lost count=%d", len(given_up))
                self.send(Fault(port=0, code=FaultCode.MESSAGES_LOST, text=f"{len(given_up)} lost"))
            if self._session and now - self._last_heard > _CARD_LINK_TIMEOUT_S:
                log.warning("event=sim_card_host_lost")
                self._drop_connection()

    # ----- commands ----------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        if isinstance(message, Hello):
            self._link.start_session(time.monotonic())
            self._session = True
            self.send(Inventory(firmware_version=FIRMWARE_VERSION, ports=self.kinds))
            self._send_snapshot()
            return
        port = getattr(message, "port", None)
        if port is not None and not 1 <= port <= len(self.kinds):
            self.send(Fault(port=0, code=FaultCode.BAD_COMMAND, text=f"no port {port}"))
            return
        if isinstance(message, Ring | RingStop | PolaritySet):
            phone = self.phones.get(message.port)
            if phone is None:
                self.send(
                    Fault(port=message.port, code=FaultCode.BAD_COMMAND, text="not an FXS port")
                )
            elif isinstance(message, Ring):
                if not phone.off_hook_state:
                    phone.ringing = RingState(
                        message.cadence,
                        message.caller_number,
                        message.caller_name,
                        time.monotonic(),
                    )
                    phone.last_caller = (message.caller_number, message.caller_name)
                    phone.rings_received += 1
            elif isinstance(message, RingStop):
                phone.ringing = None
            else:
                phone.polarity_reversed = message.reversed
        elif isinstance(message, HookSet | Dial):
            line = self.lines.get(message.port)
            if line is None:
                self.send(
                    Fault(port=message.port, code=FaultCode.BAD_COMMAND, text="not an FXO port")
                )
            elif isinstance(message, HookSet):
                line.on_hook_set(message.off_hook)
            else:
                line.on_dial(message.digits)

    def _send_snapshot(self) -> None:
        """After INVENTORY, the state of every port (docs/line-card-protocol.md, session start)."""
        for phone in self.phones.values():
            self.send(Hook(port=phone.port, off_hook=phone.off_hook_state))
        for line in self.lines.values():
            self.send(RingDetect(port=line.port, ringing=line._ringer is not None))
            self.send(LoopCurrent(port=line.port, present=line.seized))

    # ----- helpers for scripts and tests -------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session

    async def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.005)
