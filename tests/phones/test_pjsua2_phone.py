"""pjsua2 (pjproject) as a SIP phone of extension 205, calling and called by desk phones.

Speech is proven both ways with tones: pjsua2's tone generator is detected on the desk
phone's capture, and a tone said on the desk phone is found in pjsua2's recording.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Pbx, start_pbx
from phone_peers import (
    HAVE_PJSUA2,
    PHONE_PASSWORD,
    PjsuaPhone,
    assert_answered_internal_call,
    closing_phone,
    phone_office,
    running_office,
    wav_tone_ms,
)
from sipp_tools import target

from firmware.calls.cdr import Disposition, HangupSide
from firmware.calls.lifecycle import LegState
from firmware.selftest import test_tone as make_tone

pytestmark = pytest.mark.skipif(
    not HAVE_PJSUA2, reason="pjsua2 does not import: pip install pjsua2-python (x86_64 cp311 wheel only)"
)

RTP_PORTS = (31000, 31100)
PJSUA_RTP_PORT = 31400  # pjsua2 tries the next ports of 100 when one is taken


@pytest.fixture
async def office(data_dir: Path) -> AsyncIterator[Pbx]:
    async with running_office("", RTP_PORTS, data_dir) as pbx:
        yield pbx


@pytest.fixture
async def phone(office: Pbx, tmp_path: Path) -> AsyncIterator[PjsuaPhone]:
    """pjsua2 registered as 205 (digest); closed (BYE, un-REGISTER) before the office stops."""
    phone = await PjsuaPhone.start(target(office), "205", PHONE_PASSWORD, tmp_path, PJSUA_RTP_PORT)
    async with closing_phone(phone):
        await phone.expect("reg_state", timeout=5.0, code=200, active=True)
        yield phone


async def speech_both_ways(pbx: Pbx, phone: PjsuaPhone, extension: str, wav: Path) -> None:
    """pjsua2's tone reaches the desk phone; the desk phone's tone is in pjsua2's recording.

    pjsua2's audio must be active (its "media" event) before this is called.
    """
    desk = pbx.phone(extension)
    mark = desk.mark()
    phone.send("tone", freq=1004)
    assert await pbx.hears(desk, (1004.0,), since=mark, timeout=3.0), "pjsua2 -> desk phone: no tone"
    phone.send("tone", freq=0)
    phone.send("record", path=str(wav))
    desk.say(make_tone(1400, 800))
    await asyncio.sleep(1.2)
    phone.send("record_stop")
    await phone.expect("recorded", timeout=4.0, complete=True)
    heard = wav_tone_ms(wav, 1400.0)
    assert heard >= 400, f"desk phone -> pjsua2: only {heard} ms of 1400 Hz recorded"
    assert wav_tone_ms(wav, 1004.0) == 0, "pjsua2 heard its own tone back"


async def test_pjsua2_registers_and_calls_a_desk_phone(office: Pbx, phone: PjsuaPhone, tmp_path: Path) -> None:
    bindings = office.app.sip.registrar.contacts("205")
    assert [b.extension for b in bindings] == ["205"]
    sales = office.phone("202")
    phone.send("call", uri=f"sip:202@{target(office)}")
    ringing = await sales.wait_ringing(5.0)
    assert (ringing.caller_number, ringing.caller_name) == ("205", "Warehouse")
    await phone.call_state("EARLY")
    sales.off_hook()
    await phone.call_state("CONFIRMED")
    await office.wait_state("202", LegState.CONNECTED)
    await phone.expect("media", status="active")
    await speech_both_ways(office, phone, "202", tmp_path / "heard.wav")
    sales.on_hook()
    await phone.call_state("DISCONNECTED")
    await assert_answered_internal_call(office, "205", "202", HangupSide.CALLEE)
    assert office.app.sip.legs == {}


async def test_a_desk_phone_calls_pjsua2_which_answers_and_hangs_up(office: Pbx, phone: PjsuaPhone, tmp_path: Path) -> None:
    sales = office.phone("202")
    sales.off_hook()
    await office.wait_state("202", LegState.DIALLING)
    await sales.dial("205")
    incoming = await phone.expect("incoming", timeout=5.0)
    assert "202" in incoming["remote"] and "Sales" in incoming["remote"], incoming
    await office.wait_state("202", LegState.CALLING)
    assert await office.hears(sales, "ringback"), "the caller hears ringback while pjsua2 rings"
    phone.send("answer")
    await phone.call_state("CONFIRMED")
    await office.wait_state("202", LegState.CONNECTED)
    await phone.expect("media", status="active")
    await speech_both_ways(office, phone, "202", tmp_path / "heard.wav")
    mark = sales.mark()
    phone.send("hangup")
    await phone.call_state("DISCONNECTED")
    assert await office.hears_cadence(sales, "busy", since=mark), "pjsua2 hung up: the desk phone hears busy"
    sales.on_hook()
    await assert_answered_internal_call(office, "202", "205", HangupSide.CALLEE)
    assert office.app.sip.legs == {}


async def connect_to_desk(office: Pbx, phone: PjsuaPhone, extension: str) -> None:
    """pjsua2 calls `extension`, whose desk phone answers."""
    desk = office.phone(extension)
    phone.send("call", uri=f"sip:{extension}@{target(office)}")
    await desk.wait_ringing(5.0)
    desk.off_hook()
    await phone.call_state("CONFIRMED")
    await office.wait_state(extension, LegState.CONNECTED)
    await phone.expect("media", status="active")


async def test_pjsua2_holds_and_resumes(office: Pbx, phone: PjsuaPhone, tmp_path: Path) -> None:
    """sendonly re-INVITE: the desk phone hears the hold tone; sendrecv again: speech both ways."""
    sales = office.phone("202")
    await connect_to_desk(office, phone, "202")
    phone.stream.forget()
    mark = sales.mark()
    phone.send("hold")
    await phone.expect("media", status="local_hold", timeout=3.0)  # our answer said recvonly/inactive
    assert await office.hears_cadence(sales, "hold", since=mark, timeout=4.0), "held: no hold tone"
    phone.send("unhold")
    await phone.expect("media", status="active", timeout=3.0)
    await speech_both_ways(office, phone, "202", tmp_path / "resumed.wav")
    sales.on_hook()
    await phone.call_state("DISCONNECTED")
    record = await office.last_record()
    assert (record.disposition, record.answered_extension) == (Disposition.ANSWERED, "202")


async def test_pjsua2_transfers_its_partner_to_another_desk_phone(office: Pbx, phone: PjsuaPhone) -> None:
    """Blind transfer (REFER): 203 rings, answers, talks with 202; pjsua2 gets NOTIFY 200 and is out."""
    sales, accounts = office.phone("202"), office.phone("203")
    await connect_to_desk(office, phone, "202")
    phone.send("xfer", uri=f"sip:203@{target(office)}")
    ringing = await accounts.wait_ringing(5.0)
    assert ringing.caller_number == "202", "the transferred party is shown to 203"
    accounts.off_hook()
    status = await phone.expect("xfer_status", timeout=5.0, final=True)
    assert status["code"] == 200, status
    await phone.call_state("DISCONNECTED")
    await office.wait_state("203", LegState.CONNECTED)
    await office.speech_both_ways(sales, accounts)
    accounts.on_hook()
    await office.wait_state("202", LegState.CLEARING)
    sales.on_hook()
    await office.wait_idle()
    records = await office.records(5)
    transferred = next(r for r in records if r.answered_extension == "203")
    assert transferred.disposition == Disposition.ANSWERED
    assert transferred.transferred_by == "205"
    assert office.app.sip.legs == {}


async def test_pjsua2_attended_transfer_joins_its_two_partners(office: Pbx, phone: PjsuaPhone) -> None:
    """Hold 202, consult 203, REFER with Replaces: 202 and 203 talk; both pjsua2 calls end."""
    sales, accounts = office.phone("202"), office.phone("203")
    await connect_to_desk(office, phone, "202")
    mark = sales.mark()
    phone.send("hold")
    await phone.expect("media", status="local_hold", timeout=3.0)
    assert await office.hears_cadence(sales, "hold", since=mark, timeout=4.0), "held: no hold tone"
    phone.stream.forget()
    await connect_to_desk(office, phone, "203")  # the consultation call
    phone.send("xfer_replaces")
    status = await phone.expect("xfer_status", timeout=5.0, final=True)
    assert status["code"] == 200, status
    await phone.call_state("DISCONNECTED")
    await office.speech_both_ways(sales, accounts)
    sales.on_hook()
    await office.wait_state("203", LegState.CLEARING)
    accounts.on_hook()
    await office.wait_idle()
    records = await office.records(5)
    joined = next(r for r in records if r.transferred_by == "205")
    assert (joined.caller_number, joined.answered_extension) == ("202", "203")
    assert joined.disposition == Disposition.ANSWERED
    assert office.app.sip.legs == {}


async def test_a_replaces_transfer_cannot_join_another_extensions_call(data_dir: Path, tmp_path: Path) -> None:
    """205 names the Call-ID of 206's call in a REFER with Replaces: refused (NOTIFY 503),
    both calls go on untouched. Knowing a Call-ID must not let anyone join strangers' calls."""
    text = phone_office("", RTP_PORTS).replace(
        'number = "206"\nname = "Manager"\n', f'number = "206"\nname = "Manager"\nsip_password = "{PHONE_PASSWORD}"\n'
    )
    pbx = await start_pbx(text, data_dir)
    first = await PjsuaPhone.start(target(pbx), "205", PHONE_PASSWORD, tmp_path, PJSUA_RTP_PORT)
    (tmp_path / "b").mkdir()
    second = await PjsuaPhone.start(target(pbx), "206", PHONE_PASSWORD, tmp_path / "b", PJSUA_RTP_PORT + 200)
    try:
        for phone in (first, second):
            await phone.expect("reg_state", timeout=5.0, code=200, active=True)
        await connect_to_desk(pbx, first, "202")
        await connect_to_desk(pbx, second, "203")
        victim = next(leg for leg in pbx.app.sip.legs.values() if leg.number == "206")
        first.send("xfer", uri=f"<sip:203@{target(pbx)}?Replaces={victim.call_id.replace('@', '%40')}>")
        status = await first.expect("xfer_status", timeout=5.0, final=True)
        assert status["code"] >= 300, status
        await asyncio.sleep(0.5)
        for extension in ("202", "203"):
            assert pbx.channel(extension).state == LegState.CONNECTED
        mark = pbx.phone("203").mark()
        second.send("tone", freq=1004)
        assert await pbx.hears(pbx.phone("203"), (1004.0,), since=mark, timeout=3.0), "206's call was disturbed"
    finally:
        await first.close()
        await second.close()
        await pbx.app.stop()
