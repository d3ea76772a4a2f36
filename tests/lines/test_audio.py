"""Port audio backends (firmware/lines/audio.py): MemoryAudio, DriftBuffer, PyAudioAudio."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from firmware.lines.audio import (
    SILENCE,
    AudioPortMap,
    DriftBuffer,
    MemoryAudio,
    PyAudioAudio,
)
from firmware.media.mixer import FRAME_SAMPLES


def rows(slots: int = 8) -> np.ndarray:
    return np.zeros((slots, FRAME_SAMPLES), dtype=np.int16)


def frame_of(value: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


# ----- MemoryAudio: the phone side says --------------------------------------------------


def test_say_splits_into_frames_pads_and_delivers_one_per_tick() -> None:
    audio = MemoryAudio(3)
    audio.attach(2, 5)
    audio.say(2, np.arange(1, 201))  # 1.25 frames
    inputs = rows()
    inputs[5] = 42
    audio.read_into(inputs)
    np.testing.assert_array_equal(inputs[5], np.arange(1, 161))
    audio.read_into(inputs)
    expected = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    expected[:40] = np.arange(161, 201)
    np.testing.assert_array_equal(inputs[5], expected)
    inputs[5] = 42
    audio.read_into(inputs)  # nothing left: the row is not written
    np.testing.assert_array_equal(inputs[5], frame_of(42))


def test_said_audio_queues_behind_earlier_audio() -> None:
    audio = MemoryAudio(2)
    audio.attach(1, 0)
    audio.say(1, frame_of(1))
    audio.say(1, frame_of(2))
    inputs = rows()
    got = []
    for _ in range(2):
        audio.read_into(inputs)
        got.append(int(inputs[0, 0]))
    assert got == [1, 2]


def test_unattached_port_delivers_nothing_and_its_audio_is_consumed() -> None:
    audio = MemoryAudio(3)
    audio.attach(1, 0)
    audio.say(3, frame_of(9))  # port 3 not in a call
    inputs = rows()
    audio.read_into(inputs)
    assert not inputs.any()
    audio.attach(3, 4)
    audio.read_into(inputs)
    assert not inputs.any()  # the frame was spoken into the void, not kept


def test_set_tone_loops_while_nothing_is_said() -> None:
    audio = MemoryAudio(2)
    audio.attach(1, 3)
    tone = np.repeat(np.array([10, 20, 30], dtype=np.int16), FRAME_SAMPLES)
    audio.set_tone(1, tone)
    inputs = rows()
    got = []
    for _ in range(5):
        audio.read_into(inputs)
        got.append(int(inputs[3, 0]))
    assert got == [10, 20, 30, 10, 20]
    np.testing.assert_array_equal(inputs[3], frame_of(20))
    audio.set_tone(1, None)
    inputs[3] = 0
    audio.read_into(inputs)
    assert not inputs[3].any()


def test_speech_takes_over_from_a_looping_tone_then_the_tone_resumes() -> None:
    audio = MemoryAudio(2)
    audio.attach(1, 3)
    tone = np.repeat(np.array([10, 20, 30], dtype=np.int16), FRAME_SAMPLES)
    audio.set_tone(1, tone)
    inputs = rows()
    audio.read_into(inputs)  # tone frame 10
    audio.say(1, np.concatenate([frame_of(-7), frame_of(-8)]))
    got = []
    for _ in range(4):
        audio.read_into(inputs)
        got.append(int(inputs[3, 0]))
    assert got == [-7, -8, 20, 30]  # every said frame delivered; the tone goes on after


def test_silence_drops_queued_speech_and_tone() -> None:
    audio = MemoryAudio(2)
    audio.attach(1, 0)
    audio.say(1, np.ones(10 * FRAME_SAMPLES))
    audio.set_tone(1, frame_of(5))
    audio.silence(1)
    inputs = rows()
    audio.read_into(inputs)
    assert not inputs.any()


def test_speech_queue_is_bounded_and_overflow_counted() -> None:
    audio = MemoryAudio(1, max_queued_frames=3)
    audio.attach(1, 0)
    audio.say(1, np.repeat(np.arange(1, 6, dtype=np.int16), FRAME_SAMPLES))
    assert audio.frames_overflowed == 2
    inputs = rows()
    got = []
    for _ in range(4):
        inputs[0] = 0
        audio.read_into(inputs)
        got.append(int(inputs[0, 0]))
    assert got == [3, 4, 5, 0]  # the oldest frames were dropped


# ----- MemoryAudio: what the appliance sends ---------------------------------------------


def test_heard_returns_what_was_sent_to_a_port_since_a_mark() -> None:
    audio = MemoryAudio(3)
    audio.attach(1, 2)
    audio.attach(3, 6)
    outputs = rows()
    outputs[2] = 11
    outputs[6] = 33
    outputs[0] = 99  # nobody's slot
    audio.write_from(outputs)
    mark = audio.position
    assert mark == 1
    for value in (12, 13):
        outputs[2] = value
        audio.write_from(outputs)
    np.testing.assert_array_equal(audio.heard(1, mark), np.repeat([12, 13], FRAME_SAMPLES))
    np.testing.assert_array_equal(audio.heard(1, 0), np.repeat([11, 12, 13], FRAME_SAMPLES))
    np.testing.assert_array_equal(audio.heard(3, mark), np.full(2 * FRAME_SAMPLES, 33))
    # A port not attached to a slot hears silence.
    np.testing.assert_array_equal(audio.heard(2, 0), np.zeros(3 * FRAME_SAMPLES))
    assert audio.heard(1, audio.position).size == 0


def test_heard_after_detach_is_silence() -> None:
    audio = MemoryAudio(1)
    audio.attach(1, 0)
    outputs = rows()
    outputs[0] = 5
    audio.write_from(outputs)
    audio.detach(1)
    mark = audio.position
    audio.write_from(outputs)
    np.testing.assert_array_equal(audio.heard(1, mark), np.zeros(FRAME_SAMPLES))
    assert audio.slot_of(1) is None


def test_heard_is_bounded_by_the_capture_ring() -> None:
    audio = MemoryAudio(1, capture_seconds=0.2)  # 10 frames
    audio.attach(1, 0)
    outputs = rows()
    for value in range(1, 26):
        outputs[0] = value
        audio.write_from(outputs)
    heard = audio.heard(1, 0)
    frames = heard.reshape(-1, FRAME_SAMPLES)[:, 0]
    assert 9 <= frames.size <= 10
    # Only the newest frames, in order, ending with the last one sent.
    assert list(frames) == list(range(26 - frames.size, 26))


def test_stamp_gives_the_time_a_frame_was_sent() -> None:
    audio = MemoryAudio(1)
    outputs = rows()
    before = time.monotonic()
    audio.write_from(outputs)
    time.sleep(0.01)
    audio.write_from(outputs)
    after = time.monotonic()
    assert before <= audio.stamp(0) <= audio.stamp(1) <= after
    assert audio.stamp(1) - audio.stamp(0) >= 0.009


# ----- DriftBuffer -----------------------------------------------------------------------


def drift(
    buffer: DriftBuffer, puts_per_round: int, gets_per_round: int, rounds: int
) -> tuple[int, int]:
    """Interleave puts and gets evenly at the given ratio; returns (puts, gets)."""
    puts = gets = 0
    total = puts_per_round + gets_per_round
    for step in range(rounds * total):
        # Bresenham-style spreading of the puts among the gets.
        if (step * puts_per_round) // total != ((step + 1) * puts_per_round) // total:
            buffer.put(frame_of(puts % 30000))
            puts += 1
        else:
            buffer.get()
            gets += 1
        assert len(buffer) <= 4
    return puts, gets


def conserved(buffer: DriftBuffer, puts: int, gets: int) -> bool:
    """Every frame put is either dropped, got, or still queued; silent frames are inserted."""
    counters = buffer.counters
    return puts - counters.dropped == (gets - counters.inserted) + len(buffer)


def test_fast_producer_drops_whole_frames_and_stays_bounded() -> None:
    buffer = DriftBuffer(max_frames=4)
    buffer.put(frame_of(0))
    buffer.put(frame_of(0))  # a normal working fill
    puts, gets = drift(buffer, 1001, 1000, rounds=5)
    puts += 2
    assert puts - gets == 5 + 2
    assert len(buffer) <= 4
    assert buffer.counters.dropped >= 3
    assert buffer.counters.dropped <= 5 + 2
    assert conserved(buffer, puts, gets)


def test_slow_producer_inserts_silent_frames() -> None:
    buffer = DriftBuffer(max_frames=4)
    puts, gets = drift(buffer, 999, 1000, rounds=5)
    assert gets - puts == 5
    assert buffer.counters.inserted >= 5
    assert buffer.counters.dropped == 0
    assert conserved(buffer, puts, gets)


def test_empty_buffer_gives_silence() -> None:
    buffer = DriftBuffer()
    frame = buffer.get()
    np.testing.assert_array_equal(frame, SILENCE)
    assert buffer.counters.inserted == 1


def test_buffer_never_exceeds_max_frames_and_keeps_the_newest() -> None:
    buffer = DriftBuffer(max_frames=3)
    for value in range(10):
        buffer.put(frame_of(value))
        assert len(buffer) <= 3
    assert buffer.counters.dropped == 7
    assert [int(buffer.get()[0]) for _ in range(3)] == [7, 8, 9]


def test_buffer_is_thread_safe() -> None:
    buffer = DriftBuffer(max_frames=4)
    count = 20000
    received: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def producer() -> None:
        try:
            start.wait()
            for value in range(1, count + 1):
                buffer.put(np.full(FRAME_SAMPLES, value % 30000 or 1, dtype=np.int16))
                if value % 64 == 0:
                    time.sleep(0)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def consumer() -> None:
        try:
            start.wait()
            for index in range(count):
                frame = buffer.get()
                received.append(int(frame[0]))
                if index % 64 == 0:
                    time.sleep(0)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    assert len(buffer) <= 4
    assert conserved(buffer, count, count)
    real = [value for value in received if value]
    assert real == sorted(real), "frames came out of order"
    assert len(real) == count - buffer.counters.inserted


# ----- PyAudioAudio with a fake PortAudio ------------------------------------------------


class FakeStream:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.stopped = False
        self.closed = False

    def callback(self, in_data: bytes, frame_count: int) -> tuple[bytes, int]:
        return self.kwargs["stream_callback"](in_data, frame_count, {}, 0)

    def stop_stream(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


class FakePyAudio:
    def __init__(self, module: FakePyAudioModule) -> None:
        self.module = module
        self.terminated = False

    def get_device_count(self) -> int:
        return len(self.module.devices)

    def get_device_info_by_index(self, index: int) -> dict[str, Any]:
        return {"index": index, "name": self.module.devices[index]}

    def open(self, **kwargs: Any) -> FakeStream:
        stream = FakeStream(**kwargs)
        self.module.streams.append(stream)
        return stream

    def terminate(self) -> None:
        self.terminated = True


class FakePyAudioModule:
    paInt16 = 8
    paContinue = 0

    def __init__(self, devices: list[str]) -> None:
        self.devices = devices
        self.streams: list[FakeStream] = []
        self.instances: list[FakePyAudio] = []

    def PyAudio(self) -> FakePyAudio:
        instance = FakePyAudio(self)
        self.instances.append(instance)
        return instance


def interleave(*channels: np.ndarray) -> bytes:
    return np.stack(channels, axis=1).astype(np.int16).tobytes()


def deinterleave(data: bytes, channels: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.int16).reshape(-1, channels)


def open_card() -> tuple[PyAudioAudio, FakePyAudioModule]:
    module = FakePyAudioModule(["HDA Intel: ALC (hw:0,0)", "linecard: USB Audio (hw:1,0)"])
    port_map = [
        AudioPortMap(port=1, device="linecard", channel=0),
        AudioPortMap(port=2, device="linecard", channel=1),
    ]
    audio = PyAudioAudio(port_map, pyaudio_module=module)
    audio.open()
    return audio, module


def test_stream_is_opened_on_the_named_device_with_a_channel_per_port() -> None:
    audio, module = open_card()
    try:
        assert len(module.streams) == 1
        kwargs = module.streams[0].kwargs
        assert kwargs["channels"] == 2
        assert kwargs["rate"] == 8000
        assert kwargs["format"] == module.paInt16
        assert kwargs["input_device_index"] == kwargs["output_device_index"] == 1
        assert kwargs["frames_per_buffer"] == FRAME_SAMPLES
        assert kwargs["input"] and kwargs["output"]
    finally:
        audio.close()
    assert module.streams[0].stopped and module.streams[0].closed
    assert module.instances[0].terminated


def test_input_channel_reaches_the_slot_of_its_port() -> None:
    audio, module = open_card()
    try:
        audio.attach(1, 4)
        audio.attach(2, 6)
        left = np.arange(FRAME_SAMPLES, dtype=np.int16)
        right = -np.arange(FRAME_SAMPLES, dtype=np.int16) - 1000
        _out, flag = module.streams[0].callback(interleave(left, right), FRAME_SAMPLES)
        assert flag == module.paContinue
        inputs = rows()
        audio.read_into(inputs)
        np.testing.assert_array_equal(inputs[4], left)
        np.testing.assert_array_equal(inputs[6], right)
        assert not inputs[[0, 1, 2, 3, 5, 7]].any()
    finally:
        audio.close()


def test_output_frame_goes_out_on_the_ports_channel() -> None:
    audio, module = open_card()
    try:
        audio.attach(2, 3)  # port 1 is not in a call
        outputs = rows()
        outputs[3] = np.arange(FRAME_SAMPLES) * 3
        outputs[0] = 999
        audio.write_from(outputs)
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        out, _flag = module.streams[0].callback(interleave(silence, silence), FRAME_SAMPLES)
        assert isinstance(out, bytes)
        assert len(out) == FRAME_SAMPLES * 2 * 2
        sent = deinterleave(out, 2)
        np.testing.assert_array_equal(sent[:, 1], np.arange(FRAME_SAMPLES) * 3)
        np.testing.assert_array_equal(sent[:, 0], silence)
    finally:
        audio.close()


def test_each_device_gets_its_own_stream() -> None:
    module = FakePyAudioModule(["codec-a", "codec-b"])
    port_map = [
        AudioPortMap(port=1, device="codec-a", channel=0),
        AudioPortMap(port=2, device="codec-b", channel=2),
    ]
    audio = PyAudioAudio(port_map, pyaudio_module=module)
    audio.open()
    try:
        audio.attach(2, 1)
        by_device = {s.kwargs["input_device_index"]: s for s in module.streams}
        assert by_device[0].kwargs["channels"] == 1
        assert by_device[1].kwargs["channels"] == 3
        voice = np.full(FRAME_SAMPLES, 1234, dtype=np.int16)
        zero = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        by_device[1].callback(interleave(zero, zero, voice), FRAME_SAMPLES)
        inputs = rows()
        audio.read_into(inputs)
        np.testing.assert_array_equal(inputs[1], voice)
    finally:
        audio.close()


def test_missing_device_is_an_os_error() -> None:
    module = FakePyAudioModule(["something else"])
    audio = PyAudioAudio([AudioPortMap(1, "linecard", 0)], pyaudio_module=module)
    with pytest.raises(OSError, match="linecard"):
        audio.open()
    audio.close()


def test_drift_between_device_and_mixer_is_counted_per_port() -> None:
    audio, module = open_card()
    try:
        audio.attach(1, 0)
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        for _ in range(10):  # the device runs, the mixer does not
            module.streams[0].callback(interleave(silence, silence), FRAME_SAMPLES)
        counters = audio.drift_counters()
        assert set(counters) == {1, 2}
        # 10 device callbacks: the output buffers were empty (inserted), the inputs overflowed.
        assert counters[1]["inserted"] == 10
        assert counters[1]["dropped"] == 10 - 4
    finally:
        audio.close()
