"""The DISA node kind: an outside caller keys a PIN, hears dial tone and dials as that user.

Toll-fraud protection, in the order a caller meets it: DISA exists only where an installer
made a node for it; a locked-out source hears "locked" before any PIN is asked for; the
PIN is compared in constant time against every user's; wrong PINs end the call after
`max_failures` and lock the source (its number, or the line or peer when it is withheld)
after `lockout_failures`, persisted in DATA_DIR/disa.sqlite3; the number dialled is
routed with the user's class of service, so a class without the line group refuses it.
Every attempt is logged (`event=disa_pin_ok|disa_pin_wrong|disa_locked`), never the PIN.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from firmware.calls.cdr import Disposition
from firmware.calls.channel import EventKind
from firmware.calls.dialplan import RouteKind
from firmware.calls.digitmap import MatchState
from firmware.config.menu_schema import DisaNode, DisaUser
from firmware.features.context import NodeContext
from firmware.features.disa_lockout import FILE_NAME, DisaLockouts, Limits

log = logging.getLogger("firmware.features")

T = TypeVar("T")

FEATURE = "disa"  # its key in ctx.calls.features
_REFUSAL_TONE_S = 2.0


def lockouts(ctx: NodeContext) -> DisaLockouts:
    """The one lock-out store of this call manager, made on first use."""
    store = ctx.calls.features.get(FEATURE)
    if store is None:
        data_dir = ctx.calls.data_dir
        if data_dir is None:
            log.warning("event=disa_lockouts_in_memory reason=no_data_dir")
        store = DisaLockouts(data_dir / FILE_NAME if data_dir is not None else None)
        ctx.calls.features[FEATURE] = store
    return store


def source_of(ctx: NodeContext) -> str:
    """Who is trying: the caller's number, or the line / SIP peer when it is withheld."""
    if ctx.shown.number:
        return ctx.shown.number
    return f"{ctx.caller.technology}:{ctx.caller.number}"


def user_for(pin: str, users: tuple[DisaUser, ...]) -> DisaUser | None:
    """The user whose PIN this is; every PIN is compared, each in constant time."""
    found: DisaUser | None = None
    keyed = pin.encode()
    for user in users:
        if hmac.compare_digest(keyed, user.pin.encode()):
            found = user
    return found


def _now() -> datetime:
    return datetime.now(UTC)


async def _stored(
    ctx: NodeContext, store: DisaLockouts, method: Callable[..., T], *args: object
) -> T:
    """One store operation; if the store fails, the caller gets no access (fail closed)."""
    try:
        return await store.run(method, *args)
    except (sqlite3.Error, OSError) as error:
        log.error(
            "event=disa_store_failed call=%d op=%s error=%r",
            ctx.session.id,
            method.__name__,
            str(error),
        )
        await ctx.play_prompts(["prompt:goodbye"])
        await ctx.end("congestion", Disposition.FAILED, "disa_store_failed")
        raise  # not reached: end raises CallEnded


async def _locked_out(ctx: NodeContext) -> None:
    """The caller hears "locked" and the call ends; no PIN is asked for."""
    await ctx.play_prompts(["prompt:pin_locked"])
    await ctx.end("congestion", Disposition.REJECTED, "disa_locked")


async def run(ctx: NodeContext, node: DisaNode) -> str:
    store = lockouts(ctx)
    source = source_of(ctx)
    call = ctx.session.id
    limits = Limits(node.lockout_failures, node.lockout_window_s, node.lockout_s,
                    node.lockout_failures_all)  # fmt: skip
    longest = max(len(user.pin) for user in node.users)
    await ctx.answer()
    failures = 0
    while True:
        until = await _stored(ctx, store, store.locked_until, node.name, source, _now())
        if until is not None:
            log.warning("event=disa_locked call=%d node=%s source=%s until=%s",
                        call, node.name, source, until.isoformat(timespec="seconds"))  # fmt: skip
            await _locked_out(ctx)
        await ctx.play_prompts(["prompt:enter_pin"], interruptible=True)
        pin = await ctx.collect_digits(
            node.pin_timeout_s, ctx.config.timers.inter_digit_s, max_digits=longest
        )
        if not pin:
            log.info("event=disa_no_pin call=%d node=%s source=%s", call, node.name, source)
            return await _failed(ctx, node)
        user = user_for(pin, node.users)
        if user is not None:
            await _stored(ctx, store, store.record_success, node.name, source, user.name, _now())
            log.info("event=disa_pin_ok call=%d node=%s source=%s user=%s",
                     call, node.name, source, user.name)  # fmt: skip
            await _dial_as(ctx, node, user)
        failures += 1
        verdict = await _stored(ctx, store, store.record_failure, node.name, source, _now(), limits)
        log.warning("event=disa_pin_wrong call=%d node=%s source=%s in_call=%d in_window=%d",
                    call, node.name, source, failures, verdict.failures)  # fmt: skip
        if verdict.source_locked or verdict.node_locked:
            log.warning("event=disa_locked call=%d node=%s source=%s reason=%s lockout_s=%d",
                        call, node.name, source,
                        "too_many_wrong_pins" if verdict.source_locked else "node_under_attack",
                        node.lockout_s)  # fmt: skip
            await _locked_out(ctx)
        await ctx.play_prompts(["prompt:pin_wrong"])
        ctx.pending_digits.clear()
        if failures >= node.max_failures:
            return await _failed(ctx, node)


async def _failed(ctx: NodeContext, node: DisaNode) -> str:
    """No good PIN in this call: `failed_to`, or "goodbye" and the end when it is ""."""
    if node.failed_to:
        return node.failed_to
    await ctx.play_prompts(["prompt:goodbye"])
    await ctx.end("congestion", Disposition.REJECTED, "disa_pin_failed")
    return ""  # not reached: end raises CallEnded


async def _dial_as(ctx: NodeContext, node: DisaNode, user: DisaUser) -> None:
    """Dial tone, a number as the dial plan completes it, routed with the user's class."""
    digits = await _collect_number(ctx)
    call = ctx.session.id
    if not digits:
        log.info("event=disa_no_number call=%d node=%s user=%s", call, node.name, user.name)
        await ctx.end("congestion", Disposition.ABANDONED, "disa_no_number")
    plan = ctx.calls.dialplan.route(None, digits, class_of_service=user.class_of_service)
    log.info("event=disa_dial call=%d node=%s user=%s dialled=%s route=%s reason=%s",
             call, node.name, user.name, digits, plan.kind, plan.reason or "-")  # fmt: skip
    if plan.kind == RouteKind.FEATURE:
        # Feature codes act on the phone that dials them; a DISA caller has none.
        await ctx.end("special_information", Disposition.REJECTED, "disa_feature_code")
    if plan.kind in (RouteKind.REJECTED, RouteKind.INVALID):
        # A line is released at once on refusal: let the caller hear why first.
        await _hear(ctx, "special_information", _REFUSAL_TONE_S)
    listen = getattr(ctx.caller, "listen_for_digits", None)
    if listen is not None:
        listen(False)  # from here the caller's keys travel in the audio, as on any call
    await ctx.dial(digits, class_of_service=user.class_of_service)


async def _hear(ctx: NodeContext, sound: str, seconds: float) -> None:
    """`sound` for `seconds` (the caller hanging up meanwhile ends the call)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    ctx.play(sound)
    while await ctx.next_event(max(deadline - loop.time(), 0)) is not None:
        pass


async def _collect_number(ctx: NodeContext) -> str:
    """Digits after dial tone until the dial plan says complete (or a pause, or '#')."""
    timers = ctx.config.timers
    dialplan = ctx.calls.dialplan
    loop = asyncio.get_running_loop()
    ctx.pending_digits.clear()
    ctx.play("dial")
    digits = ""
    deadline = loop.time() + timers.first_digit_s
    while True:
        item = await ctx.next_event(max(deadline - loop.time(), 0))
        if item is None:
            return digits
        channel, event = item
        if channel is not ctx.caller or event.kind != EventKind.DIGIT:
            continue
        ctx.stop_sound()
        if event.value == "#" and digits and dialplan.match(digits).state == MatchState.AMBIGUOUS:
            return digits
        digits += event.value
        if dialplan.match(digits).state in (MatchState.COMPLETE, MatchState.NO_MATCH):
            return digits
        deadline = loop.time() + timers.inter_digit_s
