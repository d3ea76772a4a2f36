"""SIP requests and responses: bytes in, Request/Response out, and back (RFC 3261 §7, §18.3).

`parse_message` is strict where RFC 3261 says MUST (start line, header syntax, framing, the
header fields every element needs: Via, From, To, Call-ID, CSeq, Max-Forwards,
Content-Length) and tolerant where it says an element should accept (LWS and folding,
compact names, any case, repeated or comma-joined fields, escapes, unknown headers and
parameters). Everything else is parsed when first asked for (see Headers), so a message
costs only what its handler looks at. Every failure is a SipParseError; nothing else
escapes, whatever the bytes (the tests feed it thousands of mutated messages).
"""

from __future__ import annotations

import contextlib
import re
import secrets
from dataclasses import dataclass, field

from firmware.sip.headers import HEADER_NAMES, Headers, header_key
from firmware.sip.headers_values import MAX_UINT32, parse_unsigned
from firmware.sip.message_errors import SipParseError
from firmware.sip.uri import AbsoluteUri, SipUri, parse_absolute_uri

__all__ = [
    "KNOWN_METHODS",
    "REASON_PHRASES",
    "Request",
    "Response",
    "SipParseError",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
    "stream_frame_length",
]

SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC_COOKIE = "z9hG4bK"
KNOWN_METHODS = frozenset(
    {
        "ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK",
        "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE",
    }
)  # fmt: skip
REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 421: "Extension Required", 422: "Session Interval Too Small",
    423: "Interval Too Brief", 428: "Use Identity Header", 429: "Provide Referrer Identity",
    433: "Anonymity Disallowed", 439: "First Hop Lacks Outbound Support",
    469: "Bad Info Package", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    580: "Precondition Failure", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}  # fmt: skip

_METHOD = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_STATUS_CODE = re.compile(r"[1-6][0-9][0-9]")
_HEADER_END = b"\r\n\r\n"


def _format_head(start_line: str, headers: Headers, body_length: int) -> bytes:
    lines = [start_line]
    length_written = False
    for name, value in headers:
        if name == "Content-Length":
            if not length_written:
                lines.append(f"Content-Length: {body_length}")
                length_written = True
        else:
            lines.append(f"{name}: {value}")
    if not length_written:
        lines.append(f"Content-Length: {body_length}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class Request:
    """A SIP request; `uri` is an AbsoluteUri only for schemes we do not speak (answer 416)."""

    method: str
    uri: SipUri | AbsoluteUri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """The wire form, with a Content-Length that matches the body whatever was set."""
        head = _format_head(f"{self.method} {self.uri} {SIP_VERSION}", self.headers, len(self.body))
        return head + self.body

    __bytes__ = to_bytes


@dataclass(slots=True)
class Response:
    """A SIP response."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """The wire form, with a Content-Length that matches the body whatever was set."""
        head = _format_head(
            f"{SIP_VERSION} {self.status} {self.reason}", self.headers, len(self.body)
        )
        return head + self.body

    __bytes__ = to_bytes


# ------------------------------------------------------------------------------ parsing


def _skip_leading_crlf(data: bytes) -> int:
    """RFC 3261 §7.5: CRLFs before the start line are ignored (keep-alives, stray padding)."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    return start


def _split_fields(
    lines: list[str], folded: bool
) -> tuple[list[tuple[str, str, str]], dict[str, tuple[str, ...]]]:
    """(key, canonical name, value) triples and the key -> values index, in one pass.

    The index holds tuples, not lists: a tuple of strings is dropped from the garbage
    collector's care at its first pass, a list never is, and every message alive (a call's
    INVITE, 200, ACK...) had one list per distinct header name.
    """
    if folded:
        # Header folding (RFC 3261 §7.3.1): a line starting with SP/HTAB continues the last.
        groups: list[list[str]] = []
        for line in lines:
            if line[:1] in (" ", "\t"):
                if not groups:
                    raise SipParseError("continuation line before any header field")
                groups[-1].append(line.strip(" \t"))
            else:
                groups.append([line])
        lines = [" ".join(group) for group in groups]
    fields = []
    index: dict[str, tuple[str, ...]] = {}
    names = HEADER_NAMES
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without ':' {line[:40]!r}")
        known = names.get(name)
        key, canonical = known if known is not None else header_key(name.rstrip(" \t"))
        value = value.strip(" \t")
        fields.append((key, canonical, value))
        values = index.get(key)
        index[key] = (value,) if values is None else (*values, value)
    return fields, index


def _parse_request_line(line: str) -> tuple[str, SipUri | AbsoluteUri]:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"malformed request line {line[:60]!r}")
    method, uri_text, version = parts
    if _METHOD.fullmatch(method) is None:
        raise SipParseError(f"invalid method {method[:40]!r}")
    if version.upper() != SIP_VERSION:
        if _VERSION.fullmatch(version) is not None:
            raise SipParseError(f"SIP version {version!r} is not supported", 505)
        raise SipParseError(f"malformed request line {line[:60]!r}")
    uri = parse_absolute_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        raise SipParseError("the Request-URI must not carry headers (RFC 3261 §19.1.1)")
    return method, uri


def _parse_status_line(line: str) -> tuple[int, str]:
    version, _space, rest = line.partition(" ")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported status line {line[:60]!r}", None)
    code, _space, reason = rest.partition(" ")
    if _STATUS_CODE.fullmatch(code) is None:
        raise SipParseError(f"invalid status code {code[:20]!r}", None)
    return int(code), reason


def _check_essentials(headers: Headers, method: str | None) -> None:
    """The header fields every element relies on, checked eagerly; raise if any is broken."""
    headers.parse_essentials(method is not None)
    if method is not None:
        cseq_method = headers.cseq.method
        if cseq_method != method:
            status = 400 if method in KNOWN_METHODS else 501
            raise SipParseError(
                f"CSeq method {cseq_method!r} differs from the request method {method!r}", status
            )


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """One SIP message from a datagram, or from a frame cut by stream_frame_length.

    Datagram: the body is what Content-Length says (the rest of the datagram without one);
    a Content-Length larger than what arrived is an error, extra bytes are ignored (RFC
    3261 §18.3). Stream: Content-Length is required and the body must be complete.
    """
    if type(data) is not bytes:
        data = bytes(data)
    start = _skip_leading_crlf(data)
    head_end = data.find(_HEADER_END, start)
    if head_end < 0:
        raise SipParseError("no empty line after the header fields")
    text = data[start:head_end].decode("utf-8", "surrogateescape")
    crlf_count = text.count("\r\n")
    if text.count("\r") != crlf_count or text.count("\n") != crlf_count:
        raise SipParseError("bare CR or LF in the message head")
    lines = text.split("\r\n")
    start_line = lines[0]
    is_response = start_line[:4].upper() == "SIP/"
    method: str | None = None
    folded = "\r\n " in text or "\r\n\t" in text
    try:
        if is_response:
            status, reason = _parse_status_line(start_line)
        else:
            method, uri = _parse_request_line(start_line)
    except SipParseError as error:
        if is_response:
            error.status_hint = None
        else:  # a 505 or 400 still needs Via, From, To, Call-ID and CSeq to be sent
            with contextlib.suppress(SipParseError):
                error.headers = Headers.from_fields(*_split_fields(lines[1:], folded))
        raise
    try:
        fields, index = _split_fields(lines[1:], folded)
    except SipParseError as error:
        if is_response:
            error.status_hint = None
        raise
    headers = Headers.from_fields(fields, index)
    try:
        _check_essentials(headers, method)
        body_start = head_end + 4
        content_length = headers.content_length
        if content_length is None:
            if stream:
                raise SipParseError("no Content-Length on a stream transport")
            body = data[body_start:]
        else:
            available = len(data) - body_start
            if content_length > available:
                raise SipParseError(
                    f"Content-Length {content_length} but only {available} body bytes arrived"
                )
            body = data[body_start : body_start + content_length]
    except SipParseError as error:
        if is_response:
            error.status_hint = None
        error.headers = headers
        raise
    if is_response:
        return Response(status, reason, headers, body)
    return Request(method, uri, headers, body)  # type: ignore[arg-type]


def stream_frame_length(buffer: bytes) -> int | None:
    """Bytes taken by the first message in a stream buffer (leading CRLFs included).

    None while the head or the body is incomplete (and for a buffer of nothing but CRLF
    keep-alives, which the transport answers and drops itself). A complete head without a
    usable Content-Length raises SipParseError: the stream cannot be re-synchronised and
    should be closed (RFC 3261 §18.3). Only Content-Length is looked at, so a message with
    other errors is still cut out whole and parse_message can explain them in a 400.
    """
    start = _skip_leading_crlf(buffer)
    head_end = buffer.find(_HEADER_END, start)
    if head_end < 0:
        return None
    text = buffer[start:head_end].decode("utf-8", "surrogateescape")
    values: list[str] = []
    in_length = False
    for line in text.split("\r\n")[1:]:
        if line[:1] in (" ", "\t"):  # folded: continues the field above
            if in_length:
                values[-1] += line
            continue
        name, colon, value = line.partition(":")
        in_length = bool(colon) and name.rstrip(" \t").lower() in ("content-length", "l")
        if in_length:
            values.append(value)
    if not values:
        raise SipParseError("no Content-Length on a stream transport")
    lengths = {parse_unsigned(value, MAX_UINT32, "Content-Length") for value in values}
    if len(lengths) != 1:
        raise SipParseError("conflicting Content-Length values")
    total = head_end + 4 + lengths.pop()
    return total if len(buffer) >= total else None


# ----------------------------------------------------------------------------- building


def new_branch() -> str:
    """A Via branch unique in space and time, with the RFC 3261 magic cookie."""
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A From/To tag: 48 random bits (RFC 3261 §19.3 asks for at least 32)."""
    return secrets.token_hex(6)


def new_call_id(host: str | None = None) -> str:
    """A Call-ID: 96 random bits, "@host" added when a host is given."""
    random_part = secrets.token_hex(12)
    return random_part if not host else f"{random_part}@{host}"


def make_response(
    request: Request | Headers,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
) -> Response:
    """A response to `request` as RFC 3261 §8.2.6 builds it.

    Via (all, in order), From, Call-ID and CSeq are copied as received; To too, with a tag
    added when the request's To has none and the status is above 100: `to_tag` when given
    (pass the same tag for every response of one dialog), a new one otherwise. A 100 also
    copies Timestamp. Passing Headers instead of a Request answers a request that failed to
    parse, from SipParseError.headers. Record-Route, Contact and the body are the caller's.
    """
    source = request.headers if isinstance(request, Request) else request
    headers = Headers()
    for value in source.get_all("Via"):
        headers.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = source.get(name)
        if value is None:
            continue
        if name == "To" and status > 100:
            value = _with_to_tag(source, value, to_tag)
        headers.add(name, value)
    if status == 100:
        timestamp = source.get("Timestamp")
        if timestamp is not None:
            headers.add("Timestamp", timestamp)
    if reason is None:
        reason = REASON_PHRASES.get(status, "")
    return Response(status, reason, headers)


def _with_to_tag(source: Headers, value: str, to_tag: str | None) -> str:
    try:
        if source.to_address.tag is not None:
            return value
    except SipParseError:
        pass
    return f"{value};tag={to_tag or new_tag()}"
