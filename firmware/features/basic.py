"""The simple node kinds: ring extensions, an outside number, an announcement, mode switch."""

from __future__ import annotations

import logging

from firmware.calls.cdr import Disposition
from firmware.config.routing_schema import (
    AnnouncementNode,
    ExtensionNode,
    ExternalNode,
    ModeSwitchNode,
)
from firmware.features.context import NodeContext

log = logging.getLogger("firmware.features")


async def ring_extensions(
    ctx: NodeContext, numbers: tuple[str, ...], ring_s: float, then: str
) -> str:
    """Ring these extensions together; answered: connected (never returns), else `then`."""
    if ctx.draft.called_extension is None and numbers:
        ctx.draft.called_extension = numbers[0]
    callees = ctx.ringable(numbers)
    answered = await ctx.ring(callees, ring_s) if callees else None
    if answered is not None:
        await ctx.connect(answered)
    return then


async def run_extension(ctx: NodeContext, node: ExtensionNode) -> str:
    return await ring_extensions(ctx, node.extensions, node.ring_s, node.then)


async def run_external(ctx: NodeContext, node: ExternalNode) -> str:
    """An outside number the installer configured: dialled with no class of service."""
    await ctx.dial(node.dial, class_of_service=None, unrestricted=True)
    return node.then  # not reached: dial ends the call


async def run_announcement(ctx: NodeContext, node: AnnouncementNode) -> str:
    await ctx.answer()
    await ctx.play_prompts([f"prompt:{node.prompt}"] * node.repeat)
    if not node.then:
        await ctx.end("congestion", Disposition.ANSWERED, f"announcement:{node.prompt}")
    return node.then


async def run_mode_switch(ctx: NodeContext, node: ModeSwitchNode) -> str:
    mode = ctx.mode()
    seen: set[str] = set()
    while mode is not None and mode not in node.modes and mode not in seen:
        seen.add(mode)  # e.g. lunch -> night when the switch has no lunch entry
        mode = ctx.config.modes.fallback_of(mode)
    destination = node.modes.get(mode, node.otherwise) if mode is not None else node.otherwise
    log.info("event=mode_switch call=%d node=%s mode=%s to=%s", ctx.session.id, node.name, mode, destination or "-")
    ctx.draft.mode = ctx.draft.mode or ctx.mode()
    return destination


async def unanswered(ctx: NodeContext) -> None:
    """Nowhere left to go: the closing announcement, then the call ends."""
    await ctx.answer()
    await ctx.play_prompts([f"prompt:{ctx.config.routing.unanswered_prompt}"])
    await ctx.end("congestion", Disposition.ANSWERED, "unanswered")
