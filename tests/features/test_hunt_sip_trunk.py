"""A hunt-group member reached over a SIP trunk: SIPp plays the provider (180, then 200, and
echoes our RTP). The trunk member rings along with a desk phone; its answer stops the desk
phone, and the record becomes the outgoing trunk call it is."""

from __future__ import annotations

from pathlib import Path

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.lifecycle import LegState
from tests.conftest import office_config, start_pbx
from tests.sipp_tools import (
    echoed,
    finish,
    free_port,
    needs_sipp,
    sip_with_provider,
    start_sipp,
    stop_sipp,
    with_voip_group,
)

pytestmark = needs_sipp

GROUP = """
[[routing.nodes]]
name = "sales"
kind = "hunt_group"
number = "600"
members = ["202", "8212345678"]
strategy = "simultaneous"
timeout_s = 8
"""


async def test_a_trunk_member_rings_along_and_its_answer_puts_the_caller_through(
    data_dir: Path,
) -> None:
    port = free_port()
    text = (
        with_voip_group(office_config(sip_with_provider(port, (34000, 34200))), ["provider"])
        + GROUP
    )
    answering = await start_sipp(
        "-sn", "uas", "-p", str(port), "-m", "1", "-mp", str(free_port()), "-rtp_echo"
    )
    pbx = await start_pbx(text, data_dir)
    try:
        caller = pbx.phone("201")
        caller.off_hook()
        await pbx.wait_state("201", LegState.DIALLING)
        await caller.dial("600")
        await pbx.wait_state("201", LegState.CONNECTED, timeout=5.0)  # SIPp's uas answers at once
        assert pbx.channel("202").state == LegState.IDLE, "the desk phone stopped ringing"
        assert await echoed(pbx, caller), "no audio back through the trunk"
        caller.on_hook()
        record = await pbx.last_record()
        assert (record.called_extension, record.answered_extension) == ("202", "8212345678")
        assert (record.line, record.line_group, record.external_number) == (
            "provider",
            "voip",
            "212345678",
        )
        assert (record.direction, record.disposition) == (Direction.OUTGOING, Disposition.ANSWERED)
        code, output = await finish(answering)
        assert code == 0, output
    finally:
        await pbx.app.stop()
        await stop_sipp(answering)
