"""Agents log in and out of queues by feature code; the state survives a restart.

Codes in these tests: *45 log in (every queue of the agent), *46 log out, *47 log out of
the queue "main" only. Ring all, so who rings shows exactly who is logged in.
"""

from __future__ import annotations

import pytest

from firmware.calls.cdr import Disposition
from firmware.calls.lifecycle import LegState
from firmware.features.queue_service import FEATURE_KEY
from tests.conftest import start_pbx
from tests.features.test_queue_helpers import (
    dial_queue,
    queue_office,
    queue_service,
    wait_ringing,
    waiting,
)


@pytest.fixture
def pbx_config(request) -> str:
    return queue_office(**getattr(request, "param", {}))


async def key_code(pbx, extension: str, code: str, tone: str = "confirmation"):
    phone = pbx.phone(extension)
    phone.off_hook()
    await pbx.wait_state(extension, LegState.DIALLING)
    mark = phone.mark()
    await phone.dial(code)
    assert await pbx.hears(phone, tone, since=mark)
    phone.on_hook()
    return await pbx.last_record()


async def rings_for_a_call(pbx, expected: set[str]) -> None:
    caller = await dial_queue(pbx, "205")
    await wait_ringing(pbx, expected)
    caller.on_hook()
    await pbx.wait_idle()


async def test_an_agent_logs_out_and_back_in_by_feature_code(pbx) -> None:
    record = await key_code(pbx, "202", "*46")
    assert (record.caller_number, record.destination_kind) == ("202", "feature")
    assert (record.disposition, record.cause) == (Disposition.ANSWERED, "queue_logout")
    await rings_for_a_call(pbx, {"203", "204"})
    record = await key_code(pbx, "202", "*45")
    assert record.cause == "queue_login"
    await rings_for_a_call(pbx, {"202", "203", "204"})
    record = await key_code(pbx, "203", "*47")  # out of "main" only
    assert record.cause == "queue_logout"
    await rings_for_a_call(pbx, {"202", "204"})


async def test_an_extension_that_is_no_agent_is_refused(pbx) -> None:
    record = await key_code(pbx, "207", "*45", tone="special_information")
    assert (record.disposition, record.cause) == (Disposition.REJECTED, "queue_not_an_agent")
    assert FEATURE_KEY not in pbx.app.calls.features, "refused before any queue state"


async def test_a_log_out_survives_a_restart(pbx, pbx_config, data_dir) -> None:
    await key_code(pbx, "204", "*46")
    await queue_service(pbx).flush()
    await pbx.app.stop()
    restarted = await start_pbx(pbx_config, data_dir)
    pbx.app = restarted.app  # the fixture stops this one
    await rings_for_a_call(pbx, {"202", "203"})


@pytest.mark.parametrize("pbx_config", [{"agents_start_logged_in": False}], indirect=True)
async def test_agents_may_start_logged_out_until_they_log_in(pbx) -> None:
    caller = await dial_queue(pbx, "205")
    await pbx.sim.wait_until(lambda: waiting(pbx) == 1, 2.0, "waiting")
    await wait_ringing(pbx, set())
    phone = pbx.phone("203")
    phone.off_hook()
    await pbx.wait_state("203", LegState.DIALLING)
    await phone.dial("*45")
    phone.on_hook()
    await wait_ringing(pbx, {"203"})  # the waiting caller is offered at once
    caller.on_hook()
    await pbx.wait_idle()
