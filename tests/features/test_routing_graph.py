"""The routing graph as callers meet it: modes choose the way, nodes ring, announce, end.

A city call to the office goes through a mode switch to a ringing group of extensions
and, unanswered, to the "office closed" announcement heard on the line; forcing night
sends it straight there; an extension reaches the same node by its number. The config
check refuses dangling names, loops without an exit and nodes nobody can reach.
"""

from __future__ import annotations

import pytest

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.lifecycle import LegState
from firmware.config.load import ConfigError, parse_config
from tests.features.feature_tools import hears_prompt, office_with_routing

ROUTING = """
[[routing.nodes]]
name = "main"
kind = "mode_switch"
modes = { day = "reception", night = "closed" }

[[routing.nodes]]
name = "reception"
kind = "extension"
number = "600"
extensions = ["202", "203"]
ring_s = 1.5
then = "closed"

[[routing.nodes]]
name = "closed"
kind = "announcement"
prompt = "office_closed"
"""


@pytest.fixture
def pbx_config() -> str:
    return office_with_routing(ROUTING)


async def test_day_mode_rings_the_reception_group_and_one_answers(pbx) -> None:
    line, accounts = pbx.line("city1"), pbx.phone("203")
    line.ring("212345678")
    await pbx.wait_state("202", LegState.ALERTING)
    await pbx.wait_state("203", LegState.ALERTING)
    accounts.off_hook()
    await pbx.wait_state("203", LegState.CONNECTED)
    await pbx.wait_state("202", LegState.IDLE)
    await pbx.speech_both_ways(line, accounts)
    accounts.on_hook()
    record = await pbx.last_record()
    assert record.direction == Direction.INCOMING
    assert (record.disposition, record.answered_extension) == (Disposition.ANSWERED, "203")
    assert (record.mode, record.destination_kind) == ("day", "mode_switch")


async def test_unanswered_group_gives_the_closed_announcement_then_releases_the_line(pbx) -> None:
    line = pbx.line("city1")
    line.ring("212345678")
    await pbx.wait_state("202", LegState.ALERTING)
    mark = line.mark()
    assert await hears_prompt(pbx, line, "office_closed", mark, timeout=6.0)
    await pbx.sim.wait_until(lambda: not line.seized, 8.0, "line released after the announcement")
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED  # answered by the exchange
    assert record.answered_extension is None
    assert record.cause == "announcement:office_closed"


async def test_night_override_sends_city_calls_straight_to_the_announcement(pbx) -> None:
    await pbx.app.modes.async_set_override("night", "test")
    line = pbx.line("city1")
    line.ring("212345678")
    await pbx.sim.wait_until(lambda: line.seized, 4.0, "the exchange answers")
    assert pbx.channel("202").state == LegState.IDLE, "nobody rings at night"
    assert await hears_prompt(pbx, line, "office_closed", 0, timeout=6.0)
    await pbx.sim.wait_until(lambda: not line.seized, 8.0, "line released")
    record = await pbx.last_record()
    assert record.mode == "night"


async def test_an_extension_dials_the_group_by_its_number(pbx) -> None:
    caller, accounts = pbx.phone("201"), pbx.phone("203")
    caller.off_hook()
    await pbx.wait_state("201", LegState.DIALLING)
    await caller.dial("600")
    await pbx.wait_state("203", LegState.ALERTING)
    assert await pbx.hears(caller, "ringback")
    accounts.off_hook()
    await pbx.wait_state("201", LegState.CONNECTED)
    await pbx.speech_both_ways(caller, accounts)
    caller.on_hook()
    record = await pbx.last_record()
    assert (record.dialled, record.answered_extension) == ("600", "203")


# ----- the config check ---------------------------------------------------------------------


def errors_of(routing: str, city1: str = '["main"]') -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(office_with_routing(routing, city1), "<test>")
    return caught.value.errors


def test_a_destination_naming_nothing_is_refused() -> None:
    errors = errors_of(ROUTING.replace('then = "closed"', 'then = "closd"'))
    assert "routing.nodes[1] (reception): no routing node named 'closd'" in errors


def test_a_loop_without_exit_is_refused() -> None:
    loop = """
[[routing.nodes]]
name = "main"
kind = "mode_switch"
modes = { day = "hello", night = "main" }
otherwise = "main"

[[routing.nodes]]
name = "hello"
kind = "announcement"
prompt = "please_hold"
then = "main"
"""
    errors = errors_of(loop)
    assert any(e.startswith("routing.nodes[0] (main): a loop without an exit") for e in errors)
    assert any(e.startswith("routing.nodes[1] (hello): a loop without an exit") for e in errors)


def test_a_node_nobody_reaches_is_refused() -> None:
    orphan = ROUTING + '\n[[routing.nodes]]\nname = "orphan"\nkind = "announcement"\nprompt = "goodbye"\n'
    errors = errors_of(orphan)
    assert errors == [
        "routing.nodes[3] (orphan): no line, DID, number or other node leads here; "
        "send calls to it or give it a `number`"
    ]


def test_a_node_number_may_not_clash_with_an_extension() -> None:
    errors = errors_of(ROUTING.replace('number = "600"', 'number = "202"'))
    assert any("routing node 'reception'" in e and "'202'" in e for e in errors)


def test_a_mode_switch_names_known_modes_only() -> None:
    errors = errors_of(ROUTING.replace("night = ", "nite = "))
    assert any("routing.nodes[0] (main).modes: 'nite' is not a mode" in e for e in errors)


async def test_the_operator_forces_night_by_feature_code_and_returns_to_the_schedule(pbx) -> None:
    operator, line = pbx.phone("201"), pbx.line("city1")
    operator.off_hook()
    await pbx.wait_state("201", LegState.DIALLING)
    mark = operator.mark()
    await operator.dial("*61")
    assert await pbx.hears(operator, "confirmation", since=mark)
    operator.on_hook()
    record = await pbx.last_record()
    assert (record.disposition, record.cause) == (Disposition.ANSWERED, "mode:night")
    assert pbx.app.modes.current() == "night"
    line.ring("212345678")
    await pbx.sim.wait_until(lambda: line.seized, 4.0, "the exchange answers at night")
    assert pbx.channel("202").state == LegState.IDLE
    line.hang_up()
    await pbx.wait_idle()
    operator.off_hook()
    await pbx.wait_state("201", LegState.DIALLING)
    await operator.dial("*60")
    operator.on_hook()
    await pbx.wait_idle()
    assert pbx.app.modes.current() == "day"


async def test_other_extensions_may_not_change_the_mode(pbx) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    mark = phone.mark()
    await phone.dial("*61")
    assert await pbx.hears(phone, "special_information", since=mark)
    phone.on_hook()
    record = await pbx.last_record()
    assert (record.disposition, record.cause) == (Disposition.REJECTED, "mode_override_not_allowed")
    assert pbx.app.modes.current() == "day"


def test_a_hunt_group_member_must_reach_someone() -> None:
    group = """
[[routing.nodes]]
name = "main"
kind = "hunt_group"
members = ["202", "*49", "9212345678"]
"""
    assert errors_of(group) == [
        "routing.nodes[0] (main).members: '*49' reaches no extension, sibling office or outside number"
    ]


def test_a_disa_user_needs_a_real_class_of_service() -> None:
    disa = """
[[routing.nodes]]
name = "main"
kind = "disa"
users = [{ name = "boss", pin = "4711", class_of_service = "managr" }]
"""
    assert errors_of(disa) == [
        "routing.nodes[0] (main).users[0].class_of_service: 'managr' is not a class of service "
        "(lobby, manager, staff)"
    ]


def test_a_queue_code_must_name_a_queue() -> None:
    text = office_with_routing(ROUTING).replace(
        'mode_day = "*62"', 'mode_day = "*62"\nqueue_login_sales = "*45"'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "<test>")
    assert caught.value.errors == ["feature_codes.queue_login_sales: no queue named 'sales' (queues: none)"]
