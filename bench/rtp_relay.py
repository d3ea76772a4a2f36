"""What SIP media costs: N bridged calls of RTP through the mixer, the phones in another process.

For each level (25, 50 and 100 bridged calls = 50, 100 and 200 RTP legs) this process opens
two legs per call on the `RtpEndpoint` (`firmware/media/rtp_endpoint.py`), bridges them in
the mixer and runs the mixer's own 20 ms clock, on uvloop when installed. A second process
(spawned, plain non-blocking sockets and epoll) plays the phones: one UDP socket per leg on
127.0.0.1, each sending 50 packets/s of G.711 (a 1004 Hz tone from callers, 1400 Hz from
callees; the callee legs are PCMA and the caller legs PCMU, so every call is transcoded)
and counting what it gets back. The phones send in 10 groups 2 ms apart, so packets arrive
at every phase of the mixer's tick as real phones' do, and read what came back between
sends rather than waiting in epoll (on loopback the sender pays for waking the receiver,
a cost phones on other machines do not put on the appliance). Only this process's CPU is measured, over a 10 s window
after a 2 s warm-up:

* CPU % of one core (`time.process_time()`, all threads) and CPU µs per packet (in + out);
* packets in/out per second over the window, and loss over the whole run (phones' sent
  vs legs' received, legs' sent vs phones' received);
* mixer tick cost p50/p99 and lateness over the window (the tick includes decoding,
  mixing, encoding and sending for every leg);
* a spot check: the first call's phones must hear each other's tone;
* after each level, the same phones through a bare relay (each packet received is sent out
  of the peer leg's socket, no jitter buffer, no mixer): the floor of this harness on this
  machine, measured under the same conditions, since figures on this shared VM move by
  several points of CPU from run to run (`--no-baseline` skips it).

Loopback only, bounded: every level runs for warm-up + window + about 2 s and every wait has
a timeout. It prints figures; it is not a pass/fail test (exit 1 only if a level could not
run or the spot check failed).

    .venv/bin/python bench/rtp_relay.py [--levels 25,50,100] [--window 10] [--no-baseline] [--json]
    BENCH_ASYNCIO=1 .venv/bin/python bench/rtp_relay.py   # the stock asyncio loop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import select
import socket
import struct
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import MixerWindow, ProcessMeter, fmt_row, loop_name, print_machine, run

from firmware.media.codecs import PCMA, PCMU
from firmware.media.detect import tone_present
from firmware.media.mixer import Mixer
from firmware.media.rtp_endpoint import RtpEndpoint, RtpPortRange

HOST = "127.0.0.1"
CALLER_HZ, CALLEE_HZ = 1004.0, 1400.0
WARMUP_S = 2.0
GROUPS = 10  # the phones send in 10 groups, 2 ms apart
CHILD_TIMEOUT_S = 30.0

# ----- the phones (the other process) --------------------------------------------------------

_HEADER = struct.Struct("!BBHII")


def _tone_payloads(frequency: float, law: Any) -> list[bytes]:
    """One second of a continuous tone as 50 G.711 payloads of 20 ms."""
    t = np.arange(8000) / 8000.0
    samples = np.rint(6000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    coded = law.encode(samples.reshape(50, 160))
    return [row.tobytes() for row in coded]


def phones_main(conn: Connection, calls: int) -> None:
    """2 x `calls` RTP phones: send 50 pps each for the time asked, count what comes back."""
    socks = []
    for _ in range(2 * calls):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        socks.append(sock)
    conn.send([sock.getsockname()[1] for sock in socks])
    order = conn.recv()
    leg_ports: list[int] = order["legs"]
    seconds: float = order["seconds"]
    # Even sockets are callers (PCMU, PT 0), odd ones callees (PCMA, PT 8).
    caller_payloads = _tone_payloads(CALLER_HZ, PCMU)
    callee_payloads = _tone_payloads(CALLEE_HZ, PCMA)
    targets = [(HOST, port) for port in leg_ports]
    sent = [0] * len(socks)
    received = [0] * len(socks)
    by_fd = {sock.fileno(): index for index, sock in enumerate(socks)}
    spot: dict[int, list[bytes]] = {0: [], 1: []}
    poller = select.epoll()
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)

    def drain(timeout: float) -> None:
        for fd, _event in poller.poll(timeout):
            index = by_fd[fd]
            sock = socks[index]
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                received[index] += 1
                if index in spot:
                    spot[index].append(data[12:])

    # Real phones' packets arrive at every phase of the appliance's 20 ms tick, not in one
    # burst: the phones are split in GROUPS sending 20/GROUPS ms apart.
    groups = [list(range(group, len(socks), GROUPS)) for group in range(GROUPS)]
    step = 0.02 / GROUPS
    started = time.monotonic()
    next_send = started
    sequence = 0
    while next_send < started + seconds:
        # Sleep, then read everything that came: a phone process parked in epoll_wait would
        # be woken by every packet the appliance sends, and on loopback the sender pays for
        # that wake-up; phones on other machines cost the appliance no such thing.
        time.sleep(max(0.0, next_send - time.monotonic()))
        drain(0)
        timestamp = (sequence * 160) & 0xFFFFFFFF
        frame = sequence % 50
        caller = (
            _HEADER.pack(0x80, 0, sequence & 0xFFFF, timestamp, 0x1234) + caller_payloads[frame]
        )
        callee = (
            _HEADER.pack(0x80, 8, sequence & 0xFFFF, timestamp, 0x5678) + callee_payloads[frame]
        )
        for group in groups:
            for index in group:
                socks[index].sendto(callee if index & 1 else caller, targets[index])
                sent[index] += 1
            next_send += step
            time.sleep(max(0.0, next_send - time.monotonic()))
            drain(0)
        sequence += 1
    conn.send({"sent": sum(sent)})
    talked = {index: payloads[-50:] for index, payloads in spot.items()}  # before the silence
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not conn.poll(0) and time.monotonic() < deadline:
        drain(0.01)
    drain(0.05)
    # The first call's phones: the caller must hear 1400 Hz, the callee 1004 Hz.
    heard_by_caller = PCMU.decode(np.frombuffer(b"".join(talked[0]), dtype=np.uint8))
    heard_by_callee = PCMA.decode(np.frombuffer(b"".join(talked[1]), dtype=np.uint8))
    conn.send(
        {
            "received": sum(received),
            "phones_silent": sum(1 for count in received if count == 0),
            "spot_check": bool(
                tone_present(heard_by_caller, (CALLEE_HZ,), 0.9)
                and tone_present(heard_by_callee, (CALLER_HZ,), 0.9)
            ),
        }
    )
    for sock in socks:
        sock.close()


# ----- the appliance side (this process) -------------------------------------------------------


class MixedCalls:
    """The product path: two RtpEndpoint legs per call, bridged in the mixer (transcoding)."""

    mode = "mixer"

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.mixer = Mixer(capacity=2 * calls + 8)
        self.endpoint = RtpEndpoint(RtpPortRange(10000, 20000))
        self.mixer.add_endpoint(self.endpoint)
        self.legs: list[Any] = []

    async def open(self, phone_ports: list[int]) -> list[int]:
        mixer, endpoint = self.mixer, self.endpoint
        for call in range(self.calls):
            caller_slot = mixer.allocate(f"caller{call}")
            callee_slot = mixer.allocate(f"callee{call}")
            caller_phone, callee_phone = phone_ports[2 * call], phone_ports[2 * call + 1]
            self.legs.append(
                await endpoint.open_leg(caller_slot, HOST, "PCMU", 0, 101, (HOST, caller_phone))
            )
            self.legs.append(
                await endpoint.open_leg(callee_slot, HOST, "PCMA", 8, 101, (HOST, callee_phone))
            )
            mixer.connect(caller_slot, callee_slot)
        mixer.start()
        return [leg.local_port for leg in self.legs]

    def totals(self) -> tuple[int, int]:
        counters = [leg.counters for leg in self.legs]  # hands back the fast lane's counts
        return sum(c.packets_in for c in counters), sum(c.packets_out for c in counters)

    def extra(self) -> dict[str, Any]:
        counters = [leg.counters for leg in self.legs]
        return {
            "late_or_duplicate": sum(c.late + c.duplicates for c in counters),
            "concealed": sum(c.concealed for c in counters),
            "fast_lane_entered": self.endpoint.lane.entered,
            "fast_lane_left": self.endpoint.lane.left,
        }

    async def stop_sending(self) -> None:
        await self.mixer.stop()

    async def close(self) -> None:
        await self.mixer.stop()
        await self.endpoint.close()


class _Forwarder(asyncio.DatagramProtocol):
    """The relay floor: each packet goes straight out of the peer leg's socket."""

    def __init__(self, phone: tuple[str, int]) -> None:
        self.phone = phone
        self.peer: _Forwarder | None = None
        self.transport: Any = None
        self.received = 0
        self.sent = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1
        peer = self.peer
        if peer is not None:
            peer.transport.sendto(data, peer.phone)
            peer.sent += 1


class RelayedCalls:
    """What the same traffic costs with no media engine at all: receive, send, nothing else.

    The floor of this harness on this machine (the architecture's "10.5 µs per packet on
    uvloop" figure was measured this way). The phones' spot check cannot pass here: a relay
    does not transcode the callee's PCMA for the caller.
    """

    mode = "relay"

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.legs: list[_Forwarder] = []

    async def open(self, phone_ports: list[int]) -> list[int]:
        loop = asyncio.get_running_loop()
        for port in phone_ports:
            _transport, forwarder = await loop.create_datagram_endpoint(
                lambda port=port: _Forwarder((HOST, port)), local_addr=(HOST, 0)
            )
            self.legs.append(forwarder)
        for caller, callee in zip(self.legs[::2], self.legs[1::2], strict=True):
            caller.peer, callee.peer = callee, caller
        return [leg.transport.get_extra_info("sockname")[1] for leg in self.legs]

    def totals(self) -> tuple[int, int]:
        return sum(leg.received for leg in self.legs), sum(leg.sent for leg in self.legs)

    def extra(self) -> dict[str, Any]:
        return {}

    async def stop_sending(self) -> None:
        for leg in self.legs:
            leg.peer = None

    async def close(self) -> None:
        for leg in self.legs:
            leg.transport.close()
        await asyncio.sleep(0)


async def run_level(system: MixedCalls | RelayedCalls, window: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    calls = system.calls
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    phones = context.Process(target=phones_main, args=(child, calls), daemon=True)
    phones.start()

    async def receive() -> Any:
        ready = await loop.run_in_executor(None, parent.poll, CHILD_TIMEOUT_S)
        if not ready:
            raise TimeoutError("the phones' process did not answer")
        return parent.recv()

    health: dict[str, Any] = {}
    try:
        leg_ports = await system.open(await receive())
        parent.send({"legs": leg_ports, "seconds": WARMUP_S + window + 0.5})
        await asyncio.sleep(WARMUP_S)
        meter = ProcessMeter()
        clock = MixerWindow(system.mixer) if isinstance(system, MixedCalls) else None
        in_before, out_before = system.totals()
        meter.start()
        if clock is not None:
            clock.start()
        await asyncio.sleep(window)
        cpu = meter.stop()
        if clock is not None:
            health = clock.stop()
        in_after, out_after = system.totals()

        phones_sent = (await receive())["sent"]
        await asyncio.sleep(0.3)  # the last packets cross the jitter buffers and come back
        await system.stop_sending()
        await asyncio.sleep(0.1)
        parent.send("stop")
        phones_report = await receive()
        legs_in, legs_out = system.totals()
        extra = system.extra()
    finally:
        await system.close()
        await loop.run_in_executor(None, phones.join, 10)
        if phones.is_alive():
            phones.kill()
    packets_window = (in_after - in_before) + (out_after - out_before)
    return {
        "mode": system.mode,
        "calls": calls,
        "legs": 2 * calls,
        "loop": loop_name(),
        "cpu_pct_one_core": cpu["cpu_pct_one_core"],
        "cpu_us_per_packet": 1e6 * cpu["cpu_s"] / max(packets_window, 1),
        "pps_in": (in_after - in_before) / cpu["wall_s"],
        "pps_out": (out_after - out_before) / cpu["wall_s"],
        "phones_sent": phones_sent,
        "legs_received": legs_in,
        "loss_in_pct": 100.0 * (phones_sent - legs_in) / max(phones_sent, 1),
        "legs_sent": legs_out,
        "phones_received": phones_report["received"],
        "loss_out_pct": 100.0 * (legs_out - phones_report["received"]) / max(legs_out, 1),
        "phones_silent": phones_report["phones_silent"],
        "spot_check": phones_report["spot_check"] if system.mode == "mixer" else None,
        "tick_cost_p50_us": health.get("tick_cost_p50_us"),
        "tick_cost_p99_us": health.get("tick_cost_p99_us"),
        "late_p99_ms": health.get("late_p99_ms"),
        "late_max_ms": health.get("late_max_ms"),
        "frames_dropped": health.get("frames_dropped"),
        **extra,
    }


COLUMNS = [
    ("mode", "mode", 5, "{}"),
    ("calls", "calls", 5, "{}"),
    ("legs", "legs", 4, "{}"),
    ("CPU %", "cpu_pct_one_core", 6, "{:.1f}"),
    ("µs/pkt", "cpu_us_per_packet", 6, "{:.2f}"),
    ("pps in", "pps_in", 7, "{:.0f}"),
    ("pps out", "pps_out", 7, "{:.0f}"),
    ("loss in %", "loss_in_pct", 9, "{:.3f}"),
    ("loss out %", "loss_out_pct", 10, "{:.3f}"),
    ("tick p50 µs", "tick_cost_p50_us", 11, "{:.0f}"),
    ("tick p99 µs", "tick_cost_p99_us", 11, "{:.0f}"),
    ("late p99 ms", "late_p99_ms", 11, "{:.2f}"),
    ("dropped", "frames_dropped", 7, "{}"),
    ("audio", "spot_check", 5, "{}"),
]


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


async def bench(levels: list[int], window: float, baseline: bool) -> list[dict[str, Any]]:
    print(f"event loop: {loop_name()}; window {window:.0f} s after {WARMUP_S:.0f} s warm-up")
    widths = [max(width, len(title)) for title, _key, width, _fmt in COLUMNS]
    print(fmt_row([title for title, *_ in COLUMNS], widths))
    results = []
    for calls in levels:
        systems: list[MixedCalls | RelayedCalls] = [MixedCalls(calls)]
        if baseline:
            systems.append(RelayedCalls(calls))
        for system in systems:
            result = await run_level(system, window)
            results.append(result)
            print(fmt_row([_cell(result[key], fmt) for _t, key, _w, fmt in COLUMNS], widths))
            sys.stdout.flush()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="25,50,100", help="bridged calls per level")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the bare relay run after each level"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",") if level]
    if not levels or min(levels) < 1 or max(levels) > 1000 or not 1 <= args.window <= 120:
        parser.error("levels 1-1000 calls, window 1-120 s")
    print_machine()
    results = run(lambda: bench(levels, args.window, not args.no_baseline))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if all(r["spot_check"] is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
