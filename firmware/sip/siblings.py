"""Links between sibling offices: who may call in, and how we call them.

A sibling is trusted by its IP address *and* a shared secret: an INVITE from a sibling's
host is challenged (digest, realm = our site name) and must answer as that sibling (the
username is its site name, the password the link's shared `password`). A wrong answer gets
403, is logged and counted, and nothing else changes; the address alone never carries a
call, so a spoofed or mis-configured neighbour cannot reach our lines.

Our own calls to a sibling are SIP legs whose peer is built from the sibling's config by
`sibling_peer`: they answer the sibling's challenge with our site name and the shared
password (through the leg's digest client, like a provider trunk), and carry the call's
correlation id in `X-Minipbx-Correlation` so both sites' CDRs can be joined.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from firmware.config.schema import SiblingSiteConfig, SipPeerConfig
from firmware.sip.auth import Accepted, DigestServer, Failed, Stale, StoredCredential
from firmware.sip.calls import SipCallLeg
from firmware.sip.message import Request, Response, make_response

log = logging.getLogger(__name__)

Address = tuple[str, int]
SIBLING_PREFIX = "sibling:"
CORRELATION_HEADER = "X-Minipbx-Correlation"
# A sibling link has no channel limit of its own; the schema's ceiling stands in for none.
SIBLING_MAX_CHANNELS = 10_000


def sibling_name(peer_name: str) -> str | None:
    """"hq" for "sibling:hq", None for a trunk's name."""
    return peer_name.removeprefix(SIBLING_PREFIX) if peer_name.startswith(SIBLING_PREFIX) else None


def sibling_peer(site: SiblingSiteConfig, our_site: str) -> SipPeerConfig:
    """The sibling as the peer of a SIP leg: its address and codecs; our name and secret.

    Built without validation: "sibling:NAME" is deliberately not a valid config name, so
    it can never collide with a `[[sip.peers]]` entry.
    """
    return SipPeerConfig.model_construct(
        name=SIBLING_PREFIX + site.name, host=site.host, port=site.port, transport=site.transport,
        codecs=site.codecs, max_channels=SIBLING_MAX_CHANNELS, keepalive_s=site.keepalive_s,
        username=our_site, auth_username=our_site, password=site.password, incoming={},
    )  # fmt: skip


def correlation_of(request: Request) -> str:
    """The caller's correlation id, or a new one when the INVITE brings none (or a bad one)."""
    value = (request.headers.get(CORRELATION_HEADER) or "").strip()
    if value and len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value):
        return value
    return uuid.uuid4().hex


class SiblingAuthenticator:
    """Digest checks of INVITEs from sibling sites, in the realm of our site name.

    `siblings()` is read on every request, so a reloaded sibling list applies at once.
    """

    def __init__(
        self,
        site: str,
        siblings: Callable[[], Iterable[SiblingSiteConfig]],
        *,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.site = site
        self.siblings = siblings
        self.clock = clock
        self.digest = DigestServer(site, self._credential, algorithms=algorithms)
        self.counters: dict[str, int] = dict.fromkeys(("challenged", "accepted", "refused"), 0)
        self.refused_by_site: dict[str, int] = {}

    def _credential(self, username: str) -> StoredCredential | None:
        site = self.by_name(username)
        if site is None or not site.password:
            return None
        return StoredCredential.from_password(username, self.site, site.password)

    def by_name(self, name: str) -> SiblingSiteConfig | None:
        return next((s for s in self.siblings() if s.name == name and s.host), None)

    def sibling_for(self, source: Address, *, exact: bool) -> SiblingSiteConfig | None:
        """The sibling at `source`: its host and port (`exact`), or its host only.

        Two sites may share a host (tests, a lab), so the exact match is tried first.
        """
        linked = [s for s in self.siblings() if s.host and s.password]
        if exact:
            return next((s for s in linked if (s.host, s.port) == source), None)
        return next((s for s in linked if s.host == source[0]), None)

    def check(self, request: Request, source: Address, site: SiblingSiteConfig) -> Response | None:
        """None: the request is `site`'s own. Otherwise the response to send (401 or 403)."""
        result = self.digest.verify(
            request.method, str(request.uri), request.headers.get_all("Authorization"), self.clock()
        )
        if isinstance(result, Accepted) and result.username == site.name:
            self.counters["accepted"] += 1
            return None
        if isinstance(result, Accepted | Failed):
            # A wrong password, or right credentials of another site from this address.
            username = result.username
            reason = result.reason if isinstance(result, Failed) else "credentials of another site"
            self.counters["refused"] += 1
            self.refused_by_site[site.name] = self.refused_by_site.get(site.name, 0) + 1
            log.warning(
                "event=sip_sibling_auth_failed sibling=%s source=%s:%d user=%r reason=%s",
                site.name, source[0], source[1], username[:32], reason,
            )  # fmt: skip
            return make_response(request, 403)
        self.counters["challenged"] += 1
        response = make_response(request, 401)
        for value in self.digest.challenge(self.clock(), stale=isinstance(result, Stale)):
            response.headers.add("WWW-Authenticate", value)
        return response

    def status(self) -> dict[str, Any]:
        return {**self.counters, "refused_by_site": dict(self.refused_by_site)}


class SiblingCallLeg(SipCallLeg):
    """A call leg to or from a sibling site: its INVITE carries the call's correlation id.

    Call control sets `correlation_id` before `dial()`; an inbound leg gets it from the
    sibling's INVITE (`correlation_of`), so both sites' records of one call share it.
    """

    correlation_id: str = ""

    def _request(self, method: str, body: bytes = b"", cseq: int | None = None,
                 content_type: str = "application/sdp", extra: tuple[tuple[str, str], ...] = ()) -> Request:  # fmt: skip
        if method == "INVITE" and self.invite is None and self.correlation_id:  # the first INVITE
            extra = (*extra, (CORRELATION_HEADER, self.correlation_id))
        return super()._request(method, body, cseq, content_type, extra)
