"""Scripting the simulated line card from the control API (and so from `minipbx sim`)."""

from __future__ import annotations

import asyncio
import wave
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware.media.mixer import TICK_S
from firmware.media.tones import ToneSpec, render_tone

if TYPE_CHECKING:
    from firmware.app import Appliance
    from firmware.lines.simulator import SimCityLine, SimPhone, SimPort


class SimError(ValueError):
    pass


def phone_for(app: Appliance, target: str) -> SimPhone:
    """A simulated phone by extension number or by port number ('p3')."""
    sim = app.simulator
    if sim is None:
        raise SimError("the line card is real hardware: there is no simulator to script")
    if target.startswith("p") and target[1:].isdigit():
        port = int(target[1:])
    else:
        extension = app.config.extension(target)
        if extension is None:
            raise SimError(f"no extension {target}")
        port = extension.port
    phone = sim.phones.get(port)
    if phone is None:
        raise SimError(f"port {port} is not a simulated FXS port")
    return phone


def port_for(app: Appliance, target: str) -> SimPort:
    """A phone by extension number or pN, else a city line by name."""
    try:
        return phone_for(app, target)
    except SimError:
        return line_for(app, target)


def _write_wav(path: str, samples: np.ndarray) -> None:
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.astype(np.int16).tobytes())


def line_for(app: Appliance, target: str) -> SimCityLine:
    sim = app.simulator
    if sim is None:
        raise SimError("the line card is real hardware: there is no simulator to script")
    line_config = next((line for line in app.config.lines if line.name == target), None)
    port = line_config.port if line_config else int(target) if target.isdigit() else -1
    line = sim.lines.get(port)
    if line is None:
        raise SimError(f"no simulated city line {target!r}")
    return line


async def sim_command(app: Appliance, request: dict[str, Any]) -> dict[str, Any]:
    action = str(request.get("action"))
    target = str(request.get("target", ""))
    if action == "offhook":
        phone_for(app, target).off_hook()
    elif action == "onhook":
        phone_for(app, target).on_hook()
    elif action == "flash":
        phone_for(app, target).flash()
    elif action == "dial":
        await phone_for(app, target).dial(str(request["digits"]))
    elif action == "ring":
        try:
            line_for(app, target).ring(str(request.get("number", "")), str(request.get("name", "")))
        except RuntimeError as error:
            raise SimError(str(error)) from None
    elif action == "hangup":
        line_for(app, target).hang_up(str(request.get("method", "loop_current")))
    elif action == "say":
        port = port_for(app, target)
        frequency = float(request.get("frequency", 1004.0))
        duration_ms = int(request.get("ms", 1000))
        if not (50 <= frequency <= 3900 and 20 <= duration_ms <= 60_000):
            raise SimError("say needs 50-3900 Hz and 20-60000 ms")
        port.say(render_tone(ToneSpec.continuous((frequency,), -10.0), duration_ms))
    elif action == "capture":
        port = port_for(app, target)
        seconds = float(request.get("seconds", 5.0))
        path = str(request["path"])
        frames = int(seconds / TICK_S)
        samples = port.heard(port.mark() - frames)
        await asyncio.to_thread(_write_wav, path, samples)
        return {"sim": sim_state(app), "captured": path, "samples": int(samples.size)}
    elif action == "unplug":
        _card(app).unplug()
    elif action == "plug":
        _card(app).plug()
    elif action == "state":
        pass
    else:
        raise SimError(
            f"unknown sim action {action!r}: offhook, onhook, flash, dial, ring, hangup, say, capture, unplug, plug, state"
        )
    return {"sim": sim_state(app)}


def _card(app: Appliance):
    if app.simulator is None:
        raise SimError("no simulator")
    return app.simulator


def sim_state(app: Appliance) -> dict[str, Any]:
    sim = _card(app)
    return {
        "connected": sim.connected,
        "unplugged": sim.unplugged,
        "phones": {
            str(port): {
                "off_hook": phone.off_hook_state,
                "ringing": phone.ringing is not None,
                "caller": list(
                    (phone.ringing and (phone.ringing.caller_number, phone.ringing.caller_name))
                    or ()
                ),
            }
            for port, phone in sim.phones.items()
        },
        "lines": {
            str(port): {
                "seized": line.seized,
                "call": line.call.direction if line.call else None,
                "dialled": line.calls_dialled[-5:],
            }
            for port, line in sim.lines.items()
        },
    }
