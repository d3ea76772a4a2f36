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
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

FULL_PASS_EVERY = 100  # middle-generation passes per full pass (CPython's default: 10)
_done = False


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
