"""Uploads: conversion to 8 kHz mono at the stated level, refusals, atomic store
(firmware/media/prompts.py). Stored files are read back with the stdlib `wave` module."""

from __future__ import annotations

import os
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from firmware.media import prompts
from firmware.media.prompts import (
    PromptError,
    PromptKey,
    convert,
    import_prompt,
    list_uploads,
    read_upload,
    remove,
    store,
)

# A sine at -16 dBm0: 0 dBm0 is a peak of 32767 / 10**(3.14/20) = 32767 / 1.43549 = 22826.4,
# and 10**(-16/20) = 0.158489, so the peak is 3617.7 and the RMS 3617.7 / sqrt(2) = 2558.1.
PROMPT_PEAK = 3617.7
PROMPT_RMS = 2558.1
# -20 dBm0 for music: 22826.4 * 0.1 = 2282.6 peak.
MUSIC_PEAK = 2282.6
# The level is that of the stored file, fades included. A 10 ms raised-cosine ramp keeps
# 3/8 of the power of its 80 samples, so a faded 20 ms frame has (80 * 3/8 + 80) / 160 =
# 0.6875 of the power of a full one. A 1 s tone has 50 frames, two of them faded: mean
# (48 + 2 * 0.6875) / 50 = 0.9875, so its steady part sits 1 / sqrt(0.9875) = 1.00631 above.
FADE_FACTOR = 1 / np.sqrt(0.9875)
STEADY_PEAK = PROMPT_PEAK * FADE_FACTOR  # 3640.5


def write_wav(path: Path, channels: list[np.ndarray], rate: int, width: int = 2) -> Path:
    """PCM WAV through the stdlib writer (8-bit unsigned, 16 or 32-bit signed)."""
    frames = np.stack(channels, axis=1)
    if width == 1:
        payload = np.clip(np.rint(frames / 256 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 2:
        payload = np.clip(np.rint(frames), -32768, 32767).astype("<i2").tobytes()
    else:
        payload = np.rint(frames * 65536).astype("<i4").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(len(channels))
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(payload)
    return path


def sine(frequency: float, rate: int, seconds: float = 1.0, amplitude: float = 16000.0):
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(round(rate * seconds)) / rate)


def read_back(path: Path) -> np.ndarray:
    with wave.open(str(path)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        return np.frombuffer(reader.readframes(reader.getnframes()), "<i2").astype(np.float64)


def amplitude_at(samples: np.ndarray, frequency: float, rate: int = 8000) -> float:
    """Amplitude of the component at `frequency` (a whole number of periods in 1 s)."""
    time = np.arange(samples.size) / rate
    in_phase = 2 * np.mean(samples * np.sin(2 * np.pi * frequency * time))
    quadrature = 2 * np.mean(samples * np.cos(2 * np.pi * frequency * time))
    return float(np.hypot(in_phase, quadrature))


def middle(samples: np.ndarray) -> np.ndarray:
    return samples[800:-800]  # one whole second minus 100 ms each side: whole periods of 5 Hz


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# ----- conversion -----------------------------------------------------------------------------


def test_1_khz_at_44100_stereo_comes_out_1_khz_8000_mono_at_minus_16_dbm0(tmp_path: Path) -> None:
    tone = sine(1000, 44100, amplitude=20000)
    source = write_wav(tmp_path / "in.wav", [tone, tone], 44100)
    path, converted = import_prompt(
        source, tmp_path / "prompts", PromptKey("hello"), max_bytes=2 << 20, max_seconds=300
    )
    assert path == tmp_path / "prompts" / "hello.wav"
    samples = read_back(path)
    assert samples.size == 8000
    steady = middle(samples)
    assert amplitude_at(steady, 1000) == pytest.approx(STEADY_PEAK, rel=0.003)
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(PROMPT_RMS * FADE_FACTOR, rel=0.003)
    # Nothing but the tone: everything else at least 50 dB below it.
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(steady.size)))
    peak_bin = int(np.argmax(spectrum))
    assert peak_bin * 8000 / steady.size == pytest.approx(1000, abs=2)
    outside = np.delete(spectrum, range(peak_bin - 8, peak_bin + 9))
    assert 20 * np.log10(outside.max() / spectrum[peak_bin]) < -50
    assert converted.level_dbm0 == pytest.approx(-16.0, abs=0.02)
    assert converted.source.description == "PCM 16-bit 44100 Hz stereo"


def test_both_channels_count_equally_in_the_mono_mix(tmp_path: Path) -> None:
    left, right = sine(700, 16000), sine(1300, 16000)
    samples = convert(write_wav(tmp_path / "in.wav", [left, right], 16000).read_bytes()).samples
    steady = middle(samples.astype(np.float64))
    assert amplitude_at(steady, 700) == pytest.approx(amplitude_at(steady, 1300), rel=0.01)


def test_3900_hz_survives_and_6_khz_at_16_khz_is_40_db_down(tmp_path: Path) -> None:
    # Both tones in one file: the level is set by the 3.9 kHz one, the 6 kHz one must not
    # come back as a 2 kHz whistle.
    mixed = sine(3900, 16000, amplitude=8000) + sine(6000, 16000, amplitude=8000)
    samples = convert(write_wav(tmp_path / "in.wav", [mixed], 16000).read_bytes()).samples
    steady = middle(samples.astype(np.float64))
    kept, folded = amplitude_at(steady, 3900), amplitude_at(steady, 2000)
    assert kept == pytest.approx(STEADY_PEAK, rel=0.003)
    assert 20 * np.log10(folded / kept) < -40


@pytest.mark.parametrize(
    ("rate", "channels", "width"),
    [
        (8000, 1, 2),
        (8000, 1, 1),
        (11025, 2, 1),
        (16000, 1, 4),
        (22050, 2, 2),
        (32000, 1, 2),
        (48000, 2, 4),
    ],
)
def test_rates_channels_and_depths_all_give_the_same_tone(
    tmp_path: Path, rate: int, channels: int, width: int
) -> None:
    tone = sine(440, rate, amplitude=12000)
    source = write_wav(tmp_path / "in.wav", [tone] * channels, rate, width)
    converted = convert(source.read_bytes())
    steady = middle(converted.samples.astype(np.float64))
    expected = STEADY_PEAK * np.sin(2 * np.pi * 440 * np.arange(800, 7200) / 8000)
    error_db = 10 * np.log10(np.mean((steady - expected) ** 2) / np.mean(expected**2))
    assert error_db < (-40 if width == 1 else -60)  # 8-bit input brings its own noise
    assert converted.samples.size == 8000
    assert converted.source.sample_rate == rate and converted.source.channels == channels


def test_music_is_set_to_minus_20_dbm0() -> None:
    data = _pcm16_bytes(sine(500, 8000))
    steady = middle(convert(data, music=True).samples.astype(np.float64))
    assert amplitude_at(steady, 500) == pytest.approx(MUSIC_PEAK * FADE_FACTOR, rel=0.003)


def test_speech_level_ignores_pauses() -> None:
    # 0.5 s of tone then 0.5 s of near silence: the level is the tone's, not half of it.
    # 25 active frames, one faded: (24 + 0.6875) / 25 = 0.9875 again.
    signal = np.concatenate([sine(1000, 8000, 0.5), np.full(4000, 1.0)])
    converted = convert(_pcm16_bytes(signal))
    assert amplitude_at(converted.samples[800:3200].astype(np.float64), 1000) == pytest.approx(
        STEADY_PEAK, rel=0.003
    )


def test_peaks_never_pass_minus_1_dbfs_even_when_the_level_is_short() -> None:
    # A single loud click in a quiet file: raising it to -16 dBm0 would clip, so the peak
    # limit (32767 * 10**(-1/20) = 29204) sets the gain.
    signal = np.full(8000, 0.0)
    signal[4000] = 30000.0
    converted = convert(_pcm16_bytes(signal))
    assert int(np.max(np.abs(converted.samples))) == 29204
    assert converted.level_dbm0 < -16.0


def test_ends_are_faded_so_a_prompt_never_clicks() -> None:
    # A cosine starts and ends at its peak: unfaded, the first sample would be 3640.
    cosine = 10000 * np.cos(2 * np.pi * 1000 * np.arange(8000) / 8000)
    samples = convert(_pcm16_bytes(cosine)).samples.astype(np.float64)
    assert samples[0] == 0 and abs(samples[-1]) < 2
    # Raised-cosine ramp over 80 samples: at sample 40 the gain is 0.5.
    assert samples[40] == pytest.approx(0.5 * STEADY_PEAK, rel=0.003)
    assert samples[400] == pytest.approx(STEADY_PEAK, rel=0.003)


# ----- refusals leave the folder unchanged ---------------------------------------------------


def _pcm16_bytes(samples: np.ndarray, rate: int = 8000) -> bytes:
    payload = np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(payload), b"WAVE", b"fmt ", 16, 1, 1, rate,
        rate * 2, 2, 16, b"data", len(payload),
    )  # fmt: skip
    return header + payload


def _broken_files() -> dict[str, tuple[bytes, str]]:
    good = _pcm16_bytes(sine(440, 8000, 0.5))
    return {
        "not_riff": (b"this is a text file, not audio at all", "not a WAV file"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "wrong_chunk_sizes": (good[:40] + struct.pack("<I", 99999) + good[44:], "says 99999"),
        "zero_frames": (_pcm16_bytes(np.zeros(0)), "0 frames"),
        "too_long": (_pcm16_bytes(np.full(8000 * 4, 1000.0)), "at most 3 s"),
        "silent": (_pcm16_bytes(np.zeros(8000)), "silent"),
        "compressed": (good[:20] + struct.pack("<H", 0x55) + good[22:], "MP3"),
    }


@pytest.mark.parametrize("case", sorted(_broken_files()))
def test_broken_upload_is_refused_with_its_reason_and_nothing_changes(
    tmp_path: Path, case: str
) -> None:
    folder = tmp_path / "prompts"
    store(folder, PromptKey("welcome"), np.full(800, 123, dtype=np.int16))
    before = snapshot(folder)
    data, words = _broken_files()[case]
    source = tmp_path / "upload.wav"
    source.write_bytes(data)
    rejected_before = sum(prompts.REJECTIONS.values())
    with pytest.raises(PromptError) as caught:
        import_prompt(source, folder, PromptKey("welcome"), max_bytes=2 << 20, max_seconds=3)
    assert words in caught.value.reason
    assert snapshot(folder) == before
    assert sum(prompts.REJECTIONS.values()) == rejected_before + 1


def test_oversized_file_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.wav"
    with source.open("wb") as handle:
        handle.truncate(2 * 1024 * 1024 + 1)  # sparse: 2 MiB and one byte

    def no_reading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", no_reading)
    with pytest.raises(PromptError, match=r"2\.00 MB; uploads may be at most 2\.00 MB") as caught:
        read_upload(source, 2 * 1024 * 1024)
    assert caught.value.kind == "too_large"


def test_missing_file_and_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="cannot read") as caught:
        read_upload(tmp_path / "nope.wav", 1000)
    assert caught.value.kind == "unreadable"
    with pytest.raises(PromptError, match="not a regular file"):
        read_upload(tmp_path, 1000)


@pytest.mark.parametrize("name", ["", "a b", "../x", "x.wav", "-lead", "é", "a" * 49])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(PromptError, match="prompt name") as caught:
        PromptKey(name)
    assert caught.value.kind == "bad_name"


def test_music_has_no_language_and_languages_are_known() -> None:
    with pytest.raises(PromptError, match="drop --language"):
        PromptKey("jazz", music=True, language="en")
    with pytest.raises(PromptError, match="unknown language 'de'"):
        PromptKey("hello", language="de")


# ----- atomic store, list, remove ------------------------------------------------------------


def test_store_replaces_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    key = PromptKey("welcome", language="pt")
    first = store(tmp_path, key, np.full(100, 1, dtype=np.int16))
    second = store(tmp_path, key, np.full(50, 2, dtype=np.int16))
    assert first == second == tmp_path / "pt" / "welcome.wav"
    assert read_back(second).tolist() == [2.0] * 50
    assert sorted(path.name for path in (tmp_path / "pt").iterdir()) == ["welcome.wav"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_write_keeps_the_old_prompt_and_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    key = PromptKey("welcome")
    store(tmp_path, key, np.full(100, 7, dtype=np.int16))
    before = snapshot(tmp_path)

    def broken(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(OSError, match="No space"):
        store(tmp_path, key, np.full(100, 9, dtype=np.int16))
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_list_and_remove_uploads(tmp_path: Path) -> None:
    store(tmp_path, PromptKey("welcome"), np.ones(8000, dtype=np.int16))
    store(tmp_path, PromptKey("welcome", language="en"), np.ones(4000, dtype=np.int16))
    store(tmp_path, PromptKey("jazz", music=True), np.ones(16000, dtype=np.int16))
    (tmp_path / ".welcome.abc.tmp").write_bytes(b"half")  # a crashed upload is ignored
    (tmp_path / "not a name.wav").write_bytes(b"x")
    listed = [(item.key, item.seconds) for item in list_uploads(tmp_path)]
    assert listed == [
        (PromptKey("jazz", music=True), 2.0),
        (PromptKey("welcome"), 1.0),
        (PromptKey("welcome", language="en"), 0.5),
    ]
    assert remove(tmp_path, PromptKey("welcome", language="en")) == tmp_path / "en" / "welcome.wav"
    with pytest.raises(PromptError, match="no uploaded prompt 'welcome' \\(en\\)") as caught:
        remove(tmp_path, PromptKey("welcome", language="en"))
    assert caught.value.kind == "not_found"
    assert [item.key for item in list_uploads(tmp_path)][1:] == [PromptKey("welcome")]
