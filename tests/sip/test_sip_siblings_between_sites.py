"""Two sites' SIP services in one process, linked as siblings: digest both ways, 403 for a
wrong password, the correlation id carried, reachability by OPTIONS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from firmware.calls.channel import CallerId, Channel, ChannelEvent, EventKind
from firmware.calls.lifecycle import LegState
from firmware.config.schema import SiblingSiteConfig, SipConfig
from firmware.media.mixer import Mixer
from firmware.media.rtp_endpoint import RtpEndpoint, RtpPortRange
from firmware.sip.calls import SipCallLeg
from firmware.sip.service import SipService

SECRET = "hq-branch-link-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@dataclass
class CallControl:
    """Stands in for CallManager: takes calls from siblings and answers them at once."""

    from_sibling: list[tuple[SipCallLeg, str, str]] = field(default_factory=list)
    events: list[tuple[Channel, EventKind]] = field(default_factory=list)
    callers: list[CallerId | None] = field(default_factory=list)
    outbound_leg: object = None
    extra_devices: object = None
    trunk_available: object = None

    def on_event(self, channel: Channel, event: ChannelEvent) -> None:
        self.events.append((channel, event.kind))

    def start_from_sibling(self, leg: SipCallLeg, dialled: str, site: SiblingSiteConfig,
                           caller: CallerId | None = None) -> None:  # fmt: skip
        self.from_sibling.append((leg, dialled, site.name))
        self.callers.append(caller)
        leg.handler = self.on_event
        asyncio.get_running_loop().create_task(self._answer(leg))

    async def _answer(self, leg: SipCallLeg) -> None:
        leg.set_state(LegState.ALERTING)
        await leg.indicate_ringing()
        await leg.seize()
        leg.set_state(LegState.CONNECTED)

    def kinds(self, leg: Channel) -> list[EventKind]:
        return [kind for channel, kind in self.events if channel is leg]


@dataclass
class Site:
    name: str
    port: int
    service: SipService
    calls: CallControl


async def open_site(name: str, port: int, siblings: tuple[SiblingSiteConfig, ...], rtp_base: int) -> Site:
    mixer = Mixer()
    rtp = RtpEndpoint(RtpPortRange(rtp_base, rtp_base + 100))
    mixer.add_endpoint(rtp)
    service = SipService(name, SipConfig(), mixer, siblings=siblings, probe_timeout_s=0.5)
    calls = CallControl()
    service.attach(calls, rtp)  # type: ignore[arg-type]
    await service.start("127.0.0.1", port)
    return Site(name, port, service, calls)


def link(name: str, port: int, password: str = SECRET, keepalive_s: float = 0.0) -> SiblingSiteConfig:
    return SiblingSiteConfig(name=name, extensions=("2xx",) if name == "hq" else ("3xx",), host="127.0.0.1",
                             port=port, password=password, keepalive_s=keepalive_s)  # fmt: skip


@pytest.fixture
async def sites(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Site, Site]]:
    """hq and branch; a test may ask (via its marker-free param) for mismatched passwords."""
    branch_knows_hq_by = getattr(request, "param", SECRET)
    hq_port, branch_port = free_port(), free_port()
    hq = await open_site("hq", hq_port, (link("branch", branch_port, keepalive_s=0.2),), 31000)
    branch = await open_site("branch", branch_port, (link("hq", hq_port, branch_knows_hq_by),), 31200)
    try:
        yield hq, branch
    finally:
        for site in (hq, branch):
            for leg in list(site.service.legs.values()):
                await leg.release("shutdown")
                leg.set_state(LegState.IDLE)
            await site.service.stop()


async def call(caller: Site, callee: Site, number: str, correlation: str = "") -> SipCallLeg:
    leg = caller.service.new_outbound_leg(f"sibling:{callee.name}")
    assert leg is not None
    if correlation:
        leg.correlation_id = correlation
    leg.handler = caller.calls.on_event
    leg.set_state(LegState.DIALLING)
    await leg.dial(number, CallerId("201", "Reception"))
    return leg


async def test_hq_calls_branch_with_digest_and_the_correlation_id(sites: tuple[Site, Site]) -> None:
    hq, branch = sites
    leg = await call(hq, branch, "301", correlation="9c1b6d0e5f2a4e7d8b3c1a2f0e9d8c7b")
    await until(lambda: EventKind.ANSWERED in hq.calls.kinds(leg))
    (inbound, dialled, site), = branch.calls.from_sibling
    assert (dialled, site) == ("301", "hq")
    assert inbound.correlation_id == "9c1b6d0e5f2a4e7d8b3c1a2f0e9d8c7b"
    assert inbound.peer.name == "sibling:hq"
    assert branch.calls.callers == [CallerId("201", "Reception")]
    assert branch.service.links.sibling_auth.counters["accepted"] == 1
    assert branch.service.links.sibling_auth.counters["challenged"] == 1
    assert branch.service.status()["siblings"]["hq"]["calls"] == 1
    assert hq.service.status()["siblings"]["branch"]["calls"] == 1
    await leg.release("normal")
    leg.set_state(LegState.IDLE)
    await until(lambda: EventKind.FAR_END_CLEARED in branch.calls.kinds(inbound))


async def test_branch_calls_hq_the_other_way_and_gets_a_new_correlation_id(sites: tuple[Site, Site]) -> None:
    hq, branch = sites
    leg = await call(branch, hq, "201")
    await until(lambda: EventKind.ANSWERED in branch.calls.kinds(leg))
    (inbound, dialled, site), = hq.calls.from_sibling
    assert (dialled, site) == ("201", "branch")
    assert len(inbound.correlation_id) == 32, "none sent: the called site makes one"
    assert hq.service.links.sibling_auth.counters["accepted"] == 1


@pytest.mark.parametrize("sites", ["not-the-shared-secret"], indirect=True)
async def test_wrong_password_gets_403_and_no_call(sites: tuple[Site, Site]) -> None:
    hq, branch = sites
    leg = await call(hq, branch, "301")
    await until(lambda: EventKind.FAR_END_CLEARED in hq.calls.kinds(leg))
    assert branch.calls.from_sibling == []
    auth = branch.service.status()["sibling_auth"]
    assert auth["refused"] == 1 and auth["refused_by_site"] == {"hq": 1}
    assert branch.service.status()["siblings"]["hq"]["auth_refused"] == 1
    await leg.release("normal")
    leg.set_state(LegState.IDLE)


async def test_a_site_that_is_not_a_sibling_gets_403(sites: tuple[Site, Site]) -> None:
    _hq, branch = sites
    stranger = await open_site("lab", free_port(), (link("branch", branch.port),), 31400)
    try:
        leg = await call(stranger, branch, "301")
        await until(lambda: EventKind.FAR_END_CLEARED in stranger.calls.kinds(leg))
        assert branch.calls.from_sibling == []
        assert branch.service.rejected_peers == 1
        await leg.release("normal")
        leg.set_state(LegState.IDLE)
    finally:
        await stranger.service.stop()


async def test_keepalive_marks_the_sibling_down_when_it_stops(sites: tuple[Site, Site]) -> None:
    hq, branch = sites
    await until(lambda: hq.service.links.monitor.state("sibling:branch") == "up")
    assert hq.service.peer_available("sibling:branch")
    assert not hq.service.peer_available("sibling:nowhere")
    await branch.service.stop()
    await until(lambda: hq.service.links.monitor.state("sibling:branch") == "down")
    assert not hq.service.peer_available("sibling:branch")
    assert hq.service.new_outbound_leg("sibling:branch") is None
    assert hq.service.status()["siblings"]["branch"]["reachable"] == "down"
