"""SDP parsing and building, RFC 3264 answers to offers of real phones, hold and resume."""

from __future__ import annotations

import pytest

from firmware.sip.sdp import (
    LocalSdpSession,
    MediaParams,
    OfferRejectedError,
    SdpError,
    intersect_directions,
    is_hold,
    make_answer,
    make_offer,
    negotiated,
    parse_sdp,
    reverse_direction,
)

OURS = ("PCMU", "PCMA", "G722")
PBX_ADDRESS = "192.168.1.2"


def crlf(text: str) -> bytes:
    return text.strip().replace("\n", "\r\n").encode() + b"\r\n"


# Offers as these user agents send them (addresses and ports changed).
YEALINK_T46 = crlf("""
v=0
o=- 20018 20018 IN IP4 192.168.1.105
s=SDP data
c=IN IP4 192.168.1.105
t=0 0
m=audio 11796 RTP/AVP 0 8 18 9 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:9 G722/8000
a=fmtp:101 0-15
a=rtpmap:101 telephone-event/8000
a=ptime:20
a=sendrecv
""")

GRANDSTREAM_GXP = crlf("""
v=0
o=201 8000 8000 IN IP4 192.168.1.120
s=SIP Call
c=IN IP4 192.168.1.120
t=0 0
m=audio 5004 RTP/AVP 9 8 0 4 18 97 2 101
a=sendrecv
a=rtpmap:9 G722/8000
a=ptime:20
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:4 G723/8000
a=fmtp:4 annexa=no
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:97 iLBC/8000
a=fmtp:97 mode=20
a=rtpmap:2 G726-32/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-11
""")

LINPHONE = crlf("""
v=0
o=alice 3045 1821 IN IP4 192.168.1.130
s=Talk
c=IN IP4 192.168.1.130
t=0 0
a=ice-pwd:31ec21eb38b2ec6d36e8dc7b
a=ice-ufrag:7a0b6ecb
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp:7079
a=candidate:1 1 UDP 2130706431 192.168.1.130 7078 typ host
a=candidate:1 2 UDP 2130706430 192.168.1.130 7079 typ host
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp:9079
""")

BARESIP = crlf("""
v=0
o=- 2890844526 2890844526 IN IP4 192.168.1.140
s=-
c=IN IP4 192.168.1.140
t=0 0
m=audio 10000 RTP/AVP 9 0 8 101
b=AS:64
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=ssrc:2217341823 cname:d0f0a0f2-0cc7-41de-9a0e-2ab33c3c25a1
a=rtcp-rsize
a=ptime:20
""")

ASTERISK_TRUNK = crlf("""
v=0
o=- 1523553093 1523553093 IN IP4 203.0.113.10
s=Asterisk
c=IN IP4 203.0.113.10
t=0 0
m=audio 14036 RTP/AVP 8 0 3 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:3 GSM/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
""")


def asterisk_reoffer(version: int, direction_line: str, address: str = "203.0.113.10") -> bytes:
    return crlf(f"""
v=0
o=- 1523553093 {version} IN IP4 203.0.113.10
s=Asterisk
c=IN IP4 {address}
t=0 0
m=audio 14036 RTP/AVP 8 0 3 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:3 GSM/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
{direction_line}
""")


def answer_to(offer_bytes: bytes, **options: object) -> tuple[str, MediaParams]:
    offer = parse_sdp(offer_bytes)
    local = LocalSdpSession(PBX_ADDRESS, session_id=4242)
    options.setdefault("codecs", OURS)
    answer = make_answer(offer, local, port=30000, **options)
    text = answer.to_text()
    return text, negotiated(offer, parse_sdp(text), local_is_offerer=False)


# --------------------------------------------------------------------------- parsing


def test_parse_keeps_what_a_call_needs() -> None:
    description = parse_sdp(LINPHONE)
    assert description.origin.username == "alice" and description.origin.session_version == 1821
    assert description.session_name == "Talk"
    assert description.connection.address == "192.168.1.130"
    assert ("record", "off") in description.attributes
    audio, video = description.media
    assert (audio.media, audio.port, audio.protocol) == ("audio", 7078, "RTP/AVP")
    assert audio.payload_types == [96, 97, 98, 0, 8, 18, 101, 99, 100]
    assert audio.rtpmaps[96].encoding_name == "opus" and audio.rtpmaps[96].channels == 2
    assert audio.encoding(0).encoding_name == "PCMU"  # static, no rtpmap in the offer
    assert audio.fmtps[18] == "annexb=yes"
    assert audio.attribute("rtcp") == "7079"
    assert description.direction_of(audio) == "sendrecv"
    assert video.port == 9078 and video.rtpmaps[97].clock_rate == 90000


def test_parse_accepts_bare_newlines_and_media_level_connection() -> None:
    description = parse_sdp(
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\nm=audio 4000/2 RTP/AVP 0\nc=IN IP4 10.0.0.9/127\na=ptime:30\na=recvonly\n"
    )
    audio = description.media[0]
    assert description.connection is None
    assert description.connection_of(audio).address == "10.0.0.9"
    assert audio.port == 4000 and audio.ptime == 30 and audio.direction == "recvonly"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello world",
        b"v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
        b"v=0\r\ns=-\r\n",  # no o=
        b"v=0\r\no=- 1 x IN IP4 1.2.3.4\r\n",  # version not a number
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio port RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n",
    ],
)
def test_garbage_is_an_sdp_error(body: bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(body)


def test_build_then_parse_round_trip() -> None:
    local = LocalSdpSession(PBX_ADDRESS, session_id=77)
    offer = make_offer(local, port=30000, codecs=OURS)
    text = offer.to_text()
    assert text == (
        "v=0\r\n"
        "o=minipbx 77 77 IN IP4 192.168.1.2\r\n"
        "s=minipbx\r\n"
        "c=IN IP4 192.168.1.2\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/AVP 0 8 9 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:9 G722/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )
    assert parse_sdp(offer.encode()).to_text() == text


def test_ipv6_addresses_are_labelled_ip6() -> None:
    offer = make_offer(LocalSdpSession("2001:db8::2", session_id=1), port=30000, codecs=["PCMA"])
    assert "c=IN IP6 2001:db8::2\r\n" in offer.to_text()


# --------------------------------------------------------------------------- answers


def test_answer_to_yealink_takes_our_first_codec_and_its_event_numbers() -> None:
    text, params = answer_to(YEALINK_T46)
    assert text == (
        "v=0\r\n"
        "o=minipbx 4242 4242 IN IP4 192.168.1.2\r\n"
        "s=minipbx\r\n"
        "c=IN IP4 192.168.1.2\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )
    assert params == MediaParams("PCMU", 0, 101, "192.168.1.105", 11796, "sendrecv", 20)


def test_answer_to_grandstream_prefers_g711_over_its_g722_unless_told_otherwise() -> None:
    _, params = answer_to(GRANDSTREAM_GXP)
    assert (params.codec, params.payload_type, params.telephone_event_pt) == ("PCMU", 0, 101)
    _, params = answer_to(GRANDSTREAM_GXP, honour_offerer_order=True)
    assert (params.codec, params.payload_type) == ("G722", 9)
    assert (params.remote_address, params.remote_port) == ("192.168.1.120", 5004)


def test_answer_to_linphone_picks_the_8khz_event_and_rejects_video() -> None:
    text, params = answer_to(LINPHONE)
    answer = parse_sdp(text)
    audio, video = answer.media
    assert audio.payload_types == [0, 100]  # telephone-event/8000 is 100 in this offer
    assert audio.rtpmaps[100].clock_rate == 8000 and audio.fmtps[100] == "0-16"
    assert (video.media, video.port, video.formats) == ("video", 0, ["96", "97"])
    assert "a=" not in text.split("m=video")[1]
    assert params == MediaParams("PCMU", 0, 100, "192.168.1.130", 7078, "sendrecv", 20)


def test_answer_to_baresip_in_its_order_gives_g722() -> None:
    _, params = answer_to(BARESIP, honour_offerer_order=True)
    assert params == MediaParams("G722", 9, 101, "192.168.1.140", 10000, "sendrecv", 20)
    _, params = answer_to(BARESIP, codecs=["PCMA"])
    assert params.codec == "PCMA" and params.payload_type == 8


def test_answer_to_asterisk_trunk() -> None:
    text, params = answer_to(ASTERISK_TRUNK)
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in text
    assert params == MediaParams("PCMU", 0, 101, "203.0.113.10", 14036, "sendrecv", 20)
    _, params = answer_to(ASTERISK_TRUNK, honour_offerer_order=True)
    assert params.codec == "PCMA" and params.payload_type == 8


def test_an_offer_without_a_common_codec_is_refused() -> None:
    g729_only = crlf("""
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=audio 4000 RTP/AVP 18 101
a=rtpmap:18 G729/8000
a=rtpmap:101 telephone-event/8000
""")
    with pytest.raises(OfferRejectedError):
        answer_to(g729_only)


def test_srtp_and_second_audio_streams_get_port_zero() -> None:
    offer = crlf("""
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=audio 4000 RTP/SAVP 0
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
m=audio 4002 RTP/AVP 8 0
m=audio 4004 RTP/AVP 0
m=image 4006 udptl t38
""")
    text, params = answer_to(offer)
    ports = [(media.media, media.port, media.protocol) for media in parse_sdp(text).media]
    assert ports == [
        ("audio", 0, "RTP/SAVP"),
        ("audio", 30000, "RTP/AVP"),
        ("audio", 0, "RTP/AVP"),
        ("image", 0, "udptl"),
    ]
    assert (params.codec, params.remote_port, params.telephone_event_pt) == ("PCMU", 4002, None)


def test_offer_without_telephone_event_gets_an_answer_without_it() -> None:
    offer = crlf("""
v=0
o=- 1 1 IN IP4 10.0.0.1
s=-
c=IN IP4 10.0.0.1
t=0 0
m=audio 4000 RTP/AVP 8
a=ptime:30
""")
    text, params = answer_to(offer)
    assert "telephone-event" not in text
    assert params == MediaParams("PCMA", 8, None, "10.0.0.1", 4000, "sendrecv", 30)


# --------------------------------------------------------------------------- directions


def test_direction_algebra() -> None:
    assert reverse_direction("sendonly") == "recvonly"
    assert reverse_direction("recvonly") == "sendonly"
    assert reverse_direction("inactive") == "inactive"
    assert intersect_directions("sendrecv", "sendonly") == "sendonly"
    assert intersect_directions("sendonly", "recvonly") == "inactive"


@pytest.mark.parametrize(
    ("offered", "ours", "answered"),
    [
        ("a=sendrecv", "sendrecv", "sendrecv"),
        ("a=sendonly", "sendrecv", "recvonly"),
        ("a=recvonly", "sendrecv", "sendonly"),
        ("a=inactive", "sendrecv", "inactive"),
        ("a=sendrecv", "sendonly", "sendonly"),  # we hold while they re-offer
        ("a=sendonly", "sendonly", "inactive"),  # both hold
        ("", "sendrecv", "sendrecv"),  # no attribute: sendrecv
    ],
)
def test_answer_direction_rules(offered: str, ours: str, answered: str) -> None:
    text, params = answer_to(asterisk_reoffer(1523553094, offered), direction=ours)
    assert f"a={answered}\r\n" in text
    assert params.direction == answered


def test_legacy_hold_with_address_zero_is_treated_as_sendonly() -> None:
    held = asterisk_reoffer(1523553094, "a=sendrecv", address="0.0.0.0")
    assert is_hold(parse_sdp(held))
    text, params = answer_to(held)
    assert "a=recvonly\r\n" in text
    assert params.direction == "recvonly" and params.remote_address == "0.0.0.0"


def test_hold_detection() -> None:
    assert not is_hold(parse_sdp(ASTERISK_TRUNK))
    assert is_hold(parse_sdp(asterisk_reoffer(1523553094, "a=sendonly")))
    assert is_hold(parse_sdp(asterisk_reoffer(1523553094, "a=inactive")))
    assert not is_hold(parse_sdp(asterisk_reoffer(1523553094, "a=recvonly")))


# --------------------------------------------------------------------------- our offers


def test_our_offer_and_a_phones_answer() -> None:
    local = LocalSdpSession(PBX_ADDRESS, session_id=9)
    offer = make_offer(local, port=30000, codecs=OURS)
    answer = parse_sdp(
        crlf("""
v=0
o=- 20019 20019 IN IP4 192.168.1.105
s=SDP data
c=IN IP4 192.168.1.105
t=0 0
m=audio 11798 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
""")
    )
    assert negotiated(offer, answer) == MediaParams(
        "PCMA", 8, 101, "192.168.1.105", 11798, "sendrecv", 20
    )


def test_hold_and_resume_reoffers_bump_the_session_version() -> None:
    local = LocalSdpSession(PBX_ADDRESS, session_id=500)
    first = make_offer(local, port=30000, codecs=OURS)
    refresh = make_offer(local, port=30000, codecs=OURS)
    hold = make_offer(local, port=30000, codecs=OURS, direction="sendonly")
    resume = make_offer(local, port=30000, codecs=OURS)
    versions = [offer.origin.session_version for offer in (first, refresh, hold, resume)]
    assert versions == [500, 500, 501, 502]
    assert {offer.origin.session_id for offer in (first, refresh, hold, resume)} == {"500"}
    assert "a=sendonly\r\n" in hold.to_text()

    phone_answer = parse_sdp(
        crlf("""
v=0
o=- 20018 20019 IN IP4 192.168.1.105
s=SDP data
c=IN IP4 192.168.1.105
t=0 0
m=audio 11796 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=recvonly
""")
    )
    params = negotiated(hold, phone_answer)
    assert params.direction == "sendonly"  # we play music on hold, expect nothing back


def test_answers_to_the_far_ends_hold_and_resume_keep_one_session() -> None:
    local = LocalSdpSession(PBX_ADDRESS, session_id=4242)
    offers = [
        ASTERISK_TRUNK,
        asterisk_reoffer(1523553094, "a=sendonly"),
        asterisk_reoffer(1523553094, "a=sendonly"),  # the same re-offer again (refresh)
        asterisk_reoffer(1523553095, "a=sendrecv"),
    ]
    answers = [make_answer(parse_sdp(body), local, port=30000, codecs=OURS) for body in offers]
    assert [answer.origin.session_version for answer in answers] == [4242, 4243, 4243, 4244]
    directions = [
        negotiated(parse_sdp(body), answer, local_is_offerer=False).direction
        for body, answer in zip(offers, answers, strict=True)
    ]
    assert directions == ["sendrecv", "recvonly", "recvonly", "sendrecv"]
