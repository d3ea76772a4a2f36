"""Caller-ID messages: ETSI EN 300 659-3 / Bell MDMF and SDMF bytes, and DTMF CLIP strings.

This layer knows bytes and digits only; fsk.py turns bytes into audio and back, and
clip_audio.py builds whole spills and finds them in line audio.  docs/caller-id.md has
the formats with examples.

A decoder must never hand routing or a display a wrong number, so ``decode_message``
and ``decode_dtmf_clip`` are strict: the checksum, the message and parameter lengths,
the characters of every field and the date must all be right, or ``ClipError`` says
what was wrong and the caller is "unknown".  Parameters this module does not know
(ETSI call type, called number, ...) are skipped when their length is consistent.

FSK message layout: type, length, body, checksum; the checksum makes the byte sum of
the whole message 0 modulo 256.

* SDMF (Bell, type 0x04): body = "MMDDHHMM" then the number, or "O" / "P".
* MDMF (Bell and ETSI "call set-up", type 0x80): body = parameters (type, length,
  value): 0x01 date/time "MMDDHHMM", 0x02 number, 0x04 reason for no number,
  0x07 name, 0x08 reason for no name; reasons are "O" (unavailable) or "P" (private).

DTMF CLIP, the two styles supported (``decode_dtmf_clip`` reads both):

* ``etsi`` (e.g. Sweden, Finland, the Netherlands, Iceland): ``A<number>C``; no number:
  ``B00C`` unavailable, ``B10C`` private (``B01C`` is read as private too).
* ``dk`` (Denmark): ``A<number>#``; no number: ``D1#`` private, ``D2#`` (international
  call) and ``D3#`` (technical reasons) unavailable.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import NamedTuple


class ClipError(ValueError):
    """A caller-ID message or DTMF string that cannot be trusted; the text says why."""


class Absence(StrEnum):
    """Why a number or name is not given: the one-letter codes of all three formats."""

    UNAVAILABLE = "O"  # "out of area": the network does not have it
    PRIVATE = "P"  # the caller withheld it


class MessageType(IntEnum):
    SDMF = 0x04
    MDMF = 0x80  # ETSI "call set-up"


class Parameter(IntEnum):
    DATE_TIME = 0x01
    NUMBER = 0x02
    NUMBER_ABSENCE = 0x04
    NAME = 0x07
    NAME_ABSENCE = 0x08


class MessageFormat(StrEnum):
    """Which FSK message to build; they differ in layout and field limits."""

    ETSI = "etsi"  # MDMF, number up to 20 digits, name up to 50 characters
    BELL_MDMF = "bell_mdmf"  # number up to 15 digits, name up to 15 characters
    BELL_SDMF = "bell_sdmf"  # number up to 10 digits, no name, date/time required


class DtmfClipStyle(StrEnum):
    ETSI = "etsi"
    DANISH = "dk"


class Limits(NamedTuple):
    number: int
    name: int


LIMITS: dict[MessageFormat, Limits] = {
    MessageFormat.ETSI: Limits(number=20, name=50),
    MessageFormat.BELL_MDMF: Limits(number=15, name=15),
    MessageFormat.BELL_SDMF: Limits(number=10, name=0),
}
MAX_NUMBER_DIGITS = 20  # longest number any decoder accepts
DTMF_NUMBER_DIGITS = 20
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_TRANSLITERATION = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l"}
    | {"Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th"}
)


class ClipDateTime(NamedTuple):
    """The date/time field: local time at the exchange, without the year."""

    month: int
    day: int
    hour: int
    minute: int

    @classmethod
    def from_datetime(cls, moment: datetime) -> ClipDateTime:
        """Pass the site's local time (config.site.timezone): phones show it as it is."""
        return cls(moment.month, moment.day, moment.hour, moment.minute)

    @classmethod
    def parse(cls, text: str) -> ClipDateTime:
        """Read "MMDDHHMM"; ClipError unless it is a real date and time of day."""
        if len(text) != 8 or not text.isascii() or not text.isdigit():
            raise ClipError(f"date/time {text!r} is not 8 digits MMDDHHMM")
        value = cls(int(text[0:2]), int(text[2:4]), int(text[4:6]), int(text[6:8]))
        value.check()
        return value

    def check(self) -> None:
        month, day, hour, minute = self
        if not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month - 1]:
            raise ClipError(f"date/time has no such date: month {month}, day {day}")
        if not 0 <= hour <= 23 or not 0 <= minute <= 59:
            raise ClipError(f"date/time has no such time: {hour:02d}:{minute:02d}")

    def text(self) -> str:
        return f"{self.month:02d}{self.day:02d}{self.hour:02d}{self.minute:02d}"


def is_valid_number(number: str) -> bool:
    """Digits, optionally after one leading "+": all a caller-ID number may hold."""
    digits = number[1:] if number.startswith("+") else number
    return 0 < len(digits) <= MAX_NUMBER_DIGITS and digits.isascii() and digits.isdigit()


def _is_valid_name(name: str) -> bool:
    """Printable Latin-1 (what an 8-bit display can show), no control characters."""
    return len(name) > 0 and all(0x20 <= ord(c) <= 0x7E or 0xA0 <= ord(c) <= 0xFF for c in name)


@dataclass(frozen=True)
class CallerIdInfo:
    """What a spill says about the caller; a number and its absence reason exclude each other.

    ``number`` None and ``number_absence`` None: the message said nothing about it.
    """

    number: str | None = None
    name: str | None = None
    number_absence: Absence | None = None
    name_absence: Absence | None = None
    date_time: ClipDateTime | None = None

    def __post_init__(self) -> None:
        if self.number is not None and not is_valid_number(self.number):
            raise ValueError(f"caller number {self.number!r} must be 1-20 digits (leading + ok)")
        if self.name is not None and not _is_valid_name(self.name):
            raise ValueError(f"caller name {self.name!r} must be printable Latin-1 characters")
        if self.number is not None and self.number_absence is not None:
            raise ValueError("a caller ID has either a number or a reason for its absence")
        if self.name is not None and self.name_absence is not None:
            raise ValueError("a caller ID has either a name or a reason for its absence")
        for field_name in ("number_absence", "name_absence"):
            value = getattr(self, field_name)
            if value is not None:
                object.__setattr__(self, field_name, Absence(value))
        if self.date_time is not None:
            object.__setattr__(self, "date_time", ClipDateTime(*self.date_time))
            self.date_time.check()


def caller_id_info(
    number: str | None,
    name: str | None = None,
    *,
    private: bool = False,
    when: datetime | None = None,
    message_format: MessageFormat = MessageFormat.ETSI,
) -> CallerIdInfo:
    """What an FXS port should announce for a caller, fitted to ``message_format``.

    Never sends a wrong or cut number: a number the format cannot carry (too long,
    letters such as a SIP user name, "+" on SDMF) becomes "unavailable".  Names are
    transliterated to ASCII (accents dropped, "ø" -> "o") and cut to the format's limit.
    ``private`` withholds both (reason "P").
    """
    date_time = ClipDateTime.from_datetime(when) if when is not None else None
    if private:
        info = CallerIdInfo(
            number_absence=Absence.PRIVATE, name_absence=Absence.PRIVATE, date_time=date_time
        )
    else:
        valid = bool(number) and is_valid_number(number or "")
        shown = to_display_ascii(name or "").strip()
        info = CallerIdInfo(
            number=number if valid else None,
            number_absence=None if valid else Absence.UNAVAILABLE,
            name=shown or None,
            name_absence=None if shown else Absence.UNAVAILABLE,
            date_time=date_time,
        )
    return fit_to_format(info, message_format)


def fit_to_format(info: CallerIdInfo, message_format: MessageFormat) -> CallerIdInfo:
    """``info`` as ``message_format`` can carry it (see ``caller_id_info``)."""
    limits = LIMITS[MessageFormat(message_format)]
    number, number_absence = info.number, info.number_absence
    too_long = number is not None and len(number) > limits.number
    plus_on_sdmf = message_format is MessageFormat.BELL_SDMF and (number or "").startswith("+")
    if too_long or plus_on_sdmf:
        number, number_absence = None, Absence.UNAVAILABLE
    if not limits.name:
        return CallerIdInfo(number, None, number_absence, None, info.date_time)
    name = to_display_ascii(info.name)[: limits.name].strip() if info.name else None
    name_absence = info.name_absence
    if not name:
        name, name_absence = None, name_absence or Absence.UNAVAILABLE
    return CallerIdInfo(number, name, number_absence, name_absence, info.date_time)


def to_display_ascii(text: str) -> str:
    """Printable ASCII for a caller-ID display: accents dropped, others become "?"."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATION))
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c if 0x20 <= ord(c) <= 0x7E else "?" for c in kept)


# --------------------------------------------------------------------------- FSK messages


def checksum(data: bytes) -> int:
    """The byte that makes the sum of ``data`` and itself 0 modulo 256."""
    return -sum(data) & 0xFF


def encode_message(info: CallerIdInfo, message_format: MessageFormat) -> bytes:
    """The message bytes, checksum included; ValueError if the format cannot carry ``info``.

    ``caller_id_info`` builds an ``info`` that always fits.
    """
    limits = LIMITS[message_format]
    if info.number is not None and len(info.number) > limits.number:
        raise ValueError(f"{message_format}: number {info.number!r} exceeds {limits.number}")
    if info.name is not None and (len(info.name) > limits.name or not info.name.isascii()):
        raise ValueError(f"{message_format}: name {info.name!r} is not ASCII of {limits.name}")
    if message_format is MessageFormat.BELL_SDMF:
        message_type, body = MessageType.SDMF, _sdmf_body(info)
    else:
        message_type, body = MessageType.MDMF, _mdmf_body(info)
    if len(body) > 0xFF:
        raise ValueError(f"message body of {len(body)} bytes is longer than 255")
    head = bytes([message_type, len(body)]) + body
    return head + bytes([checksum(head)])


def _sdmf_body(info: CallerIdInfo) -> bytes:
    if info.date_time is None:
        raise ValueError("SDMF needs the date and time")
    if info.number is not None and not info.number.isdigit():
        raise ValueError(f"SDMF numbers are digits only, got {info.number!r}")
    number = info.number or (info.number_absence or Absence.UNAVAILABLE).value
    return (info.date_time.text() + number).encode("ascii")


def _mdmf_body(info: CallerIdInfo) -> bytes:
    parameters: list[tuple[Parameter, str]] = []
    if info.date_time is not None:
        parameters.append((Parameter.DATE_TIME, info.date_time.text()))
    if info.number is not None:
        parameters.append((Parameter.NUMBER, info.number))
    else:
        absence = info.number_absence or Absence.UNAVAILABLE
        parameters.append((Parameter.NUMBER_ABSENCE, absence.value))
    if info.name is not None:
        parameters.append((Parameter.NAME, info.name))
    elif info.name_absence is not None:
        parameters.append((Parameter.NAME_ABSENCE, info.name_absence.value))
    body = bytearray()
    for parameter, value in parameters:
        encoded = value.encode("latin-1")
        body += bytes([parameter, len(encoded)]) + encoded
    return bytes(body)


def message_complete(data: bytes) -> bool:
    """True once ``data`` holds a whole message (type, length, body, checksum)."""
    return len(data) >= 2 and len(data) >= data[1] + 3


def decode_message(data: bytes) -> CallerIdInfo:
    """The caller ID in one whole message; ClipError if anything about it is off."""
    if len(data) < 3:
        raise ClipError(f"message of {len(data)} bytes is truncated")
    message_type, length = data[0], data[1]
    if len(data) != length + 3:
        raise ClipError(f"message length byte says {length} but {len(data) - 3} body bytes came")
    if sum(data) & 0xFF:
        raise ClipError("checksum does not match")
    body = bytes(data[2 : 2 + length])
    if message_type == MessageType.SDMF:
        return _decode_sdmf(body)
    if message_type == MessageType.MDMF:
        return _decode_mdmf(body)
    raise ClipError(f"message type 0x{message_type:02x} is not a caller ID")


def _decode_sdmf(body: bytes) -> CallerIdInfo:
    if len(body) < 9:
        raise ClipError(f"SDMF body of {len(body)} bytes has no number field")
    date_time = ClipDateTime.parse(body[:8].decode("latin-1"))
    rest = body[8:].decode("latin-1")
    if rest in (Absence.UNAVAILABLE, Absence.PRIVATE):
        return CallerIdInfo(number_absence=Absence(rest), date_time=date_time)
    return CallerIdInfo(number=_number(rest), date_time=date_time)


def _decode_mdmf(body: bytes) -> CallerIdInfo:
    fields: dict[int, str] = {}
    position = 0
    while position < len(body):
        if position + 2 > len(body):
            raise ClipError("parameter header runs past the end of the message")
        parameter, length = body[position], body[position + 1]
        value = body[position + 2 : position + 2 + length]
        if len(value) != length or length == 0:
            raise ClipError(f"parameter 0x{parameter:02x} has an inconsistent length {length}")
        if parameter in fields:
            raise ClipError(f"parameter 0x{parameter:02x} appears twice")
        fields[parameter] = value.decode("latin-1")
        position += 2 + length
    values: dict[str, object] = {}
    if Parameter.DATE_TIME in fields:
        values["date_time"] = ClipDateTime.parse(fields[Parameter.DATE_TIME])
    if Parameter.NUMBER in fields:
        values["number"] = _number(fields[Parameter.NUMBER])
    if Parameter.NUMBER_ABSENCE in fields:
        values["number_absence"] = _absence(fields[Parameter.NUMBER_ABSENCE])
    if Parameter.NAME in fields:
        if not _is_valid_name(fields[Parameter.NAME]):
            raise ClipError("name holds control characters")
        values["name"] = fields[Parameter.NAME]
    if Parameter.NAME_ABSENCE in fields:
        values["name_absence"] = _absence(fields[Parameter.NAME_ABSENCE])
    try:
        return CallerIdInfo(**values)  # type: ignore[arg-type]
    except ValueError as error:
        raise ClipError(str(error)) from None


def _number(text: str) -> str:
    if not is_valid_number(text):
        raise ClipError(f"number field {text!r} is not 1-20 digits")
    return text


def _absence(text: str) -> Absence:
    try:
        return Absence(text)
    except ValueError:
        raise ClipError(f"reason code {text!r} is not O or P") from None


# --------------------------------------------------------------------------- DTMF CLIP

_DTMF_ABSENCE = {
    DtmfClipStyle.ETSI: {Absence.UNAVAILABLE: "B00C", Absence.PRIVATE: "B10C"},
    DtmfClipStyle.DANISH: {Absence.UNAVAILABLE: "D3#", Absence.PRIVATE: "D1#"},
}
_DTMF_END = {DtmfClipStyle.ETSI: "C", DtmfClipStyle.DANISH: "#"}
_DTMF_CODES = {
    "B00": Absence.UNAVAILABLE,
    "B01": Absence.PRIVATE,
    "B10": Absence.PRIVATE,
    "D1": Absence.PRIVATE,
    "D2": Absence.UNAVAILABLE,
    "D3": Absence.UNAVAILABLE,
}


def encode_dtmf_clip(info: CallerIdInfo, style: DtmfClipStyle = DtmfClipStyle.ETSI) -> str:
    """The DTMF string for ``info`` (number only: DTMF CLIP carries no name or date)."""
    style = DtmfClipStyle(style)
    if info.number is None:
        return _DTMF_ABSENCE[style][info.number_absence or Absence.UNAVAILABLE]
    if not info.number.isdigit() or len(info.number) > DTMF_NUMBER_DIGITS:
        raise ValueError(f"DTMF CLIP carries up to 20 digits 0-9, not {info.number!r}")
    return f"A{info.number}{_DTMF_END[style]}"


def decode_dtmf_clip(digits: str) -> CallerIdInfo:
    """The caller ID in a received DTMF string (either style); ClipError if malformed."""
    if len(digits) < 3:
        raise ClipError(f"DTMF CLIP {digits!r} is too short")
    head, body, end = digits[0], digits[1:-1], digits[-1]
    if end not in "C#":
        raise ClipError(f"DTMF CLIP {digits!r} does not end with C or #")
    if head == "A":
        if not body.isdigit() or len(body) > DTMF_NUMBER_DIGITS:
            raise ClipError(f"DTMF CLIP number {body!r} is not 1-20 digits")
        return CallerIdInfo(number=body)
    absence = _DTMF_CODES.get(digits[:-1])
    if absence is None:
        raise ClipError(f"DTMF CLIP {digits!r} is neither a number nor a known reason code")
    return CallerIdInfo(number_absence=absence)
