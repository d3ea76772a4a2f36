"""Ticks dropped by a late mixer clock: RTP legs play those frames out unheard
(`Mixer.skip` -> `RtpEndpoint.skip_ticks`), the fast lane and the ordinary path alike, so
their buffers stay aligned with real time and a stall does not push legs out of the lane."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import numpy as np

from firmware.media.codecs import PCMU
from firmware.media.mixer import FRAME_SAMPLES, Mixer
from firmware.media.rtp_endpoint import SKIP_PLAY_OUT_MAX, RtpEndpoint, RtpPortRange

HOST = "127.0.0.1"
EVENT_PT = 101
_HEADER = struct.Struct("!BBHII")
SSRC = 0x5151A0A0


def packet(index: int) -> bytes:
    t = (np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES) / 8000.0
    samples = np.rint(6000 * np.sin(2 * np.pi * (500 + 7 * (index % 30)) * t)).astype(np.int16)
    marker = 0x80 if index == 0 else 0
    header = _HEADER.pack(0x80, marker, index & 0xFFFF, (index * FRAME_SAMPLES) & 0xFFFFFFFF, SSRC)
    return header + PCMU.encode(samples).tobytes()


def phones(count: int) -> list[socket.socket]:
    made = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        made.append(sock)
    return made


async def test_skipped_ticks_play_out_the_same_on_the_fast_lane_and_the_ordinary_path() -> None:
    # Before tick t, `stalls[t]` ticks were dropped: their frames arrive together with t's.
    stalls = {60: 3, 120: 1, 180: 12, 240: SKIP_PLAY_OUT_MAX + 6}
    mixer = Mixer()
    endpoint = RtpEndpoint(RtpPortRange(30000, 40000), drain_interval=3600.0, timers_every_ticks=1)
    mixer.add_endpoint(endpoint)
    socks = phones(2)
    try:
        legs = [
            await endpoint.open_leg(mixer.allocate(f"leg{i}"), HOST, "PCMU", 0, EVENT_PT, sock.getsockname())
            for i, sock in enumerate(socks)
        ]
        fast, ordinary = legs
        endpoint._unwatch()  # the ticks below read the sockets, nobody else
        index = 0
        in_lane_after_small_stall = None
        for tick in range(300):
            skipped = stalls.get(tick, 0)
            for _ in range(skipped + 1):
                for sock, leg in zip(socks, legs, strict=True):
                    sock.sendto(packet(index), (HOST, leg.local_port))
                index += 1
            time.sleep(0.002)  # both sockets hold the datagrams before they are read
            if skipped:
                endpoint.skip_ticks(skipped)
            mixer.tick()
            assert np.array_equal(mixer.inputs[fast.slot], mixer.inputs[ordinary.slot]), tick
            assert not ordinary.fast
            if tick == 61:
                in_lane_after_small_stall = fast.fast
            endpoint.lane.enter(fast)
        assert in_lane_after_small_stall is True  # three dropped ticks: still in the lane
        a, b = fast.counters, ordinary.counters
        assert a.packets_in == b.packets_in == index
        for name in ("packets_expected", "packets_lost", "late", "duplicates", "concealed", "underruns"):
            assert getattr(a, name) == getattr(b, name), name
        endpoint.lane.leave(fast)
        for name in ("dropped", "resyncs", "_pops", "_target", "_playout"):
            assert getattr(fast.session.jitter_buffer, name) == getattr(ordinary.session.jitter_buffer, name), name
        # Each leg played out one frame per tick and one per skipped tick (up to the cap).
        played = 300 + sum(min(count, SKIP_PLAY_OUT_MAX) for count in stalls.values())
        assert fast.session.jitter_buffer._pops == played
    finally:
        for sock in socks:
            sock.close()
        await endpoint.close()


async def test_a_stalled_loop_leaves_steady_legs_in_the_fast_lane() -> None:
    mixer = Mixer()
    endpoint = RtpEndpoint(RtpPortRange(30000, 40000))
    mixer.add_endpoint(endpoint)
    socks = phones(2)
    try:
        slots = [mixer.allocate("a"), mixer.allocate("b")]
        legs = [
            await endpoint.open_leg(slot, HOST, "PCMU", 0, EVENT_PT, sock.getsockname())
            for slot, sock in zip(slots, socks, strict=True)
        ]
        mixer.connect(*slots)
        mixer.start()
        stop = threading.Event()

        def talk() -> None:  # phone A at its own pace, whatever the loop is doing
            started = time.monotonic()
            for index in range(150):
                socks[0].sendto(packet(index), (HOST, legs[0].local_port))
                if stop.wait(max(0.0, started + (index + 1) * 0.02 - time.monotonic())):
                    return

        talker = threading.Thread(target=talk)
        talker.start()
        try:
            await asyncio.sleep(0.6)
            assert legs[0].fast  # steady: in the lane
            for _ in range(3):
                time.sleep(0.25)  # the loop stalls: the clock drops ~12 ticks each time
                await asyncio.sleep(0.4)
        finally:
            stop.set()
            talker.join()
        await mixer.stop()
        assert mixer.frames_dropped >= 30
        # Without the skipped play-out the far end would be ~36 frames ahead by now, far
        # beyond the lane's ring, and the leg would have left it.
        assert legs[0].fast
        assert endpoint.lane.left == 0
        assert legs[0].counters.packets_in >= 100
    finally:
        for sock in socks:
            sock.close()
        await endpoint.close()
