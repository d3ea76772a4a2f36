"""How the garbage collector runs once the appliance has started: start-up heap frozen,
full passes rarer.

Why: CPython's cyclic collector stops the whole process for a full pass, and a pass walks
every object it tracks. Under SIP load (100 calls/s of 5 s calls: ~500 calls up, thousands
of transactions waiting out their 32 s timers) that was 70-290 ms per pass, long enough
for the 20 ms mixer clock to fall more than five ticks behind and drop frames for every
leg. Measured with `bench/sip/gc_pauses.py`, the passes during such a load freed nothing
at all (`collected` 0 in every generation): the appliance's garbage goes by reference
counting; the collector is there for the rare cycle (a traceback, a closure that holds
its owner).

So, once start-up is done:

- `gc.freeze()`: the ~50,000 objects of imports, configuration and the mixer live until
  the process ends; frozen, no pass walks them again (a full pass over the idle heap
  alone took 11 ms).
- The third threshold goes from 10 to 100: a full pass waits for 100 passes of the middle
  generation instead of 10. Full passes get ten times rarer, not shorter; cyclic garbage
  still gets collected, only later, and the first two generations run as before.

Called once per process (`settle_after_start`); a second call does nothing, so test
processes that start many services freeze only once.

When a load has passed (the SIP stack has no transaction left), `after_load` runs the full
pass that was put off, now cheap, and asks glibc to hand its free heap pages back
(`malloc_trim(0)`): without it the pages freed by the calls' messages stayed in the
process (`bench/sip/memory.py` measures both). At most once a minute, so a site with a
call now and then, or phones on TCP whose transactions end at once, does not pay it often.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

FULL_PASS_EVERY = 100  # middle-generation passes per full pass (CPython's default: 10)
RELEASE_INTERVAL_S = 60.0  # at most one after_load() a minute
_done = False
_last_release = float("-inf")


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_malloc_trim = _find_malloc_trim()


def settle_after_start() -> None:
    """Freeze what start-up built and make full passes rarer (once per process)."""
    global _done
    if _done:
        return
    _done = True
    gc.collect()
    gc.freeze()
    young, middle, _old = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_PASS_EVERY)
    log.info(
        "event=gc_settled frozen=%d thresholds=%s", gc.get_freeze_count(), gc.get_threshold()
    )


def release_due_in(now: float | None = None) -> float:
    """Seconds until after_load() may run again (0: now)."""
    now = time.monotonic() if now is None else now
    return max(0.0, _last_release + RELEASE_INTERVAL_S - now)


def after_load() -> bool:
    """Collect cycles and give free heap pages back; False when the last time was too recent."""
    global _last_release
    now = time.monotonic()
    if release_due_in(now) > 0:
        return False
    _last_release = now
    collected = gc.collect()
    trimmed = bool(_malloc_trim(0)) if _malloc_trim is not None else False
    log.debug("event=gc_after_load collected=%d trimmed=%s", collected, trimmed)
    return True
