"""Which agent a queue call rings, with three simulated agent handsets (202, 203, 204).

Callers are extensions dialling the queue's number 600 (and the city line for ring all).
Each strategy is followed over several calls: who rang first, who next when nobody
answered, where the next call starts; plus wrap-up time, an agent busy on another call,
and first come, first served between two waiting callers.
"""

from __future__ import annotations

import asyncio

import pytest

from firmware.calls.cdr import Disposition
from firmware.calls.lifecycle import LegState
from firmware.features.queue_store import QueueStore
from tests.conftest import start_pbx
from tests.features.test_queue_helpers import (
    dial_queue,
    queue_office,
    queue_service,
    ringing,
    wait_ringing,
    wait_shown,
    waiting,
)


@pytest.fixture
def pbx_config(request) -> str:
    return queue_office(**getattr(request, "param", {}))


def strategy(name: str, **fields: object):
    return pytest.mark.parametrize("pbx_config", [{"strategy": name, **fields}], indirect=True)


async def answer_and_hang_up(pbx, agent: str, caller) -> None:
    """`agent` answers the ringing queue call, both talk, the caller hangs up."""
    phone = pbx.phone(agent)
    phone.off_hook()
    await pbx.wait_state(agent, LegState.CONNECTED)
    await pbx.speech_both_ways(caller, phone)
    caller.on_hook()
    await pbx.wait_idle()
    phone.on_hook()
    await pbx.wait_state(agent, LegState.IDLE)


async def queue_call(pbx, caller: str, expected_first: str) -> object:
    phone = await dial_queue(pbx, caller)
    await wait_ringing(pbx, {expected_first})
    return phone


@strategy("ring_all")
async def test_ring_all_rings_every_free_agent_and_the_first_to_lift_takes_it(pbx) -> None:
    line = pbx.line("city1")
    line.ring("212345678", "Client")
    await wait_ringing(pbx, {"202", "203", "204"}, timeout=4.0)
    await wait_shown(pbx, "203", "212345678")
    assert pbx.phone("203").last_caller == ("212345678", "Client")
    pbx.phone("203").off_hook()
    await pbx.wait_state("203", LegState.CONNECTED)
    await wait_ringing(pbx, set())
    assert pbx.channel("202").state == LegState.IDLE
    await pbx.speech_both_ways(line, pbx.phone("203"))
    pbx.phone("203").on_hook()
    record = await pbx.last_record()
    assert (record.disposition, record.answered_extension) == (Disposition.ANSWERED, "203")
    assert record.destination_kind == "queue"


@strategy("longest_idle")
async def test_longest_idle_offers_the_agent_whose_last_queue_call_ended_longest_ago(pbx) -> None:
    caller = await queue_call(pbx, "205", "202")  # nobody had a call: the configured order
    await answer_and_hang_up(pbx, "202", caller)
    caller = await queue_call(pbx, "205", "203")  # 202 just had one
    await wait_ringing(pbx, {"204"}, timeout=2.0)  # 203 let it ring out (1 s): the next one
    await answer_and_hang_up(pbx, "204", caller)
    caller = await queue_call(pbx, "205", "203")  # still no call for 203: idle longest
    await answer_and_hang_up(pbx, "203", caller)
    caller = await queue_call(pbx, "205", "202")  # 202's call ended first of the three
    caller.on_hook()
    await pbx.wait_idle()


@strategy("fewest_calls")
async def test_fewest_calls_offers_the_agent_with_fewest_queue_calls_today(pbx) -> None:
    caller = await queue_call(pbx, "205", "202")
    await answer_and_hang_up(pbx, "202", caller)
    caller = await queue_call(pbx, "205", "203")
    await answer_and_hang_up(pbx, "203", caller)
    caller = await queue_call(pbx, "205", "204")
    await wait_ringing(pbx, {"202"}, timeout=2.0)  # 204 did not answer: 202 and 203 have one
    await answer_and_hang_up(pbx, "202", caller)  # each; 202's ended first
    caller = await queue_call(pbx, "205", "204")  # 204 has none, 203 one, 202 two
    caller.on_hook()
    await pbx.wait_idle()
    service = queue_service(pbx)
    counts = {agent: calls.count for (_, agent), calls in service.answered_calls.items()}
    assert counts == {"202": 2, "203": 1}


@strategy("round_robin")
async def test_round_robin_starts_after_the_last_to_answer_even_after_a_restart(
    pbx, data_dir, pbx_config
) -> None:
    caller = await queue_call(pbx, "205", "202")
    await wait_ringing(pbx, {"203"}, timeout=2.0)  # 202 does not answer
    await answer_and_hang_up(pbx, "203", caller)
    caller = await queue_call(pbx, "205", "204")  # after 203
    await answer_and_hang_up(pbx, "204", caller)
    caller = await queue_call(pbx, "205", "202")  # after 204: round to the first
    await answer_and_hang_up(pbx, "202", caller)
    await queue_service(pbx).flush()
    await pbx.app.stop()
    assert QueueStore(data_dir / "queues.sqlite3").load().last_answered == {"main": "202"}
    restarted = await start_pbx(pbx_config, data_dir)
    pbx.app = restarted.app  # the fixture stops this one
    caller = await queue_call(pbx, "205", "203")  # remembered: after 202
    caller.on_hook()
    await pbx.wait_idle()


@strategy("ring_all", wrap_up_s=2.0)
async def test_an_agent_in_wrap_up_is_not_offered_until_it_is_over(pbx) -> None:
    caller = await dial_queue(pbx, "205")
    await wait_ringing(pbx, {"202", "203", "204"})
    await answer_and_hang_up(pbx, "202", caller)
    loop = asyncio.get_running_loop()
    ended = loop.time()
    caller = await dial_queue(pbx, "205")
    await wait_ringing(pbx, {"203", "204"})
    await pbx.phone("203").wait_ringing()
    rings = pbx.phone("203").rings_received
    await pbx.sim.wait_until(lambda: "202" in ringing(pbx), 4.0, "202 rings after its wrap-up")
    assert loop.time() - ended >= 1.9
    assert ringing(pbx) == {"202", "203", "204"}
    assert pbx.phone("203").rings_received == rings, "203 rang on, not rung again"
    caller.on_hook()
    await pbx.wait_idle()


@strategy("round_robin")
async def test_an_agent_busy_on_another_call_is_not_offered(pbx) -> None:
    busy, other = pbx.phone("202"), pbx.phone("207")
    busy.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await busy.dial("207")
    await pbx.wait_state("207", LegState.ALERTING)
    other.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    caller = await queue_call(pbx, "205", "203")  # 202 would be first: it is talking
    await wait_ringing(pbx, {"204"}, timeout=2.0)
    await wait_ringing(pbx, {"203"}, timeout=2.0)  # a new pass: still not 202
    pbx.phone("204").off_hook()  # an agent lifting its phone to dial is busy too
    await pbx.wait_state("204", LegState.DIALLING)
    rings = pbx.phone("203").rings_received
    seen: list[set[str]] = []
    for _ in range(50):  # 2.5 s: 203 rings out and is rung again, alone
        seen.append(ringing(pbx))
        await asyncio.sleep(0.05)
    assert set().union(*seen) == {"203"}
    assert pbx.phone("203").rings_received > rings
    caller.on_hook()
    busy.on_hook()
    pbx.phone("204").on_hook()
    await pbx.wait_idle()
    other.on_hook()


@strategy("round_robin")
async def test_the_caller_who_came_first_is_offered_first(pbx) -> None:
    for agent in ("203", "204"):  # only 202 answers this queue now
        phone = pbx.phone(agent)
        phone.off_hook()
        await pbx.wait_state(agent, LegState.DIALLING)
        await phone.dial("*47")
        phone.on_hook()
        await pbx.wait_idle()
    agent, partner = pbx.phone("202"), pbx.phone("207")
    agent.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await agent.dial("207")
    await pbx.wait_state("207", LegState.ALERTING)
    partner.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    first = await dial_queue(pbx, "205")
    await asyncio.sleep(0.3)
    second = await dial_queue(pbx, "206")
    await pbx.sim.wait_until(lambda: waiting(pbx) == 2, 2.0, "both wait")
    partner.on_hook()
    agent.on_hook()
    await wait_shown(pbx, "202", "205")
    agent.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.speech_both_ways(first, agent)
    assert waiting(pbx) == 1
    first.on_hook()
    await pbx.wait_state("202", LegState.CLEARING)
    agent.on_hook()
    await wait_shown(pbx, "202", "206")
    second.on_hook()
    await pbx.wait_idle()


@strategy("round_robin", agent_ring_s=3.0)
async def test_with_one_agent_at_a_time_two_free_agents_serve_two_callers_at_once(pbx) -> None:
    first = await queue_call(pbx, "205", "202")
    second = await dial_queue(pbx, "206")  # the head is ringing 202: the next may ring 203
    await wait_ringing(pbx, {"202", "203"})
    await wait_shown(pbx, "202", "205")
    await wait_shown(pbx, "203", "206")
    pbx.phone("203").off_hook()
    await pbx.wait_state("206", LegState.CONNECTED)
    await pbx.speech_both_ways(second, pbx.phone("203"))
    assert ringing(pbx) == {"202"}
    first.on_hook()
    second.on_hook()
    await pbx.wait_idle()
    pbx.phone("203").on_hook()
