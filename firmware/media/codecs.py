"""Voice codecs for SIP legs: G.711 A-law and µ-law as numpy tables, G.722 through `g722`.

The mixer works on 8 kHz int16 frames of 160 samples. Every codec here turns such frames
into RTP payloads and back, and for all of them one payload byte is one RTP timestamp unit
(G.722's RTP clock is 8000 Hz by RFC 3551's historical rule), so 20 ms is 160 bytes.

G.711 is stateless, so one shared codec object encodes or decodes the frames of every leg
in one numpy call (2-D arrays, legs x 160): a 256-entry table decodes, a 65536-entry table
indexed by the samples' uint16 view encodes. The tables are built from the ITU-T G.711
segment rules and checked against `audioop` for all 65536 inputs in the tests.

G.722 is ADPCM with state, so each leg owns its codec object. It runs in the `g722`
library's 8 kHz mode: the lower sub-band is coded straight from our 8 kHz frames and the
upper sub-band is sent empty; decoding keeps the lower sub-band only. The G.722 band split
is itself a 2:1 resampler, so no resampler of ours sits in front of it (rtpproxy and
Asterisk translate 8 kHz audio to G.722 the same way). Wideband phones decode it at 16 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

FRAME_SAMPLES = 160  # 20 ms at 8 kHz, the mixer's frame
MULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5
DEFAULT_TELEPHONE_EVENT_PT = 101


class CodecUnavailableError(RuntimeError):
    """A codec we know by name whose library is not installed on this machine."""


# --------------------------------------------------------------------------- G.711 tables

_MULAW_BIAS = 0x84
_MULAW_CLIP = 8159  # in the 14-bit domain
_MULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _build_mulaw_encode_table() -> np.ndarray:
    """Index: the sample's uint16 bit pattern; value: the µ-law byte (G.711 table 2a)."""
    linear = np.arange(65536, dtype=np.int64).astype(np.uint16).view(np.int16).astype(np.int64)
    value = linear >> 2  # 14-bit, arithmetic shift as in the reference code
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), _MULAW_CLIP) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, value)  # first end >= value
    code = (segment << 4) | ((value >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_mulaw_decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int64) & 0xFF
    magnitude = (((code & 0x0F) << 3) + _MULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _MULAW_BIAS - magnitude, magnitude - _MULAW_BIAS).astype(np.int16)


def _build_alaw_encode_table() -> np.ndarray:
    """Index: the sample's uint16 bit pattern; value: the A-law byte (G.711 table 1a)."""
    linear = np.arange(65536, dtype=np.int64).astype(np.uint16).view(np.int16).astype(np.int64)
    value = linear >> 3  # 13-bit
    negative = value < 0
    mask = np.where(negative, 0x55, 0xD5)
    value = np.where(negative, -value - 1, value)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, value)
    shift = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((value >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int64) ^ 0x55
    mantissa = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    magnitude = np.where(
        segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0)
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


MULAW_ENCODE_TABLE = _build_mulaw_encode_table()
MULAW_DECODE_TABLE = _build_mulaw_decode_table()
ALAW_ENCODE_TABLE = _build_alaw_encode_table()
ALAW_DECODE_TABLE = _build_alaw_decode_table()


def mulaw_encode(samples: np.ndarray) -> np.ndarray:
    """int16 samples of any shape -> µ-law bytes (uint8) of the same shape."""
    return MULAW_ENCODE_TABLE[np.asarray(samples, dtype=np.int16).view(np.uint16)]


def mulaw_decode(codes: np.ndarray) -> np.ndarray:
    """µ-law bytes (uint8) of any shape -> int16 samples of the same shape."""
    return MULAW_DECODE_TABLE[codes]


def alaw_encode(samples: np.ndarray) -> np.ndarray:
    """int16 samples of any shape -> A-law bytes (uint8) of the same shape."""
    return ALAW_ENCODE_TABLE[np.asarray(samples, dtype=np.int16).view(np.uint16)]


def alaw_decode(codes: np.ndarray) -> np.ndarray:
    """A-law bytes (uint8) of any shape -> int16 samples of the same shape."""
    return ALAW_DECODE_TABLE[codes]


# --------------------------------------------------------------------------- the interface


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """What SDP and RTP need to know about a codec, whether or not we can run it."""

    name: str  # the SDP encoding name, as RFC 3551 spells it
    payload_type: int | None  # static payload type, None for dynamic ones
    clock_rate: int  # RTP timestamp units per second (8000 for G.722 too, RFC 3551 4.5.2)
    audio: bool = True  # False for telephone-event, which carries no samples
    default_fmtp: str | None = None
    silence_byte: int | None = None  # one payload byte that decodes to (near) silence


class Codec(Protocol):
    """Turns 8 kHz int16 frames into payload bytes and back.

    Arrays are (rows, 160) or (160,). A stateless codec (`stateful` False) is shared by all
    legs and its rows are different legs; a stateful codec belongs to one leg and its rows
    are that leg's consecutive frames.
    """

    spec: CodecSpec
    stateful: bool

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """int16 samples -> uint8 payload bytes, the same shape (one byte per sample)."""
        ...

    def decode(self, payloads: np.ndarray) -> np.ndarray:
        """uint8 payload bytes -> int16 samples, the same shape."""
        ...


class _TableCodec:
    """G.711: two table look-ups, one shared instance per law."""

    stateful = False

    def __init__(self, spec: CodecSpec, encode_table: np.ndarray, decode_table: np.ndarray):
        self.spec = spec
        self._encode_table = encode_table
        self._decode_table = decode_table

    def encode(self, frames: np.ndarray) -> np.ndarray:
        # np.take: half the time of fancy indexing for a whole tick of legs (measured).
        return np.take(self._encode_table, np.asarray(frames, dtype=np.int16).view(np.uint16))

    def decode(self, payloads: np.ndarray) -> np.ndarray:
        return np.take(self._decode_table, payloads)

    def __repr__(self) -> str:
        return f"<codec {self.spec.name}>"


class G722Codec:
    """G.722 at 64 kbit/s for one leg, through the `g722` library's 8 kHz mode."""

    stateful = True

    def __init__(self) -> None:
        try:
            from G722 import G722  # the `g722` package's module name
        except ImportError:
            raise CodecUnavailableError("G.722 needs the 'g722' package") from None
        self.spec = G722_SPEC
        self._encoder = G722(8000, 64000, False)
        self._decoder = G722(8000, 64000, False)

    def encode(self, frames: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(frames, dtype=np.int16)
        encoded = self._encoder.encode(samples.reshape(-1))
        return np.frombuffer(encoded, dtype=np.uint8).reshape(samples.shape)

    def decode(self, payloads: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(payloads, dtype=np.uint8)
        decoded = self._decoder.decode(codes.tobytes())
        return np.frombuffer(decoded, dtype=np.int16).reshape(codes.shape)

    def __repr__(self) -> str:
        return "<codec G722 (one leg)>"


# --------------------------------------------------------------------------- the registry

PCMU_SPEC = CodecSpec("PCMU", 0, 8000, silence_byte=MULAW_SILENCE)
PCMA_SPEC = CodecSpec("PCMA", 8, 8000, silence_byte=ALAW_SILENCE)
G722_SPEC = CodecSpec("G722", 9, 8000, silence_byte=0xFF)  # 0xFF: low-band code for ~zero
TELEPHONE_EVENT_SPEC = CodecSpec("telephone-event", None, 8000, audio=False, default_fmtp="0-16")

CODEC_SPECS: dict[str, CodecSpec] = {
    spec.name.lower(): spec for spec in (PCMU_SPEC, PCMA_SPEC, G722_SPEC, TELEPHONE_EVENT_SPEC)
}
STATIC_PAYLOAD_TYPES: dict[int, CodecSpec] = {
    spec.payload_type: spec for spec in CODEC_SPECS.values() if spec.payload_type is not None
}

PCMU = _TableCodec(PCMU_SPEC, MULAW_ENCODE_TABLE, MULAW_DECODE_TABLE)
PCMA = _TableCodec(PCMA_SPEC, ALAW_ENCODE_TABLE, ALAW_DECODE_TABLE)
_SHARED_CODECS: dict[str, Codec] = {"pcmu": PCMU, "pcma": PCMA}


def spec_by_name(name: str) -> CodecSpec | None:
    """The codec an SDP encoding name means (case-insensitive, RFC 4566 6), None if unknown."""
    return CODEC_SPECS.get(name.lower())


def spec_by_payload_type(payload_type: int) -> CodecSpec | None:
    """The codec of a static payload type (RFC 3551 table 4) that we know, else None."""
    return STATIC_PAYLOAD_TYPES.get(payload_type)


def g722_available() -> bool:
    """True when the G.722 library imports here (it ships wheels for x86_64 and aarch64)."""
    try:
        import G722  # noqa: F401
    except ImportError:
        return False
    return True


def default_codec_preference() -> tuple[str, ...]:
    """Audio codecs we offer and accept, best first.

    G.711 leads: our mixer is narrowband, so G.722 brings no sound quality, and it costs
    about 11 µs of C per leg and direction each tick where G.711 costs a share of one
    table look-up for all legs. G.722 is there for phones that speak nothing else.
    """
    names = ["PCMU", "PCMA"]
    if g722_available():
        names.append("G722")
    return tuple(names)


def new_codec(name: str) -> Codec:
    """The codec object for one leg: the shared one for G.711, a fresh one for G.722."""
    key = name.lower()
    shared = _SHARED_CODECS.get(key)
    if shared is not None:
        return shared
    if key == "g722":
        return G722Codec()
    raise CodecUnavailableError(f"no audio codec called {name!r}")
