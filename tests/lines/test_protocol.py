"""Framing and message codec of the line-card protocol (firmware/lines/protocol.py)."""

from __future__ import annotations

import random

import pytest

from firmware.lines.protocol import (
    FLAG,
    MAX_PAYLOAD,
    MESSAGE_TYPES,
    Ack,
    CallerId,
    DecoderCounters,
    Dial,
    DialDone,
    DialMode,
    Digit,
    Fault,
    FaultCode,
    Flash,
    Frame,
    FrameDecoder,
    Heartbeat,
    Hello,
    Hook,
    HookSet,
    Inventory,
    LoopCurrent,
    Message,
    MessageKind,
    PayloadError,
    Polarity,
    PolaritySet,
    PortKind,
    ProtocolError,
    Ring,
    RingDetect,
    RingStop,
    crc16,
    encode_frame,
    stuff,
)

ONE_OF_EACH: list[Message] = [
    Ack(acked_seq=200),
    Hello(),
    Heartbeat(),
    Ring(
        port=2,
        cadence=((400, 200), (400, 2000)),
        caller_number="+4930123456",
        caller_name="Zoë Müller",
    ),
    RingStop(port=2),
    HookSet(port=5, off_hook=True),
    Dial(port=5, digits="0,030123456*#ABCD", mode=DialMode.PULSE),
    PolaritySet(port=1, reversed=True),
    Inventory(firmware_version="1.4.2-rc1", ports=(PortKind.FXS,) * 4 + (PortKind.FXO,) * 2),
    Hook(port=3, off_hook=False),
    Flash(port=3),
    Digit(port=4, digit="#"),
    RingDetect(port=6, ringing=True),
    CallerId(port=6, number="", name="PRIVATE"),
    Polarity(port=6),
    LoopCurrent(port=6, present=False),
    DialDone(port=6),
    Fault(port=0, code=FaultCode.HARDWARE, text="SLIC 2 over temperature"),
]


def body_frame(body_without_crc: bytes) -> bytes:
    """Frame arbitrary header+payload bytes, bypassing message validation."""
    body = body_without_crc + crc16(body_without_crc).to_bytes(2, "big")
    return b"\x7e" + stuff(body) + b"\x7e"


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1


def test_every_kind_has_a_class_and_an_example() -> None:
    assert set(MESSAGE_TYPES) == set(MessageKind)
    for kind, message_type in MESSAGE_TYPES.items():
        assert message_type.KIND is kind
    assert {type(message).KIND for message in ONE_OF_EACH} == set(MessageKind)


@pytest.mark.parametrize("message", ONE_OF_EACH, ids=lambda message: type(message).__name__)
def test_round_trip(message: Message) -> None:
    assert type(message).decode_payload(message.encode_payload()) == message
    decoder = FrameDecoder()
    frames = decoder.feed(encode_frame(message, seq=0x42, syn=True))
    assert frames == [Frame(message=message, seq=0x42, syn=True)]
    assert decoder.counters == DecoderCounters(frames_ok=1)


def test_worked_example_of_the_document() -> None:
    frame = encode_frame(Hook(port=1, off_hook=True), seq=3)
    assert frame == bytes.fromhex("7e 81 00 03 01 01 e3 cd 7e")
    ack = encode_frame(Ack(acked_seq=3), seq=0)
    assert ack == bytes.fromhex("7e 00 00 00 03 b4 a3 7e")
    stuffed = encode_frame(Hook(port=2, off_hook=False), seq=0x7D)
    assert stuffed == bytes.fromhex("7e 81 00 7d 5d 02 00 65 b6 7e")
    ring = Ring(port=1, cadence=[(1000, 4000)], caller_number="0301234", caller_name="Anna")
    assert encode_frame(ring, seq=0x12) == bytes.fromhex(
        "7e 10 00 12 01 01 03 e8 0f a0 07 30 33 30 31 32 33 34 04 41 6e 6e 61 f9 25 7e"
    )
    assert encode_frame(Hello(), seq=0, syn=True) == bytes.fromhex("7e 01 01 00 c8 9d 7e")


def test_payload_layouts() -> None:
    ring = Ring(port=1, cadence=[(1000, 4000)], caller_number="12", caller_name="A")
    assert ring.encode_payload() == bytes.fromhex("01 01 03e8 0fa0 02 3132 01 41")
    inventory = Inventory(firmware_version="v1", ports=[1, 2])
    assert inventory.encode_payload() == bytes.fromhex("02 7631 02 01 02")
    assert inventory.ports == (PortKind.FXS, PortKind.FXO)
    dial = Dial(port=3, digits="9,1", mode=0)
    assert dial.encode_payload() == bytes.fromhex("03 03 392c31 00")
    assert Digit(port=7, digit="*").encode_payload() == b"\x07*"
    assert Fault(port=0, code=2, text="").encode_payload() == b"\x00\x02\x00"


def test_byte_stuffing_of_flag_and_escape() -> None:
    message = Fault(port=0x7E, code=0x7D, text="~}")  # '~' is 0x7E and '}' is 0x7D
    frame = encode_frame(message, seq=0x7E)
    inner = frame[1:-1]
    assert FLAG not in inner
    assert inner.count(b"\x7d\x5e") >= 3  # port, seq, '~'
    assert inner.count(b"\x7d\x5d") >= 2  # code, '}'
    assert FrameDecoder().feed(frame) == [Frame(message=message, seq=0x7E, syn=False)]


def test_bad_crc_is_dropped_counted_and_next_frame_survives() -> None:
    good = encode_frame(Flash(port=1), seq=1)
    damaged = bytearray(encode_frame(Flash(port=2), seq=2))
    damaged[4] ^= 0x01
    decoder = FrameDecoder()
    assert decoder.feed(bytes(damaged) + good) == [Frame(Flash(port=1), 1, False)]
    assert decoder.counters.bad_crc == 1
    assert decoder.counters.frames_ok == 1
    assert decoder.counters.garbage_bytes == len(damaged) - 2


@pytest.mark.parametrize("seed", range(10))
def test_random_garbage_between_frames_yields_exactly_the_frames(seed: int) -> None:
    rng = random.Random(seed)
    expected: list[Frame] = []
    stream = bytearray()
    for index in range(200):
        if rng.random() < 0.7:
            # Garbage deliberately rich in flag and escape bytes.
            stream += bytes(rng.choice((0x7E, 0x7D, rng.randrange(256))) for _ in range(20))
        message = ONE_OF_EACH[index % len(ONE_OF_EACH)]
        seq = rng.randrange(256)
        expected.append(Frame(message, seq, syn=False))
        stream += encode_frame(message, seq)
    stream += bytes(rng.randrange(256) for _ in range(50))
    decoder = FrameDecoder()
    frames: list[Frame] = []
    position = 0
    while position < len(stream):
        size = rng.randint(1, 40)
        frames += decoder.feed(bytes(stream[position : position + size]))
        position += size
    assert frames == expected
    assert decoder.counters.frames_ok == len(expected)
    assert decoder.counters.garbage_bytes > 0


def test_garbage_inside_a_frame_loses_only_that_frame() -> None:
    first = encode_frame(Hook(port=1, off_hook=True), seq=1)
    second = encode_frame(Hook(port=1, off_hook=False), seq=2)
    third = encode_frame(Digit(port=1, digit="5"), seq=3)
    corrupted = second[:4] + b"\x13\x7e\x99\x7d" + second[4:]
    decoder = FrameDecoder()
    frames = decoder.feed(first + corrupted + third)
    assert [frame.seq for frame in frames] == [1, 3]


def test_bytes_before_the_first_flag_are_garbage() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(b"\x01\x02\x03" + encode_frame(Hello(), seq=0, syn=True))
    assert frames == [Frame(Hello(), 0, True)]
    assert decoder.counters == DecoderCounters(frames_ok=1, garbage_bytes=3)


def test_idle_flags_are_not_errors() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(b"\x7e\x7e\x7e" + encode_frame(Hello(), seq=0) + b"\x7e\x7e")
    assert len(frames) == 1
    assert decoder.counters == DecoderCounters(frames_ok=1)


def test_truncated_frames() -> None:
    whole = encode_frame(CallerId(port=1, number="0301234", name="Office"), seq=9)
    good = encode_frame(Flash(port=1), seq=10)
    decoder = FrameDecoder()
    assert decoder.feed(whole[:3] + good) == [Frame(Flash(port=1), 10, False)]
    assert decoder.counters.too_short == 1
    assert decoder.feed(whole[:-4] + good) == [Frame(Flash(port=1), 10, False)]
    assert decoder.counters.bad_crc == 1
    assert decoder.counters.frames_ok == 2


def test_abort_sequence_discards_the_candidate() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(b"\x7e\x81\x00\x01\x7d" + encode_frame(Flash(port=1), seq=1))
    assert frames == [Frame(Flash(port=1), 1, False)]
    assert decoder.counters.garbage_bytes == 4


def test_oversize_frame_is_dropped_and_decoder_recovers() -> None:
    decoder = FrameDecoder()
    oversize = b"\x7e" + bytes(range(1, 120)) * 3 + b"\x7e"
    good = encode_frame(DialDone(port=2), seq=4)
    assert decoder.feed(oversize + good) == [Frame(DialDone(port=2), 4, False)]
    assert decoder.counters.too_long == 1
    assert decoder.counters.garbage_bytes == 357


def test_largest_payload_passes_and_one_more_byte_is_refused() -> None:
    largest = Fault(port=1, code=1, text="x" * (MAX_PAYLOAD - 3))
    assert len(largest.encode_payload()) == MAX_PAYLOAD
    assert FrameDecoder().feed(encode_frame(largest, seq=1)) == [Frame(largest, 1, False)]
    with pytest.raises(PayloadError):
        encode_frame(Fault(port=1, code=1, text="x" * (MAX_PAYLOAD - 2)), seq=1)
    # Worst case: every body byte stuffed; still decodes.
    stuffed = Fault(port=0x7E, code=0x7E, text="~" * (MAX_PAYLOAD - 3))
    assert FrameDecoder().feed(encode_frame(stuffed, seq=0x7E)) == [Frame(stuffed, 0x7E, False)]


def test_unknown_type_is_counted() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(body_frame(b"\x55\x00\x01")) == []
    assert decoder.counters.unknown_type == 1


@pytest.mark.parametrize(
    "body",
    [
        b"\x81\x00\x01\x01\x02",  # HOOK with bool 2
        b"\x81\x00\x01\x01",  # HOOK truncated
        b"\x81\x00\x01\x01\x01\x00",  # HOOK with a trailing byte
        b"\x81\x00\x01\x00\x01",  # HOOK on port 0
        b"\x83\x00\x01\x01x",  # DIGIT 'x'
        b"\x85\x00\x01\x01\x02\xff\xfe\x00",  # CALLER_ID with invalid UTF-8
        b"\x80\x00\x01\x01v\x01\x03",  # INVENTORY with port kind 3
        b"\x10\x00\x01\x01\x00\x00\x00",  # RING with an empty cadence
        b"\x13\x00\x01\x01\x01x\x00",  # DIAL with a bad digit
        b"\x13\x00\x01\x01\x01\x31\x02",  # DIAL with mode 2
        b"\x01\x00\x01\x00",  # HELLO with a payload
    ],
)
def test_bad_payload_is_counted(body: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(body_frame(body) + encode_frame(Flash(port=1), seq=1)) == [
        Frame(Flash(port=1), 1, False)
    ]
    assert decoder.counters.bad_payload == 1


def test_reserved_flag_bits_are_ignored() -> None:
    frames = FrameDecoder().feed(body_frame(b"\x82\xfe\x05\x01"))
    assert frames == [Frame(Flash(port=1), 5, syn=False)]


@pytest.mark.parametrize("kind", list(MessageKind), ids=lambda kind: kind.name)
def test_random_payloads_with_good_crc_never_raise(kind: MessageKind) -> None:
    rng = random.Random(kind)
    decoder = FrameDecoder()
    for _ in range(300):
        payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
        decoder.feed(body_frame(bytes((kind, 0, 0)) + payload))
    counters = decoder.counters
    assert counters.frames_ok + counters.bad_payload == 300


def test_one_byte_at_a_time() -> None:
    stream = b"".join(
        encode_frame(message, seq, syn=seq == 0) for seq, message in enumerate(ONE_OF_EACH)
    )
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for byte in stream:
        frames += decoder.feed(bytes((byte,)))
    assert [frame.message for frame in frames] == ONE_OF_EACH
    assert [frame.syn for frame in frames] == [True] + [False] * (len(ONE_OF_EACH) - 1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Hook(port=0, off_hook=True),
        lambda: Hook(port=256, off_hook=True),
        lambda: Hook(port=1, off_hook=1),
        lambda: Digit(port=1, digit="x"),
        lambda: Digit(port=1, digit="12"),
        lambda: Dial(port=1, digits="", mode=DialMode.DTMF),
        lambda: Dial(port=1, digits="12-3", mode=DialMode.DTMF),
        lambda: Dial(port=1, digits="123", mode=7),
        lambda: Ring(port=1, cadence=[], caller_number="", caller_name=""),
        lambda: Ring(port=1, cadence=[(70000, 0)], caller_number="", caller_name=""),
        lambda: Ring(port=1, cadence=[(1, 2, 3)], caller_number="", caller_name=""),
        lambda: CallerId(port=1, number="1" * 256, name=""),
        lambda: Inventory(firmware_version="x", ports=[3]),
        lambda: Ack(acked_seq=256),
    ],
)
def test_invalid_messages_cannot_be_built(build) -> None:
    with pytest.raises(PayloadError):
        build()


def test_seq_out_of_range_is_refused() -> None:
    with pytest.raises(ProtocolError):
        encode_frame(Hello(), seq=256)


def test_messages_are_hashable_values() -> None:
    ring = Ring(port=1, cadence=[[400, 200]], caller_number="1", caller_name="")
    assert ring == Ring(port=1, cadence=((400, 200),), caller_number="1", caller_name="")
    assert len({ring, Ring(port=1, cadence=[(400, 200)], caller_number="1", caller_name="")}) == 1
