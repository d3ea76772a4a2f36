"""Helpers shared by the city-line tests (FXO port "city1" of the office config)."""

from __future__ import annotations

import asyncio

from firmware.calls.lifecycle import LegState
from tests.conftest import office_config


def office_with_city1(keys: str) -> str:
    """The office config with `keys` (TOML lines) added to the city1 line's table."""
    text = office_config()
    anchor = 'name = "city1"\n'
    assert text.count(anchor) == 1
    return text.replace(anchor, anchor + keys.strip() + "\n")


async def call_out_answered(pbx, *, settle_s: float = 0.0) -> None:
    """Extension 202 calls out on city1 (9 + number) and the far end answers; `settle_s`
    lets whatever the exchange played on answer end."""
    phone, line = pbx.phone("202"), pbx.line("city1")
    phone.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await phone.dial("9212345678")
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 3.0, "answer")
    if settle_s:
        await asyncio.sleep(settle_s)
