"""Peer reachability (OPTIONS keep-alive) and host-name resolution, against scripted answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest

from firmware.sip.message import Request, Response, make_response
from firmware.sip.peers import DOWN, UNKNOWN, UP, PeerMonitor, PeerTarget, ResolveError, Resolver

LOCAL = ("192.0.2.1", 5080)


class ScriptedStack:
    def __init__(self, answer: Callable[[Request], Response | None]) -> None:
        self.answer = answer
        self.local_address = LOCAL
        self.sent: list[tuple[Request, tuple[str, int]]] = []

    async def request(self, request: Request, destination: tuple[str, int], on_response=None, **_options: object) -> Response:
        self.sent.append((request, destination))
        response = self.answer(request)
        if response is None:
            await asyncio.sleep(3600)  # silence: only the probe's own timeout ends the wait
        assert response is not None
        return response


def answering(status: int) -> Callable[[Request], Response]:
    return lambda request: make_response(request, status)


class Lookup:
    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.calls = 0

    async def __call__(self, host: str, _port: int) -> list[str]:
        self.calls += 1
        await asyncio.sleep(0.01)
        if host not in self.names:
            raise OSError(-2, "Name or service not known")
        return self.names[host]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_resolver_passes_ip_literals_and_caches_names_for_their_ttl() -> None:
    lookup = Lookup({"sip.example": ["198.51.100.1", "198.51.100.2"]})
    clock = Clock()
    resolver = Resolver(ttl_s=60.0, lookup=lookup, clock=clock)
    assert await resolver.resolve("203.0.113.5", 5060) == "203.0.113.5"
    assert lookup.calls == 0
    assert resolver.address("sip.example") is None
    # Concurrent askers share one lookup.
    results = await asyncio.gather(*(resolver.resolve("SIP.example", 5060) for _ in range(5)))
    assert results == ["198.51.100.1"] * 5
    assert lookup.calls == 1
    assert resolver.addresses("sip.example") == ("198.51.100.1", "198.51.100.2")
    clock.now = 59.0
    await resolver.resolve("sip.example", 5060)
    assert lookup.calls == 1
    clock.now = 61.0
    lookup.names["sip.example"] = ["198.51.100.3"]
    assert await resolver.resolve("sip.example", 5060) == "198.51.100.3"
    assert lookup.calls == 2


async def test_a_name_that_stops_resolving_keeps_its_last_addresses_for_matching() -> None:
    lookup = Lookup({"sip.example": ["198.51.100.1"]})
    clock = Clock()
    resolver = Resolver(ttl_s=10.0, lookup=lookup, clock=clock)
    await resolver.resolve("sip.example", 5060)
    del lookup.names["sip.example"]
    clock.now = 20.0
    with pytest.raises(ResolveError, match=r"^dns:"):
        await resolver.resolve("sip.example", 5060)
    assert resolver.addresses("sip.example") == ("198.51.100.1",)
    assert resolver.failures == 1


async def test_the_real_resolver_runs_getaddrinfo_off_the_loop() -> None:
    resolver = Resolver()
    assert await resolver.resolve("localhost", 5060) == "127.0.0.1"


async def test_a_cancelled_caller_does_not_cancel_the_lookup_for_others() -> None:
    lookup = Lookup({"sip.example": ["198.51.100.1"]})
    resolver = Resolver(lookup=lookup)
    first = asyncio.ensure_future(resolver.resolve("sip.example", 5060))
    second = asyncio.ensure_future(resolver.resolve("sip.example", 5060))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "198.51.100.1"


def monitor(stack: ScriptedStack, **options: object) -> PeerMonitor:
    return PeerMonitor(stack, Resolver(), lambda _ip: LOCAL[0], **options)  # type: ignore[arg-type]


TARGET = PeerTarget("provider", "198.51.100.7", 5060, 30.0)


@pytest.mark.parametrize("status", [200, 404, 405, 481, 500])
async def test_any_answer_but_503_and_408_means_up(status: int) -> None:
    peers = monitor(ScriptedStack(answering(status)))
    assert await peers.probe(TARGET) == UP
    assert peers.is_up("provider")


@pytest.mark.parametrize("status", [503, 408])
async def test_503_and_408_mean_down(status: int) -> None:
    peers = monitor(ScriptedStack(answering(status)))
    assert await peers.probe(TARGET) == DOWN
    assert not peers.is_up("provider")
    assert peers.status()["provider"]["last_status"] == status


async def test_silence_is_down_after_the_probe_timeout_and_changes_are_counted() -> None:
    answer: Callable[[Request], Response | None] = answering(200)
    stack = ScriptedStack(lambda request: answer(request))
    peers = monitor(stack, probe_timeout_s=0.05)
    assert peers.state("provider") is None
    assert await peers.probe(TARGET) == UP
    answer = lambda _request: None  # noqa: E731
    assert await peers.probe(TARGET) == DOWN
    assert await peers.probe(TARGET) == DOWN
    answer = answering(200)
    assert await peers.probe(TARGET) == UP
    status = peers.status()["provider"]
    assert (status["went_up"], status["went_down"], status["probes"], status["failures"]) == (2, 1, 4, 2)
    request, destination = stack.sent[0]
    assert request.method == "OPTIONS"
    assert str(request.uri) == "sip:198.51.100.7"
    assert destination == ("198.51.100.7", 5060)
    assert request.headers.get("Via").startswith("SIP/2.0/UDP 192.0.2.1:5080;branch=z9hG4bK")


async def test_an_unresolvable_peer_is_down() -> None:
    peers = PeerMonitor(ScriptedStack(answering(200)), Resolver(lookup=Lookup({})), lambda _ip: LOCAL[0])  # type: ignore[arg-type]
    assert await peers.probe(PeerTarget("provider", "gone.example", 5060, 30.0)) == DOWN
    assert peers.status()["provider"]["reason"].startswith("dns:")


async def test_monitor_probes_on_its_interval_and_ignores_unmonitored_peers() -> None:
    stack = ScriptedStack(answering(200))
    lookup = Lookup({"sip.example": ["198.51.100.9"]})
    peers = PeerMonitor(stack, Resolver(lookup=lookup), lambda _ip: LOCAL[0])  # type: ignore[arg-type]
    peers.start(
        [replace(TARGET, keepalive_s=0.1), PeerTarget("quiet", "198.51.100.8", 5060, 0.0)],
        names_to_resolve=[("sip.example", 5060), ("198.51.100.7", 5060)],
    )
    try:
        assert peers.state("provider") == UNKNOWN
        for _ in range(100):
            if len(stack.sent) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(stack.sent) >= 3, "a probe every keepalive_s"
        assert peers.state("provider") == UP
        assert peers.state("quiet") is None and peers.is_up("quiet")
        assert peers.resolver.addresses("sip.example") == ("198.51.100.9",)
        assert lookup.calls == 1
    finally:
        await peers.stop()
    sent = len(stack.sent)
    await asyncio.sleep(0.15)
    assert len(stack.sent) == sent, "stopped means no more probes"
