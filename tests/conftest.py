"""The `pbx` fixture: the real core with the simulated line card, on the real 20 ms clock.

Timers are shortened so behaviours that take seconds in an office take fractions here.
Every test gets its own data folder (database, control socket) and the fixture fails the
test if the core leaves tasks, mixer slots or call sessions behind.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from firmware.app import Appliance
from firmware.calls.cdr import CallRecord
from firmware.calls.channel import Channel
from firmware.calls.lifecycle import LegState
from firmware.config.load import default_config_text, parse_config
from firmware.lines.simulator import SimCityLine, SimPhone
from firmware.media.detect import ToneDetector
from firmware.media.mixer import FRAME_SAMPLES, TICK_S
from firmware.media.tones import ToneSpec
from firmware.selftest import test_tone as make_tone
from firmware.selftest import wait_for_tone

FAST_TIMERS = """
[timers]
first_digit_s = 1.5
inter_digit_s = 0.6
ring_timeout_s = 2.0
lockout_tone_s = 1.0
fxo_dial_tone_wait_s = 1.5
fxo_ring_gone_s = 5.5
"""


def office_config(extra: str = "", timers: str = FAST_TIMERS) -> str:
    """The embedded default office with fast timers; `extra` TOML replaces sections by name."""
    text = default_config_text()
    start = text.index("[timers]")
    end = text.index("[numbering]")
    return text[:start] + timers.strip() + "\n\n" + text[end:] + "\n" + extra


def cadence_matches(labels: list[int], on_ms: int, off_ms: int) -> bool:
    """A burst of `on_ms` (whose start was heard) followed by `off_ms` of silence (or more)."""
    runs: list[list[int]] = []
    for label in labels:
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])

    def near(frames: int, ms: int) -> bool:
        return abs(frames * 20 - ms) <= max(0.2 * ms, 40)

    for index in range(1, len(runs) - 1):
        (label, frames), (next_label, next_frames) = runs[index], runs[index + 1]
        if label < 0 or next_label >= 0 or not near(frames, on_ms):
            continue
        last = index + 1 == len(runs) - 1
        if near(next_frames, off_ms) or (last and next_frames * 20 >= off_ms * 0.8):
            return True
    return False


class Pbx:
    """Test-side handle: phones and lines by number, waits, tone checks, records."""

    def __init__(self, app: Appliance) -> None:
        self.app = app

    @property
    def sim(self):
        assert self.app.simulator is not None
        return self.app.simulator

    def phone(self, extension: str) -> SimPhone:
        config = self.app.config.extension(extension)
        assert config is not None, extension
        return self.sim.phones[config.port]

    def line(self, name: str) -> SimCityLine:
        config = next(line for line in self.app.config.lines if line.name == name)
        return self.sim.lines[config.port]

    def channel(self, number: str) -> Channel:
        assert self.app.calls is not None
        channel = self.app.calls.extension_channel(number) or self.app.calls.line_channel(number)
        assert channel is not None, number
        return channel

    async def wait_state(self, number: str, state: LegState, timeout: float = 3.0) -> None:
        channel = self.channel(number)
        await self.sim.wait_until(
            lambda: channel.state == state, timeout, f"{number} {state} (is {channel.state})"
        )

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """All calls over and every record written."""
        assert self.app.calls is not None
        calls = self.app.calls
        await self.sim.wait_until(lambda: not calls.sessions, timeout, "all calls finished")

    async def hears(
        self,
        phone: SimPhone | SimCityLine,
        tone: str | ToneSpec | tuple[float, ...],
        since: int | None = None,
        timeout: float = 3.0,
    ) -> bool:
        spec = self.app.plan.tone(tone) if isinstance(tone, str) else tone
        mark = phone.mark() if since is None else since
        return await wait_for_tone(phone, mark, spec, timeout) is not None  # type: ignore[arg-type]

    async def hears_cadence(
        self, port, tone: str, since: int | None = None, timeout: float = 3.0
    ) -> bool:
        """True once `port` heard `tone` with its frequency AND cadence (busy, congestion, hold)."""
        spec = self.app.plan.tone(tone)
        on_ms, off_ms = spec.cadence_ms[:2]
        detector = ToneDetector(spec)
        mark = port.mark() if since is None else since
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            heard = port.heard(mark)
            frames = heard.size // FRAME_SAMPLES
            if frames >= 2:
                labels = detector.classify(heard[: frames * FRAME_SAMPLES].reshape(frames, -1))
                if cadence_matches(labels.tolist(), on_ms, off_ms):
                    return True
            if loop.time() > deadline:
                return False
            await asyncio.sleep(TICK_S)

    async def speech_both_ways(self, a: SimPhone | SimCityLine, b: SimPhone | SimCityLine) -> None:
        mark = b.mark()
        a.say(make_tone(1004))
        assert await self.hears(b, (1004.0,), since=mark), "speech path one way"
        mark = a.mark()
        b.say(make_tone(1400))
        assert await self.hears(a, (1400.0,), since=mark), "speech path the other way"

    async def records(self, limit: int = 50) -> list[CallRecord]:
        assert self.app.cdr is not None
        return await self.app.cdr.async_recent(limit)

    async def last_record(self) -> CallRecord:
        await self.wait_idle()
        records = await self.records(1)
        assert records, "no call record"
        return records[0]


async def start_pbx(
    config_text: str, data_dir: Path, config_path: str | None = None, **kwargs: Any
) -> Pbx:
    config = parse_config(config_text, "<test>")
    app = Appliance(config, config_path, data_dir)
    await app.start(**kwargs)
    await app.wait_ready()
    return Pbx(app)


@pytest.fixture
def data_dir() -> AsyncIterator[Path]:
    path = Path(
        tempfile.mkdtemp(prefix="mpbx")
    )  # short: unix socket paths are limited to 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pbx_config() -> str:
    """Override in a test module to run the pbx fixture on another config."""
    return office_config()


@pytest.fixture
async def pbx(pbx_config: str, data_dir: Path) -> AsyncIterator[Pbx]:
    handle = await start_pbx(pbx_config, data_dir)
    try:
        yield handle
    finally:
        app = handle.app
        await app.stop()
        assert app.calls is not None
        assert not app.calls.sessions, f"calls left behind: {app.calls.calls_summary()}"
        assert app.calls.task_count == 0, "call tasks left running"
        leftover = [
            t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()
        ]
        assert not leftover, f"tasks left running: {leftover}"
