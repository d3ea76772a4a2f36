"""Uploaded announcements and music: validate, convert to 8 kHz, store atomically, list.

An upload goes through `import_prompt`: the size is checked before anything is read
(`max_upload_bytes`, 2 MB by default), the WAV is parsed and decoded
(`firmware.media.prompt_wav`, every refusal with its reason), then converted:

1. the DC offset of each channel is removed and the channels are averaged to mono;
2. resampled to 8 kHz through an anti-alias low-pass (`firmware.media.resample`);
3. 10 ms raised-cosine fades at both ends, so a prompt never starts or stops with a
   click and music loops through silence;
4. the active level (mean power of the 20 ms frames within 30 dB of the loudest one, so
   pauses do not count) is set to -16 dBm0 for prompts and -20 dBm0 for music, unless
   that would push a peak above -1 dBFS (then the peak sets the gain); a file whose
   loudest frame is under -60 dBm0 is refused as silent;
5. rounded to int16 and written as a canonical 8 kHz mono 16-bit WAV to a temporary file
   in the target folder, fsynced, then renamed over the old file (`os.replace`) and the
   folder fsynced. A failure at any step leaves the folder as it was.

Layout of the uploads folder (DATA_DIR/prompts by default): `NAME.wav` a prompt for
every language, `LANG/NAME.wav` a prompt for one language, `music/NAME.wav` music.
Everything here blocks (disk, numpy work): call it from the CLI or through a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware.media.levels import db_to_gain, power_to_dbm0
from firmware.media.prompt_wav import WavError, WavFormat, decode_wav, encode_wav
from firmware.media.resample import resample

SAMPLE_RATE = 8000
PROMPT_LEVEL_DBM0 = -16.0
MUSIC_LEVEL_DBM0 = -20.0
PEAK_LIMIT = round(32767 * 10 ** (-1 / 20))  # -1 dBFS
SILENT_BELOW_DBM0 = -60.0
ACTIVE_RANGE_DB = 30.0
LEVEL_FRAME_SAMPLES = 160  # 20 ms
FADE_MS = 10
MUSIC_FOLDER = "music"
LANGUAGES: tuple[str, ...] = ("en", "pt")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")

log = logging.getLogger(__name__)

# Refused uploads by kind since the process started (the CLI prints the reason; a
# long-running caller such as the web UI can report these).
REJECTIONS: Counter[str] = Counter()


class PromptError(ValueError):
    """An upload refused (or a name not found), with a `kind` for counting."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class PromptKey:
    """Which stored file: a prompt (for all languages or one) or a piece of music."""

    name: str
    music: bool = False
    language: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.music and self.language is not None:
            raise PromptError("bad_name", "music is the same in every language: drop --language")
        if self.language is not None and self.language not in LANGUAGES:
            known = ", ".join(LANGUAGES)
            raise PromptError("bad_name", f"unknown language {self.language!r} (known: {known})")

    @property
    def relative_path(self) -> Path:
        if self.music:
            return Path(MUSIC_FOLDER) / f"{self.name}.wav"
        if self.language is not None:
            return Path(self.language) / f"{self.name}.wav"
        return Path(f"{self.name}.wav")

    @property
    def sound_name(self) -> str:
        """The name the mixer's sound bank knows it by."""
        return sound_name(self.name, music=self.music)

    def describe(self) -> str:
        if self.music:
            return f"music {self.name!r}"
        suffix = f" ({self.language})" if self.language else ""
        return f"prompt {self.name!r}{suffix}"


@dataclass(frozen=True)
class Converted:
    """An upload ready to store, and what was done to it."""

    samples: np.ndarray  # int16, 8 kHz mono
    source: WavFormat
    source_seconds: float
    gain_db: float
    level_dbm0: float

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE


@dataclass(frozen=True)
class StoredPrompt:
    key: PromptKey
    path: Path
    seconds: float


def sound_name(name: str, *, music: bool = False) -> str:
    """`prompt:NAME` (plays once) or `music:NAME` (loops)."""
    return f"{'music' if music else 'prompt'}:{name}"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise PromptError(
            "bad_name",
            f"prompt name {name!r} must be 1 to 48 letters, digits, _ and -,"
            " starting with a letter or digit",
        )
    return name


# ----- upload -------------------------------------------------------------------------------


def read_upload(path: str | Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing an oversized file before reading it."""
    source = Path(path)
    try:
        size = source.stat().st_size
        if not source.is_file():
            raise PromptError("unreadable", f"{source} is not a regular file")
        if size > max_bytes:
            raise PromptError(
                "too_large",
                f"the file is {_megabytes(size)}; uploads may be at most {_megabytes(max_bytes)}",
            )
        with source.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise PromptError("unreadable", f"cannot read {source}: {error.strerror}") from None
    if len(data) > max_bytes:  # grew between stat and read
        raise PromptError("too_large", f"uploads may be at most {_megabytes(max_bytes)}")
    return data


def convert(data: bytes, *, music: bool = False, max_seconds: float = 300.0) -> Converted:
    """Validate and convert WAV bytes to 8 kHz mono int16 at the stated level."""
    try:
        audio = decode_wav(data, max_seconds=max_seconds)
    except WavError as error:
        raise PromptError(error.kind, error.reason) from None
    channels = audio.samples - audio.samples.mean(axis=0)
    mono = channels.mean(axis=1)
    at_8k = resample(mono, audio.format.sample_rate, SAMPLE_RATE)
    target = MUSIC_LEVEL_DBM0 if music else PROMPT_LEVEL_DBM0
    if _loudest_frame_dbm0(at_8k) <= SILENT_BELOW_DBM0:
        raise PromptError(
            "silent", f"the recording is silent (quieter than {SILENT_BELOW_DBM0:g} dBm0)"
        )
    faded = apply_fades(at_8k)
    gain_db = target - active_level_dbm0(faded)
    peak = float(np.max(np.abs(faded)))
    gain_db = min(gain_db, 20 * np.log10(PEAK_LIMIT / peak))
    shaped = faded * db_to_gain(gain_db)
    samples = np.clip(np.rint(shaped), -32768, 32767).astype(np.int16)
    return Converted(samples, audio.format, audio.duration_s, gain_db, active_level_dbm0(samples))


def store(folder: str | Path, key: PromptKey, samples: np.ndarray) -> Path:
    """Write the prompt atomically: temp file in the same folder, fsync, rename, fsync folder."""
    target = Path(folder) / key.relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    data = encode_wav(samples, SAMPLE_RATE)
    handle, temporary = tempfile.mkstemp(prefix=f".{key.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as output:
            output.write(data)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(target.parent)
    return target


def import_prompt(
    source: str | Path,
    folder: str | Path,
    key: PromptKey,
    *,
    max_bytes: int,
    max_seconds: float,
) -> tuple[Path, Converted]:
    """Read, validate, convert and store one upload; a refusal is counted and logged."""
    try:
        converted = convert(
            read_upload(source, max_bytes), music=key.music, max_seconds=max_seconds
        )
    except PromptError as error:
        REJECTIONS[error.kind] += 1
        log.warning(
            "event=prompt_rejected name=%s kind=%s reason=%r", key.name, error.kind, error.reason
        )
        raise
    path = store(folder, key, converted.samples)
    log.info(
        "event=prompt_stored name=%s path=%s seconds=%.2f gain_db=%.1f",
        key.name,
        path,
        converted.seconds,
        converted.gain_db,
    )
    return path, converted


def remove(folder: str | Path, key: PromptKey) -> Path:
    """Delete an uploaded prompt (shipped ones cannot be removed, only overridden)."""
    target = Path(folder) / key.relative_path
    try:
        target.unlink()
    except FileNotFoundError:
        raise PromptError("not_found", f"no uploaded {key.describe()} in {folder}") from None
    _fsync_folder(target.parent)
    return target


def list_uploads(folder: str | Path) -> list[StoredPrompt]:
    """Every uploaded prompt and piece of music in `folder`, by kind then name."""
    return list_stored(folder, include_common=True, languages=LANGUAGES)


def list_stored(
    folder: str | Path, *, include_common: bool, languages: tuple[str, ...]
) -> list[StoredPrompt]:
    """Stored files under the layout above (shared with the shipped library).

    Temporary files (names starting with '.') and names that are not valid are skipped.
    """
    root = Path(folder)
    found: list[StoredPrompt] = []
    places: list[tuple[Path, bool, str | None]] = [(root / MUSIC_FOLDER, True, None)]
    if include_common:
        places.append((root, False, None))
    places.extend((root / language, False, language) for language in languages)
    for place, music, language in places:
        if not place.is_dir():
            continue
        for path in sorted(place.glob("*.wav")):
            if not NAME_PATTERN.fullmatch(path.stem):
                continue
            try:
                status = path.stat()
            except OSError:  # removed while we looked: it is simply not there
                continue
            if not stat.S_ISREG(status.st_mode):
                continue
            key = PromptKey(path.stem, music=music, language=language)
            seconds = max(status.st_size - 44, 0) / (2 * SAMPLE_RATE)
            found.append(StoredPrompt(key, path, seconds))
    return found


# ----- levels -------------------------------------------------------------------------------


def active_level_dbm0(samples: np.ndarray) -> float:
    """Level of the 20 ms frames within 30 dB of the loudest one (pauses left out)."""
    powers = _frame_powers(samples)
    if powers.size == 0:
        return float(power_to_dbm0(0.0))
    active = powers[powers >= powers.max() * 10 ** (-ACTIVE_RANGE_DB / 10)]
    return float(power_to_dbm0(float(active.mean())))


def _loudest_frame_dbm0(samples: np.ndarray) -> float:
    powers = _frame_powers(samples)
    return float(power_to_dbm0(float(powers.max()))) if powers.size else -120.0


def _frame_powers(samples: np.ndarray) -> np.ndarray:
    """Mean square of each whole 20 ms frame (one short frame for a shorter sound)."""
    signal = np.asarray(samples, dtype=np.float64)
    if signal.size < LEVEL_FRAME_SAMPLES:
        return np.array([np.mean(signal**2)]) if signal.size else np.zeros(0)
    count = signal.size // LEVEL_FRAME_SAMPLES
    frames = signal[: count * LEVEL_FRAME_SAMPLES].reshape(count, LEVEL_FRAME_SAMPLES)
    return np.mean(frames**2, axis=1)


def apply_fades(samples: np.ndarray, fade_ms: float = FADE_MS) -> np.ndarray:
    """Raised-cosine fade in and out (float result), at most half the sound each."""
    shaped = np.asarray(samples, dtype=np.float64).copy()
    length = min(round(fade_ms * SAMPLE_RATE / 1000), shaped.size // 2)
    if length > 0:
        ramp = 0.5 * (1.0 - np.cos(np.pi * np.arange(length) / length))
        shaped[:length] *= ramp
        shaped[shaped.size - length :] *= ramp[::-1]
    return shaped


# ----- helpers ------------------------------------------------------------------------------


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.2f} MB"


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut must not bring the old file back)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
