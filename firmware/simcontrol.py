"""Scripting the simulated line card from the control API (and so from `minipbx sim`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware.app import Appliance
    from firmware.lines.simulator import SimCityLine, SimPhone


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
        line_for(app, target).ring(str(request.get("number", "")), str(request.get("name", "")))
    elif action == "hangup":
        line_for(app, target).hang_up(str(request.get("method", "loop_current")))
    elif action == "unplug":
        _card(app).unplug()
    elif action == "plug":
        _card(app).plug()
    elif action == "state":
        pass
    else:
        raise SimError(
            f"unknown sim action {action!r}: offhook, onhook, flash, dial, ring, hangup, unplug, plug, state"
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
