"""SIP digest authentication (RFC 3261 §22 with RFC 7616 and RFC 8760): both ends of it.

Sans-I/O: plain values in (method, request-URI, header values, body, `now`), plain values
out; no sockets, no clocks, no message classes, so the registrar, the proxy side of the B2BUA
and the trunk client all share it and the tests need nothing but strings.

- `DigestServer` challenges and verifies. Its nonces carry their own issue time and an HMAC,
  so nothing is stored per challenge; only nonces that authenticated a request are tracked,
  for replay protection, in a bounded LRU.
- `DigestClient` answers 401/407 challenges, counting nonce uses across requests.
- `parse_auth_header` / `format_auth_header` read and write the header values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

# ---------------------------------------------------------------------------- algorithms

_HashFunction = Callable[[bytes], "hashlib._Hash"]


def _sha512_256(data: bytes) -> hashlib._Hash:
    return hashlib.new("sha512_256", data)


def _hash_functions() -> dict[str, _HashFunction]:
    functions: dict[str, _HashFunction] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
    try:
        _sha512_256(b"")
    except ValueError:  # an OpenSSL build without SHA-512/256
        return functions
    functions["SHA-512-256"] = _sha512_256
    return functions


# Base algorithm names (RFC 8760 §2.1) to hash functions; "<name>-sess" variants reuse them.
_HASH_FUNCTIONS: Final = _hash_functions()
SUPPORTED_ALGORITHMS: Final = tuple(_HASH_FUNCTIONS)
_SESSION_SUFFIX = "-SESS"
# What a server offers unless told otherwise, most preferred first (RFC 8760 §2.2: the UAS
# lists its challenges in the order it prefers them). MD5 stays for the phones that know
# nothing else.
DEFAULT_SERVER_ALGORITHMS: Final = ("SHA-256", "MD5")


def _split_algorithm(algorithm: str) -> tuple[str, bool]:
    """("SHA-256", False) for "sha-256", ("MD5", True) for "MD5-sess"; raise if unknown."""
    name = algorithm.upper()
    session = name.endswith(_SESSION_SUFFIX)
    if session:
        name = name[: -len(_SESSION_SUFFIX)]
    if name not in _HASH_FUNCTIONS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return name, session


def canonical_algorithm(algorithm: str) -> str:
    """The spelling we send and key stored secrets by: "SHA-256", "MD5-sess", ..."""
    name, session = _split_algorithm(algorithm)
    return name + "-sess" if session else name


def _hex_digest(base_algorithm: str, text: str) -> str:
    return _HASH_FUNCTIONS[base_algorithm](text.encode("utf-8")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password): what the appliance stores instead of the password.

    A "-sess" algorithm stores the same value as its base algorithm: the session key is
    derived per nonce when a response is computed.
    """
    base, _session = _split_algorithm(algorithm)
    return _hex_digest(base, f"{username}:{realm}:{password}")


def digest_response(
    *,
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 7616 §3.4.1 (RFC 2069 form when qop is None)."""
    base, session = _split_algorithm(algorithm)
    if session:
        ha1_hex = _hex_digest(base, f"{ha1_hex}:{nonce}:{cnonce}")
    if qop == "auth-int":
        body_hash = _HASH_FUNCTIONS[base](body).hexdigest()
        ha2 = _hex_digest(base, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hex_digest(base, f"{method}:{uri}")
    if qop is None:
        return _hex_digest(base, f"{ha1_hex}:{nonce}:{ha2}")
    return _hex_digest(base, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---------------------------------------------------------------------------- header values


class AuthHeaderError(ValueError):
    """A WWW-Authenticate / Authorization value that does not follow the grammar."""


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# Unquoted values: a token by the grammar, but phones also send bare URIs (uri=sip:100@pbx).
_BARE_VALUE = re.compile(r"[^\s,\"]+")
_UNSAFE_IN_QUOTES = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

AuthChallenge = tuple[str, dict[str, str]]


def _skip_whitespace(text: str, position: int) -> int:
    length = len(text)
    while position < length and text[position] in " \t\r\n":
        position += 1
    return position


def parse_auth_header(value: str) -> list[AuthChallenge]:
    """`(scheme, params)` pairs from one header value; param names lower-cased.

    Usually one pair; several when a peer folded challenges into one value the HTTP way
    (`Digest realm="a", nonce="1", Digest realm="b", ...`). Quoted values are unescaped.
    """
    results: list[AuthChallenge] = []
    params: dict[str, str] | None = None
    position = _skip_whitespace(value, 0)
    length = len(value)
    while position < length:
        if value[position] == ",":
            position = _skip_whitespace(value, position + 1)
            continue
        token = _TOKEN.match(value, position)
        if token is None:
            raise AuthHeaderError(f"expected a token at {position} in {value!r}")
        position = _skip_whitespace(value, token.end())
        if position >= length or value[position] != "=":
            params = {}
            results.append((token.group(), params))
            continue
        if params is None:
            raise AuthHeaderError(f"parameter before the scheme in {value!r}")
        position = _skip_whitespace(value, position + 1)
        quoted = _QUOTED_STRING.match(value, position)
        if quoted is not None:
            parameter_value = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
            position = quoted.end()
        else:
            bare = _BARE_VALUE.match(value, position)
            if bare is None:
                raise AuthHeaderError(f"parameter {token.group()!r} has no value in {value!r}")
            parameter_value = bare.group()
            position = bare.end()
        name = token.group().lower()
        if name in params:
            raise AuthHeaderError(f"parameter {name!r} given twice in {value!r}")
        params[name] = parameter_value
        position = _skip_whitespace(value, position)
        if position < length and value[position] != ",":
            raise AuthHeaderError(f"expected ',' at {position} in {value!r}")
    return results


def quote_string(text: str) -> str:
    """A quoted-string with `\\` and `"` escaped; control characters are refused."""
    if _UNSAFE_IN_QUOTES.search(text):
        raise ValueError(f"control character in {text!r}: it would break the header")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_auth_header(scheme: str, params: Mapping[str, str], *, bare: Iterable[str] = ()) -> str:
    """`Digest a="x", b=y`: every param quoted except those named in `bare`, which must be tokens."""
    bare_names = frozenset(bare)
    parts = []
    for name, parameter_value in params.items():
        if name in bare_names:
            if _TOKEN.fullmatch(parameter_value) is None:
                raise ValueError(f"{name}={parameter_value!r} is not a token")
            parts.append(f"{name}={parameter_value}")
        else:
            parts.append(f"{name}={quote_string(parameter_value)}")
    return f"{scheme} " + ", ".join(parts)


# Unquoted by the grammars of RFC 3261 §25.1 / RFC 7616 §3.3-3.4.
_CHALLENGE_BARE = ("algorithm", "stale")
_CREDENTIALS_BARE = ("algorithm", "qop", "nc")


def _parse_qop_options(text: str) -> list[str]:
    return [option.strip().lower() for option in text.split(",") if option.strip()]


# ---------------------------------------------------------------------------- server side


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """What the appliance keeps for one account: HA1 per algorithm, so no password at rest."""

    ha1_by_algorithm: Mapping[str, str]

    @classmethod
    def from_password(
        cls,
        username: str,
        realm: str,
        password: str,
        algorithms: Iterable[str] = SUPPORTED_ALGORITHMS,
    ) -> StoredCredential:
        return cls(
            {
                canonical_algorithm(algorithm): ha1(username, realm, password, algorithm)
                for algorithm in algorithms
            }
        )

    def ha1_for(self, algorithm: str) -> str | None:
        """The HA1 a response with `algorithm` is checked against ("-sess" uses its base)."""
        base, _session = _split_algorithm(algorithm)
        return self.ha1_by_algorithm.get(base)


CredentialLookup = Callable[[str], StoredCredential | None]


@dataclass(frozen=True, slots=True)
class Accepted:
    """The request is authenticated as `username`."""

    username: str
    algorithm: str


@dataclass(frozen=True, slots=True)
class Stale:
    """The password was right but the nonce cannot be used: challenge again with stale=true."""

    username: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Not authenticated; count it against the source and challenge again (or refuse).

    `reason` is for the appliance's own log only. An unknown user and a wrong password give
    the same answer on the wire; `known_user` tells them apart for the log.
    """

    username: str
    reason: str
    known_user: bool


@dataclass(frozen=True, slots=True)
class NoCredentials:
    """Nothing for our realm in the request: challenge it; not an authentication failure."""


AuthResult = Accepted | Stale | Failed | NoCredentials

_NONCE_STRUCT = struct.Struct(">Q8s")  # issue time in ms, then 8 random bytes
_NONCE_MAC_SIZE = 16
_NONCE_SIZE = _NONCE_STRUCT.size + _NONCE_MAC_SIZE
_NONCE_TEXT_LENGTH = 43  # unpadded base64 of _NONCE_SIZE bytes
# Nonce counts behind the highest one seen that may still arrive late (reordered requests,
# as with IPsec's anti-replay window); each is accepted once.
REPLAY_WINDOW = 64
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_CLOCK_TOLERANCE_MS = 1000


@dataclass(slots=True)
class _NonceUse:
    """Replay state of one nonce that has authenticated at least one request."""

    issued_ms: int
    highest: int
    seen_bits: int  # bit i set: nonce count (highest - i) was accepted


class DigestServer:
    """Challenges requests for one realm and verifies the answers.

    `lookup(username)` returns the account's `StoredCredential`, or None when there is no
    such account: the answer is then checked against a dummy HA1, so an unknown user costs
    the same work and gets the same answer as a wrong password.
    """

    def __init__(
        self,
        realm: str,
        lookup: CredentialLookup,
        *,
        secret: bytes | None = None,
        algorithms: Iterable[str] = DEFAULT_SERVER_ALGORITHMS,
        qop_options: Iterable[str] = ("auth",),
        allow_no_qop: bool = True,
        nonce_lifetime: float = 300.0,
        max_tracked_nonces: int = 10_000,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.realm = realm
        self._lookup = lookup
        self._secret = secret if secret is not None else os.urandom(32)
        self._algorithms = tuple(dict.fromkeys(canonical_algorithm(a) for a in algorithms))
        if not self._algorithms:
            raise ValueError("a digest server needs at least one algorithm")
        self._accepted_algorithms = frozenset(self._algorithms)
        self._qop_options = tuple(option.lower() for option in qop_options)
        unknown_qop = set(self._qop_options) - {"auth", "auth-int"}
        if unknown_qop:
            raise ValueError(f"unsupported qop {sorted(unknown_qop)}")
        if not self._qop_options and not allow_no_qop:
            raise ValueError("with no qop offered, allow_no_qop must be true")
        self._allow_no_qop = allow_no_qop
        if nonce_lifetime <= 0:
            raise ValueError("nonce_lifetime must be positive")
        self._nonce_lifetime_ms = int(nonce_lifetime * 1000)
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be at least 1")
        self._max_tracked_nonces = max_tracked_nonces
        self._random_bytes = random_bytes
        self._opaque = hmac.new(
            self._secret, b"opaque\x00" + realm.encode("utf-8"), hashlib.sha256
        ).hexdigest()[:32]
        self._dummy_ha1 = {
            algorithm: _hex_digest(_split_algorithm(algorithm)[0], random_bytes(16).hex())
            for algorithm in self._algorithms
        }
        self._nonce_uses: OrderedDict[str, _NonceUse] = OrderedDict()
        # Every nonce dropped from _nonce_uses was issued at or before this time, so a
        # nonce issued later that is not tracked has never been used.
        self._forgotten_before_ms = -1
        self.counters: dict[str, int] = dict.fromkeys(
            ("challenges", "accepted", "stale", "failed", "replays", "nonces_forgotten"), 0
        )

    # ------------------------------------------------------------------ challenges

    def challenge(self, now: float, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate (401) or Proxy-Authenticate (407) values, most preferred first.

        One value per algorithm (RFC 8760 §2.2), all with the same fresh nonce.
        """
        self.counters["challenges"] += 1
        nonce = self._new_nonce(now)
        values = []
        for algorithm in self._algorithms:
            params = {"realm": self.realm, "nonce": nonce, "opaque": self._opaque}
            params["algorithm"] = algorithm
            if self._qop_options:
                params["qop"] = ",".join(self._qop_options)
            if stale:
                params["stale"] = "true"
            values.append(format_auth_header("Digest", params, bare=_CHALLENGE_BARE))
        return values

    def _new_nonce(self, now: float) -> str:
        issued_ms = max(0, int(now * 1000))
        head = _NONCE_STRUCT.pack(issued_ms, self._random_bytes(8))
        return base64.urlsafe_b64encode(head + self._nonce_mac(head)).decode("ascii").rstrip("=")

    def _nonce_mac(self, head: bytes) -> bytes:
        message = head + self.realm.encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_NONCE_MAC_SIZE]

    def _nonce_issue_time(self, nonce: str) -> int | None:
        """Issue time in ms of a nonce we made, None for anything else (tampered, foreign)."""
        if len(nonce) != _NONCE_TEXT_LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except ValueError:
            return None
        if len(raw) != _NONCE_SIZE:
            return None
        head, mac = raw[: _NONCE_STRUCT.size], raw[_NONCE_STRUCT.size :]
        if not hmac.compare_digest(mac, self._nonce_mac(head)):
            return None
        return _NONCE_STRUCT.unpack(head)[0]

    # ------------------------------------------------------------------ verification

    def verify(
        self,
        method: str,
        request_uri: str,
        authorization: Iterable[str],
        now: float,
        body: bytes = b"",
    ) -> AuthResult:
        """Check the Authorization (or Proxy-Authorization) values of one request.

        `authorization` is every value of that header in the request (possibly none);
        the one for our realm is used. `body` matters only for qop=auth-int.
        """
        if isinstance(authorization, str):
            raise TypeError("pass the header values as a list, not one string")
        params, malformed = self._select_credentials(authorization)
        if params is None:
            if malformed:
                return self._failed("", "malformed credentials", False)
            return NoCredentials()
        result = self._verify_params(method, request_uri, params, now, body)
        if isinstance(result, Accepted):
            self.counters["accepted"] += 1
        elif isinstance(result, Stale):
            self.counters["stale"] += 1
        return result

    def _select_credentials(self, values: Iterable[str]) -> tuple[dict[str, str] | None, bool]:
        malformed = False
        for value in values:
            try:
                parsed = parse_auth_header(value)
            except AuthHeaderError:
                malformed = True
                continue
            for scheme, params in parsed:
                if scheme.lower() == "digest" and params.get("realm") == self.realm:
                    return params, False
        return None, malformed

    def _verify_params(
        self, method: str, request_uri: str, params: dict[str, str], now: float, body: bytes
    ) -> AuthResult:
        username = params.get("username", "")
        stored = self._lookup(username) if username else None
        known_user = stored is not None
        nonce = params.get("nonce")
        uri = params.get("uri")
        response = params.get("response")
        if not username or nonce is None or uri is None or response is None:
            return self._failed(username, "malformed credentials", known_user)
        try:
            algorithm = canonical_algorithm(params.get("algorithm", "MD5"))
        except ValueError:
            algorithm = ""
        if algorithm not in self._accepted_algorithms:
            return self._failed(username, "algorithm not offered", known_user)

        qop = params.get("qop")
        cnonce = nc = None
        nonce_count = 1
        if qop is None:
            if not self._allow_no_qop:
                return self._failed(username, "qop required", known_user)
        else:
            qop = qop.lower()
            cnonce, nc = params.get("cnonce"), params.get("nc")
            if qop not in self._qop_options:
                return self._failed(username, "qop not offered", known_user)
            if not cnonce or nc is None or not 1 <= len(nc) <= 8 or not _HEX_DIGITS.issuperset(nc):
                return self._failed(username, "malformed credentials", known_user)
            nonce_count = int(nc, 16)
            if nonce_count == 0:
                return self._failed(username, "malformed credentials", known_user)

        # The same work whether or not the user exists, and whatever the password.
        stored_ha1 = stored.ha1_for(algorithm) if stored is not None else None
        expected = digest_response(
            algorithm=algorithm,
            ha1_hex=stored_ha1 if stored_ha1 is not None else self._dummy_ha1[algorithm],
            nonce=nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        matches = hmac.compare_digest(
            expected.encode("ascii"), response.lower().encode("utf-8", "surrogatepass")
        )
        if stored is None:
            return self._failed(username, "unknown user", known_user)
        if stored_ha1 is None:
            return self._failed(username, f"no stored secret for {algorithm}", known_user)
        if not matches:
            return self._failed(username, "wrong response", known_user)

        # The answer proves the password; what remains is whether this nonce may be used.
        if uri != request_uri:
            return self._failed(username, "digest uri is not the request-uri", known_user)
        issued_ms = self._nonce_issue_time(nonce)
        if issued_ms is None:
            # E.g. issued before a restart (new secret, so the old opaque is echoed too).
            return Stale(username, "nonce not issued here")
        if params.get("opaque", self._opaque) != self._opaque:
            return self._failed(username, "opaque mismatch", known_user)
        age_ms = int(now * 1000) - issued_ms
        if age_ms > self._nonce_lifetime_ms:
            return Stale(username, "nonce expired")
        if age_ms < -_CLOCK_TOLERANCE_MS:
            return Stale(username, "nonce issued in the future")  # the clock went back
        verdict = self._use_nonce(nonce, issued_ms, nonce_count)
        if verdict == "forgotten":
            return Stale(username, "nonce no longer tracked")
        if verdict == "replay":
            self.counters["replays"] += 1
            if qop is None:
                # Without qop a reused nonce cannot be told from a replay: ask for a new one.
                return Stale(username, "nonce reused without qop")
            return self._failed(username, "replayed nonce count", known_user)
        return Accepted(username, algorithm)

    def _failed(self, username: str, reason: str, known_user: bool) -> Failed:
        self.counters["failed"] += 1
        return Failed(username, reason, known_user)

    def _use_nonce(self, nonce: str, issued_ms: int, nonce_count: int) -> str:
        """Record a use of a nonce by an authenticated request: "ok", "replay" or "forgotten".

        Only authenticated uses are tracked, so strangers cannot fill the table.
        """
        use = self._nonce_uses.get(nonce)
        if use is None:
            if issued_ms <= self._forgotten_before_ms:
                return "forgotten"
            self._nonce_uses[nonce] = _NonceUse(issued_ms, nonce_count, 1)
            while len(self._nonce_uses) > self._max_tracked_nonces:
                _old_nonce, old_use = self._nonce_uses.popitem(last=False)
                self._forgotten_before_ms = max(self._forgotten_before_ms, old_use.issued_ms)
                self.counters["nonces_forgotten"] += 1
            return "ok"
        self._nonce_uses.move_to_end(nonce)
        if nonce_count > use.highest:
            shift = nonce_count - use.highest
            use.seen_bits = ((use.seen_bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            use.highest = nonce_count
            return "ok"
        behind = use.highest - nonce_count
        if behind >= REPLAY_WINDOW or use.seen_bits >> behind & 1:
            return "replay"
        use.seen_bits |= 1 << behind
        return "ok"


# ---------------------------------------------------------------------------- client side


@dataclass(slots=True)
class _ClientSession:
    """The challenge we answer for one realm, and how often its nonce has been used."""

    header_name: str
    realm: str
    nonce: str
    algorithm: str
    qop: str | None
    opaque: str | None
    send_algorithm: bool
    nonce_count: int = 0


_CHALLENGE_HEADERS: Final = {401: "Authorization", 407: "Proxy-Authorization"}


def _new_cnonce() -> str:
    return os.urandom(12).hex()


class DigestClient:
    """Answers 401/407 challenges for one account, for a trunk or a test phone.

    Flow: the request comes back 401/407 -> `handle_challenge(...)`; if it says retry,
    send the request again with `authorization_headers(...)` added. Later requests carry
    the same headers pre-emptively, counting up nc on the same nonce, until the server
    challenges again.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        realm: str | None = None,
        make_cnonce: Callable[[], str] = _new_cnonce,
    ) -> None:
        self.username = username
        self.password = password
        self.realm = realm  # None: answer a challenge from any realm
        self._make_cnonce = make_cnonce
        self._sessions: dict[tuple[str, str], _ClientSession] = {}

    def handle_challenge(
        self,
        status_code: int,
        challenge_values: Iterable[str],
        sent_authorization: Iterable[str] = (),
    ) -> bool:
        """Take the challenges of a 401/407; True if the request should be sent again.

        `challenge_values` are the response's WWW-Authenticate (401) or Proxy-Authenticate
        (407) values; `sent_authorization` the Authorization (401) or Proxy-Authorization
        (407) values the challenged request carried. Credentials on a fresh nonce (its
        first use) refused without stale=true mean the password is wrong: False, and the
        realm is dropped, so a wrong password never loops. stale=true, or a refused re-used
        nonce, means "same password, new nonce": True, without asking anyone.
        """
        header_name = _CHALLENGE_HEADERS.get(status_code)
        if header_name is None:
            raise ValueError(f"{status_code} is not a challenge (401 or 407)")
        chosen = self._choose_challenges(challenge_values)
        if not chosen:
            return False
        sent_uses = self._sent_uses(header_name, sent_authorization)
        for realm, params in chosen.items():
            stale = params.get("stale", "").lower() == "true"
            if not stale and sent_uses.get(realm) == 1:
                self._sessions.pop((header_name, realm), None)
                return False
        for realm, params in chosen.items():
            qop_options = _parse_qop_options(params.get("qop", ""))
            self._sessions[(header_name, realm)] = _ClientSession(
                header_name=header_name,
                realm=realm,
                nonce=params["nonce"],
                algorithm=canonical_algorithm(params.get("algorithm", "MD5")),
                qop=next((q for q in ("auth", "auth-int") if q in qop_options), None),
                opaque=params.get("opaque"),
                send_algorithm="algorithm" in params,
            )
        return True

    def authorization_headers(
        self, method: str, uri: str, body: bytes = b""
    ) -> list[tuple[str, str]]:
        """(header name, value) pairs answering every challenge held; nc counts up."""
        return [self._answer(session, method, uri, body) for session in self._sessions.values()]

    def forget(self) -> None:
        """Drop every held challenge (the account changed, or the registration ended)."""
        self._sessions.clear()

    def _answer(
        self, session: _ClientSession, method: str, uri: str, body: bytes
    ) -> tuple[str, str]:
        session.nonce_count += 1
        nc = f"{session.nonce_count:08x}" if session.qop is not None else None
        cnonce = self._make_cnonce() if session.qop is not None else None
        response = digest_response(
            algorithm=session.algorithm,
            ha1_hex=ha1(self.username, session.realm, self.password, session.algorithm),
            nonce=session.nonce,
            method=method,
            uri=uri,
            qop=session.qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        params = {
            "username": self.username,
            "realm": session.realm,
            "nonce": session.nonce,
            "uri": uri,
            "response": response,
        }
        if session.send_algorithm:
            params["algorithm"] = session.algorithm
        if session.qop is not None and nc is not None and cnonce is not None:
            params["cnonce"] = cnonce
            params["qop"] = session.qop
            params["nc"] = nc
        if session.opaque is not None:
            params["opaque"] = session.opaque
        return session.header_name, format_auth_header("Digest", params, bare=_CREDENTIALS_BARE)

    def _choose_challenges(self, values: Iterable[str]) -> dict[str, dict[str, str]]:
        """Per realm, the topmost challenge we can answer (RFC 8760 §2.3).

        Local policy on top: MD5 only when nothing stronger is offered for that realm.
        """
        chosen: dict[str, dict[str, str]] = {}
        for value in values:
            try:
                parsed = parse_auth_header(value)
            except AuthHeaderError:
                continue  # a challenge we cannot read is one we do not understand
            for scheme, params in parsed:
                realm = params.get("realm")
                if scheme.lower() != "digest" or realm is None or "nonce" not in params:
                    continue
                if self.realm is not None and realm != self.realm:
                    continue
                if not _can_answer(params):
                    continue
                current = chosen.get(realm)
                if current is None or (_is_md5(current) and not _is_md5(params)):
                    chosen[realm] = params
        return chosen

    def _sent_uses(self, header_name: str, values: Iterable[str]) -> dict[str, int]:
        """Realm -> which use of its nonce the challenged request's credentials were.

        From nc when qop was used; otherwise from our own count, if the nonce is the one
        still held. Credentials on a nonce we no longer hold count as re-used.
        """
        uses: dict[str, int] = {}
        for value in values:
            try:
                parsed = parse_auth_header(value)
            except AuthHeaderError:
                continue
            for _scheme, params in parsed:
                realm = params.get("realm")
                if realm is None:
                    continue
                nc = params.get("nc")
                if nc is not None and 1 <= len(nc) <= 8 and _HEX_DIGITS.issuperset(nc):
                    uses[realm] = int(nc, 16)
                    continue
                session = self._sessions.get((header_name, realm))
                held = session is not None and session.nonce == params.get("nonce")
                uses[realm] = session.nonce_count if held and session is not None else 2
        return uses


def _can_answer(params: Mapping[str, str]) -> bool:
    try:
        canonical_algorithm(params.get("algorithm", "MD5"))
    except ValueError:
        return False
    if "qop" not in params:
        return True
    return bool({"auth", "auth-int"} & set(_parse_qop_options(params["qop"])))


def _is_md5(params: Mapping[str, str]) -> bool:
    return _split_algorithm(params.get("algorithm", "MD5"))[0] == "MD5"
