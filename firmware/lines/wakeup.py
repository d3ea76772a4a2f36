"""Sleep until a deadline or until poked: the link supervisors' idle loop.

The line-card driver and the card simulator used to look at their link every 10-20 ms
whether or not anything was due: 150 wake-ups a second of an idle appliance (about 1 % of
a core with nothing to do). They now sleep until the link's next retransmission, heartbeat
or silence check, and sending pokes them (a new frame may be due sooner than that).
"""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    def __init__(self) -> None:
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """End the current (or the next) sleep now."""
        self._poked.set()

    async def sleep(self, seconds: float) -> None:
        """Up to `seconds`; at once if poked since the last sleep (a poke is never lost)."""
        if not self._poked.is_set() and seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._poked.wait()
        self._poked.clear()
