"""DTMF relay between a SIP provider (SIPp) and an analogue handset, proven at both ends.

Inbound: SIPp replays a phone's RTP (RFC 4733 events for 1, 5, #, from a pcap built with
plain struct by scenarios/make_dtmf_pcap.py); the handset must hear the DTMF tone pairs, in
order, found by a Goertzel filter bank written here. Outbound: the handset keys 1, 5, #;
the SDP answer sends the appliance's RTP to a socket of this test, which checks the
telephone-events with its own parser (event code, end bit, duration, marker, SSRC).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import Pbx, office_config, start_pbx
from sipp_tools import (
    SCENARIOS,
    finish,
    free_port,
    needs_sipp,
    sip_with_provider,
    start_sipp,
    stop_sipp,
    target,
    uas_port_fixture,  # noqa: F401  (pytest finds the uas_port fixture here)
    with_voip_group,
)

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState

pytestmark = needs_sipp

RATE = 8000
EVENT_PT = 101  # the telephone-event number in our scenarios' SDP
KEYPAD = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
          "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
          "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
          "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633)}  # fmt: skip
DTMF_HZ = (697, 770, 852, 941, 1209, 1336, 1477, 1633)
EVENT_DIGITS = "0123456789*#ABCD"  # RFC 4733 3.2: events 0-15


def can_open_raw_socket() -> bool:
    """SIPp replays pcaps through a raw socket (root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- detection


def dtmf_keys(samples: np.ndarray, min_amplitude: float = 300.0) -> list[str]:
    """The DTMF keys in `samples` (8 kHz), in order, one per burst.

    A Goertzel bank (the DFT at the 8 keypad frequencies) over 40 ms Hann windows every
    10 ms: a window is key K when K's row and column tones are each at least 10 dB above
    every other keypad frequency, and above `min_amplitude` (sample units). A key counts
    after two such windows in a row; a window without a key separates bursts.
    """
    size, step = 320, 80
    x = samples.astype(np.float64)
    if x.size < size:
        return []
    starts = np.arange(0, x.size - size + 1, step)
    blocks = x[starts[:, None] + np.arange(size)] * np.hanning(size)
    t = np.arange(size) / RATE
    basis = np.exp(-2j * np.pi * np.outer(t, DTMF_HZ))
    amplitude = np.abs(blocks @ basis) * 2 / np.hanning(size).sum()  # a sine's peak
    power = amplitude**2
    keys: list[str] = []
    run_key, run = "", 0
    for row_power, row_amplitude in zip(power, amplitude, strict=True):
        low, high = int(np.argmax(row_power[:4])), 4 + int(np.argmax(row_power[4:]))
        others = np.delete(row_power, [low, high]).max()
        key = ""
        if (
            min(row_amplitude[low], row_amplitude[high]) >= min_amplitude
            and min(row_power[low], row_power[high]) >= 10.0 * others
        ):
            key = next(k for k, pair in KEYPAD.items() if pair == (DTMF_HZ[low], DTMF_HZ[high]))
        if key and key == run_key:
            run += 1
            if run == 2:
                keys.append(key)
        else:
            run_key, run = key, 1
    return keys


async def wait_for_keys(port, since: int, count: int, timeout: float) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        keys = dtmf_keys(port.heard(since))
        if len(keys) >= count or loop.time() > deadline:
            return keys
        await asyncio.sleep(0.1)


def ulaw_to_linear(data: bytes) -> np.ndarray:
    """G.711 µ-law expansion (ITU-T G.711), here so the check does not use our codec."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def test_the_detector_finds_keys_and_ignores_other_tones() -> None:
    t = np.arange(int(0.08 * RATE)) / RATE
    gap = np.zeros(int(0.06 * RATE))

    def tone(hz: float, db: float = 0.0) -> np.ndarray:
        return 4000 * 10 ** (db / 20) * np.sin(2 * np.pi * hz * t)

    def key(k: str) -> np.ndarray:
        low, high = KEYPAD[k]
        return tone(low, -2.0) + tone(high)

    signal = np.concatenate([gap, key("1"), gap, key("5"), gap, key("#"), gap])
    assert dtmf_keys(signal) == ["1", "5", "#"]
    assert dtmf_keys(np.concatenate([gap, tone(697), gap])) == []  # half a pair
    assert dtmf_keys(key("1") + tone(770, -6.0)) == []  # a third keypad tone only 6 dB down
    assert dtmf_keys(key("1") + tone(770, -14.0)) == ["1"]
    dial_tone = 4000 * np.sin(2 * np.pi * 425 * np.arange(RATE) / RATE)
    assert dtmf_keys(dial_tone) == []
    assert dtmf_keys(signal * 0.01) == []  # too quiet
    assert dtmf_keys(ulaw_to_linear(b"\xff" * 800)) == []  # µ-law silence is 0


# --------------------------------------------------------------------------- RTP, parsed here


@dataclass
class Packet:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> Packet | None:
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        _profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4 + 4 * words
    end = len(data) - (data[-1] if first & 0x20 else 0)
    return Packet(second & 0x7F, bool(second & 0x80), sequence, timestamp, ssrc, data[offset:end])


@dataclass
class Event:
    """All packets of one telephone-event (one RTP timestamp), RFC 4733 2.3."""

    timestamp: int
    ssrc: int
    first_marker: bool
    codes: set[int] = field(default_factory=set)
    durations: list[int] = field(default_factory=list)
    ends: int = 0


def telephone_events(packets: list[Packet]) -> list[Event]:
    events: dict[tuple[int, int], Event] = {}
    for packet in packets:
        if packet.payload_type != EVENT_PT or len(packet.payload) < 4:
            continue
        code, flags, duration = struct.unpack_from("!BBH", packet.payload)
        key = (packet.ssrc, packet.timestamp)
        if key not in events:
            events[key] = Event(packet.timestamp, packet.ssrc, packet.marker)
        event = events[key]
        event.codes.add(code)
        event.durations.append(duration)
        event.ends += bool(flags & 0x80)
    return list(events.values())


class RtpCatcher:
    """A plain UDP socket the SIPp scenario advertises as its media: keeps every datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.packets: list[Packet] = []
        self.garbage = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, _ = await loop.sock_recvfrom(self.sock, 2048)
            packet = parse_rtp(data)
            if packet is None:
                self.garbage += 1
            else:
                self.packets.append(packet)

    async def wait_for(self, payload_type: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not any(p.payload_type == payload_type for p in self.packets):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sock.close()


# --------------------------------------------------------------------------- configs


def provider_config(uas_port: int, rtp_ports: tuple[int, int]) -> str:
    """Provider peer on 127.0.0.1 (DID 2100 rings 202) and line group "voip" (code 8) over it."""
    peer = 'dtmf_mode = "rfc4733"\nincoming = { "2100" = "202" }\n'
    return with_voip_group(office_config(sip_with_provider(uas_port, rtp_ports, peer)), ["provider"])


@pytest.fixture
async def dtmf_pbx(uas_port: int, data_dir: Path) -> Pbx:
    pbx = await start_pbx(provider_config(uas_port, (32000, 32200)), data_dir)
    try:
        yield pbx
    finally:
        await pbx.app.stop()


def spy_digits(leg: Channel) -> list[str]:
    """The digits the leg reports to call control, seen on their way there."""
    seen: list[str] = []
    handler = leg.handler
    assert handler is not None, "the SIP leg has no call control handler yet"

    def spy(channel: Channel, event: ChannelEvent) -> None:
        if event.kind == EventKind.DIGIT:
            seen.append(event.value)
        handler(channel, event)

    leg.handler = spy
    return seen


# --------------------------------------------------------------------------- tests


@pytest.mark.skipif(
    not can_open_raw_socket(), reason="SIPp plays pcaps through a raw socket (root/CAP_NET_RAW)"
)
async def test_rfc4733_digits_from_the_provider_are_heard_as_dtmf_on_the_handset(
    dtmf_pbx: Pbx,
) -> None:
    pbx = dtmf_pbx
    sales = pbx.phone("202")
    # Run in the scenarios folder: the scenario names its pcap relative to it.
    uac = await start_sipp(target(pbx), "-sf", str(SCENARIOS / "dtmf_uac_inbound.xml"), "-s", "2100",
                           "-m", "1", "-p", str(free_port()), "-mp", str(free_port()), cwd=SCENARIOS)  # fmt: skip
    await sales.wait_ringing(5.0)
    assert len(pbx.app.sip.legs) == 1
    leg = next(iter(pbx.app.sip.legs.values()))
    received = spy_digits(leg)
    sales.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    mark = sales.mark()
    keys = await wait_for_keys(sales, mark, 3, timeout=4.0)  # the pcap starts 0.3 s after the ACK
    counters = leg.media.counters if leg.media is not None else None
    code, output = await finish(uac)
    assert code == 0, output
    assert received == ["1", "5", "#"], f"digits the SIP leg decoded: {received}; RTP {counters}"
    assert counters is not None and counters.invalid == 0 and counters.unknown_payload == 0, (
        counters
    )
    assert keys == ["1", "5", "#"], f"DTMF heard on the handset: {keys}"
    assert await pbx.hears(sales, "busy"), "the provider hung up: the handset hears busy"
    sales.on_hook()
    record = await pbx.last_record()
    assert (record.direction, record.disposition, record.answered_extension) == (
        Direction.INCOMING, Disposition.ANSWERED, "202",
    )  # fmt: skip
    assert pbx.app.sip.legs == {}
    # The record was written when the provider hung up; the handset's slot goes when the
    # card reports it on hook.
    await pbx.wait_state("202", LegState.IDLE)
    assert pbx.app.mixer.slots_in_use == 0


async def test_keys_pressed_on_the_handset_reach_the_provider_as_rfc4733_events(
    dtmf_pbx: Pbx, uas_port: int
) -> None:
    pbx = dtmf_pbx
    catcher = RtpCatcher()
    catcher.start()
    uas = await start_sipp("-sf", str(SCENARIOS / "dtmf_uas_capture.xml"), "-p", str(uas_port), "-m", "1",
                           "-mp", str(free_port()), "-key", "rtp_port", str(catcher.port),
                           cwd=SCENARIOS)  # fmt: skip
    try:
        await asyncio.sleep(0.3)
        sales = pbx.phone("202")
        sales.off_hook()
        await pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("8212345678")
        await pbx.wait_state("202", LegState.CONNECTED, timeout=5.0)
        assert await catcher.wait_for(0, timeout=2.0), (
            "no PCMU from the appliance at the advertised port"
        )
        await sales.dial("15#", inter_digit_s=0.25)
        await asyncio.sleep(1.2)  # each digit 100 ms + gap, queued after the one before
        sales.on_hook()
        code, output = await finish(uas)
        assert code == 0, output  # it got our BYE
    finally:
        await catcher.close()
        await stop_sipp(uas)
    audio = [p for p in catcher.packets if p.payload_type == 0]
    events = telephone_events(catcher.packets)
    summary = [(sorted(e.codes), e.durations, e.ends, e.first_marker) for e in events]
    assert [EVENT_DIGITS[min(e.codes)] for e in events if e.codes] == ["1", "5", "#"], (
        f"telephone-events received: {summary}; payload types seen {sorted({p.payload_type for p in catcher.packets})}"
    )
    ssrcs = {p.ssrc for p in audio}
    for event in events:
        assert len(event.codes) == 1, f"one event code per timestamp: {summary}"
        assert event.first_marker, (
            f"the first packet of an event has the marker bit (RFC 4733 2.5.1.3): {summary}"
        )
        assert event.durations == sorted(event.durations), f"durations only grow: {summary}"
        assert event.ends >= 3, f"the end packet is sent three times (RFC 4733 2.5.1.4): {summary}"
        assert 320 <= event.durations[-1] <= 8000, f"a 40 ms .. 1 s key: {summary}"
        assert event.ssrc in ssrcs, "events go in the audio stream's SSRC (RFC 4733 2.1)"
    timestamps = [e.timestamp for e in events]
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == 3
    # The digits go as events only: the audio must not carry the tones as well (the far end
    # would see each key twice).
    heard_in_band = dtmf_keys(ulaw_to_linear(b"".join(p.payload for p in audio)))
    assert heard_in_band == [], f"in-band DTMF in the audio as well: {heard_in_band}"
    assert catcher.garbage == 0
    record = await pbx.last_record()
    assert (record.direction, record.disposition, record.line) == (
        Direction.OUTGOING,
        Disposition.ANSWERED,
        "provider",
    )
    assert pbx.app.sip.legs == {}
    assert pbx.app.mixer.slots_in_use == 0
