"""`minipbx line calibrate` against simulated lines of unknown exchanges: the core calls out,
learns the tone, noise and echo; `--write` stores them in the config file (comments kept)
and reloads; the simulated line's own acoustics are what the analysis measures."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from firmware.calls.lifecycle import LegState
from firmware.lines import cli_line
from firmware.lines.sim_acoustics import LineAcoustics, _LineFrontEnd, random_disconnect_tone
from firmware.media.detect import frame_level_dbm0
from firmware.media.tones import ToneSpec, render_cycle
from tests.conftest import office_config, start_pbx

SECONDS = 7.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minipbx")
    cli_line.register(parser.add_subparsers(dest="command", required=True))
    return parser


async def _api(pbx, payload: dict) -> dict:
    assert pbx.app.api is not None
    return await pbx.app.api.handle_line(json.dumps(payload).encode())


async def test_calibration_learns_a_random_exchange_and_the_line_through_the_api(pbx) -> None:
    rng = np.random.default_rng(2024)
    tone = random_disconnect_tone(rng, "us")
    line = pbx.line("city1")
    line.tone_plan = dataclasses.replace(line.tone_plan, busy=tone)
    line.behaviour.answer = "busy"
    acoustics = LineAcoustics(level_db=-5.0, noise_dbm0=-58.0, echo_delay_ms=9.0, echo_loss_db=12.0)
    line.set_acoustics(acoustics)
    response = await _api(
        pbx, {"cmd": "line_calibrate", "line": "city1", "number": "555", "seconds": SECONDS}
    )
    assert response["ok"], response
    found = response["calibration"]
    assert line.calls_dialled == ["555"]
    assert found["frequencies_hz"] == pytest.approx(tone.chords[0], abs=0.3)
    assert np.all(np.abs(np.subtract(found["cadence_ms"], tone.cadence_ms)) <= 15)
    assert found["noise_floor_dbm0"] == pytest.approx(-58.0, abs=1.5)
    # The path through the mixer: the hybrid's 9 ms and one 20 ms frame of the card's audio.
    assert found["echo"]["delay_ms"] == pytest.approx(29.0, abs=0.5)
    assert found["echo"]["loss_db"] == pytest.approx(12.0, abs=1.0)
    assert found["settings"]["echo_tail_ms"] == 40  # 29 + 3 ms of ring: 5 blocks of 8 ms
    await pbx.sim.wait_until(lambda: not line.seized, 1.0, "line given back")
    assert pbx.channel("city1").state == LegState.IDLE
    assert not pbx.app.calls.sessions, "no call record for a calibration"


async def test_calibration_waits_for_the_far_party_to_hang_up_and_learns_that_tone(pbx) -> None:
    line = pbx.line("city1")  # the plan's ringback first, then an answer, then 330/330
    line.tone_plan = dataclasses.replace(
        line.tone_plan, busy=ToneSpec.cadenced((425,), (330, 330), level_dbm0=-18.0)
    )
    line.behaviour.answer_delay_s = 1.5
    line.behaviour.hang_up_after_s = 1.0
    line.set_acoustics(LineAcoustics(noise_dbm0=-64.0))
    response = await _api(
        pbx,
        {"cmd": "line_calibrate", "line": "city1", "number": "21", "seconds": 8, "probe": False},
    )
    assert response["ok"], response
    assert response["calibration"]["indication"] == "425/330,0/330"
    assert response["calibration"]["echo"] is None


@pytest.mark.parametrize(
    "payload, error",
    [
        ({"line": "nowhere", "number": "1"}, "no city line named 'nowhere'"),
        ({"line": "city1", "number": "12a"}, "dial digits"),
        ({"line": "city1", "number": "1", "seconds": 500}, "seconds must be"),
    ],
)
async def test_bad_calibration_requests_say_why_and_touch_nothing(pbx, payload, error) -> None:
    response = await _api(pbx, {"cmd": "line_calibrate"} | payload)
    assert not response["ok"] and error in response["error"]
    assert not pbx.line("city1").seized and not pbx.line("city1").calls_dialled


async def test_a_line_without_dial_tone_is_reported_and_given_back(pbx) -> None:
    line = pbx.line("city1")
    line.behaviour.dial_tone = False
    response = await _api(pbx, {"cmd": "line_calibrate", "line": "city1", "number": "1"})
    assert not response["ok"] and "no dial tone" in response["error"]
    await pbx.sim.wait_until(lambda: not line.seized, 1.0, "line given back")
    assert pbx.channel("city1").state == LegState.IDLE


async def test_the_simulated_line_applies_its_level_noise_and_echo(pbx) -> None:
    line, channel = pbx.line("city1"), pbx.channel("city1")
    line.set_acoustics(
        LineAcoustics(level_db=-6.0, noise_dbm0=-50.0, echo_delay_ms=10.0, echo_loss_db=6.0)
    )
    channel.set_state(LegState.DIALLING)
    await channel.seize()
    recording = pbx.app.mixer.start_recording(channel.slot)
    await asyncio.sleep(1.0)  # dial tone (-13 dBm0 from the exchange) through the line
    pbx.app.mixer.stop_recording(channel.slot)
    said = np.concatenate(recording.said)
    await channel.release()
    channel.set_state(LegState.IDLE)
    dial = render_cycle(line.tone_plan.dial)
    expected = 10 * np.log10(10 ** ((frame_level_dbm0(dial) - 6.0) / 10) + 10 ** (-50 / 10))
    assert float(np.median(frame_level_dbm0(said[800:].reshape(-1, 160)))) == pytest.approx(
        expected, abs=0.5
    )
    # Echo: an impulse sent returns 10 ms later, 6 dB down (energy of the whole ring).
    front_end = _LineFrontEnd(LineAcoustics(echo_delay_ms=10.0, echo_loss_db=6.0))
    impulse = np.zeros(160)
    impulse[0] = 10000
    front_end.sent(impulse)
    heard = front_end.heard_from_exchange(np.zeros(160, dtype=np.int16)).astype(float)
    assert np.flatnonzero(np.abs(heard) > 50)[0] == 80
    assert 10 * np.log10(np.sum(heard**2) / 1e8) == pytest.approx(-6.0, abs=0.2)


async def test_a_perfect_line_leaves_the_audio_untouched(pbx) -> None:
    audio = pbx.sim.audio
    pbx.line("city1").set_acoustics(LineAcoustics())
    assert "read_into" not in vars(audio), "no tap installed for perfect lines"


async def test_line_calibrate_write_stores_the_settings_keeps_comments_and_reloads(
    data_dir: Path,
) -> None:
    path = data_dir / "office.toml"
    text = office_config().replace(
        'name = "city1"\n', '# The line from the street cabinet, installed 2019.\nname = "city1"\n'
    )
    path.write_text(text, encoding="utf-8")
    pbx = await start_pbx(text, data_dir, config_path=str(path))
    try:
        line = pbx.line("city1")
        line.tone_plan = dataclasses.replace(
            line.tone_plan, busy=ToneSpec.cadenced((480, 620), (500, 500), level_dbm0=-20.0)
        )
        line.behaviour.answer = "busy"
        line.set_acoustics(
            LineAcoustics(level_db=-3.0, noise_dbm0=-60.0, echo_delay_ms=4.0, echo_loss_db=14.0)
        )
        args = _parser().parse_args(
            [
                "line",
                "calibrate",
                "city1",
                "555",
                "--seconds",
                "6",
                "--write",
                "--data-dir",
                str(data_dir),
            ]
        )
        assert await asyncio.to_thread(args.func, args) == 0
    finally:
        await pbx.app.stop()
    written = path.read_text(encoding="utf-8")
    assert "# The line from the street cabinet, installed 2019.\n" in written
    city1 = next(entry for entry in tomllib.loads(written)["lines"] if entry["name"] == "city1")
    assert city1["disconnect_tone"] == "480+620/500,0/500"
    assert city1["noise_floor_dbm0"] == pytest.approx(-60.0, abs=1.5)
    assert city1["rx_gain_db"] == 6.0  # -20 dBm0 in all: +6 dB at most towards -13 dBm0
    assert city1["echo_tail_ms"] == 40  # 4 + 20 ms (one frame) + 3 ms of ring, + 8 ms
    city2 = next(entry for entry in tomllib.loads(written)["lines"] if entry["name"] == "city2")
    assert "disconnect_tone" not in city2
    assert pbx.app.reloads == 1
    reloaded = next(entry for entry in pbx.app.config.lines if entry.name == "city1")
    assert reloaded.disconnect_tone == "480+620/500,0/500"
    # Everything but the four new keys is byte for byte what it was.
    kept = [
        row
        for row in written.splitlines()
        if not row.startswith(("disconnect_tone", "noise_floor", "rx_gain", "tx_gain", "echo_tail"))
    ]
    assert kept == text.splitlines()


def test_a_settings_write_that_would_break_the_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "office.toml"
    path.write_text(office_config(), encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(Exception, match="disconnect_tone"):
        cli_line.write_line_settings(path, "city1", {"disconnect_tone": "!425/100"})
    with pytest.raises(ValueError, match="no \\[\\[lines\\]\\] entry named 'city9'"):
        cli_line.write_line_settings(path, "city9", {"rx_gain_db": 1.0})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["office.toml"], "no temporary left"
