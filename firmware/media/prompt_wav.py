"""WAV files for announcements: a RIFF/WAVE reader that says what is wrong, and a writer.

An installer uploading a greeting needs the reason a file is refused ("truncated",
"MP3 inside a WAV", "6 channels"). The stdlib `wave` module of Python 3.11 knows only
plain PCM and answers anything else tersely ("unknown format: 65534"), so the chunks are
walked here, on bytes already in memory (no I/O, easy to test with hand-made files).

Accepted: PCM 8 (unsigned), 16, 24 and 32-bit; IEEE float 32 and 64-bit; G.711 A-law and
µ-law; the same inside WAVE_FORMAT_EXTENSIBLE; 1 or 2 channels; the rates in
`SUPPORTED_RATES`. Decoded samples are float64 on the int16 scale (full scale ±32768),
one column per channel. `encode_wav` writes the canonical 44-byte-header PCM file that
the stdlib `wave` module (and any player) reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from firmware.media.codecs import ALAW_DECODE_TABLE, MULAW_DECODE_TABLE

FORMAT_PCM = 0x0001
FORMAT_IEEE_FLOAT = 0x0003
FORMAT_ALAW = 0x0006
FORMAT_MULAW = 0x0007
FORMAT_EXTENSIBLE = 0xFFFE
# The GUID tail every KSDATAFORMAT_SUBTYPE_* for a classic format tag shares.
_SUBFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

SUPPORTED_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_CHANNELS = 2
_BITS_BY_FORMAT: dict[int, tuple[int, ...]] = {
    FORMAT_PCM: (8, 16, 24, 32),
    FORMAT_IEEE_FLOAT: (32, 64),
    FORMAT_ALAW: (8,),
    FORMAT_MULAW: (8,),
}
_FORMAT_NAMES = {
    FORMAT_PCM: "PCM",
    FORMAT_IEEE_FLOAT: "IEEE float",
    FORMAT_ALAW: "A-law",
    FORMAT_MULAW: "µ-law",
    0x0002: "Microsoft ADPCM",
    0x0011: "IMA ADPCM",
    0x0022: "DSP Group TrueSpeech",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0045: "G.726 ADPCM",
    0x0050: "MPEG audio",
    0x0055: "MP3",
    0x00FF: "AAC",
    0x0161: "Windows Media Audio",
    0x1610: "AAC",
    0xF1AC: "FLAC",
}
# What a file that is not RIFF at all most likely is, by its first bytes.
_OTHER_CONTAINERS = (
    (b"ID3", "an MP3 file"),
    (b"\xff\xfb", "an MP3 file"),
    (b"\xff\xf3", "an MP3 file"),
    (b"OggS", "an Ogg (Vorbis/Opus) file"),
    (b"fLaC", "a FLAC file"),
    (b"FORM", "an AIFF file"),
    (b"RIFX", "a big-endian RIFX file"),
    (b"RF64", "an RF64 (64-bit WAV) file"),
)


class WavError(ValueError):
    """A file refused, with a short `kind` for counting and a `reason` for people."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class WavFormat:
    """The fmt chunk, with EXTENSIBLE resolved to the format it carries."""

    format_tag: int
    channels: int
    sample_rate: int
    bits_per_sample: int
    block_align: int
    extensible: bool = False

    @property
    def description(self) -> str:
        name = _FORMAT_NAMES.get(self.format_tag, f"format 0x{self.format_tag:04X}")
        layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        return f"{name} {self.bits_per_sample}-bit {self.sample_rate} Hz {layout}"


@dataclass(frozen=True)
class WavAudio:
    """Decoded audio: float64 frames x channels on the int16 scale."""

    format: WavFormat
    samples: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.frames / self.format.sample_rate


def decode_wav(data: bytes, *, max_seconds: float) -> WavAudio:
    """Validate and decode a whole WAV file held in `data`; raise `WavError` with the reason."""
    wav_format, payload = parse_wav(data)
    frames = len(payload) // wav_format.block_align
    if frames == 0:
        raise WavError("empty", "the data chunk holds no audio (0 frames)")
    duration = frames / wav_format.sample_rate
    if duration > max_seconds:
        raise WavError(
            "too_long",
            f"{duration:.1f} s of audio; announcements may last at most {max_seconds:g} s",
        )
    samples = _decode_samples(wav_format, payload)
    if not np.all(np.isfinite(samples)):
        raise WavError("bad_samples", "the float samples include NaN or infinity")
    return WavAudio(wav_format, samples.reshape(frames, wav_format.channels))


def parse_wav(data: bytes) -> tuple[WavFormat, memoryview]:
    """Walk the RIFF chunks: the validated format and the raw bytes of the data chunk."""
    _check_riff_header(data)
    end = 8 + struct.unpack_from("<I", data, 4)[0]
    wav_format: WavFormat | None = None
    payload: memoryview | None = None
    position = 12
    while position < end:
        if position + 8 > end:
            raise WavError(
                "bad_chunk_size",
                f"{end - position} stray bytes at byte {position}, too few for a chunk header",
            )
        chunk_id = data[position : position + 4]
        size = struct.unpack_from("<I", data, position + 4)[0]
        body = position + 8
        if body + size > end:
            label = chunk_id.decode("latin-1")
            raise WavError(
                "bad_chunk_size",
                f"chunk {label!r} at byte {position} says {size} bytes but only"
                f" {end - body} remain in the file",
            )
        if chunk_id == b"fmt ":
            if wav_format is not None:
                raise WavError("bad_format", "the file has two fmt chunks")
            wav_format = _parse_format(data[body : body + size])
        elif chunk_id == b"data":
            if wav_format is None:
                raise WavError("bad_format", "the data chunk comes before the fmt chunk")
            if payload is None:  # a second data chunk (very rare) is ignored
                payload = memoryview(data)[body : body + size]
        position = body + size + (size & 1)
    if wav_format is None:
        raise WavError("bad_format", "no fmt chunk: the file does not say how its audio is coded")
    if payload is None:
        raise WavError("empty", "no data chunk: the file holds no audio")
    if len(payload) % wav_format.block_align:
        raise WavError(
            "bad_chunk_size",
            f"the data chunk ({len(payload)} bytes) is not a whole number of"
            f" {wav_format.block_align}-byte frames",
        )
    return wav_format, payload


def _check_riff_header(data: bytes) -> None:
    if data[:4] != b"RIFF":
        for magic, what in _OTHER_CONTAINERS:
            if data.startswith(magic):
                raise WavError("not_riff", f"this is {what}, not a WAV file")
        if not data:
            raise WavError("empty", "the file is empty")
        raise WavError("not_riff", "not a WAV file (it does not start with 'RIFF')")
    if len(data) < 12:
        raise WavError("truncated", f"the file is only {len(data)} bytes: truncated")
    if data[8:12] != b"WAVE":
        kind = data[8:12].decode("latin-1")
        raise WavError("not_riff", f"a RIFF file of type {kind!r}, not a WAVE audio file")
    declared = 8 + struct.unpack_from("<I", data, 4)[0]
    if declared > len(data):
        raise WavError(
            "truncated",
            f"the RIFF header announces {declared} bytes but the file has {len(data)}:"
            " truncated (an interrupted upload or copy?)",
        )
    if len(data) > declared + 1:  # one pad byte after an odd RIFF size is tolerated
        raise WavError(
            "bad_chunk_size",
            f"{len(data) - declared} bytes follow the end the RIFF header announces"
            f" ({declared} bytes): wrong chunk sizes",
        )


def _parse_format(body: bytes) -> WavFormat:
    if len(body) < 16:
        raise WavError("bad_format", f"the fmt chunk is {len(body)} bytes, at least 16 needed")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body)
    extensible = tag == FORMAT_EXTENSIBLE
    if extensible:
        if len(body) < 40:
            raise WavError("bad_format", "WAVE_FORMAT_EXTENSIBLE fmt chunk shorter than 40 bytes")
        subformat = body[24:40]
        if subformat[2:] != _SUBFORMAT_TAIL:
            raise WavError(
                "unsupported_format", "WAVE_FORMAT_EXTENSIBLE with an unknown sub-format"
            )
        tag = struct.unpack_from("<H", subformat)[0]
    wav_format = WavFormat(tag, channels, rate, bits, block_align, extensible)
    _check_format(wav_format)
    return wav_format


def _check_format(wav_format: WavFormat) -> None:
    tag = wav_format.format_tag
    if tag not in _BITS_BY_FORMAT:
        name = _FORMAT_NAMES.get(tag, "an unknown format")
        raise WavError(
            "unsupported_format",
            f"compressed audio ({name}, format tag 0x{tag:04X}) is not supported:"
            " save the file as an uncompressed PCM WAV (16-bit)",
        )
    if wav_format.bits_per_sample not in _BITS_BY_FORMAT[tag]:
        allowed = ", ".join(str(bits) for bits in _BITS_BY_FORMAT[tag])
        raise WavError(
            "unsupported_format",
            f"{_FORMAT_NAMES[tag]} with {wav_format.bits_per_sample} bits per sample is not"
            f" supported (allowed: {allowed})",
        )
    if not 1 <= wav_format.channels <= MAX_CHANNELS:
        raise WavError(
            "unsupported_format", f"{wav_format.channels} channels: only mono or stereo files"
        )
    if wav_format.sample_rate not in SUPPORTED_RATES:
        rates = ", ".join(str(rate) for rate in SUPPORTED_RATES)
        raise WavError(
            "unsupported_format",
            f"sample rate {wav_format.sample_rate} Hz is not supported (use one of {rates} Hz)",
        )
    expected = wav_format.channels * wav_format.bits_per_sample // 8
    if wav_format.block_align != expected:
        raise WavError(
            "bad_format",
            f"block align {wav_format.block_align} does not match {wav_format.channels}"
            f" channel(s) of {wav_format.bits_per_sample} bits ({expected})",
        )


def _decode_samples(wav_format: WavFormat, payload: memoryview) -> np.ndarray:
    raw = np.frombuffer(payload, dtype=np.uint8)
    tag, bits = wav_format.format_tag, wav_format.bits_per_sample
    if tag == FORMAT_ALAW:
        return ALAW_DECODE_TABLE[raw].astype(np.float64)
    if tag == FORMAT_MULAW:
        return MULAW_DECODE_TABLE[raw].astype(np.float64)
    if tag == FORMAT_IEEE_FLOAT:
        dtype = "<f4" if bits == 32 else "<f8"
        return np.frombuffer(payload, dtype=dtype).astype(np.float64) * 32768.0
    if bits == 8:
        return (raw.astype(np.float64) - 128.0) * 256.0
    if bits == 16:
        return np.frombuffer(payload, dtype="<i2").astype(np.float64)
    if bits == 24:
        triples = raw.reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        return values.astype(np.float64) / 256.0
    return np.frombuffer(payload, dtype="<i4").astype(np.float64) / 65536.0


def encode_wav(samples: np.ndarray, sample_rate: int = 8000) -> bytes:
    """Canonical mono 16-bit PCM WAV bytes (44-byte header) of int16 `samples`."""
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        FORMAT_PCM,
        1,
        sample_rate,
        sample_rate * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm
