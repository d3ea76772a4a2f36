"""Writes pcap/dtmf_15hash.pcap: the RTP a phone sends when its user keys 1, 5, # (RFC 4733).

SIPp replays it with <exec play_pcap_audio="pcap/dtmf_15hash.pcap"/> (dtmf_uac_inbound.xml),
rewriting the UDP ports and addresses to the call's media. Built with plain struct, not our
firmware's RTP code, so that a shared mistake cannot hide on both sides. The stream is what
a desk phone sends: PCMU silence every 20 ms, and during each key its telephone-events on
the same SSRC, sequence and clock (marker on the first packet, the duration growing by
160 every 20 ms, the end packet three times, RFC 4733 2.5).

Run from anywhere: python tests/sip/scenarios/make_dtmf_pcap.py
"""

from __future__ import annotations

import struct
from pathlib import Path

OUT = Path(__file__).parent / "pcap" / "dtmf_15hash.pcap"
DIGITS = "15#"
EVENT_CODES = {**{str(n): n for n in range(10)}, "*": 10, "#": 11}
PCMU_PT = 0
EVENT_PT = 101  # as dtmf_uac_inbound.xml offers it: a=rtpmap:101 telephone-event/8000
SSRC = 0x5EED4733
FIRST_SEQUENCE = 4711
FIRST_TIMESTAMP = 160_000
TICK_MS = 20
SAMPLES_PER_TICK = 160
KEY_TICKS = 5  # 100 ms of key pressed
GAP_TICKS = 6  # 120 ms between keys
LEAD_TICKS = 10  # 200 ms of silence first (the far end learns our address and SSRC)
TAIL_TICKS = 10
END_REPEATS = 3
VOLUME = 10  # -10 dBm0
SRC = ("127.0.0.1", 6000)  # SIPp replaces ports with the call's; one destination port only
DST = ("127.0.0.1", 6002)


def rtp(
    payload_type: int, sequence: int, timestamp: int, payload: bytes, marker: bool = False
) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type | (0x80 if marker else 0), sequence & 0xFFFF,
                       timestamp & 0xFFFFFFFF, SSRC) + payload  # fmt: skip


def event(code: int, end: bool, duration: int) -> bytes:
    return struct.pack("!BBH", code, (0x80 if end else 0) | VOLUME, duration)


def ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP around one RTP packet (the UDP checksum 0: SIPp recomputes it)."""
    udp = struct.pack("!HHHH", SRC[1], DST[1], 8 + len(payload), 0) + payload
    src = bytes(int(part) for part in SRC[0].split("."))
    dst = bytes(int(part) for part in DST[0].split("."))
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", ip_checksum(header)) + header[12:]
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00" + header + udp


def packets() -> list[tuple[float, bytes]]:
    """(seconds from the start, RTP packet) in sending order."""
    out: list[tuple[float, bytes]] = []
    sequence, tick = FIRST_SEQUENCE, 0
    silence = b"\xff" * SAMPLES_PER_TICK

    def send(
        at_tick: float, payload_type: int, timestamp: int, payload: bytes, marker: bool = False
    ) -> None:
        nonlocal sequence
        out.append(
            (at_tick * TICK_MS / 1000, rtp(payload_type, sequence, timestamp, payload, marker))
        )
        sequence += 1

    def audio(ticks: int) -> None:
        nonlocal tick
        for _ in range(ticks):
            send(tick, PCMU_PT, FIRST_TIMESTAMP + tick * SAMPLES_PER_TICK, silence)
            tick += 1

    audio(LEAD_TICKS)
    for digit in DIGITS:
        code, start = EVENT_CODES[digit], FIRST_TIMESTAMP + tick * SAMPLES_PER_TICK
        for index in range(KEY_TICKS):
            send(
                tick,
                EVENT_PT,
                start,
                event(code, False, (index + 1) * SAMPLES_PER_TICK),
                marker=index == 0,
            )
            tick += 1
        for repeat in range(END_REPEATS):  # the end, three times, 5 ms apart
            send(
                tick - 1 + (repeat + 1) / 4,
                EVENT_PT,
                start,
                event(code, True, KEY_TICKS * SAMPLES_PER_TICK),
            )
        audio(GAP_TICKS)
    audio(TAIL_TICKS)
    return out


def write_pcap(path: Path) -> None:
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # LINKTYPE_ETHERNET
    base = 1_700_000_000.0
    for at, packet in packets():
        data = frame(packet)
        stamp = base + at
        seconds = int(stamp)
        records.append(
            struct.pack("<IIII", seconds, round((stamp - seconds) * 1e6), len(data), len(data))
            + data
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(records))


if __name__ == "__main__":
    write_pcap(OUT)
    print(f"wrote {OUT} ({len(packets())} packets)")
