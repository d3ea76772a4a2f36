"""The shipped library, loading it with uploads into the sound bank, and spoken numbers
(firmware/prompts/, firmware/media/prompt_library.py, prompt_numbers.py, soundbank.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from firmware.config.load import parse_config
from firmware.media.levels import power_to_dbm0
from firmware.media.mixer import Mixer
from firmware.media.prompt_library import (
    SHIPPED_FOLDER,
    async_load_prompts,
    install,
    library_entries,
    prompt_language,
    read_library,
    uploads_folder,
)
from firmware.media.prompt_numbers import (
    join_sounds,
    number_sounds,
    position_announcement,
    wait_announcement,
)
from firmware.media.prompts import PromptKey, store
from firmware.media.soundbank import Sound, SoundBank

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("en", "pt")
# What the call features rely on (issue 5: queues, hunt groups, modes, menus, DISA).
REQUIRED = (
    "all_operators_busy",
    "please_hold",
    "thank_you_for_waiting",
    "office_closed",
    "number_does_not_exist",
    "cannot_answer_now",
    "invalid_option",
    "you_are_caller_number",
    "expected_wait",
    "minute",
    "minutes",
    "thank_you_for_calling",
    "press_to_leave",
    "key_star",
    "key_hash",
    "enter_extension",
    "connecting",
    "enter_pin",
    "pin_wrong",
    "pin_locked",
    "goodbye",
    "and",
    *(f"number_{n}" for n in range(21)),
    *(f"number_{n}" for n in range(30, 100, 10)),
)


def read_wav(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """Format and samples through the stdlib reader (independent of prompt_wav)."""
    with wave.open(str(path)) as reader:
        layout = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
        return layout, np.frombuffer(reader.readframes(reader.getnframes()), "<i2")


def active_level(samples: np.ndarray) -> float:
    """Level of the 20 ms frames within 30 dB of the loudest, computed here again."""
    frames = samples[: samples.size // 160 * 160].astype(np.float64).reshape(-1, 160)
    powers = np.mean(frames**2, axis=1)
    return float(power_to_dbm0(powers[powers >= powers.max() / 1000].mean()))


# ----- the shipped files ----------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_required_prompt_is_shipped_in_both_languages(language: str) -> None:
    names = {path.stem for path in (SHIPPED_FOLDER / language).glob("*.wav")}
    assert set(REQUIRED) <= names
    other = {
        path.stem for path in (SHIPPED_FOLDER / ("pt" if language == "en" else "en")).glob("*.wav")
    }
    assert names == other


@pytest.mark.parametrize("language", LANGUAGES)
def test_shipped_prompts_are_8_khz_mono_at_telephone_level_and_sane_length(language: str) -> None:
    for path in sorted((SHIPPED_FOLDER / language).glob("*.wav")):
        layout, samples = read_wav(path)
        assert layout == (1, 2, 8000), path.name
        seconds = samples.size / 8000
        short = re.fullmatch(r"number_\d+|key_\w+|and|minutes?", path.stem) is not None
        low, high = (0.2, 1.5) if short else (0.5, 8.0)
        assert low <= seconds <= high, (path.name, seconds)
        assert active_level(samples) == pytest.approx(-16.0, abs=0.5), path.name
        assert np.max(np.abs(samples)) <= 29204, path.name
        assert abs(int(samples[0])) < 200 and abs(int(samples[-1])) < 200, path.name


def test_shipped_music_loops_without_a_seam_at_minus_20_dbm0() -> None:
    layout, samples = read_wav(SHIPPED_FOLDER / "music" / "default.wav")
    assert layout == (1, 2, 8000)
    assert 30.0 <= samples.size / 8000 <= 60.0
    assert samples.size % 160 == 0  # whole mixer frames
    assert active_level(samples) == pytest.approx(-20.0, abs=0.5)
    steps = np.abs(np.diff(samples.astype(np.int32)))
    seam = abs(int(samples[0]) - int(samples[-1]))
    assert seam <= np.percentile(steps, 99)


def test_library_size_stays_small() -> None:
    total = sum(path.stat().st_size for path in SHIPPED_FOLDER.rglob("*.wav"))
    assert total < 3 * 1024 * 1024


def test_readme_lists_every_shipped_prompt_and_nothing_else() -> None:
    text = (SHIPPED_FOLDER / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.MULTILINE))
    shipped = {path.stem for path in (SHIPPED_FOLDER / "en").glob("*.wav")}
    assert listed == shipped | {"default"}


def test_the_music_generator_is_deterministic_and_matches_the_committed_file() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_prompts", ROOT / "tools" / "make_prompts.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_prompts"] = module
    try:
        spec.loader.exec_module(module)
        first, second = module.render_music(), module.render_music()
    finally:
        del sys.modules["make_prompts"]
    _, committed = read_wav(SHIPPED_FOLDER / "music" / "default.wav")
    assert np.array_equal(first, second)
    assert np.max(np.abs(first.astype(np.int32) - committed)) <= 1  # floating point across CPUs


# ----- language and folders -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "en"),
        ('[site]\ncountry = "pt"\n', "pt"),
        ('[site]\ncountry = "uk"\n', "en"),
        ('[site]\ncountry = "pt"\n[prompts]\nlanguage = "en"\n', "en"),
        ('[prompts]\nlanguage = "pt"\n', "pt"),
    ],
)
def test_language_follows_the_config_then_the_country(text: str, expected: str) -> None:
    assert prompt_language(parse_config(text)) == expected


def test_uploads_folder_defaults_under_the_data_dir(tmp_path: Path) -> None:
    default = parse_config("").prompts
    relative = parse_config('[prompts]\nfolder = "greetings"\n').prompts
    absolute = parse_config(f'[prompts]\nfolder = "{tmp_path}/x"\n').prompts
    assert uploads_folder(default, Path("/data")) == Path("/data/prompts")
    assert uploads_folder(relative, Path("/data")) == Path("/data/greetings")
    assert uploads_folder(absolute, Path("/data")) == tmp_path / "x"


def test_config_refuses_unknown_language_and_silly_limits() -> None:
    from firmware.config.load import ConfigError

    for text in (
        '[prompts]\nlanguage = "de"\n',
        "[prompts]\nmax_upload_bytes = 100\n",
        "[prompts]\nmax_seconds = 0\n",
        "[prompts]\nvoice = 'x'\n",
    ):
        with pytest.raises(ConfigError):
            parse_config(text)


# ----- loading into the sound bank ------------------------------------------------------------


def test_library_has_every_prompt_once_and_music_loops(tmp_path: Path) -> None:
    entries = library_entries("en", tmp_path / "none")
    names = [entry.sound_name for entry in entries]
    assert names == sorted(names) and len(names) == len(set(names))
    assert {f"prompt:{name}" for name in REQUIRED} <= set(names)
    music = [entry for entry in entries if entry.loop]
    assert [entry.sound_name for entry in music] == ["music:default"]
    assert not any(entry.uploaded for entry in entries)


def test_uploads_override_shipped_and_language_uploads_override_common(tmp_path: Path) -> None:
    store(tmp_path, PromptKey("please_hold"), np.full(800, 1, dtype=np.int16))
    store(tmp_path, PromptKey("goodbye"), np.full(800, 2, dtype=np.int16))
    store(tmp_path, PromptKey("goodbye", language="en"), np.full(800, 3, dtype=np.int16))
    store(tmp_path, PromptKey("goodbye", language="pt"), np.full(800, 4, dtype=np.int16))
    store(tmp_path, PromptKey("welcome"), np.full(800, 5, dtype=np.int16))
    store(tmp_path, PromptKey("default", music=True), np.full(800, 6, dtype=np.int16))
    report = read_library("en", tmp_path, max_seconds=300)
    assert report.failures == {}
    by_name = {sound.sound_name: sound for sound in report.sounds}
    assert by_name["prompt:please_hold"].samples[0] == 1
    assert by_name["prompt:goodbye"].samples[0] == 3
    assert by_name["prompt:welcome"].samples[0] == 5
    assert by_name["music:default"].samples[0] == 6 and by_name["music:default"].loop
    assert not by_name["prompt:welcome"].loop
    entries = {entry.sound_name: entry for entry in library_entries("en", tmp_path)}
    assert entries["prompt:goodbye"].overrides_shipped and entries["prompt:goodbye"].uploaded
    assert not entries["prompt:welcome"].overrides_shipped
    assert not entries["prompt:invalid_option"].uploaded


def test_a_damaged_stored_file_is_left_out_and_reported(tmp_path: Path) -> None:
    store(tmp_path, PromptKey("welcome"), np.full(800, 5, dtype=np.int16))
    (tmp_path / "please_hold.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt ")
    (tmp_path / "loud.wav").write_bytes(_stereo_44k_wav())
    report = read_library("pt", tmp_path, max_seconds=300)
    assert set(report.failures) == {"prompt:please_hold", "prompt:loud"}
    assert "truncated" in report.failures["prompt:please_hold"]
    assert "not 8 kHz mono 16-bit" in report.failures["prompt:loud"]
    assert "prompt:welcome" in {sound.sound_name for sound in report.sounds}


def _stereo_44k_wav() -> bytes:
    import io

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes(np.full(200, 1000, dtype="<i2").tobytes())
    return buffer.getvalue()


def test_install_adds_once_reloads_add_nothing_and_removed_uploads_go(tmp_path: Path) -> None:
    bank = SoundBank()
    bank.add("dial", np.ones(320), loop=True)
    store(tmp_path, PromptKey("welcome"), np.full(800, 5, dtype=np.int16))
    store(tmp_path, PromptKey("please_hold"), np.full(400, 9, dtype=np.int16))
    first = install(bank, read_library("en", tmp_path, max_seconds=300))
    assert "prompt:welcome" in first and "music:default" in first
    size = bank.samples.size
    assert install(bank, read_library("en", tmp_path, max_seconds=300)) == []
    assert bank.samples.size == size  # a reload with nothing new does not grow the bank
    assert bank.samples_of("prompt:please_hold").tolist() == [9] * 400

    (tmp_path / "welcome.wav").unlink()
    (tmp_path / "please_hold.wav").unlink()
    changed = install(bank, read_library("en", tmp_path, max_seconds=300))
    assert changed == ["prompt:please_hold"]  # back to the shipped recording
    _, shipped = read_wav(SHIPPED_FOLDER / "en" / "please_hold.wav")
    assert np.array_equal(bank.samples_of("prompt:please_hold"), shipped)
    assert "prompt:welcome" not in bank
    assert "dial" in bank  # not a library name: untouched


async def test_async_load_plays_through_the_mixer(tmp_path: Path) -> None:
    mixer = Mixer()
    config = parse_config('[site]\ncountry = "pt"\n')
    report = await async_load_prompts(mixer.sounds, config, tmp_path)
    assert report.language == "pt" and report.failures == {}
    _, expected = read_wav(SHIPPED_FOLDER / "pt" / "goodbye.wav")
    slot = mixer.allocate("caller")
    mixer.play(slot, "prompt:goodbye")
    heard = []
    while mixer.is_playing(slot):
        mixer.tick()
        heard.append(mixer.outputs[slot].copy())
    played = np.concatenate(heard)
    assert np.array_equal(played[: expected.size], expected)
    assert not played[expected.size :].any()
    mixer.play(slot, "music:default")
    assert mixer.is_playing(slot) and mixer.sounds.get("music:default").loop
    await asyncio.sleep(0)


# ----- the sound bank additions ---------------------------------------------------------------


def test_add_many_stores_in_one_step_and_refuses_an_empty_batch_member() -> None:
    bank = SoundBank()
    bank.add("dial", np.arange(3), loop=True)
    added = bank.add_many([("a", np.full(2, 7), False), ("b", np.full(4, 8), True)])
    assert added == [Sound("a", 3, 2, False), Sound("b", 5, 4, True)]
    assert bank.samples.tolist() == [0, 1, 2, 7, 7, 8, 8, 8, 8]
    with pytest.raises(ValueError, match="'c' is empty"):
        bank.add_many([("x", np.ones(3), False), ("c", np.zeros(0), False)])
    assert "x" not in bank and bank.samples.size == 9
    view = bank.samples_of("b")
    assert view.tolist() == [8, 8, 8, 8] and not view.flags.writeable
    bank.discard("a")
    bank.discard("never there")
    assert bank.names == ["b", "dial"]


# ----- spoken numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "language", "words"),
    [
        (0, "en", ["number_0"]),
        (7, "pt", ["number_7"]),
        (20, "en", ["number_20"]),
        (21, "en", ["number_20", "number_1"]),
        (21, "pt", ["number_20", "and", "number_1"]),
        (40, "pt", ["number_40"]),
        (99, "en", ["number_90", "number_9"]),
        (105, "en", ["number_1", "number_0", "number_5"]),
    ],
)
def test_numbers_are_said_with_the_shipped_words(number: int, language: str, words: list[str]):
    assert number_sounds(number, language) == [f"prompt:{word}" for word in words]


def test_every_number_up_to_999_uses_only_shipped_prompts() -> None:
    for language in LANGUAGES:
        shipped = {f"prompt:{path.stem}" for path in (SHIPPED_FOLDER / language).glob("*.wav")}
        for number in range(1000):
            assert set(number_sounds(number, language)) <= shipped, (language, number)


def test_position_and_wait_announcements() -> None:
    assert position_announcement(3, "en") == ["prompt:you_are_caller_number", "prompt:number_3"]
    assert wait_announcement(1, "pt") == [
        "prompt:expected_wait",
        "prompt:number_1",
        "prompt:minute",
    ]
    assert wait_announcement(0, "en")[-1] == "prompt:minute"  # never "zero minutes"
    assert wait_announcement(25, "pt") == [
        "prompt:expected_wait",
        "prompt:number_20",
        "prompt:and",
        "prompt:number_5",
        "prompt:minutes",
    ]
    with pytest.raises(ValueError, match="starts at 1"):
        position_announcement(0, "en")
    with pytest.raises(ValueError, match="negative"):
        number_sounds(-1, "en")
    with pytest.raises(ValueError, match="unknown prompt language 'fr'"):
        number_sounds(1, "fr")


def test_join_sounds_puts_a_short_gap_between_words() -> None:
    bank = SoundBank()
    bank.add_many([("a", np.full(3, 1), False), ("b", np.full(2, 2), False)])
    joined = join_sounds(bank, ["a", "b", "a"], gap_ms=1)
    assert joined.tolist() == [1, 1, 1] + [0] * 8 + [2, 2] + [0] * 8 + [1, 1, 1]
    with pytest.raises(ValueError, match="nothing"):
        join_sounds(bank, [])
