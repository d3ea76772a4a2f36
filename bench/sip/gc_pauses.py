"""Garbage-collector pauses and live objects under SIP load: the appliance in this process.

Runs the real `Appliance` with `bench/sip/b2b.toml` (uvloop, as in production), runs the
founders' harness (`../shared/bench/sip/run.py`, default `cps` with CPS_RATES=100, i.e.
1500 calls of 5 s at 100 calls/s) as a child process against it, and records every
collection through `gc.callbacks` (generation, duration) plus, every `--every` seconds,
the number of objects the collector tracks and the live SIP transactions. At the sample with
the most tracked objects it takes a census by type. Prints the pause distribution per
generation, the mixer's dropped frames and the census. Loopback only; bounded by the
harness's own limits and `--settle` seconds.

    .venv/bin/python bench/sip/gc_pauses.py [--tests cps] [--settle 40] [--every 2]
    CPS_RATES=50 .venv/bin/python bench/sip/gc_pauses.py      # harness knobs pass through
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from firmware.app import Appliance  # noqa: E402
from firmware.config.load import load_config  # noqa: E402

# HARNESS names the harness folder, as for bench/sip/harness.sh.
HARNESS = Path(os.environ.get("HARNESS", ROOT.parent / "shared" / "bench" / "sip")) / "run.py"


class PauseRecorder:
    """Every collection's generation and wall time, from gc.callbacks."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float, int]] = []  # (at, generation, ms, collected)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        now = time.perf_counter()
        self.pauses.append((now, info["generation"], (now - self._started) * 1e3, info["collected"]))

    def report(self) -> str:
        lines = ["generation  count  total ms  p50 ms  p95 ms  max ms  collected"]
        for generation in (0, 1, 2):
            times = sorted(ms for _at, gen, ms, _n in self.pauses if gen == generation)
            collected = sum(n for _at, gen, _ms, n in self.pauses if gen == generation)
            if not times:
                lines.append(f"{generation:10d}  {0:5d}")
                continue
            p50 = times[len(times) // 2]
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            lines.append(
                f"{generation:10d}  {len(times):5d}  {sum(times):8.1f}  {p50:6.2f}  {p95:6.2f}"
                f"  {times[-1]:6.1f}  {collected}"
            )
        return "\n".join(lines)


def census(top: int, owners: bool) -> list[tuple[str, int]]:
    """Tracked objects by type; with `owners`, lists/dicts/tuples/cells/methods by the type of
    the objects that hold them too ("list <- Headers"), to see whose parts they are."""
    objects = gc.get_objects()
    counts = Counter(type(item).__qualname__ for item in objects)
    if owners:
        parts = {"list", "dict", "tuple", "cell", "method", "function", "deque"}
        for holder in objects:
            holder_type = type(holder).__qualname__
            for part in gc.get_referents(holder):
                part_type = type(part).__qualname__
                if part_type in parts and gc.is_tracked(part):
                    counts[f"{part_type} <- {holder_type}"] += 1
    return counts.most_common(top)


async def main(args: argparse.Namespace) -> None:
    config = load_config(str(ROOT / "bench" / "sip" / "b2b.toml"))
    recorder = PauseRecorder()
    with tempfile.TemporaryDirectory() as data:
        app = Appliance(config, None, Path(data))
        await app.start(with_api=False)
        try:
            await asyncio.sleep(2.0)
            gc.collect()
            idle = len(gc.get_objects())
            print(f"idle: {idle} tracked objects, gc thresholds {gc.get_threshold()}, "
                  f"frozen {gc.get_freeze_count()}")
            gc.callbacks.append(recorder)
            env = dict(
                os.environ,
                TARGET="127.0.0.1:5060",
                PBX_PID=str(os.getpid()),
                OUT=str(Path(args.out).resolve()),  # the harness runs in its own folder
            )
            env.setdefault("CPS_RATES", "100")
            harness = await asyncio.create_subprocess_exec(
                "python3", str(HARNESS), *args.tests.split(),
                cwd=str(HARNESS.parent), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            assert harness.stdout is not None
            peak = (0, 0, 0.0)
            peak_census: list[tuple[str, int]] = []
            layer = app.sip.stack.layer if app.sip is not None else None

            async def sample() -> None:
                nonlocal peak, peak_census
                started = time.perf_counter()
                counted = 0
                while True:
                    await asyncio.sleep(args.every)
                    tracked = len(gc.get_objects())
                    transactions = len(layer) if layer is not None else -1
                    if tracked > peak[0]:
                        peak = (tracked, transactions, time.perf_counter() - started)
                        if args.census and tracked > 1.2 * counted:
                            counted = tracked  # a census walks every object: not every sample
                            peak_census = census(args.top, args.owners)

            sampler = asyncio.create_task(sample())
            async for line in harness.stdout:
                print("  harness:", line.decode(errors="replace").rstrip())
            await asyncio.wait_for(harness.wait(), 30)
            await asyncio.sleep(args.settle)
            sampler.cancel()
            gc.callbacks.remove(recorder)
            gc.collect()
            print(recorder.report())
            print(f"peak: {peak[0]} tracked objects, {peak[1]} transactions, at {peak[2]:.0f} s")
            print(f"after settling: {len(gc.get_objects())} tracked objects (idle {idle})")
            health = app.mixer.health()
            print(f"mixer: frames dropped {health.frames_dropped}, late p99 "
                  f"{health.late_p99_ms} ms, max {health.late_max_ms} ms (last minute)")
            lane = getattr(app.rtp, "_lane", None)
            if lane is not None:
                print(f"RTP fast lane: legs entered {lane.entered}, left {lane.left}")
            for name, count in peak_census:
                print(f"  {count:8d}  {name}")
        finally:
            await app.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", default="cps")
    parser.add_argument("--settle", type=float, default=40.0)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-census", dest="census", action="store_false")
    parser.add_argument("--owners", action="store_true", help="census of who holds the parts")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "gc_pauses"))
    import uvloop

    uvloop.run(main(parser.parse_args()))
