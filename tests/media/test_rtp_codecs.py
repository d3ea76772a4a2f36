"""G.711/G.722 codecs, RTP packets, the jitter buffer, RFC 4733 events and the per-tick path."""

from __future__ import annotations

import random
import time
import warnings

import numpy as np
import pytest

from firmware.media import codecs
from firmware.media.codecs import (
    PCMA,
    PCMU,
    alaw_decode,
    alaw_encode,
    mulaw_decode,
    mulaw_encode,
    new_codec,
    spec_by_name,
    spec_by_payload_type,
)
from firmware.media.rtp import (
    DigitReceived,
    JitterBuffer,
    MediaTimeout,
    RtpError,
    RtpPacket,
    RtpSession,
    TelephoneEventReceiver,
    decode_tick,
    encode_tick,
    pack_rtp,
    pack_telephone_event,
    parse_rtp,
    parse_telephone_event,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # the C reference of G.711 in CPython up to 3.12
    except ImportError:
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop left Python in 3.13")
needs_g722 = pytest.mark.skipif(not codecs.g722_available(), reason="g722 package missing")

ALL_SAMPLES = np.arange(65536, dtype=np.int64).astype(np.uint16).view(np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)
SOURCE = ("192.0.2.10", 40000)


def sine(frequency: float, samples: int, rate: int = 8000, amplitude: float = 10000) -> np.ndarray:
    t = np.arange(samples) / rate
    return np.round(amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def sine_snr_db(signal: np.ndarray, frequency: float, rate: int, skip: int = 400) -> tuple[float, float]:
    """SNR against the best-fitting sine of that frequency (any phase/delay), and its amplitude."""
    y = signal[skip:].astype(np.float64)
    n = np.arange(y.size)
    basis = np.stack(
        [np.sin(2 * np.pi * frequency * n / rate), np.cos(2 * np.pi * frequency * n / rate), np.ones_like(y)],
        axis=1,
    )
    coefficients, *_ = np.linalg.lstsq(basis, y, rcond=None)
    fitted = basis[:, :2] @ coefficients[:2]
    error = y - basis @ coefficients
    return 10 * np.log10((fitted @ fitted) / (error @ error)), float(np.hypot(*coefficients[:2]))


# --------------------------------------------------------------------------- G.711


@needs_audioop
def test_g711_encoders_match_audioop_for_all_65536_samples() -> None:
    pcm = ALL_SAMPLES.tobytes()
    assert np.array_equal(mulaw_encode(ALL_SAMPLES), np.frombuffer(audioop.lin2ulaw(pcm, 2), np.uint8))
    assert np.array_equal(alaw_encode(ALL_SAMPLES), np.frombuffer(audioop.lin2alaw(pcm, 2), np.uint8))


@needs_audioop
def test_g711_decoders_match_audioop_for_all_256_codes() -> None:
    codes = ALL_CODES.tobytes()
    assert np.array_equal(mulaw_decode(ALL_CODES), np.frombuffer(audioop.ulaw2lin(codes, 2), np.int16))
    assert np.array_equal(alaw_decode(ALL_CODES), np.frombuffer(audioop.alaw2lin(codes, 2), np.int16))


def test_g711_reference_values_from_the_itu_tables() -> None:
    """Spot values of G.711 tables 1a/2a, so the tables are checked even without audioop."""
    assert mulaw_encode(np.array([0, -1, 32767, -32768], np.int16)).tolist() == [0xFF, 0x7E, 0x80, 0x00]
    assert mulaw_decode(np.array([0x00, 0x80, 0xFF, 0x7F], np.uint8)).tolist() == [-32124, 32124, 0, 0]
    assert alaw_encode(np.array([0, -1, 32767, -32768], np.int16)).tolist() == [0xD5, 0x55, 0xAA, 0x2A]
    assert alaw_decode(np.array([0xD5, 0x55, 0xAA, 0x2A], np.uint8)).tolist() == [8, -8, 32256, -32256]


def test_g711_code_words_survive_decode_then_encode() -> None:
    assert np.array_equal(alaw_encode(alaw_decode(ALL_CODES)), ALL_CODES)
    mu_codes = ALL_CODES[ALL_CODES != 0x7F]  # 0x7F is µ-law's "negative zero", it comes back as 0xFF
    assert np.array_equal(mulaw_encode(mulaw_decode(mu_codes)), mu_codes)


def test_g711_handles_all_legs_of_a_tick_in_one_call() -> None:
    frames = np.random.default_rng(3).integers(-32768, 32767, size=(200, 160)).astype(np.int16)
    for codec in (PCMU, PCMA):
        encoded = codec.encode(frames)
        assert encoded.shape == (200, 160) and encoded.dtype == np.uint8
        decoded = codec.decode(encoded)
        assert decoded.shape == (200, 160) and decoded.dtype == np.int16
        assert np.array_equal(decoded[17], codec.decode(codec.encode(frames[17])))


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_g711_round_trip_of_a_1khz_sine_has_telephone_quality(name: str) -> None:
    codec = new_codec(name)
    tone = sine(1000, 8000).reshape(50, 160)
    snr, amplitude = sine_snr_db(codec.decode(codec.encode(tone)).reshape(-1), 1000, 8000)
    assert snr > 35  # G.711's ~38 dB for a loud tone
    assert amplitude == pytest.approx(10000, rel=0.01)


def test_codec_registry_by_name_and_static_payload_type() -> None:
    assert spec_by_payload_type(0).name == "PCMU"
    assert spec_by_payload_type(8).name == "PCMA"
    assert spec_by_payload_type(9).name == "G722"
    assert spec_by_payload_type(18) is None  # G.729: not ours
    assert spec_by_name("pcma").payload_type == 8
    assert spec_by_name("G722").clock_rate == 8000  # RFC 3551's historical RTP clock
    event = spec_by_name("telephone-event")
    assert event.payload_type is None and not event.audio
    assert new_codec("PCMU") is new_codec("pcmu")  # stateless: one shared instance
    with pytest.raises(codecs.CodecUnavailableError):
        new_codec("G729")


# --------------------------------------------------------------------------- G.722


@needs_g722
def test_g722_codec_is_per_leg_and_round_trips_a_sine() -> None:
    first, second = new_codec("G722"), new_codec("G722")
    assert first is not second and first.stateful
    tone = sine(1000, 8000)
    decoded = np.concatenate(
        [first.decode(first.encode(frame)) for frame in tone.reshape(50, 160)]
    )
    snr, amplitude = sine_snr_db(decoded, 1000, 8000)
    assert snr > 40
    assert amplitude == pytest.approx(10000, rel=0.02)


@needs_g722
def test_g722_interworks_with_a_full_16khz_g722_terminal() -> None:
    """Our 8 kHz-mode stream decodes at 16 kHz (a wideband phone), and the other way round."""
    from G722 import G722

    ours = new_codec("G722")
    payload = ours.encode(sine(1000, 8000)).tobytes()
    assert len(payload) == 8000  # 64 kbit/s: 160 bytes per 20 ms
    wideband = np.frombuffer(G722(16000, 64000, False).decode(payload), np.int16)
    snr, amplitude = sine_snr_db(wideband, 1000, 16000, skip=800)
    assert snr > 40 and amplitude == pytest.approx(10000, rel=0.02)

    phone = G722(16000, 64000, False)
    from_phone = phone.encode(sine(1000, 16000, rate=16000))
    narrow = ours.decode(np.frombuffer(from_phone, np.uint8))
    snr, amplitude = sine_snr_db(narrow, 1000, 8000)
    assert snr > 40 and amplitude == pytest.approx(10000, rel=0.02)


# --------------------------------------------------------------------------- packets


def test_rtp_header_round_trip_with_csrcs_extension_and_padding() -> None:
    packet = RtpPacket(
        payload_type=8,
        sequence=65535,
        timestamp=0xFFFFFFF0,
        ssrc=0xDEADBEEF,
        payload=b"\x01" * 160,
        marker=True,
        csrcs=(1, 2),
        extension=(0xBEDE, b"\x10\xaa\x00\x00"),
        padding=4,
    )
    data = pack_rtp(packet)
    assert len(data) == 12 + 8 + 4 + 4 + 160 + 4
    assert data[0] == 0x80 | 0x20 | 0x10 | 2 and data[1] == 0x80 | 8
    assert parse_rtp(data) == packet


def test_rtp_plain_header_layout() -> None:
    data = pack_rtp(RtpPacket(0, 0x1234, 0x01020304, 0x0A0B0C0D, b"xyz"))
    assert data == bytes.fromhex("80001234010203040a0b0c0d") + b"xyz"
    assert parse_rtp(data).payload == b"xyz"


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x00\x00",  # shorter than a header
        bytes.fromhex("40001234010203040a0b0c0d"),  # version 1
        bytes.fromhex("82001234010203040a0b0c0d") + b"\0\0\0\0",  # 2 CSRCs announced, 1 there
        bytes.fromhex("90001234010203040a0b0c0d") + b"\xbe\xde\x00\x02\0\0\0\0",  # short extension
        bytes.fromhex("a0001234010203040a0b0c0d") + b"\x01\x00",  # padding count 0
        bytes.fromhex("a0001234010203040a0b0c0d") + b"\x01\x09",  # padding beyond the packet
    ],
)
def test_malformed_rtp_is_refused(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_rtp(data)


def test_telephone_event_payload_layout() -> None:
    payload = pack_telephone_event(11, end=True, duration=800, volume=10)
    assert payload == bytes([11, 0x80 | 10, 0x03, 0x20])
    event = parse_telephone_event(payload)
    assert (event.event, event.end, event.volume, event.duration) == (11, True, 10, 800)


# --------------------------------------------------------------------------- jitter buffer


def frame_of(index: int) -> bytes:
    """A payload that says which frame it is."""
    return (index + 1).to_bytes(2, "big") * 80


def index_of(frame: bytes | bytearray | None) -> int | None:
    return None if frame is None else int.from_bytes(frame[:2], "big") - 1


def test_jitter_buffer_puts_reordered_packets_back_in_order() -> None:
    buffer = JitterBuffer(min_frames=2)
    buffer.put(1000, frame_of(0))
    played = []
    for arrivals in ([2, 1], [], [4, 3], [5], [], [6], [], [], []):
        for index in arrivals:
            assert buffer.put(1000 + 160 * index, frame_of(index))
        frame, gain = buffer.pop()
        played.append(index_of(frame) if gain == 1.0 else None)
    frames = [index for index in played if index is not None]
    assert frames == [0, 1, 2, 3, 4, 5, 6]
    assert buffer.concealed == buffer.late == buffer.duplicates == 0


def test_jitter_buffer_drops_duplicates_and_late_packets() -> None:
    buffer = JitterBuffer(min_frames=1)
    buffer.put(0, frame_of(0))
    assert not buffer.put(0, frame_of(0))
    assert buffer.duplicates == 1
    for _ in range(2):
        buffer.pop()  # lead-in, then frame 0
    buffer.put(320, frame_of(2))
    assert not buffer.put(0, frame_of(0))  # frame 0 was played already
    assert buffer.late == 1


def test_jitter_buffer_conceals_a_lost_frame_by_repeating_and_fading() -> None:
    buffer = JitterBuffer(min_frames=1)
    buffer.put(0, frame_of(0))
    assert buffer.pop() == (None, 0.0)  # the lead-in of the target delay
    assert buffer.pop() == (frame_of(0), 1.0)
    for index in (2, 3, 4, 5, 6):  # frame 1 never comes
        buffer.put(160 * index, frame_of(index))
    assert buffer.pop() == (frame_of(0), 0.9)  # frame 1 lost: frame 0 again
    assert buffer.pop() == (frame_of(2), 1.0)
    assert buffer.concealed == 1
    buffer = JitterBuffer(min_frames=1)
    buffer.put(0, frame_of(0))
    buffer.put(160 * 6, frame_of(6))  # five lost in a row, the buffer has a later frame
    buffer.pop()
    buffer.pop()
    gains = [buffer.pop()[1] for _ in range(5)]
    assert gains == [0.9, 0.6, 0.3, 0.0, 0.0]
    assert buffer.pop() == (frame_of(6), 1.0)


def test_jitter_buffer_reanchors_after_a_silence_instead_of_concealing_it() -> None:
    buffer = JitterBuffer(min_frames=1)
    buffer.put(0, frame_of(0))
    buffer.pop()
    buffer.pop()
    silent = [buffer.pop() for _ in range(30)]  # talkspurt over: nothing arrives
    assert all(frame is None or gain < 1.0 for frame, gain in silent)
    buffer.put(160 * 40, frame_of(40), marker=True)
    assert buffer.pop() == (None, 0.0)  # target delay lead-in again
    assert buffer.pop() == (frame_of(40), 1.0)


def test_jitter_buffer_cuts_30ms_packets_into_20ms_frames() -> None:
    buffer = JitterBuffer(min_frames=1)
    data = bytes(range(240)) * 2  # two 30 ms packets = three 20 ms frames
    buffer.put(0, data[:240])
    buffer.put(240, data[240:])
    buffer.pop()  # lead-in
    played = b"".join(bytes(buffer.pop()[0]) for _ in range(3))
    assert played == data


def run_network(
    seed: int, frames: int = 500, loss: float = 0.05, duplicate: float = 0.03, jitter_s: float = 0.03
) -> tuple[RtpSession, list[int | None], dict[str, int]]:
    """A seeded path: 20 ms packets with random delay, loss and duplicates; ticks at 20 ms."""
    rng = random.Random(seed)
    sender = RtpSession(codec=PCMU, payload_type=0, rng=rng)
    receiver = RtpSession(codec=PCMU, payload_type=0, rng=rng)
    events: list[tuple[float, int, bytes | None]] = []
    dropped = duplicated = 0
    for index in range(frames):
        packet = sender.next_packet(frame_of(index))
        if rng.random() < loss:
            dropped += 1
            continue
        copies = 2 if rng.random() < duplicate else 1
        duplicated += copies - 1
        for _ in range(copies):
            events.append((index * 0.02 + 0.01 + rng.uniform(0, jitter_s), 0, packet))
    for tick in range(frames + 50):
        events.append((tick * 0.02 + 0.017, 1, None))
    played: list[int | None] = []
    for now, kind, packet in sorted(events, key=lambda event: (event[0], event[1])):
        if kind == 0:
            assert receiver.receive(packet, SOURCE, now) == ()
        else:
            frame, gain = receiver.jitter_buffer.pop()
            played.append(index_of(frame) if gain == 1.0 else None)
    return receiver, played, {"dropped": dropped, "duplicated": duplicated}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_jitter_buffer_under_seeded_loss_reordering_and_duplicates(seed: int) -> None:
    receiver, played, network = run_network(seed)
    buffer = receiver.jitter_buffer
    report = receiver.reception_report()
    fresh = [index for index in played if index is not None]
    assert fresh == sorted(set(fresh))  # in order, each frame once
    assert report.packets_lost == network["dropped"]
    assert report.packets_expected == 500
    # Every copy that arrived was played once, or refused as late or duplicate.
    assert len(fresh) + buffer.late + buffer.duplicates + buffer.dropped == report.packets_received
    assert buffer.duplicates <= network["duplicated"]
    assert len(fresh) > 0.85 * 500
    assert buffer.concealed >= network["dropped"] - buffer.late
    assert 2 < report.jitter_ms < 15  # uniform 0-30 ms delay: RFC 3550 J is about 10 ms


def test_jitter_buffer_grows_its_delay_until_late_packets_stop() -> None:
    """0-100 ms of random delay: a few frames come too late at first, then none."""
    receiver, played, _ = run_network(seed=7, frames=1500, loss=0.0, duplicate=0.0, jitter_s=0.1)
    buffer = receiver.jitter_buffer
    assert buffer.target_frames >= 4
    assert buffer.late < 0.05 * 1500
    assert played[750:1500].count(None) == 0  # the second half of the call plays cleanly


def test_sequence_and_timestamp_wrap_cost_nothing() -> None:
    receiver = RtpSession(codec=PCMU, payload_type=0, rng=random.Random(1))
    played = []
    for index in range(40):
        data = pack_rtp(
            RtpPacket(0, (65520 + index) & 0xFFFF, (2**32 - 1600 + 160 * index) % 2**32, 5, frame_of(index))
        )
        receiver.receive(data, SOURCE, index * 0.02)
        frame, _ = receiver.jitter_buffer.pop()
        played.append(index_of(frame))
    assert [index for index in played if index is not None] == list(range(39))
    report = receiver.reception_report()
    assert report.packets_lost == 0 and report.packets_expected == 40


def test_new_ssrc_restarts_the_stream_without_counting_loss() -> None:
    receiver = RtpSession(codec=PCMU, payload_type=0, rng=random.Random(1))
    for index in range(5):
        receiver.receive(pack_rtp(RtpPacket(0, 100 + index, 160 * index, 1, frame_of(index))), SOURCE, 0)
    for index in range(5):
        receiver.receive(pack_rtp(RtpPacket(0, 9000 + index, 777 + 160 * index, 2, frame_of(index))), SOURCE, 0)
    report = receiver.reception_report()
    assert receiver.ssrc_changes == 1
    assert report.packets_expected == 10 and report.packets_lost == 0


# --------------------------------------------------------------------------- the session


def test_outgoing_numbering_and_talkspurt_marker() -> None:
    session = RtpSession(codec=PCMA, payload_type=8, rng=random.Random(4))
    first = parse_rtp(session.next_packet(b"\xd5" * 160))
    second = parse_rtp(session.next_packet(b"\xd5" * 160))
    assert first.marker and not second.marker
    assert second.sequence == (first.sequence + 1) & 0xFFFF
    assert second.timestamp == (first.timestamp + 160) % 2**32
    assert first.ssrc == second.ssrc == session.ssrc and first.payload_type == 8
    assert session.next_packet(None) is None  # silence: nothing sent, time moves on
    resumed = parse_rtp(session.next_packet(b"\xd5" * 160))
    assert resumed.marker and resumed.timestamp == (first.timestamp + 3 * 160) % 2**32
    assert resumed.sequence == (second.sequence + 1) & 0xFFFF
    session.sending = False  # on hold
    assert session.next_packet(b"\xd5" * 160) is None


def test_symmetric_rtp_learns_the_first_source_and_keeps_it() -> None:
    session = RtpSession(codec=PCMU, payload_type=0, remote_address=("10.0.0.5", 4000), rng=random.Random(1))
    assert session.remote_address == ("10.0.0.5", 4000)
    nat = ("203.0.113.7", 61000)
    session.receive(pack_rtp(RtpPacket(0, 1, 0, 9, frame_of(0))), nat, 1.0)
    assert session.learned_remote == nat and session.remote_address == nat
    session.receive(pack_rtp(RtpPacket(0, 2, 160, 9, frame_of(1))), ("198.51.100.1", 5000), 1.02)
    assert session.foreign_source == 1 and session.remote_address == nat
    moved = ("203.0.113.7", 62000)  # the NAT rebinds after the old source went quiet
    session.receive(pack_rtp(RtpPacket(0, 3, 320, 9, frame_of(2))), moved, 5.0)
    assert session.remote_address == moved
    session.receive(b"\x00" * 20, nat, 5.01)  # not RTP: never learnt from
    assert session.invalid == 1 and session.remote_address == moved
    session.set_remote(("10.0.0.9", 4002))
    assert session.remote_address == ("10.0.0.9", 4002)


def test_inactivity_is_reported_once_per_silence() -> None:
    session = RtpSession(codec=PCMU, payload_type=0, inactivity_timeout=10.0, now=100.0, rng=random.Random(1))
    assert session.poll(109.0) == ()
    assert session.poll(110.0) == (MediaTimeout(10.0),)
    assert session.timed_out and session.poll(120.0) == ()
    session.receive(pack_rtp(RtpPacket(0, 1, 0, 9, frame_of(0))), SOURCE, 121.0)
    assert not session.timed_out and session.poll(130.0) == ()
    assert session.poll(131.5) == (MediaTimeout(10.5),)


def test_unknown_payload_types_are_counted_not_played() -> None:
    session = RtpSession(codec=PCMU, payload_type=0, rng=random.Random(1))
    session.receive(pack_rtp(RtpPacket(18, 1, 0, 9, b"\x00" * 20)), SOURCE, 0.0)
    assert session.unknown_payload == 1 and session.jitter_buffer.depth == 0
    session.receive(pack_rtp(RtpPacket(13, 2, 0, 9, b"\x40")), SOURCE, 0.0)  # comfort noise
    assert session.last_received_at == 0.0 and session.jitter_buffer.depth == 0


# --------------------------------------------------------------------------- RFC 4733


def test_digits_go_out_as_rfc4733_events() -> None:
    session = RtpSession(codec=PCMU, payload_type=0, telephone_event_pt=101, rng=random.Random(2))
    audio = parse_rtp(session.next_packet(b"\xff" * 160))
    session.send_digits("5#", duration_ms=100, gap_ms=40)
    packets = [parse_rtp(session.next_packet(b"\xff" * 160)) for _ in range(18)]
    events = [(packet, parse_telephone_event(packet.payload)) for packet in packets if packet.payload_type == 101]
    five = [(packet, event) for packet, event in events if event.event == 5]
    assert [event.duration for _, event in five] == [160, 320, 480, 640, 800, 800, 800]
    assert [event.end for _, event in five] == [False] * 4 + [True] * 3
    assert [packet.marker for packet, _ in five] == [True] + [False] * 6
    assert {packet.timestamp for packet, _ in five} == {(audio.timestamp + 160) % 2**32}
    sequences = [packet.sequence for packet in packets]
    assert sequences == [(audio.sequence + 1 + offset) & 0xFFFF for offset in range(18)]
    assert [packet.payload_type for packet in packets[7:9]] == [0, 0]  # the 40 ms gap is audio
    assert packets[7].marker  # a new talkspurt after the event
    hash_sign = [event for _, event in events if event.event == 11]
    assert len(hash_sign) == 7 and packets[9].timestamp == (audio.timestamp + 10 * 160) % 2**32
    with pytest.raises(ValueError):
        session.send_digits("5x")


def test_digits_sent_are_received_once_each() -> None:
    rng = random.Random(5)
    sender = RtpSession(codec=PCMU, payload_type=0, telephone_event_pt=101, rng=rng)
    receiver = RtpSession(codec=PCMU, payload_type=0, telephone_event_pt=101, rng=rng)
    sender.send_digits("147*0#!")
    received: list[DigitReceived] = []
    for tick in range(80):
        received.extend(receiver.receive(sender.next_packet(b"\xff" * 160), SOURCE, tick * 0.02))
    assert "".join(report.digit for report in received) == "147*0#!"
    assert all(report.complete and report.duration == 800 for report in received)


def event_packets(timestamp: int, event: int, durations: list[int], ends: int = 3) -> list[bytes]:
    payloads = [pack_telephone_event(event, end=False, duration=d) for d in durations[:-1]]
    payloads += [pack_telephone_event(event, end=True, duration=durations[-1])] * ends
    return [payload for payload in payloads]


def test_event_receiver_survives_lost_first_packets_and_repeated_ends() -> None:
    receiver = TelephoneEventReceiver()
    packets = event_packets(5000, 3, [160, 320, 480, 640])
    reports = []
    for now, payload in enumerate(packets[2:]):  # the first two (with the marker) are lost
        reports.extend(receiver.receive(5000, payload, now * 0.02))
    assert reports == [DigitReceived("3", 3, 5000, 640, True)]


def test_event_receiver_infers_an_end_that_never_came() -> None:
    receiver = TelephoneEventReceiver(end_timeout=0.3)
    for now, payload in enumerate(event_packets(5000, 1, [160, 320, 480], ends=0)[:2]):
        assert receiver.receive(5000, payload, now * 0.02) == ()
    # All end packets lost; the next digit starts: the first is reported, then the second.
    reports = receiver.receive(7000, pack_telephone_event(2, end=False, duration=160), 0.5)
    assert reports == (DigitReceived("1", 1, 5000, 320, False),)
    reports = receiver.receive(7000, pack_telephone_event(2, end=True, duration=320), 0.52)
    assert reports == (DigitReceived("2", 2, 7000, 320, True),)
    # A late copy of the first digit's packets changes nothing.
    assert receiver.receive(5000, pack_telephone_event(1, end=True, duration=480), 0.6) == ()
    # A third digit whose packets simply stop is closed by the timer.
    receiver.receive(9000, pack_telephone_event(9, end=False, duration=160), 1.0)
    assert receiver.poll(1.2) is None
    assert receiver.poll(1.31) == DigitReceived("9", 9, 9000, 160, False)
    assert receiver.poll(2.0) is None


def test_event_receiver_reports_an_end_only_event_and_ignores_other_events() -> None:
    receiver = TelephoneEventReceiver()
    assert receiver.receive(100, pack_telephone_event(0, end=True, duration=960), 0.0) == (
        DigitReceived("0", 0, 100, 960, True),
    )
    assert receiver.receive(100, pack_telephone_event(0, end=True, duration=960), 0.02) == ()
    assert receiver.receive(900, pack_telephone_event(36, end=True, duration=960), 0.1) == ()  # fax CNG
    assert receiver.receive(900, b"\x01", 0.1) == () and receiver.malformed == 1


# --------------------------------------------------------------------------- per tick


def connected_pairs(names: list[str]) -> tuple[list[RtpSession], list[RtpSession]]:
    rng = random.Random(9)
    senders, receivers = [], []
    for name in names:
        spec = spec_by_name(name)
        senders.append(RtpSession(codec=new_codec(name), payload_type=spec.payload_type, rng=rng))
        receivers.append(RtpSession(codec=new_codec(name), payload_type=spec.payload_type, rng=rng))
    return senders, receivers


def test_one_tick_encodes_and_decodes_legs_of_mixed_codecs() -> None:
    names = ["PCMU", "PCMA", "PCMU", "PCMA"] + (["G722"] if codecs.g722_available() else [])
    senders, receivers = connected_pairs(names)
    rows = list(range(len(names)))
    tone = sine(1000, 160 * 60).reshape(60, 160)
    heard = np.zeros((len(names), 160 * 60), np.int16)
    inputs = np.zeros((len(names), 160), np.int16)
    for tick in range(60):
        outputs = np.repeat(tone[tick][None, :], len(names), axis=0)
        packets = encode_tick(senders, rows, outputs)
        for receiver, packet in zip(receivers, packets, strict=True):
            receiver.receive(packet, SOURCE, tick * 0.02)
        decode_tick(receivers, rows, inputs)
        heard[:, tick * 160 : (tick + 1) * 160] = inputs
    for row, name in enumerate(names):
        snr, amplitude = sine_snr_db(heard[row], 1000, 8000, skip=800)
        assert snr > 35, name
        assert amplitude == pytest.approx(10000, rel=0.02), name


def test_decode_tick_fades_concealed_frames_and_silences_empty_legs() -> None:
    senders, receivers = connected_pairs(["PCMU", "PCMU"])
    loud = np.full((2, 160), 8000, np.int16)
    inputs = np.zeros((2, 160), np.int16)
    for tick in range(3):
        packets = encode_tick(senders, [0, 1], loud)
        receivers[0].receive(packets[0], SOURCE, tick * 0.02)
        if tick == 0:
            receivers[1].receive(packets[1], SOURCE, 0.0)
        decode_tick(receivers, [0, 1], inputs)
    # Leg 0 plays; leg 1 lost its packets: last frame at 90 %, then 60 %.
    assert abs(int(inputs[0, 0]) - 8000) < 300
    assert abs(int(inputs[1, 0]) - 0.9 * 8000) < 300
    decode_tick(receivers, [0, 1], inputs)
    assert abs(int(inputs[1, 0]) - 0.6 * 8000) < 300
    for _ in range(3):
        decode_tick(receivers, [0, 1], inputs)
    assert not inputs[1].any()


def test_per_tick_codec_cost_for_200_legs(capsys: pytest.CaptureFixture[str]) -> None:
    """Micro benchmark, printed: G.711 decode + encode of 200 legs x 160 samples per tick."""
    legs = 200
    frames = np.random.default_rng(1).integers(-20000, 20000, size=(legs, 160)).astype(np.int16)
    payloads = [PCMU.encode(frames[leg]).tobytes() for leg in range(legs)]

    def codec_only() -> None:
        codes = np.frombuffer(b"".join(payloads), np.uint8).reshape(legs, 160)
        PCMU.encode(PCMU.decode(codes)).tobytes()

    senders, receivers = connected_pairs(["PCMU"] * legs)
    rows = list(range(legs))
    inputs = np.zeros((legs, 160), np.int16)
    clock = [0.0]

    def full_tick() -> None:
        packets = encode_tick(senders, rows, frames)
        now = clock[0]
        for receiver, packet in zip(receivers, packets, strict=True):
            receiver.receive(packet, SOURCE, now)
        decode_tick(receivers, rows, inputs)
        clock[0] = now + 0.02

    figures = {}
    for name, work in (("codec", codec_only), ("tick", full_tick)):
        for _ in range(20):
            work()
        runs = 200
        start = time.perf_counter()
        for _ in range(runs):
            work()
        figures[name] = (time.perf_counter() - start) / runs * 1e6
    with capsys.disabled():
        print(
            f"\n[bench] {legs} legs x 160 samples per 20 ms tick: "
            f"G.711 decode+encode {figures['codec']:.0f} µs "
            f"({figures['codec'] / 200:.1f} % of a core); "
            f"with RTP build, receive, jitter buffer {figures['tick']:.0f} µs "
            f"({figures['tick'] / 200:.1f} % of a core, {figures['tick'] / legs:.2f} µs per leg)"
        )
    assert figures["codec"] < 20000 and figures["tick"] < 200000  # sanity, not a goal
