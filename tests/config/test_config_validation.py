"""Config validation teaches the installer: every mistake, with its key path, in one pass."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.config.load import ConfigError, default_config_text, load_config, parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT = default_config_text()


def edit(old: str, new: str, text: str | None = None) -> str:
    """The default with exactly one occurrence of `old` replaced (fails loudly otherwise)."""
    text = DEFAULT if text is None else text
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "<test>")
    assert caught.value.errors, "a refused config names at least one error"
    return caught.value.errors


def test_embedded_default_is_valid() -> None:
    config = load_config(None)
    assert [e.number for e in config.extensions] == [str(n) for n in range(201, 209)]
    assert [(line.name, line.port) for line in config.lines] == [("city1", 9), ("city2", 10)]
    assert parse_config(DEFAULT) == config


# (what the installer did wrong, the broken text, the key path, words the message must contain)
MISTAKES: list[tuple[str, Callable[[], str], str, tuple[str, ...]]] = [
    (
        "unknown key",
        lambda: edit("[site]\n", '[site]\nnmae = "x"\n'),
        "site.nmae",
        ("unknown key",),
    ),
    (
        "extension number with a letter",
        lambda: edit('number = "203"', 'number = "2a"'),
        "extensions[2].number",
        ("'2a'", "2 to 4 digits"),
    ),
    (
        "duplicate extension number",
        lambda: edit('number = "203"', 'number = "202"'),
        "extensions[2].number",
        ("202", "already used by extensions[1]"),
    ),
    (
        "extension on a port that is not FXS",
        lambda: edit("port = 3\n", "port = 9\n"),
        "extensions[2].port",
        ("not an FXS port: the card has FXS ports 1-8",),
    ),
    (
        "city line on an FXS port",
        lambda: edit("port = 10\n", "port = 7\n"),
        "lines[1].port",
        ("not an FXO port", "FXO ports 9-10"),
    ),
    (
        "unknown class of service",
        lambda: edit('class_of_service = "lobby"', 'class_of_service = "guests"'),
        "extensions[7].class_of_service",
        ("'guests'", "[classes_of_service]"),
    ),
    (
        "unknown line group",
        lambda: edit('group = "city"\nincoming = ["201"]', 'group = "town"\nincoming = ["201"]'),
        "lines[0].group",
        ("'town'",),
    ),
    (
        "access code that is a prefix of the extensions",
        lambda: edit('access_code = "9"', 'access_code = "2"'),
        "numbering",
        ("access code (2) is a prefix", "extension 202"),
    ),
    (
        "bad digit pattern in destination_kinds",
        lambda: edit('local = ["2xxxxxxxx"]', 'local = ["2x[xxx"]'),
        "numbering.destination_kinds.local[0]",
        ("bad digit pattern", "'2x[xxx'"),
    ),
    (
        "unknown destination kind",
        lambda: edit('local = ["2xxxxxxxx"]', 'lokal = ["2xxxxxxxx"]'),
        "numbering",
        ("'lokal'", "national"),
    ),
    (
        "unknown country",
        lambda: edit('country = "eu"', 'country = "xx"'),
        "site.country",
        ("'xx'", "pt"),
    ),
    (
        "bad timezone",
        lambda: edit('timezone = "Europe/Lisbon"', 'timezone = "Mars/Olympus"'),
        "site.timezone",
        ("'Mars/Olympus'", "not a known zone"),
    ),
    (
        "bad tone override",
        lambda: DEFAULT + '\n[tones]\nbusy = "425/five hundred"\n',
        "tones.busy",
        ("425/five hundred",),
    ),
    (
        "operator that is not an extension",
        lambda: edit('operator = "201"', 'operator = "299"'),
        "numbering.operator",
        ("299",),
    ),
]


@pytest.mark.parametrize(
    ("make_text", "path", "words"),
    [pytest.param(make, path, words, id=label) for label, make, path, words in MISTAKES],
)
def test_each_mistake_is_named_with_its_key_path(
    make_text: Callable[[], str], path: str, words: tuple[str, ...]
) -> None:
    errors = errors_of(make_text())
    matching = [e for e in errors if e.startswith(f"{path}:") or e.startswith(f"{path}.")]
    assert matching, f"no error at {path}: {errors}"
    assert any(all(word in e for word in words) for e in matching), errors


def test_toml_syntax_error_gives_the_line_number() -> None:
    text = edit('name = "Sales"', 'name = "Sales')
    line = text.splitlines().index('name = "Sales') + 1
    (error,) = errors_of(text)
    assert error.startswith("TOML syntax")
    assert f"line {line}" in error


def test_extension_on_a_line_port_is_one_error_not_two() -> None:
    errors = errors_of(edit("port = 3\n", "port = 9\n"))
    assert errors == ["extensions[2].port: port 9 is not an FXS port: the card has FXS ports 1-8"]


def test_duplicate_extension_number_is_one_error() -> None:
    errors = errors_of(edit('number = "203"', 'number = "202"'))
    assert errors == ["extensions[2].number: 202 is already used by extensions[1]"]


def test_several_schema_mistakes_are_all_reported_at_once() -> None:
    text = edit("[site]\n", '[site]\nnmae = "x"\n')
    text = edit('number = "203"', 'number = "2a"', text)
    text = edit('local = ["2xxxxxxxx"]', 'local = ["2x[xxx"]', text)
    errors = errors_of(text)
    assert len(errors) == 3, errors
    assert {e.split(":")[0] for e in errors} == {
        "site.nmae",
        "extensions[2].number",
        "numbering.destination_kinds.local[0]",
    }


def test_several_cross_reference_mistakes_are_all_reported_at_once() -> None:
    text = edit('timezone = "Europe/Lisbon"', 'timezone = "Mars/Olympus"')
    text = edit('class_of_service = "lobby"', 'class_of_service = "guests"', text)
    text = edit("port = 10\n", "port = 7\n", text)
    errors = errors_of(text)
    assert len(errors) == 3, errors
    assert {e.split(":")[0] for e in errors} == {
        "site.timezone",
        "extensions[7].class_of_service",
        "lines[1].port",
    }


def test_three_mistakes_of_any_kind_give_three_lines() -> None:
    text = edit('number = "203"', 'number = "2a"')
    text = edit('timezone = "Europe/Lisbon"', 'timezone = "Mars/Olympus"', text)
    text = edit('class_of_service = "lobby"', 'class_of_service = "guests"', text)
    errors = errors_of(text)
    assert len(errors) == 3, errors


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml")
    assert "cannot read the file" in caught.value.errors[0]


# ----- minipbx check-config --------------------------------------------------------------


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware", "check-config", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "office.toml"
    path.write_text(DEFAULT)
    result = check_config(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    assert "8 extensions" in result.stdout


def test_check_config_prints_every_error_and_fails(tmp_path: Path) -> None:
    text = edit("[site]\n", '[site]\nnmae = "x"\n')
    text = edit('number = "203"', 'number = "2a"', text)
    text = edit('local = ["2xxxxxxxx"]', 'local = ["2x[xxx"]', text)
    path = tmp_path / "office.toml"
    path.write_text(text)
    result = check_config(path)
    assert result.returncode != 0
    assert "3 error(s)" in result.stdout
    for key in ("site.nmae", "extensions[2].number", "numbering.destination_kinds.local[0]"):
        assert key in result.stdout, result.stdout


def test_check_config_shows_the_line_of_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "office.toml"
    text = edit('name = "Sales"', 'name = "Sales')
    path.write_text(text)
    result = check_config(path)
    assert result.returncode != 0
    line = text.splitlines().index('name = "Sales') + 1
    assert f"line {line}" in result.stdout


def test_real_card_audio_needs_a_sound_channel_for_every_port_in_use() -> None:
    text = """
[line_card]
url = "/dev/ttyAMA0"
audio = "alsa"
fxs_ports = 3
fxo_ports = 0
[[line_card.audio_ports]]
port = 1
device = "hw:1"
channel = 0
[[line_card.audio_ports]]
port = 2
device = "hw:1"
channel = 0
[[extensions]]
number = "201"
port = 1
[[extensions]]
number = "202"
port = 2
[[extensions]]
number = "203"
port = 3
"""
    errors = errors_of(text)
    assert any("ports 1 and 2 both use channel 0 of 'hw:1'" in e for e in errors), errors
    assert any("port 3 (extensions[2]) has no sound device" in e for e in errors), errors
    assert len(errors) == 2, errors


def test_simulated_card_cannot_use_real_audio() -> None:
    errors = errors_of('[line_card]\nurl = "sim"\naudio = "alsa"\n')
    assert any("needs a real card" in e for e in errors), errors
