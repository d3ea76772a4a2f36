"""The header fields of a SIP message: an ordered multi-dict with typed, lazily parsed views.

Raw values are what travel: a header field is kept as the text it arrived with (unfolded),
so a message is written out as it was read, and only the fields the code asks about are
parsed, once, on first use. Names are case-insensitive and compact forms (v, f, t, i, m...)
are the same field as their long names; both are stored under the canonical spelling.

Parsed views (vias, from_address, contacts...) are for reading: to change a field, set it
again, e.g. `headers.set("Via", vias)` after editing the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

from firmware.sip.headers_values import (
    MAX_UINT32,
    TOKEN,
    AuthValue,
    CSeq,
    MediaType,
    NameAddr,
    Via,
    parse_auth,
    parse_call_id,
    parse_contact_list,
    parse_cseq,
    parse_date,
    parse_media_type,
    parse_media_type_list,
    parse_name_addr,
    parse_name_addr_list,
    parse_token_list,
    parse_unsigned,
    parse_via_list,
)
from firmware.sip.message_errors import SipParseError

CANONICAL_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Transfer-Encoding", "Content-Type", "CSeq", "Date", "Error-Info", "Event",
    "Expires", "From", "History-Info", "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards",
    "MIME-Version", "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity",
    "P-Preferred-Identity", "Path", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition", "Require",
    "Retry-After", "Route", "RSeq", "Server", "Service-Route", "Session-Expires", "SIP-ETag",
    "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)  # fmt: skip
# Compact forms (RFC 3261 §7.3.3 and the extensions that registered one).
COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires", "y": "Identity", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "n": "Identity-Info",
}  # fmt: skip
# Lower-cased name or compact letter -> (key, canonical name); exact spellings too, so the
# usual names skip the lower() call. Keys are the lower-cased canonical names.
HEADER_NAMES: dict[str, tuple[str, str]] = {}
for _name in CANONICAL_NAMES:
    HEADER_NAMES[_name.lower()] = HEADER_NAMES[_name] = (_name.lower(), _name)
for _letter, _name in COMPACT_FORMS.items():
    HEADER_NAMES[_letter] = HEADER_NAMES[_letter.upper()] = (_name.lower(), _name)

_T = TypeVar("_T")
_ABSENT = object()
_NO_VALUES: tuple[str, ...] = ()


def header_key(name: str) -> tuple[str, str]:
    """(lookup key, name to write) for a header name as received or given by code."""
    known = HEADER_NAMES.get(name)
    if known is not None:
        return known
    lower = name.lower()
    known = HEADER_NAMES.get(lower)
    if known is not None:
        return known
    if TOKEN.fullmatch(name) is None:
        raise SipParseError(f"invalid header name {name[:40]!r}")
    return lower, name


def canonical_name(name: str) -> str:
    """The canonical spelling, Call-ID for call-id or i; an unknown name is returned as given."""
    return header_key(name)[1]


def _check_value(value: object) -> str:
    text = str(value)
    if "\r" in text or "\n" in text:
        raise ValueError(f"CR or LF in header value {text!r}")
    return text


class Headers:
    """Ordered header fields; several fields of one name keep their order (Via, Route...)."""

    __slots__ = ("_cache", "_fields", "_index")

    def __init__(
        self, fields: Mapping[str, object] | Iterable[tuple[str, object]] | None = None
    ) -> None:
        self._fields: list[tuple[str, str, str]] = []  # (key, name, raw value)
        self._index: dict[str, tuple[str, ...]] | None = None  # key -> raw values, on demand
        self._cache: dict[str, Any] = {}
        if fields is not None:
            pairs = fields.items() if isinstance(fields, Mapping) else fields
            for name, value in pairs:
                self.add(name, value)

    @classmethod
    def from_fields(
        cls,
        fields: list[tuple[str, str, str]],
        index: dict[str, tuple[str, ...]] | None = None,
    ) -> Headers:
        """Adopt (key, name, value) triples made by the message parser, without copying.

        `index`, when given, must map each key to its values in order (the parser builds
        it in the same pass).
        """
        headers = cls.__new__(cls)
        headers._fields = fields
        headers._index = index
        headers._cache = {}
        return headers

    def _changed(self, key: str) -> None:
        self._index = None
        self._cache.pop(key, None)

    # ------------------------------------------------------------------ multi-dict access

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field of that name, as raw text."""
        values = self._values(header_key(name)[0])
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every field of that name in order, as raw text (one entry per header line)."""
        return list(self._values(header_key(name)[0]))

    def set(self, name: str, value: object) -> None:
        """Replace every field of that name, where the first one was (or at the end).

        A list or tuple value becomes one field per element (several Via or Route lines).
        """
        key, canonical = header_key(name)
        values = value if isinstance(value, list | tuple) else (value,)
        new = [(key, canonical, _check_value(item)) for item in values]
        fields = self._fields
        for index, field in enumerate(fields):
            if field[0] == key:
                rest = [later for later in fields[index + 1 :] if later[0] != key]
                self._fields = fields[:index] + new + rest
                break
        else:
            fields.extend(new)
        self._changed(key)

    def add(self, name: str, value: object, *, first: bool = False) -> None:
        """Append a field, or put it before every other field of its name (a new top Via)."""
        key, canonical = header_key(name)
        field = (key, canonical, _check_value(value))
        if first:
            for index, existing in enumerate(self._fields):
                if existing[0] == key:
                    self._fields.insert(index, field)
                    break
            else:
                self._fields.append(field)
        else:
            self._fields.append(field)
        self._changed(key)

    def remove(self, name: str) -> None:
        """Drop every field of that name (nothing happens if there is none)."""
        key = header_key(name)[0]
        self._fields = [field for field in self._fields if field[0] != key]
        self._changed(key)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return bool(self._values(header_key(name)[0]))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name, raw value) pairs in order, names in their canonical spelling."""
        return ((name, value) for _key, name, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for _key, name, value in self._fields]

    def copy(self) -> Headers:
        return Headers.from_fields(list(self._fields))

    def index(self) -> dict[str, tuple[str, ...]]:
        """Lower-cased canonical name -> raw values in order (do not modify it).

        Tuples, not lists: see message._split_fields (the garbage collector stops tracking a
        tuple of strings, never a list).
        """
        index = self._index
        if index is None:
            index = {}
            for key, _name, value in self._fields:
                values = index.get(key)
                index[key] = (value,) if values is None else (*values, value)
            self._index = index
        return index

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    # -------------------------------------------------------------------- parsed views

    def _parsed(self, key: str, parse: Callable[[], _T]) -> _T:
        cached = self._cache.get(key, _ABSENT)
        if cached is _ABSENT:
            cached = self._cache[key] = parse()
        return cached  # type: ignore[return-value]

    def _values(self, key: str) -> tuple[str, ...]:
        index = self._index if self._index is not None else self.index()
        return index.get(key, _NO_VALUES)

    def _single(self, key: str, what: str) -> str | None:
        values = self._values(key)
        if not values:
            return None
        if len(values) > 1:
            raise SipParseError(f"{len(values)} {what} header fields, only one is allowed")
        return values[0]

    def _required(self, key: str, what: str) -> str:
        value = self._single(key, what)
        if value is None:
            raise SipParseError(f"no {what} header field")
        return value

    def _list(self, key: str, parse: Callable[[str], list[_T]]) -> list[_T]:
        def parse_all() -> list[_T]:
            values: list[_T] = []
            for text in self._values(key):
                values.extend(parse(text))
            return values

        return self._parsed(key, parse_all)

    @property
    def vias(self) -> list[Via]:
        """Every Via, topmost first, across fields and comma-separated values."""
        return self._list("via", parse_via_list)

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("no Via header field")
        return vias[0]

    @property
    def from_address(self) -> NameAddr:
        return self._parsed("from", lambda: parse_name_addr(self._required("from", "From"), "From"))

    @property
    def to_address(self) -> NameAddr:
        return self._parsed("to", lambda: parse_name_addr(self._required("to", "To"), "To"))

    @property
    def call_id(self) -> str:
        return self._parsed("call-id", lambda: parse_call_id(self._required("call-id", "Call-ID")))

    @property
    def cseq(self) -> CSeq:
        return self._parsed("cseq", lambda: parse_cseq(self._required("cseq", "CSeq")))

    def _optional_number(self, key: str, what: str, maximum: int) -> int | None:
        def parse() -> int | None:
            value = self._single(key, what)
            return None if value is None else parse_unsigned(value, maximum, what)

        return self._parsed(key, parse)

    @property
    def max_forwards(self) -> int | None:
        return self._optional_number("max-forwards", "Max-Forwards", 255)

    @property
    def expires(self) -> int | None:
        return self._optional_number("expires", "Expires", MAX_UINT32)

    @property
    def min_expires(self) -> int | None:
        return self._optional_number("min-expires", "Min-Expires", MAX_UINT32)

    @property
    def content_length(self) -> int | None:
        """Content-Length; several fields are tolerated only when they agree."""

        def parse() -> int | None:
            values = {
                parse_unsigned(text, MAX_UINT32, "Content-Length")
                for text in self._values("content-length")
            }
            if len(values) > 1:
                raise SipParseError(f"conflicting Content-Length values {sorted(values)}")
            return values.pop() if values else None

        return self._parsed("content-length", parse)

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values; empty both when absent and for "Contact: *" (see contact_is_wildcard)."""
        return self._contact_parts()[1]

    @property
    def contact_is_wildcard(self) -> bool:
        """True for "Contact: *", which a REGISTER uses to remove every binding."""
        return self._contact_parts()[0]

    def _contact_parts(self) -> tuple[bool, list[NameAddr]]:
        def parse() -> tuple[bool, list[NameAddr]]:
            texts = self._values("contact")
            parts = [parse_contact_list(text) for text in texts]
            if any(wildcard for wildcard, _ in parts):
                if len(parts) > 1:
                    raise SipParseError("Contact: * must be the only Contact value")
                return True, []
            return False, [value for _, values in parts for value in values]

        return self._parsed("contact", parse)

    @property
    def routes(self) -> list[NameAddr]:
        return self._list(
            "route", lambda text: parse_name_addr_list(text, "Route", brackets_required=True)
        )

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._list(
            "record-route",
            lambda text: parse_name_addr_list(text, "Record-Route", brackets_required=True),
        )

    @property
    def content_type(self) -> MediaType | None:
        def parse() -> MediaType | None:
            value = self._single("content-type", "Content-Type")
            return None if value is None else parse_media_type(value)

        return self._parsed("content-type", parse)

    @property
    def accept(self) -> list[MediaType]:
        return self._list("accept", parse_media_type_list)

    @property
    def authorization(self) -> list[AuthValue]:
        """One value per Authorization field (a request may answer several realms)."""
        return self._list("authorization", lambda text: [parse_auth(text)])

    @property
    def proxy_authorization(self) -> list[AuthValue]:
        return self._list("proxy-authorization", lambda text: [parse_auth(text)])

    @property
    def www_authenticate(self) -> list[AuthValue]:
        return self._list("www-authenticate", lambda text: [parse_auth(text)])

    @property
    def proxy_authenticate(self) -> list[AuthValue]:
        return self._list("proxy-authenticate", lambda text: [parse_auth(text)])

    def _tokens(self, key: str, what: str) -> list[str]:
        return self._list(key, lambda text: parse_token_list(text, what))

    @property
    def allow(self) -> list[str]:
        return self._tokens("allow", "Allow")

    @property
    def supported(self) -> list[str]:
        return self._tokens("supported", "Supported")

    @property
    def require(self) -> list[str]:
        return self._tokens("require", "Require")

    @property
    def proxy_require(self) -> list[str]:
        return self._tokens("proxy-require", "Proxy-Require")

    @property
    def unsupported(self) -> list[str]:
        return self._tokens("unsupported", "Unsupported")

    @property
    def date(self) -> datetime | None:
        def parse() -> datetime | None:
            value = self._single("date", "Date")
            return None if value is None else parse_date(value)

        return self._parsed("date", parse)

    def parse_essentials(self, is_request: bool) -> None:
        """Parse Via, From, To, Call-ID, CSeq, Content-Length (and Max-Forwards in a request)
        now, raising SipParseError for any that is missing, repeated or malformed.

        The message parser calls this on every message: these are the fields transactions,
        dialogs and framing depend on. The same work as the properties, without their
        per-call overhead, since it is on the path of every packet.
        """
        index = self._index if self._index is not None else self.index()
        cache = self._cache
        via_texts = index.get("via")
        if not via_texts:
            raise SipParseError("no Via header field")
        if len(via_texts) == 1:
            cache["via"] = parse_via_list(via_texts[0])
        else:
            cache["via"] = [via for text in via_texts for via in parse_via_list(text)]
        cache["from"] = parse_name_addr(_only(index, "from", "From"), "From")
        cache["to"] = parse_name_addr(_only(index, "to", "To"), "To")
        cache["call-id"] = parse_call_id(_only(index, "call-id", "Call-ID"))
        cache["cseq"] = parse_cseq(_only(index, "cseq", "CSeq"))
        length_texts = index.get("content-length")
        if length_texts is not None:
            if len(length_texts) == 1:
                cache["content-length"] = parse_unsigned(
                    length_texts[0], MAX_UINT32, "Content-Length"
                )
            else:
                self.content_length  # noqa: B018 - parses and caches, or raises
        if is_request and "max-forwards" in index:
            cache["max-forwards"] = parse_unsigned(
                _only(index, "max-forwards", "Max-Forwards"), 255, "Max-Forwards"
            )

    def validate(self) -> None:
        """Parse every field this module understands, so a malformed one raises now.

        parse_message checks only what every message needs (Via, From, To, Call-ID, CSeq,
        Max-Forwards, Content-Length); a UAS or registrar calls this before acting on the rest.
        """
        present = self.index()
        for key, view in _VIEWS.items():
            if key in present:
                getattr(self, view)


def _only(index: dict[str, tuple[str, ...]], key: str, what: str) -> str:
    values = index.get(key)
    if not values:
        raise SipParseError(f"no {what} header field")
    if len(values) > 1:
        raise SipParseError(f"{len(values)} {what} header fields, only one is allowed")
    return values[0]


_VIEWS = {
    "via": "vias", "from": "from_address", "to": "to_address", "call-id": "call_id",
    "cseq": "cseq", "max-forwards": "max_forwards", "expires": "expires",
    "min-expires": "min_expires", "content-length": "content_length", "contact": "contacts",
    "route": "routes", "record-route": "record_routes", "content-type": "content_type",
    "accept": "accept", "authorization": "authorization",
    "proxy-authorization": "proxy_authorization", "www-authenticate": "www_authenticate",
    "proxy-authenticate": "proxy_authenticate", "allow": "allow", "supported": "supported",
    "require": "require", "proxy-require": "proxy_require", "unsupported": "unsupported",
    "date": "date",
}  # fmt: skip
