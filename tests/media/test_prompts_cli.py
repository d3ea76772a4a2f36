"""`minipbx prompt add|list|remove|check` run as a real subprocess (firmware/media/cli_prompts.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def minipbx(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "MINIPBX_DATA_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "firmware.cli", "prompt", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_tone(path: Path, rate: int = 22050, channels: int = 2, seconds: float = 0.5) -> Path:
    time = np.arange(round(rate * seconds)) / rate
    tone = np.rint(12000 * np.sin(2 * np.pi * 800 * time)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(tone, channels).tobytes())
    return path


def folder_state(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(path): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_add_list_remove_round_trip(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    source = write_tone(tmp_path / "hold.wav")
    added = minipbx("add", "please_hold", str(source), "--data-dir", str(data_dir))
    assert added.returncode == 0, added.stderr
    stored = data_dir / "prompts" / "please_hold.wav"
    assert f"stored prompt 'please_hold' in {stored}" in added.stdout
    assert "from PCM 16-bit 22050 Hz stereo, 0.50 s" in added.stdout
    assert "level -16.0 dBm0" in added.stdout
    with wave.open(str(stored)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        assert reader.getnframes() == 4000

    music = minipbx("add", "default", str(source), "--music", "--data-dir", str(data_dir))
    assert music.returncode == 0, music.stderr
    assert (data_dir / "prompts" / "music" / "default.wav").is_file()

    listed = minipbx("list", "--json", "--language", "pt", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["language"] == "pt"
    rows = {row["sound"]: row for row in document["sounds"]}
    assert rows["prompt:please_hold"]["source"] == "uploaded"
    assert rows["prompt:please_hold"]["overrides_shipped"] is True
    assert rows["prompt:please_hold"]["seconds"] == 0.5
    assert rows["prompt:goodbye"]["source"] == "shipped"
    assert rows["prompt:goodbye"]["path"].endswith("firmware/prompts/pt/goodbye.wav")
    assert rows["music:default"]["source"] == "uploaded"

    text = minipbx("list", "--data-dir", str(data_dir))
    assert text.stdout.startswith("language en: ")
    assert "prompt:please_hold" in text.stdout and "uploaded, replaces shipped" in text.stdout

    removed = minipbx("remove", "please_hold", "--data-dir", str(data_dir))
    assert removed.returncode == 0, removed.stderr
    assert not stored.exists()
    again = minipbx("remove", "please_hold", "--data-dir", str(data_dir))
    assert again.returncode == 1
    assert "no uploaded prompt 'please_hold'" in again.stderr


def test_broken_upload_exits_1_with_the_reason_and_stores_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    good = write_tone(tmp_path / "good.wav")
    assert minipbx("add", "welcome", str(good), "--data-dir", str(data_dir)).returncode == 0
    before = folder_state(data_dir)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(good.read_bytes()[:1000])
    result = minipbx("add", "welcome", str(truncated), "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert f"minipbx: welcome not added: {truncated}: the RIFF header announces" in result.stderr
    assert "truncated" in result.stderr
    assert result.stdout == ""
    assert folder_state(data_dir) == before


def test_bad_name_and_config_limits(tmp_path: Path) -> None:
    source = write_tone(tmp_path / "tone.wav", rate=48000, channels=1, seconds=1.0)
    bad_name = minipbx("add", "../etc", str(source), "--data-dir", str(tmp_path))
    assert bad_name.returncode == 1 and "prompt name '../etc'" in bad_name.stderr
    config = tmp_path / "small.toml"
    config.write_text("[prompts]\nmax_upload_bytes = 65536\n")
    too_big = minipbx(
        "add", "hello", str(source), "--config", str(config), "--data-dir", str(tmp_path)
    )
    assert too_big.returncode == 1
    assert "the file is 0.09 MB; uploads may be at most 0.06 MB" in too_big.stderr
    assert folder_state(tmp_path / "prompts") == {}
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    unwritable = minipbx("add", "hello", str(source), "--data-dir", str(not_a_folder))
    assert unwritable.returncode == 1
    assert f"hello not added: cannot write to {not_a_folder}/prompts" in unwritable.stderr


def test_check_validates_without_storing(tmp_path: Path) -> None:
    source = write_tone(tmp_path / "tone.wav", rate=8000, channels=1)
    checked = minipbx("check", str(source))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{source}: OK\n")
    assert "from PCM 16-bit 8000 Hz mono" in checked.stdout
    text = tmp_path / "notes.wav"
    text.write_text("hello")
    refused = minipbx("check", str(text))
    assert refused.returncode == 1
    assert "not a WAV file" in refused.stderr
