"""A leg in the RTP fast lane has its socket connected to the learnt source (rtp_endpoint).

Connecting saves the per-packet address work in both directions, but it also makes the
kernel drop everyone else's datagrams. These tests hold the two promises that come with it:
while connected, another source changes nothing (as the unconnected leg refused it too);
once the source falls silent, the leg leaves the lane, the socket is disconnected on the
same port, and symmetric RTP learns the new source as it always did.
"""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from firmware.media.codecs import PCMU
from firmware.media.mixer import FRAME_SAMPLES, Mixer
from firmware.media.rtp_endpoint import RtpEndpoint, RtpPortRange

HOST = "127.0.0.1"
_HEADER = struct.Struct("!BBHII")


def tone_frame(index: int, frequency: float) -> bytes:
    t = (np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES) / 8000.0
    samples = np.rint(8000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    return PCMU.encode(samples).tobytes()


def packet(sequence: int, ssrc: int, frequency: float) -> bytes:
    return _HEADER.pack(0x80, 0, sequence & 0xFFFF, sequence * FRAME_SAMPLES, ssrc) + tone_frame(
        sequence, frequency
    )


def phone() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * 8000 / samples.size)


def take_all(sock: socket.socket) -> list[bytes]:
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(2048))
        except BlockingIOError:
            return datagrams


@pytest.fixture
async def one_leg():
    mixer = Mixer()
    endpoint = RtpEndpoint(RtpPortRange(30000, 40000), drain_interval=3600.0, timers_every_ticks=1)
    mixer.add_endpoint(endpoint)
    first, second = phone(), phone()
    slot = mixer.allocate("leg")
    leg = await endpoint.open_leg(slot, HOST, "PCMU", 0, None, first.getsockname())
    endpoint._unwatch()  # the ticks below read the socket, nobody else
    t = np.arange(8000) / 8000.0
    mixer.sounds.add("hum", np.rint(3000 * np.sin(2 * np.pi * 425 * t)).astype(np.int16), loop=True)
    mixer.play(slot, "hum")  # something to send back, so sending is exercised too
    try:
        yield mixer, endpoint, leg, first, second
    finally:
        first.close()
        second.close()
        await endpoint.close()


def tick(mixer: Mixer, endpoint: RtpEndpoint, leg) -> np.ndarray:
    time.sleep(0.001)  # the datagrams sent just before are in the socket
    mixer.tick()
    endpoint.lane.enter(leg)  # as the running clock's timers would
    return mixer.inputs[leg.slot].copy()


async def test_a_fast_leg_is_connected_and_another_source_changes_nothing(one_leg) -> None:
    mixer, endpoint, leg, first, second = one_leg
    port = (HOST, leg.local_port)
    for sequence in range(10):
        first.sendto(packet(sequence, 0x1111, 600), port)
        tick(mixer, endpoint, leg)
    assert leg.fast
    assert leg.peer == first.getsockname() == leg.sock.getpeername()
    take_all(first)
    heard = []
    for sequence in range(10, 40):
        first.sendto(packet(sequence, 0x1111, 600), port)
        second.sendto(packet(sequence, 0x2222, 1800), port)  # an intruder on the same port
        heard.append(tick(mixer, endpoint, leg))
    assert leg.fast  # never thrown out of the lane by the intruder
    assert abs(dominant_hz(np.concatenate(heard)) - 600) < 30  # only the learnt source is heard
    assert len(take_all(first)) == 30  # we answer the source, with `send` on the connection
    assert take_all(second) == []
    assert leg.counters.packets_in == 40
    assert leg.counters.send_errors == 0


async def test_when_the_source_falls_silent_the_leg_disconnects_and_learns_a_new_one(
    one_leg,
) -> None:
    mixer, endpoint, leg, first, second = one_leg
    leg.session.relearn_after = 0.1
    port = (HOST, leg.local_port)
    for sequence in range(10):
        first.sendto(packet(sequence, 0x1111, 600), port)
        tick(mixer, endpoint, leg)
    assert leg.peer is not None
    take_all(first)
    # The first source stops (the far end moved, a NAT binding changed); a second one
    # streams from now on. While connected the kernel hides it: the missing frame takes
    # the leg out of the lane, which must disconnect it or it would never be heard.
    heard = []
    for sequence in range(10, 60):
        second.sendto(packet(sequence, 0x2222, 1800), port)
        heard.append(tick(mixer, endpoint, leg))
        time.sleep(0.004)  # the 0.1 s of silence pass within the loop
    assert leg.session.learned_remote == second.getsockname()
    assert abs(dominant_hz(np.concatenate(heard[-20:])) - 1800) < 30  # the new source is heard
    assert leg.sock.getsockname() == (HOST, leg.local_port)  # same port after the disconnect
    assert len(take_all(second)) >= 20  # and the new source gets our audio
    assert endpoint.lane.left >= 1
    if leg.fast:  # back in the lane, connected to the new source
        assert leg.peer == second.getsockname() == leg.sock.getpeername()
    else:
        with pytest.raises(OSError):
            leg.sock.getpeername()


async def test_a_connected_leg_closes_and_its_port_is_free_again(one_leg) -> None:
    mixer, endpoint, leg, first, _second = one_leg
    for sequence in range(10):
        first.sendto(packet(sequence, 0x1111, 600), (HOST, leg.local_port))
        tick(mixer, endpoint, leg)
    assert leg.peer is not None
    await endpoint.close_leg(leg)
    assert leg.sock.fileno() == -1
    reused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        reused.bind((HOST, leg.local_port))  # nothing holds the port
    finally:
        reused.close()
