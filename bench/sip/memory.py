"""Where the appliance's memory goes under SIP load: tracemalloc around the founders' harness.

Runs the real `Appliance` with `bench/sip/b2b.toml` in this process (uvloop, tracemalloc on),
runs the harness (`../shared/bench/sip/run.py`, default test `lat`: 200 calls at 5 cps) as a
child process against it, then waits for the calls to clear and prints: RSS and traced
Python memory idle / after the load, and the allocation sites that grew the most (by file
and line). Loopback only; bounded by the harness's own limits and `--settle` seconds.

    .venv/bin/python bench/sip/memory.py [--tests lat] [--settle 5] [--top 25] [--no-trace] [--repeat 1]
    LAT_CALLS=400 .venv/bin/python bench/sip/memory.py     # harness knobs pass through
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from firmware.app import Appliance  # noqa: E402
from firmware.config.load import load_config  # noqa: E402

# HARNESS names the harness folder, as for bench/sip/harness.sh.
HARNESS = Path(os.environ.get("HARNESS", ROOT.parent / "shared" / "bench" / "sip")) / "run.py"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def memory_parts() -> str:
    """RSS split as the kernel sees it (anonymous vs file-backed: libraries loaded later show
    as file), and glibc's view of its heaps (in use, free but kept, mmapped blocks), and
    pymalloc's arenas."""
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            status[key] = int(value.split()[0]) / 1024
    text = ", ".join(f"{key} {value:.1f}" for key, value in status.items())
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
        text += (
            f"; malloc: in use {info.uordblks / 2**20:.1f}, free kept {info.fordblks / 2**20:.1f}"
            f", mmapped {info.hblkhd / 2**20:.1f} (MiB, all arenas)"
        )
    except (OSError, AttributeError):
        pass
    arenas = pymalloc_arenas()
    threads = len(list(Path("/proc/self/task").iterdir()))
    return f"{text}; {arenas}; threads {threads}"


def pymalloc_arenas() -> str:
    """pymalloc's 1 MiB arenas (mmapped outside glibc malloc) and how full they are, from
    sys._debugmallocstats(), which writes to the C stderr: caught through a temporary file."""
    with tempfile.TemporaryFile(mode="w+") as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(caught.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        stats = {}
        for line in caught:
            key, _, value = line.partition("=")
            stats[key.strip("# ").strip()] = value.strip().replace(",", "")
    current = int(stats.get("arenas allocated current", 0))
    used = int(stats.get("bytes in allocated blocks", 0)) / 2**20
    free = int(stats.get("bytes in available blocks", 0)) / 2**20
    return f"pymalloc {current} arenas (MiB: {used:.1f} in blocks, {free:.1f} free in pools)"


def malloc_trim() -> bool:
    """glibc's malloc_trim(0): give free heap pages back to the system (False: not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.malloc_trim(0))


async def main(tests: list[str], settle: float, top: int, out: Path, repeat: int) -> None:
    traced = tracemalloc.is_tracing()
    config = load_config(str(ROOT / "bench" / "sip" / "b2b.toml"))
    with tempfile.TemporaryDirectory() as data:
        app = Appliance(config, None, Path(data))
        await app.start(with_api=False)
        try:
            await asyncio.sleep(2.0)
            gc.collect()
            idle_rss = rss_mib()
            print(f"idle: {memory_parts()}")
            before = tracemalloc.take_snapshot() if traced else None
            for run in range(repeat):
                env = dict(
                    os.environ, TARGET="127.0.0.1:5060", PBX_PID=str(os.getpid()),
                    OUT=str(out / f"run{run + 1}"),
                )
                harness = await asyncio.create_subprocess_exec(
                    "python3", str(HARNESS), *tests,
                    cwd=str(HARNESS.parent), env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )
                assert harness.stdout is not None
                async for line in harness.stdout:
                    print("  harness:", line.decode(errors="replace").rstrip())
                await asyncio.wait_for(harness.wait(), 30)
                await asyncio.sleep(settle)
                gc.collect()
                print(f"RSS after run {run + 1}: {rss_mib():.1f} MiB ({memory_parts()})")
            loaded_rss = rss_mib()
            legs = len(app.rtp.legs) if app.rtp is not None else -1
            print(f"RSS idle {idle_rss:.1f} MiB, after the load {loaded_rss:.1f} MiB")
            print(f"RTP legs left {legs}, mixer slots {app.mixer.slots_in_use} of {app.mixer.capacity}")
            trimmed = malloc_trim()
            print(f"after malloc_trim(0) ({'released' if trimmed else 'nothing released'}): {rss_mib():.1f} MiB")
            print(f"  {memory_parts()}")
            if before is None:
                return
            after = tracemalloc.take_snapshot()
            traced_before = sum(s.size for s in before.statistics("filename"))
            traced_after = sum(s.size for s in after.statistics("filename"))
            print(
                f"traced Python memory idle {traced_before / 2**20:.2f} MiB, after "
                f"{traced_after / 2**20:.2f} MiB"
            )
            print(f"top {top} growth by line:")
            for stat in after.compare_to(before, "lineno")[:top]:
                print(f"  {stat}")
        finally:
            await app.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", default="lat")
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "memory"))
    parser.add_argument("--repeat", type=int, default=1, help="run the harness this many times")
    parser.add_argument("--no-trace", action="store_true", help="RSS only (tracemalloc costs memory)")
    args = parser.parse_args()
    if not args.no_trace:
        tracemalloc.start(1)
    import uvloop

    uvloop.run(main(args.tests.split(), args.settle, args.top, Path(args.out), max(1, min(args.repeat, 10))))
