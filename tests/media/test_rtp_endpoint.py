"""The RTP media endpoint (firmware/media/rtp_endpoint.py) over real loopback sockets.

The "phones" are plain UDP sockets of the test that build and read RTP with
`firmware.media.rtp` and code audio with `firmware.media.codecs`; the appliance side is the
real mixer, ticked by hand (deterministic) or on its own 20 ms clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np
import pytest

from firmware.media.codecs import PCMA, PCMU, Codec
from firmware.media.detect import tone_present
from firmware.media.mixer import FRAME_SAMPLES, Mixer
from firmware.media.rtp import (
    RtpPacket,
    TelephoneEventReceiver,
    digit_event,
    pack_rtp,
    pack_telephone_event,
    parse_rtp,
)
from firmware.media.rtp_endpoint import (
    SIPP_BENCH_PORTS,
    RtpEndpoint,
    RtpLeg,
    RtpPortRange,
    RtpPortsExhaustedError,
)

HOST = "127.0.0.1"
EVENT_PT = 101


# ----- the test's phones -----------------------------------------------------------------


def sine(frequency: float, frames: int, amplitude: float = 8000.0) -> np.ndarray:
    """A continuous tone cut into (frames x 160) samples."""
    t = np.arange(frames * FRAME_SAMPLES) / 8000.0
    samples = np.rint(amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    return samples.reshape(frames, FRAME_SAMPLES)


class Phone:
    """A bare RTP phone: one UDP socket, numbering of its own, everything it got kept."""

    def __init__(self, codec: Codec, payload_type: int) -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.received: list[RtpPacket] = []
        self.sent = 0

    def send_packet(
        self,
        to: tuple[str, int],
        payload_type: int,
        timestamp: int,
        payload: bytes,
        marker: bool = False,
    ) -> None:
        packet = RtpPacket(payload_type, self.sequence, timestamp, self.ssrc, payload, marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.sock.sendto(pack_rtp(packet), to)
        self.sent += 1

    def send_frame(self, to: tuple[str, int], frame: np.ndarray) -> None:
        payload = self.codec.encode(frame).tobytes()
        self.send_packet(to, self.payload_type, self.timestamp, payload, marker=self.sent == 0)
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF

    def send_digit(self, to: tuple[str, int], digit: str, *, with_end: bool = True) -> None:
        """RFC 4733: updates every 20 ms (the first with the marker), the end sent 3 times."""
        code = digit_event(digit)
        timestamp = self.timestamp
        for tick in range(1, 5):
            payload = pack_telephone_event(code, end=False, duration=tick * FRAME_SAMPLES)
            self.send_packet(to, EVENT_PT, timestamp, payload, marker=tick == 1)
        if with_end:
            for _ in range(3):
                payload = pack_telephone_event(code, end=True, duration=5 * FRAME_SAMPLES)
                self.send_packet(to, EVENT_PT, timestamp, payload)
        self.timestamp = (self.timestamp + 8 * FRAME_SAMPLES) & 0xFFFFFFFF

    def drain(self) -> list[RtpPacket]:
        """Everything that arrived since the last drain (also kept in `received`)."""
        fresh: list[RtpPacket] = []
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                break
            fresh.append(parse_rtp(data))
        self.received.extend(fresh)
        return fresh

    def heard_audio(self, payload_type: int, codec: Codec) -> np.ndarray:
        payloads = [p.payload for p in self.received if p.payload_type == payload_type]
        if not payloads:
            return np.zeros(0, dtype=np.int16)
        return codec.decode(np.frombuffer(b"".join(payloads), dtype=np.uint8))

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def phones(*specs: tuple[Codec, int]) -> Iterator[list[Phone]]:
    made = [Phone(codec, payload_type) for codec, payload_type in specs]
    try:
        yield made
    finally:
        for phone in made:
            phone.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def free_even_range(count: int) -> int:
    """A base port with `count` even ports (and their odd neighbours) free right now."""
    for _attempt in range(50):
        base = random.randrange(30000, 60000, 2)
        held: list[socket.socket] = []
        try:
            for port in range(base, base + 2 * count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((HOST, port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError("no free port range found")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
async def media() -> AsyncIterator[tuple[Mixer, RtpEndpoint]]:
    mixer = Mixer()
    endpoint = RtpEndpoint(RtpPortRange(20000, 30000))
    mixer.add_endpoint(endpoint)
    try:
        yield mixer, endpoint
    finally:
        await mixer.stop()
        await endpoint.close()


async def bridged_legs(
    mixer: Mixer,
    endpoint: RtpEndpoint,
    phone_a: Phone,
    phone_b: Phone,
    codec_a: str = "PCMU",
    codec_b: str = "PCMA",
) -> tuple[RtpLeg, RtpLeg]:
    slot_a, slot_b = mixer.allocate("sip-a"), mixer.allocate("sip-b")
    leg_a = await endpoint.open_leg(
        slot_a, HOST, codec_a, phone_a.payload_type, EVENT_PT, phone_a.address
    )
    leg_b = await endpoint.open_leg(
        slot_b, HOST, codec_b, phone_b.payload_type, EVENT_PT, phone_b.address
    )
    mixer.connect(slot_a, slot_b)
    return leg_a, leg_b


def to_leg(leg: RtpLeg) -> tuple[str, int]:
    return (HOST, leg.local_port)


async def talk(mixer: Mixer, pairs: list[tuple[Phone, RtpLeg, np.ndarray]]) -> None:
    """Each phone sends its frames one per tick; the mixer is ticked by hand in step."""
    frames = len(pairs[0][2])
    for index in range(frames):
        targets = []
        for phone, leg, audio in pairs:
            phone.send_frame(to_leg(leg), audio[index])
            targets.append((leg, leg.session.packets_received + 1))
        await wait_for(
            lambda targets=targets: all(leg.session.packets_received >= n for leg, n in targets)
        )
        mixer.tick()
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    for phone, _leg, _audio in pairs:
        phone.drain()


# ----- speech paths ------------------------------------------------------------------------


async def test_tones_cross_a_pcmu_leg_and_a_pcma_leg_bridged_in_the_mixer(media) -> None:
    mixer, endpoint = media
    with phones((PCMU, 0), (PCMA, 8)) as (phone_a, phone_b):
        leg_a, leg_b = await bridged_legs(mixer, endpoint, phone_a, phone_b)
        await talk(mixer, [(phone_a, leg_a, sine(1004, 50)), (phone_b, leg_b, sine(1400, 50))])

        heard_by_b = phone_b.heard_audio(8, PCMA)
        heard_by_a = phone_a.heard_audio(0, PCMU)
        assert len(heard_by_b) >= 45 * FRAME_SAMPLES and len(heard_by_a) >= 45 * FRAME_SAMPLES
        # The first frames are the jitter buffer's lead-in; after that the tone is steady.
        assert tone_present(heard_by_b[5 * FRAME_SAMPLES :], (1004,), 0.95)
        assert tone_present(heard_by_a[5 * FRAME_SAMPLES :], (1400,), 0.95)
        assert not tone_present(heard_by_b, (1400,), 0.1)  # nobody hears themselves
        assert not tone_present(heard_by_a, (1004,), 0.1)
        assert {p.payload_type for p in phone_b.received} == {8}
        assert {p.payload_type for p in phone_a.received} == {0}
        for phone in (phone_a, phone_b):  # one stream: one SSRC, consecutive numbers
            assert len({p.ssrc for p in phone.received}) == 1
            sequences = [p.sequence for p in phone.received]
            assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))
        counters = leg_a.counters
        assert counters.packets_in == 50 and counters.packets_lost == 0
        assert counters.packets_out == len(phone_a.received)


async def test_a_renegotiated_codec_keeps_the_speech_path(media) -> None:
    mixer, endpoint = media
    with phones((PCMU, 0), (PCMA, 8)) as (phone_a, phone_b):
        leg_a, leg_b = await bridged_legs(mixer, endpoint, phone_a, phone_b)
        await talk(mixer, [(phone_a, leg_a, sine(1004, 10)), (phone_b, leg_b, sine(1400, 10))])
        leg_b.set_codec("PCMU", 0, EVENT_PT)  # re-INVITE: phone B now speaks µ-law
        phone_b.codec, phone_b.payload_type = PCMU, 0
        phone_b.received.clear()
        await talk(mixer, [(phone_a, leg_a, sine(1004, 40)), (phone_b, leg_b, sine(1400, 40))])
        assert {p.payload_type for p in phone_b.received} == {0}
        assert tone_present(phone_b.heard_audio(0, PCMU)[5 * FRAME_SAMPLES :], (1004,), 0.95)
        phone_a.received.clear()
        await talk(mixer, [(phone_a, leg_a, sine(1004, 20)), (phone_b, leg_b, sine(1400, 20))])
        assert tone_present(phone_a.heard_audio(0, PCMU)[5 * FRAME_SAMPLES :], (1400,), 0.95)


async def test_a_leg_moved_to_another_slot_carries_its_audio_there(media) -> None:
    mixer, endpoint = media
    with phones((PCMU, 0), (PCMU, 0)) as (phone_a, phone_b):
        leg_a, leg_b = await bridged_legs(mixer, endpoint, phone_a, phone_b, "PCMU", "PCMU")
        old_slot = leg_a.slot
        new_slot = mixer.allocate("sip-a again")
        leg_a.slot = new_slot  # call control re-attaches the leg (a transfer, say)
        mixer.release(old_slot)
        mixer.connect(new_slot, leg_b.slot)
        await talk(mixer, [(phone_a, leg_a, sine(1004, 30)), (phone_b, leg_b, sine(1400, 30))])
        assert tone_present(phone_b.heard_audio(0, PCMU)[5 * FRAME_SAMPLES :], (1004,), 0.95)
        assert tone_present(phone_a.heard_audio(0, PCMU)[5 * FRAME_SAMPLES :], (1400,), 0.95)


async def test_a_held_leg_sends_nothing_until_resumed(media) -> None:
    mixer, endpoint = media
    with phones((PCMU, 0), (PCMU, 0)) as (phone_a, phone_b):
        leg_a, leg_b = await bridged_legs(mixer, endpoint, phone_a, phone_b, "PCMU", "PCMU")
        await talk(mixer, [(phone_a, leg_a, sine(1004, 5)), (phone_b, leg_b, sine(1400, 5))])
        assert len(phone_b.received) == 5
        leg_b.hold(True)
        await talk(mixer, [(phone_a, leg_a, sine(1004, 10)), (phone_b, leg_b, sine(1400, 10))])
        assert len(phone_b.received) == 5 and len(phone_a.received) == 15
        leg_b.hold(False)
        await talk(mixer, [(phone_a, leg_a, sine(1004, 5)), (phone_b, leg_b, sine(1400, 5))])
        resumed = phone_b.received[5:]
        assert len(resumed) == 5
        assert resumed[0].marker  # a new talkspurt after the pause
        assert (resumed[0].timestamp - phone_b.received[4].timestamp) & 0xFFFFFFFF == 11 * 160


async def test_the_mixer_clock_carries_a_call_on_its_own(media) -> None:
    mixer, endpoint = media
    with phones((PCMA, 8), (PCMU, 0)) as (phone_a, phone_b):
        leg_a, leg_b = await bridged_legs(mixer, endpoint, phone_a, phone_b, "PCMA", "PCMU")
        mixer.start()
        audio_a, audio_b = sine(1004, 50), sine(1400, 50)
        started = time.monotonic()
        for index in range(50):  # the phones keep their own 20 ms pace
            phone_a.send_frame(to_leg(leg_a), audio_a[index])
            phone_b.send_frame(to_leg(leg_b), audio_b[index])
            phone_a.drain()
            phone_b.drain()
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - time.monotonic()))
        await asyncio.sleep(0.1)
        phone_a.drain()
        phone_b.drain()
        await mixer.stop()
        assert tone_present(phone_b.heard_audio(0, PCMU), (1004,), 0.7)
        assert tone_present(phone_a.heard_audio(8, PCMA), (1400,), 0.7)
        assert leg_a.counters.packets_in == 50 and leg_b.counters.packets_in == 50


def test_the_same_call_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def call() -> None:
        mixer = Mixer()
        endpoint = RtpEndpoint(RtpPortRange(20000, 30000))
        mixer.add_endpoint(endpoint)
        try:
            with phones((PCMU, 0), (PCMA, 8)) as (phone_a, phone_b):
                leg_a, leg_b = await bridged_legs(mixer, endpoint, phone_a, phone_b)
                await talk(
                    mixer, [(phone_a, leg_a, sine(1004, 30)), (phone_b, leg_b, sine(1400, 30))]
                )
                assert tone_present(phone_b.heard_audio(8, PCMA)[5 * 160 :], (1004,), 0.95)
                assert tone_present(phone_a.heard_audio(0, PCMU)[5 * 160 :], (1400,), 0.95)
        finally:
            await endpoint.close()

    uvloop.run(call())


# ----- RFC 4733 ------------------------------------------------------------------------------


async def test_digits_from_the_far_end_are_reported_once_each(media) -> None:
    mixer, _ = media
    digits: list[tuple[RtpLeg, str]] = []
    endpoint = RtpEndpoint(
        RtpPortRange(20000, 30000),
        on_digit=lambda leg, d: digits.append((leg, d)),
        timers_every_ticks=1,
    )
    mixer.add_endpoint(endpoint)
    try:
        with phones((PCMU, 0), (PCMU, 0)) as (phone_a, phone_b):
            leg_a, _leg_b = await bridged_legs(mixer, endpoint, phone_a, phone_b, "PCMU", "PCMU")
            phone_a.send_digit(to_leg(leg_a), "5")
            phone_a.send_digit(to_leg(leg_a), "#")
            await wait_for(lambda: len(digits) == 2)
            assert digits == [(leg_a, "5"), (leg_a, "#")]
            # A digit whose end packets were all lost is reported by the timers.
            phone_a.send_digit(to_leg(leg_a), "7", with_end=False)
            mixer.start()
            await wait_for(lambda: len(digits) == 3)
            assert digits[2] == (leg_a, "7")
            await asyncio.sleep(0.4)
            assert len(digits) == 3
    finally:
        await endpoint.close()


async def test_digits_sent_go_out_as_telephone_events(media) -> None:
    mixer, endpoint = media
    with phones((PCMU, 0), (PCMU, 0)) as (phone_a, phone_b):
        _leg_a, leg_b = await bridged_legs(mixer, endpoint, phone_a, phone_b, "PCMU", "PCMU")
        leg_b.send_digits("19#")
        for _ in range(40):
            mixer.tick()
        await asyncio.sleep(0.05)
        phone_b.drain()
        receiver = TelephoneEventReceiver()
        got = []
        for packet in phone_b.received:
            if packet.payload_type == EVENT_PT:
                got.extend(r.digit for r in receiver.receive(packet.timestamp, packet.payload, 0.0))
        assert "".join(got) == "19#"
        assert phone_b.received[-1].payload_type == 0  # audio again after the digits


async def test_send_digits_without_telephone_event_is_refused(media) -> None:
    mixer, endpoint = media
    leg = await endpoint.open_leg(mixer.allocate("x"), HOST, "PCMU", 0, None, None)
    with pytest.raises(RuntimeError):
        leg.send_digits("1")
    with pytest.raises(ValueError):
        leg.send_digits("X")


# ----- addresses ---------------------------------------------------------------------------


async def test_symmetric_rtp_sends_to_where_the_far_end_speaks_from(media) -> None:
    mixer, endpoint = media
    with phones((PCMU, 0), (PCMU, 0), (PCMU, 0)) as (phone, decoy, stranger):
        leg = await endpoint.open_leg(mixer.allocate("a"), HOST, "PCMU", 0, EVENT_PT, None)
        for _ in range(3):
            mixer.tick()
        counters = leg.counters
        assert counters.unsent == 3 and counters.packets_out == 0 and counters.bytes_out == 0
        with pytest.raises(ValueError):
            leg.set_remote(("phone.example", 4000))  # would be resolved inside the tick
        leg.set_remote(decoy.address)  # what SDP says (a NAT in between, say)
        mixer.tick()
        await asyncio.sleep(0.02)
        assert len(decoy.drain()) == 1
        phone.send_frame(to_leg(leg), sine(1004, 1)[0])
        await wait_for(lambda: leg.session.packets_received == 1)
        assert leg.remote == phone.address
        stranger.send_frame(to_leg(leg), sine(1004, 1)[0])  # someone else: ignored
        await wait_for(lambda: leg.counters.foreign_source == 1)
        assert leg.remote == phone.address
        for _ in range(3):
            mixer.tick()
        await asyncio.sleep(0.02)
        assert len(phone.drain()) == 3 and decoy.drain() == [] and stranger.drain() == []


async def test_without_symmetric_rtp_the_sdp_address_is_kept() -> None:
    mixer = Mixer()
    endpoint = RtpEndpoint(RtpPortRange(20000, 30000), symmetric=False)
    mixer.add_endpoint(endpoint)
    try:
        with phones((PCMU, 0), (PCMU, 0)) as (phone, sdp_phone):
            leg = await endpoint.open_leg(
                mixer.allocate("a"), HOST, "PCMU", 0, None, sdp_phone.address
            )
            phone.send_frame(to_leg(leg), sine(1004, 1)[0])
            await wait_for(lambda: leg.session.packets_received == 1)
            mixer.tick()
            await asyncio.sleep(0.02)
            assert len(sdp_phone.drain()) == 1 and phone.drain() == []
    finally:
        await endpoint.close()


# ----- inactivity --------------------------------------------------------------------------


async def test_inactivity_is_reported_once_for_an_active_leg_that_is_not_held() -> None:
    mixer = Mixer()
    timeouts: list[RtpLeg] = []
    endpoint = RtpEndpoint(
        RtpPortRange(20000, 30000),
        inactivity_timeout=0.3,
        on_timeout=timeouts.append,
        timers_every_ticks=1,
    )
    mixer.add_endpoint(endpoint)
    try:
        with phones((PCMU, 0)) as (phone,):
            silent = await endpoint.open_leg(mixer.allocate("silent"), HOST, "PCMU", 0)
            held = await endpoint.open_leg(mixer.allocate("held"), HOST, "PCMU", 0)
            held.hold(True)
            ringing = await endpoint.open_leg(
                mixer.allocate("ringing"), HOST, "PCMU", 0, active=False
            )
            talking = await endpoint.open_leg(
                mixer.allocate("talking"), HOST, "PCMU", 0, remote=phone.address
            )
            mixer.start()
            started = time.monotonic()
            audio = sine(1004, 60)
            for index in range(60):  # 1.2 s: the talking leg hears its phone all along
                phone.send_frame(to_leg(talking), audio[index])
                await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - time.monotonic()))
            assert timeouts == [silent]
            assert silent.counters.timeouts == 1
            # Resuming and answering start the count again, from now.
            held.hold(False)
            ringing.set_active(True)
            await asyncio.sleep(0.15)
            assert timeouts == [silent]
            # ... as the phone's silence does for the leg it stopped talking to.
            await wait_for(lambda: len(timeouts) == 4, timeout=1.0)
            assert set(timeouts[1:]) == {held, ringing, talking}
            await asyncio.sleep(0.4)
            assert len(timeouts) == 4
    finally:
        await mixer.stop()
        await endpoint.close()


# ----- ports and sockets -------------------------------------------------------------------


def test_the_port_range_is_even_ports_without_the_sipp_bench_ports() -> None:
    ports = RtpPortRange(5990, 6110).ports()
    assert all(port % 2 == 0 for port in ports)
    assert ports[0] == 5990 and ports[-1] == 6108
    for excluded in SIPP_BENCH_PORTS:
        assert excluded not in ports and excluded - 1 not in ports
    assert RtpPortRange(10001, 10006).ports() == [10002, 10004]
    with pytest.raises(ValueError):
        RtpPortRange(20000, 10000)
    with pytest.raises(ValueError):
        RtpPortRange(80, 1000)


async def test_ports_in_use_are_skipped_freed_ports_reused_and_exhaustion_is_an_error() -> None:
    base = free_even_range(4)
    endpoint = RtpEndpoint(RtpPortRange(base, base + 8))
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((HOST, base))  # another program holds the first port
    try:
        legs = [await endpoint.open_leg(slot, HOST, "PCMU", 0) for slot in range(3)]
        assert [leg.local_port for leg in legs] == [base + 2, base + 4, base + 6]
        assert endpoint.ports.skipped_in_use == 1
        with pytest.raises(RtpPortsExhaustedError):
            await endpoint.open_leg(3, HOST, "PCMU", 0)
        await endpoint.close_leg(legs[1])
        assert legs[1].closed
        again = await endpoint.open_leg(4, HOST, "PCMU", 0)
        assert again.local_port == base + 4  # the freed one (the squatter still holds base)
        squatter.close()
        await endpoint.close_leg(again)
        await endpoint.close_leg(again)  # twice is harmless
        # Freed ports queue at the back: the port given up longest ago is taken first.
        reopened = await endpoint.open_leg(5, HOST, "PCMU", 0)
        assert reopened.local_port == base
    finally:
        squatter.close()
        await endpoint.close()
    assert endpoint.ports.taken == frozenset()


async def test_a_closed_leg_sends_nothing_more(media) -> None:
    mixer, endpoint = media
    with phones((PCMU, 0)) as (phone,):
        leg = await endpoint.open_leg(mixer.allocate("a"), HOST, "PCMU", 0, None, phone.address)
        mixer.tick()
        await endpoint.close_leg(leg)
        mixer.tick()
        await asyncio.sleep(0.02)
        assert len(phone.drain()) == 1
        assert endpoint.legs == ()


async def test_a_hundred_legs_opened_and_closed_leave_no_socket_behind(media) -> None:
    mixer, endpoint = media
    before = open_fds()
    slots = [mixer.allocate(f"leg{index}") for index in range(100)]
    legs = [await endpoint.open_leg(slot, HOST, "PCMU", 0, EVENT_PT, (HOST, 9)) for slot in slots]
    assert open_fds() >= before + 100
    assert len({leg.local_port for leg in legs}) == 100
    mixer.tick()
    for leg in legs:
        await endpoint.close_leg(leg)
    assert open_fds() == before
    assert endpoint.ports.taken == frozenset() and endpoint.legs == ()


async def test_a_hostname_is_refused_and_keeps_no_port(media) -> None:
    mixer, endpoint = media
    free = endpoint.ports.free_count
    with pytest.raises(ValueError):
        await endpoint.open_leg(mixer.allocate("a"), "localhost", "PCMU", 0)
    assert endpoint.ports.free_count == free
