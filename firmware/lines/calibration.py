"""`minipbx line calibrate`: call out on a city line and learn its disconnect tone.

The procedure runs in the core, on the real line: it takes the idle line out of call
control's hands, seizes it, waits for dial tone (as the line's config says), dials a number
that answers busy or congestion (or a party who answers and hangs up), records what the
line says for some seconds through the mixer while sending a short noise probe for the
echo path, gives the line back, and hands the recording to `firmware.media.calibrate`
(in a worker thread: it is a fraction of a second of numpy, still not for the event loop).
Nothing is written here: the CLI shows the result and, with `--write`, stores it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState
from firmware.media.calibrate import CalibrationError, analyse_recording, probe_signal
from firmware.media.mixer import Mixer

if TYPE_CHECKING:
    from firmware.app import Appliance

log = logging.getLogger(__name__)

PROBE_SOUND = "calibration_probe"
PROBE_SECONDS = 2.0
PROBE_AFTER_S = 1.0  # after dialling: the exchange's tone has started by then
MIN_SECONDS, MAX_SECONDS = 4.0, 120.0
_DIAL_DONE_WAIT_S = 60.0
_NO_DIAL_TONE_WAIT_S = 1.0


async def calibrate_line(
    channel: Channel,
    mixer: Mixer,
    number: str,
    *,
    seconds: float = 12.0,
    probe: bool = True,
    wait_for_dial_tone: bool = True,
    dial_tone_wait_s: float = 3.0,
) -> dict[str, Any]:
    """Run the procedure on an idle FXO channel; the analysis as JSON (see module doc)."""
    if not re.fullmatch(r"[0-9*#,]{1,32}", number):
        raise CalibrationError(f"number {number!r}: dial digits 0-9 * # (and ',' for a pause)")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise CalibrationError(f"seconds must be {MIN_SECONDS:g}-{MAX_SECONDS:g}, got {seconds:g}")
    if channel.state != LegState.IDLE:
        raise CalibrationError(
            f"line {channel.number or channel.name} is {channel.state}: calibrate an idle line"
        )
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    call_control = channel.handler
    channel.handler = lambda _channel, event: events.put_nowait(event)
    said: list[np.ndarray] = []
    sent: list[np.ndarray] = []
    log.info("event=line_calibration_started line=%s number=%s", channel.name, number)
    try:
        channel.set_state(LegState.DIALLING)
        await channel.seize()
        if wait_for_dial_tone:
            listen = getattr(channel, "listen_for_dial_tone", None)
            if listen is not None:
                listen()
            if not await _wait_for(events, EventKind.DIAL_TONE, dial_tone_wait_s):
                raise CalibrationError(
                    f"no dial tone on line {channel.number or channel.name} within "
                    f"{dial_tone_wait_s:g} s: check the line is connected"
                )
        else:
            await asyncio.sleep(_NO_DIAL_TONE_WAIT_S)
        await channel.dial(number)
        if not await _wait_for(events, EventKind.DIAL_DONE, _DIAL_DONE_WAIT_S):
            raise CalibrationError("the line card did not finish dialling")
        assert channel.slot is not None
        recording = mixer.start_recording(channel.slot, echo_cancelled=False)  # the echo is measured
        if probe:
            await asyncio.sleep(PROBE_AFTER_S)
            if PROBE_SOUND not in mixer.sounds:
                mixer.sounds.add(PROBE_SOUND, probe_signal(PROBE_SECONDS), loop=False)
            channel.play(PROBE_SOUND)
            await asyncio.sleep(seconds - PROBE_AFTER_S)
        else:
            await asyncio.sleep(seconds)
        said, sent = recording.said, recording.heard
    finally:
        if channel.slot is not None:
            mixer.stop_recording(channel.slot)
        channel.stop_sound()
        await channel.release("calibration")
        if channel.state not in (LegState.IDLE, LegState.OUT_OF_SERVICE):
            channel.set_state(LegState.IDLE)
        channel.handler = call_control
    line_audio = np.concatenate(said) if said else np.zeros(0, dtype=np.int16)
    our_audio = np.concatenate(sent) if sent and probe else None
    result = await asyncio.to_thread(analyse_recording, line_audio, our_audio)
    log.info(
        "event=line_calibration_done line=%s tone=%s noise_dbm0=%.1f",
        channel.name,
        result.indication,
        result.noise_floor_dbm0,
    )
    return result.to_json()


async def _wait_for(events: asyncio.Queue[ChannelEvent], kind: EventKind, timeout: float) -> bool:
    """True once an event of ``kind`` arrives; a far-end clearing before it is a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (remaining := deadline - loop.time()) > 0:
        try:
            event = await asyncio.wait_for(events.get(), remaining)
        except TimeoutError:
            return False
        if event.kind == kind:
            return True
        if event.kind == EventKind.OUT_OF_SERVICE:
            raise CalibrationError(f"the line went out of service ({event.value})")
    return False


async def calibrate_configured_line(
    app: Appliance, line_name: str, number: str, *, seconds: float = 12.0, probe: bool = True
) -> dict[str, Any]:
    """The control API's `line_calibrate`: the named `[[lines]]` entry of the running core."""
    line = next((entry for entry in app.config.lines if entry.name == line_name), None)
    if line is None:
        known = ", ".join(entry.name for entry in app.config.lines) or "none configured"
        raise CalibrationError(f"no city line named {line_name!r} (lines: {known})")
    assert app.calls is not None
    channel = app.calls.line_channel(line_name)
    if channel is None or channel.technology != "fxo":
        raise CalibrationError(f"line {line_name!r} has no FXO port in service")
    result = await calibrate_line(
        channel,
        app.mixer,
        number,
        seconds=seconds,
        probe=probe,
        wait_for_dial_tone=line.wait_for_dial_tone,
        dial_tone_wait_s=app.config.timers.fxo_dial_tone_wait_s,
    )
    return {"line": line_name, "number": number} | result
