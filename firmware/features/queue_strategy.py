"""Which queue agent rings first: the four strategies as one pure function.

The queue service knows who is free; this decides the order among them, so each strategy
is a plain table test with no calls and no clock.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

STRATEGIES = ("ring_all", "longest_idle", "fewest_calls", "round_robin")


def agent_order(
    strategy: str,
    agents: Sequence[str],
    free: Collection[str],
    *,
    last_end: Mapping[str, float],
    calls: Mapping[str, int],
    last_answered: str | None,
) -> list[str]:
    """The free agents in the order they should be offered the call.

    `agents`: the queue's agents in configured order; `last_end`: when each agent's last
    queue call ended (an agent with none has been idle longest); `calls`: queue calls each
    took today; `last_answered`: who answered this queue last (round robin starts after).
    Ties keep the configured order. ring_all rings them all together, in this order too.
    """
    candidates = [agent for agent in agents if agent in free]
    if strategy == "ring_all":
        return candidates
    if strategy == "longest_idle":
        return sorted(candidates, key=lambda agent: last_end.get(agent, -math.inf))
    if strategy == "fewest_calls":
        return sorted(
            candidates, key=lambda agent: (calls.get(agent, 0), last_end.get(agent, -math.inf))
        )
    if strategy == "round_robin":
        start = agents.index(last_answered) + 1 if last_answered in agents else 0
        rotated = [*agents[start:], *agents[:start]]
        return [agent for agent in rotated if agent in free]
    raise ValueError(f"unknown queue strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
