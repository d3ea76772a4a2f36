"""The menu (IVR) node kind: a greeting, then a key, or an extension dialled straight through.

The caller may key during the greeting: the first key stops it. A key that cannot start an
extension number (or any key, without dial-through) selects at once. A key that is also
the first digit of an extension number waits `inter_digit_s` for a second digit: none
means the key, more digits an extension number. `decide` holds every rule as a pure
function of the digits so far; `run` feeds it the caller's keys and the clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from firmware.calls.channel import EventKind
from firmware.config.menu_schema import MenuNode
from firmware.config.node_fields import is_node_name
from firmware.config.schema import Config
from firmware.features.context import NodeContext

log = logging.getLogger("firmware.features")

_TERMINATOR = "#"  # ends a dialled-through number early (a lone '#' is a key)


class Choice(StrEnum):
    WAIT = "wait"  # more digits may come: wait the inter-digit time
    KEY = "key"
    NUMBER = "number"
    INVALID = "invalid"


@dataclass(frozen=True)
class Decision:
    choice: Choice
    digits: str = ""


def decide(
    digits: str, keys: Collection[str], numbers: Collection[str], *, final: bool
) -> Decision:
    """What the caller's `digits` mean so far.

    `numbers` are what may be dialled through (empty without dial-through); `final` says no
    more digits come (the inter-digit time passed, or the caller keyed '#')."""
    longer = any(len(number) > len(digits) and number.startswith(digits) for number in numbers)
    if len(digits) == 1 and digits in keys:
        return Decision(Choice.WAIT) if longer and not final else Decision(Choice.KEY, digits)
    if digits in numbers and (final or not longer):
        return Decision(Choice.NUMBER, digits)
    if longer and not final:
        return Decision(Choice.WAIT)
    return Decision(Choice.INVALID, digits)


def dial_through_numbers(config: Config, node: MenuNode) -> dict[str, str]:
    """Number -> destination for dial-through: this site's extensions and node numbers."""
    if not node.dial_through:
        return {}
    numbers = {extension.number: extension.number for extension in config.extensions}
    for other in config.routing.nodes:
        if other.number and other.name != node.name:
            numbers[other.number] = other.name
    return numbers


async def _choose(ctx: NodeContext, node: MenuNode, numbers: Mapping[str, str]) -> Decision | None:
    """The caller's choice, starting with any key pressed during the greeting; None when no
    key came within `timeout_s`."""
    loop = asyncio.get_running_loop()
    inter_digit = node.inter_digit_s or ctx.config.timers.inter_digit_s
    digits = ""
    waiting = list(ctx.pending_digits)
    ctx.pending_digits.clear()
    deadline = loop.time() + node.timeout_s
    while True:
        if waiting:
            key = waiting.pop(0)
        else:
            item = await ctx.next_event(max(deadline - loop.time(), 0))
            if item is None:
                if not digits:
                    return None
                return decide(digits, node.keys, numbers, final=True)
            channel, event = item
            if channel is not ctx.caller or event.kind != EventKind.DIGIT:
                continue
            key = event.value
        ctx.stop_sound()
        if key == _TERMINATOR and digits:
            return decide(digits, node.keys, numbers, final=True)
        digits += key
        decision = decide(digits, node.keys, numbers, final=False)
        if decision.choice != Choice.WAIT:
            return decision
        deadline = loop.time() + inter_digit


def _going_to(ctx: NodeContext, destination: str) -> str:
    """Extensions are about to ring: the caller, answered already, hears ringback meanwhile."""
    if destination and not is_node_name(destination):
        ctx.play("ringback")
    return destination


async def run(ctx: NodeContext, node: MenuNode) -> str:
    await ctx.answer()
    numbers = dial_through_numbers(ctx.config, node)
    call = ctx.session.id
    invalid = 0
    while True:
        await ctx.play_prompts([f"prompt:{node.greeting}"], interruptible=True)
        decision = await _choose(ctx, node, numbers)
        if decision is None:
            log.info(
                "event=menu_timeout call=%d node=%s to=%s", call, node.name, node.timeout_to or "-"
            )
            return _going_to(ctx, node.timeout_to)
        if decision.choice == Choice.KEY:
            destination = node.keys[decision.digits]
            log.info(
                "event=menu_key call=%d node=%s key=%s to=%s",
                call,
                node.name,
                decision.digits,
                destination or "-",
            )
            return _going_to(ctx, destination)
        if decision.choice == Choice.NUMBER:
            destination = numbers[decision.digits]
            log.info(
                "event=menu_dial_through call=%d node=%s number=%s to=%s",
                call,
                node.name,
                decision.digits,
                destination,
            )
            return _going_to(ctx, destination)
        invalid += 1
        log.info(
            "event=menu_invalid call=%d node=%s keyed=%s count=%d",
            call,
            node.name,
            decision.digits,
            invalid,
        )
        ctx.stop_sound()
        await ctx.play_prompts([f"prompt:{node.invalid_prompt}"])
        ctx.pending_digits.clear()  # keys pressed over "invalid option" are not a new choice
        if invalid >= node.max_invalid:
            log.info(
                "event=menu_invalid_limit call=%d node=%s to=%s",
                call,
                node.name,
                node.invalid_to or "-",
            )
            return _going_to(ctx, node.invalid_to)
