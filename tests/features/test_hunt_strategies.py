"""Hunt groups as callers and members meet them: who rang, in what order, who answered, and
where the next call starts.

The handsets' own view decides what "rang" means: a `RingLog` watches every simulated phone
for the card's RING and RING_STOP, so an order is what the desks saw, not what the code
believes it asked for.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.lifecycle import LegState
from firmware.config.load import ConfigError, parse_config
from firmware.lines.protocol import HookSet, Ring, RingStop
from tests.conftest import start_pbx
from tests.features.feature_tools import hears_prompt, office_with_routing, prompt_similarity

MEMBERS = ("202", "203", "204")


def group(strategy: str, *, members: tuple[str, ...] = MEMBERS, ring_s: float = 0.8,
          timeout_s: float = 6.0, then: str = "", caller_hears: str = "ringback") -> str:  # fmt: skip
    quoted = ", ".join(f'"{member}"' for member in members)
    return f"""
[[routing.nodes]]
name = "sales"
kind = "hunt_group"
number = "600"
members = [{quoted}]
strategy = "{strategy}"
ring_s = {ring_s}
timeout_s = {timeout_s}
then = "{then}"
caller_hears = "{caller_hears}"
"""


class RingLog:
    """What the handsets saw, as the card's commands reach them: ("202", "start", t) when a
    bell starts, ("202", "stop", t) when it stops, ("city1", "seized", t) for the line."""

    def __init__(self, pbx, numbers: tuple[str, ...] = ("202", "203", "204", "205")) -> None:
        self.card = pbx.sim
        self.ports = {pbx.app.config.extension(number).port: number for number in numbers}
        self.line_port = next(line.port for line in pbx.app.config.lines if line.name == "city1")
        self.events: list[tuple[str, str, float]] = []

    def __enter__(self) -> RingLog:
        handle = self.card._handle

        def watched(message) -> None:
            handle(message)
            port, now = getattr(message, "port", None), asyncio.get_running_loop().time()
            if port in self.ports:
                phone = self.card.phones[port]
                if isinstance(message, Ring) and phone.ringing is not None:
                    self.events.append((self.ports[port], "start", now))
                elif isinstance(message, RingStop) and self._ringing(self.ports[port]):
                    self.events.append((self.ports[port], "stop", now))
            elif port == self.line_port and isinstance(message, HookSet) and message.off_hook:
                self.events.append(("city1", "seized", now))

        self.card._handle = watched
        return self

    def __exit__(self, *_: object) -> None:
        del self.card._handle  # the class's own method again

    def _ringing(self, number: str) -> bool:
        marks = [what for n, what, _ in self.events if n == number]
        return bool(marks) and marks[-1] == "start"

    def starts(self) -> list[str]:
        return [number for number, what, _ in self.events if what == "start"]

    def at(self, number: str, what: str) -> float:
        return next(t for n, w, t in self.events if (n, w) == (number, what))

    def ringing_alone(self) -> bool:
        """No two phones ever rang at the same time."""
        count = 0
        for _, what, _ in self.events:
            count += {"start": 1, "stop": -1}.get(what, 0)
            if count > 1:
                return False
        return True

    def rang_for(self, number: str) -> float:
        start = next(t for n, what, t in self.events if n == number and what == "start")
        stop = next(
            t for n, what, t in self.events if n == number and what == "stop" and t >= start
        )
        return stop - start


async def make_busy(pbx, number: str) -> None:
    """A member on another call: lifted, hearing dial tone (then congestion), off hook."""
    pbx.phone(number).off_hook()
    await pbx.wait_state(number, LegState.DIALLING)


async def call_group_from(pbx, extension: str):
    caller = pbx.phone(extension)
    caller.off_hook()
    await pbx.wait_state(extension, LegState.DIALLING)
    await caller.dial("600")
    return caller


# ----- simultaneous ---------------------------------------------------------------------------


@pytest.mark.parametrize("pbx_config", [office_with_routing(group("simultaneous"), '["sales"]')])
async def test_simultaneous_rings_every_free_member_together_and_skips_the_busy_one(pbx) -> None:
    await make_busy(pbx, "204")
    line, accounts = pbx.line("city1"), pbx.phone("203")
    with RingLog(pbx) as rings:
        line.ring("212345678")
        await pbx.phone("202").wait_ringing()
        await accounts.wait_ringing()
        await asyncio.sleep(0.3)
        accounts.off_hook()
        await pbx.wait_state("203", LegState.CONNECTED)
        await pbx.sim.wait_until(lambda: pbx.phone("202").ringing is None, 2.0, "202 stops ringing")
    assert sorted(rings.starts()) == ["202", "203"], "204 was busy: skipped"
    starts = {n: t for n, what, t in rings.events if what == "start"}
    assert abs(starts["202"] - starts["203"]) < 0.2, "both rang at once"
    await pbx.speech_both_ways(line, accounts)
    accounts.on_hook()
    pbx.phone("204").on_hook()
    record = await pbx.last_record()
    assert record.direction == Direction.INCOMING
    assert (record.called_extension, record.answered_extension) == ("202", "203")
    assert (record.disposition, record.destination_kind) == (Disposition.ANSWERED, "hunt_group")


@pytest.mark.parametrize("pbx_config", [office_with_routing(group("simultaneous"), '["sales"]')])
async def test_a_do_not_disturb_member_is_skipped(pbx) -> None:
    pbx.channel("203").do_not_disturb = True  # what a DND feature will set on the phone
    caller = await call_group_from(pbx, "201")
    with RingLog(pbx) as rings:
        await pbx.phone("202").wait_ringing()
        await pbx.phone("204").wait_ringing()
        await asyncio.sleep(0.3)
        caller.on_hook()
        await pbx.wait_idle()
    assert sorted(rings.starts()) == ["202", "204"]


# ----- sequential -----------------------------------------------------------------------------


@pytest.mark.parametrize("pbx_config", [office_with_routing(group("sequential"), '["sales"]')])
async def test_sequential_rings_members_one_at_a_time_in_order_for_ring_s_each(pbx) -> None:
    caller, support = await call_group_from(pbx, "201"), pbx.phone("204")
    with RingLog(pbx) as rings:
        assert await pbx.hears(caller, "ringback")
        await support.wait_ringing(timeout=4.0)
        support.off_hook()
        await pbx.wait_state("201", LegState.CONNECTED)
    assert rings.starts() == ["202", "203", "204"]
    assert rings.ringing_alone()
    assert 0.6 <= rings.rang_for("202") <= 1.1, rings.events
    assert 0.6 <= rings.rang_for("203") <= 1.1, rings.events
    await pbx.speech_both_ways(caller, support)
    caller.on_hook()
    record = await pbx.last_record()
    assert (record.dialled, record.called_extension, record.answered_extension) == (
        "600",
        "202",
        "204",
    )


@pytest.mark.parametrize(
    "pbx_config", [office_with_routing(group("sequential", ring_s=1.5), '["sales"]')]
)
async def test_sequential_skips_a_busy_member_at_once(pbx) -> None:
    await make_busy(pbx, "203")
    caller = await call_group_from(pbx, "201")
    with RingLog(pbx) as rings:
        await pbx.wait_state("202", LegState.ALERTING)
        await pbx.phone("204").wait_ringing(timeout=3.0)
        pbx.phone("204").off_hook()
        await pbx.wait_state("201", LegState.CONNECTED)
    assert rings.starts() == ["202", "204"]
    gap = rings.at("204", "start") - rings.at("202", "stop")
    assert gap < 0.3, f"203 skipped at once, not rung: {gap:.2f} s"
    caller.on_hook()
    pbx.phone("203").on_hook()
    pbx.phone("204").on_hook()
    assert (await pbx.last_record()).answered_extension == "204"


TIMEOUT_GROUP = group("sequential", members=("202", "203"), ring_s=0.8, timeout_s=2.2)


@pytest.mark.parametrize("pbx_config", [office_with_routing(TIMEOUT_GROUP, '["sales"]')])
async def test_nobody_answers_rounds_go_on_until_the_timeout_then_the_announcement(pbx) -> None:
    line = pbx.line("city1")
    with RingLog(pbx) as rings:
        line.ring("212345678")
        await pbx.sim.wait_until(
            lambda: line.seized, 5.0, "the exchange answers for the announcement"
        )
        seized_at = asyncio.get_running_loop().time()
    assert rings.starts() == ["202", "203", "202"], "a second round, cut by the group's timeout"
    assert rings.ringing_alone()
    first = rings.events[0][2]
    assert 1.9 <= seized_at - first <= 2.8, seized_at - first
    assert await hears_prompt(pbx, line, "cannot_answer_now", 0, timeout=6.0)
    await pbx.sim.wait_until(lambda: not line.seized, 8.0, "line released after the announcement")
    record = await pbx.last_record()
    assert (record.cause, record.answered_extension, record.called_extension) == (
        "unanswered",
        None,
        "202",
    )


ALL_BUSY = group("sequential", members=("202", "203"), then="205")


@pytest.mark.parametrize("pbx_config", [office_with_routing(ALL_BUSY, '["sales"]')])
async def test_all_members_busy_goes_to_the_alternate_destination_at_once(pbx) -> None:
    await make_busy(pbx, "202")
    await make_busy(pbx, "203")
    await call_group_from(pbx, "201")
    loop = asyncio.get_running_loop()
    dialled = loop.time()
    await pbx.phone("205").wait_ringing(timeout=2.0)
    assert loop.time() - dialled < 0.8, "no member could ring: straight on"
    pbx.phone("205").off_hook()
    await pbx.wait_state("201", LegState.CONNECTED)
    for number in ("201", "202", "203", "205"):
        pbx.phone(number).on_hook()
    record = await pbx.last_record()
    assert (record.called_extension, record.answered_extension) == ("202", "205")


# ----- circular -------------------------------------------------------------------------------

CIRCULAR = group("circular", ring_s=0.7)


async def circular_call(pbx, answerer: str) -> list[str]:
    """One city call to the group answered by `answerer`; the order the phones rang in."""
    line = pbx.line("city1")
    with RingLog(pbx) as rings:
        line.ring("212345678")
        await pbx.phone(answerer).wait_ringing(timeout=5.0)
        pbx.phone(answerer).off_hook()
        await pbx.wait_state(answerer, LegState.CONNECTED)
    await pbx.sim.wait_until(lambda: line.seized, 2.0, "the exchange sees the line answered")
    line.hang_up()
    await pbx.wait_state(answerer, LegState.CLEARING)
    pbx.phone(answerer).on_hook()
    record = await pbx.last_record()
    assert record.answered_extension == answerer
    # The release reaches the simulated exchange a moment after the record is written.
    await pbx.sim.wait_until(lambda: not line.seized and line.call is None, 3.0, "line free")
    return rings.starts()


@pytest.mark.parametrize("pbx_config", [office_with_routing(CIRCULAR, '["sales"]')])
async def test_circular_starts_after_the_member_who_answered_last(pbx) -> None:
    assert await circular_call(pbx, "203") == ["202", "203"]
    assert await circular_call(pbx, "202") == ["204", "202"]
    assert await circular_call(pbx, "203") == ["203"]
    assert await circular_call(pbx, "202") == ["204", "202"]


async def test_circular_remembers_its_turn_across_a_restart(data_dir) -> None:
    config = office_with_routing(CIRCULAR, '["sales"]')
    pbx = await start_pbx(config, data_dir, with_api=False)
    try:
        assert await circular_call(pbx, "203") == ["202", "203"]
    finally:
        await pbx.app.stop()
    with sqlite3.connect(data_dir / "hunt.sqlite3") as database:  # read back independently
        rows = database.execute(
            "SELECT hunt_group, member, answered_utc FROM hunt_last_answered"
        ).fetchall()
    assert [(group_name, member) for group_name, member, _ in rows] == [("sales", "203")]
    assert rows[0][2].endswith("Z") and len(rows[0][2]) == len("2026-01-01T00:00:00.000Z")
    pbx = await start_pbx(config, data_dir, with_api=False)
    try:
        assert await circular_call(pbx, "204") == ["204"], "starts after 203, as before the restart"
    finally:
        await pbx.app.stop()


# ----- what the caller hears, and a caller who leaves -----------------------------------------

MUSIC_GROUP = group("sequential", members=("202", "203"), caller_hears="music")


@pytest.mark.parametrize("pbx_config", [office_with_routing(MUSIC_GROUP, '["sales"]')])
async def test_music_caller_is_answered_first_and_hears_music_while_members_ring(pbx) -> None:
    line, sales = pbx.line("city1"), pbx.phone("202")
    with RingLog(pbx) as rings:
        line.ring("212345678")
        await pbx.sim.wait_until(lambda: line.seized, 4.0, "answered by the exchange")
        mark = line.mark()
        await sales.wait_ringing()
        await asyncio.sleep(0.6)
    assert rings.at("city1", "seized") <= rings.at("202", "start"), "answered before anyone rings"
    music = pbx.app.mixer.sounds.samples_of("music:default")
    assert prompt_similarity(line.heard(mark), music[: 8000 * 2]) > 0.8, "music on the line"
    sales.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.speech_both_ways(line, sales)
    sales.on_hook()
    record = await pbx.last_record()
    assert (record.disposition, record.answered_extension) == (Disposition.ANSWERED, "202")


@pytest.mark.parametrize("pbx_config", [office_with_routing(group("simultaneous"), '["sales"]')])
async def test_caller_hanging_up_stops_every_member_ringing(pbx) -> None:
    caller = await call_group_from(pbx, "201")
    for number in MEMBERS:
        await pbx.wait_state(number, LegState.ALERTING)
    caller.on_hook()
    for number in MEMBERS:
        await pbx.wait_state(number, LegState.IDLE)
        assert pbx.phone(number).ringing is None
    record = await pbx.last_record()
    assert (record.disposition, record.cause) == (
        Disposition.ABANDONED,
        "caller_hung_up_in_hunt_group",
    )


# ----- config ---------------------------------------------------------------------------------


def test_a_member_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            office_with_routing(group("sequential", members=("202", "203", "202")), '["sales"]'),
            "<t>",
        )
    assert any("hunt group 'sales': member '202' is listed twice" in e for e in caught.value.errors)


def test_a_member_that_is_not_digits_is_refused_with_an_example() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            office_with_routing(group("sequential", members=("202", "mobile")), '["sales"]'), "<t>"
        )
    assert any(
        "member 'mobile' must be 2 to 24 of the keys 0-9 * #" in e for e in caught.value.errors
    )


def test_more_members_than_max_members_is_refused() -> None:
    many = tuple(str(number) for number in range(201, 209))
    text = office_with_routing(group("simultaneous", members=many), '["sales"]')
    text = text.replace('caller_hears = "ringback"', 'caller_hears = "ringback"\nmax_members = 5')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "<t>")
    assert any("8 members, more than max_members (5)" in e for e in caught.value.errors)
