"""Runs a call through the routing graph: node after node until someone answers or it ends.

Each node kind is a coroutine `run(ctx, node) -> next destination` in its own module; the
runner looks the kind up, counts hops (a guard behind the config's loop check), and turns
a destination that is a list of extensions or "" into ringing or the closing announcement.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from firmware.calls.cdr import Disposition
from firmware.config.node_fields import extension_numbers, is_node_name
from firmware.features import basic, disa, hunt, menu, mode_codes, queue
from firmware.features.context import NodeContext

log = logging.getLogger("firmware.features")

NodeRunner = Callable[[NodeContext, Any], Awaitable[str]]

__all__ = ["RUNNERS", "mode_codes", "run_destination"]  # mode_codes: registers its feature codes

RUNNERS: dict[str, NodeRunner] = {
    "extension": basic.run_extension,
    "external": basic.run_external,
    "announcement": basic.run_announcement,
    "mode_switch": basic.run_mode_switch,
    "hunt_group": hunt.run,
    "queue": queue.run,
    "menu": menu.run,
    "disa": disa.run,
}


async def run_destination(ctx: NodeContext, destination: str) -> None:
    """Follow `destination` until the call is connected or over (always raises CallEnded)."""
    routing = ctx.config.routing
    hops = 0
    while True:
        hops += 1
        if hops > routing.max_hops:
            log.error("event=routing_hop_limit call=%d at=%s", ctx.session.id, destination)
            await ctx.end("congestion", Disposition.FAILED, "routing_loop")
        if not destination:
            await basic.unanswered(ctx)
        if not is_node_name(destination):
            destination = await basic.ring_extensions(
                ctx, extension_numbers(destination), ctx.config.timers.ring_timeout_s, ""
            )
            continue
        node = routing.node(destination)
        if node is None:  # a reload removed it while the call was on its way
            log.error("event=routing_node_missing call=%d node=%s", ctx.session.id, destination)
            await basic.unanswered(ctx)
        ctx.session.node_kind = node.kind
        ctx.calls._log_call("call_node", {"call": ctx.session.id, "node": node.name, "kind": node.kind})
        if ctx.draft.destination_kind is None:
            ctx.draft.destination_kind = node.kind
        destination = await RUNNERS[node.kind](ctx, node)
