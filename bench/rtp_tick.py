"""What one mixer tick costs for N SIP legs, part by part, in one process (no clock).

Opens N RTP legs on the real `RtpEndpoint` (N/2 bridged calls, PCMU), with N plain UDP
"phones" in the same process. Each round, every phone sends one 20 ms packet to its leg, then
the tick's parts are run and timed one by one with `time.perf_counter`:

* send: the phones' sendto (the test's cost, shown for scale, not the appliance's);
* drain: `RtpEndpoint.drain()` (epoll + `recv_into` on the fast lane's connected sockets,
  then its numpy filing; or recvfrom and `RtpSession.receive` per packet with --slow);
* decode: the endpoint's play-out (`FastLane.play_out`, or `decode_tick` with --slow);
* mix: the mixer's bridges;
* encode: `RtpEndpoint._encode`: `encode_payloads` (G.711 into the packet buffer) and the
  fast lane's headers (`FastLane.write_headers`, all legs at once);
* sendto: `RtpEndpoint._send`: one `send` per leg on its connected socket (`sendto`, and
  `packet_into` for the header, per leg with --slow): the rest of `write_from`;
then the phones read what came back. Loopback only, bounded (`--rounds`, default 500).

    .venv/bin/python bench/rtp_tick.py [--legs 200] [--rounds 500] [--profile] [--slow]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import run

from firmware.media.codecs import PCMU
from firmware.media.mixer import Mixer
from firmware.media.rtp import HEADER_SIZE, PACKET_SIZE, decode_tick
from firmware.media.rtp_endpoint import RtpEndpoint, RtpPortRange

HOST = "127.0.0.1"
_HEADER = struct.Struct("!BBHII")


async def measure(legs: int, rounds: int, profile: bool, fast: bool) -> dict[str, float]:
    mixer = Mixer(capacity=legs + 8)
    endpoint = RtpEndpoint(RtpPortRange(40000, 50000), drain_interval=3600.0)
    mixer.add_endpoint(endpoint)
    phones = []
    for _ in range(legs):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        phones.append(sock)
    rtp_legs = []
    for index, phone in enumerate(phones):
        slot = mixer.allocate(f"leg{index}")
        rtp_legs.append(await endpoint.open_leg(slot, HOST, "PCMU", 0, 101, phone.getsockname()))
    for a, b in zip(rtp_legs[::2], rtp_legs[1::2], strict=True):
        mixer.connect(a.slot, b.slot)
    endpoint._unwatch()  # this bench drains by hand: the loop must not read for us
    endpoint._rebuild()  # the tick's lists (the mixer's tick would do it)
    targets = [(HOST, leg.local_port) for leg in rtp_legs]
    t = np.arange(160 * 50) / 8000.0
    payloads = [
        row.tobytes()
        for row in PCMU.encode(np.rint(6000 * np.sin(2 * np.pi * 1004 * t)).astype(np.int16).reshape(50, 160))
    ]
    parts = {"send": 0.0, "drain": 0.0, "decode": 0.0, "mix": 0.0, "encode": 0.0, "sendto": 0.0}
    clock = time.perf_counter
    profiler = cProfile.Profile() if profile else None
    warm = 20
    for round_ in range(rounds + warm):
        if round_ == warm:
            parts = dict.fromkeys(parts, 0.0)
            if fast:
                entered = sum(endpoint.lane.enter(leg) for leg in rtp_legs)
                entered += sum(endpoint.lane.enter_sending(leg) for leg in rtp_legs)
                assert entered == 2 * legs, f"only {entered} of {2 * legs} entries to the fast lane"
            if profiler is not None:
                profiler.enable()
        packet = _HEADER.pack(0x80, 0, round_ & 0xFFFF, round_ * 160, 0x1234) + payloads[round_ % 50]
        t0 = clock()
        for phone, target in zip(phones, targets, strict=True):
            phone.sendto(packet, target)
        t1 = clock()
        endpoint.drain()
        t2 = clock()
        inputs = mixer.inputs
        inputs.fill(0)
        if fast:
            endpoint.read_into(inputs)  # its own drain finds nothing left: one empty poll
        else:
            decode_tick(endpoint._sessions, endpoint._rows, inputs)
        t3 = clock()
        mixer._rebuild_topology() if mixer._topology_dirty else None
        outputs = mixer.outputs
        outputs.fill(0)
        outputs[mixer._pair_slots] = inputs[mixer._pair_peers]
        t4 = clock()
        plain = endpoint._encode(outputs)
        t5 = clock()
        endpoint._send(plain)
        t6 = clock()
        for phone in phones:
            with contextlib.suppress(BlockingIOError):
                phone.recv(2048)
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            parts[key] += value
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    await endpoint.close()
    for phone in phones:
        phone.close()
    assert all(leg.session.packets_received >= rounds for leg in rtp_legs)
    assert PACKET_SIZE == HEADER_SIZE + 160
    return {key: 1e6 * value / rounds for key, value in parts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="cProfile the rounds too")
    parser.add_argument(
        "--slow", action="store_true", help="keep every leg off the fast lane (packet by packet)"
    )
    args = parser.parse_args()
    if not 2 <= args.legs <= 2000 or args.legs % 2 or not 1 <= args.rounds <= 5000:
        parser.error("an even number of legs 2-2000, rounds 1-5000")
    parts = run(lambda: measure(args.legs, args.rounds, args.profile, not args.slow))
    appliance = sum(value for key, value in parts.items() if key != "send")
    lane = "packet by packet" if args.slow else "fast lane"
    print(f"{args.legs} legs ({lane}), µs per tick (per leg):")
    for key, value in parts.items():
        print(f"  {key:7s} {value:8.1f}  ({value / args.legs:5.2f})")
    print(
        f"  appliance total {appliance:.0f} µs per tick = {appliance * 50 / 1e4:.1f} % of a core "
        f"({appliance / args.legs:.2f} µs per leg)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
