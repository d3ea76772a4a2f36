"""Installer diagnostics run inside the core against the simulated line card.

`selftest_call` takes two simulated handsets through a whole call and measures what a
person would notice: how fast dial tone comes, how fast the other phone rings, and whether
speech passes both ways (a test tone sent each way and detected at the other end).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware.calls.lifecycle import LegState
from firmware.media.detect import find_tone_onset
from firmware.media.mixer import FRAME_SAMPLES, TICK_S
from firmware.media.tones import ToneSpec, render_tone
from firmware.simcontrol import phone_for

if TYPE_CHECKING:
    from firmware.app import Appliance
    from firmware.lines.simulator import SimPhone

FORWARD_HZ = 1004.0
BACKWARD_HZ = 1400.0


async def wait_for_tone(
    phone: SimPhone, since: int, frequencies: Any, timeout: float
) -> float | None:
    """Monotonic time of the first frame after `since` that carries the tone, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heard = phone.heard(since)
        onset = None
        if heard.size >= 2 * FRAME_SAMPLES:
            onset = find_tone_onset(heard, frequencies, min_consecutive_frames=2)
        if onset is not None:
            frame = since + round(onset / TICK_S)
            return phone.audio.stamp(frame)
        await asyncio.sleep(TICK_S)
    return None


def test_tone(frequency: float, duration_ms: int = 400) -> np.ndarray:
    return render_tone(ToneSpec.continuous((frequency,), -10.0), duration_ms)


async def selftest_call(app: Appliance, ext_a: str, ext_b: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    problems: list[str] = []
    phone_a, phone_b = phone_for(app, ext_a), phone_for(app, ext_b)
    assert app.calls is not None
    channel_a = app.calls.extension_channel(ext_a)
    channel_b = app.calls.extension_channel(ext_b)
    if channel_a is None or channel_b is None:
        return {
            "passed": False,
            "problems": ["both extensions must be on the line card"],
            "figures": {},
        }
    for name, channel in ((ext_a, channel_a), (ext_b, channel_b)):
        if channel.state != LegState.IDLE:
            return {
                "passed": False,
                "problems": [f"{name} is {channel.state}, not idle"],
                "figures": {},
            }

    def fail(problem: str) -> dict[str, Any]:
        problems.append(problem)
        return {"passed": False, "problems": problems, "figures": figures}

    try:
        mark = phone_a.mark()
        lifted = time.monotonic()
        phone_a.off_hook()
        heard_at = await wait_for_tone(phone_a, mark, app.plan.dial, 3.0)
        if heard_at is None:
            return fail(f"{ext_a} heard no dial tone within 3 s")
        figures["offhook_to_dial_tone_ms"] = round((heard_at - lifted) * 1000, 1)

        await phone_a.dial(ext_b, inter_digit_s=0.08)
        last_digit = time.monotonic()
        try:
            ringing = await phone_b.wait_ringing(3.0)
        except TimeoutError:
            return fail(f"{ext_b} did not ring within 3 s of the last digit")
        figures["last_digit_to_ringing_ms"] = round((ringing.started_at - last_digit) * 1000, 1)
        if ringing.caller_number != ext_a:
            problems.append(f"{ext_b} showed caller {ringing.caller_number!r}, expected {ext_a}")

        mark = phone_a.mark()
        if await wait_for_tone(phone_a, mark, app.plan.ringback, 6.0) is None:
            problems.append(f"{ext_a} heard no ringback tone")

        answered = time.monotonic()
        phone_b.off_hook()
        await app.simulator.wait_until(  # type: ignore[union-attr]
            lambda: channel_a.state == LegState.CONNECTED and channel_b.state == LegState.CONNECTED,
            2.0,
            "both phones connected",
        )
        figures["answer_to_connected_ms"] = round((time.monotonic() - answered) * 1000, 1)

        for talker, listener, frequency, label in (
            (phone_a, phone_b, FORWARD_HZ, f"{ext_a}->{ext_b}"),
            (phone_b, phone_a, BACKWARD_HZ, f"{ext_b}->{ext_a}"),
        ):
            mark = listener.mark()
            sent = time.monotonic()
            talker.say(test_tone(frequency))
            arrived = await wait_for_tone(listener, mark, (frequency,), 2.0)
            if arrived is None:
                problems.append(f"speech path {label}: {frequency:.0f} Hz test tone not heard")
            else:
                figures[f"speech_{label}_ms"] = round((arrived - sent) * 1000, 1)
            await asyncio.sleep(0.45)

        mark = phone_b.mark()
        phone_a.on_hook()
        if await wait_for_tone(phone_b, mark, app.plan.busy, 3.0) is None:
            problems.append(f"{ext_b} heard no busy tone after {ext_a} hung up")
    finally:
        if phone_a.off_hook_state:
            phone_a.on_hook()
        if phone_b.off_hook_state:
            phone_b.on_hook()
        await app.simulator.wait_until(  # type: ignore[union-attr]
            lambda: channel_a.state == LegState.IDLE and channel_b.state == LegState.IDLE,
            3.0,
            "phones idle",
        )

    assert app.cdr is not None
    records = await app.cdr.async_recent(1)
    if not records or records[0].caller_number != ext_a or records[0].answered_extension != ext_b:
        problems.append("no call record for the test call")
    else:
        figures["cdr_disposition"] = str(records[0].disposition)
        figures["cdr_billable_s"] = round(records[0].billable_s, 2)
    return {"passed": not problems, "problems": problems, "figures": figures}
