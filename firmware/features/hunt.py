"""The hunt node kind (stub until its feature lands): the caller goes on to `then`."""

from __future__ import annotations

import logging
from typing import Any

from firmware.features.context import NodeContext

log = logging.getLogger("firmware.features")


async def run(ctx: NodeContext, node: Any) -> str:
    log.error("event=node_kind_not_available kind=hunt node=%s", node.name)
    return ""
