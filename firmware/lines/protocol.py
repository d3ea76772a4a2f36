"""Messages and framing of the serial protocol between the appliance (host) and the line card.

Sans-I/O: nothing here reads, writes, sleeps or looks at a clock, so the driver, the card
simulator and the tests all share exactly the same code.  The byte layout is specified in
docs/line-card-protocol.md; keep the two in step.
"""

from __future__ import annotations

import binascii
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from enum import IntEnum
from typing import Any, ClassVar, Self

FLAG = 0x7E
ESCAPE = 0x7D
ESCAPE_XOR = 0x20
SYN_FLAG = 0x01  # bit 0 of the flags byte; bit 1 and up are reserved (sent as 0, ignored)
HEADER_SIZE = 3  # type, flags, seq
CRC_SIZE = 2
MAX_PAYLOAD = 240
MAX_BODY = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
SEQ_MODULUS = 256

BAUD_RATE = 115200
# Link supervision (section "Heartbeat and link loss" of the protocol document).
HEARTBEAT_INTERVAL = 1.0  # host sends HEARTBEAT when it has sent no sequenced frame for this long
LINK_DOWN_TIMEOUT = 3.0  # card goes to its safe state when it has heard no frame for this long

FXS_DIGITS = "0123456789*#ABCD"
DIAL_CHARACTERS = FXS_DIGITS + ","  # ',' = 1 s pause


class ProtocolError(ValueError):
    """Anything that does not fit the protocol; never escapes FrameDecoder.feed()."""


class PayloadError(ProtocolError):
    """A payload or a field value that cannot be encoded or was decoded malformed."""


class MessageKind(IntEnum):
    """Message type byte; 0x01-0x7F travel host -> card, 0x80-0xFF card -> host."""

    ACK = 0x00
    HELLO = 0x01
    HEARTBEAT = 0x02
    RING = 0x10
    RING_STOP = 0x11
    HOOK_SET = 0x12
    DIAL = 0x13
    POLARITY_SET = 0x14
    INVENTORY = 0x80
    HOOK = 0x81
    FLASH = 0x82
    DIGIT = 0x83
    RING_DETECT = 0x84
    CALLER_ID = 0x85
    POLARITY = 0x86
    LOOP_CURRENT = 0x87
    DIAL_DONE = 0x88
    FAULT = 0x8F


class PortKind(IntEnum):
    FXS = 1  # desk phone side (SLIC)
    FXO = 2  # city line side (DAA)


class DialMode(IntEnum):
    DTMF = 0
    PULSE = 1


class FaultCode(IntEnum):
    """Well-known FAULT codes; the wire carries any u8 so newer cards can add codes."""

    MESSAGES_LOST = 1  # the card gave up sending; the host must HELLO to learn the port state
    BAD_COMMAND = 2  # command for a missing port, the wrong port kind, or not possible now
    HARDWARE = 3  # SLIC/DAA fault: over-temperature, over-current, chip not answering
    NO_LINE_VOLTAGE = 4  # FXO: city line disconnected


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR)."""
    return binascii.crc_hqx(data, 0xFFFF)


# --------------------------------------------------------------------------- field codecs


class _Reader:
    """Cursor over a payload that fails with PayloadError instead of IndexError."""

    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self._offset = 0

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._payload):
            raise PayloadError(f"payload truncated at byte {self._offset} (needs {size} more)")
        chunk = self._payload[self._offset : end]
        self._offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def finish(self) -> None:
        if self._offset != len(self._payload):
            raise PayloadError(f"{len(self._payload) - self._offset} trailing byte(s)")


def _check_int(value: Any, maximum: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"expected an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise PayloadError(f"{value} is outside {minimum}..{maximum}")
    return int(value)


class _Codec(ABC):
    """One payload field: normalise() validates at construction, so bad messages never exist."""

    @abstractmethod
    def normalise(self, value: Any) -> Any: ...

    @abstractmethod
    def write(self, value: Any, out: bytearray) -> None: ...

    @abstractmethod
    def read(self, reader: _Reader) -> Any: ...


class _U8(_Codec):
    def __init__(self, minimum: int = 0) -> None:
        self._minimum = minimum

    def normalise(self, value: Any) -> int:
        return _check_int(value, 0xFF, self._minimum)

    def write(self, value: int, out: bytearray) -> None:
        out.append(value)

    def read(self, reader: _Reader) -> int:
        return self.normalise(reader.u8())


class _Bool(_Codec):
    def normalise(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise PayloadError(f"expected a bool, got {value!r}")
        return value

    def write(self, value: bool, out: bytearray) -> None:
        out.append(1 if value else 0)

    def read(self, reader: _Reader) -> bool:
        byte = reader.u8()
        if byte > 1:
            raise PayloadError(f"bool byte must be 0 or 1, got {byte}")
        return byte == 1


class _Enum(_Codec):
    def __init__(self, enum_type: type[IntEnum]) -> None:
        self._enum_type = enum_type

    def normalise(self, value: Any) -> IntEnum:
        try:
            return self._enum_type(value)
        except ValueError:
            raise PayloadError(f"{value!r} is not a {self._enum_type.__name__}") from None

    def write(self, value: IntEnum, out: bytearray) -> None:
        out.append(value)

    def read(self, reader: _Reader) -> IntEnum:
        return self.normalise(reader.u8())


class _Text(_Codec):
    """u8 byte length, then UTF-8."""

    def __init__(self, allowed: str | None = None, min_length: int = 0) -> None:
        self._allowed = allowed
        self._min_length = min_length

    def normalise(self, value: Any) -> str:
        if not isinstance(value, str):
            raise PayloadError(f"expected a str, got {value!r}")
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError(f"{value!r} is not encodable as UTF-8") from None
        if len(encoded) > 0xFF:
            raise PayloadError(f"string of {len(encoded)} bytes is longer than 255")
        if len(value) < self._min_length:
            raise PayloadError(f"string {value!r} is shorter than {self._min_length}")
        if self._allowed is not None and not set(value) <= set(self._allowed):
            raise PayloadError(f"{value!r} has characters outside {self._allowed!r}")
        return value

    def write(self, value: str, out: bytearray) -> None:
        encoded = value.encode("utf-8")
        out.append(len(encoded))
        out += encoded

    def read(self, reader: _Reader) -> str:
        raw = reader.take(reader.u8())
        try:
            return self.normalise(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise PayloadError("string is not valid UTF-8") from None


class _Char(_Codec):
    """Exactly one ASCII character from a fixed set."""

    def __init__(self, allowed: str) -> None:
        self._allowed = allowed

    def normalise(self, value: Any) -> str:
        if not isinstance(value, str) or len(value) != 1 or value not in self._allowed:
            raise PayloadError(f"{value!r} is not one of {self._allowed!r}")
        return value

    def write(self, value: str, out: bytearray) -> None:
        out.append(ord(value))

    def read(self, reader: _Reader) -> str:
        return self.normalise(chr(reader.u8()))


class _Cadence(_Codec):
    """Count u8 (1..255), then that many (on_ms u16, off_ms u16) pairs."""

    def normalise(self, value: Any) -> tuple[tuple[int, int], ...]:
        try:
            pairs = tuple((on_ms, off_ms) for on_ms, off_ms in value)
        except (TypeError, ValueError):
            raise PayloadError(f"cadence must be (on_ms, off_ms) pairs, got {value!r}") from None
        if not 1 <= len(pairs) <= 0xFF:
            raise PayloadError(f"cadence needs 1..255 pairs, got {len(pairs)}")
        return tuple((_check_int(on, 0xFFFF), _check_int(off, 0xFFFF)) for on, off in pairs)

    def write(self, value: tuple[tuple[int, int], ...], out: bytearray) -> None:
        out.append(len(value))
        for on_ms, off_ms in value:
            out += on_ms.to_bytes(2, "big") + off_ms.to_bytes(2, "big")

    def read(self, reader: _Reader) -> tuple[tuple[int, int], ...]:
        count = reader.u8()
        return self.normalise([(reader.u16(), reader.u16()) for _ in range(count)])


class _PortKinds(_Codec):
    """Count u8, then one PortKind byte per port (ports are numbered 1..count)."""

    def normalise(self, value: Any) -> tuple[PortKind, ...]:
        try:
            kinds = tuple(PortKind(kind) for kind in value)
        except (TypeError, ValueError):
            raise PayloadError(f"port kinds must be PortKind values, got {value!r}") from None
        if len(kinds) > 0xFF:
            raise PayloadError(f"{len(kinds)} ports is more than 255")
        return kinds

    def write(self, value: tuple[PortKind, ...], out: bytearray) -> None:
        out.append(len(value))
        out += bytes(value)

    def read(self, reader: _Reader) -> tuple[PortKind, ...]:
        return self.normalise(reader.take(reader.u8()))


U8 = _U8()
PORT = _U8(minimum=1)
PORT_OR_CARD = _U8()  # FAULT uses port 0 for the whole card
BOOL = _Bool()
TEXT = _Text()


def _wire(codec: _Codec) -> Any:
    """Declare a dataclass field together with its wire codec (payload order = field order)."""
    return field(metadata={"codec": codec})


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Message:
    """Base of all messages: the payload layout is the ordered list of _wire() fields."""

    KIND: ClassVar[MessageKind]

    def __post_init__(self) -> None:
        for spec in fields(self):
            try:
                value = spec.metadata["codec"].normalise(getattr(self, spec.name))
            except PayloadError as error:
                raise PayloadError(f"{type(self).__name__}.{spec.name}: {error}") from None
            object.__setattr__(self, spec.name, value)

    def encode_payload(self) -> bytes:
        out = bytearray()
        for spec in fields(self):
            spec.metadata["codec"].write(getattr(self, spec.name), out)
        return bytes(out)

    @classmethod
    def decode_payload(cls, payload: bytes) -> Self:
        reader = _Reader(payload)
        values = {spec.name: spec.metadata["codec"].read(reader) for spec in fields(cls)}
        reader.finish()
        return cls(**values)


@dataclass(frozen=True)
class Ack(Message):
    """Link-level receipt; sent with seq 0 and never acked itself."""

    KIND: ClassVar[MessageKind] = MessageKind.ACK
    acked_seq: int = _wire(U8)


# Host -> card ------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Message):
    """Host starts a session; the card answers INVENTORY then a snapshot of the port state."""

    KIND: ClassVar[MessageKind] = MessageKind.HELLO


@dataclass(frozen=True)
class Heartbeat(Message):
    """Keeps the peer's link-down timer from expiring when there is nothing else to say."""

    KIND: ClassVar[MessageKind] = MessageKind.HEARTBEAT


@dataclass(frozen=True)
class Ring(Message):
    """Ring an FXS port with this cadence (repeated) and send this caller ID."""

    KIND: ClassVar[MessageKind] = MessageKind.RING
    port: int = _wire(PORT)
    cadence: tuple[tuple[int, int], ...] = _wire(_Cadence())
    caller_number: str = _wire(TEXT)
    caller_name: str = _wire(TEXT)


@dataclass(frozen=True)
class RingStop(Message):
    KIND: ClassVar[MessageKind] = MessageKind.RING_STOP
    port: int = _wire(PORT)


@dataclass(frozen=True)
class HookSet(Message):
    """Seize (off_hook=True) or release an FXO line."""

    KIND: ClassVar[MessageKind] = MessageKind.HOOK_SET
    port: int = _wire(PORT)
    off_hook: bool = _wire(BOOL)


@dataclass(frozen=True)
class Dial(Message):
    """Card dials on a seized FXO line; DIAL_DONE follows when finished."""

    KIND: ClassVar[MessageKind] = MessageKind.DIAL
    port: int = _wire(PORT)
    digits: str = _wire(_Text(allowed=DIAL_CHARACTERS, min_length=1))
    mode: DialMode = _wire(_Enum(DialMode))  # noqa: RUF009 (_wire returns a field())


@dataclass(frozen=True)
class PolaritySet(Message):
    """FXS line reversal: the answer / disconnect signal some equipment waits for."""

    KIND: ClassVar[MessageKind] = MessageKind.POLARITY_SET
    port: int = _wire(PORT)
    reversed: bool = _wire(BOOL)


# Card -> host ------------------------------------------------------------------------


@dataclass(frozen=True)
class Inventory(Message):
    """Answer to HELLO; ports[0] is port 1."""

    KIND: ClassVar[MessageKind] = MessageKind.INVENTORY
    firmware_version: str = _wire(TEXT)
    ports: tuple[PortKind, ...] = _wire(_PortKinds())


@dataclass(frozen=True)
class Hook(Message):
    """FXS phone went off hook or back on hook."""

    KIND: ClassVar[MessageKind] = MessageKind.HOOK
    port: int = _wire(PORT)
    off_hook: bool = _wire(BOOL)


@dataclass(frozen=True)
class Flash(Message):
    KIND: ClassVar[MessageKind] = MessageKind.FLASH
    port: int = _wire(PORT)


@dataclass(frozen=True)
class Digit(Message):
    """DTMF or pulse digit detected on an FXS port."""

    KIND: ClassVar[MessageKind] = MessageKind.DIGIT
    port: int = _wire(PORT)
    digit: str = _wire(_Char(FXS_DIGITS))


@dataclass(frozen=True)
class RingDetect(Message):
    """FXO ringing voltage started (True) or stopped; sent per burst, not per cadence cycle."""

    KIND: ClassVar[MessageKind] = MessageKind.RING_DETECT
    port: int = _wire(PORT)
    ringing: bool = _wire(BOOL)


@dataclass(frozen=True)
class CallerId(Message):
    KIND: ClassVar[MessageKind] = MessageKind.CALLER_ID
    port: int = _wire(PORT)
    number: str = _wire(TEXT)
    name: str = _wire(TEXT)


@dataclass(frozen=True)
class Polarity(Message):
    """FXO polarity reversal seen (often: far end answered or cleared)."""

    KIND: ClassVar[MessageKind] = MessageKind.POLARITY
    port: int = _wire(PORT)


@dataclass(frozen=True)
class LoopCurrent(Message):
    """FXO loop current appeared or dropped; a drop while seized means the far end cleared."""

    KIND: ClassVar[MessageKind] = MessageKind.LOOP_CURRENT
    port: int = _wire(PORT)
    present: bool = _wire(BOOL)


@dataclass(frozen=True)
class DialDone(Message):
    KIND: ClassVar[MessageKind] = MessageKind.DIAL_DONE
    port: int = _wire(PORT)


@dataclass(frozen=True)
class Fault(Message):
    """Something the host should log or act on; port 0 means the whole card."""

    KIND: ClassVar[MessageKind] = MessageKind.FAULT
    port: int = _wire(PORT_OR_CARD)
    code: int = _wire(U8)  # usually a FaultCode
    text: str = _wire(TEXT)


MESSAGE_TYPES: dict[MessageKind, type[Message]] = {
    message_type.KIND: message_type
    for message_type in (
        Ack,
        Hello,
        Heartbeat,
        Ring,
        RingStop,
        HookSet,
        Dial,
        PolaritySet,
        Inventory,
        Hook,
        Flash,
        Digit,
        RingDetect,
        CallerId,
        Polarity,
        LoopCurrent,
        DialDone,
        Fault,
    )
}


# --------------------------------------------------------------------------- framing


def stuff(body: bytes) -> bytes:
    """Escape so that 0x7E only ever appears as a frame delimiter."""
    return body.replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")


def encode_frame(message: Message, seq: int, syn: bool = False) -> bytes:
    """Complete frame, opening and closing flag included."""
    if not 0 <= seq < SEQ_MODULUS:
        raise ProtocolError(f"seq {seq} is outside 0..255")
    payload = message.encode_payload()
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError(f"{type(message).__name__} payload of {len(payload)} bytes > 240")
    body = bytes((message.KIND, SYN_FLAG if syn else 0, seq)) + payload
    body += crc16(body).to_bytes(CRC_SIZE, "big")
    return b"\x7e" + stuff(body) + b"\x7e"


@dataclass(frozen=True)
class Frame:
    message: Message
    seq: int
    syn: bool


@dataclass
class DecoderCounters:
    frames_ok: int = 0
    bad_crc: int = 0
    too_short: int = 0
    too_long: int = 0
    unknown_type: int = 0
    bad_payload: int = 0
    garbage_bytes: int = 0  # raw bytes (flags excluded) that did not form a frame with a good CRC

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class FrameDecoder:
    """Turns a byte stream into frames, resynchronising on the next flag after any damage."""

    def __init__(self) -> None:
        self.counters = DecoderCounters()
        self._in_frame = False  # False until a flag is seen, and after an overlong body
        self._escaped = False
        self._body = bytearray()
        self._raw_length = 0  # bytes of the current candidate as received, for garbage_bytes

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for byte in data:
            if byte == FLAG:
                if self._in_frame:
                    frame = self._finish_candidate()
                    if frame is not None:
                        frames.append(frame)
                self._start_candidate()
            elif not self._in_frame:
                self.counters.garbage_bytes += 1
            else:
                self._add_byte(byte)
        return frames

    def _start_candidate(self) -> None:
        self._in_frame = True
        self._escaped = False
        self._body.clear()
        self._raw_length = 0

    def _add_byte(self, byte: int) -> None:
        self._raw_length += 1
        if self._escaped:
            self._escaped = False
            byte ^= ESCAPE_XOR
        elif byte == ESCAPE:
            self._escaped = True
            return
        if len(self._body) == MAX_BODY:
            # Drop the rest up to the next flag: it cannot be a frame, and memory stays bounded.
            self.counters.too_long += 1
            self.counters.garbage_bytes += self._raw_length
            self._in_frame = False
            return
        self._body.append(byte)

    def _finish_candidate(self) -> Frame | None:
        counters = self.counters
        if self._raw_length == 0:
            return None  # back-to-back flags are idle fill, not an error
        if self._escaped:  # 0x7D 0x7E is the HDLC abort sequence
            counters.garbage_bytes += self._raw_length
            return None
        body = bytes(self._body)
        if len(body) < HEADER_SIZE + CRC_SIZE:
            counters.too_short += 1
            counters.garbage_bytes += self._raw_length
            return None
        if crc16(body[:-CRC_SIZE]) != int.from_bytes(body[-CRC_SIZE:], "big"):
            counters.bad_crc += 1
            counters.garbage_bytes += self._raw_length
            return None
        kind, flags, seq = body[0], body[1], body[2]
        try:
            message_type = MESSAGE_TYPES[MessageKind(kind)]
        except ValueError:
            counters.unknown_type += 1
            return None
        try:
            message = message_type.decode_payload(body[HEADER_SIZE:-CRC_SIZE])
        except ProtocolError:
            counters.bad_payload += 1
            return None
        counters.frames_ok += 1
        return Frame(message=message, seq=seq, syn=bool(flags & SYN_FLAG))
