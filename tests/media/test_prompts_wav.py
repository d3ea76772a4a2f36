"""Reading WAV files for announcements (firmware/media/prompt_wav.py).

Files are built byte by byte here (not with the module's own writer), so a parser bug
cannot hide behind a matching writer bug; `encode_wav` is read back with the stdlib.
"""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from firmware.media.prompt_wav import WavError, decode_wav, encode_wav, parse_wav

_PCM_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def fmt_chunk(tag: int, channels: int, rate: int, bits: int, *, extensible_tag: int = 0) -> bytes:
    block = channels * bits // 8
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if tag == 0xFFFE:
        body += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", extensible_tag)
        body += _PCM_GUID_TAIL
    return b"fmt " + struct.pack("<I", len(body)) + body


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def data_chunk(payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return b"data" + struct.pack("<I", len(payload)) + payload + pad


def wav(tag: int, channels: int, rate: int, bits: int, payload: bytes, **options: int) -> bytes:
    return riff(fmt_chunk(tag, channels, rate, bits, **options), data_chunk(payload))


# ----- decoding every accepted coding to the int16 scale ------------------------------------


def test_pcm16_stereo_frames_become_rows_with_exact_values() -> None:
    payload = struct.pack("<6h", 1, -2, 300, -400, 32767, -32768)
    audio = decode_wav(wav(1, 2, 8000, 16, payload), max_seconds=10)
    assert audio.samples.shape == (3, 2)
    assert audio.samples.tolist() == [[1, -2], [300, -400], [32767, -32768]]
    assert audio.format.description == "PCM 16-bit 8000 Hz stereo"
    assert audio.duration_s == pytest.approx(3 / 8000)


def test_pcm8_is_unsigned_around_128() -> None:
    audio = decode_wav(wav(1, 1, 11025, 8, bytes([0, 128, 255, 129])), max_seconds=10)
    assert audio.samples[:, 0].tolist() == [-32768.0, 0.0, 127 * 256.0, 256.0]


def test_pcm24_sign_extends_and_scales_by_256() -> None:
    values = [0, 256, -256, 8388607, -8388608, -1]
    payload = b"".join(value.to_bytes(3, "little", signed=True) for value in values)
    audio = decode_wav(wav(1, 1, 48000, 24, payload), max_seconds=10)
    assert audio.samples[:, 0].tolist() == [0.0, 1.0, -1.0, 8388607 / 256, -32768.0, -1 / 256]


def test_pcm32_scales_by_65536() -> None:
    payload = struct.pack("<3i", 65536, -2147483648, 2147483647)
    audio = decode_wav(wav(1, 1, 16000, 32, payload), max_seconds=10)
    assert audio.samples[:, 0].tolist() == [1.0, -32768.0, 2147483647 / 65536]


@pytest.mark.parametrize(("bits", "code"), [(32, "<f"), (64, "<d")])
def test_ieee_float_full_scale_is_32768(bits: int, code: str) -> None:
    payload = struct.pack(f"{code[0]}3{code[1]}", 0.5, -1.0, 0.25)
    audio = decode_wav(wav(3, 1, 22050, bits, payload), max_seconds=10)
    assert audio.samples[:, 0].tolist() == [16384.0, -32768.0, 8192.0]


def test_alaw_and_mulaw_use_the_g711_tables() -> None:
    # G.711: A-law 0xD5 and µ-law 0xFF are +0; A-law 0x2A is -32256, µ-law 0x00 is -32124.
    alaw = decode_wav(wav(6, 1, 8000, 8, bytes([0xD5, 0x2A])), max_seconds=10)
    mulaw = decode_wav(wav(7, 1, 8000, 8, bytes([0xFF, 0x00])), max_seconds=10)
    assert alaw.samples[:, 0].tolist() == [8.0, -32256.0]
    assert mulaw.samples[:, 0].tolist() == [0.0, -32124.0]


def test_wave_format_extensible_carries_pcm24() -> None:
    payload = (1000).to_bytes(3, "little", signed=True) * 2
    data = wav(0xFFFE, 2, 44100, 24, payload, extensible_tag=1)
    audio = decode_wav(data, max_seconds=10)
    assert audio.format.extensible and audio.format.format_tag == 1
    assert audio.samples.tolist() == [[1000 / 256, 1000 / 256]]


def test_unknown_chunks_and_odd_sizes_are_skipped_with_their_pad_byte() -> None:
    odd = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"
    data = riff(fmt_chunk(1, 1, 8000, 16), odd, data_chunk(struct.pack("<2h", 5, -5)))
    assert decode_wav(data, max_seconds=10).samples[:, 0].tolist() == [5.0, -5.0]


def test_encode_wav_is_read_back_by_the_stdlib() -> None:
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    with wave.open(io.BytesIO(encode_wav(samples, 8000))) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        assert np.frombuffer(reader.readframes(10), "<i2").tolist() == samples.tolist()


# ----- every kind of broken file, with its reason --------------------------------------------

_GOOD = wav(1, 1, 8000, 16, struct.pack("<4h", 1, 2, 3, 4))


def _riff_size_patched(data: bytes, size: int) -> bytes:
    return data[:4] + struct.pack("<I", size) + data[8:]


BROKEN: dict[str, tuple[bytes, str, str]] = {
    "empty file": (b"", "empty", "empty"),
    "text": (b"hello, this is not audio", "not_riff", "does not start with 'RIFF'"),
    "mp3 with id3": (b"ID3\x04\x00" + bytes(100), "not_riff", "MP3"),
    "ogg": (b"OggS" + bytes(100), "not_riff", "Ogg"),
    "avi": (b"RIFF" + struct.pack("<I", 4) + b"AVI ", "not_riff", "'AVI '"),
    "short header": (b"RIFF\x10\x00", "truncated", "only 6 bytes"),
    "truncated upload": (_GOOD[:-3], "truncated", "truncated"),
    "riff size too small": (
        _riff_size_patched(_GOOD, len(_GOOD) - 8 - 4),
        "bad_chunk_size",
        "wrong chunk sizes",
    ),
    "data size beyond the end": (
        riff(fmt_chunk(1, 1, 8000, 16), b"data" + struct.pack("<I", 400) + bytes(8)),
        "bad_chunk_size",
        "says 400 bytes",
    ),
    "half a frame": (wav(1, 2, 8000, 16, bytes(6)), "bad_chunk_size", "whole number"),
    "zero frames": (wav(1, 1, 8000, 16, b""), "empty", "0 frames"),
    "no data chunk": (riff(fmt_chunk(1, 1, 8000, 16)), "empty", "no data chunk"),
    "no fmt chunk": (riff(data_chunk(bytes(4))), "bad_format", "before the fmt chunk"),
    "only a list chunk": (riff(b"LIST" + struct.pack("<I", 2) + b"ab"), "bad_format", "no fmt"),
    "short fmt": (riff(b"fmt " + struct.pack("<I", 8) + bytes(8)), "bad_format", "at least 16"),
    "mp3 inside wav": (wav(0x55, 1, 44100, 0, bytes(10)), "unsupported_format", "MP3"),
    "ima adpcm": (wav(0x11, 1, 8000, 4, bytes(10)), "unsupported_format", "IMA ADPCM"),
    "twelve-bit pcm": (wav(1, 1, 8000, 12, bytes(4)), "unsupported_format", "12 bits"),
    "six channels": (wav(1, 6, 48000, 16, bytes(12)), "unsupported_format", "6 channels"),
    "odd rate": (wav(1, 1, 37800, 16, bytes(4)), "unsupported_format", "37800 Hz"),
    "block align lies": (
        riff(
            b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 4, 16),
            data_chunk(bytes(8)),
        ),
        "bad_format",
        "block align 4",
    ),
    "nan samples": (
        wav(3, 1, 8000, 32, struct.pack("<2f", 0.1, float("nan"))),
        "bad_samples",
        "NaN",
    ),
    "unknown extensible guid": (
        riff(fmt_chunk(0xFFFE, 1, 8000, 16, extensible_tag=1)[:-1] + b"\x00", data_chunk(bytes(2))),
        "unsupported_format",
        "sub-format",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_file_is_refused_with_its_reason(case: str) -> None:
    data, kind, words = BROKEN[case]
    with pytest.raises(WavError) as caught:
        decode_wav(data, max_seconds=10)
    assert caught.value.kind == kind
    assert words in caught.value.reason


def test_too_long_names_the_duration_and_the_limit() -> None:
    data = wav(1, 1, 8000, 8, bytes([128]) * 8000 * 3)
    with pytest.raises(WavError, match=r"3\.0 s of audio; .* at most 2 s") as caught:
        decode_wav(data, max_seconds=2)
    assert caught.value.kind == "too_long"
    assert decode_wav(data, max_seconds=3).frames == 24000


def test_one_pad_byte_after_the_riff_chunk_is_tolerated_but_more_is_not() -> None:
    assert parse_wav(_GOOD + b"\x00")[0].sample_rate == 8000
    with pytest.raises(WavError, match="2 bytes follow"):
        parse_wav(_GOOD + b"\x00\x00")
