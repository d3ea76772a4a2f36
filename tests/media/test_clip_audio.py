"""Whole caller-ID spills: plans per profile, and the FXO receiver decoding them."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from firmware.media import fsk
from firmware.media.clip import (
    Absence,
    CallerIdInfo,
    MessageFormat,
    caller_id_info,
    encode_message,
)
from firmware.media.clip_audio import (
    NOTHING_HEARD,
    PROFILES,
    ClipProfile,
    ClipReceiver,
    Signalling,
    StartCondition,
    StepKind,
    build_spill,
    decode_spill,
    get_profile,
    profile_for_country,
    replay,
)
from firmware.media.dtmf_detect import detect_dtmf
from firmware.media.levels import dbm0_to_rms, rms_to_dbm0

RATE = 8000
WHEN = datetime(2026, 11, 22, 9, 41)


def _info(
    profile: ClipProfile,
    number: str | None = "0123456789",
    name: str | None = "Jane Doe",
    private: bool = False,
) -> CallerIdInfo:
    return caller_id_info(
        number, name, private=private, when=WHEN, message_format=profile.message_format
    )


def _expected(profile: ClipProfile, info: CallerIdInfo) -> CallerIdInfo:
    """What a receiver can learn: DTMF carries the number (or its absence) only."""
    if profile.signalling is Signalling.DTMF:
        return CallerIdInfo(number=info.number, number_absence=info.number_absence)
    return info


def _line(plan, level_dbm0=None, snr_db=None, seed=0, lead_samples=1234, tail_samples=4000):
    """The far end's line audio of a plan: scaled to a level, noise added, time shifted."""
    audio = plan.line_audio().astype(np.float64)
    profile = plan.profile
    if level_dbm0 is not None:
        sent = (
            profile.dtmf_level_dbm0
            if profile.signalling is Signalling.DTMF
            else (profile.fsk_level_dbm0)
        )
        audio *= 10 ** ((level_dbm0 - sent) / 20)
    audio = np.concatenate([np.zeros(lead_samples), audio, np.zeros(tail_samples)])
    if snr_db is not None:
        rng = np.random.default_rng(seed)
        audio += rng.normal(0.0, dbm0_to_rms(level_dbm0 - snr_db), audio.size)
    events = [(at + lead_samples, event) for at, event in plan.line_events()]
    return audio, events


def _spill_bounds(plan) -> tuple[int, int]:
    """First and last sample of the PLAY step (in plan time)."""
    position = 0
    for step in plan.steps:
        length = step.duration_ms * RATE // 1000
        if step.kind is StepKind.PLAY:
            return position, position + length
        position += length
    raise AssertionError("no PLAY step")


# --------------------------------------------------------------------------- plans


def test_etsi_after_first_ring_fills_the_first_pause():
    profile = PROFILES["etsi"]
    plan = build_spill(_info(profile), profile, ring_cadence_ms=(1000, 4000))
    kinds = [(step.kind, step.duration_ms) for step in plan.steps]
    fsk_ms = plan.steps[2].duration_ms
    assert kinds == [
        (StepKind.RING, 1000),
        (StepKind.PAUSE, 600),
        (StepKind.PLAY, fsk_ms),
        (StepKind.PAUSE, 4000 - 600 - fsk_ms),
        (StepKind.START_RINGING, 0),
    ]
    # 300 seizure + 180 mark + 35 characters of 10 bits + 2 trailing marks = 832 bits
    assert len(plan.payload) == 35
    assert plan.steps[2].parts == (("fsk", round(832 / 1.2)),)
    assert plan.steps[2].samples.size % 160 == 0 and plan.steps[2].samples.dtype == np.int16
    assert plan.duration_ms == 5000


def test_after_first_ring_uses_the_longest_pause_of_a_double_ring():
    profile = PROFILES["etsi"]
    plan = build_spill(_info(profile), profile, ring_cadence_ms=(400, 200, 400, 2000))
    kinds = [step.kind for step in plan.steps]
    assert kinds[:4] == [StepKind.RING, StepKind.PAUSE, StepKind.RING, StepKind.PAUSE]
    assert [step.duration_ms for step in plan.steps[:4]] == [400, 200, 400, 600]
    assert sum(step.duration_ms for step in plan.steps[3:]) == 2000


def test_a_pause_too_short_for_the_data_still_keeps_the_gap_before_the_next_ring():
    profile = PROFILES["bell"]
    plan = build_spill(_info(profile), profile, ring_cadence_ms=(2000, 1000))
    assert plan.steps[-2] == (StepKind.PAUSE, profile.after_data_ms, None, ())


def test_uk_reversal_alert_tone_then_fsk():
    profile = PROFILES["uk"]
    plan = build_spill(_info(profile), profile)
    assert [step.kind for step in plan.steps] == [
        StepKind.REVERSE_POLARITY,
        StepKind.PAUSE,
        StepKind.PLAY,
        StepKind.PAUSE,
        StepKind.RESTORE_POLARITY,
        StepKind.START_RINGING,
    ]
    assert plan.steps[1].duration_ms == 150
    play = plan.steps[2]
    assert [name for name, _ in play.parts] == ["alert", "pause", "fsk"]
    assert play.parts[0][1] == 100 and play.parts[1][1] == 60
    alert = play.samples[:800].astype(np.float64)  # 100 ms
    spectrum = np.abs(np.fft.rfft(alert, 8000))  # 1 Hz bins
    assert sorted(np.argsort(spectrum)[-2:].tolist()) == [2130, 2750]
    assert abs(rms_to_dbm0(np.sqrt(np.mean(alert[80:-80] ** 2))) - (-16 + 3.01)) < 0.1
    gap = play.samples[800 : 800 + 480]
    assert not gap.any()
    assert play.samples[1280:1300].any()  # the FSK starts right after the 60 ms gap


def test_ring_pulse_then_data_then_ringing():
    profile = PROFILES["etsi_rp_as"]
    plan = build_spill(_info(profile), profile)
    assert [(step.kind, step.duration_ms) for step in plan.steps[:2]] == [
        (StepKind.RING, 250),
        (StepKind.PAUSE, 600),
    ]
    assert plan.steps[-1].kind is StepKind.START_RINGING


def test_dtmf_plans():
    profile = PROFILES["dtmf"]
    plan = build_spill(_info(profile), profile)
    assert plan.payload == "A0123456789C"
    assert plan.steps[0].kind is StepKind.REVERSE_POLARITY
    play = next(step for step in plan.steps if step.kind is StepKind.PLAY)
    assert play.parts == (("dtmf", 12 * 140),)
    assert "".join(d.digit for d in detect_dtmf(play.samples)) == "A0123456789C"
    danish = PROFILES["dtmf_dk"]
    plan = build_spill(_info(danish, private=True), danish)
    assert plan.payload == "D1#"
    assert [step.kind for step in plan.steps] == [
        StepKind.PLAY,
        StepKind.PAUSE,
        StepKind.START_RINGING,
    ]


def test_line_events_of_a_plan():
    profile = PROFILES["dtmf"]
    plan = build_spill(_info(profile), profile)
    play_end = (150 + 1680) * 8
    assert plan.line_events() == [
        (0, "polarity_reversed"),
        (play_end + 350 * 8, "polarity_reversed"),
        (play_end + 350 * 8, "ring_started"),
    ]
    assert plan.line_audio().size == play_end + 350 * 8


def test_profiles_by_country_and_name():
    assert profile_for_country("us").name == "bell"
    assert profile_for_country("UK").name == "uk"
    assert profile_for_country("de").name == "etsi"
    assert profile_for_country("dk").name == "dtmf_dk"
    with pytest.raises(ValueError, match="profiles are: etsi, etsi_rp_as"):
        get_profile("bellcore")


# --------------------------------------------------------------------------- receiving


@pytest.mark.parametrize("name", list(PROFILES))
@pytest.mark.parametrize("level_dbm0", [-30.0, -5.0])
@pytest.mark.parametrize("who", ["caller", "private", "unavailable"])
def test_every_profile_round_trips_through_the_receiver(name, level_dbm0, who):
    profile = PROFILES[name]
    info = {
        "caller": _info(profile, "4471234567"),
        "private": _info(profile, private=True),
        "unavailable": _info(profile, "anonymous", None),
    }[who]
    plan = build_spill(info, profile, ring_cadence_ms=(1000, 4000))
    audio, events = _line(plan, level_dbm0, snr_db=20.0, seed=len(name))
    result, at = replay(ClipReceiver(profile), audio, events)
    assert result is not None and result.info == _expected(profile, info), result
    next_ring = [sample for sample, event in events if event == "ring_started"][-1]
    assert at <= next_ring  # known no later than the ring that follows the spill
    if who == "private":
        assert result.info.number is None and result.info.number_absence is Absence.PRIVATE


@pytest.mark.parametrize("name", ["etsi_dt_as", "dtmf"])
def test_after_a_reversal_the_caller_is_known_before_the_first_ring(name):
    profile = PROFILES[name]
    plan = build_spill(_info(profile), profile)
    audio, events = _line(plan, -20.0, snr_db=20.0)
    result, at = replay(ClipReceiver(profile), audio, events)
    first_ring = next(sample for sample, event in events if event == "ring_started")
    _, spill_end = _spill_bounds(plan)
    assert result.known
    assert at < first_ring and at - (spill_end + 1234) < 250 * 8  # within ~200 ms of the end


def test_a_spill_outside_the_window_is_not_heard():
    """An after-first-ring receiver ignores data sent before the first ring, and says so."""
    sender = PROFILES["dtmf_dk"]  # data before the first ring...
    plan = build_spill(_info(sender), sender)
    audio, events = _line(plan, -20.0, snr_db=20.0, tail_samples=5 * RATE)
    first_ring = events[-1][0]
    events += [(first_ring + RATE, "ring_stopped"), (first_ring + 5 * RATE, "ring_started")]
    receiver = ClipReceiver(PROFILES["etsi"])  # ...to a line set for after the first ring
    result, at = replay(receiver, audio, events)
    assert result == (None, NOTHING_HEARD) and at == first_ring + 5 * RATE


def test_no_second_ring_means_unknown_after_the_window():
    profile = PROFILES["bell"]
    receiver = ClipReceiver(profile, window_ms=1000)
    assert receiver.ring_started() is None
    receiver.ring_stopped()
    assert receiver.listening
    results = [receiver.feed(np.zeros(160)) for _ in range(51)]
    assert results[:49] == [None] * 49
    assert results[49] is not None and results[49].reason == NOTHING_HEARD
    assert receiver.feed(np.zeros(160)) is None and not receiver.listening
    receiver.reset()
    assert receiver.result is None and not receiver.listening


def test_a_result_is_given_once_per_call():
    profile = PROFILES["etsi"]
    plan = build_spill(_info(profile), profile)
    audio, events = _line(plan, -15.0)
    receiver = ClipReceiver(profile)
    result, _ = replay(receiver, audio, events)
    assert result.known
    assert receiver.ring_started() is None and receiver.feed(audio) is None


def _fsk_profile_plan(name="etsi", number="0123456789"):
    profile = PROFILES[name]
    return profile, build_spill(_info(profile, number), profile)


@pytest.mark.parametrize("cut_fraction", [0.55, 0.8, 0.97, 0.995])
def test_a_truncated_spill_gives_unknown(cut_fraction):
    profile, plan = _fsk_profile_plan()
    start, end = _spill_bounds(plan)
    audio, events = _line(plan, -20.0, snr_db=20.0, lead_samples=0)
    cut = start + round(cut_fraction * (end - 160 - start))  # the FSK ends ~7 ms early
    audio[cut:end] = 0.0
    result, _ = replay(ClipReceiver(profile), audio, events)
    assert result is not None and result.info is None
    assert result.reason.startswith("carrier lost") or "framing" in result.reason, result


@pytest.mark.parametrize("seed", range(6))
def test_a_noise_burst_over_the_data_gives_unknown_never_a_wrong_number(seed):
    profile, plan = _fsk_profile_plan()
    start, end = _spill_bounds(plan)
    audio, events = _line(plan, -20.0, snr_db=20.0, lead_samples=0, seed=seed)
    rng = np.random.default_rng(100 + seed)
    data_start = start + round(480 * RATE / 1200)
    hit = int(rng.integers(data_start, end - 200))
    audio[hit : hit + 40] += rng.normal(0.0, dbm0_to_rms(-12.0), 40)  # a 5 ms click
    result, _ = replay(ClipReceiver(profile), audio, events)
    assert result is not None
    assert result.info is None or result.info.number == "0123456789"


def test_every_single_bit_error_in_the_message_gives_unknown():
    """A network that garbles one bit: the checksum (or framing) always catches it."""
    message = encode_message(_info(PROFILES["bell"]), MessageFormat.BELL_MDMF)
    for bit in range(len(message) * 8):
        corrupted = bytearray(message)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        burst = fsk.fsk_burst(bytes(corrupted), fsk.BELL_202, level_dbm0=-20.0)
        result = decode_spill(np.concatenate([burst, np.zeros(400)]), Signalling.BELL_202)
        assert result.info is None, bit


def test_two_different_messages_in_one_window_give_unknown():
    first = encode_message(CallerIdInfo(number="111"), MessageFormat.ETSI)
    second = encode_message(CallerIdInfo(number="222"), MessageFormat.ETSI)
    audio = np.concatenate(
        [fsk.fsk_burst(first, fsk.V23), np.zeros(800), fsk.fsk_burst(second, fsk.V23)]
    )
    result = decode_spill(audio, Signalling.V23)
    assert result.info is None and "two different" in result.reason
    same = np.concatenate([fsk.fsk_burst(first, fsk.V23), fsk.fsk_burst(first, fsk.V23)])
    assert decode_spill(same, Signalling.V23).info == CallerIdInfo(number="111")


def test_a_message_that_is_not_caller_id_is_not_a_caller():
    # ETSI message waiting indicator (type 0x82): visual indicator on
    waiting = bytes([0x82, 3, 0x0B, 1, 0xFF])
    waiting += bytes([-sum(waiting) & 0xFF])
    result = decode_spill(fsk.fsk_burst(waiting, fsk.V23), Signalling.V23)
    assert result.info is None and "not a caller ID" in result.reason


def test_noise_alone_gives_unknown():
    rng = np.random.default_rng(9)
    noise = rng.normal(0.0, dbm0_to_rms(-20.0), 5 * RATE)
    for signalling in Signalling:
        assert decode_spill(noise, signalling) == (None, NOTHING_HEARD)


# --------------------------------------------------------------------------- DTMF


def test_dtmf_clip_round_trip_with_the_project_detector():
    for name in ("dtmf", "dtmf_dk"):
        profile = PROFILES[name]
        for number in ("4533123456", "112", "00467012345678901234"):
            plan = build_spill(_info(profile, number), profile)
            audio, events = _line(plan, -25.0, snr_db=20.0, seed=len(number))
            result, _ = replay(ClipReceiver(profile), audio, events)
            assert result.info == CallerIdInfo(number=number)


def test_a_lost_dtmf_digit_gives_unknown_not_a_shorter_number():
    profile = PROFILES["dtmf"]
    plan = build_spill(_info(profile, "4533123456"), profile)
    audio, events = _line(plan, -20.0, lead_samples=0)
    start, _ = _spill_bounds(plan)
    fifth = start + 5 * 140 * 8  # "A4533" then the fifth digit, "1"
    audio[fifth : fifth + 70 * 8] = 0.0
    result, _ = replay(ClipReceiver(profile), audio, events)
    assert result.info is None and "irregular" in result.reason


def test_a_dtmf_string_without_its_end_digit_gives_unknown():
    profile = PROFILES["dtmf"]
    plan = build_spill(_info(profile, "4533123456"), profile)
    audio, events = _line(plan, -20.0, lead_samples=0)
    _, end = _spill_bounds(plan)
    audio[end - 140 * 8 : end] = 0.0  # the final "C"
    result, _ = replay(ClipReceiver(profile), audio, events)
    assert result.info is None and "does not end" in result.reason


def test_decode_spill_finds_an_unannounced_before_ring_spill():
    """BEFORE_FIRST_RING keeps the last seconds of audio and decodes them at the ring."""
    profile = PROFILES["dtmf_dk"]
    plan = build_spill(_info(profile, "70121416"), profile)
    audio, events = _line(plan, -15.0, snr_db=20.0, lead_samples=20 * RATE)
    receiver = ClipReceiver(profile, window_ms=4000)
    result, at = replay(receiver, audio, events)
    assert result.info == CallerIdInfo(number="70121416")
    assert at == events[-1][0]


def test_profile_with_dtmf_has_no_fsk_standard():
    with pytest.raises(ValueError, match="sends DTMF"):
        _ = PROFILES["dtmf"].fsk_standard
    assert PROFILES["etsi"].fsk_standard is fsk.V23
    assert PROFILES["bell"].start is StartCondition.AFTER_FIRST_RING


@pytest.mark.parametrize("name", ["etsi", "bell_sdmf"])
def test_after_a_double_ring_the_window_opens_after_the_whole_pattern(name):
    profile = PROFILES[name]
    plan = build_spill(_info(profile), profile, ring_cadence_ms=(400, 200, 400, 2000))
    audio, events = _line(plan, -20.0, snr_db=20.0)
    assert [event for _, event in events][:4] == ["ring_started", "ring_stopped"] * 2
    result, _ = replay(ClipReceiver(profile), audio, events)
    assert result.info == _info(profile)


def test_a_plan_sends_only_what_its_format_can_carry():
    wide = CallerIdInfo(number="+4930123456789", name="Zoë Müller", date_time=(1, 2, 3, 4))
    dtmf = build_spill(wide, PROFILES["dtmf"])
    assert dtmf.payload == "B00C"
    assert dtmf.info == CallerIdInfo(number_absence=Absence.UNAVAILABLE)
    sdmf = build_spill(wide, PROFILES["bell_sdmf"])
    assert sdmf.info == CallerIdInfo(number_absence=Absence.UNAVAILABLE, date_time=(1, 2, 3, 4))
    assert sdmf.payload[2:] == b"01020304O" + bytes([sdmf.payload[-1]])
    etsi = build_spill(wide, PROFILES["etsi"])
    assert etsi.info.number == "+4930123456789" and etsi.info.name == "Zoe Muller"


@pytest.mark.parametrize(("interference", "trusted"), [(0.0, True), (0.7, True), (0.9, False)])
def test_a_right_but_doubtful_bit_makes_the_caller_unknown(interference, trusted):
    """The weak-bit gate: a frame whose checksum passes but one of whose bits was a near
    thing (here the space tone mixed into one stop bit) is not believed."""
    message = encode_message(CallerIdInfo(number="5551234"), MessageFormat.BELL_MDMF)
    burst = fsk.modulate(fsk.burst_bits(message), fsk.BELL_202, -20.0)
    stop_bit = 480 + 10 * 5 + 9  # the stop bit (mark) of the sixth character
    samples = np.arange(int(np.ceil(stop_bit * 20 / 3)), int(np.ceil((stop_bit + 1) * 20 / 3)))
    peak = float(np.abs(burst).max())
    burst[samples] += interference * peak * np.sin(2 * np.pi * 2200 * samples / RATE)
    frames = fsk.demodulate(burst, fsk.BELL_202, lambda data: data == message)
    assert [frame.data for frame in frames] == [message]  # every bit read right
    result = decode_spill(burst, Signalling.BELL_202)
    assert result.known is trusted
    if not trusted:
        assert frames[0].margin < fsk.MIN_MARGIN and "too weak" in result.reason
