"""A SIP caller (SIPp, a provider's call to DID 2100) in the two-level menu, keying RFC 4733.

SIPp replays the caller's RTP from a capture written here with plain struct (PCMU and
telephone-events as a desk phone sends them, RFC 4733 2.5; the framing helpers of
tests/sip/scenarios/make_dtmf_pcap.py): 1 then 2 reaches 203 through the sales menu; 203
keyed during the greeting goes there at once. After the keys the caller speaks (a 1004 Hz
tone in the capture) and 203 must hear it; our RTP must reach SIPp. 203 hanging up sends
the BYE the scenario waits for. The same keys as SIP INFO (application/dtmf-relay) do the
same. (SIPp 3.6's own `play_dtmf` sends empty events.)
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import socket
import struct
from pathlib import Path

import pytest
from sipp_tools import (
    finish,
    free_port,
    needs_sipp,
    sip_with_provider,
    start_sipp,
    stop_sipp,
    target,
    uas_port_fixture,  # noqa: F401  (pytest finds the uas_port fixture here)
)

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.lifecycle import LegState
from firmware.selftest import test_tone as make_tone
from tests.conftest import Pbx, start_pbx
from tests.features.feature_tools import office_with_routing
from tests.features.test_menu_city_line import MENUS


def can_open_raw_socket() -> bool:
    """SIPp replays pcaps through a raw socket (root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except OSError:
        return False
    return True


pytestmark = [
    needs_sipp,
    pytest.mark.skipif(not can_open_raw_socket(), reason="SIPp replays pcaps through a raw socket"),
]

DID = "2100"
PROVIDER = f'dtmf_mode = "rfc4733"\nincoming = {{ "{DID}" = "main" }}\n'

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="provider caller in a menu">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "City Caller" <sip:212345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:212345678@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "City Caller" <sip:212345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:212345678@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec play_pcap_audio="caller.pcap"/></action></nop>
INFO_REQUESTS
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def _pcap_helpers():
    """make_dtmf_pcap.py's RTP, event and Ethernet/IP/UDP framing (its own struct code)."""
    path = Path(__file__).parents[1] / "sip" / "scenarios" / "make_dtmf_pcap.py"
    spec = importlib.util.spec_from_file_location("menu_pcap_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ulaw(sample: float) -> int:
    """G.711 µ-law of one linear sample (the textbook segment search, not our codec)."""
    value = max(-32635, min(32635, int(sample)))
    sign = 0x80 if value < 0 else 0
    value = abs(value) + 0x84
    exponent = next(e for e in range(7, -1, -1) if value & (0x4000 >> (7 - e)) or e == 0)
    mantissa = (value >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def caller_pcap(path: Path, keys: list[tuple[int, str]], talk_ms: int = 6000) -> None:
    """The caller's RTP: for each (silence in ms, digits) the silence then the keys (100 ms
    each, 120 ms apart), then 1 s of silence and `talk_ms` of a 1004 Hz tone at -10 dBm0."""
    helpers = _pcap_helpers()
    packets: list[tuple[float, bytes]] = []
    sequence, tick = 4711, 0
    silence = b"\xff" * 160

    def send(at: float, payload_type: int, timestamp: int, payload: bytes, marker=False) -> None:
        nonlocal sequence
        packets.append((at * 0.02, helpers.rtp(payload_type, sequence, timestamp, payload, marker)))
        sequence += 1

    def audio(ticks: int, payload=lambda index: silence) -> None:
        nonlocal tick
        for index in range(ticks):
            send(tick, 0, tick * 160, payload(index))
            tick += 1

    codes = {**{str(n): n for n in range(10)}, "*": 10, "#": 11}
    for pause_ms, digits in keys:
        audio(pause_ms // 20)
        for digit in digits:
            start = tick * 160
            for index in range(5):
                event = helpers.event(codes[digit], False, (index + 1) * 160)
                send(tick, 101, start, event, marker=index == 0)
                tick += 1
            for repeat in range(3):
                send(
                    tick - 1 + (repeat + 1) / 4, 101, start, helpers.event(codes[digit], True, 800)
                )
            audio(6)
    audio(50)
    peak = 3000  # about -10 dBm0

    def tone(index: int) -> bytes:
        first = index * 160
        return bytes(
            ulaw(peak * math.sin(2 * math.pi * 1004 * (first + n) / 8000)) for n in range(160)
        )

    audio(talk_ms // 20, tone)
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for at, packet in packets:
        data = helpers.frame(packet)
        seconds, micros = 1_700_000_000 + int(at), round((at % 1) * 1e6)
        records.append(struct.pack("<IIII", seconds, micros, len(data), len(data)) + data)
    path.write_bytes(b"".join(records))


INFO = """  <send retrans="500">
    <![CDATA[

      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "City Caller" <sip:212345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: CSEQ INFO
      Contact: sip:212345678@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal=DIGIT
      Duration=160

    ]]>
  </send>
  <recv response="200"/>
"""


def scenario(folder: Path, keys: list[tuple[int, str]], via: str) -> Path:
    """The scenario and the capture it replays (caller.pcap, next to it). With `via` "info"
    the keys go as SIP INFO requests and the capture has only the silence and the voice."""
    requests = ""
    if via == "info":
        cseq = 2
        for pause, digits in keys:
            requests += f'  <pause milliseconds="{pause}"/>\n'
            for digit in digits:
                requests += INFO.replace("CSEQ", str(cseq)).replace("DIGIT", digit)
                requests += '  <pause milliseconds="150"/>\n'
                cseq += 1
        keys = [(sum(pause for pause, _ in keys) + 150 * len(keys) + 500, "")]
    caller_pcap(folder / "caller.pcap", keys)
    path = folder / "menu_uac.xml"
    path.write_text(SCENARIO.replace("INFO_REQUESTS\n", requests))
    return path


@pytest.fixture
async def menu_pbx(uas_port: int, data_dir: Path) -> Pbx:
    text = office_with_routing(MENUS, extra=sip_with_provider(uas_port, (32400, 32600), PROVIDER))
    pbx = await start_pbx(text, data_dir)
    try:
        yield pbx
    finally:
        await pbx.app.stop()
        assert pbx.app.calls is not None and not pbx.app.calls.sessions


TWO_LEVELS = ([(1500, "1"), (1500, "2")], ["node=main key=1 to=sales", "node=sales key=2 to=203"])
DIAL_THROUGH = ([(1000, "203")], ["node=main number=203 to=203"])  # during the greeting


@pytest.mark.parametrize(
    ("keys", "how", "via"),
    [(*TWO_LEVELS, "rfc4733"), (*DIAL_THROUGH, "rfc4733"), (*TWO_LEVELS, "info")],
    ids=["two_levels", "dial_through", "two_levels_info"],
)
async def test_a_sip_caller_keying_dtmf_reaches_203(
    menu_pbx: Pbx,
    tmp_path: Path,
    caplog,
    keys: list[tuple[int, str]],
    how: list[str],
    via: str,
) -> None:
    caplog.set_level(logging.INFO)
    pbx = menu_pbx
    accounts = pbx.phone("203")
    path = scenario(tmp_path, keys, via)
    uac = await start_sipp(target(pbx), "-sf", str(path), "-s", DID, "-m", "1",
                           "-p", str(free_port()), "-mp", str(free_port()), cwd=tmp_path)  # fmt: skip
    try:
        await pbx.wait_state("203", LegState.ALERTING, timeout=8.0)
        assert pbx.channel("202").state == LegState.IDLE
        mark = accounts.mark()
        accounts.off_hook()
        await pbx.wait_state("203", LegState.CONNECTED)
        leg = next(iter(pbx.app.sip.legs.values()))
        assert leg.media is not None
        sent = leg.media.counters.packets_out
        assert await pbx.hears(accounts, (1004.0,), since=mark, timeout=4.0), "the caller's voice"
        accounts.say(make_tone(1400))
        await asyncio.sleep(0.3)
        assert leg.media.counters.packets_out >= sent + 10, "our RTP goes to the caller"
        accounts.on_hook()
        code, output = await finish(uac)
        assert code == 0, output
    finally:
        await stop_sipp(uac)
    record = await pbx.last_record()
    assert (record.direction, record.disposition) == (Direction.INCOMING, Disposition.ANSWERED)
    assert (record.answered_extension, record.destination_kind) == ("203", "menu")
    assert (record.line, record.dialled) == ("provider", DID)
    # Only the scenario's way carried digits: the capture has no events when they go by INFO.
    assert leg.digits_in == len("".join(digits for _, digits in keys))
    for step in how:
        assert any(step in m for m in caplog.messages if "event=menu_" in m), step
