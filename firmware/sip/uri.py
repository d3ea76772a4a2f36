"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966 minimal): parse, print, compare.

Components are kept unescaped (`sip:%75ser@host` has user "user"), which is what the
application means by them; str() escapes again whatever the component's grammar does not
allow raw. Any other scheme (http:, isbn:, urn:...) is still a syntactically valid URI in a
SIP message: it parses to an AbsoluteUri, and the UAS core answers 416 if it cares.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from firmware.sip.message_errors import SipParseError

# Raw characters each component may carry (RFC 3261 §25.1); '%' only as part of %HEX HEX.
_USER_RAW = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+")
_PASSWORD_RAW = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,%]*")
_PARAM_RAW = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+")
_HEADER_RAW = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]*")
_TEL_NUMBER_RAW = re.compile(r"[A-Za-z0-9*#+\-.()%]+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# What may stay unescaped on output, per component (quote() adds letters, digits and "_.-~").
_USER_SAFE = "!*'()&=+$,;?/"
_PASSWORD_SAFE = "!*'()&=+$,"
_PARAM_SAFE = "!*'()[]/:&+$"
_HEADER_SAFE = "!*'()[]/?:+$"
_TEL_SAFE = "*#+-.()"
_UNRESERVED = r"A-Za-z0-9\-_.~"
_OUTPUT_CLEAN = {
    safe: re.compile("[" + _UNRESERVED + re.escape(safe) + "]*")
    for safe in (_USER_SAFE, _PASSWORD_SAFE, _PARAM_SAFE, _HEADER_SAFE, _TEL_SAFE)
}

HOSTNAME_PATTERN = _HOSTNAME = (
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?"
)
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|" + _HOSTNAME + r")(?::([0-9]{1,5}))?")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|" + _HOSTNAME)
# The usual URI in one match: no escapes, no headers, parameters without LWS.
_SIP_FAST = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,]*))?@)?"
    r"(" + _HOSTNAME + r"|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+)?)*)"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_OPAQUE = re.compile(r"[^\x00-\x20\x7f<>\"]+")
_TEL_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")

# uri-parameters that make two URIs differ when only one of them has it (RFC 3261 §19.1.4).
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def _unescape(text: str, raw_pattern: re.Pattern[str], what: str) -> str:
    """Validate one raw component and undo its %HEX HEX escapes (never recursively)."""
    if raw_pattern.fullmatch(text) is None:
        raise SipParseError(f"invalid character in URI {what} {text!r}")
    if "%" not in text:
        return text
    if _BAD_ESCAPE.search(text) is not None:
        raise SipParseError(f"broken %-escape in URI {what} {text!r}")
    return unquote(text, encoding="utf-8", errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    if _OUTPUT_CLEAN[safe].fullmatch(text) is not None:
        return text
    return quote(text, safe=safe, encoding="utf-8", errors="surrogateescape")


def check_host(host: str) -> str:
    """The host itself if it is a hostname, an IPv4 address or a bracketed IPv6 reference."""
    if _HOST.fullmatch(host) is None:
        raise SipParseError(f"invalid host {host!r}")
    if host[0] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SipParseError(f"invalid IPv6 reference {host!r}") from None
    return host


def check_port(text: str) -> int:
    port = int(text)
    if port > 65535:
        raise SipParseError(f"port {port} is out of range")
    return port


def normalise_host(host: str) -> str:
    """Lower-case, and IPv6 references in their compressed form, for comparisons."""
    if host.startswith("["):
        try:
            return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:
            return host.lower()
    return host.lower()


@dataclass(slots=True, eq=False)
class SipUri:
    """A sip:, sips: or tel: URI; `==` is the URI comparison of RFC 3261 §19.1.4.

    For tel: the subscriber number is in `user` and `host` is empty. `params` maps
    lower-cased names to values (None for a parameter without one, such as lr). Being
    mutable and compared by RFC rules, a SipUri is not hashable: key tables by
    `address_of_record` (or str()) instead.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.scheme == "tel":
            parts = ["tel:", _escape(self.user or "", _TEL_SAFE)]
        else:
            parts = [self.scheme, ":"]
            if self.user is not None:
                parts.append(_escape(self.user, _USER_SAFE))
                if self.password is not None:
                    parts.append(":")
                    parts.append(_escape(self.password, _PASSWORD_SAFE))
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(";")
            parts.append(_escape(name, _PARAM_SAFE))
            if value is not None:
                parts.append("=")
                parts.append(_escape(value, _PARAM_SAFE))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(
                    _escape(name, _HEADER_SAFE) + "=" + _escape(value, _HEADER_SAFE)
                    for name, value in self.headers.items()
                )
            )
        return "".join(parts)

    def __repr__(self) -> str:
        return f"SipUri({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipUri | AbsoluteUri):
            return NotImplemented
        return uri_equal(self, other)

    @property
    def transport(self) -> str | None:
        return self.params.get("transport")

    @property
    def loose_route(self) -> bool:
        """True when the URI carries lr: the next hop is an RFC 3261 loose router."""
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def address_of_record(self) -> str:
        """scheme:user@host with the host lower-cased: the key a registrar files bindings under."""
        if self.scheme == "tel":
            return "tel:" + _tel_number(self)
        user = "" if self.user is None else _escape(self.user, _USER_SAFE) + "@"
        return f"{self.scheme}:{user}{normalise_host(self.host)}"

    def copy(self) -> SipUri:
        """A copy whose params and headers can be changed without touching this one."""
        return SipUri(
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            dict(self.params),
            dict(self.headers),
        )


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of a scheme SIP does not interpret (RFC 3261 absoluteURI), kept verbatim."""

    scheme: str
    value: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}"


Uri = SipUri | AbsoluteUri


def _parse_params(text: str, uri_text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, equals, value = item.partition("=")
        if not name:
            raise SipParseError(f"empty URI parameter in {uri_text!r}")
        name = _unescape(name, _PARAM_RAW, "parameter").lower()
        params[name] = _unescape(value, _PARAM_RAW, "parameter value") if equals else None
    return params


def _parse_headers(text: str, uri_text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in text.split("&"):
        name, equals, value = item.partition("=")
        if not name or not equals:
            raise SipParseError(f"URI header without name=value in {uri_text!r}")
        headers[_unescape(name, _HEADER_RAW, "header")] = _unescape(
            value, _HEADER_RAW, "header value"
        )
    return headers


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    fast = _SIP_FAST.fullmatch(rest)
    if fast is not None:
        user, password, host, port_text, params_text = fast.groups()
        if host[0] == "[":
            check_host(host)
        params: dict[str, str | None] = {}
        if params_text:
            for item in params_text[1:].split(";"):
                name, equals, value = item.partition("=")
                params[name.lower()] = value if equals else None
        port = None if port_text is None else check_port(port_text)
        return SipUri(scheme, user, password, host, port, params, {})
    return _parse_sip_slowly(scheme, rest, text)


def _parse_sip_slowly(scheme: str, rest: str, text: str) -> SipUri:
    """Escapes, URI headers, or an error to explain: component by component."""
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text:
            raise SipParseError(f"empty user part in {text!r}")
        user = _unescape(user_text, _USER_RAW, "user")
        if colon:
            password = _unescape(password_text, _PASSWORD_RAW, "password")
    headers: dict[str, str] = {}
    question = rest.find("?")
    if question >= 0:
        headers = _parse_headers(rest[question + 1 :], text)
        rest = rest[:question]
    params: dict[str, str | None] = {}
    semicolon = rest.find(";")
    if semicolon >= 0:
        params = _parse_params(rest[semicolon + 1 :], text)
        rest = rest[:semicolon]
    match = _HOSTPORT.fullmatch(rest)
    if match is None:
        raise SipParseError(f"invalid host or port in {text!r}")
    host, port_text = match.groups()
    if host[0] == "[":
        check_host(host)
    port = None if port_text is None else check_port(port_text)
    return SipUri(scheme, user, password, host, port, params, headers)


def _parse_tel(rest: str, text: str) -> SipUri:
    number, semicolon, params_text = rest.partition(";")
    user = _unescape(number, _TEL_NUMBER_RAW, "telephone number")
    params = _parse_params(params_text, text) if semicolon else {}
    return SipUri("tel", user, None, "", None, params, {})


def parse_absolute_uri(text: str) -> SipUri | AbsoluteUri:
    """Any URI a SIP message may carry: SipUri for sip/sips/tel, AbsoluteUri otherwise."""
    scheme, colon, rest = text.partition(":")
    if not colon or not rest:
        raise SipParseError(f"not a URI: {text!r}")
    lower = scheme.lower()
    if lower == "sip" or lower == "sips":
        return _parse_sip(lower, rest, text)
    if lower == "tel":
        return _parse_tel(rest, text)
    if _SCHEME.fullmatch(scheme) is None or _OPAQUE.fullmatch(rest) is None:
        raise SipParseError(f"not a URI: {text!r}")
    return AbsoluteUri(lower, rest)


def parse_uri(text: str) -> SipUri:
    """A sip:, sips: or tel: URI; other valid URIs raise with status_hint 416."""
    uri = parse_absolute_uri(text)
    if isinstance(uri, AbsoluteUri):
        raise SipParseError(f"unsupported URI scheme {uri.scheme!r}", 416)
    return uri


def _lower_params(params: dict[str, str | None]) -> dict[str, str | None]:
    return {name: None if value is None else value.lower() for name, value in params.items()}


def _params_equal(first: dict[str, str | None], second: dict[str, str | None]) -> bool:
    first = _lower_params(first)
    second = _lower_params(second)
    for name in _SIGNIFICANT_PARAMS:
        if first.get(name, "\0absent") != second.get(name, "\0absent"):
            return False
    return all(second[name] == value for name, value in first.items() if name in second)


def _tel_number(uri: SipUri) -> str:
    """The subscriber number without visual separators (RFC 3966 §5.1.1), lower-cased."""
    return (uri.user or "").translate(_TEL_VISUAL_SEPARATORS).lower()


def _headers_key(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value.lower() for name, value in headers.items()}


def uri_equal(first: Uri | str, second: Uri | str) -> bool:
    """URI equivalence of RFC 3261 §19.1.4 (sip/sips), RFC 3966 §4 (tel), exact otherwise.

    Userinfo is case-sensitive, everything else is not; a port, transport, user, ttl,
    method or maddr present in one URI only makes them differ, other parameters present in
    one only are ignored, and URI headers must match as a set. Escapes compare as the
    characters they stand for (we unescape on parsing; RFC 3261 would keep an escaped
    reserved character distinct from the raw one, a difference no real peer relies on).
    """
    if isinstance(first, str):
        first = parse_absolute_uri(first)
    if isinstance(second, str):
        second = parse_absolute_uri(second)
    if isinstance(first, AbsoluteUri) or isinstance(second, AbsoluteUri):
        return (
            isinstance(first, AbsoluteUri)
            and isinstance(second, AbsoluteUri)
            and first.scheme == second.scheme
            and first.value == second.value
        )
    if first.scheme != second.scheme:
        return False
    if first.scheme == "tel":
        return _tel_number(first) == _tel_number(second) and _lower_params(
            first.params
        ) == _lower_params(second.params)
    return (
        first.user == second.user
        and first.password == second.password
        and first.port == second.port
        and normalise_host(first.host) == normalise_host(second.host)
        and _params_equal(first.params, second.params)
        and _headers_key(first.headers) == _headers_key(second.headers)
    )
