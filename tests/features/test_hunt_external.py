"""Hunt-group members outside the building: a mobile reached through the second city line.

A city call on city1 hunts through an extension and a mobile ("9" + the number) that is
dialled on city2. Without answer supervision an analogue line cannot tell ringing from
answered: the member counts as answered once dialled (and such a line never rings along
with others). With polarity supervision the line member rings like a phone: the exchange's
polarity reversal answers it, and one that does not answer is released after `ring_s`.
"""

from __future__ import annotations

import asyncio

import pytest

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.lifecycle import LegState
from tests.features.feature_tools import office_with_routing

MOBILE = "9912345678"


def group(strategy: str, members: tuple[str, ...], *, polarity: bool = False) -> str:
    quoted = ", ".join(f'"{member}"' for member in members)
    text = office_with_routing(
        f"""
[[routing.nodes]]
name = "sales"
kind = "hunt_group"
members = [{quoted}]
strategy = "{strategy}"
ring_s = 0.8
timeout_s = 8
""",
        '["sales"]',
    )
    if polarity:
        city2 = 'name = "city2"\nport = 10\ngroup = "city"\n'
        assert city2 in text
        text = text.replace(city2, city2 + 'answer_supervision = "polarity"\n')
    return text


async def finish(pbx, caller, far) -> None:
    await pbx.speech_both_ways(caller, far)
    far.hang_up()
    await pbx.sim.wait_until(lambda: not caller.seized, 5.0, "the caller's line released")


@pytest.mark.parametrize("pbx_config", [group("sequential", ("202", MOBILE))])
async def test_sequential_goes_on_to_a_mobile_on_the_other_line_counted_answered_when_dialled(
    pbx,
) -> None:
    caller, out = pbx.line("city1"), pbx.line("city2")
    caller.ring("212345678")
    await pbx.phone("202").wait_ringing()
    await pbx.sim.wait_until(lambda: out.seized, 3.0, "city2 seized for the mobile")
    assert pbx.phone("202").ringing is None, "202 rang out first"
    await pbx.wait_state("city2", LegState.CONNECTED)
    assert out.calls_dialled == ["912345678"]
    assert caller.seized, "the city caller is put through"
    await finish(pbx, caller, out)
    record = await pbx.last_record()
    assert (record.called_extension, record.answered_extension) == ("202", MOBILE)
    assert (record.line, record.line_group, record.external_number) == (
        "city2",
        "city",
        "912345678",
    )
    assert (record.direction, record.disposition) == (Direction.OUTGOING, Disposition.ANSWERED)


@pytest.mark.parametrize("pbx_config", [group("simultaneous", (MOBILE, "202"))])
async def test_an_unsupervised_line_never_rings_along_in_simultaneous_mode(pbx) -> None:
    caller, out, sales = pbx.line("city1"), pbx.line("city2"), pbx.phone("202")
    caller.ring("212345678")
    await sales.wait_ringing()
    await asyncio.sleep(1.2)  # time enough to seize, hear dial tone and dial
    assert not out.seized and out.calls_dialled == []
    assert sales.ringing is not None
    sales.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    sales.on_hook()
    record = await pbx.last_record()
    assert (record.called_extension, record.answered_extension) == (MOBILE, "202")
    assert (record.line, record.direction) == ("city1", Direction.INCOMING)


@pytest.mark.parametrize("pbx_config", [group("simultaneous", ("202", MOBILE), polarity=True)])
async def test_a_polarity_supervised_line_rings_along_and_its_answer_stops_the_phones(pbx) -> None:
    caller, out, sales = pbx.line("city1"), pbx.line("city2"), pbx.phone("202")
    out.behaviour.reverse_polarity_on_answer = True
    out.behaviour.answer_delay_s = 0.6
    caller.ring("212345678")
    await sales.wait_ringing()
    await pbx.sim.wait_until(lambda: out.calls_dialled == ["912345678"], 3.0, "the mobile dialled")
    assert sales.ringing is not None, "the phone rings while the mobile does"
    await pbx.wait_state("city2", LegState.CONNECTED, timeout=3.0)
    await sales.wait_not_ringing(timeout=1.0)
    await finish(pbx, caller, out)
    record = await pbx.last_record()
    assert (record.answered_extension, record.line) == (MOBILE, "city2")


@pytest.mark.parametrize("pbx_config", [group("sequential", (MOBILE, "202"), polarity=True)])
async def test_an_unanswered_supervised_line_is_released_after_ring_s_and_the_next_member_rings(
    pbx,
) -> None:
    caller, out, sales = pbx.line("city1"), pbx.line("city2"), pbx.phone("202")
    out.behaviour.answer = "no_answer"
    caller.ring("212345678")
    await pbx.sim.wait_until(lambda: out.calls_dialled == ["912345678"], 4.0, "the mobile dialled")
    assert sales.ringing is None, "one member at a time"
    await sales.wait_ringing(timeout=2.0)
    assert not out.seized, "the line was given back before the next member rang"
    sales.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.speech_both_ways(caller, sales)
    sales.on_hook()
    record = await pbx.last_record()
    assert (record.answered_extension, record.line, record.external_number) == (
        "202",
        "city1",
        None,
    )
