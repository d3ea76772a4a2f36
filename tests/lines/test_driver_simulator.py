"""The host driver (firmware/lines/driver.py) against the simulated card over a real socket,
and against a minimal card on a pty, as a real UART would be opened."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from firmware.lines.audio import MemoryAudio
from firmware.lines.driver import LineCardDriver, LinkStatus
from firmware.lines.link import LinkEndpoint
from firmware.lines.protocol import (
    Dial,
    DialDone,
    DialMode,
    Digit,
    Fault,
    FaultCode,
    Flash,
    Frame,
    FrameDecoder,
    Hello,
    Hook,
    HookSet,
    Inventory,
    LoopCurrent,
    Message,
    PolaritySet,
    PortKind,
    Ring,
    RingDetect,
    RingStop,
    encode_frame,
)
from firmware.lines.simulator import SimulatedLineCard
from firmware.media.tones import get_tone_plan

HEARTBEAT_S = 0.2
LINK_TIMEOUT_S = 0.8
CADENCE = ((1000, 4000),)


async def wait_for(condition: Callable[[], bool], timeout: float = 2.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(0.005)


@dataclass
class Host:
    """What the driver reported to its owner."""

    messages: list[Message] = field(default_factory=list)
    links: list[tuple[bool, Inventory | None]] = field(default_factory=list)

    def on_message(self, message: Message) -> None:
        self.messages.append(message)

    def on_link(self, up: bool, inventory: Inventory | None) -> None:
        self.links.append((up, inventory))

    def of_type(self, kind: type[Message]) -> list[Message]:
        return [m for m in self.messages if isinstance(m, kind)]

    async def wait_message(self, wanted: Message, timeout: float = 2.0) -> None:
        await wait_for(lambda: wanted in self.messages, timeout, f"{wanted!r}")

    async def wait_links(self, count: int, timeout: float = 2.0) -> None:
        await wait_for(lambda: len(self.links) >= count, timeout, f"{count} link reports")


async def stop_driver(driver: LineCardDriver) -> bool:
    """driver.stop(), and True if it returned; if it hangs (see the stop race test below),
    cancel the runaway task again so one bug cannot hang every test after it."""
    stopper = asyncio.ensure_future(driver.stop())
    done, _ = await asyncio.wait([stopper], timeout=2.0)
    if done:
        stopper.result()
        return True
    while not stopper.done():
        task = driver._task
        if task is not None:
            task.cancel()
        await asyncio.wait([stopper], timeout=0.5)
    return False


@dataclass
class Rig:
    sim: SimulatedLineCard
    driver: LineCardDriver
    host: Host
    snapshot: list[Message]


SNAPSHOT_AT_REST = [  # docs/line-card-protocol.md section 6, for 2 FXS + 1 FXO ports at rest
    Hook(port=1, off_hook=False),
    Hook(port=2, off_hook=False),
    RingDetect(port=3, ringing=False),
    LoopCurrent(port=3, present=False),
]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sim = SimulatedLineCard(2, 1, MemoryAudio(3), get_tone_plan("eu"))
    host = Host()
    driver: LineCardDriver | None = None
    try:
        await sim.start()
        driver = LineCardDriver(
            sim.url,
            heartbeat_s=HEARTBEAT_S,
            link_timeout_s=LINK_TIMEOUT_S,
            on_message=host.on_message,
            on_link=host.on_link,
        )
        await driver.start()
        await host.wait_links(1)
        await wait_for(lambda: len(host.messages) >= len(SNAPSHOT_AT_REST), what="the snapshot")
        snapshot = list(host.messages)
        host.messages.clear()
        yield Rig(sim, driver, host, snapshot)
    finally:
        stopped = driver is None or await stop_driver(driver)
        await sim.stop()
    assert stopped, "driver.stop() hung"


async def test_link_comes_up_with_the_cards_inventory(rig: Rig) -> None:
    up, inventory = rig.host.links[0]
    assert up is True
    assert inventory is not None
    assert inventory.ports == (PortKind.FXS, PortKind.FXS, PortKind.FXO)
    assert inventory.firmware_version == "sim-1.0"
    assert rig.driver.status == LinkStatus.UP
    assert rig.driver.inventory == inventory
    assert rig.sim.connected
    assert any(isinstance(m, Hello) for m in rig.sim.received)


async def test_inventory_is_followed_by_a_snapshot_of_every_port(rig: Rig) -> None:
    assert rig.snapshot == SNAPSHOT_AT_REST


async def test_phone_events_reach_the_host(rig: Rig) -> None:
    phone = rig.sim.phones[1]
    phone.off_hook()
    await rig.host.wait_message(Hook(port=1, off_hook=True))
    await phone.dial("2#", inter_digit_s=0.01)
    phone.flash()
    phone.on_hook()
    await rig.host.wait_message(Hook(port=1, off_hook=False))
    assert rig.host.messages == [
        Hook(port=1, off_hook=True),
        Digit(port=1, digit="2"),
        Digit(port=1, digit="#"),
        Flash(port=1),
        Hook(port=1, off_hook=False),
    ]


async def test_ring_command_rings_the_phone_with_caller_id(rig: Rig) -> None:
    phone = rig.sim.phones[1]
    rig.driver.send(Ring(port=1, cadence=CADENCE, caller_number="0301234567", caller_name="Ada"))
    ringing = await phone.wait_ringing(timeout=2)
    assert ringing.caller_number == "0301234567"
    assert ringing.caller_name == "Ada"
    assert ringing.cadence == CADENCE
    rig.driver.send(RingStop(port=1))
    await phone.wait_not_ringing(timeout=2)
    assert phone.rings_received == 1


async def test_hook_set_seizes_the_city_line_and_dial_reaches_the_exchange(rig: Rig) -> None:
    line = rig.sim.lines[3]
    line.behaviour.answer = "no_answer"
    rig.driver.send(HookSet(port=3, off_hook=True))
    await wait_for(lambda: line.seized, what="line 3 seized")
    await rig.host.wait_message(LoopCurrent(port=3, present=True))
    rig.driver.send(Dial(port=3, digits="123", mode=DialMode.DTMF))
    await rig.host.wait_message(DialDone(port=3))
    assert line.calls_dialled == ["123"]
    rig.driver.send(HookSet(port=3, off_hook=False))
    await wait_for(lambda: not line.seized, what="line 3 released")


async def test_command_for_a_missing_port_gets_a_fault(rig: Rig) -> None:
    rig.driver.send(Ring(port=9, cadence=CADENCE, caller_number="", caller_name=""))
    await wait_for(lambda: rig.host.of_type(Fault), what="a fault")
    fault = rig.host.of_type(Fault)[0]
    assert fault.code == FaultCode.BAD_COMMAND
    assert "9" in fault.text
    assert rig.driver.status == LinkStatus.UP


async def test_command_for_the_wrong_kind_of_port_gets_a_fault(rig: Rig) -> None:
    rig.driver.send(HookSet(port=1, off_hook=True))  # port 1 is FXS
    rig.driver.send(Ring(port=3, cadence=CADENCE, caller_number="", caller_name=""))  # FXO
    await wait_for(lambda: len(rig.host.of_type(Fault)) == 2, what="two faults")
    faults = rig.host.of_type(Fault)
    assert [(f.port, f.code) for f in faults] == [
        (1, FaultCode.BAD_COMMAND),
        (3, FaultCode.BAD_COMMAND),
    ]
    assert not rig.sim.phones[1].off_hook_state


async def test_unplugging_the_card_reports_the_link_down_then_plugging_it_back_up(
    rig: Rig,
) -> None:
    sim, driver, host = rig.sim, rig.driver, rig.host
    sim.phones[2].off_hook()
    await host.wait_message(Hook(port=2, off_hook=True))
    unplugged_at = time.monotonic()
    sim.unplug()
    await host.wait_links(2, timeout=LINK_TIMEOUT_S + 0.5)
    took = time.monotonic() - unplugged_at
    assert host.links[1] == (False, None)
    assert took <= LINK_TIMEOUT_S + 0.2, f"link loss noticed after {took:.2f} s"
    assert driver.status != LinkStatus.UP
    assert driver.counters["link_losses"] == 1
    driver.send(Ring(port=1, cadence=CADENCE, caller_number="", caller_name=""))  # dropped
    await asyncio.sleep(0.6)  # at least one reopen attempt while unplugged
    assert len(host.links) == 2
    assert sim.phones[1].ringing is None

    host.messages.clear()
    sim.plug()
    await host.wait_links(3, timeout=3.0)
    up, inventory = host.links[2]
    assert up is True
    assert inventory is not None and len(inventory.ports) == 3
    assert driver.status == LinkStatus.UP
    print("driver counters after unplug/plug:", driver.counters)
    assert driver.counters["reconnects"] >= 1
    assert driver.counters["link_losses"] == 1
    # The card's snapshot tells the host the phone is still off hook.
    await host.wait_message(Hook(port=2, off_hook=True))
    # And the link works again in both directions.
    driver.send(Ring(port=1, cadence=CADENCE, caller_number="201", caller_name=""))
    ringing = await sim.phones[1].wait_ringing(timeout=2)
    assert ringing.caller_number == "201"


async def test_link_stays_up_on_heartbeats_alone(rig: Rig) -> None:
    await asyncio.sleep(LINK_TIMEOUT_S * 1.5)
    assert rig.driver.status == LinkStatus.UP
    assert len(rig.host.links) == 1
    assert rig.driver.counters["link_losses"] == 0
    assert rig.driver.counters["sent"] >= 3  # HELLO and heartbeats


async def test_garbage_on_the_line_is_counted_not_fatal(rig: Rig) -> None:
    sim, driver, host = rig.sim, rig.driver, rig.host
    before = driver.counters
    sim.inject_raw(b"\x00\xffnoise\x7d")  # random bytes
    sim.inject_raw(b"\x7e\x81\x00\x05\x01\x01\x00\x00\x7e")  # a frame with a bad CRC
    good = encode_frame(Hook(port=1, off_hook=True), 0)
    assert good[5] == 0x01  # the off_hook byte
    sim.inject_raw(good[:5] + b"\x00" + good[6:])  # one bit flipped: CRC must catch it
    sim.phones[1].off_hook()  # a real message right behind the garbage
    await host.wait_message(Hook(port=1, off_hook=True))
    after = driver.counters
    assert after["garbage_bytes"] > before["garbage_bytes"]
    assert after["bad_crc"] >= before["bad_crc"] + 2
    assert driver.status == LinkStatus.UP
    assert host.of_type(Hook) == [Hook(port=1, off_hook=True)]  # the corrupt copy never got in
    assert len(host.links) == 1


async def test_safe_state_after_link_loss_restores_normal_polarity(rig: Rig) -> None:
    sim, driver = rig.sim, rig.driver
    driver.send(PolaritySet(port=1, reversed=True))
    driver.send(Ring(port=2, cadence=CADENCE, caller_number="", caller_name=""))
    await wait_for(lambda: sim.phones[1].polarity_reversed, what="polarity reversed")
    await sim.phones[2].wait_ringing(timeout=2)
    sim.unplug()
    await sim.phones[2].wait_not_ringing(timeout=4)  # the safe state has been applied
    assert not sim.phones[1].polarity_reversed


async def test_card_that_gives_up_sending_reports_messages_lost() -> None:
    """Protocol doc 5.4: a card whose frames go unacked queues FAULT(0, MESSAGES_LOST) with SYN
    and keeps the connection; a raw client that never ACKs provokes it."""
    sim = SimulatedLineCard(2, 1, MemoryAudio(3), get_tone_plan("eu"))
    writer: asyncio.StreamWriter | None = None
    try:
        await sim.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port_number)
        writer.write(LinkEndpoint().send(Hello(), time.monotonic()))  # then never ACK
        decoder = FrameDecoder()
        frames: list[Frame] = []
        closed = False
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not closed:
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.05)
            except TimeoutError:
                continue
            closed = not data
            frames += decoder.feed(data)
            if any(isinstance(f.message, Fault) for f in frames):
                break
        faults = [f for f in frames if isinstance(f.message, Fault)]
        assert not closed, "the card hung up instead of reporting the loss"
        assert faults, "no FAULT after the give-up"
        assert faults[0].syn
        assert faults[0].message == Fault(
            port=0, code=FaultCode.MESSAGES_LOST, text=faults[0].message.text
        )
    finally:
        if writer is not None:
            writer.close()
        await sim.stop()


async def test_stopping_the_driver_as_the_link_drops_does_not_hang() -> None:
    """Loss of the link noticed in the same instant as stop() (an unplug at shutdown).

    The loss is signalled the way the serial threads do it (`_note_error`), right before stop(),
    while the supervisor is parked in its wait, so the race is hit deterministically instead of
    by luck with the reader thread (an unplug followed at once by stop() hits it too).
    """
    sim = SimulatedLineCard(2, 1, MemoryAudio(3), get_tone_plan("eu"))
    await sim.start()
    try:
        for attempt in range(10):
            host = Host()
            driver = LineCardDriver(
                sim.url,
                heartbeat_s=HEARTBEAT_S,
                link_timeout_s=LINK_TIMEOUT_S,
                on_message=host.on_message,
                on_link=host.on_link,
            )
            await driver.start()
            try:
                await host.wait_links(1)
                await asyncio.sleep(0.03)
                for _ in range(10):  # let the supervisor settle into its next wait_for
                    await asyncio.sleep(0)
                driver._note_error("read failed: socket disconnected")
            finally:
                stopped = await stop_driver(driver)
            assert stopped, f"driver.stop() hung (attempt {attempt + 1})"
    finally:
        await sim.stop()


# ----- the same driver over a pty, as over a real UART ------------------------------------


class PtyCard:
    """Just enough of a card on the master side of a pty: answers HELLO with an INVENTORY."""

    def __init__(self, master: int, ports: tuple[PortKind, ...]) -> None:
        self.master = master
        self.ports = ports
        self.link = LinkEndpoint()
        self.received: list[Message] = []
        self.silent = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(master, self._readable)
        self._poller = self._loop.create_task(self._poll())

    def _write(self, data: bytes) -> None:
        if data and not self.silent:
            os.write(self.master, data)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return
        if self.silent:
            return
        messages, replies = self.link.receive(data, time.monotonic())
        self._write(replies)
        for message in messages:
            self.received.append(message)
            if isinstance(message, Hello):
                self.link.start_session(time.monotonic())
                self.send(Inventory(firmware_version="pty-card", ports=self.ports))

    def send(self, message: Message) -> None:
        self._write(self.link.send(message, time.monotonic()))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            data, _ = self.link.poll(time.monotonic())
            self._write(data)

    async def close(self) -> None:
        self._loop.remove_reader(self.master)
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller


async def test_the_driver_works_over_a_serial_device_path() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    card: PtyCard | None = None
    driver: LineCardDriver | None = None
    host = Host()
    try:
        card = PtyCard(master, (PortKind.FXS, PortKind.FXO))
        driver = LineCardDriver(
            os.ttyname(slave),
            heartbeat_s=HEARTBEAT_S,
            link_timeout_s=LINK_TIMEOUT_S,
            on_message=host.on_message,
            on_link=host.on_link,
        )
        await driver.start()
        await host.wait_links(1, timeout=3)
        up, inventory = host.links[0]
        assert up and inventory is not None
        assert inventory.firmware_version == "pty-card"
        assert inventory.ports == (PortKind.FXS, PortKind.FXO)

        card.send(Hook(port=1, off_hook=True))
        await host.wait_message(Hook(port=1, off_hook=True))
        driver.send(HookSet(port=2, off_hook=True))
        await wait_for(lambda: HookSet(port=2, off_hook=True) in card.received, what="HookSet")

        # Heartbeats keep it up; a card that goes silent is declared lost after the timeout.
        await asyncio.sleep(LINK_TIMEOUT_S * 1.2)
        assert driver.status == LinkStatus.UP
        silent_at = time.monotonic()
        card.silent = True
        await host.wait_links(2, timeout=LINK_TIMEOUT_S + 1.0)
        took = time.monotonic() - silent_at
        assert host.links[1] == (False, None)
        # The unanswered heartbeat may be given up (0.5 s of attempts) before the timeout.
        assert took <= LINK_TIMEOUT_S + 0.3, took
        assert driver.counters["link_losses"] == 1

        # The driver reopens the device by itself and resyncs with a new HELLO.
        card.silent = False
        await host.wait_links(3, timeout=3)
        assert host.links[2][0] is True
        assert driver.status == LinkStatus.UP

        # A card that resyncs on its own (INVENTORY nobody asked for) is reported up again.
        card.link.start_session(time.monotonic())
        card.send(Inventory(firmware_version="pty-card-2", ports=card.ports))
        await host.wait_links(4, timeout=2)
        assert host.links[3][0] is True
        assert host.links[3][1] is not None
        assert host.links[3][1].firmware_version == "pty-card-2"
        assert driver.inventory == host.links[3][1]

        # A card that gave up sending says MESSAGES_LOST; the host starts a session to get
        # a fresh snapshot (a new HELLO), and the link stays up throughout.
        hellos = sum(isinstance(m, Hello) for m in card.received)
        card.send(Fault(port=0, code=FaultCode.MESSAGES_LOST, text="3 lost"))
        await wait_for(
            lambda: sum(isinstance(m, Hello) for m in card.received) == hellos + 1,
            what="a HELLO after MESSAGES_LOST",
        )
        await host.wait_links(5, timeout=2)
        assert host.links[4][0] is True
        assert driver.counters["resyncs"] == 1
        assert driver.counters["link_losses"] == 1
        assert driver.status == LinkStatus.UP
    finally:
        stopped = driver is None or await stop_driver(driver)
        if card is not None:
            await card.close()
        os.close(slave)
        os.close(master)
    assert stopped, "driver.stop() hung"
