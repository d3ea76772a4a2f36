"""The SIP registrar (RFC 3261 §10): SIP phones register their contacts with digest auth.

Three layers, so the rules can be tested without sockets, clocks or disk:
- pure expiry math (`requested_expires`, `granted_expires`) and `BindingTable`, the
  in-memory bindings per address-of-record; `Registrar.handle` turns a REGISTER, its source
  and the two clocks into a response (or None: drop it) and a list of changes;
- `BindingStore`, the SQLite file (WAL) that keeps bindings across a restart;
- `Registrar` itself: the in-memory table answers on the event loop at once, while every
  disk operation goes, in order, to one writer thread; a periodic task purges expired
  bindings and the guard's old entries.

Two clocks: binding expiry is wall time (it must survive a restart), while digest nonces and
the brute-force guard use monotonic time (immune to clock steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.sip.auth import (
    DEFAULT_SERVER_ALGORITHMS,
    Accepted,
    DigestServer,
    Failed,
    Stale,
    StoredCredential,
)
from firmware.sip.guard import AuthGuard, GuardPolicy
from firmware.sip.headers_values import NameAddr
from firmware.sip.message import Request, Response, make_response
from firmware.sip.message_errors import SipParseError
from firmware.sip.uri import SipUri

if TYPE_CHECKING:
    from firmware.config.schema import Config

log = logging.getLogger(__name__)

DATABASE_NAME = "registrations.sqlite3"
MIN_EXPIRES_S = 60  # below this a REGISTER gets 423 (RFC 3261 §10.3 step 7)
MAX_EXPIRES_S = 3600  # above this the registrar shortens the binding
DEFAULT_EXPIRES_S = 3600  # no Expires header and no expires parameter
MAX_CONTACTS_PER_AOR = 10  # desk phone, softphone, mobile app...: bounded all the same
PURGE_INTERVAL_S = 30.0
_CSEQ_OUT_OF_ORDER = "Server Internal Error (CSeq out of order)"
_WILDCARD_NEEDS_ZERO = "Bad Request (Contact: * needs Expires: 0)"

Address = tuple[str, int]


# ---------------------------------------------------------------------------- expiry math


def requested_expires(contact: NameAddr, header_expires: int | None, default: int) -> int:
    """What the phone asked for one contact: its expires parameter, else the Expires header."""
    parameter = contact.expires
    if parameter is not None:
        return parameter
    return header_expires if header_expires is not None else default


def granted_expires(requested: int, minimum: int, maximum: int) -> int | None:
    """Seconds the binding gets: 0 removes it, None means too brief (423), long ones shrink."""
    if requested == 0:
        return 0
    if requested < minimum:
        return None
    return min(requested, maximum)


# ---------------------------------------------------------------------------- bindings


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of one address-of-record, as call routing will use it.

    `source` is where the REGISTER really came from (host:port, the received/rport of a
    phone behind NAT): requests to the phone go there, not to a private Contact address.
    `expires_at` and `registered_at` are wall-clock seconds (UTC epoch).
    """

    aor: str
    extension: str
    contact: str
    source: str
    expires_at: float
    call_id: str
    cseq: int
    registered_at: float

    def expires_in(self, now: float) -> int:
        """Whole seconds left (rounded up, so a live binding never shows 0)."""
        remaining = self.expires_at - now
        return max(0, int(remaining) + (remaining % 1 > 0))

    @property
    def source_address(self) -> Address:
        host, _, port = self.source.rpartition(":")
        return host.strip("[]"), int(port)


class BindingTable:
    """The current bindings, per address-of-record then per contact URI (sans-I/O)."""

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}

    def current(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of an AOR, the most recently registered first."""
        bindings = self._by_aor.get(aor)
        if not bindings:
            return []
        live = [binding for binding in bindings.values() if binding.expires_at > now]
        return sorted(live, key=lambda binding: binding.registered_at, reverse=True)

    def get(self, aor: str, contact: str) -> Binding | None:
        return self._by_aor.get(aor, {}).get(contact)

    def put(self, binding: Binding) -> None:
        self._by_aor.setdefault(binding.aor, {})[binding.contact] = binding

    def remove(self, aor: str, contact: str) -> Binding | None:
        bindings = self._by_aor.get(aor)
        if bindings is None:
            return None
        removed = bindings.pop(contact, None)
        if not bindings:
            del self._by_aor[aor]
        return removed

    def remove_all(self, aor: str) -> list[Binding]:
        return list(self._by_aor.pop(aor, {}).values())

    def purge(self, now: float) -> list[Binding]:
        """Drop and return the expired bindings."""
        expired = [
            binding
            for bindings in self._by_aor.values()
            for binding in bindings.values()
            if binding.expires_at <= now
        ]
        for binding in expired:
            self.remove(binding.aor, binding.contact)
        return expired

    def all(self, now: float) -> list[Binding]:
        return [binding for aor in sorted(self._by_aor) for binding in self.current(aor, now)]

    def __len__(self) -> int:
        return sum(len(bindings) for bindings in self._by_aor.values())


@dataclass(frozen=True, slots=True)
class Changes:
    """What a REGISTER changed, for the store: bindings written and bindings removed."""

    saved: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()


# ---------------------------------------------------------------------------- store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    extension TEXT NOT NULL,
    source TEXT NOT NULL,
    expires_at REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    registered_at REAL NOT NULL,
    PRIMARY KEY (aor, contact)
)
"""
_COLUMNS = "aor, contact, extension, source, expires_at, call_id, cseq, registered_at"


class BindingStore:
    """The registrations database; blocking, so only ever used from the writer thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None

    def open(self) -> None:
        connection = sqlite3.connect(
            self.path, isolation_level=None, timeout=10.0, check_same_thread=False
        )
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("event=registrar_db_not_wal path=%s mode=%s", self.path, mode)
            connection.execute(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the registrations database is not open")
        return self._connection

    def load(self, now: float) -> list[Binding]:
        """Unexpired bindings; expired ones are deleted on the way."""
        connection = self.connection
        connection.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
        rows = connection.execute(f"SELECT {_COLUMNS} FROM bindings ORDER BY registered_at")
        return [
            Binding(aor, extension, contact, source, expires_at, call_id, cseq, registered_at)
            for (aor, contact, extension, source, expires_at, call_id, cseq, registered_at) in rows
        ]

    def apply(self, changes: Changes) -> None:
        """One transaction per REGISTER, so a crash never leaves half of one on disk."""
        connection = self.connection
        with connection:
            connection.execute("BEGIN")
            connection.executemany(
                "DELETE FROM bindings WHERE aor = ? AND contact = ?",
                [(binding.aor, binding.contact) for binding in changes.removed],
            )
            connection.executemany(
                f"INSERT OR REPLACE INTO bindings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (b.aor, b.contact, b.extension, b.source, b.expires_at, b.call_id, b.cseq,
                     b.registered_at)
                    for b in changes.saved
                ],
            )  # fmt: skip

    def purge(self, now: float) -> None:
        self.connection.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))


# ---------------------------------------------------------------------------- registrar


def credentials_from_config(config: Config, realm: str) -> dict[str, StoredCredential]:
    """HA1 per algorithm for every extension with a sip_password: no password kept after."""
    return {
        extension.number: StoredCredential.from_password(
            extension.number, realm, extension.sip_password
        )
        for extension in config.extensions
        if extension.sip_password
    }


class Registrar:
    """Accepts REGISTER for extensions with a SIP password and answers `contacts(extension)`.

    `handle` is the whole protocol decision and never blocks; `start`/`stop` open and close
    the database (in the writer thread) and run the purge task.
    """

    def __init__(
        self,
        realm: str,
        credentials: Mapping[str, StoredCredential],
        data_dir: str | Path | None,
        *,
        guard: AuthGuard | None = None,
        algorithms: Iterable[str] = DEFAULT_SERVER_ALGORITHMS,
        min_expires: int = MIN_EXPIRES_S,
        max_expires: int = MAX_EXPIRES_S,
        default_expires: int = DEFAULT_EXPIRES_S,
        max_contacts: int = MAX_CONTACTS_PER_AOR,
        purge_interval: float = PURGE_INTERVAL_S,
        wall_clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < min_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        self.realm = realm
        self._credentials = dict(credentials)
        # SHA-256 first (RFC 8760); a phone that only reads the first challenge and knows
        # only MD5 (SIPp 3.6 does this) needs algorithms=("MD5",).
        self.digest = DigestServer(realm, self._credentials.get, algorithms=algorithms)
        self.guard = guard if guard is not None else AuthGuard(GuardPolicy())
        self.table = BindingTable()
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = min(max(default_expires, min_expires), max_expires)
        self.max_contacts = max_contacts
        self.purge_interval = purge_interval
        self.wall_clock = wall_clock
        self.monotonic_clock = monotonic_clock
        self.store = BindingStore(Path(data_dir) / DATABASE_NAME) if data_dir is not None else None
        self.counters = dict.fromkeys(
            ("registered", "refreshed", "unregistered", "expired", "challenged", "failed",
             "blocked_now", "refused", "store_errors"),
            0,
        )  # fmt: skip
        self._writer: ThreadPoolExecutor | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._purge_task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config, data_dir: str | Path | None, **options: Any) -> Registrar:
        sip = config.sip
        realm = sip.realm or config.site.name
        options.setdefault("algorithms", sip.digest_algorithms)
        options.setdefault(
            "guard",
            AuthGuard(GuardPolicy(max_failures=sip.auth_max_failures, block_s=sip.auth_block_s,
                                  trusted_networks=tuple(sip.trusted_networks))),
        )  # fmt: skip
        return cls(realm, credentials_from_config(config, realm), data_dir, **options)

    # ----- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database and load the unexpired bindings (a restart keeps phones reachable)."""
        if self.store is not None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="registrar-db")
            loop = asyncio.get_running_loop()
            store = self.store
            now = self.wall_clock()

            def open_and_load() -> list[Binding]:
                store.open()
                return store.load(now)

            for binding in await loop.run_in_executor(self._writer, open_and_load):
                if binding.extension in self._credentials:  # an account may have been removed
                    self.table.put(binding)
            log.info("event=registrar_loaded bindings=%d", len(self.table))
        self._purge_task = asyncio.create_task(self._purge_periodically(), name="registrar-purge")

    async def stop(self) -> None:
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task
            self._purge_task = None
        await self.flush()
        if self._writer is not None and self.store is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self.store.close)
            self._writer.shutdown(wait=True)
            self._writer = None

    async def flush(self) -> None:
        """Until every change handed to the writer is on disk."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # ----- the query for call routing ------------------------------------------------------

    def contacts(self, extension: str) -> list[Binding]:
        """The live bindings of an extension (any domain), most recently registered first."""
        now = self.wall_clock()
        found = [b for b in self.table.all(now) if b.extension == extension]
        return sorted(found, key=lambda binding: binding.registered_at, reverse=True)

    # ----- REGISTER ------------------------------------------------------------------------

    def receive(self, request: Request, source: Address) -> Response | None:
        """The service's entry point: decide with the current clocks, persist, answer."""
        response, changes = self.handle(request, source, self.wall_clock(), self.monotonic_clock())
        if changes.saved or changes.removed:
            self._persist(changes)
        return response

    def handle(
        self, request: Request, source: Address, now: float, monotonic_now: float
    ) -> tuple[Response | None, Changes]:
        """RFC 3261 §10.3 for one REGISTER; (None, ...) means drop it (a blocked source)."""
        outcome = self.authenticate(request, source, monotonic_now)
        if not isinstance(outcome, Accepted):
            return outcome, Changes()
        result = outcome
        headers = request.headers
        try:
            to_uri = headers.to_address.uri
            contacts = headers.contacts
            wildcard = headers.contact_is_wildcard
            header_expires = headers.expires
        except SipParseError as error:
            return self._refuse(request, 400, f"Bad Request ({error.reason[:40]})"), Changes()
        return self._bind(request, source, now, result, to_uri, contacts, wildcard, header_expires)

    @property
    def has_accounts(self) -> bool:
        """Is any extension allowed to sign in as a SIP phone?"""
        return bool(self._credentials)

    def authenticate(self, request: Request, source: Address, monotonic_now: float | None = None) -> Accepted | Response | None:
        """Digest authentication of any request from a phone (REGISTER, INVITE).

        The accepted user, or the 401 to send (unknown users and wrong passwords alike,
        both counted by the guard), or None: the source is blocked, say nothing.
        """
        if monotonic_now is None:
            monotonic_now = self.monotonic_clock()
        host = source[0]
        if self.guard.is_blocked(host, monotonic_now):
            return None
        headers = request.headers
        result = self.digest.verify(
            request.method, str(request.uri), headers.get_all("Authorization"), monotonic_now
        )
        if isinstance(result, Failed):
            # Unknown user or wrong password: the same 401 on the wire, a failure counted.
            self.counters["failed"] += 1
            log.info(
                "event=sip_register_auth_failed source=%s:%d user=%r reason=%s known=%s",
                host, source[1], result.username[:32], result.reason, result.known_user,
            )  # fmt: skip
            block = self.guard.record_failure(host, monotonic_now)
            if block is not None:
                self.counters["blocked_now"] += 1
                log.warning(
                    "event=sip_source_blocked source=%s for_s=%.0f offence=%d",
                    block.source, block.duration_s, block.offence,
                )  # fmt: skip
        if not isinstance(result, Accepted):
            self.counters["challenged"] += 1
            return self._challenge(request, monotonic_now, isinstance(result, Stale))
        return result

    def _bind(
        self, request: Request, source: Address, now: float, result: Accepted, to_uri: Any,
        contacts: Any, wildcard: bool, header_expires: int | None,
    ) -> tuple[Response | None, Changes]:
        """RFC 3261 §10.3 steps 4-8 for an authenticated REGISTER."""
        headers = request.headers
        if not isinstance(to_uri, SipUri) or to_uri.user != result.username:
            # RFC 3261 §10.3 step 4: an account may only change its own bindings.
            return self._refuse(request, 403), Changes()
        aor = to_uri.address_of_record
        call_id = headers.call_id
        cseq = headers.cseq.number
        if wildcard:
            if header_expires != 0:
                return self._refuse(request, 400, _WILDCARD_NEEDS_ZERO), Changes()
            removed = self._remove_all(aor, call_id, cseq)
            if removed is None:
                return self._refuse(request, 500, _CSEQ_OUT_OF_ORDER), Changes()
            return self._ok(request, aor, now), Changes(removed=tuple(removed))
        return self._update(request, result.username, aor, contacts, header_expires, source, now)

    def _update(
        self,
        request: Request,
        extension: str,
        aor: str,
        contacts: list[NameAddr],
        header_expires: int | None,
        source: Address,
        now: float,
    ) -> tuple[Response, Changes]:
        call_id = request.headers.call_id
        cseq = request.headers.cseq.number
        grants: list[tuple[str, int]] = []
        try:
            for contact in contacts:
                asked = requested_expires(contact, header_expires, self.default_expires)
                granted = granted_expires(asked, self.min_expires, self.max_expires)
                if granted is None:
                    response = self._refuse(request, 423)
                    response.headers.add("Min-Expires", str(self.min_expires))
                    return response, Changes()
                key = str(contact.uri)
                existing = self.table.get(aor, key)
                if existing is not None and existing.call_id == call_id and existing.cseq >= cseq:
                    # §10.3 step 7: an old or repeated request must not undo a newer one.
                    return self._refuse(request, 500, _CSEQ_OUT_OF_ORDER), Changes()
                grants.append((key, granted))
        except SipParseError as error:
            return self._refuse(request, 400, f"Bad Request ({error.reason[:40]})"), Changes()
        live = {binding.contact for binding in self.table.current(aor, now)}
        after = (live | {key for key, granted in grants if granted}) - {
            key for key, granted in grants if not granted
        }
        if len(after) > self.max_contacts:
            return self._refuse(request, 403, "Forbidden (too many contacts)"), Changes()
        saved: list[Binding] = []
        removed: list[Binding] = []
        source_text = (
            f"[{source[0]}]:{source[1]}" if ":" in source[0] else f"{source[0]}:{source[1]}"
        )
        for key, granted in grants:
            if granted == 0:
                gone = self.table.remove(aor, key)
                if gone is not None:
                    removed.append(gone)
                    self.counters["unregistered"] += 1
                continue
            previous = self.table.get(aor, key)
            binding = Binding(
                aor=aor, extension=extension, contact=key, source=source_text,
                expires_at=now + granted, call_id=call_id, cseq=cseq, registered_at=now,
            )  # fmt: skip
            self.table.put(binding)
            saved.append(binding)
            fresh = previous is None or previous.expires_at <= now
            self.counters["registered" if fresh else "refreshed"] += 1
            if fresh:
                log.info("event=sip_registered aor=%s contact=%s source=%s", aor, key, source_text)
        return self._ok(request, aor, now), Changes(tuple(saved), tuple(removed))

    def _remove_all(self, aor: str, call_id: str, cseq: int) -> list[Binding] | None:
        current = self.table.current(aor, 0.0)
        if any(b.call_id == call_id and b.cseq >= cseq for b in current):
            return None
        removed = self.table.remove_all(aor)
        self.counters["unregistered"] += len(removed)
        return removed

    def _challenge(self, request: Request, monotonic_now: float, stale: bool) -> Response:
        response = make_response(request, 401)
        for value in self.digest.challenge(monotonic_now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
        return response

    def _refuse(self, request: Request, status: int, reason: str | None = None) -> Response:
        self.counters["refused"] += 1
        return make_response(request, status, reason)

    def _ok(self, request: Request, aor: str, now: float) -> Response:
        """200 listing every current binding with the seconds it has left (§10.3 step 8)."""
        response = make_response(request, 200)
        for binding in self.table.current(aor, now):
            response.headers.add(
                "Contact", f"<{binding.contact}>;expires={binding.expires_in(now)}"
            )
        return response

    # ----- disk, off the loop --------------------------------------------------------------

    def _persist(self, changes: Changes) -> None:
        if self._writer is None or self.store is None:
            return
        future = asyncio.get_running_loop().run_in_executor(self._writer, self.store.apply, changes)
        self._track(future)

    def _track(self, future: asyncio.Future[None]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.counters["store_errors"] += 1
            log.error("event=registrar_store_failed error=%r", error)

    def purge(self) -> list[Binding]:
        """Forget expired bindings (memory now, disk in the writer) and old guard entries."""
        now = self.wall_clock()
        expired = self.table.purge(now)
        self.counters["expired"] += len(expired)
        self.guard.purge(self.monotonic_clock())
        if self._writer is not None and self.store is not None:
            future = asyncio.get_running_loop().run_in_executor(self._writer, self.store.purge, now)
            self._track(future)
        return expired

    async def _purge_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            for binding in self.purge():
                log.info(
                    "event=sip_registration_expired aor=%s contact=%s", binding.aor, binding.contact
                )

    # ----- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For `minipbx status`: who is registered from where, and who is blocked."""
        now = self.wall_clock()
        return {
            "realm": self.realm,
            "accounts": len(self._credentials),
            "registrations": [
                {
                    "aor": binding.aor,
                    "contact": binding.contact,
                    "source": binding.source,
                    "expires_in": binding.expires_in(now),
                }
                for binding in self.table.all(now)
            ],
            "counters": dict(self.counters),
            "guard": self.guard.snapshot(self.monotonic_clock()),
        }

    def accounts(self) -> Iterable[str]:
        return sorted(self._credentials)
