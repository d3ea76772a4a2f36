"""How fast a person gets dial tone, and how fast the phone they call starts ringing.

Runs the real core with the simulated line card (16 desk phones, 201-216 on ports 1-16, two
city lines on ports 17-18), in this process, on uvloop when installed, and makes N calls
(default 200, a few at a time). Per call it measures:

(a) off hook -> dial tone: from `phone.off_hook()` to the monotonic stamp of the first audio
    frame sent to that phone that carries dial tone. The mixer sends audio in 20 ms frames
    on its own clock, so this includes waiting for the next tick: up to one frame (20 ms) of
    quantisation on top of the signalling path. The output splits the two parts: signalling
    (off hook -> call control starts the dial tone) and the wait for the frame to go out.
(b) last digit -> ringing: from the moment the last digit is keyed (`await phone.dial()`
    returns) to the simulator's monotonic time when the card received the RING command for
    the called phone. No audio clock is involved.

Goals: p95 of (a) < 50 ms, p95 of (b) < 100 ms. Every call is torn down (half answered and
cleared, half abandoned while ringing) and both legs must be idle before the pair is reused.
This prints figures; it is not a pass/fail test (exit status 1 only if calls failed).

    .venv/bin/python bench/dial_latency.py [--calls 200] [--concurrency 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MixerWindow,
    ProcessMeter,
    bench_config,
    loop_name,
    print_machine,
    running_appliance,
    summary_ms,
)

from firmware.calls.lifecycle import LegState
from firmware.selftest import wait_for_tone

FXS_PORTS = 16
GOAL_DIAL_TONE_P95_MS = 50.0
GOAL_RINGING_P95_MS = 100.0
INTER_DIGIT_S = 0.05


class Samples:
    def __init__(self) -> None:
        self.dial_tone: list[float] = []
        self.dial_tone_signalling: list[float] = []
        self.dial_tone_frame_wait: list[float] = []
        self.ringing: list[float] = []
        self.failures: list[str] = []
        self.answered = 0
        self.abandoned = 0


async def one_call(
    app: Any, caller_number: str, callee_number: str, answer: bool, samples: Samples | None,
    dial_started: dict[int, float],
) -> None:
    """One call from `caller_number` to `callee_number`; figures go to `samples` (None: warm-up)."""
    sim, calls = app.simulator, app.calls
    caller = sim.phones[app.config.extension(caller_number).port]
    callee = sim.phones[app.config.extension(callee_number).port]
    caller_leg = calls.extension_channel(caller_number)
    callee_leg = calls.extension_channel(callee_number)
    try:
        mark = caller.mark()
        lifted = time.monotonic()
        caller.off_hook()
        heard_at = await wait_for_tone(caller, mark, app.plan.dial, 3.0)
        if heard_at is None:
            raise RuntimeError(f"{caller_number}: no dial tone within 3 s")
        started = dial_started.get(caller_leg.slot) if caller_leg.slot is not None else None

        await caller.dial(callee_number, inter_digit_s=INTER_DIGIT_S)
        last_digit = time.monotonic()
        try:
            ring = await callee.wait_ringing(3.0)
        except TimeoutError:
            raise RuntimeError(f"{callee_number}: did not ring within 3 s") from None
        if ring.caller_number != caller_number:
            raise RuntimeError(f"{callee_number} showed caller {ring.caller_number!r}")
        if samples is not None:
            samples.dial_tone.append(heard_at - lifted)
            if started is not None and lifted <= started <= heard_at:
                samples.dial_tone_signalling.append(started - lifted)
                samples.dial_tone_frame_wait.append(heard_at - started)
            samples.ringing.append(ring.started_at - last_digit)

        if answer:
            callee.off_hook()
            await sim.wait_until(
                lambda: caller_leg.state == LegState.CONNECTED
                and callee_leg.state == LegState.CONNECTED,
                3.0,
                f"{caller_number}-{callee_number} connected",
            )
        if samples is not None:
            if answer:
                samples.answered += 1
            else:
                samples.abandoned += 1
    except (RuntimeError, TimeoutError) as error:
        if samples is not None:
            samples.failures.append(str(error))
    finally:
        caller.on_hook()
        if callee.off_hook_state:
            callee.on_hook()
        await sim.wait_until(
            lambda: caller_leg.state == LegState.IDLE and callee_leg.state == LegState.IDLE,
            5.0,
            f"{caller_number} and {callee_number} idle",
        )


async def worker(
    app: Any, numbers: list[str], calls: int, samples: Samples, dial_started: dict[int, float]
) -> None:
    """Calls among its own phones only, so workers never ring each other's phones."""
    size = len(numbers)
    await one_call(app, numbers[0], numbers[1], True, None, dial_started)  # warm-up, not counted
    for index in range(calls):
        caller = numbers[index % size]
        callee = numbers[(index + 1 + (index // size) % (size - 1)) % size]
        await one_call(app, caller, callee, index % 2 == 0, samples, dial_started)


def set_tcp_nodelay(app: Any) -> bool:
    """Diagnostic only: turn Nagle off on the driver's `socket://` link to the simulator.

    pyserial's socket:// port leaves Nagle on, so a small command written while an earlier
    small write is unacknowledged waits for the simulator's delayed ACK (~40 ms on Linux).
    A real UART has no such delay; this shows the figure without it.
    """
    threads = app.line_card.driver._threads
    sock = getattr(getattr(threads, "_port", None), "_socket", None)
    if sock is None:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


async def bench(calls: int = 200, concurrency: int = 4, nodelay: bool = False) -> dict[str, Any]:
    if not 1 <= concurrency <= FXS_PORTS // 2:
        raise ValueError(f"concurrency must be 1..{FXS_PORTS // 2}")
    config = bench_config(FXS_PORTS)
    samples = Samples()
    async with running_appliance(config) as app:
        # Time at which call control started each slot's dial tone (for the breakdown of (a)).
        dial_started: dict[int, float] = {}
        play = app.mixer.play

        def stamped_play(slot: int, sound_name: str) -> None:
            if sound_name == "dial":
                dial_started[slot] = time.monotonic()
            play(slot, sound_name)

        app.mixer.play = stamped_play  # type: ignore[method-assign]
        if nodelay and not set_tcp_nodelay(app):
            raise RuntimeError("--nodelay: the driver's port is not a socket")
        numbers = [e.number for e in config.extensions]
        group = len(numbers) // concurrency
        shares = [calls // concurrency + (1 if k < calls % concurrency else 0) for k in range(concurrency)]
        meter, window = ProcessMeter(), MixerWindow(app.mixer)
        meter.start()
        window.start()
        await asyncio.gather(
            *(
                worker(app, numbers[k * group : (k + 1) * group], shares[k], samples, dial_started)
                for k in range(concurrency)
            )
        )
        process = meter.stop()
        mixer = window.stop()
        await app.simulator.wait_until(lambda: not app.calls.sessions, 5.0, "no sessions")
        leftover_slots = app.mixer.slots_in_use
        loop = loop_name()
    return {
        "calls": calls,
        "concurrency": concurrency,
        "fxs_ports": FXS_PORTS,
        "loop": loop,
        "tcp_nodelay": nodelay,
        "answered": samples.answered,
        "abandoned": samples.abandoned,
        "failures": samples.failures,
        "dial_tone_ms": summary_ms(samples.dial_tone),
        "dial_tone_signalling_ms": summary_ms(samples.dial_tone_signalling),
        "dial_tone_frame_wait_ms": summary_ms(samples.dial_tone_frame_wait),
        "ringing_ms": summary_ms(samples.ringing),
        "process": process,
        "mixer": mixer,
        "leftover_slots": leftover_slots,
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"== dial latency: {result['calls']} calls, {result['concurrency']} at a time, "
        f"{result['fxs_ports']} phones, loop {result['loop']}"
        + (" [diagnostic: TCP_NODELAY set on the driver's socket]" if result["tcp_nodelay"] else "")
    )
    print(
        f"   calls answered {result['answered']}, abandoned while ringing {result['abandoned']}, "
        f"failed {len(result['failures'])}"
    )
    for failure in result["failures"][:10]:
        print(f"   FAILED: {failure}")
    rows = [
        ("(a) off hook -> dial tone", result["dial_tone_ms"], GOAL_DIAL_TONE_P95_MS),
        ("    signalling part", result["dial_tone_signalling_ms"], None),
        ("    wait for 20 ms frame", result["dial_tone_frame_wait_ms"], None),
        ("(b) last digit -> ringing", result["ringing_ms"], GOAL_RINGING_P95_MS),
    ]
    print(f"   {'':27}{'n':>5}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}   goal")
    for label, stats, goal in rows:
        if not stats.get("n"):
            print(f"   {label:27}{0:>5}  (no samples)")
            continue
        verdict = ""
        if goal is not None:
            met = stats["p95"] < goal
            verdict = f"p95 < {goal:.0f} ms: {'MET' if met else 'NOT MET'}"
        print(
            f"   {label:27}{stats['n']:>5}{stats['p50']:>8.1f}{stats['p95']:>8.1f}"
            f"{stats['p99']:>8.1f}{stats['max']:>8.1f}   {verdict}"
        )
    mixer, process = result["mixer"], result["process"]
    print(
        f"   over the run ({process['wall_s']:.1f} s): CPU {process['cpu_pct_one_core']:.0f} % "
        f"of one core; mixer late p99 {mixer['late_p99_ms']:.2f} ms, max "
        f"{mixer['late_max_ms']:.2f} ms, frames dropped {mixer['frames_dropped']}; "
        f"slots left after the run {result['leftover_slots']}"
    )
    print(
        "   note: (a) is quantised by the mixer's 20 ms clock: dial tone goes out with the next "
        "frame\n   after call control starts it, so up to one frame (20 ms) is the clock, not "
        "the software;\n   the 'signalling part' is card -> driver -> call control, the 'wait' "
        "is the frame clock\n   (plus the tick's own cost). Times are milliseconds."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--nodelay",
        action="store_true",
        help="diagnostic: set TCP_NODELAY on the driver's socket:// link (not what the firmware does)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    from common import run

    print_machine()
    result = run(lambda: bench(args.calls, args.concurrency, args.nodelay))
    report(result)
    if args.json:
        print(json.dumps(result, indent=2))
    return 1 if result["failures"] or result["leftover_slots"] else 0


if __name__ == "__main__":
    sys.exit(main())
