"""Build the shipped prompt library: speech with espeak-ng, music on hold with numpy.

A build-time tool, run by a developer after changing a text; the WAVs it writes are
committed under `firmware/prompts/` with a README listing every prompt and its text. The
appliance and the tests never run it, and espeak-ng is not needed by them.

    apt-get install -y espeak-ng
    .venv/bin/python tools/make_prompts.py            # everything
    .venv/bin/python tools/make_prompts.py --only music

Output is deterministic: the same espeak-ng version and texts give the same bytes
(the version is recorded in the README), and the music is pure arithmetic.

Speech: espeak-ng's own voices (formant synthesis, GPLv3 program; its output carries no
licence), British English `en-gb` and European Portuguese `pt`, a little slower than
the default so they carry over a phone line. Each recording goes through the same
conversion as an upload (`firmware.media.prompts.convert`: anti-alias resampling to
8 kHz, active level -16 dBm0), then leading and trailing silence is trimmed to 30/60 ms.

Music: an original piece written here (so royalty free): a I-vi-IV-V style progression
in C major at 90 bpm, 12 bars (32 s), a soft pad, an arpeggio, a bass line with the
harmonics that make it audible above 300 Hz, and a sparse bell melody. Notes that ring
past the end are wrapped to the start, so the loop has no seam. Level -20 dBm0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.media.levels import db_to_gain  # noqa: E402
from firmware.media.prompt_wav import encode_wav  # noqa: E402
from firmware.media.prompts import (  # noqa: E402
    MUSIC_LEVEL_DBM0,
    PEAK_LIMIT,
    SAMPLE_RATE,
    active_level_dbm0,
    apply_fades,
    convert,
)

OUTPUT = ROOT / "firmware" / "prompts"
LEAD_MS = 30
TAIL_MS = 60
TRIM_BELOW_DB = 40.0  # frames this far under the loudest one count as silence


@dataclass(frozen=True)
class Voice:
    espeak_voice: str
    words_per_minute: int
    pitch: int
    description: str


VOICES: dict[str, Voice] = {
    "en": Voice("en-gb", 150, 48, "espeak-ng en-gb (British English), 150 words/min"),
    "pt": Voice("pt", 145, 48, "espeak-ng pt (European Portuguese), 145 words/min"),
}

# name -> (English, Portuguese). Keep names stable: call features refer to them.
PROMPTS: dict[str, tuple[str, str]] = {
    "all_operators_busy": (
        "All our operators are busy at the moment.",
        "Todos os nossos operadores estão ocupados de momento.",
    ),
    "please_hold": ("Please hold.", "Por favor, aguarde."),
    "thank_you_for_waiting": (
        "Thank you for waiting. Your call will be answered shortly.",
        "Obrigado por aguardar. A sua chamada será atendida brevemente.",
    ),
    "office_closed": (
        "Our office is closed. Please call again during our opening hours.",
        "O nosso escritório está encerrado. Por favor, volte a ligar dentro do horário"
        " de funcionamento.",
    ),
    "number_does_not_exist": (
        "The number you have dialled does not exist. Please check the number and try again.",
        "O número que marcou não existe. Por favor, verifique o número e tente novamente.",
    ),
    "cannot_answer_now": (
        "Your call cannot be answered at the moment. Please try again later.",
        "De momento não é possível atender a sua chamada. Por favor, tente mais tarde.",
    ),
    "invalid_option": ("That option is not valid.", "Opção inválida."),
    "you_are_caller_number": ("You are caller number", "A sua posição na fila é"),
    "expected_wait": (
        "The expected waiting time is about",
        "O tempo de espera previsto é de cerca de",
    ),
    "minute": ("minute", "minuto"),
    "minutes": ("minutes", "minutos"),
    "thank_you_for_calling": ("Thank you for calling.", "Obrigado pela sua chamada."),
    "press_to_leave": ("To leave the queue, press", "Para sair da fila de espera, prima"),
    "key_star": ("star", "asterisco"),
    "key_hash": ("hash", "cardinal"),
    "enter_extension": (
        "Please dial the extension number.",
        "Por favor, marque o número da extensão.",
    ),
    "connecting": (
        "Please wait while we connect your call.",
        "Por favor, aguarde enquanto transferimos a sua chamada.",
    ),
    "enter_pin": ("Please enter your pin.", "Por favor, introduza o seu código pin."),
    "pin_wrong": ("That pin is not correct.", "O código pin está incorreto."),
    "pin_locked": (
        "Too many wrong attempts. Access is locked.",
        "Demasiadas tentativas erradas. O acesso foi bloqueado.",
    ),
    "goodbye": ("Goodbye.", "Adeus."),
    "and": ("and", "e"),
}

_NUMBERS_EN = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen", "twenty"),
)
_NUMBERS_PT = (
    *("zero", "um", "dois", "três", "quatro", "cinco", "seis", "sete", "oito", "nove", "dez"),
    *("onze", "doze", "treze", "catorze", "quinze", "dezasseis", "dezassete", "dezoito"),
    *("dezanove", "vinte"),
)
_TENS_EN = ("thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_TENS_PT = ("trinta", "quarenta", "cinquenta", "sessenta", "setenta", "oitenta", "noventa")
NUMBERS: dict[str, tuple[str, str]] = {
    **{f"number_{n}": (_NUMBERS_EN[n], _NUMBERS_PT[n]) for n in range(21)},
    **{f"number_{10 * (i + 3)}": (_TENS_EN[i], _TENS_PT[i]) for i in range(7)},
}
ALL_PROMPTS: dict[str, tuple[str, str]] = {**PROMPTS, **NUMBERS}
LANGUAGE_COLUMNS = ("en", "pt")


# ----- speech ---------------------------------------------------------------------------------


def speak(text: str, voice: Voice) -> bytes:
    """WAV bytes of `text` from espeak-ng (22.05 kHz mono 16-bit)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                voice.espeak_voice,
                "-s",
                str(voice.words_per_minute),
                "-p",
                str(voice.pitch),
                "-w",
                str(path),
                text,
            ],
            check=True,
            capture_output=True,
        )
        return path.read_bytes()


def speech_prompt(text: str, voice: Voice) -> np.ndarray:
    """8 kHz int16 prompt: converted like an upload, then trimmed."""
    converted = convert(speak(text, voice))
    return trim_silence(converted.samples)


def trim_silence(samples: np.ndarray) -> np.ndarray:
    """Drop leading and trailing silence, keep short margins, fade the new ends."""
    frame = SAMPLE_RATE // 200  # 5 ms
    count = samples.size // frame
    powers = np.mean(samples[: count * frame].astype(np.float64).reshape(count, frame) ** 2, 1)
    loud = np.flatnonzero(powers >= powers.max() * 10 ** (-TRIM_BELOW_DB / 10))
    start = max(loud[0] * frame - LEAD_MS * SAMPLE_RATE // 1000, 0)
    end = min((loud[-1] + 1) * frame + TAIL_MS * SAMPLE_RATE // 1000, samples.size)
    shaped = apply_fades(samples[start:end].astype(np.float64))
    return np.clip(np.rint(shaped), -32768, 32767).astype(np.int16)


# ----- music ----------------------------------------------------------------------------------

BPM = 90
BEAT_S = 60.0 / BPM
BEATS_PER_BAR = 4
_NOTE_INDEX = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

# One chord per bar: (root, chord tones), note names with octave.
PROGRESSION: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("C3", ("C4", "E4", "G4", "B4")),
    ("A2", ("A3", "C4", "E4", "G4")),
    ("F2", ("F3", "A3", "C4", "E4")),
    ("G2", ("G3", "B3", "D4", "F4")),
    ("C3", ("C4", "E4", "G4", "D5")),
    ("E3", ("E4", "G4", "B4", "D5")),
    ("F2", ("F3", "A3", "C4", "E4")),
    ("G2", ("G3", "B3", "D4", "G4")),
    ("A2", ("A3", "C4", "E4", "A4")),
    ("F2", ("F3", "A3", "C4", "F4")),
    ("C3", ("G3", "C4", "E4", "G4")),
    ("G2", ("G3", "B3", "D4", "F4")),
)
# Melody: (bar, beat, note, beats long); silent in the first phrase, sparse after.
MELODY: tuple[tuple[int, float, str, float], ...] = (
    (4, 0, "E5", 1.5),
    (4, 1.5, "D5", 0.5),
    (4, 2, "C5", 2),
    (5, 0, "B4", 1.5),
    (5, 2, "D5", 2),
    (6, 0, "C5", 1),
    (6, 1, "A4", 1),
    (6, 2, "F4", 2),
    (7, 0, "G4", 3),
    (8, 0, "A4", 1.5),
    (8, 1.5, "B4", 0.5),
    (8, 2, "C5", 2),
    (9, 0, "A4", 2),
    (9, 2, "F4", 2),
    (10, 0, "E4", 1.5),
    (10, 1.5, "G4", 0.5),
    (10, 2, "C5", 2),
    (11, 0, "B4", 2),
    (11, 2, "D5", 2),
)
ARPEGGIO_ORDER = (0, 1, 2, 3, 2, 1, 2, 3)  # chord-tone index per eighth note


def frequency(note: str) -> float:
    """Equal-tempered frequency of a note name such as 'A4' (440 Hz) or 'C3'."""
    semitone = _NOTE_INDEX[note[0]] + 12 * (int(note[1:]) + 1)
    return 440.0 * 2.0 ** ((semitone - 69) / 12)


def render_music() -> np.ndarray:
    """The loopable piece as int16 at 8 kHz (deterministic: no randomness anywhere)."""
    bar_s = BEAT_S * BEATS_PER_BAR
    total = round(len(PROGRESSION) * bar_s * SAMPLE_RATE)
    buffer = np.zeros(total)
    for bar, (root, chord) in enumerate(PROGRESSION):
        start = bar * bar_s
        for note in chord:
            _add(buffer, start, bar_s + 0.6, _pad(frequency(note), bar_s + 0.6), 0.10)
        for eighth, tone_index in enumerate(ARPEGGIO_ORDER):
            note_s = start + eighth * BEAT_S / 2
            pitch = frequency(chord[tone_index]) * 2.0
            _add(buffer, note_s, 1.6, _bell(pitch, 1.6, decay_s=0.45), 0.16)
        for beat in (0, 2):
            _add(buffer, start + beat * BEAT_S, 1.4, _bass(frequency(root), 1.4), 0.38)
    for bar, beat, note, beats in MELODY:
        length = beats * BEAT_S + 1.2
        start = (bar * BEATS_PER_BAR + beat) * BEAT_S
        _add(buffer, start, length, _bell(frequency(note) * 2.0, length, decay_s=0.9), 0.22)
    gain = db_to_gain(MUSIC_LEVEL_DBM0 - active_level_dbm0(buffer))
    gain = min(gain, PEAK_LIMIT / float(np.max(np.abs(buffer))))
    return np.clip(np.rint(buffer * gain), -32768, 32767).astype(np.int16)


def _add(buffer: np.ndarray, start_s: float, length_s: float, voice: np.ndarray, level: float):
    """Mix `voice` in at `start_s`, wrapping what runs past the end to the start (loop)."""
    first = round(start_s * SAMPLE_RATE)
    indices = (first + np.arange(voice.size)) % buffer.size
    np.add.at(buffer, indices, level * voice)


def _time(length_s: float) -> np.ndarray:
    return np.arange(round(length_s * SAMPLE_RATE)) / SAMPLE_RATE


def _pad(pitch: float, length_s: float) -> np.ndarray:
    """Two slightly detuned soft tones: slow swell in and out."""
    time = _time(length_s)
    tone = np.sin(2 * np.pi * (pitch - 0.7) * time) + np.sin(2 * np.pi * (pitch + 0.7) * time)
    tone += 0.25 * np.sin(2 * np.pi * 2 * pitch * time)
    envelope = np.minimum(1.0, time / 0.35) * np.minimum(1.0, (length_s - time) / 0.6)
    return tone * np.clip(envelope, 0.0, 1.0) * 0.5


def _bell(pitch: float, length_s: float, decay_s: float) -> np.ndarray:
    """An electric-piano-like note: quick attack, exponential decay, soft upper partials."""
    time = _time(length_s)
    partials = ((1.0, 1.0), (2.0, 0.35), (3.0, 0.12), (4.0, 0.05))
    tone = sum(
        weight * np.exp(-time * number / decay_s) * np.sin(2 * np.pi * number * pitch * time)
        for number, weight in partials
        if number * pitch < 3600
    )
    attack = np.minimum(1.0, time / 0.006)
    release = np.clip((length_s - time) / 0.05, 0.0, 1.0)
    return np.asarray(tone) * attack * release


def _bass(pitch: float, length_s: float) -> np.ndarray:
    """A round bass note whose 2nd-4th harmonics carry it through the 300 Hz phone cut."""
    time = _time(length_s)
    tone = sum(
        weight * np.sin(2 * np.pi * number * pitch * time)
        for number, weight in ((1, 1.0), (2, 0.8), (3, 0.45), (4, 0.2))
    )
    envelope = np.minimum(1.0, time / 0.01) * np.exp(-time / 0.7)
    release = np.clip((length_s - time) / 0.1, 0.0, 1.0)
    return np.asarray(tone) * envelope * release


# ----- output ---------------------------------------------------------------------------------


def write(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_wav(samples, SAMPLE_RATE))


def espeak_version() -> str:
    result = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True)
    return result.stdout.split("Data at")[0].strip()


def write_readme(output: Path, version: str) -> None:
    lines = [
        "# Shipped prompts and music",
        "",
        "Generated by `tools/make_prompts.py` (do not edit the WAVs or this file by hand:",
        "change the texts there and run it again). 8 kHz mono 16-bit PCM; speech at an active",
        "level of -16 dBm0, music at -20 dBm0. An upload with the same name replaces a",
        "shipped prompt (`minipbx prompt add NAME FILE`, see docs/prompts.md).",
        "",
        f"Speech: {version}; " + "; ".join(voice.description for voice in VOICES.values()) + ".",
        "",
        "| name | en | pt |",
        "|------|----|----|",
    ]
    for name, (english, portuguese) in ALL_PROMPTS.items():
        lines.append(f"| `{name}` | {english} | {portuguese} |")
    lines += [
        "",
        "## Music (`music/`)",
        "",
        "| name | what |",
        "|------|------|",
        f"| `default` | original piece, C major, {BPM} bpm, {len(PROGRESSION)} bars"
        f" ({len(PROGRESSION) * BEATS_PER_BAR * BEAT_S:.0f} s), loops without a seam |",
        "",
    ]
    (output / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["music", *LANGUAGE_COLUMNS])
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.only in (None, "music"):
        write(args.out / "music" / "default.wav", render_music())
        print("music/default.wav")
    for column, language in enumerate(LANGUAGE_COLUMNS):
        if args.only not in (None, language):
            continue
        for name, texts in ALL_PROMPTS.items():
            write(
                args.out / language / f"{name}.wav", speech_prompt(texts[column], VOICES[language])
            )
        print(f"{language}/: {len(ALL_PROMPTS)} prompts")
    if args.only is None:
        write_readme(args.out, espeak_version())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
