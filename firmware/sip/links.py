"""The service's view of its trunks and sibling links: where they are, whether they can
take a call, and their status.

`SipLinks` owns the resolver, the registration client and the keep-alive monitor, and the
sibling authenticator, so `SipService` only asks it questions: which peer an address
belongs to, where to send a leg, whether a trunk is available. Started after the SIP
socket, stopped before it (the un-registrations need the socket).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from firmware.config.schema import SiblingSiteConfig, SipPeerConfig
from firmware.sip.calls import local_address_towards
from firmware.sip.peers import PeerMonitor, PeerTarget, Resolver, is_ip
from firmware.sip.siblings import SIBLING_PREFIX, SiblingAuthenticator, sibling_name
from firmware.sip.stack import Address, Peer
from firmware.sip.trunk_registration import TrunkRegistrations

if TYPE_CHECKING:
    from firmware.sip.stack import SipStack

log = logging.getLogger(__name__)


class SipLinks:
    """Trunks (`[[sip.peers]]`) and sibling sites as far as SIP is concerned.

    `peers()` and `siblings()` are read when asked, so call routing follows a reloaded
    config; registrations and keep-alives are set up from the config at `start`.
    `backoff_base_s` / `backoff_max_s` are the registration retry waits (shorter in tests).
    """

    def __init__(
        self,
        stack: SipStack,
        site: str,
        peers: Callable[[], tuple[SipPeerConfig, ...]],
        siblings: Callable[[], Iterable[SiblingSiteConfig]],
        *,
        listen_host: Callable[[], str],
        digest_algorithms: Iterable[str] = ("SHA-256", "MD5"),
        resolver: Resolver | None = None,
        backoff_base_s: float = 30.0,
        backoff_max_s: float = 1800.0,
        probe_timeout_s: float | None = None,
    ) -> None:
        self.stack = stack
        self.site = site
        self.peers = peers
        self.siblings = siblings
        self.listen_host = listen_host
        self.resolver = resolver or Resolver()
        self.registrations = TrunkRegistrations(
            stack, self.resolver, self.local_host, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s
        )
        self.monitor = PeerMonitor(stack, self.resolver, self.local_host, probe_timeout_s=probe_timeout_s)
        self.sibling_auth = SiblingAuthenticator(site, siblings, algorithms=digest_algorithms)

    # ----- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        peers = self.peers()
        targets = [PeerTarget(p.name, p.host, p.port, p.keepalive_s, p.transport) for p in peers]
        targets += [
            PeerTarget(SIBLING_PREFIX + s.name, s.host, s.port, s.keepalive_s, s.transport)
            for s in self.siblings() if s.host
        ]  # fmt: skip
        self.monitor.start(targets, names_to_resolve=[(p.host, p.port) for p in peers])
        self.registrations.start(peers)

    async def stop(self) -> None:
        await self.registrations.stop()  # un-registers: the socket is still open
        await self.monitor.stop()

    # ----- addresses -----------------------------------------------------------------------

    def local_host(self, towards: str) -> str:
        """Our address as seen from `towards` (an IP): the listen address unless it is a wildcard."""
        host = self.listen_host()
        return local_address_towards(towards) if host in ("", "0.0.0.0") else host

    def peer_for(self, source: Address) -> SipPeerConfig | None:
        """The trunk `source` belongs to: its IP, or an address its host name resolved to."""
        ip = source[0]
        for peer in self.peers():
            if peer.host == ip or (not peer.is_ip and ip in self.resolver.addresses(peer.host)):
                return peer
        return None

    def destination(self, peer: SipPeerConfig) -> Address | None:
        """Where a leg to `peer` is sent (a TCP `Peer` for TCP); None while a name is unresolved."""
        ip = peer.host if is_ip(peer.host) else self.resolver.address(peer.host)
        if ip is None:
            return None
        return Peer(ip, peer.port, "tcp") if peer.transport == "tcp" else (ip, peer.port)

    def sibling(self, name: str) -> SiblingSiteConfig | None:
        return self.sibling_auth.by_name(name)

    def sibling_at(self, source: Address) -> SiblingSiteConfig | None:
        """The sibling `source` is: host and port; over TCP (ephemeral source ports) the host.

        Over UDP a sibling sends from its SIP port, so the exact match keeps a phone that
        shares a sibling's address (a lab, one NAT) from being taken for the sibling.
        """
        site = self.sibling_auth.sibling_for(source, exact=True)
        if site is None and getattr(source, "transport", "udp") == "tcp":
            site = self.sibling_auth.sibling_for(source, exact=False)
        return site

    # ----- availability and status ---------------------------------------------------------

    def available(self, name: str) -> bool:
        """Can a call be sent to trunk `name` or "sibling:NAME" now? (Channel limits aside.)"""
        site_name = sibling_name(name)
        if site_name is not None:
            return self.sibling(site_name) is not None and self.monitor.is_up(name)
        peer = next((p for p in self.peers() if p.name == name), None)
        if peer is None or not self.monitor.is_up(name):
            return False
        if peer.registration and not self.registrations.is_registered(name):
            return False
        return self.destination(peer) is not None

    def trunk_status(self, calls: Callable[[str], int]) -> dict[str, dict[str, Any]]:
        registrations = self.registrations.status()
        return {
            peer.name: {
                "host": f"{peer.transport}:{peer.host}:{peer.port}",
                "available": self.available(peer.name),
                "registration": registrations.get(peer.name),
                "reachable": self.monitor.state(peer.name),
                "keepalive": self.monitor.status().get(peer.name),
                "calls": calls(peer.name),
            }
            for peer in self.peers()
        }

    def sibling_status(self, calls: Callable[[str], int]) -> dict[str, dict[str, Any]]:
        monitor = self.monitor.status()
        refused = self.sibling_auth.refused_by_site
        return {
            site.name: {
                "host": f"{site.transport}:{site.host}:{site.port}" if site.host else None,
                "available": self.available(SIBLING_PREFIX + site.name),
                "reachable": self.monitor.state(SIBLING_PREFIX + site.name),
                "keepalive": monitor.get(SIBLING_PREFIX + site.name),
                "calls": calls(SIBLING_PREFIX + site.name),
                "auth_refused": refused.get(site.name, 0),
            }
            for site in self.siblings()
        }
