"""The RTP endpoint's fast lane (firmware/media/rtp_fast.py) against the ordinary path.

Two legs get the very same packets, tick by tick: one is pushed into the fast lane whenever
it can enter (every tick, more often than the endpoint does), the other never. Loss,
reordering, duplicates, telephone-events, a new SSRC, silence and a talkspurt marker, a
sequence wrap and a queue that grows too long are all in the stream. What both legs play
out must be identical every tick, and so must their counters in the end.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import numpy as np
import pytest

from firmware.media.codecs import PCMA, PCMU
from firmware.media.mixer import FRAME_SAMPLES, Mixer
from firmware.media.rtp import pack_telephone_event
from firmware.media.rtp_endpoint import RtpEndpoint, RtpPortRange

HOST = "127.0.0.1"
EVENT_PT = 101
_HEADER = struct.Struct("!BBHII")


def frame(index: int, codec) -> bytes:
    t = (np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES) / 8000.0
    samples = np.rint(6000 * np.sin(2 * np.pi * (700 + 5 * (index % 40)) * t)).astype(np.int16)
    return codec.encode(samples).tobytes()


def script(codec, payload_type: int) -> list[list[bytes]]:
    """The datagrams to send before each tick."""
    ticks: list[list[bytes]] = [[] for _ in range(400)]
    ssrc = 0x11112222
    sequence = 65500  # wraps past 65535 on the way
    timestamp = 4_294_960_000  # and so does the timestamp
    marker = True

    def audio(tick: int, index: int) -> None:
        nonlocal sequence, marker
        second = payload_type | (0x80 if marker else 0)
        marker = False
        ts = (timestamp + index * FRAME_SAMPLES) & 0xFFFFFFFF
        ticks[tick].append(_HEADER.pack(0x80, second, sequence & 0xFFFF, ts, ssrc) + frame(index, codec))
        sequence += 1

    index = 0
    for tick in range(400):
        if tick == 31:  # lost
            sequence += 1
        elif tick == 45:  # reordered: 46 comes before 45
            index += 1
            audio(tick, index)
            sequence -= 2
            audio(tick, index - 1)
            sequence += 1
        elif tick == 46:
            pass  # already sent
        elif tick == 60:  # a duplicate
            audio(tick, index)
            sequence -= 1
            audio(tick, index)
        elif 80 <= tick < 84:  # a digit instead of audio (RFC 4733), then audio again
            event_ts = (timestamp + 80 * FRAME_SAMPLES) & 0xFFFFFFFF
            end = tick == 83
            payload = pack_telephone_event(5, end=end, duration=(tick - 79) * FRAME_SAMPLES)
            second = EVENT_PT | (0x80 if tick == 80 else 0)
            ticks[tick].append(_HEADER.pack(0x80, second, sequence & 0xFFFF, event_ts, ssrc) + payload)
            sequence += 1
        elif tick == 120:  # a new source
            ssrc = 0x33334444
            sequence = 1000
            audio(tick, index)
        elif 150 <= tick < 170:  # silence, then a new talkspurt with the marker
            if tick == 169:
                marker = True
        elif tick == 200:  # three frames at once: the queue grows, later a frame is dropped
            audio(tick, index)
            audio(tick, index + 1)
            audio(tick, index + 2)
            index += 2
        else:
            audio(tick, index)
        index += 1
    return ticks


@pytest.mark.parametrize(("codec_name", "codec", "payload_type"), [("PCMU", PCMU, 0), ("PCMA", PCMA, 8)])
async def test_the_fast_lane_plays_and_counts_what_the_ordinary_path_does(
    codec_name, codec, payload_type
) -> None:
    mixer = Mixer()
    endpoint = RtpEndpoint(RtpPortRange(30000, 40000), drain_interval=3600.0, timers_every_ticks=1)
    mixer.add_endpoint(endpoint)
    phones = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        phones.append(sock)
    try:
        legs = [
            await endpoint.open_leg(
                mixer.allocate(f"leg{i}"), HOST, codec_name, payload_type, EVENT_PT, phone.getsockname()
            )
            for i, phone in enumerate(phones)
        ]
        fast, ordinary = legs
        endpoint._unwatch()  # the ticks below read the sockets, nobody else
        digits: list[tuple[int, str]] = []
        for index, leg in enumerate(legs):
            leg.on_digit = lambda _leg, digit, index=index: digits.append((index, digit))
        ticks_fast = 0
        for tick, datagrams in enumerate(script(codec, payload_type)):
            for datagram in datagrams:
                for phone, leg in zip(phones, legs, strict=True):
                    phone.sendto(datagram, (HOST, leg.local_port))
            time.sleep(0.001)  # both sockets hold the datagrams before the tick reads them
            mixer.tick()
            assert np.array_equal(mixer.inputs[fast.slot], mixer.inputs[ordinary.slot]), tick
            assert not ordinary.fast
            ticks_fast += fast.fast
            endpoint.lane.enter(fast)  # as often as it can
        await asyncio.sleep(0)  # the digit reports
        assert ticks_fast > 300  # the lane carried most of the call
        assert endpoint.lane.entered >= 5 and endpoint.lane.left >= 4  # and was left and re-entered
        a, b = fast.counters, ordinary.counters
        assert a.packets_in == b.packets_in > 380
        for name in ("packets_expected", "packets_lost", "late", "duplicates", "concealed", "underruns", "jitter_ms", "ssrc_changes"):
            assert getattr(a, name) == getattr(b, name), name
        endpoint.lane.leave(fast)
        for name in ("dropped", "resyncs", "_pops", "_target", "_playout"):
            assert getattr(fast.session.jitter_buffer, name) == getattr(ordinary.session.jitter_buffer, name), name
        assert ordinary.session.jitter_buffer.dropped >= 1  # the long queue was cut
        assert fast.session.jitter_buffer._frames == ordinary.session.jitter_buffer._frames
        assert sorted(digits) == [(0, "5"), (1, "5")]
    finally:
        for phone in phones:
            phone.close()
        await endpoint.close()


async def test_the_running_clock_takes_steady_legs_into_the_lane_and_they_carry_speech() -> None:
    mixer = Mixer()
    endpoint = RtpEndpoint(RtpPortRange(30000, 40000))
    mixer.add_endpoint(endpoint)
    phones = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        phones.append(sock)
    try:
        slots = [mixer.allocate("a"), mixer.allocate("b")]
        legs = [
            await endpoint.open_leg(slot, HOST, "PCMU", 0, EVENT_PT, phone.getsockname())
            for slot, phone in zip(slots, phones, strict=True)
        ]
        mixer.connect(*slots)
        mixer.start()
        heard: list[bytes] = []
        started = time.monotonic()
        for index in range(100):  # 2 s at a phone's pace, from phone A only
            packet = _HEADER.pack(0x80, 0, index, index * 160, 0xABCD) + frame(index, PCMU)
            phones[0].sendto(packet, (HOST, legs[0].local_port))
            while True:
                try:
                    heard.append(phones[1].recv(2048)[12:])
                except BlockingIOError:
                    break
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - time.monotonic()))
        await mixer.stop()
        assert legs[0].counters.packets_in == 100
        assert endpoint.lane.entered >= 1
        assert endpoint.drains >= 90  # the tick reads; the loop does not wake per packet
        decoded = PCMU.decode(np.frombuffer(b"".join(heard[-40:]), dtype=np.uint8))
        assert np.abs(decoded.astype(np.int32)).max() > 3000  # B hears A's tone
    finally:
        for phone in phones:
            phone.close()
        await endpoint.close()


async def test_headers_written_in_numpy_are_those_the_session_would_write() -> None:
    mixer = Mixer()
    endpoint = RtpEndpoint(RtpPortRange(30000, 40000), drain_interval=3600.0)
    mixer.add_endpoint(endpoint)
    t = np.arange(FRAME_SAMPLES * 10) / 8000.0
    mixer.sounds.add("tone", np.rint(5000 * np.sin(2 * np.pi * 800 * t)).astype(np.int16), loop=True)
    phones = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        phones.append(sock)
    try:
        legs = []
        for phone in phones:
            slot = mixer.allocate("leg")
            mixer.play(slot, "tone")
            legs.append(await endpoint.open_leg(slot, HOST, "PCMU", 0, EVENT_PT, phone.getsockname()))
        for leg in legs:  # the same numbering, so both streams must match byte for byte
            leg.session.ssrc, leg.session._sequence, leg.session._timestamp = 0x1234, 65530, 4294967000
        fast, ordinary = legs
        ticks_fast = 0
        for tick in range(150):
            if tick == 30:
                for leg in legs:
                    leg.send_digits("1#")
            if tick == 60:
                for leg in legs:
                    leg.hold(True)
            if tick == 70:
                for leg in legs:
                    leg.hold(False)
            if tick == 100:
                for leg in legs:
                    leg.set_codec("PCMA", 8, EVENT_PT)
            if tick == 120:
                assert fast.counters.packets_out == ordinary.counters.packets_out
            mixer.tick()
            ticks_fast += fast.send_fast
            endpoint.lane.enter_sending(fast)  # whenever it can
        await asyncio.sleep(0.05)
        streams = []
        for phone in phones:
            got = []
            while True:
                try:
                    got.append(phone.recv(2048))
                except BlockingIOError:
                    break
            streams.append(got)
        assert ticks_fast > 90
        assert len(streams[0]) > 130 and streams[0] == streams[1]
        a, b = fast.counters, ordinary.counters
        assert (a.packets_out, a.bytes_out) == (b.packets_out, b.bytes_out)
        endpoint.lane.leave_sending(fast)
        assert fast.session._sequence == ordinary.session._sequence
        assert fast.session._timestamp == ordinary.session._timestamp
    finally:
        for phone in phones:
            phone.close()
        await endpoint.close()
