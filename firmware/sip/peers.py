"""Where trunks and sibling sites are, and whether they answer.

- `Resolver`: provider host names to IPv4 addresses through `loop.getaddrinfo` (a thread of
  the default executor: the event loop never waits on DNS), cached for `ttl_s`. The last
  good answer is kept after the name stops resolving, so calls from a provider whose DNS
  hiccups are still recognised by their source address.
- `PeerMonitor`: an OPTIONS probe every `keepalive_s` to each monitored peer. Any response
  says the peer's SIP stack is alive (a 404 or 405 to OPTIONS is still an answer), except
  503 (overloaded or out of service) and 408/no answer: those mark it down. Changes are
  logged and counted; call control skips a trunk that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware.sip.headers import Headers
from firmware.sip.message import Request, new_branch, new_call_id, new_tag
from firmware.sip.uri import SipUri

if TYPE_CHECKING:
    from firmware.sip.stack import SipStack

log = logging.getLogger(__name__)

Address = tuple[str, int]
# (host, port) -> the IPv4 addresses it resolves to; raises OSError when it does not.
Lookup = Callable[[str, int], Awaitable[list[str]]]
USER_AGENT = "minipbx"


class ResolveError(Exception):
    """A host name that gave no IPv4 address (the text says why, for the trunk's status)."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _getaddrinfo(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(slots=True)
class _Entry:
    addresses: tuple[str, ...]
    fresh_until: float


class Resolver:
    """Host names to addresses, never blocking the loop; IP literals pass through.

    SRV/NAPTR (RFC 3263) are not looked up: the configured host and port are used as given.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 300.0,
        lookup: Lookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._lookup = lookup or _getaddrinfo
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, asyncio.Task[tuple[str, ...]]] = {}
        self.failures = 0

    async def resolve(self, host: str, port: int) -> str:
        """The address to send to: the first of the name's addresses; ResolveError if none."""
        if is_ip(host):
            return host
        key = host.lower()
        entry = self._entries.get(key)
        if entry is not None and entry.fresh_until > self._clock():
            return entry.addresses[0]
        task = self._pending.get(key)
        if task is None:  # one lookup at a time per name, however many ask
            task = asyncio.get_running_loop().create_task(self._fresh_lookup(key, port))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._lookup_done(key, done))
        addresses = await asyncio.shield(task)  # a cancelled caller leaves the lookup running
        return addresses[0]

    def _lookup_done(self, key: str, task: asyncio.Task[tuple[str, ...]]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: nobody may be waiting any more

    async def _fresh_lookup(self, key: str, port: int) -> tuple[str, ...]:
        try:
            found = tuple(await self._lookup(key, port))
        except (OSError, UnicodeError) as error:
            self.failures += 1
            log.warning("event=sip_dns_failed host=%s error=%r", key, str(error))
            raise ResolveError(f"dns: {error}") from None
        if not found:
            self.failures += 1
            log.warning("event=sip_dns_failed host=%s error='no IPv4 address'", key)
            raise ResolveError("dns: no IPv4 address")
        before = self._entries.get(key)
        if before is None or before.addresses != found:
            log.info("event=sip_dns_resolved host=%s addresses=%s", key, ",".join(found))
        self._entries[key] = _Entry(found, self._clock() + self.ttl_s)
        return found

    def addresses(self, host: str) -> tuple[str, ...]:
        """Every address `host` is known by (an IP is itself), even past its TTL."""
        if is_ip(host):
            return (host,)
        entry = self._entries.get(host.lower())
        return entry.addresses if entry is not None else ()

    def address(self, host: str) -> str | None:
        """The address to send to without waiting: None for a name not resolved yet."""
        known = self.addresses(host)
        return known[0] if known else None


def build_request(
    method: str,
    uri: SipUri,
    *,
    local: Address,
    from_uri: str,
    to_uri: str,
    call_id: str,
    cseq: int,
    from_tag: str | None = None,
) -> Request:
    """An out-of-dialog request (OPTIONS, REGISTER) as RFC 3261 §8.1.1 builds it."""
    host, port = local
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport")
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<{from_uri}>;tag={from_tag or new_tag()}")
    headers.add("To", f"<{to_uri}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("User-Agent", USER_AGENT)
    return Request(method, uri, headers)


@dataclass(frozen=True, slots=True)
class PeerTarget:
    """Something to probe: a trunk (its name) or a sibling ("sibling:NAME")."""

    name: str
    host: str
    port: int
    keepalive_s: float
    transport: str = "udp"


UNKNOWN, UP, DOWN = "unknown", "up", "down"
# Responses that say the far end is there but will not take calls.
_DOWN_STATUSES = frozenset({408, 503})


@dataclass(slots=True)
class Reachability:
    """What the probes of one peer found."""

    state: str = UNKNOWN
    last_status: int | None = None
    last_reason: str = ""
    changed_at: float | None = None  # wall clock
    probes: int = 0
    failures: int = 0
    went_up: int = 0
    went_down: int = 0
    rtt_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "last_status": self.last_status, "reason": self.last_reason,
            "changed_at": round(self.changed_at, 1) if self.changed_at else None,
            "probes": self.probes, "failures": self.failures, "went_up": self.went_up,
            "went_down": self.went_down, "rtt_ms": self.rtt_ms,
        }  # fmt: skip


LocalHost = Callable[[str], str]  # destination IP -> the address we are reached at from there


class PeerMonitor:
    """OPTIONS keep-alives: one task per monitored peer, plus one that keeps names resolved.

    A peer without probes (keepalive_s = 0) is never "down": `is_up` is True for it, and
    for a monitored peer before its first answer. `probe_timeout_s` defaults to the probe
    interval (at most 32 s, the transaction's own limit), so a silent peer is down within
    one interval instead of piling up probes.
    """

    def __init__(
        self,
        stack: SipStack,
        resolver: Resolver,
        local_host: LocalHost,
        *,
        probe_timeout_s: float | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stack = stack
        self.resolver = resolver
        self.local_host = local_host
        self.probe_timeout_s = probe_timeout_s
        self.wall = wall
        self.targets: dict[str, PeerTarget] = {}
        self.peers: dict[str, Reachability] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._cseq = 0

    def start(self, targets: Iterable[PeerTarget], names_to_resolve: Iterable[tuple[str, int]] = ()) -> None:
        """Probe `targets` with keepalive_s > 0; keep `names_to_resolve` (host, port) fresh."""
        loop = asyncio.get_running_loop()
        for target in targets:
            if target.keepalive_s <= 0:
                continue
            self.targets[target.name] = target
            self.peers[target.name] = Reachability()
            self._tasks.append(loop.create_task(self._probe_loop(target), name=f"sip-keepalive-{target.name}"))
        names = {(host.lower(), port) for host, port in names_to_resolve if not is_ip(host)}
        if names:
            self._tasks.append(loop.create_task(self._resolve_loop(sorted(names)), name="sip-dns-refresh"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ----- queries -------------------------------------------------------------------------

    def is_up(self, name: str) -> bool:
        """False only for a monitored peer whose last probe failed."""
        reach = self.peers.get(name)
        return reach is None or reach.state != DOWN

    def state(self, name: str) -> str | None:
        """"up", "down", "unknown" (no answer yet), or None when not monitored."""
        reach = self.peers.get(name)
        return reach.state if reach is not None else None

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: reach.to_json() for name, reach in self.peers.items()}

    # ----- probing -------------------------------------------------------------------------

    async def _resolve_loop(self, names: list[tuple[str, int]]) -> None:
        """Inbound calls are matched by source address: names must stay resolved."""
        while True:
            for host, port in names:
                with contextlib.suppress(Exception):
                    await self.resolver.resolve(host, port)
            await asyncio.sleep(max(self.resolver.ttl_s, 1.0))

    async def _probe_loop(self, target: PeerTarget) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.probe(target)
            except Exception:  # a bug here must not end the keep-alive for good
                log.exception("event=sip_keepalive_failed peer=%s", target.name)
            await asyncio.sleep(max(target.keepalive_s - (loop.time() - started), 0.05))

    async def probe(self, target: PeerTarget) -> str:
        """One OPTIONS to `target`; its new state."""
        reach = self.peers.setdefault(target.name, Reachability())
        reach.probes += 1
        try:
            address = await self.resolver.resolve(target.host, target.port)
        except ResolveError as error:
            return self._record(target.name, reach, None, str(error))
        destination = (address, target.port)
        local = (self.local_host(address), self.stack.local_address[1])
        self._cseq += 1
        port_part = f":{target.port}" if target.port != 5060 else ""
        uri = SipUri(host=target.host, port=target.port if port_part else None)
        request = build_request(
            "OPTIONS", uri, local=local, from_uri=f"sip:keepalive@{local[0]}",
            to_uri=f"sip:{target.host}{port_part}", call_id=new_call_id(local[0]), cseq=self._cseq,
        )  # fmt: skip
        request.headers.add("Accept", "application/sdp")
        timeout = self.probe_timeout_s or min(max(target.keepalive_s, 1.0), 32.0)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            response = await asyncio.wait_for(
                self.stack.request(request, destination, transport=target.transport), timeout
            )
        except TimeoutError:
            return self._record(target.name, reach, None, "no answer")
        reach.rtt_ms = round((loop.time() - sent) * 1000, 1)
        return self._record(target.name, reach, response.status, response.reason)

    def _record(self, name: str, reach: Reachability, status: int | None, reason: str) -> str:
        up = status is not None and status not in _DOWN_STATUSES
        reach.last_status = status
        reach.last_reason = reason if status is None else f"{status} {reason}".strip()
        if not up:
            reach.failures += 1
        new = UP if up else DOWN
        if new != reach.state:
            previous, reach.state = reach.state, new
            reach.changed_at = self.wall()
            if up:
                reach.went_up += 1
                log.info("event=sip_peer_up peer=%s status=%s was=%s", name, status, previous)
            else:
                reach.went_down += 1
                log.warning("event=sip_peer_down peer=%s reason=%r was=%s", name, reach.last_reason, previous)
        return new
