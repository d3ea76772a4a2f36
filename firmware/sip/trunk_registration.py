"""Registering the appliance with providers (RFC 3261 §10, the UA side).

One `TrunkRegistration` per `[[sip.peers]]` entry with `registration = true`: it keeps the
binding sip:username@(domain or host) -> sip:username@our-address alive, answers digest
challenges with `DigestClient`, refreshes at 80 % of what the registrar granted, and after
a failure (403, no answer, 5xx, DNS) retries with exponential back-off and jitter so a
provider that is down is not hammered by every office at the same second. Stopping the
service removes the binding (Expires: 0) within a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from firmware.config.schema import SipPeerConfig
from firmware.sip.auth import DigestClient
from firmware.sip.message import Request, Response, new_call_id, new_tag
from firmware.sip.message_errors import SipParseError
from firmware.sip.peers import LocalHost, ResolveError, Resolver, build_request
from firmware.sip.uri import SipUri

if TYPE_CHECKING:
    from firmware.sip.stack import SipStack

log = logging.getLogger(__name__)

REFRESH_FRACTION = 0.8
MIN_REFRESH_S = 1.0
# Challenges and 423s answered within one attempt before it counts as failed.
MAX_ROUNDS = 4
_RETRY_AFTER = re.compile(r"\s*(\d{1,9})")


class RegistrationState(StrEnum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"


class TrunkRegistration:
    """The registration of one trunk: a loop of attempts, and what the last one found.

    `backoff_base_s` doubles per consecutive failure up to `backoff_max_s`; each delay is
    jittered by ±20 %, and a Retry-After from the registrar replaces it. The clock, the
    random source and the resolver are injectable so tests need not wait for minutes.
    """

    def __init__(
        self,
        peer: SipPeerConfig,
        stack: SipStack,
        resolver: Resolver,
        local_host: LocalHost,
        *,
        backoff_base_s: float = 30.0,
        backoff_max_s: float = 1800.0,
        unregister_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.peer = peer
        self.stack = stack
        self.resolver = resolver
        self.local_host = local_host
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.unregister_timeout_s = unregister_timeout_s
        self.clock = clock
        self.wall = wall
        self.rng = rng
        self.digest = DigestClient(peer.auth_username or peer.username, peer.password)
        self.domain = peer.domain or peer.host
        self.aor = f"sip:{peer.username}@{self.domain}"
        self.call_id = ""  # one Call-ID per boot cycle (RFC 3261 §10.2), made on first use
        self.from_tag = new_tag()
        self.cseq = 0
        self.expires_wanted = peer.register_expires
        # What the status shows.
        self.state = RegistrationState.UNREGISTERED
        self.last_status: int | None = None
        self.last_reason = ""
        self.expires_at: float | None = None  # monotonic
        self.granted_s: int | None = None
        self.next_attempt_at: float | None = None  # monotonic
        self.failures = 0  # consecutive
        self.retry_delay_s: float | None = None  # the wait chosen after the last failure
        self.attempts = 0
        self.registrations = 0
        self.contact = ""
        self._destination: tuple[str, int] | None = None

    # ----- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Register, refresh, retry: until cancelled."""
        while True:
            try:
                delay = await self.attempt()
            except Exception as error:  # a bug must not end the registration for good
                log.exception("event=sip_trunk_registration_error peer=%s", self.peer.name)
                delay = self._failed(None, f"internal error: {error!r}"[:120])
            self.next_attempt_at = self.clock() + delay
            await asyncio.sleep(delay)

    async def attempt(self) -> float:
        """One registration (with its challenges); seconds until the next one."""
        self.attempts += 1
        self.next_attempt_at = None
        if self.state != RegistrationState.REGISTERED:
            self._set_state(RegistrationState.REGISTERING, self.last_status, self.last_reason)
        try:
            address = await self.resolver.resolve(self.peer.host, self.peer.port)
        except ResolveError as error:
            return self._failed(None, str(error))
        self._destination = (address, self.peer.port)
        expires = self.expires_wanted
        response: Response | None = None
        for _round in range(MAX_ROUNDS):
            request = self._request(address, expires)
            response = await self.stack.request(request, self._destination, transport=self.peer.transport)
            try:
                outcome = self._outcome(request, response, expires)
            except SipParseError as error:
                log.warning("event=sip_trunk_bad_response peer=%s status=%d error=%r",
                            self.peer.name, response.status, str(error))  # fmt: skip
                return self._failed(response.status, f"malformed response: {error}")
            if isinstance(outcome, float):
                return outcome
            expires = outcome  # challenged or 423: the same request again
        assert response is not None
        return self._failed(response.status, "too many challenges")

    def _outcome(self, request: Request, response: Response, expires: int) -> float | int:
        """Seconds to the next attempt (done), or the expiry to ask for in a retry now."""
        status = response.status
        headers = response.headers
        if 200 <= status < 300:
            return self._registered(response, expires)
        if status in (401, 407):
            challenge, sent = ("WWW-Authenticate", "Authorization") if status == 401 else (
                "Proxy-Authenticate", "Proxy-Authorization")  # fmt: skip
            if self.digest.handle_challenge(status, headers.get_all(challenge), request.headers.get_all(sent)):
                return expires
            return self._failed(status, "credentials refused" if request.headers.get(sent) else response.reason)
        if status == 423:
            minimum = headers.min_expires
            if minimum is not None and minimum > expires:
                log.info("event=sip_trunk_interval_too_brief peer=%s asked=%d min=%d", self.peer.name, expires, minimum)
                self.expires_wanted = minimum
                return minimum
            return self._failed(status, "423 without a usable Min-Expires")
        return self._failed(status, response.reason or "refused", _retry_after(headers.get("Retry-After")))

    def _registered(self, response: Response, asked: int) -> float:
        granted = self._granted(response, asked)
        if granted <= 0:
            return self._failed(response.status, "registrar granted no time")
        self.failures = 0
        self.registrations += 1
        self.granted_s = granted
        self.expires_at = self.clock() + granted
        self._set_state(RegistrationState.REGISTERED, response.status, response.reason)
        return max(granted * REFRESH_FRACTION, MIN_REFRESH_S)

    def _granted(self, response: Response, asked: int) -> int:
        """Our contact's expires in the 200, else its Expires header, else what we asked."""
        ours = _contact_key(self.contact)
        for contact in response.headers.contacts:
            if isinstance(contact.uri, SipUri) and _uri_key(contact.uri) == ours and contact.expires is not None:
                return contact.expires
        header = response.headers.expires
        return header if header is not None else asked

    def _failed(self, status: int | None, reason: str, retry_after: int | None = None) -> float:
        self.failures += 1
        self.expires_at = None
        self.granted_s = None
        if retry_after is not None:
            delay = float(min(max(retry_after, 1), self.backoff_max_s))  # a silly Retry-After must not park the trunk for days
        else:
            base = min(self.backoff_base_s * 2 ** (self.failures - 1), self.backoff_max_s)
            delay = min(base * (0.8 + 0.4 * self.rng()), self.backoff_max_s)
        self.retry_delay_s = delay
        self.next_attempt_at = self.clock() + delay
        self._set_state(RegistrationState.FAILED, status, reason)
        return delay

    def _set_state(self, state: RegistrationState, status: int | None, reason: str) -> None:
        changed = (state, status, reason) != (self.state, self.last_status, self.last_reason)
        self.state, self.last_status, self.last_reason = state, status, reason
        if not changed:
            return
        level = logging.WARNING if state == RegistrationState.FAILED else logging.INFO
        log.log(
            level, "event=sip_trunk_registration peer=%s state=%s status=%s reason=%r expires_s=%s retry_in_s=%s",
            self.peer.name, state, status if status is not None else "-", reason, self.granted_s or "-",
            round(self.next_attempt_at - self.clock(), 1) if self.next_attempt_at else "-",
        )  # fmt: skip

    # ----- requests ------------------------------------------------------------------------

    def _request(self, address: str, expires: int) -> Request:
        local = (self.local_host(address), self.stack.local_address[1])
        if not self.call_id:
            self.call_id = new_call_id(local[0])
        self.contact = f"sip:{self.peer.username}@{local[0]}:{local[1]}"
        if self.peer.transport == "tcp":
            self.contact += ";transport=tcp"
        self.cseq += 1
        port = self.peer.port if not self.peer.domain and self.peer.port != 5060 else None
        uri = SipUri(host=self.domain, port=port)
        request = build_request(
            "REGISTER", uri, local=local, from_uri=self.aor, to_uri=self.aor,
            call_id=self.call_id, cseq=self.cseq, from_tag=self.from_tag,
        )  # fmt: skip
        request.headers.add("Contact", f"<{self.contact}>")
        request.headers.add("Expires", str(expires))
        for name, value in self.digest.authorization_headers("REGISTER", str(uri)):
            request.headers.add(name, value)
        return request

    async def unregister(self) -> None:
        """Remove our binding (Expires: 0), answering one challenge, within the bounded wait."""
        if self.state != RegistrationState.REGISTERED or self._destination is None:
            self.next_attempt_at = None
            self._set_state(RegistrationState.UNREGISTERED, self.last_status, self.last_reason)
            return
        destination = self._destination
        try:
            async with asyncio.timeout(self.unregister_timeout_s):
                for _round in range(2):
                    request = self._request(destination[0], 0)
                    response = await self.stack.request(request, destination, transport=self.peer.transport)
                    if response.status not in (401, 407):
                        break
                    challenge, sent = ("WWW-Authenticate", "Authorization") if response.status == 401 else (
                        "Proxy-Authenticate", "Proxy-Authorization")  # fmt: skip
                    if not self.digest.handle_challenge(
                        response.status, response.headers.get_all(challenge), request.headers.get_all(sent)
                    ):
                        break
            status, reason = response.status, response.reason
        except TimeoutError:
            status, reason = None, "no answer to un-register"
        self.expires_at = None
        self.granted_s = None
        self.next_attempt_at = None
        self._set_state(RegistrationState.UNREGISTERED, status, reason)

    # ----- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now, wall = self.clock(), self.wall()
        expires_in = self.expires_at - now if self.expires_at is not None else None
        next_in = max(self.next_attempt_at - now, 0.0) if self.next_attempt_at is not None else None
        return {
            "state": str(self.state),
            "status_code": self.last_status,
            "reason": self.last_reason,
            "aor": self.aor,
            "expires_in_s": round(expires_in, 1) if expires_in is not None else None,
            "expires_at": round(wall + expires_in, 1) if expires_in is not None else None,
            "next_attempt_in_s": round(next_in, 1) if next_in is not None else None,
            "next_attempt_at": round(wall + next_in, 1) if next_in is not None else None,
            "failures": self.failures,
            "retry_delay_s": round(self.retry_delay_s, 2) if self.failures and self.retry_delay_s else None,
            "attempts": self.attempts,
        }


class TrunkRegistrations:
    """Every registering trunk of the service: started and stopped with it."""

    def __init__(self, stack: SipStack, resolver: Resolver, local_host: LocalHost, **options: Any) -> None:
        self.stack = stack
        self.resolver = resolver
        self.local_host = local_host
        self.options = options
        self.trunks: dict[str, TrunkRegistration] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, peers: tuple[SipPeerConfig, ...]) -> None:
        loop = asyncio.get_running_loop()
        for peer in peers:
            if not peer.registration or peer.name in self.trunks:
                continue
            trunk = TrunkRegistration(peer, self.stack, self.resolver, self.local_host, **self.options)
            self.trunks[peer.name] = trunk
            self._tasks[peer.name] = loop.create_task(trunk.run(), name=f"sip-register-{peer.name}")

    async def stop(self) -> None:
        """Stop the loops, then un-register every trunk at once (each wait is bounded)."""
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(trunk.unregister() for trunk in self.trunks.values()), return_exceptions=True)

    def is_registered(self, name: str) -> bool:
        trunk = self.trunks.get(name)
        return trunk is not None and trunk.state == RegistrationState.REGISTERED

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: trunk.status() for name, trunk in self.trunks.items()}


def _retry_after(value: str | None) -> int | None:
    """RFC 3261 §20.33: delta-seconds, maybe followed by a comment and parameters."""
    if not value:
        return None
    match = _RETRY_AFTER.match(value)
    return int(match.group(1)) if match else None


def _uri_key(uri: SipUri) -> tuple[str, str, int]:
    return (uri.user or "", uri.host.lower(), uri.port or 5060)


def _contact_key(contact: str) -> tuple[str, str, int]:
    user, _, rest = contact.removeprefix("sip:").partition(";")[0].partition("@")
    host, _, port = rest.partition(":")
    return (user, host.lower(), int(port) if port.isdigit() else 5060)
