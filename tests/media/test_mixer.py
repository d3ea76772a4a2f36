"""The switching matrix (firmware/media/mixer.py), ticked by hand with a fake endpoint."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from firmware.media.detect import goertzel_power
from firmware.media.mixer import FRAME_SAMPLES, Mixer
from firmware.media.soundbank import SoundBank

RATE = 8000


class FakeEndpoint:
    """Writes chosen frames into `inputs` rows and records the `outputs` rows it is sent."""

    def __init__(self) -> None:
        self.say: dict[int, np.ndarray] = {}  # slot -> frame written every tick
        self.heard: dict[int, list[np.ndarray]] = {}

    def set_dc(self, slot: int, level: int) -> None:
        self.say[slot] = np.full(FRAME_SAMPLES, level, dtype=np.int16)

    def set_sine(self, slot: int, frequency: float, amplitude: float = 3000.0) -> None:
        t = np.arange(FRAME_SAMPLES) / RATE
        self.say[slot] = np.rint(amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)

    def read_into(self, inputs: np.ndarray) -> None:
        for slot, frame in self.say.items():
            inputs[slot] = frame

    def write_from(self, outputs: np.ndarray) -> None:
        for row in range(outputs.shape[0]):
            self.heard.setdefault(row, []).append(outputs[row].copy())

    def last(self, slot: int) -> np.ndarray:
        return self.heard[slot][-1]

    def all_heard(self, slot: int) -> np.ndarray:
        return np.concatenate(self.heard[slot])


def make_mixer(capacity: int = 32, sounds: SoundBank | None = None) -> tuple[Mixer, FakeEndpoint]:
    mixer = Mixer(sounds, capacity=capacity)
    endpoint = FakeEndpoint()
    mixer.add_endpoint(endpoint)
    return mixer, endpoint


def frame_of(value: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


# ----- bridges --------------------------------------------------------------------------


def test_two_party_call_each_hears_the_other_not_itself() -> None:
    mixer, ep = make_mixer()
    a, b = mixer.allocate("a"), mixer.allocate("b")
    ep.set_dc(a, 100)
    ep.set_dc(b, 7)
    bridge = mixer.connect(a, b)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(a), frame_of(7))
    np.testing.assert_array_equal(ep.last(b), frame_of(100))
    assert mixer.bridge_of(a) == mixer.bridge_of(b) == bridge
    assert mixer.members(bridge) == sorted([a, b])


def test_unconnected_slot_hears_silence() -> None:
    mixer, ep = make_mixer()
    a = mixer.allocate("a")
    ep.set_dc(a, 1234)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(a), frame_of(0))
    assert mixer.bridge_of(a) is None


def test_connect_needs_two_slots_in_use() -> None:
    mixer, _ = make_mixer()
    a = mixer.allocate("a")
    with pytest.raises(ValueError):
        mixer.connect(a)
    with pytest.raises(ValueError):
        mixer.connect(a, 17)  # never allocated


@pytest.mark.parametrize("size", [3, 5])
def test_conference_each_hears_the_sum_of_the_others_dc(size: int) -> None:
    mixer, ep = make_mixer()
    slots = [mixer.allocate(f"p{i}") for i in range(size)]
    levels = [10**i for i in range(size)]  # distinct, so any wrong mix shows
    for slot, level in zip(slots, levels, strict=True):
        ep.set_dc(slot, level)
    mixer.connect(*slots)
    mixer.tick()
    total = sum(levels)
    for slot, level in zip(slots, levels, strict=True):
        np.testing.assert_array_equal(ep.last(slot), frame_of(total - level))


@pytest.mark.parametrize("size", [3, 5])
def test_conference_each_hears_every_other_voice_but_not_its_own(size: int) -> None:
    mixer, ep = make_mixer()
    slots = [mixer.allocate(f"p{i}") for i in range(size)]
    frequencies = [400.0 + 250.0 * i for i in range(size)]  # whole periods in 20 ms
    for slot, frequency in zip(slots, frequencies, strict=True):
        ep.set_sine(slot, frequency)
    mixer.connect(*slots)
    mixer.tick()
    for slot, own in zip(slots, frequencies, strict=True):
        power = goertzel_power(ep.last(slot), frequencies)
        for frequency, p in zip(frequencies, power, strict=True):
            if frequency == own:
                assert p < 1.0, f"slot {slot} hears itself"
            else:
                assert p == pytest.approx(3000.0**2 / 2, rel=0.01), (slot, frequency)


def test_joining_a_third_slot_turns_a_call_into_a_conference() -> None:
    mixer, ep = make_mixer()
    a, b, c = (mixer.allocate(n) for n in "abc")
    ep.set_dc(a, 1)
    ep.set_dc(b, 20)
    ep.set_dc(c, 300)
    bridge = mixer.connect(a, b)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(c), frame_of(0))
    mixer.join(bridge, c)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(a), frame_of(320))
    np.testing.assert_array_equal(ep.last(b), frame_of(301))
    np.testing.assert_array_equal(ep.last(c), frame_of(21))
    assert mixer.members(bridge) == sorted([a, b, c])


def test_join_to_a_missing_bridge_is_refused() -> None:
    mixer, _ = make_mixer()
    a = mixer.allocate("a")
    with pytest.raises(ValueError):
        mixer.join(99, a)


def test_disconnect_dissolves_a_bridge_left_with_one_member() -> None:
    mixer, ep = make_mixer()
    a, b = mixer.allocate("a"), mixer.allocate("b")
    ep.set_dc(a, 5)
    ep.set_dc(b, 6)
    bridge = mixer.connect(a, b)
    mixer.tick()
    mixer.disconnect(a)
    assert mixer.bridge_of(a) is None
    assert mixer.bridge_of(b) is None
    assert mixer.members(bridge) == []
    mixer.tick()
    np.testing.assert_array_equal(ep.last(a), frame_of(0))
    np.testing.assert_array_equal(ep.last(b), frame_of(0))
    mixer.disconnect(a)  # harmless when not bridged


def test_leaving_a_conference_keeps_the_others_talking() -> None:
    mixer, ep = make_mixer()
    a, b, c = (mixer.allocate(n) for n in "abc")
    ep.set_dc(a, 1)
    ep.set_dc(b, 20)
    ep.set_dc(c, 300)
    bridge = mixer.connect(a, b, c)
    mixer.tick()
    mixer.disconnect(c)
    mixer.tick()
    assert mixer.members(bridge) == sorted([a, b])
    np.testing.assert_array_equal(ep.last(a), frame_of(20))
    np.testing.assert_array_equal(ep.last(b), frame_of(1))
    np.testing.assert_array_equal(ep.last(c), frame_of(0))


def test_connecting_a_bridged_slot_elsewhere_moves_it() -> None:
    mixer, ep = make_mixer()
    a, b, c, d = (mixer.allocate(n) for n in "abcd")
    for slot, level in zip((a, b, c, d), (1, 20, 300, 4000), strict=True):
        ep.set_dc(slot, level)
    mixer.connect(a, b, c)
    mixer.connect(a, d)  # a leaves the conference for a private talk with d
    mixer.tick()
    np.testing.assert_array_equal(ep.last(a), frame_of(4000))
    np.testing.assert_array_equal(ep.last(d), frame_of(1))
    np.testing.assert_array_equal(ep.last(b), frame_of(300))
    np.testing.assert_array_equal(ep.last(c), frame_of(20))


def test_moving_a_slot_out_of_a_two_party_bridge_dissolves_it() -> None:
    mixer, ep = make_mixer()
    a, b, c = (mixer.allocate(n) for n in "abc")
    ep.set_dc(a, 5)
    old = mixer.connect(a, b)
    mixer.connect(a, c)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(b), frame_of(0))  # b hears nobody (this holds)
    assert mixer.members(old) == []
    assert mixer.bridge_of(b) is None


def test_several_bridges_at_once_are_independent() -> None:
    mixer, ep = make_mixer()
    slots = [mixer.allocate(f"s{i}") for i in range(9)]
    for index, slot in enumerate(slots):
        ep.set_dc(slot, 1 << index)
    # Interleaved allocation order so the sort by bridge actually matters.
    groups = [(slots[0], slots[4]), (slots[1], slots[5], slots[7]), (slots[2], slots[8])]
    for group in groups:
        mixer.connect(*group)
    mixer.tick()
    for group in groups:
        total = sum(1 << slots.index(s) for s in group)
        for slot in group:
            np.testing.assert_array_equal(ep.last(slot), frame_of(total - (1 << slots.index(slot))))
    for lonely in (slots[3], slots[6]):
        np.testing.assert_array_equal(ep.last(lonely), frame_of(0))
    # Tearing one bridge down leaves the others as they were.
    mixer.disconnect(slots[5])
    mixer.tick()
    np.testing.assert_array_equal(ep.last(slots[1]), frame_of(1 << 7))
    np.testing.assert_array_equal(ep.last(slots[7]), frame_of(1 << 1))
    np.testing.assert_array_equal(ep.last(slots[0]), frame_of(1 << 4))
    np.testing.assert_array_equal(ep.last(slots[8]), frame_of(1 << 2))


def test_clipping_saturates_instead_of_wrapping() -> None:
    mixer, ep = make_mixer()
    slots = [mixer.allocate(f"p{i}") for i in range(4)]
    ep.set_dc(slots[0], 30000)
    ep.set_dc(slots[1], 30000)
    ep.set_dc(slots[2], 30000)
    ep.set_dc(slots[3], 0)
    mixer.connect(*slots)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(slots[3]), frame_of(32767))
    np.testing.assert_array_equal(ep.last(slots[0]), frame_of(32767))
    for slot in slots[:3]:
        ep.set_dc(slot, -30000)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(slots[3]), frame_of(-32768))
    np.testing.assert_array_equal(ep.last(slots[0]), frame_of(-32768))


# ----- sounds ---------------------------------------------------------------------------


def ramp_bank() -> SoundBank:
    bank = SoundBank()
    bank.add("padding", np.full(37, -5, dtype=np.int16), loop=True)  # offset != 0 below
    # 250 samples: not a multiple of the frame, so the wrap falls inside a frame.
    bank.add("tone", np.arange(1, 251, dtype=np.int16) * 10, loop=True)
    bank.add("prompt", np.arange(1, 401, dtype=np.int16), loop=False)  # 2.5 frames
    return bank


def test_a_looping_tone_continues_across_ticks_and_wraps_seamlessly() -> None:
    mixer, ep = make_mixer(sounds=ramp_bank())
    a = mixer.allocate("a")
    mixer.play(a, "tone")
    ticks = 7
    for _ in range(ticks):
        mixer.tick()
    expected = np.resize(np.arange(1, 251, dtype=np.int16) * 10, ticks * FRAME_SAMPLES)
    np.testing.assert_array_equal(ep.all_heard(a)[-ticks * FRAME_SAMPLES :], expected)
    assert mixer.is_playing(a)


def test_a_non_looping_sound_stops_at_its_end() -> None:
    mixer, ep = make_mixer(sounds=ramp_bank())
    a = mixer.allocate("a")
    mixer.play(a, "prompt")
    for _ in range(2):
        mixer.tick()
        assert mixer.is_playing(a)
    mixer.tick()  # the last half frame
    assert not mixer.is_playing(a)
    mixer.tick()
    heard = ep.all_heard(a)
    expected = np.zeros(4 * FRAME_SAMPLES, dtype=np.int16)
    expected[:400] = np.arange(1, 401)
    np.testing.assert_array_equal(heard, expected)


def test_playing_again_restarts_from_the_beginning() -> None:
    mixer, ep = make_mixer(sounds=ramp_bank())
    a = mixer.allocate("a")
    mixer.play(a, "prompt")
    mixer.tick()
    mixer.play(a, "prompt")
    mixer.tick()
    np.testing.assert_array_equal(ep.last(a), np.arange(1, 161))


def test_stop_sound_silences_the_slot() -> None:
    mixer, ep = make_mixer(sounds=ramp_bank())
    a = mixer.allocate("a")
    mixer.play(a, "tone")
    mixer.tick()
    mixer.stop_sound(a)
    mixer.tick()
    assert not mixer.is_playing(a)
    np.testing.assert_array_equal(ep.last(a), frame_of(0))


def test_play_unknown_sound_or_free_slot_is_refused() -> None:
    mixer, _ = make_mixer(sounds=ramp_bank())
    a = mixer.allocate("a")
    with pytest.raises(KeyError):
        mixer.play(a, "nope")
    with pytest.raises(ValueError):
        mixer.play(a + 1, "tone")


def test_tone_and_bridge_audio_are_summed() -> None:
    mixer, ep = make_mixer(sounds=ramp_bank())
    a, b = mixer.allocate("a"), mixer.allocate("b")
    ep.set_dc(a, 1000)
    ep.set_dc(b, 0)
    mixer.connect(a, b)
    mixer.play(b, "tone")
    mixer.tick()
    np.testing.assert_array_equal(ep.last(b), 1000 + np.arange(1, 161) * 10)
    np.testing.assert_array_equal(ep.last(a), frame_of(0))  # the tone is not sent to a


def test_tone_plus_bridge_clips() -> None:
    bank = SoundBank()
    bank.add("loud", np.full(160, 20000, dtype=np.int16), loop=True)
    mixer, ep = make_mixer(sounds=bank)
    a, b = mixer.allocate("a"), mixer.allocate("b")
    ep.set_dc(a, 20000)
    mixer.connect(a, b)
    mixer.play(b, "loud")
    mixer.tick()
    np.testing.assert_array_equal(ep.last(b), frame_of(32767))


def test_many_slots_playing_different_sounds_at_different_positions() -> None:
    mixer, ep = make_mixer(sounds=ramp_bank())
    a, b, c = (mixer.allocate(n) for n in "abc")
    mixer.play(a, "tone")
    mixer.tick()
    mixer.play(b, "tone")
    mixer.play(c, "prompt")
    mixer.tick()
    tone = np.resize(np.arange(1, 251, dtype=np.int16) * 10, 2 * FRAME_SAMPLES)
    np.testing.assert_array_equal(ep.last(a), tone[160:320])
    np.testing.assert_array_equal(ep.last(b), tone[:160])
    np.testing.assert_array_equal(ep.last(c), np.arange(1, 161))


# ----- growth and release -----------------------------------------------------------------


def test_growth_beyond_capacity_keeps_bridges_and_sounds() -> None:
    mixer, ep = make_mixer(capacity=4, sounds=ramp_bank())
    a, b, c = (mixer.allocate(n) for n in "abc")
    ep.set_dc(a, 3)
    ep.set_dc(b, 4)
    mixer.connect(a, b)
    mixer.play(c, "tone")
    mixer.tick()
    more = [mixer.allocate(f"x{i}") for i in range(100)]
    assert mixer.capacity >= 103
    assert mixer.slots_in_use == 103
    assert len({a, b, c, *more}) == 103
    mixer.tick()
    np.testing.assert_array_equal(ep.last(a), frame_of(4))
    np.testing.assert_array_equal(ep.last(b), frame_of(3))
    tone = np.resize(np.arange(1, 251, dtype=np.int16) * 10, 2 * FRAME_SAMPLES)
    np.testing.assert_array_equal(ep.last(c), tone[160:320])
    # New slots work too.
    ep.set_dc(more[-1], 99)
    mixer.connect(more[-1], more[0])
    mixer.tick()
    np.testing.assert_array_equal(ep.last(more[0]), frame_of(99))
    np.testing.assert_array_equal(ep.last(a), frame_of(4))


def test_release_frees_the_slot_and_clears_everything_on_it() -> None:
    mixer, ep = make_mixer(sounds=ramp_bank())
    a, b, c = (mixer.allocate(n) for n in "abc")
    ep.set_dc(a, 5)
    ep.set_dc(b, 6)
    seen: list[np.ndarray] = []
    mixer.connect(a, b, c)
    mixer.play(a, "tone")
    mixer.set_monitor(a, seen.append)
    recording = mixer.start_recording(a)
    mixer.tick()
    assert len(seen) == 1
    mixer.release(a)
    assert mixer.slots_in_use == 2
    assert mixer.bridge_of(a) is None
    assert not mixer.is_playing(a)
    assert mixer.stop_recording(a) is None
    with pytest.raises(KeyError):
        mixer.slot_name(a)
    ticks_recorded = len(recording.said)
    ep.say.pop(a)
    mixer.tick()
    assert len(seen) == 1  # monitor gone
    assert len(recording.said) == ticks_recorded
    np.testing.assert_array_equal(ep.last(b), frame_of(0))  # a no longer in b's bridge
    # The freed slot is reused, clean.
    again = mixer.allocate("again")
    assert again == a
    assert mixer.slot_name(again) == "again"
    assert mixer.bridge_of(again) is None
    assert not mixer.is_playing(again)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(again), frame_of(0))


def test_input_of_a_released_slot_is_ignored() -> None:
    mixer, ep = make_mixer()
    a, b = mixer.allocate("a"), mixer.allocate("b")
    mixer.release(a)
    ep.set_dc(a, 777)  # an endpoint still writing to a stale row
    mixer.tick()
    assert not ep.last(a).any()
    assert not ep.last(b).any()


def test_release_leaves_a_two_party_partner_unbridged() -> None:
    mixer, _ = make_mixer()
    a, b = mixer.allocate("a"), mixer.allocate("b")
    mixer.connect(a, b)
    mixer.release(a)
    assert mixer.bridge_of(b) is None


def test_releasing_twice_raises() -> None:
    mixer, _ = make_mixer()
    a = mixer.allocate("a")
    mixer.release(a)
    with pytest.raises(ValueError):
        mixer.release(a)


# ----- monitors and recordings ------------------------------------------------------------


def test_monitor_receives_exactly_the_slots_input_frame() -> None:
    mixer, ep = make_mixer(sounds=ramp_bank())
    a, b = mixer.allocate("a"), mixer.allocate("b")
    ep.set_sine(a, 1000.0)
    ep.set_dc(b, 50)
    mixer.connect(a, b)
    mixer.play(a, "tone")  # what a hears must not leak into what a says
    seen: list[np.ndarray] = []
    mixer.set_monitor(a, lambda frame: seen.append(frame.copy()))
    mixer.tick()
    mixer.tick()
    assert len(seen) == 2
    for frame in seen:
        np.testing.assert_array_equal(frame, ep.say[a])
    mixer.set_monitor(a, None)
    mixer.tick()
    assert len(seen) == 2


def test_a_monitor_that_raises_is_removed_and_the_tick_goes_on() -> None:
    mixer, ep = make_mixer()
    a, b = mixer.allocate("a"), mixer.allocate("b")
    ep.set_dc(a, 11)
    ep.set_dc(b, 22)
    mixer.connect(a, b)
    calls = {"bad": 0, "good": 0}

    def bad(_frame: np.ndarray) -> None:
        calls["bad"] += 1
        raise RuntimeError("detector crashed")

    def good(_frame: np.ndarray) -> None:
        calls["good"] += 1

    mixer.set_monitor(a, bad)
    mixer.set_monitor(b, good)
    mixer.tick()
    np.testing.assert_array_equal(ep.last(a), frame_of(22))
    np.testing.assert_array_equal(ep.last(b), frame_of(11))
    mixer.tick()
    assert calls == {"bad": 1, "good": 2}
    assert mixer.ticks == 2


def test_recording_captures_said_and_heard_and_mixes_them() -> None:
    mixer, ep = make_mixer()
    a, b = mixer.allocate("a"), mixer.allocate("b")
    mixer.connect(a, b)
    empty = mixer.start_recording(a)
    assert empty.mixed().size == 0
    said = [100, 200, 300]
    heard = [7, 8, 9]
    for s, h in zip(said, heard, strict=True):
        ep.set_dc(a, s)
        ep.set_dc(b, h)
        mixer.tick()
    recording = mixer.stop_recording(a)
    assert recording is empty
    assert [int(f[0]) for f in recording.said] == said
    assert [int(f[0]) for f in recording.heard] == heard
    assert all(f.shape == (FRAME_SAMPLES,) for f in recording.said + recording.heard)
    mixed = recording.mixed()
    np.testing.assert_array_equal(
        mixed, np.repeat(np.array(said) + np.array(heard), FRAME_SAMPLES).astype(np.int16)
    )
    mixer.tick()
    assert len(recording.said) == 3  # stopped


def test_recording_mix_clips() -> None:
    mixer, ep = make_mixer()
    a, b = mixer.allocate("a"), mixer.allocate("b")
    mixer.connect(a, b)
    recording = mixer.start_recording(a)
    ep.set_dc(a, 30000)
    ep.set_dc(b, 30000)
    mixer.tick()
    np.testing.assert_array_equal(recording.mixed(), frame_of(32767))


def test_endpoint_can_be_removed() -> None:
    mixer, ep = make_mixer()
    mixer.allocate("a")
    mixer.tick()
    mixer.remove_endpoint(ep)
    mixer.tick()
    assert len(ep.heard[0]) == 1


# ----- the clock --------------------------------------------------------------------------


async def test_health_after_running_the_clock() -> None:
    mixer, _ = make_mixer()
    mixer.allocate("a")
    started = time.perf_counter()
    mixer.start()
    try:
        await asyncio.sleep(0.3)
    finally:
        await mixer.stop()
    elapsed = time.perf_counter() - started
    health = mixer.health()
    print(health)
    assert health.ticks > 10
    # On absolute deadlines: one tick per 20 ms elapsed (the first at once), whether
    # ticked or, on a badly late loop, counted as dropped.
    assert health.ticks + health.frames_dropped <= elapsed / 0.02 + 2
    assert math.isfinite(health.late_p99_ms) and health.late_p99_ms >= 0
    assert health.late_p50_ms <= health.late_p99_ms <= health.late_max_ms
    assert math.isfinite(health.tick_cost_p99_us) and health.tick_cost_p99_us > 0
    assert health.slots_in_use == 1
    assert health.capacity == 32
    ticks = mixer.ticks
    await asyncio.sleep(0.05)
    assert mixer.ticks == ticks  # stopped for good


def test_health_before_any_tick() -> None:
    health = Mixer().health()
    assert health.ticks == 0
    assert health.late_p99_ms == 0.0


def test_a_tick_for_a_busy_office_is_cheap() -> None:
    bank = SoundBank()
    bank.add("tone", (np.sin(np.arange(320) * 0.3) * 5000).astype(np.int16), loop=True)
    mixer, _ = make_mixer(capacity=4, sounds=bank)
    slots = [mixer.allocate(f"s{i}") for i in range(400)]
    rng = np.random.default_rng(1)
    for pair in range(200):
        mixer.connect(slots[2 * pair], slots[2 * pair + 1])
    for slot in slots[::4]:
        mixer.play(slot, "tone")
    mixer.inputs[: len(slots)] = rng.integers(-2000, 2000, (len(slots), FRAME_SAMPLES))
    mixer.tick()  # topology sort happens here, once
    costs = []
    for _ in range(50):
        started = time.perf_counter()
        mixer.tick()
        costs.append(time.perf_counter() - started)
    median_ms = float(np.median(costs)) * 1e3
    print(f"tick with 400 slots, 200 bridges, 100 tones: median {median_ms:.3f} ms")
    assert median_ms < 20
