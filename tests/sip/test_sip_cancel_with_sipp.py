"""CANCEL on a whole appliance with SIPp as the provider (RFC 3261 9): a called party whose
200 crosses our CANCEL is ACKed and then sent BYE (it must not stay in a call nobody
hears), our CANCEL waits for a provisional response, and a CANCEL we receive must match
the INVITE's transaction, not just its Call-ID."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Pbx, office_config, start_pbx
from sipp_tools import (
    SCENARIOS,
    finish,
    free_port,
    needs_sipp,
    sip_with_provider,
    start_sipp,
    stop_sipp,
    target,
    uas_port_fixture,  # noqa: F401  (pytest finds the uas_port fixture here)
    wait_until,
    with_voip_group,
)

from firmware.calls.cdr import Disposition
from firmware.calls.lifecycle import LegState
from firmware.sip.calls import DIALOG_EVENTS

pytestmark = needs_sipp


@pytest.fixture
async def sip_pbx(uas_port: int, data_dir: Path) -> AsyncIterator[Pbx]:
    text = office_config(sip_with_provider(uas_port, (31700, 31800), 'incoming = { "201" = "201" }\n'))
    pbx = await start_pbx(with_voip_group(text, ["provider"]), data_dir)
    try:
        yield pbx
    finally:
        await pbx.app.stop()


async def provider(uas_port: int, scenario: str) -> object:
    return await start_sipp("-sf", str(SCENARIOS / scenario), "-p", str(uas_port), "-m", "1",
                            "-mp", str(free_port()), timeout_s=15)  # fmt: skip


async def all_gone(pbx: Pbx) -> None:
    await pbx.wait_idle()
    await wait_until(lambda: not pbx.app.sip.legs, 3.0, "the SIP legs to go")
    assert pbx.app.mixer.slots_in_use == 0


async def test_an_answer_crossing_our_cancel_is_acked_and_ended_with_bye(sip_pbx: Pbx, uas_port: int) -> None:
    before = DIALOG_EVENTS["late_answer_ended"]
    uas = await provider(uas_port, "uas_answers_after_cancel.xml")
    try:
        sales = sip_pbx.phone("202")
        sales.off_hook()
        await sip_pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("8212345678")
        assert await sip_pbx.hears(sales, "ringback", timeout=5.0), "the provider's 180 is ringback"
        sales.on_hook()  # our CANCEL; the provider answers anyway
        code, output = await finish(uas)  # it got our ACK, then a BYE for the dialog of its 200
        assert code == 0, output
        assert DIALOG_EVENTS["late_answer_ended"] == before + 1
        record = await sip_pbx.last_record()
        assert record.disposition == Disposition.ABANDONED and record.answer is None
        await all_gone(sip_pbx)
    finally:
        await stop_sipp(uas)


async def test_our_cancel_waits_for_a_provisional_response(sip_pbx: Pbx, uas_port: int) -> None:
    uas = await provider(uas_port, "uas_slow_to_ring.xml")
    try:
        sales = sip_pbx.phone("202")
        sales.off_hook()
        await sip_pbx.wait_state("202", LegState.DIALLING)
        await sales.dial("8212345678")
        await wait_until(lambda: bool(sip_pbx.app.sip.legs), 5.0, "our INVITE")
        sales.on_hook()  # within the provider's 2 s of silence: the CANCEL must wait for its 180
        code, output = await finish(uas)
        assert code == 0, output
        await all_gone(sip_pbx)
    finally:
        await stop_sipp(uas)


async def test_a_cancel_must_match_the_invite_transaction(sip_pbx: Pbx) -> None:
    reception = sip_pbx.phone("201")
    uac = await start_sipp(target(sip_pbx), "-sf", str(SCENARIOS / "uac_cancel_matching.xml"), "-s", "201",
                           "-m", "1", "-p", str(free_port()), "-mp", str(free_port()), timeout_s=15)  # fmt: skip
    try:
        await reception.wait_ringing(5.0)
        code, output = await finish(uac)  # 481 for the stranger's branch, 200 and 487 for the right one
        assert code == 0, output
        await reception.wait_not_ringing(3.0)
        record = await sip_pbx.last_record()
        assert record.disposition == Disposition.ABANDONED
        await all_gone(sip_pbx)
    finally:
        await stop_sipp(uac)
