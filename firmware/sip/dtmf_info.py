"""DTMF carried in SIP INFO bodies, the way phones and providers without RFC 4733 send it.

Two bodies are in the field: `application/dtmf-relay` (Cisco's, "Signal=5\\r\\nDuration=160",
the one most phones send) and `application/dtmf` (the digit alone). Neither has an RFC of
its own (RFC 6086 only defines the INFO framework), so parsing is lenient about case and
spacing and strict about the digit: a body that names no DTMF digit is an error, never a
guess. Some senders write * and # as their RFC 4733 event codes (10, 11); those are read
too, and a hook flash (event 16, or "!") comes out as "!", as RFC 4733 digits do.
"""

from __future__ import annotations

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
DTMF_INFO_TYPES = (DTMF_RELAY, DTMF)
DEFAULT_DURATION_MS = 160

_DIGITS = "0123456789*#ABCD"
FLASH = "!"
# RFC 4733 event codes that some senders put in Signal= instead of the character.
_EVENT_CODES = {str(code): digit for code, digit in enumerate("0123456789*#ABCD")} | {"16": FLASH}


class DtmfInfoError(ValueError):
    """An INFO body of a DTMF type that names no digit we know."""


def _digit(text: str) -> str:
    value = text.strip().upper()
    if len(value) == 1 and (value in _DIGITS or value == FLASH):
        return value
    digit = _EVENT_CODES.get(value.lstrip("0") or "0") if value.isdigit() else None
    if digit is None:
        raise DtmfInfoError(f"not a DTMF signal: {text[:20]!r}")
    return digit


def parse_dtmf_info(mime: str, body: bytes) -> str:
    """The digit ('0'-'9', '*', '#', 'A'-'D' or '!' for flash) an INFO body carries.

    `mime` is the Content-Type without parameters, lower-cased. Raises DtmfInfoError for
    a body that carries no digit, ValueError for a type that is not a DTMF one.
    """
    text = body.decode("utf-8", errors="replace")
    if mime == DTMF:
        return _digit(text)
    if mime != DTMF_RELAY:
        raise ValueError(f"{mime} is not a DTMF INFO type")
    for line in text.splitlines():
        name, separator, value = line.partition("=")
        if separator and name.strip().lower() == "signal":
            return _digit(value)
    raise DtmfInfoError("application/dtmf-relay body without Signal=")


def dtmf_relay_body(digit: str, duration_ms: int = DEFAULT_DURATION_MS) -> bytes:
    """The application/dtmf-relay body for one digit (ValueError for anything else)."""
    value = digit.upper()
    if len(value) != 1 or (value not in _DIGITS and value != FLASH):
        raise ValueError(f"not a DTMF digit: {digit!r}")
    signal = "16" if value == FLASH else value
    return f"Signal={signal}\r\nDuration={duration_ms}\r\n".encode()
