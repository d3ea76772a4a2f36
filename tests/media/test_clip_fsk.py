"""V.23 / Bell 202 FSK: framing, continuous phase, level, our demodulator and minimodem's."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from firmware.media import fsk
from firmware.media.clip import MessageFormat, caller_id_info, encode_message, message_complete
from firmware.media.clip_audio import PROFILES, build_spill
from firmware.media.levels import dbm0_to_peak, dbm0_to_rms, rms_to_dbm0
from firmware.media.prompt_wav import encode_wav

MINIMODEM = shutil.which("minimodem")
needs_minimodem = pytest.mark.skipif(MINIMODEM is None, reason="minimodem is not installed")
STANDARDS = [fsk.V23, fsk.BELL_202]
RATE = 8000


def _message(number: str = "0123456789", name: str = "Jane Doe") -> bytes:
    info = caller_id_info(number, name, when=datetime(2026, 3, 4, 5, 6))
    return encode_message(info, MessageFormat.ETSI)


def _noisy(samples: np.ndarray, level_dbm0: float, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    padded = np.concatenate([np.zeros(400), samples, np.zeros(400)])
    return padded + rng.normal(0.0, dbm0_to_rms(level_dbm0 - snr_db), padded.size)


def test_uart_framing_is_start_lsb_first_stop():
    # 0x80 = 1000 0000: start 0, data LSB first 0000 0001, stop 1; 0x35 = 0011 0101.
    assert fsk.uart_bits(b"\x80").tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert fsk.uart_bits(b"\x35").tolist() == [0, 1, 0, 1, 0, 1, 1, 0, 0, 1]


def test_burst_is_seizure_then_mark_then_characters():
    bits = fsk.burst_bits(b"\x80", seizure_bits=300, mark_bits=180, trailing_mark_bits=2)
    assert bits.size == 300 + 180 + 10 + 2
    assert bits[:6].tolist() == [0, 1, 0, 1, 0, 1] and bits[299] == 1
    assert bits[300:480].all()
    assert bits[480:492].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("standard", STANDARDS)
def test_modulation_is_continuous_phase_at_the_right_level_and_rate(standard):
    bits = np.random.default_rng(1).integers(0, 2, 1200).astype(np.uint8)
    samples = fsk.modulate(bits, standard, level_dbm0=-10.0)
    assert samples.size == RATE  # 1200 bits at 1200 baud: exactly one second
    peak = dbm0_to_peak(-10.0)
    # No phase jump: a sample moves at most what the higher tone moves in one sample.
    steepest = peak * 2 * np.pi * max(standard.mark_hz, standard.space_hz) / RATE
    assert np.abs(np.diff(samples)).max() <= steepest * 1.0001
    assert abs(rms_to_dbm0(np.sqrt(np.mean(samples[100:-100] ** 2))) - -10.0) < 0.05
    marks = fsk.modulate(np.ones(1200, np.uint8), standard)
    spectrum = np.abs(np.fft.rfft(marks))
    assert np.argmax(spectrum) == standard.mark_hz  # 1 Hz bins over one second


@pytest.mark.parametrize("standard", STANDARDS)
@pytest.mark.parametrize("level_dbm0", [-30.0, -17.5, -5.0])
def test_demodulator_reads_bursts_at_any_level_with_noise(standard, level_dbm0):
    for seed in range(5):
        message = _message(str(10**9 + seed * 7919))
        burst = fsk.fsk_burst(message, standard, level_dbm0=level_dbm0)
        frames = fsk.demodulate(_noisy(burst, level_dbm0, 20.0, seed), standard, message_complete)
        assert [frame.data for frame in frames] == [message]
        assert frames[0].error is None and frames[0].margin > fsk.MIN_MARGIN


@pytest.mark.parametrize("standard", STANDARDS)
@pytest.mark.parametrize("clock_error", [-0.01, 0.01])
def test_demodulator_tolerates_a_one_percent_clock_error(standard, clock_error):
    skewed = fsk.FskStandard(
        "skewed", standard.mark_hz, standard.space_hz, 1200 * (1 + clock_error)
    )
    message = _message()
    burst = fsk.fsk_burst(message, skewed, level_dbm0=-20.0)
    frames = fsk.demodulate(_noisy(burst, -20.0, 20.0, 3), standard, message_complete)
    assert [frame.data for frame in frames] == [message]


def test_silence_and_a_steady_tone_give_no_frames():
    assert fsk.demodulate(np.zeros(8000), fsk.V23, message_complete) == []
    tone = dbm0_to_peak(-10) * np.sin(2 * np.pi * 1300 * np.arange(8000) / RATE)
    frames = fsk.demodulate(tone, fsk.V23, message_complete)
    assert [frame.error for frame in frames] == ["carrier lost"]  # a mark with no data after it


def test_a_spill_cut_short_reports_carrier_lost():
    message = _message()
    burst = fsk.fsk_burst(message, fsk.V23)
    cut = round((300 + 180 + 10 * 12.5) * RATE / 1200)  # in the middle of the 13th byte
    frames = fsk.demodulate(burst[:cut], fsk.V23, message_complete)
    assert frames[0].error == "carrier lost"
    assert frames[0].data == message[:12]


# --------------------------------------------------------------------------- minimodem


def _minimodem(samples: np.ndarray, tmp_path: Path, *arguments: str) -> bytes:
    wav = tmp_path / "spill.wav"
    padded = np.concatenate([np.zeros(800), samples, np.zeros(800)])
    wav.write_bytes(encode_wav(np.clip(np.rint(padded), -32768, 32767).astype(np.int16), RATE))
    done = subprocess.run(
        [MINIMODEM, "--rx", "--quiet", "--file", str(wav), *arguments],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def _modem_arguments(standard: fsk.FskStandard) -> list[str]:
    return ["--mark", f"{standard.mark_hz:g}", "--space", f"{standard.space_hz:g}", "1200"]


@needs_minimodem
@pytest.mark.parametrize("standard", STANDARDS)
@pytest.mark.parametrize("level_dbm0", [-30.0, -13.5, -5.0])
def test_minimodem_reads_our_bytes(standard, level_dbm0, tmp_path):
    message = _message("4433221100", "Minimodem Check")
    burst = fsk.fsk_burst(message, standard, level_dbm0=level_dbm0)
    received = _minimodem(burst, tmp_path, *_modem_arguments(standard))
    # minimodem prints the channel seizure as 'U' (0x55) characters, then our message.
    assert received.endswith(message)
    assert received[: -len(message)].count(b"U") >= 25


@needs_minimodem
@pytest.mark.parametrize("standard", STANDARDS)
def test_minimodem_reads_our_bytes_in_noise(standard, tmp_path):
    message = _message("5550100", "Noisy Line")
    burst = fsk.fsk_burst(message, standard, level_dbm0=-25.0)
    received = _minimodem(_noisy(burst, -25.0, 20.0, 11), tmp_path, *_modem_arguments(standard))
    assert message in received


@needs_minimodem
@pytest.mark.parametrize(
    ("profile", "number", "name", "shown"),
    [
        ("bell", "6095551212", "John Doe", ("6095551212", "John Doe")),
        ("bell", None, None, ("[blocked]", "[blocked]")),  # private: reason P
        ("bell_sdmf", "6095551212", None, ("6095551212", None)),
        ("bell_sdmf", None, None, ("P", None)),
        ("etsi", "004533123456", "Jens Hansen", ("004533123456", "Jens Hansen")),
        ("etsi_rp_as", "0045331234", "Jens Hansen", ("0045331234", "Jens Hansen")),
        ("uk", "01632960123", "Test", ("01632960123", "Test")),
        ("etsi_dt_as", "112", None, ("112", "[N/A]")),  # no name: reason O
    ],
)
def test_minimodem_caller_id_mode_reads_our_spills(profile, number, name, shown, tmp_path):
    """minimodem's own caller-ID parser on the port audio of a whole spill (DT-AS and all)."""
    chosen = PROFILES[profile]
    info = caller_id_info(
        number,
        name,
        private=number is None,
        when=datetime(2026, 3, 4, 5, 6),
        message_format=chosen.message_format,
    )
    plan = build_spill(info, chosen)
    arguments = ["callerid"]
    if chosen.fsk_standard is fsk.V23:
        arguments = ["--mark", "1300", "--space", "2100", "callerid"]
    text = _minimodem(plan.line_audio().astype(np.float64), tmp_path, *arguments).decode()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0] == "CALLER-ID"
    fields = {key: value.strip() for key, value in (line.split(":", 1) for line in lines[1:])}
    assert fields.pop("Time") == "03/04 05:06"
    assert fields.pop("Phone").replace("-", "") == shown[0]  # it shows 609-555-1212
    assert fields.pop("Name", None) == shown[1]
    assert not fields
