"""Typed values of the header fields SIP itself acts on, and their parsers (RFC 3261 §25.1).

Each parser takes the unfolded text of one header field (or of several joined with ",")
and either returns a value or raises SipParseError: nothing else escapes, whatever the
bytes. LWS is allowed wherever the grammar's SWS/LWS/HCOLON/SEMI/EQUAL/COMMA allow it, and
the compiled patterns below do the scanning so that the per-message cost stays small.

Generic parameters keep their raw value (a quoted-string keeps its quotes), so a value is
written out again exactly as it came; names are lower-cased because they compare that way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from firmware.sip.message_errors import SipParseError
from firmware.sip.uri import (
    HOSTNAME_PATTERN,
    AbsoluteUri,
    SipUri,
    check_host,
    check_port,
    parse_absolute_uri,
)

_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = "[" + _TOKEN_CHARS + "]+"
_QUOTED = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
_WORD_CHARS = _TOKEN_CHARS + r"()<>:\\\"/\[\]?{}"

TOKEN = re.compile(_TOKEN)
_WHITESPACE = re.compile(r"[ \t]*")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# ;name[=value] with optional LWS around ';' and '=' (gen-value: token, host or quoted-string).
_PARAM = re.compile(
    r"[ \t]*;[ \t]*("
    + _TOKEN
    + r")(?:[ \t]*=[ \t]*("
    + _QUOTED
    + r"|["
    + _TOKEN_CHARS
    + r"\[\]:]+))?"
)
_VIA = re.compile(
    r"[ \t]*(" + _TOKEN + r")[ \t]*/[ \t]*(" + _TOKEN + r")[ \t]*/[ \t]*(" + _TOKEN + r")[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)
_PARAMS_FAST = r"((?:;" + _TOKEN + r"(?:=[" + _TOKEN_CHARS + r"\[\]:]+)?)*)"
# The usual single Via: single spaces, parameters without LWS or quoted values.
_VIA_FAST = re.compile(
    r"(SIP)/(2\.0)/("
    + _TOKEN
    + r") ("
    + HOSTNAME_PATTERN
    + r"|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    + _PARAMS_FAST
)
# The usual single name-addr or addr-spec: at most one space, parameters without LWS.
_NAME_ADDR_FAST = re.compile(
    r'(?:(?:"([^"\\\r\n]*)"|([' + _TOKEN_CHARS + r"]+(?: [" + _TOKEN_CHARS + r"]+)*))? ?"
    r'<([^<>" \t]*)>|([^ \t;,<>"?]+))' + _PARAMS_FAST
)
# name-addr: [display-name] <URI>; the display name is a quoted-string or tokens and LWS.
# Possessive quantifiers: leading LWS and an unquoted display name both match spaces, and a
# missing "<" must not make the engine try every split of a long run of them.
_NAME_ADDR = re.compile(
    r"[ \t]*+(?:(" + _QUOTED + r")[ \t]*+|([" + _TOKEN_CHARS + r" \t]*+))<([^<>\"]*+)>"
)
_ADDR_SPEC = re.compile(r"[ \t]*([^ \t;,<>\"]+)")
_CSEQ = re.compile(r"[ \t]*0*([0-9]{1,10})[ \t]+(" + _TOKEN + r")[ \t]*")
_UNSIGNED = re.compile(r"[ \t]*0*([0-9]{1,10})[ \t]*")
_CALL_ID = re.compile(r"[ \t]*([" + _WORD_CHARS + r"]+(?:@[" + _WORD_CHARS + r"]+)?)[ \t]*")
_MEDIA_TYPE = re.compile(r"[ \t]*(" + _TOKEN + r")[ \t]*/[ \t]*(" + _TOKEN + r")")
_AUTH_SCHEME = re.compile(r"[ \t]*(" + _TOKEN + r")(?:[ \t]+|$)")
_AUTH_PARAM = re.compile(r"[ \t]*(" + _TOKEN + r")[ \t]*=[ \t]*(" + _QUOTED + r"|[^ \t,\"]+)[ \t]*")
_DATE = re.compile(
    r"[ \t]*(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT[ \t]*"
)
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

MAX_UINT32 = 2**32 - 1

Params = dict[str, str | None]


def unquote_string(text: str) -> str:
    """The content of a quoted-string (with its quotes) with quoted-pairs undone."""
    inner = text[1:-1]
    return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner


def quote_string(text: str) -> str:
    """A quoted-string carrying `text`; CR and LF cannot be carried and are refused."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"CR or LF in {text!r} would break the header")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_params(params: Params) -> str:
    return "".join(
        f";{name}" if value is None else f";{name}={value}" for name, value in params.items()
    )


def _parse_params(text: str, position: int) -> tuple[Params, int]:
    params: Params = {}
    match = _PARAM.match(text, position)
    while match is not None:
        params[match.group(1).lower()] = match.group(2)
        position = match.end()
        match = _PARAM.match(text, position)
    return params, position


def _next_item(text: str, position: int, what: str) -> int | None:
    """Position after the comma before the next list item, None at the end of the list."""
    position = _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]
    if position == len(text):
        return None
    if text[position] != ",":
        raise SipParseError(f"unexpected {text[position : position + 20]!r} in {what}")
    return position + 1


def _end_of_value(text: str, position: int, what: str) -> None:
    position = _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]
    if position != len(text):
        raise SipParseError(f"unexpected {text[position : position + 20]!r} in {what}")


def parse_unsigned(text: str, maximum: int, what: str) -> int:
    """A decimal header value (leading zeros allowed) between 0 and `maximum`."""
    if 0 < len(text) <= 10 and text.isascii() and text.isdigit():
        value = int(text)
        if value > maximum:
            raise SipParseError(f"{what} {value} is larger than {maximum}")
        return value
    match = _UNSIGNED.fullmatch(text)
    if match is None:
        raise SipParseError(f"{what} {text.strip()[:40]!r} is not a number")
    value = int(match.group(1))
    if value > maximum:
        raise SipParseError(f"{what} {value} is larger than {maximum}")
    return value


# ---------------------------------------------------------------------------------- Via


@dataclass(slots=True)
class Via:
    """One Via value: where a response to the request goes back to (RFC 3261 §18.2.2)."""

    transport: str = "UDP"
    host: str = ""
    port: int | None = None
    params: Params = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    def __str__(self) -> str:
        sent_by = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {sent_by}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        """rport present, with or without a value: the client asks for symmetric response routing."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The port filled in by the server (RFC 3581), None while the parameter has no value."""
        value = self.params.get("rport")
        return None if value is None else parse_unsigned(value, 65535, "Via rport")

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return None if value is None else parse_unsigned(value, 255, "Via ttl")

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch has the magic cookie, so it alone identifies the transaction."""
        branch = self.params.get("branch")
        return branch is not None and len(branch) > 7 and branch.startswith("z9hG4bK")


def _split_fast_params(text: str) -> Params:
    params: Params = {}
    if text:
        for item in text[1:].split(";"):
            name, equals, value = item.partition("=")
            params[name.lower()] = value if equals else None
    return params


def parse_via_list(text: str) -> list[Via]:
    """Every Via value of a (possibly comma-separated) header field, topmost first."""
    fast = _VIA_FAST.fullmatch(text)
    if fast is not None:
        _name, _version, transport, host, port_text, params_text = fast.groups()
        if host[0] == "[":
            check_host(host)
        port = None if port_text is None else check_port(port_text)
        return [Via(transport.upper(), host, port, _split_fast_params(params_text))]
    vias: list[Via] = []
    position = 0
    while True:
        match = _VIA.match(text, position)
        if match is None:
            raise SipParseError(f"malformed Via {text[position : position + 40]!r}")
        name, version, transport, host, port_text = match.groups()
        check_host(host)
        port = None if port_text is None else check_port(port_text)
        params, position = _parse_params(text, match.end())
        vias.append(Via(transport.upper(), host, port, params, f"{name.upper()}/{version}"))
        next_position = _next_item(text, position, "Via")
        if next_position is None:
            return vias
        position = next_position


# ------------------------------------------------------------------------------ name-addr


@dataclass(slots=True)
class NameAddr:
    """From, To, Contact, Route, Record-Route...: [display name] <URI> and header parameters."""

    uri: SipUri | AbsoluteUri
    display_name: str | None = None
    params: Params = field(default_factory=dict)

    def __str__(self) -> str:
        if self.display_name is None:
            return f"<{self.uri}>{format_params(self.params)}"
        return f"{quote_string(self.display_name)} <{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The Contact expires parameter in seconds; a malformed one raises SipParseError."""
        value = self.params.get("expires")
        return None if value is None else parse_unsigned(value, MAX_UINT32, "expires parameter")

    @property
    def q(self) -> float | None:
        """The Contact q value (0 to 1), a preference among several contacts."""
        value = self.params.get("q")
        if value is None:
            return None
        if _QVALUE.fullmatch(value) is None:
            raise SipParseError(f"q value {value!r} is not a number from 0 to 1")
        return float(value)


def _parse_uri_of(text: str, what: str) -> SipUri | AbsoluteUri:
    try:
        return parse_absolute_uri(text)
    except SipParseError as error:
        raise SipParseError(f"{what}: {error.reason}", error.status_hint) from None


def _parse_one_name_addr(
    text: str, position: int, *, in_list: bool, brackets_required: bool, what: str
) -> tuple[NameAddr, int]:
    match = _NAME_ADDR.match(text, position)
    if match is not None:
        quoted, tokens, uri_text = match.groups()
        if quoted is not None:
            display_name: str | None = unquote_string(quoted)
        else:
            display_name = tokens.strip(" \t") or None
        position = match.end()
    else:
        if brackets_required:
            raise SipParseError(f"{what} value must be <URI>: {text[position : position + 40]!r}")
        match = _ADDR_SPEC.match(text, position)
        if match is None:
            raise SipParseError(f"malformed {what} {text[position : position + 40]!r}")
        uri_text = match.group(1)
        display_name = None
        position = match.end()
        if "?" in uri_text:
            # RFC 3261 §20: a URI with headers (or ',' ';' '?') must be inside <>.
            raise SipParseError(f"{what} URI with headers must be inside <>: {uri_text!r}")
    uri = _parse_uri_of(uri_text, what)
    params, position = _parse_params(text, position)
    if not in_list:
        _end_of_value(text, position, what)
    return NameAddr(uri, display_name, params), position


def parse_name_addr(text: str, what: str = "address") -> NameAddr:
    """A single name-addr or addr-spec value (From, To, Reply-To, Refer-To...)."""
    fast = _NAME_ADDR_FAST.fullmatch(text)
    if fast is not None:
        quoted, tokens, uri_text, addr_spec, params_text = fast.groups()
        uri = _parse_uri_of(uri_text if addr_spec is None else addr_spec, what)
        display_name = quoted if quoted is not None else tokens
        return NameAddr(uri, display_name, _split_fast_params(params_text))
    return _parse_one_name_addr(text, 0, in_list=False, brackets_required=False, what=what)[0]


def parse_name_addr_list(text: str, what: str, *, brackets_required: bool) -> list[NameAddr]:
    """Comma-separated name-addr values; Route, Record-Route and Path require the <>."""
    values: list[NameAddr] = []
    position = 0
    while True:
        value, position = _parse_one_name_addr(
            text, position, in_list=True, brackets_required=brackets_required, what=what
        )
        values.append(value)
        next_position = _next_item(text, position, what)
        if next_position is None:
            return values
        position = next_position


def parse_contact_list(text: str) -> tuple[bool, list[NameAddr]]:
    """(wildcard, contacts): Contact is either "*" alone (REGISTER removal) or a list."""
    if text.strip(" \t") == "*":
        return True, []
    return False, parse_name_addr_list(text, "Contact", brackets_required=False)


# ------------------------------------------------------------------------ scalar fields


@dataclass(frozen=True, slots=True)
class CSeq:
    """Sequence number and method: orders requests within a dialog, matches responses."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    match = _CSEQ.fullmatch(text)
    if match is None:
        raise SipParseError(f"malformed CSeq {text.strip()[:40]!r}")
    number = int(match.group(1))
    if number > MAX_UINT32:
        raise SipParseError(f"CSeq number {number} is larger than 2**32-1")
    return CSeq(number, match.group(2))


def parse_call_id(text: str) -> str:
    match = _CALL_ID.fullmatch(text)
    if match is None:
        raise SipParseError(f"malformed Call-ID {text.strip()[:40]!r}")
    return match.group(1)


def parse_token_list(text: str, what: str) -> list[str]:
    """Allow, Supported, Require...: comma-separated tokens, possibly none at all."""
    if not text.strip(" \t"):
        return []
    tokens = []
    for item in text.split(","):
        token = item.strip(" \t")
        if TOKEN.fullmatch(token) is None:
            raise SipParseError(f"malformed {what} {text.strip()[:40]!r}")
        tokens.append(token)
    return tokens


def parse_date(text: str) -> datetime:
    """An RFC 1123 date, which in SIP must be in GMT (RFC 3261 §20.17)."""
    match = _DATE.fullmatch(text)
    if match is None:
        raise SipParseError(f"malformed Date {text.strip()[:40]!r} (SIP dates are in GMT)")
    _weekday, day, month, year, hour, minute, second = match.groups()
    try:
        return datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=UTC,
        )
    except ValueError as error:
        raise SipParseError(f"impossible Date {text.strip()!r}: {error}") from None


# ---------------------------------------------------------------------------- media types


@dataclass(slots=True)
class MediaType:
    """Content-Type or one Accept value; type and subtype lower-cased, they compare that way."""

    type: str
    subtype: str
    params: Params = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{format_params(self.params)}"

    @property
    def mime(self) -> str:
        """type/subtype without parameters (application/sdp): what code compares against."""
        return f"{self.type}/{self.subtype}"


def _parse_one_media_type(text: str, position: int) -> tuple[MediaType, int]:
    match = _MEDIA_TYPE.match(text, position)
    if match is None:
        raise SipParseError(f"malformed media type {text[position : position + 40]!r}")
    params, position = _parse_params(text, match.end())
    return MediaType(match.group(1).lower(), match.group(2).lower(), params), position


def parse_media_type(text: str) -> MediaType:
    media_type, position = _parse_one_media_type(text, 0)
    _end_of_value(text, position, "Content-Type")
    return media_type


def parse_media_type_list(text: str) -> list[MediaType]:
    """Accept: comma-separated media ranges, possibly empty (accepts no body at all)."""
    if not text.strip(" \t"):
        return []
    values: list[MediaType] = []
    position = 0
    while True:
        value, position = _parse_one_media_type(text, position)
        values.append(value)
        next_position = _next_item(text, position, "Accept")
        if next_position is None:
            return values
        position = next_position


# ------------------------------------------------------------------------- authentication


@dataclass(slots=True)
class AuthValue:
    """A challenge (WWW-/Proxy-Authenticate) or credentials (Authorization, Proxy-Authorization).

    `params` maps lower-cased names to unquoted values; firmware.sip.auth does the digest
    arithmetic and writes these headers.
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_auth(text: str) -> AuthValue:
    """scheme LWS name=value *(COMMA name=value) (RFC 3261 §25.1 challenge/credentials)."""
    scheme_match = _AUTH_SCHEME.match(text)
    if scheme_match is None:
        raise SipParseError(f"malformed authentication header {text.strip()[:40]!r}")
    params: dict[str, str] = {}
    position: int | None = scheme_match.end()
    if position == len(text):
        position = None
    while position is not None:
        match = _AUTH_PARAM.match(text, position)
        if match is None:
            raise SipParseError(f"malformed auth-param {text[position : position + 40]!r}")
        name, value = match.groups()
        params[name.lower()] = unquote_string(value) if value[0] == '"' else value
        position = _next_item(text, match.end(), "authentication header")
    return AuthValue(scheme_match.group(1), params)
