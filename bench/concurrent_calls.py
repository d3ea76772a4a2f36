"""What simultaneous calls cost: CPU, memory and the health of the 20 ms mixer clock.

Runs the real core with the simulated line card (64 desk phones, 201-264 on ports 1-64, two
city lines on ports 65-66), in this process, on uvloop when installed. For each level (idle,
then 4, 16 and 32 simultaneous calls, two phones per call) it:

1. sets the calls up the way people do (lift, dial tone, dial, the callee rings and answers);
2. makes every phone talk all the time (a steady tone looped from each phone: 1004 Hz from
   the caller, 1400 Hz from the callee);
3. spot-checks that speech flows (a few calls: each end hears the other's tone);
4. measures over a 10 s window: process CPU as % of one core, RSS, and the mixer clock
   (tick lateness p50/p99/max, frames dropped, tick cost p50/p99);
5. checks every call heard the far end's tone in >= 98 % of the window's frames;
6. clears every call and checks the mixer slots return to 0.

The simulated line card, its phones and its audio run in the same process and on the same
event loop as the core, so the CPU figure includes them: it is an upper bound for the core.
The mixer's tick cost includes reading and writing the simulated ports' audio.
This prints figures; it is not a pass/fail test (exit status 1 only if calls failed).

    .venv/bin/python bench/concurrent_calls.py [--levels 0,4,16,32] [--window 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MixerWindow,
    ProcessMeter,
    bench_config,
    fmt_row,
    loop_name,
    print_machine,
    rss_mib,
    running_appliance,
    tone_loop,
)

from firmware.calls.lifecycle import LegState
from firmware.media.detect import tone_present
from firmware.selftest import wait_for_tone

FXS_PORTS = 64
CALLER_HZ = 1004.0
CALLEE_HZ = 1400.0
CONTINUITY_MIN = 0.98


class Call:
    def __init__(self, app: Any, caller: str, callee: str) -> None:
        self.caller_number, self.callee_number = caller, callee
        self.caller = app.simulator.phones[app.config.extension(caller).port]
        self.callee = app.simulator.phones[app.config.extension(callee).port]
        self.caller_leg = app.calls.extension_channel(caller)
        self.callee_leg = app.calls.extension_channel(callee)

    @property
    def label(self) -> str:
        return f"{self.caller_number}->{self.callee_number}"


async def set_up(app: Any, call: Call) -> None:
    sim = app.simulator
    mark = call.caller.mark()
    call.caller.off_hook()
    if await wait_for_tone(call.caller, mark, app.plan.dial, 3.0) is None:
        raise RuntimeError(f"{call.caller_number}: no dial tone")
    await call.caller.dial(call.callee_number, inter_digit_s=0.05)
    await call.callee.wait_ringing(3.0)
    call.callee.off_hook()
    await sim.wait_until(
        lambda: call.caller_leg.state == LegState.CONNECTED
        and call.callee_leg.state == LegState.CONNECTED,
        3.0,
        f"{call.label} connected",
    )


async def tear_down(app: Any, calls: list[Call]) -> None:
    for call in calls:
        call.caller.on_hook()
    for call in calls:
        call.callee.on_hook()
    await app.simulator.wait_until(lambda: not app.calls.sessions, 10.0, "all calls cleared")
    await app.simulator.wait_until(
        lambda: all(
            c.caller_leg.state == LegState.IDLE and c.callee_leg.state == LegState.IDLE
            for c in calls
        ),
        10.0,
        "all legs idle",
    )


async def spot_check(app: Any, calls: list[Call]) -> list[str]:
    """A few calls (first, middle, last): each end hears the other end's tone."""
    problems = []
    picks = {0, len(calls) // 2, len(calls) - 1} if calls else set()
    for index in sorted(picks):
        call = calls[index]
        for listener, frequency, who in (
            (call.callee, CALLER_HZ, call.callee_number),
            (call.caller, CALLEE_HZ, call.caller_number),
        ):
            mark = listener.mark()
            if await wait_for_tone(listener, mark, (frequency,), 1.0) is None:
                problems.append(f"{call.label}: {who} did not hear {frequency:.0f} Hz")
    return problems


def captured(calls: list[Call], since: int) -> list[tuple[str, str, float, object]]:
    """Copies of what each end heard since `since` (cheap; analysed later, off the loop)."""
    return [
        (call.label, who, frequency, listener.heard(since).copy())
        for call in calls
        for listener, frequency, who in (
            (call.callee, CALLER_HZ, call.callee_number),
            (call.caller, CALLEE_HZ, call.caller_number),
        )
    ]


def continuity(heard: list[tuple[str, str, float, object]]) -> tuple[int, list[str]]:
    """Calls whose both ends heard the far tone in >= CONTINUITY_MIN of the frames.

    Tone detection over 10 s x 64 phones takes about half a second of CPU: it runs in a
    thread after the calls are cleared so it neither blocks the event loop nor counts in
    the window.
    """
    bad: dict[str, list[str]] = {}
    labels: list[str] = []
    for label, who, frequency, samples in heard:
        if label not in labels:
            labels.append(label)
        if not tone_present(samples, (frequency,), CONTINUITY_MIN):  # type: ignore[arg-type]
            bad.setdefault(label, []).append(
                f"{label}: {who} lost {frequency:.0f} Hz during the window"
            )
    problems = [problem for label in labels for problem in bad.get(label, [])]
    return len(labels) - len(bad), problems


async def one_level(app: Any, pairs: int, window_s: float) -> dict[str, Any]:
    numbers = [e.number for e in app.config.extensions]
    calls = [Call(app, numbers[2 * i], numbers[2 * i + 1]) for i in range(pairs)]
    setup_started = time.monotonic()
    results = await asyncio.gather(*(set_up(app, c) for c in calls), return_exceptions=True)
    failures = [f"{c.label}: set-up: {r}" for c, r in zip(calls, results, strict=True) if r]
    setup_s = time.monotonic() - setup_started
    audio = app.simulator.audio
    caller_tone, callee_tone = tone_loop(CALLER_HZ), tone_loop(CALLEE_HZ)
    for call in calls:
        audio.set_tone(call.caller.port, caller_tone)
        audio.set_tone(call.callee.port, callee_tone)
    await asyncio.sleep(0.3)
    failures += await spot_check(app, calls)
    slots_during = app.mixer.slots_in_use

    meter, mixer_window = ProcessMeter(), MixerWindow(app.mixer, audio)
    mark = audio.position
    meter.start()
    mixer_window.start()
    rss_peak = rss_mib()
    deadline = time.monotonic() + window_s
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, left))
        rss_peak = max(rss_peak, rss_mib())
    process = meter.stop()
    mixer = mixer_window.stop()
    rss_end = rss_mib()
    heard = captured(calls, mark)

    await tear_down(app, calls)
    continuous, problems = await asyncio.to_thread(continuity, heard)
    failures += problems
    return {
        "calls": pairs,
        "phones": 2 * pairs,
        "setup_s": setup_s,
        "slots_during": slots_during,
        "calls_with_continuous_audio": continuous,
        "process": process,
        "rss_mib": rss_end,
        "rss_peak_mib": rss_peak,
        "mixer": mixer,
        "slots_after": app.mixer.slots_in_use,
        "failures": failures,
    }


async def bench(levels: list[int], window_s: float = 10.0) -> dict[str, Any]:
    config = bench_config(FXS_PORTS)
    results = []
    async with running_appliance(config) as app:
        loop = loop_name()
        await asyncio.sleep(1.0)  # let start-up settle before the idle baseline
        for pairs in levels:
            if not 0 <= pairs <= FXS_PORTS // 2:
                raise ValueError(f"a level must be 0..{FXS_PORTS // 2} calls")
            results.append(await one_level(app, pairs, window_s))
    return {"fxs_ports": FXS_PORTS, "window_s": window_s, "loop": loop, "levels": results}


def report(result: dict[str, Any]) -> None:
    print(
        f"== concurrent calls: {result['fxs_ports']} phones, {result['window_s']:.0f} s window "
        f"per level, loop {result['loop']}"
    )
    headers = [
        "calls", "set-up s", "slots", "audio ok", "CPU %", "RSS MiB", "late p50", "late p99",
        "late max", "dropped", "tick p50 us", "tick p99 us", "frame p99", "frame max",
    ]  # fmt: skip
    widths = [max(len(h), 5) for h in headers]
    print("   " + fmt_row(headers, widths))
    for level in result["levels"]:
        mixer, process = level["mixer"], level["process"]
        print(
            "   "
            + fmt_row(
                [
                    level["calls"] or "idle",
                    f"{level['setup_s']:.2f}",
                    level["slots_during"],
                    f"{level['calls_with_continuous_audio']}/{level['calls']}",
                    f"{process['cpu_pct_one_core']:.1f}",
                    f"{level['rss_mib']:.0f}",
                    f"{mixer['late_p50_ms']:.2f}",
                    f"{mixer['late_p99_ms']:.2f}",
                    f"{mixer['late_max_ms']:.2f}",
                    mixer["frames_dropped"],
                    f"{mixer['tick_cost_p50_us']:.0f}",
                    f"{mixer['tick_cost_p99_us']:.0f}",
                    f"{mixer['frame_interval_p99_ms']:.2f}",
                    f"{mixer['frame_interval_max_ms']:.2f}",
                ],
                widths,
            )
        )
    for level in result["levels"]:
        if level["slots_after"]:
            print(f"   PROBLEM: {level['slots_after']} mixer slots still in use after the "
                  f"{level['calls']}-call level was cleared")
        for failure in level["failures"][:10]:
            print(f"   FAILED ({level['calls']} calls): {failure}")
    print(
        "   CPU % is process CPU time (all threads) / wall time over the window, of one core.\n"
        "   The simulated card, phones and their audio run in this same process and event\n"
        "   loop, so the CPU figure includes them: an upper bound for the core alone. 'late' is\n"
        "   how late each 20 ms tick started (ms, as the mixer measures it with loop.time(),\n"
        "   which has 1 ms resolution under uvloop), 'tick' what one tick cost (us, including\n"
        "   the simulated ports' audio I/O); 'frame' = interval between consecutive frames sent\n"
        "   to the ports (ms, from time.monotonic stamps; ideal 20.00); 'audio ok' = calls\n"
        f"   whose both ends heard the far tone in >= {CONTINUITY_MIN:.0%} of the window's frames;\n"
        "   'slots' = mixer slots in use during the calls (back to 0 after each level)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="0,4,16,32", help="calls per level, comma-separated")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    from common import run

    print_machine()
    result = run(lambda: bench(levels, args.window))
    report(result)
    if args.json:
        print(json.dumps(result, indent=2))
    bad = any(level["failures"] or level["slots_after"] for level in result["levels"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
