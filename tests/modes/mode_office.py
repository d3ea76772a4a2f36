"""Shared by the mode tests: an office config with a weekly schedule, and a fake clock.

Lisbon is UTC+0 in winter and UTC+1 in summer; in 2026 summer time starts on Sunday
29 March at 01:00 UTC (01:00 -> 02:00 local) and ends on Sunday 25 October at 01:00 UTC
(02:00 -> 01:00 local). 2026-06-05 is a Friday; 2026-06-10 (Wednesday) is Portugal Day;
2026-06-13 (Saturday) is Saint Anthony's Day, a holiday of Lisbon only.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from firmware.config.load import default_config_text, parse_config
from firmware.config.schema import Config

WEEK = """
[[modes.schedule]]
days = "mon-fri"
from = "08:30"
to = "12:30"
mode = "day"

[[modes.schedule]]
days = "mon-fri"
from = "12:30"
to = "14:00"
mode = "lunch"

[[modes.schedule]]
days = ["mon", "tue", "wed", "thu", "fri"]
from = "14:00"
to = "18:00"
mode = "day"

[[modes.schedule]]
days = "sat"
from = "09:00"
to = "13:00"
mode = "day"
"""


def office(modes: str = 'country = "PT"', schedule: str = WEEK, extra: str = "") -> Config:
    """The embedded default office (Europe/Lisbon, operator 201) with this [modes] section."""
    return parse_config(default_config_text() + f"\n[modes]\n{modes}\n{schedule}\n{extra}")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class FakeTime:
    """A clock and a sleeper for ModeService: each sleep parks until the test advances."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.requested: list[float] = []
        self._sleep_started = start
        self._waiter: asyncio.Future[None] | None = None
        self._parked = asyncio.Event()

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.requested.append(seconds)
        self._sleep_started = self.now
        self._waiter = asyncio.get_running_loop().create_future()
        self._parked.set()
        await self._waiter

    async def advance_to(self, target: datetime) -> None:
        """Wake the service each time its sleep is over, until the clock reads `target`."""
        while True:
            await asyncio.wait_for(self._parked.wait(), 5)
            wake = self._sleep_started + timedelta(seconds=self.requested[-1])
            if wake > target:
                self.now = target
                return
            self.now = wake
            self._parked.clear()
            assert self._waiter is not None
            self._waiter.set_result(None)

    async def advance(self, seconds: float) -> None:
        await self.advance_to(self.now + timedelta(seconds=seconds))
