"""The RTP endpoint's batched receive and per-tick send (firmware/media/rtp_endpoint.py).

The legs' sockets are drained through one epoll set: by the tick just before play-out, and
by the loop when some socket is readable (then resting `drain_interval`). Packets for all
legs are built in one buffer per tick, payloads encoded per codec group. Real loopback
sockets; the mixer is ticked by hand.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from firmware.media.codecs import PCMA, PCMU, g722_available
from firmware.media.mixer import FRAME_SAMPLES, Mixer
from firmware.media.rtp import (
    PACKET_SIZE,
    RtpSession,
    codec_groups,
    encode_tick,
    encode_tick_into,
    parse_rtp,
)
from firmware.media.rtp_endpoint import RtpEndpoint, RtpPortRange

HOST = "127.0.0.1"
_HEADER = struct.Struct("!BBHII")


def tone(frequency: float) -> np.ndarray:
    t = np.arange(FRAME_SAMPLES) / 8000.0
    return np.rint(8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def packet(sequence: int, payload: bytes, payload_type: int = 0, ssrc: int = 0x1234) -> bytes:
    return _HEADER.pack(0x80, payload_type, sequence, sequence * FRAME_SAMPLES, ssrc) + payload


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Mixer, RtpEndpoint]]:
    mixer = Mixer()
    rtp = RtpEndpoint(RtpPortRange(30000, 40000), drain_interval=3600.0)
    mixer.add_endpoint(rtp)
    try:
        yield mixer, rtp
    finally:
        await mixer.stop()
        await rtp.close()


def phone_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


async def test_the_tick_reads_what_arrived_before_playing_out(endpoint) -> None:
    mixer, rtp = endpoint
    phone = phone_socket()
    try:
        leg = await rtp.open_leg(mixer.allocate("a"), HOST, "PCMU", 0, 101, phone.getsockname())
        # The loop has its one chance to read now; with a drain interval of an hour, what
        # comes after that waits in the kernel until a tick drains it.
        phone.sendto(packet(1, PCMU.encode(tone(1000)).tobytes()), (HOST, leg.local_port))
        await asyncio.sleep(0.05)
        assert leg.session.packets_received == 1
        for sequence in range(2, 6):
            phone.sendto(packet(sequence, PCMU.encode(tone(1000)).tobytes()), (HOST, leg.local_port))
        time.sleep(0.01)  # blocking on purpose: the loop must not get to read them
        assert leg.session.packets_received == 1
        mixer.tick()
        assert leg.session.packets_received == 5  # one drain, several rounds for one socket
        assert leg.counters.packets_lost == 0
    finally:
        phone.close()


async def test_a_drain_is_bounded_in_rounds_and_the_rest_waits(endpoint) -> None:
    mixer, rtp = endpoint
    phone = phone_socket()
    try:
        leg = await rtp.open_leg(mixer.allocate("a"), HOST, "PCMU", 0, 101, phone.getsockname())
        await asyncio.sleep(0.01)
        for sequence in range(1, 11):
            phone.sendto(packet(sequence, bytes(160)), (HOST, leg.local_port))
        time.sleep(0.01)
        assert rtp.drain(rounds=3) == 3
        assert rtp.drain() == 7
        assert rtp.drain() == 0
        assert leg.session.packets_received == 10
    finally:
        phone.close()


async def test_the_loop_reads_on_its_own_when_no_tick_comes() -> None:
    rtp = RtpEndpoint(RtpPortRange(30000, 40000), drain_interval=0.005)
    phone = phone_socket()
    try:
        leg = await rtp.open_leg(0, HOST, "PCMU", 0, 101, phone.getsockname())
        for sequence in range(1, 21):  # a phone's pace, no mixer at all
            phone.sendto(packet(sequence, bytes(160)), (HOST, leg.local_port))
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 2.0
        while leg.session.packets_received < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert leg.session.packets_received == 20
        assert rtp.drains < 20  # several packets per wake-up of the loop, not one each
    finally:
        phone.close()
        await rtp.close()


async def test_legs_of_three_codecs_each_send_their_own(endpoint) -> None:
    mixer, rtp = endpoint
    codecs = [("PCMU", 0, PCMU), ("PCMA", 8, PCMA), ("PCMU", 0, PCMU)]
    if g722_available():
        codecs.append(("G722", 9, None))
    phones = [phone_socket() for _ in codecs]
    mixer.sounds.add("tone", np.tile(tone(1000), 10), loop=True)
    try:
        legs = []
        for (name, payload_type, _codec), phone in zip(codecs, phones, strict=True):
            slot = mixer.allocate(name)
            legs.append(await rtp.open_leg(slot, HOST, name, payload_type, 101, phone.getsockname()))
            mixer.play(slot, "tone")  # every leg hears a tone from the mixer
        legs[2].hold(True)  # held: nothing goes out
        for _ in range(3):
            mixer.tick()
        await asyncio.sleep(0.02)
        for index, ((_name, payload_type, codec), phone) in enumerate(zip(codecs, phones, strict=True)):
            got = []
            while True:
                try:
                    got.append(parse_rtp(phone.recv(2048)))
                except BlockingIOError:
                    break
            if index == 2:
                assert got == []
                continue
            assert [p.payload_type for p in got] == [payload_type] * 3
            assert all(len(p.payload) == 160 for p in got)
            if codec is not None:
                heard = codec.decode(np.frombuffer(got[-1].payload, dtype=np.uint8))
                assert np.abs(heard.astype(np.int32)).max() > 500  # the tone, not silence
    finally:
        for phone in phones:
            phone.close()


def test_encode_tick_into_builds_what_next_packet_would() -> None:
    import random

    def sessions() -> list[RtpSession]:
        rng = random.Random(7)
        made = [
            RtpSession(codec=PCMU, payload_type=0, telephone_event_pt=101, rng=rng),
            RtpSession(codec=PCMA, payload_type=8, telephone_event_pt=101, rng=rng),
            RtpSession(codec=PCMU, payload_type=0, telephone_event_pt=101, rng=rng),
        ]
        made[1].send_digits("5")
        made[2].sending = False
        return made

    frames = np.stack([tone(700), tone(900), tone(1100)])
    expected_sessions = sessions()
    expected = [
        session.next_packet(session.codec.encode(frames[index]).tobytes())
        for index, session in enumerate(expected_sessions)
    ]
    built = sessions()
    packets = np.zeros((3, PACKET_SIZE), dtype=np.uint8)
    groups = codec_groups(built, [0, 1, 2])
    lengths = encode_tick_into(built, [0, 1, 2], frames, packets, groups)
    assert [packets[i, :n].tobytes() if n else None for i, n in enumerate(lengths)] == expected
    assert expected[2] is None and len(expected[1] or b"") == 16  # held; a digit event
    again = sessions()
    assert encode_tick(again, [0, 1, 2], frames) == expected


def test_codec_groups_one_shared_codec_is_one_slice_and_mixed_codecs_are_grouped() -> None:
    def made(*codecs):
        return [RtpSession(codec=codec, payload_type=0, telephone_event_pt=101) for codec in codecs]

    (group,), stateful = (groups := codec_groups(made(PCMU, PCMU, PCMU), [7, 3, 5])).stateless, groups.stateful
    assert group[0] is PCMU and group[1] == slice(0, 3) and group[2].tolist() == [7, 3, 5]
    assert stateful == ()
    mixed = codec_groups(made(PCMU, PCMA, PCMU), [7, 3, 5])
    by_codec = {codec: (positions.tolist(), rows.tolist()) for codec, positions, rows in mixed.stateless}
    assert by_codec == {PCMU: ([0, 2], [7, 5]), PCMA: ([1], [3])}
    assert codec_groups([], []).stateless == ()
