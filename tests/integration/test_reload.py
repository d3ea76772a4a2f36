"""Reloading the config file while people are on the phone.

A good file swaps numbering and routing at once and leaves calls in progress alone; a bad
file is refused with every error and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware.calls.cdr import Disposition
from firmware.calls.lifecycle import LegState
from firmware.selftest import test_tone as make_tone
from tests.conftest import Pbx, office_config, start_pbx

ORIGINAL = office_config()


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


RENUMBERED = edit(
    edit(ORIGINAL, 'name = "Accounts"', 'name = "Finance"'),
    'number = "208"\nname = "Lobby"',
    'number = "209"\nname = "Front desk"',
)


@pytest.fixture
def config_file(data_dir: Path) -> Path:
    path = data_dir / "minipbx.toml"
    path.write_text(ORIGINAL)
    return path


@pytest.fixture
async def pbx(data_dir: Path, config_file: Path) -> AsyncIterator[Pbx]:
    handle = await start_pbx(ORIGINAL, data_dir, config_path=str(config_file), with_api=False)
    try:
        yield handle
    finally:
        app = handle.app
        await app.stop()
        assert app.calls is not None
        assert not app.calls.sessions, f"calls left behind: {app.calls.calls_summary()}"
        assert app.calls.task_count == 0
        leftover = [
            t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()
        ]
        assert not leftover, f"tasks left running: {leftover}"


async def connect(pbx: Pbx, caller: str, callee: str) -> None:
    a, b = pbx.phone(caller), pbx.phone(callee)
    a.off_hook()
    assert await pbx.hears(a, "dial")
    await a.dial(callee)
    await b.wait_ringing()
    b.off_hook()
    await pbx.wait_state(caller, LegState.CONNECTED)


async def speech_both_ways(pbx: Pbx, a_port: int, b_port: int) -> None:
    a, b = pbx.sim.phones[a_port], pbx.sim.phones[b_port]
    mark = b.mark()
    a.say(make_tone(1004))
    assert await pbx.hears(b, (1004.0,), since=mark), f"port {a_port} -> {b_port}"
    mark = a.mark()
    b.say(make_tone(1400))
    assert await pbx.hears(a, (1400.0,), since=mark), f"port {b_port} -> {a_port}"


async def test_reload_during_a_call_keeps_the_call_and_applies_the_new_numbering(
    pbx: Pbx, config_file: Path
) -> None:
    await connect(pbx, "202", "203")
    config_file.write_text(RENUMBERED)
    result = await pbx.app.reload()
    assert result == {"ok": True, "needs_restart": []}
    assert pbx.app.config.extension("209") is not None
    assert pbx.app.config.extension("208") is None
    # The call in progress does not notice.
    assert len(pbx.app.calls.sessions) == 1
    assert pbx.sim.phones[2].off_hook_state and pbx.sim.phones[3].off_hook_state
    assert pbx.channel("202").state == LegState.CONNECTED
    assert pbx.channel("203").state == LegState.CONNECTED
    await speech_both_ways(pbx, 2, 3)
    pbx.phone("202").on_hook()
    pbx.phone("203").on_hook()
    record = await pbx.last_record()
    assert (record.caller_number, record.answered_extension) == ("202", "203")
    assert record.disposition == Disposition.ANSWERED
    await pbx.wait_state("203", LegState.IDLE)

    # The next call uses the new numbering: 209 rings the phone on port 8 ...
    a, front_desk = pbx.phone("203"), pbx.phone("209")
    assert front_desk is pbx.sim.phones[8]
    a.off_hook()
    await a.dial("209")
    ringing = await front_desk.wait_ringing()
    assert (ringing.caller_number, ringing.caller_name) == ("203", "Finance")
    front_desk.off_hook()
    await pbx.wait_state("209", LegState.CONNECTED)
    await speech_both_ways(pbx, 3, 8)
    front_desk.on_hook()
    a.on_hook()
    record = await pbx.last_record()
    assert (record.dialled, record.answered_extension) == ("209", "209")
    assert record.caller_name == "Finance"
    assert pbx.app.status()["reloads"]["done"] == 1

    # ... and 208 no longer exists.
    caller = pbx.phone("202")
    await pbx.wait_state("202", LegState.IDLE)
    caller.off_hook()
    await caller.dial("208")
    assert await pbx.hears(caller, "special_information")
    caller.on_hook()
    record = await pbx.last_record()
    assert (record.dialled, record.disposition) == ("208", Disposition.INVALID)


async def test_reload_of_an_invalid_file_is_refused_and_changes_nothing(
    pbx: Pbx, config_file: Path
) -> None:
    running = pbx.app.config
    await connect(pbx, "202", "203")
    broken = edit(RENUMBERED, 'timezone = "Europe/Lisbon"', 'timezone = "Mars/Olympus"')
    broken = edit(broken, 'number = "204"', 'number = "2x4"')
    config_file.write_text(broken)
    result = await pbx.app.reload()
    assert result["ok"] is False
    assert "running config stays" in result["error"]
    assert any(e.startswith("extensions[3].number") for e in result["errors"]), result
    assert pbx.app.config is running
    assert pbx.app.calls.config is running
    status = pbx.app.status()
    assert status["reloads"]["refused"] == 1
    assert status["reloads"]["done"] == 0
    assert "2x4" in status["reloads"]["last_error"]
    # The call in progress still talks, and the old numbering still works.
    await speech_both_ways(pbx, 2, 3)
    pbx.phone("202").on_hook()
    pbx.phone("203").on_hook()
    await pbx.last_record()
    await pbx.wait_state("203", LegState.IDLE)
    a, lobby = pbx.phone("203"), pbx.sim.phones[8]
    a.off_hook()
    await a.dial("208")
    ringing = await lobby.wait_ringing()
    assert (ringing.caller_number, ringing.caller_name) == ("203", "Accounts")
    lobby.off_hook()
    await pbx.wait_state("208", LegState.CONNECTED)
    await speech_both_ways(pbx, 3, 8)
    lobby.on_hook()
    a.on_hook()
    record = await pbx.last_record()
    assert (record.dialled, record.disposition) == ("208", Disposition.ANSWERED)


async def test_reload_of_a_toml_syntax_error_is_refused_with_the_line(
    pbx: Pbx, config_file: Path
) -> None:
    running = pbx.app.config
    config_file.write_text(ORIGINAL.replace('name = "Sales"', 'name = "Sales'))
    result = await pbx.app.reload()
    assert result["ok"] is False
    assert len(result["errors"]) == 1 and "line" in result["errors"][0]
    assert pbx.app.config is running


async def test_reload_of_a_missing_file_is_refused(pbx: Pbx, config_file: Path) -> None:
    running = pbx.app.config
    config_file.unlink()
    result = await pbx.app.reload()
    assert result["ok"] is False
    assert "cannot read" in result["errors"][0]
    assert pbx.app.config is running


async def test_reload_says_which_changes_need_a_restart(pbx: Pbx, config_file: Path) -> None:
    changed = edit(ORIGINAL, 'country = "eu"', 'country = "pt"')
    changed = edit(changed, "fxo_ports = 2 ", "heartbeat_s = 0.5\nfxo_ports = 2 ")
    config_file.write_text(changed)
    result = await pbx.app.reload()
    assert result["ok"] is True
    assert sorted(result["needs_restart"]) == ["line_card", "site"]


async def test_reload_says_a_new_sip_password_needs_a_restart(pbx: Pbx, config_file: Path) -> None:
    changed = edit(ORIGINAL, 'name = "Sales"\n', 'name = "Sales"\nsip_password = "new-secret-1"\n')
    config_file.write_text(changed)
    result = await pbx.app.reload()
    assert result["ok"] is True
    assert result["needs_restart"] == ["extensions.sip_password"]


async def test_removing_the_extension_of_a_phone_in_a_call_keeps_the_call(
    pbx: Pbx, config_file: Path
) -> None:
    await connect(pbx, "202", "207")
    without_207 = edit(
        ORIGINAL,
        '[[extensions]]\nnumber = "207"\nname = "Meeting room"\nport = 7\nclass_of_service = "staff"\n',
        "",
    )
    config_file.write_text(without_207)
    assert (await pbx.app.reload())["ok"] is True
    await speech_both_ways(pbx, 2, 7)
    pbx.phone("202").on_hook()
    pbx.sim.phones[7].on_hook()
    record = await pbx.last_record()
    assert (record.answered_extension, record.disposition) == ("207", Disposition.ANSWERED)
    # The port without an extension gives congestion when lifted; 207 is now invalid.
    meeting_room = pbx.sim.phones[7]
    await pbx.sim.wait_until(
        lambda: pbx.app.line_card.channels[7].state == LegState.IDLE, 3, "port 7 idle"
    )
    meeting_room.off_hook()
    assert await pbx.hears(meeting_room, "congestion")
    meeting_room.on_hook()
    caller = pbx.phone("202")
    caller.off_hook()
    await caller.dial("207")
    assert await pbx.hears(caller, "special_information")
    caller.on_hook()
    await pbx.wait_idle()
    await pbx.sim.wait_until(
        lambda: all(c.state == LegState.IDLE for c in pbx.app.line_card.channels.values()),
        3,
        "every port idle",
    )


async def test_reload_without_a_file_says_there_is_none(data_dir: Path) -> None:
    handle = await start_pbx(ORIGINAL, data_dir, with_api=False)
    try:
        result = await handle.app.reload()
        assert result["ok"] is False
        assert "no file" in result["error"]
    finally:
        await handle.app.stop()
