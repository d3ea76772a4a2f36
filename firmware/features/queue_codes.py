"""Queue agents log in and out by feature code.

``queue_login`` / ``queue_logout`` (e.g. ``*45`` / ``*46`` in `[feature_codes]`) act on
every queue the dialling extension is an agent of; ``queue_login_NAME`` /
``queue_logout_NAME`` on the queue NAME only. The agent hears confirmation beeps; an
extension that is no agent of such a queue hears the special information tone. The state
is kept across restarts (see `QueueService`).
"""

from __future__ import annotations

import logging

from firmware.calls.cdr import Disposition
from firmware.config.queue_schema import QueueNode
from firmware.features import feature_codes
from firmware.features.context import NodeContext
from firmware.features.queue_service import queue_service

log = logging.getLogger("firmware.features")

LOGIN = "queue_login"
LOGOUT = "queue_logout"


def queues_of(ctx: NodeContext, queue_name: str | None) -> list[QueueNode]:
    """The queues the caller is an agent of (only `queue_name`, when given)."""
    return [
        node
        for node in ctx.config.routing.nodes
        if isinstance(node, QueueNode)
        and ctx.caller.number in node.agents
        and (queue_name is None or node.name == queue_name)
    ]


async def log_in_or_out(ctx: NodeContext, feature: str) -> None:
    logging_in = feature.startswith(LOGIN)
    queue_name = feature.removeprefix(LOGIN if logging_in else LOGOUT).removeprefix("_") or None
    nodes = queues_of(ctx, queue_name)
    if not nodes:
        log.warning("event=queue_login_refused call=%d extension=%s feature=%s reason=not_an_agent",
                    ctx.session.id, ctx.caller.number, feature)  # fmt: skip
        await ctx.end("special_information", Disposition.REJECTED, "queue_not_an_agent")
        return
    service = await queue_service(ctx.calls)
    for node in nodes:
        service.set_logged_in(node.name, ctx.caller.number, logging_in)
    cause = LOGIN if logging_in else LOGOUT
    log.info("event=%s call=%d extension=%s queues=%s", cause, ctx.session.id, ctx.caller.number,
             ",".join(node.name for node in nodes))  # fmt: skip
    ctx.draft.answered()  # by the exchange: without an answer time the record would say failed
    await ctx.end("confirmation", Disposition.ANSWERED, cause)


for _name in (LOGIN, LOGOUT, LOGIN + "_", LOGOUT + "_"):
    feature_codes.register(_name, log_in_or_out)
