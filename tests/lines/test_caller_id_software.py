"""Caller ID in software (`line_card.caller_id = "software"`), end to end on the simulator.

City lines send the spill as line audio (the simulated exchange plays `build_spill`'s audio
with its rings and reversals); the appliance decodes it on hook, call control shows the
caller to the ringing extension and writes it in the CDR. Desk phones get the caller as
audio on their port while they ring, which our decoder and Debian's minimodem both read.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from firmware.calls.lifecycle import LegState
from firmware.lines.protocol import PolaritySet, Ring, RingStop
from firmware.lines.sim_acoustics import LineAcoustics
from firmware.media import fsk
from firmware.media.clip import Absence
from firmware.media.clip_audio import PROFILES, Signalling, get_profile
from firmware.media.prompt_wav import encode_wav
from firmware.media.tones import TONE_PLANS
from tests.conftest import FAST_TIMERS, office_config

MINIMODEM = shutil.which("minimodem")
needs_minimodem = pytest.mark.skipif(MINIMODEM is None, reason="minimodem is not installed")
# A spill takes 2-3 s before ringing goes on normally: internal calls must ring longer.
TIMERS = FAST_TIMERS.replace("ring_timeout_s = 2.0", "ring_timeout_s = 20.0")
assert TIMERS != FAST_TIMERS
SITE_ZONE = ZoneInfo("Europe/Lisbon")  # the default config's site.timezone


def software_config(profile: str) -> str:
    text = office_config(timers=TIMERS)
    anchor = "[line_card]\n"
    assert text.count(anchor) == 1
    return text.replace(
        anchor, f'{anchor}caller_id = "software"\ncaller_id_profile = "{profile}"\n'
    )


@pytest.fixture
def profile_name(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "etsi")


@pytest.fixture
def pbx_config(profile_name: str) -> str:
    return software_config(profile_name)


@pytest.fixture
async def office(pbx, profile_name):
    """The pbx in software caller-ID mode; its city exchange sends spills as line audio."""
    app = pbx.app
    # The site's time zone and per-line profiles reach the ports through
    # configure_lines; the appliance passes them at start (docs/caller-id.md, Wiring).
    app.line_card.configure_lines(app.config.site, app.config.lines)
    pbx.sim.set_caller_id_profile(get_profile(profile_name))
    return pbx


async def spill_sent(pbx, extension: str, timeout: float = 8.0) -> None:
    """Until the extension's port has played its whole spill and rings normally."""
    channel = pbx.channel(extension)
    await pbx.sim.wait_until(lambda: channel.spills_sent >= 1, timeout, f"{extension} spill sent")
    await asyncio.sleep(0.1)  # the spill's last frame leaves the mixer


def fsk_energy(samples: np.ndarray, standard: fsk.FskStandard) -> float:
    """The fraction of the audio's energy at the FSK tones (0 when silent)."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    if spectrum.sum() == 0:
        return 0.0
    frequencies = np.fft.rfftfreq(samples.size, 1 / 8000)
    near = np.zeros(frequencies.size, bool)
    for tone in (standard.mark_hz, standard.space_hz):
        near |= np.abs(frequencies - tone) < 150
    return float(spectrum[near].sum() / spectrum.sum())


# ----- city lines: decoded from the line audio -------------------------------------------


@pytest.mark.parametrize(
    "profile_name", ["etsi", "bell", "dtmf", "uk", "dtmf_dk"], indirect=True
)
async def test_city_caller_id_is_decoded_from_the_line_and_shown_to_the_ringing_phone(
    office, profile_name
) -> None:
    profile = PROFILES[profile_name]
    line, reception = office.line("city1"), office.phone("201")
    mark = reception.mark()
    line.ring("212345678", "ACME Lda")
    await reception.wait_ringing(timeout=8.0)
    assert reception.last_caller == ("", ""), "the card is given no caller to send itself"
    await spill_sent(office, "201")
    heard = reception.caller_id_heard(mark, profile.signalling)
    assert heard.known, heard.reason
    assert heard.info.number == "212345678"
    with_name = profile.signalling is not Signalling.DTMF
    assert heard.info.name == ("ACME Lda" if with_name else None)
    counters = office.channel("city1").caller_id_counters
    assert (counters.decoded, counters.unknown) == (1, 0)
    reception.off_hook()
    await office.wait_state("201", LegState.CONNECTED)
    await office.speech_both_ways(line, reception)
    reception.on_hook()
    record = await office.last_record()
    assert record.caller_number == "212345678"
    assert record.caller_name == ("ACME Lda" if with_name else "")
    assert record.answered_extension == "201"


@pytest.mark.parametrize("profile_name", ["bell"], indirect=True)
async def test_a_spill_ending_long_after_the_first_ring_still_reaches_the_call(
    office, profile_name
) -> None:
    """US ringing (2 s on): the Bell spill ends ~3.4 s after the first ring began, later
    than call control waits for a caller ID; the line holds the call's start back until
    the spill is decoded. The line is also lossy and noisy, with echo."""
    line, reception = office.line("city1"), office.phone("201")
    line.tone_plan = TONE_PLANS["us"]
    line.set_acoustics(LineAcoustics(level_db=-6.0, noise_dbm0=-55.0, echo_loss_db=12.0, seed=5))
    line.ring("6095551212", "John Doe")
    await reception.wait_ringing(timeout=8.0)
    reception.off_hook()
    await office.wait_state("201", LegState.CONNECTED)
    reception.on_hook()
    record = await office.last_record()
    assert (record.caller_number, record.caller_name) == ("6095551212", "John Doe")
    steps = line.spills[0].steps
    data_end_ms = sum(step.duration_ms for step in steps[: [s.kind for s in steps].index("play") + 1])
    assert data_end_ms > 3000, "the spill ends late in the first cadence cycle"


async def test_a_line_may_use_another_profile_than_the_card_default(pbx_config, data_dir) -> None:
    from tests.conftest import start_pbx

    text = pbx_config.replace('name = "city1"\n', 'name = "city1"\ncaller_id_profile = "bell"\n')
    pbx = await start_pbx(text, data_dir)
    try:
        pbx.app.line_card.configure_lines(pbx.app.config.site, pbx.app.config.lines)
        assert pbx.channel("city1").caller_id_profile.name == "bell"
        assert pbx.channel("city2").caller_id_profile.name == "etsi"
        assert pbx.channel("201").caller_id_profile.name == "etsi"
        line = pbx.line("city1")
        line.caller_id_profile = get_profile("bell")
        line.ring("6095551212", "John Doe")
        await pbx.phone("201").wait_ringing(timeout=8.0)
        pbx.phone("201").off_hook()
        await pbx.wait_state("201", LegState.CONNECTED)
        pbx.phone("201").on_hook()
        record = await pbx.last_record()
        assert (record.caller_number, record.caller_name) == ("6095551212", "John Doe")
    finally:
        await pbx.app.stop()


async def test_a_damaged_spill_gives_an_unknown_caller_never_a_wrong_number(office) -> None:
    line, reception = office.line("city1"), office.phone("201")

    def cut(samples: np.ndarray) -> np.ndarray:
        # 30 ms of the message (after 300 seizure + 180 mark bits = 400 ms) lost
        samples[4000:4240] = 0
        return samples

    mark = reception.mark()
    line.ring("212345678", "ACME Lda", damage=cut)
    await reception.wait_ringing(timeout=8.0)
    counters = office.channel("city1").caller_id_counters
    assert (counters.decoded, counters.unknown) == (0, 1)
    assert counters.last_unknown_reason
    await spill_sent(office, "201")
    heard = reception.caller_id_heard(mark, Signalling.V23)
    assert heard.known, heard.reason
    assert heard.info.number is None
    assert heard.info.number_absence is Absence.UNAVAILABLE, "the phone shows 'unavailable'"
    line.hang_up()
    await reception.wait_not_ringing(timeout=8.0)
    record = await office.last_record()
    assert (record.caller_number, record.caller_name) == ("", "")


async def test_a_withheld_city_caller_is_announced_as_private(office) -> None:
    line, reception = office.line("city1"), office.phone("201")
    mark = reception.mark()
    line.ring("212345678", "ACME Lda", private=True)
    await reception.wait_ringing(timeout=8.0)
    await spill_sent(office, "201")
    heard = reception.caller_id_heard(mark, Signalling.V23)
    assert heard.known, heard.reason
    assert heard.info.number is None and heard.info.name is None
    assert heard.info.number_absence is Absence.PRIVATE
    assert heard.info.name_absence is Absence.PRIVATE
    counters = office.channel("city1").caller_id_counters
    assert (counters.decoded, counters.withheld, counters.unknown) == (1, 1, 0)
    line.hang_up()
    await reception.wait_not_ringing(timeout=8.0)
    record = await office.last_record()
    assert record.caller_number == ""


# ----- desk phones: the spill on the port ------------------------------------------------


def _minimodem_caller_id(samples: np.ndarray, standard: fsk.FskStandard) -> dict[str, str]:
    """minimodem's caller-ID parser on the port audio (blocking: run it in a thread)."""
    assert MINIMODEM is not None
    arguments = ["callerid"]
    if standard is fsk.V23:
        arguments = ["--mark", "1300", "--space", "2100", "callerid"]
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "port.wav"
        wav.write_bytes(encode_wav(samples.astype(np.int16), 8000))
        done = subprocess.run(
            [MINIMODEM, "--rx", "--quiet", "--file", str(wav), *arguments],
            capture_output=True,
            timeout=60,
            check=True,
        )
    lines = [line for line in done.stdout.decode().splitlines() if line.strip()]
    assert lines and lines[0] == "CALLER-ID", lines
    return {key: value.strip() for key, value in (line.split(":", 1) for line in lines[1:])}


@needs_minimodem
@pytest.mark.parametrize("profile_name", ["etsi", "bell", "etsi_dt_as"], indirect=True)
async def test_an_internal_call_announces_the_caller_to_the_rung_phone(
    office, profile_name
) -> None:
    profile = PROFILES[profile_name]
    sales, reception = office.phone("202"), office.phone("201")
    mark = reception.mark()
    before = datetime.now(SITE_ZONE)
    sales.off_hook()
    await office.wait_state("202", LegState.DIALLING)
    await sales.dial("201")
    await reception.wait_ringing(timeout=3.0)
    await spill_sent(office, "201")
    after = datetime.now(SITE_ZONE)
    audio = reception.heard(mark)
    ours = reception.caller_id_heard(mark, profile.signalling)
    assert ours.known, ours.reason
    assert (ours.info.number, ours.info.name) == ("202", "Sales")
    moments = {(m.month, m.day, m.hour, m.minute) for m in (before, after)}
    assert tuple(ours.info.date_time) in moments, "the date/time is the site's local time"
    fields = await asyncio.to_thread(_minimodem_caller_id, audio, profile.fsk_standard)
    assert fields["Phone"].replace("-", "") == "202"
    assert fields["Name"] == "Sales"
    assert fields["Time"] in {f"{m:%m/%d %H:%M}" for m in (before, after)}
    assert reception.ringing is not None, "normal ringing follows the spill"
    assert reception.ringing.cadence == ((1000, 4000),)
    messages = [m for m in office.sim.received if getattr(m, "port", None) == reception.port]
    first_ring = next(m for m in messages if isinstance(m, Ring))
    assert first_ring.caller_number == first_ring.caller_name == ""
    reversals = [m.reversed for m in messages if isinstance(m, PolaritySet)]
    if profile_name == "etsi_dt_as":
        assert reversals == [True, False], "reversed for the alert, then put back"
    else:
        assert reversals == []
        assert first_ring.cadence[0][0] == 1000, "the first ring burst of the cadence"
        assert any(isinstance(m, RingStop) for m in messages)
    reception.off_hook()
    await office.wait_state("201", LegState.CONNECTED)
    await office.speech_both_ways(sales, reception)
    sales.on_hook()
    reception.on_hook()
    await office.wait_idle()


@pytest.mark.parametrize("profile_name", ["etsi_dt_as"], indirect=True)
async def test_answering_during_the_spill_stops_it_at_once_and_restores_the_polarity(
    office, profile_name
) -> None:
    sales, reception = office.phone("202"), office.phone("201")
    sales.off_hook()
    await office.wait_state("202", LegState.DIALLING)
    await sales.dial("201")
    channel = office.channel("201")
    mixer = office.app.mixer
    # reversal, 150 ms, then the DT-AS and the FSK on the port's slot
    await office.sim.wait_until(
        lambda: channel.slot is not None and mixer.is_playing(channel.slot), 3.0, "spill playing"
    )
    await asyncio.sleep(0.3)  # well into the FSK
    assert reception.polarity_reversed
    reception.off_hook()
    await office.wait_state("201", LegState.CONNECTED)
    mark = reception.mark()
    assert not mixer.is_playing(channel.slot), "the spill's sound is stopped"
    assert channel.spills_cancelled == 1 and channel.spills_sent == 0
    assert not channel.spill_running
    await office.sim.wait_until(lambda: not reception.polarity_reversed, 1.0, "polarity back")
    await asyncio.sleep(0.5)
    assert fsk_energy(reception.heard(mark), fsk.V23) < 0.01, "no FSK after the answer"
    await office.speech_both_ways(sales, reception)
    sales.on_hook()
    reception.on_hook()
    await office.wait_idle()


async def test_the_caller_hanging_up_during_the_spill_stops_it(office) -> None:
    sales, reception = office.phone("202"), office.phone("201")
    sales.off_hook()
    await office.wait_state("202", LegState.DIALLING)
    await sales.dial("201")
    await reception.wait_ringing(timeout=3.0)
    channel = office.channel("201")
    sales.on_hook()
    await reception.wait_not_ringing(timeout=2.0)
    await office.wait_idle()
    assert channel.state == LegState.IDLE
    assert channel.spills_cancelled == 1 and not channel.spill_running
    sent_before = len(office.sim.received)
    await asyncio.sleep(2.0)  # past where the spill's data and second ring would have come
    assert reception.ringing is None, "no ring after the spill was cancelled"
    later = office.sim.received[sent_before:]
    assert not [m for m in later if isinstance(m, Ring | PolaritySet) and m.port == reception.port]


def test_an_unknown_profile_is_refused_with_the_list_of_profiles() -> None:
    from firmware.config.load import ConfigError, parse_config

    with pytest.raises(ConfigError) as error:
        parse_config(software_config("japan"), "<test>")
    text = str(error.value)
    assert "caller_id_profile 'japan' is unknown" in text
    assert "etsi" in text and "bell" in text and "dtmf_dk" in text


def test_software_caller_id_is_off_by_default() -> None:
    from firmware.config.load import parse_config

    config = parse_config(office_config(), "<test>")
    assert (config.line_card.caller_id, config.line_card.caller_id_profile) == ("card", "auto")
    assert config.lines[0].caller_id_profile is None
