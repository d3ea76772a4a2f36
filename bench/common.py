"""Shared pieces of the benchmarks: config, starting the appliance, statistics, machine facts.

The benchmarks run the real core (`firmware.app.Appliance`) with the simulated line card in
the same process, on uvloop when it is installed (as `minipbx run` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from a checkout without installing
    sys.path.insert(0, str(ROOT))

from firmware.app import Appliance  # noqa: E402
from firmware.config.load import default_config_text, parse_config  # noqa: E402
from firmware.config.schema import Config  # noqa: E402
from firmware.media.mixer import TICK_S  # noqa: E402
from firmware.media.tones import ToneSpec, render_cycle  # noqa: E402

# ----- running -------------------------------------------------------------------------


def uvloop_available() -> bool:
    """uvloop is used when importable, unless BENCH_ASYNCIO=1 asks for the stock loop."""
    if os.environ.get("BENCH_ASYNCIO") == "1":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run `main()` on uvloop when it is importable (as production does), else asyncio."""
    if uvloop_available():
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def loop_name() -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"


# ----- config --------------------------------------------------------------------------


def bench_config_text(fxs_ports: int, fxo_ports: int = 2) -> str:
    """The embedded default office grown to `fxs_ports` extensions (201, 202, ... on ports
    1, 2, ...), its city lines moved to the FXO ports after them. Timers stay the defaults."""
    text = default_config_text()
    head, _, _ = text.partition("[[extensions]]")
    head = re.sub(r"(?m)^fxs_ports = \d+.*$", f"fxs_ports = {fxs_ports}", head)
    head = re.sub(r"(?m)^fxo_ports = \d+.*$", f"fxo_ports = {fxo_ports}", head)
    # The [[lines]] keep their order: the first line on the first FXO port, and so on.
    ports = iter(range(fxs_ports + 1, fxs_ports + fxo_ports + 1))
    head = re.sub(r"(?m)^port = \d+$", lambda _m: f"port = {next(ports)}", head)
    extensions = []
    for index in range(1, fxs_ports + 1):
        number = 200 + index
        cos = "manager" if index == 1 else "staff"
        extensions.append(
            f'[[extensions]]\nnumber = "{number}"\nname = "Desk {number}"\n'
            f'port = {index}\nclass_of_service = "{cos}"\n'
        )
    return head + "\n".join(extensions)


def bench_config(fxs_ports: int, fxo_ports: int = 2) -> Config:
    return parse_config(bench_config_text(fxs_ports, fxo_ports), f"<bench {fxs_ports} fxs>")


@contextlib.asynccontextmanager
async def running_appliance(config: Config) -> AsyncIterator[Appliance]:
    """The core with the simulated card, started and in service; stopped and cleaned after."""
    data_dir = Path(tempfile.mkdtemp(prefix="mpbxb"))
    app = Appliance(config, None, data_dir)
    try:
        await app.start(with_api=False)
        await app.wait_ready()
        yield app
    finally:
        await app.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def phone_port(app: Appliance, number: str) -> int:
    extension = app.config.extension(number)
    assert extension is not None, number
    return extension.port


def tone_loop(frequency: float, level_dbm0: float = -10.0) -> np.ndarray:
    """A click-free loop of a steady tone, a whole number of 20 ms frames long."""
    return np.array(render_cycle(ToneSpec.continuous((frequency,), level_dbm0)))


# ----- statistics ----------------------------------------------------------------------


def summary_ms(values_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds of values given in seconds."""
    array = np.asarray(values_s, dtype=np.float64) * 1e3
    if not array.size:
        return {"n": 0}
    return {
        "n": int(array.size),
        "min": float(array.min()),
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
        "mean": float(array.mean()),
    }


class ProcessMeter:
    """CPU (all threads of this process) and wall time between `start()` and `stop()`."""

    def start(self) -> None:
        self._wall = time.monotonic()
        self._cpu = time.process_time()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall
        cpu = time.process_time() - self._cpu
        return {"wall_s": wall, "cpu_s": cpu, "cpu_pct_one_core": 100.0 * cpu / wall}


def rss_mib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - psutil is a dependency
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


class MixerWindow:
    """Mixer clock health over a window of ticks (not the mixer's whole last minute).

    `Mixer.health()` summarises the last 3000 ticks, which would mix call set-up into a
    10 s window; this reads the same per-tick lateness and cost rings for just the ticks
    between `start()` and `stop()` (the mixer writes tick n's figures at index n % 3000).
    """

    def __init__(self, mixer: Any, audio: Any = None) -> None:
        self.mixer = mixer
        self.audio = audio  # a MemoryAudio: its per-frame send stamps give the frame intervals

    def start(self) -> None:
        self._position = self.audio.position if self.audio is not None else 0
        self._ticks = self.mixer.ticks
        self._dropped = self.mixer.frames_dropped
        self._wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        mixer = self.mixer
        wall = time.monotonic() - self._wall
        ticks = mixer.ticks - self._ticks
        history = mixer._lateness.size
        count = min(ticks, history)
        indices = np.arange(mixer.ticks - count + 1, mixer.ticks + 1) % history
        late = mixer._lateness[indices] * 1e3 if count else np.zeros(1)
        cost = mixer._tick_cost[indices] * 1e6 if count else np.zeros(1)
        intervals = self._frame_intervals_ms()
        return {
            "frame_interval_min_ms": float(intervals.min()),
            "frame_interval_p50_ms": float(np.percentile(intervals, 50)),
            "frame_interval_p99_ms": float(np.percentile(intervals, 99)),
            "frame_interval_max_ms": float(intervals.max()),
            "ticks": ticks,
            "ticks_expected": wall / TICK_S,
            "late_p50_ms": float(np.percentile(late, 50)),
            "late_p99_ms": float(np.percentile(late, 99)),
            "late_max_ms": float(late.max()),
            "frames_dropped": mixer.frames_dropped - self._dropped,
            "tick_cost_p50_us": float(np.percentile(cost, 50)),
            "tick_cost_p99_us": float(np.percentile(cost, 99)),
            "tick_cost_max_us": float(cost.max()),
            "slots_in_use": mixer.slots_in_use,
            "capacity": mixer.capacity,
        }

    def _frame_intervals_ms(self) -> np.ndarray:
        """Time between consecutive frames sent to the ports (time.monotonic, sub-ms).

        The mixer's own lateness figures use loop.time(), which under uvloop has a
        resolution of 1 ms; the stamps MemoryAudio puts on each frame it sends do not.
        """
        if self.audio is None:
            return np.full(1, np.nan)
        end = self.audio.position
        start = max(self._position, end - 900)  # the capture ring keeps 1000 frames
        stamps = np.array([self.audio.stamp(i) for i in range(start, end)])
        if stamps.size < 2:
            return np.full(1, np.nan)
        return np.diff(stamps) * 1e3


# ----- the machine ---------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    uv = "no (BENCH_ASYNCIO=1)" if os.environ.get("BENCH_ASYNCIO") == "1" else "no"
    if uvloop_available():
        import uvloop

        uv = f"yes (uvloop {uvloop.__version__})"
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "memory": memory,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "uvloop": uv,
        "platform": platform.platform(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def print_machine() -> None:
    info = machine_info()
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory']} RAM; "
        f"Python {info['python']}, numpy {info['numpy']}, uvloop: {info['uvloop']}; "
        f"load average {info['loadavg']}"
    )


def fmt_row(cells: list[object], widths: list[int]) -> str:
    return "  ".join(str(cell).rjust(width) for cell, width in zip(cells, widths, strict=True))
