"""Audio of the line card's ports, as a media endpoint of the mixer.

Two backends share one shape (ports attached to mixer slots):
- `MemoryAudio`: for the simulator and tests; the simulated phones and city lines push the
  frames they "say" and receive what the appliance sends them, in the same process.
- `PyAudioAudio`: the real card's codec channels through PortAudio/ALSA. The sound device runs
  on its own crystal, so each port has a `DriftBuffer` between the device callback thread and
  the mixer clock: bounded delay, and a whole frame dropped or a silent frame inserted (counted)
  when the two clocks have drifted apart, never a click in the middle of a frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from firmware.media.mixer import FRAME_SAMPLES

log = logging.getLogger(__name__)
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


class PortAudio:
    """Which mixer slot each port's audio belongs to while it is in a call."""

    def __init__(self) -> None:
        self._slots: dict[int, int] = {}

    def attach(self, port: int, slot: int) -> None:
        self._slots[port] = slot

    def detach(self, port: int) -> None:
        self._slots.pop(port, None)

    def slot_of(self, port: int) -> int | None:
        return self._slots.get(port)

    @property
    def attached(self) -> dict[int, int]:
        return self._slots


class MemoryAudio(PortAudio):
    """In-process audio for simulated ports (the simulator's and the tests' side of the card).

    Phone side: `say(port, samples)` queues audio the phone or line sends, `set_tone(port,
    samples)` loops a signal (an exchange's dial tone) when nothing is queued, and everything
    the appliance sends to every port is kept in a capture ring (`heard`), stamped with the
    monotonic time of its tick, so tests and benchmarks can look for tones after the fact.
    """

    def __init__(
        self, ports: int, capture_seconds: float = 20.0, max_queued_frames: int = 1500
    ) -> None:
        super().__init__()
        self._ports = ports
        self._said: dict[int, deque[np.ndarray]] = {}
        self._tones: dict[int, tuple[np.ndarray, int]] = {}
        self._max_queued = max_queued_frames
        self._ring_frames = max(round(capture_seconds / 0.02), 10)
        self._capture = np.zeros((ports + 1, self._ring_frames, FRAME_SAMPLES), dtype=np.int16)
        self._stamps = np.zeros(self._ring_frames, dtype=np.float64)
        self.position = 0  # frames captured so far (per port, all ports advance together)
        self.frames_overflowed = 0

    def say(self, port: int, samples: np.ndarray) -> None:
        """Queue samples the phone/line on `port` sends, split into 20 ms frames."""
        samples = np.asarray(samples, dtype=np.int16).ravel()
        padded = np.zeros(-(-samples.size // FRAME_SAMPLES) * FRAME_SAMPLES, dtype=np.int16)
        padded[: samples.size] = samples
        queue = self._said.setdefault(port, deque())
        for frame in padded.reshape(-1, FRAME_SAMPLES):
            if len(queue) >= self._max_queued:
                queue.popleft()
                self.frames_overflowed += 1
            queue.append(frame)

    def set_tone(self, port: int, samples: np.ndarray | None) -> None:
        """Loop `samples` (a multiple of 160 long) from `port` while nothing is queued."""
        if samples is None:
            self._tones.pop(port, None)
        else:
            self._tones[port] = (np.asarray(samples, dtype=np.int16).reshape(-1, FRAME_SAMPLES), 0)

    def silence(self, port: int) -> None:
        self._said.pop(port, None)
        self._tones.pop(port, None)

    def read_into(self, inputs: np.ndarray) -> None:
        speaking = list(self._said.items())
        for port, queue in speaking:
            frame = queue.popleft()
            if not queue:
                del self._said[port]
            slot = self._slots.get(port)
            if slot is not None:
                inputs[slot] = frame
        spoke = {port for port, _ in speaking}
        for port, (frames, index) in list(self._tones.items()):
            if port in spoke:
                continue
            slot = self._slots.get(port)
            if slot is not None:
                inputs[slot] = frames[index]
            self._tones[port] = (frames, (index + 1) % len(frames))

    def write_from(self, outputs: np.ndarray) -> None:
        row = self.position % self._ring_frames
        capture = self._capture[:, row]
        capture[:] = 0
        if self._slots:
            ports = np.fromiter(self._slots.keys(), dtype=np.intp, count=len(self._slots))
            slots = np.fromiter(self._slots.values(), dtype=np.intp, count=len(self._slots))
            capture[ports] = outputs[slots]
        self._stamps[row] = time.monotonic()
        self.position += 1

    def heard(self, port: int, since: int) -> np.ndarray:
        """Samples sent to `port` from capture position `since` up to now (at most the ring)."""
        since = max(since, self.position - self._ring_frames, 0)
        rows = np.arange(since, self.position) % self._ring_frames
        return self._capture[port, rows].ravel()

    def stamp(self, position: int) -> float:
        """Monotonic time at which frame `position` was sent."""
        return float(self._stamps[position % self._ring_frames])


@dataclass
class DriftCounters:
    inserted: int = 0
    dropped: int = 0


class DriftBuffer:
    """A small FIFO of whole frames between two clocks, thread-safe.

    The producer and consumer run at nominally the same rate; when the fill leaves
    [1, max_frames] the buffer inserts a silent frame or drops the oldest frame.
    The delay it adds is at most `max_frames` x 20 ms.
    """

    def __init__(self, max_frames: int = 4) -> None:
        self._frames: deque[np.ndarray] = deque()
        self._max = max_frames
        self._lock = threading.Lock()
        self.counters = DriftCounters()

    def put(self, frame: np.ndarray) -> None:
        with self._lock:
            if len(self._frames) >= self._max:
                self._frames.popleft()
                self.counters.dropped += 1
            self._frames.append(frame)

    def get(self) -> np.ndarray:
        with self._lock:
            if self._frames:
                return self._frames.popleft()
            self.counters.inserted += 1
            return SILENCE

    def __len__(self) -> int:
        return len(self._frames)


@dataclass(frozen=True)
class AudioPortMap:
    port: int
    device: str
    channel: int


class PyAudioAudio(PortAudio):
    """Real card audio: one PortAudio stream per ALSA device, one channel per port."""

    def __init__(self, port_map: list[AudioPortMap], pyaudio_module: object | None = None) -> None:
        super().__init__()
        if pyaudio_module is None:
            import pyaudio  # only on the appliance image (the `hardware` extra)

            pyaudio_module = pyaudio
        self._pyaudio = pyaudio_module
        self._map = port_map
        self._from_port = {m.port: DriftBuffer() for m in port_map}
        self._to_port = {m.port: DriftBuffer() for m in port_map}
        self._streams: list[object] = []
        self._audio: object | None = None

    def open(self) -> None:
        """Blocking (device open): call from an executor, not the event loop."""
        pa = self._pyaudio
        self._audio = pa.PyAudio()
        devices = {m.device for m in self._map}
        for device in sorted(devices):
            ports = [m for m in self._map if m.device == device]
            channels = max(m.channel for m in ports) + 1
            index = self._device_index(device)
            stream = self._audio.open(
                format=pa.paInt16,
                channels=channels,
                rate=8000,
                input=True,
                output=True,
                input_device_index=index,
                output_device_index=index,
                frames_per_buffer=FRAME_SAMPLES,
                stream_callback=self._callback_for(ports, channels),
            )
            self._streams.append(stream)
            log.info("event=audio_open device=%s channels=%d", device, channels)

    def _device_index(self, device: str) -> int:
        assert self._audio is not None
        for index in range(self._audio.get_device_count()):
            info = self._audio.get_device_info_by_index(index)
            if device in str(info.get("name", "")):
                return index
        raise OSError(f"audio device {device!r} not found")

    def _callback_for(
        self, ports: list[AudioPortMap], channels: int
    ) -> Callable[..., tuple[bytes, int]]:
        def callback(
            in_data: bytes, frame_count: int, _time_info: object, _status: int
        ) -> tuple[bytes, int]:
            samples = np.frombuffer(in_data, dtype=np.int16).reshape(-1, channels)
            out = np.zeros((frame_count, channels), dtype=np.int16)
            for mapping in ports:
                self._from_port[mapping.port].put(samples[:, mapping.channel].copy())
                out[:, mapping.channel] = self._to_port[mapping.port].get()[:frame_count]
            return out.tobytes(), self._pyaudio.paContinue

        return callback

    def read_into(self, inputs: np.ndarray) -> None:
        for port, buffer in self._from_port.items():
            frame = buffer.get()
            slot = self._slots.get(port)
            if slot is not None:
                inputs[slot] = frame

    def write_from(self, outputs: np.ndarray) -> None:
        for port, buffer in self._to_port.items():
            slot = self._slots.get(port)
            buffer.put(outputs[slot].copy() if slot is not None else SILENCE)

    def drift_counters(self) -> dict[int, dict[str, int]]:
        return {
            port: {
                "inserted": self._from_port[port].counters.inserted
                + self._to_port[port].counters.inserted,
                "dropped": self._from_port[port].counters.dropped
                + self._to_port[port].counters.dropped,
            }
            for port in self._from_port
        }

    def close(self) -> None:
        for stream in self._streams:
            stream.stop_stream()
            stream.close()
        self._streams.clear()
        if self._audio is not None:
            self._audio.terminate()
            self._audio = None
