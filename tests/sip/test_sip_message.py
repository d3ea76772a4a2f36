"""SIP message parsing and building: URIs, header fields, framing, responses, robustness, speed."""

from __future__ import annotations

import contextlib
import random
import re
import timeit
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware.sip.headers import Headers, canonical_name
from firmware.sip.headers_values import AuthValue, CSeq, NameAddr, Via
from firmware.sip.message import (
    REASON_PHRASES,
    Request,
    Response,
    SipParseError,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    stream_frame_length,
)
from firmware.sip.uri import AbsoluteUri, SipUri, parse_absolute_uri, parse_uri, uri_equal

SDP = (
    b"v=0\r\n"
    b"o=- 20518 0 IN IP4 192.0.2.55\r\n"
    b"s=SDP data\r\n"
    b"c=IN IP4 192.0.2.55\r\n"
    b"t=0 0\r\n"
    b"m=audio 11424 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=sendrecv\r\n"
)
INVITE_HEAD = (
    "INVITE sip:201@192.0.2.10 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Reception" <sip:200@192.0.2.10>;tag=1928301774\r\n'
    "To: <sip:201@192.0.2.10>\r\n"
    "Call-ID: a84b4c76e66710@192.0.2.55\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:200@192.0.2.55:5060;transport=udp>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO\r\n"
    "Supported: replaces, timer\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
)
INVITE = INVITE_HEAD.format(length=len(SDP)).encode() + SDP

RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKnashds8;received=192.0.2.10\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bK776asdhds;rport=5062\r\n"
    b"From: <sip:200@192.0.2.10>;tag=1928301774\r\n"
    b"To: <sip:201@192.0.2.10>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.55\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:201@192.0.2.66>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def invite(**replace: str) -> bytes:
    """The typical INVITE with some header lines replaced (name -> whole new line or "")."""
    text = INVITE.decode()
    for name, line in replace.items():
        text = re.sub(rf"(?m)^{name}:.*\r\n", line + "\r\n" if line else "", text)
    return text.encode()


def parse_request(data: bytes, **options: bool) -> Request:
    message = parse_message(data, **options)
    assert isinstance(message, Request)
    return message


# -------------------------------------------------------------------------------- URIs


def test_sip_uri_components_are_parsed_and_unescaped() -> None:
    uri = parse_uri(
        "sips:al%69ce:secret@Example.COM:5061;transport=TCP;lr;maddr=239.0.0.1?Subject=hi%20there&Priority=urgent"
    )
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("Example.COM", 5061)
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "239.0.0.1"}
    assert uri.headers == {"Subject": "hi there", "Priority": "urgent"}
    assert uri.transport == "TCP" and uri.loose_route and uri.maddr == "239.0.0.1"
    assert uri.host_port == "Example.COM:5061"
    assert uri.address_of_record == "sips:alice@example.com"


def test_ipv6_references_and_tel_uris() -> None:
    uri = parse_uri("sip:[2001:db8::1]:5070;transport=udp")
    assert (uri.user, uri.host, uri.port) == (None, "[2001:db8::1]", 5070)
    telephone = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (telephone.scheme, telephone.user, telephone.host) == ("tel", "+1-201-555-0123", "")
    assert telephone.params == {"phone-context": "example.com"}
    assert uri_equal(telephone, "tel:+1.201.555.0123;Phone-Context=EXAMPLE.com")
    assert telephone.address_of_record == "tel:+12015550123"


def test_other_schemes_are_absolute_uris_and_parse_uri_wants_416() -> None:
    assert parse_absolute_uri("HTTP://www.example.com/x") == AbsoluteUri(
        "http", "//www.example.com/x"
    )
    with pytest.raises(SipParseError) as caught:
        parse_uri("mailto:alice@example.com")
    assert caught.value.status_hint == 416


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sip:alice:secretword@atlanta.com;transport=tcp",
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sips:1212@gateway.com",
        "sip:alice@192.0.2.4",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:alice;day=tuesday@atlanta.com",
        "sip:[2001:db8::10]:5070;lr",
        "sip:user%20name@example.com",
        "sip:%00@host5.example.com",
        "tel:+358-555-1234567;postd=pp22",
    ],
)
def test_uri_string_round_trip(text: str) -> None:
    assert str(parse_absolute_uri(text)) == text
    assert str(parse_absolute_uri(str(parse_absolute_uri(text)))) == text


# RFC 3261 §19.1.4, the examples it gives.
EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    ("sip:[2001:db8::10]", "sip:[2001:DB8:0::10]"),
]
DIFFERENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice@atlanta.com", "sip:alice:pw@atlanta.com"),
    ("sip:alice@atlanta.com", "http://alice@atlanta.com"),
]


@pytest.mark.parametrize(("first", "second"), EQUIVALENT)
def test_uris_the_rfc_calls_equivalent_compare_equal(first: str, second: str) -> None:
    assert uri_equal(first, second) and uri_equal(second, first)
    assert parse_absolute_uri(first) == parse_absolute_uri(second)


@pytest.mark.parametrize(("first", "second"), DIFFERENT)
def test_uris_the_rfc_calls_different_compare_unequal(first: str, second: str) -> None:
    assert not uri_equal(first, second) and not uri_equal(second, first)
    assert parse_absolute_uri(first) != parse_absolute_uri(second)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sip:", "not a URI"),
        ("alice@example.com", "not a URI"),
        ("sip:@example.com", "empty user"),
        ("sip:alice@", "host"),
        ("sip:alice@example.com:99999", "port"),
        ("sip:alice@example.com:50x", "host or port"),
        ("sip:example.com;;lr", "empty URI parameter"),
        ("sip:ali ce@example.com", "invalid character"),
        ("sip:al%6@example.com", "escape"),
        ("sip:alice@[2001:db8::1", "host"),
        ("sip:alice@[2001:zz8::1]", "host"),
        ("sip:alice@[1:2:3:4:5:6:7:8:9]", "IPv6"),
        ("sip:alice@example.com?Subject", "name=value"),
        ("sip:alice@exa_mple.com", "host"),
        ("tel:+1 555", "telephone number"),
        ("<sip:alice@example.com>", "not a URI"),
    ],
)
def test_malformed_uris_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_absolute_uri(text)
    assert words in caught.value.reason


def test_uri_copy_is_independent() -> None:
    uri = parse_uri("sip:alice@example.com;transport=tcp")
    other = uri.copy()
    other.params["lr"] = None
    assert "lr" not in uri.params
    assert (
        str(SipUri(user="a b", host="example.com", params={"x": "1;2"}))
        == "sip:a%20b@example.com;x=1%3B2"
    )


# ------------------------------------------------------------------------------ Headers


def test_header_names_are_case_insensitive_and_compact_forms_are_canonical() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a.example.com"), ("VIA", "SIP/2.0/TCP b.example.com")])
    headers.add("call-id", "abc@host")
    headers.add("x-custom-thing", "1")
    assert headers.items() == [
        ("Via", "SIP/2.0/UDP a.example.com"),
        ("Via", "SIP/2.0/TCP b.example.com"),
        ("Call-ID", "abc@host"),
        ("x-custom-thing", "1"),
    ]
    assert headers.get_all("Via") == headers.get_all("v") == headers.get_all("vIa")
    assert headers.get("i") == "abc@host"
    assert headers.get("X-Custom-Thing") == "1"
    assert "CALL-ID" in headers and "Route" not in headers
    assert len(headers) == 4
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("k") == "Supported"
    assert canonical_name("X-Mine") == "X-Mine"


def test_set_add_remove_keep_order_and_refresh_parsed_views() -> None:
    headers = Headers({"Via": "SIP/2.0/UDP a.example.com", "To": "<sip:a@b>", "Route": "<sip:r1>"})
    headers.add("Route", "<sip:r2>")
    assert headers.vias[0].host == "a.example.com"
    headers.add("Via", Via("TCP", "proxy.example.com", 5070, {"branch": "z9hG4bKx"}), first=True)
    assert [via.host for via in headers.vias] == ["proxy.example.com", "a.example.com"]
    headers.set("Route", ["<sip:r3;lr>", "<sip:r4;lr>"])
    assert headers.items()[2:] == [
        ("To", "<sip:a@b>"),
        ("Route", "<sip:r3;lr>"),
        ("Route", "<sip:r4;lr>"),
    ]
    assert [str(route.uri) for route in headers.routes] == ["sip:r3;lr", "sip:r4;lr"]
    headers.set("To", NameAddr(parse_uri("sip:bob@example.com"), "Bob", {"tag": "9"}))
    assert headers.get("To") == '"Bob" <sip:bob@example.com>;tag=9'
    assert headers.to_address.tag == "9"
    headers.remove("route")
    assert headers.routes == [] and headers.get("Route") is None
    headers.remove("Nothing-Here")


def test_set_replaces_in_place_and_removes_later_duplicates() -> None:
    headers = Headers([("X-A", "1"), ("X-B", "2"), ("X-A", "3"), ("X-C", "4")])
    headers.set("x-a", "9")
    assert headers.items() == [("x-a", "9"), ("X-B", "2"), ("X-C", "4")]
    headers.set("X-D", 5)
    assert headers.items()[-1] == ("X-D", "5")


def test_header_injection_and_bad_names_are_refused() -> None:
    headers = Headers()
    with pytest.raises(ValueError):
        headers.add("Subject", "hello\r\nVia: evil")
    with pytest.raises(ValueError):
        headers.set("Bad Name", "x")


def test_via_views_with_branch_received_rport_maddr_ttl() -> None:
    headers = Headers(
        [
            (
                "Via",
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;received=198.51.100.7;rport=40000,"
                " SIP/2.0/TCP [2001:db8::5];branch=z9hG4bKdef;maddr=239.1.1.1;ttl=16;rport",
            ),
            ("v", "sip / 2.0 / tls host.example.com : 5061 ; Branch = z9hG4bKghi"),
        ]
    )
    first, second, third = headers.vias
    assert (first.transport, first.host, first.port) == ("UDP", "192.0.2.1", 5060)
    assert (first.branch, first.received, first.rport, first.has_rport) == (
        "z9hG4bKabc",
        "198.51.100.7",
        40000,
        True,
    )
    assert first.rfc3261_branch
    assert (second.host, second.maddr, second.ttl, second.rport, second.has_rport) == (
        "[2001:db8::5]",
        "239.1.1.1",
        16,
        None,
        True,
    )
    assert (third.protocol, third.transport, third.port, third.branch) == (
        "SIP/2.0",
        "TLS",
        5061,
        "z9hG4bKghi",
    )
    assert headers.top_via is first
    assert (
        str(first)
        == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;received=198.51.100.7;rport=40000"
    )
    assert str(Via(host="example.com", params={"branch": "z9hG4bK1", "rport": None})) == (
        "SIP/2.0/UDP example.com;branch=z9hG4bK1;rport"
    )


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("SIP/2.0/UDP", "Via"),
        ("SIP/2.0 192.0.2.1", "Via"),
        ("SIP/2.0/UDP 192.0.2.1;;branch=x", "Via"),
        ("SIP/2.0/UDP 192.0.2.1:70000", "port"),
        ("SIP/2.0/UDP 192.0.2.1, ", "Via"),
        ("SIP/2.0/UDP [::zz]", "Via"),
        ("SIP/2.0/UDP [1::2::3]", "IPv6"),
        ("SIP/2.0/UDP a b", "Via"),
    ],
)
def test_malformed_vias(value: str, words: str) -> None:
    with pytest.raises(SipParseError) as caught:
        Headers({"Via": value}).vias  # noqa: B018
    assert words in caught.value.reason


def test_via_scalar_params_out_of_range_raise_when_read() -> None:
    via = Headers({"Via": "SIP/2.0/UDP h;ttl=300;rport=x"}).top_via
    with pytest.raises(SipParseError):
        via.ttl  # noqa: B018
    with pytest.raises(SipParseError):
        via.rport  # noqa: B018


def test_from_and_to_name_addr_forms() -> None:
    headers = Headers(
        {
            "From": '"Alice \\"A\\" Smith" <sip:alice@atlanta.com>;tag=88sja8x;X-Thing',
            "t": "Bob <sip:bob@biloxi.com;transport=tcp> ; tag = a6c85cf",
        }
    )
    sender = headers.from_address
    assert sender.display_name == 'Alice "A" Smith'
    assert sender.tag == "88sja8x" and sender.params == {"tag": "88sja8x", "x-thing": None}
    assert str(sender) == '"Alice \\"A\\" Smith" <sip:alice@atlanta.com>;tag=88sja8x;x-thing'
    receiver = headers.to_address
    assert receiver.display_name == "Bob"
    assert receiver.tag == "a6c85cf"
    assert isinstance(receiver.uri, SipUri) and receiver.uri.params == {"transport": "tcp"}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('"unterminated <sip:a@b>', "From"),
        ("Bell, Alexander <sip:a@b>", "From"),
        ("<sip:a@b", "From"),
        ("sip:a@b?x=y", "inside <>"),
        ("<sip:a@b> junk", "From"),
        ("", "From"),
    ],
)
def test_malformed_from_values(value: str, words: str) -> None:
    headers = Headers({"From": value})
    with pytest.raises(SipParseError) as caught:
        headers.from_address  # noqa: B018
    assert words in caught.value.reason


def test_a_tag_without_value_is_no_tag() -> None:
    sender = Headers({"From": "<sip:a@b>;tag"}).from_address
    assert sender.tag is None and sender.params == {"tag": None}


def test_call_id_cseq_max_forwards_expires_content_length() -> None:
    headers = Headers(
        {
            "Call-ID": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com",
            "CSeq": "0004711   INVITE",
            "Max-Forwards": "070",
            "Expires": "3600",
            "Min-Expires": "60",
            "l": "42",
        }
    )
    assert headers.call_id == "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com"
    assert headers.cseq == CSeq(4711, "INVITE")
    assert str(headers.cseq) == "4711 INVITE"
    assert headers.max_forwards == 70
    assert (headers.expires, headers.min_expires, headers.content_length) == (3600, 60, 42)
    empty = Headers()
    assert (
        empty.max_forwards,
        empty.expires,
        empty.content_length,
        empty.content_type,
        empty.date,
    ) == (
        None,
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("CSeq", "4294967296 INVITE", "CSeq"),
        ("CSeq", "12", "CSeq"),
        ("CSeq", "-1 INVITE", "CSeq"),
        ("CSeq", "1 INV ITE", "CSeq"),
        ("Max-Forwards", "256", "Max-Forwards"),
        ("Max-Forwards", "seventy", "Max-Forwards"),
        ("Expires", "99999999999", "Expires"),
        ("Content-Length", "five", "Content-Length"),
        ("Content-Length", "1" * 5000, "Content-Length"),
        ("Call-ID", "has space@host", "Call-ID"),
        ("Call-ID", "a@b@c", "Call-ID"),
    ],
)
def test_malformed_scalars(name: str, value: str, words: str) -> None:
    views = {
        "CSeq": "cseq",
        "Max-Forwards": "max_forwards",
        "Expires": "expires",
        "Content-Length": "content_length",
        "Call-ID": "call_id",
    }
    with pytest.raises(SipParseError) as caught:
        getattr(Headers({name: value}), views[name])
    assert words in caught.value.reason


def test_missing_and_repeated_single_fields() -> None:
    with pytest.raises(SipParseError, match="no Call-ID"):
        Headers().call_id  # noqa: B018
    with pytest.raises(SipParseError, match="only one"):
        Headers([("CSeq", "1 INVITE"), ("CSeq", "2 INVITE")]).cseq  # noqa: B018
    with pytest.raises(SipParseError, match="no Via"):
        Headers().top_via  # noqa: B018
    assert Headers([("Content-Length", "5"), ("l", "5")]).content_length == 5


def test_contacts_list_wildcard_expires_and_q() -> None:
    headers = Headers(
        [
            (
                "Contact",
                '"Desk" <sip:201@192.0.2.20:5062;transport=tcp>;expires=3600;q=0.7, <sip:201@192.0.2.21>',
            ),
            ("m", "sip:201@192.0.2.22;expires=60"),
        ]
    )
    first, second, third = headers.contacts
    assert (first.display_name, first.expires, first.q) == ("Desk", 3600, 0.7)
    assert (second.expires, second.q) == (None, None)
    assert isinstance(third.uri, SipUri) and third.uri.params == {}
    assert third.expires == 60
    assert not headers.contact_is_wildcard
    star = Headers({"Contact": " * ", "Expires": "0"})
    assert star.contact_is_wildcard and star.contacts == []
    with pytest.raises(SipParseError, match=r"\*"):
        Headers([("Contact", "*"), ("Contact", "<sip:a@b>")]).contacts  # noqa: B018
    with pytest.raises(SipParseError, match="expires"):
        Headers({"Contact": "<sip:a@b>;expires=280297596632815"}).contacts[0].expires  # noqa: B018
    with pytest.raises(SipParseError, match="q value"):
        Headers({"Contact": "<sip:a@b>;q=1.5"}).contacts[0].q  # noqa: B018
    assert Headers().contacts == []


def test_route_and_record_route_require_angle_brackets() -> None:
    headers = Headers(
        [
            ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
            ("Route", "<sip:edge.example.com;lr;transport=tcp>"),
        ]
    )
    assert [str(value.uri) for value in headers.record_routes] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    (route,) = headers.routes
    assert isinstance(route.uri, SipUri) and route.uri.loose_route and route.uri.transport == "tcp"
    with pytest.raises(SipParseError, match="<URI>"):
        Headers({"Route": "sip:edge.example.com;lr"}).routes  # noqa: B018


def test_content_type_and_accept() -> None:
    headers = Headers(
        {
            "c": 'Multipart/Mixed ; boundary="b 1";charset=utf-8',
            "Accept": "application/sdp;level=1, text/plain",
        }
    )
    content_type = headers.content_type
    assert content_type is not None
    assert (content_type.type, content_type.subtype, content_type.mime) == (
        "multipart",
        "mixed",
        "multipart/mixed",
    )
    assert content_type.params == {"boundary": '"b 1"', "charset": "utf-8"}
    assert [media.mime for media in headers.accept] == ["application/sdp", "text/plain"]
    assert Headers({"Accept": ""}).accept == []
    with pytest.raises(SipParseError):
        Headers({"Content-Type": "application"}).content_type  # noqa: B018


def test_authentication_headers_give_scheme_and_params() -> None:
    headers = Headers(
        [
            (
                "WWW-Authenticate",
                'Digest realm="pbx.example.com", nonce="ab\\"c", qop="auth,auth-int", algorithm=SHA-256, stale=FALSE',
            ),
            ("WWW-Authenticate", 'Digest realm="pbx.example.com", nonce="1", algorithm=MD5'),
            (
                "Authorization",
                'Digest username="201", realm="pbx.example.com", nonce="1", uri="sip:pbx.example.com",'
                ' response="0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, cnonce="x"',
            ),
            ("Proxy-Authenticate", 'Digest realm="trunk", nonce="n"'),
            (
                "Proxy-Authorization",
                'Digest username="u", realm="trunk", nonce="n", uri="sip:x", response="r"',
            ),
        ]
    )
    first, second = headers.www_authenticate
    assert first.scheme == "Digest"
    assert first.params == {
        "realm": "pbx.example.com",
        "nonce": 'ab"c',
        "qop": "auth,auth-int",
        "algorithm": "SHA-256",
        "stale": "FALSE",
    }
    assert second.params["algorithm"] == "MD5"
    (credentials,) = headers.authorization
    assert credentials.params["username"] == "201" and credentials.params["nc"] == "00000001"
    assert headers.proxy_authenticate == [AuthValue("Digest", {"realm": "trunk", "nonce": "n"})]
    assert headers.proxy_authorization[0].params["response"] == "r"
    for bad in ("Digest realm", 'Digest realm="x",', "Digest ,", '"Digest"'):
        with pytest.raises(SipParseError):
            Headers({"Authorization": bad}).authorization  # noqa: B018


def test_option_tag_and_method_lists() -> None:
    headers = Headers(
        [
            ("Allow", "INVITE, ACK,CANCEL , BYE"),
            ("Allow", "OPTIONS"),
            ("k", "replaces, 100rel"),
            ("Supported", ""),
            ("Require", "timer"),
            ("Unsupported", "foo"),
        ]
    )
    assert headers.allow == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]
    assert headers.supported == ["replaces", "100rel"]
    assert headers.require == ["timer"]
    assert headers.unsupported == ["foo"]
    assert headers.proxy_require == []
    with pytest.raises(SipParseError, match="Allow"):
        Headers({"Allow": "INVITE,,BYE"}).allow  # noqa: B018


def test_date_must_be_gmt() -> None:
    assert Headers({"Date": "Sat, 13 Nov 2010 23:29:00 GMT"}).date == datetime(
        2010, 11, 13, 23, 29, tzinfo=UTC
    )
    for bad in ("Sat, 13 Nov 2010 23:29:00 UTC", "Sat, 31 Feb 2010 23:29:00 GMT", "yesterday"):
        with pytest.raises(SipParseError, match="Date"):
            Headers({"Date": bad}).date  # noqa: B018


def test_validate_parses_everything_known() -> None:
    message = parse_message(INVITE)
    message.headers.validate()
    message.headers.add("Require", "a b")
    with pytest.raises(SipParseError, match="Require"):
        message.headers.validate()


# ------------------------------------------------------------------------------ messages


def test_typical_invite_parses() -> None:
    message = parse_request(INVITE)
    headers = message.headers
    assert message.method == "INVITE"
    assert str(message.uri) == "sip:201@192.0.2.10"
    assert headers.top_via.branch == "z9hG4bK776asdhds" and headers.top_via.has_rport
    assert headers.from_address.display_name == "Reception"
    assert headers.from_address.tag == "1928301774"
    assert headers.to_address.tag is None
    assert headers.cseq == CSeq(314159, "INVITE")
    assert headers.max_forwards == 70
    assert headers.allow == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REFER", "NOTIFY", "INFO"]
    assert headers.supported == ["replaces", "timer"]
    assert message.body == SDP


def test_typical_response_parses() -> None:
    message = parse_message(RESPONSE)
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (200, "OK")
    assert [via.rport for via in message.headers.vias] == [None, 5062]
    assert message.headers.vias[0].received == "192.0.2.10"
    assert message.headers.to_address.tag == "a6c85cf"
    assert message.body == b""


def test_to_bytes_round_trip_is_byte_exact_for_canonical_messages() -> None:
    assert parse_message(INVITE).to_bytes() == INVITE
    assert bytes(parse_message(RESPONSE)) == RESPONSE


def test_to_bytes_writes_the_content_length_of_the_body() -> None:
    message = parse_request(INVITE)
    message.body = b"v=0\r\n"
    data = message.to_bytes()
    assert b"\r\nContent-Length: 5\r\n" in data and data.count(b"Content-Length") == 1
    built = Request("OPTIONS", parse_uri("sip:201@pbx"), Headers({"Call-ID": "x"}))
    assert (
        built.to_bytes()
        == b"OPTIONS sip:201@pbx SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    )


def test_compact_forms_are_written_out_in_long_form() -> None:
    data = (
        b"OPTIONS sip:201@pbx SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\n"
        b"t: <sip:c@d>\r\ni: id1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
    )
    out = parse_message(data).to_bytes()
    assert out == (
        b"OPTIONS sip:201@pbx SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>\r\nCall-ID: id1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )


def test_datagram_content_length_shorter_truncates_larger_is_an_error() -> None:
    shorter = parse_message(INVITE + b"garbage after the body")
    assert shorter.body == SDP
    cut = parse_request(invite(**{"Content-Length": "Content-Length: 10"}))
    assert cut.body == SDP[:10]
    with pytest.raises(SipParseError, match="Content-Length") as caught:
        parse_message(INVITE[:-5])
    assert caught.value.status_hint == 400
    without = parse_request(invite(**{"Content-Length": ""}))
    assert without.body == SDP


def test_stream_content_length_is_required_and_governs_the_body() -> None:
    assert parse_message(INVITE, stream=True).body == SDP
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(invite(**{"Content-Length": ""}), stream=True)
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(INVITE[:-1], stream=True)


def test_stream_frame_length_cuts_messages_out_of_a_byte_stream() -> None:
    stream = b"\r\n\r\n" + INVITE + RESPONSE + INVITE[:100]
    first = stream_frame_length(stream)
    assert first == 4 + len(INVITE)
    assert parse_request(stream[:first], stream=True).body == SDP
    rest = stream[first:]
    second = stream_frame_length(rest)
    assert second == len(RESPONSE)
    assert stream_frame_length(rest[second:]) is None
    assert stream_frame_length(INVITE[:-1]) is None
    assert stream_frame_length(b"") is None
    with pytest.raises(SipParseError):
        stream_frame_length(invite(**{"Content-Length": ""}))


def test_stream_frame_length_reads_a_folded_or_compact_content_length() -> None:
    folded = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n  5\r\n\r\nabcde"
    assert stream_frame_length(folded) == len(folded)
    compact = b"OPTIONS sip:a@b SIP/2.0\r\nl : 2\r\n\r\nab--next"
    assert stream_frame_length(compact) == len(compact) - 6
    assert stream_frame_length(b"\r\n\r\n") is None


def test_pathological_values_are_rejected_in_linear_time() -> None:
    long_runs = [" " * 30000 + "x", "\t " * 15000, "a-" * 15000 + "!", '"' + "\\" * 15000]
    for text in long_runs:
        for view in ("from_address", "contacts", "routes", "vias", "cseq", "content_type"):
            headers = Headers.from_fields(
                [
                    (key, key, text)
                    for key in ("from", "contact", "route", "via", "cseq", "content-type")
                ]
            )
            started = timeit.default_timer()
            with contextlib.suppress(SipParseError):
                getattr(headers, view)
            # Linear: a few ms. The bound is loose for a loaded CI worker (0.18 s was seen);
            # quadratic work on 30,000 characters takes many seconds.
            assert timeit.default_timer() - started < 1.0, (view, text[:10])
    folded = b"INVITE sip:a@b SIP/2.0\r\nX: a" + b"\r\n b" * 30000 + b"\r\n\r\n"
    started = timeit.default_timer()
    with pytest.raises(SipParseError):
        parse_message(folded)
    assert timeit.default_timer() - started < 1.0


def test_leading_crlfs_are_ignored() -> None:
    assert parse_request(b"\r\n\r\n\r\n" + INVITE).method == "INVITE"


def test_lws_folding_and_odd_spacing_are_tolerated() -> None:
    data = (
        b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
        b"Via : SIP/2.0/UDP\r\n"
        b"\t192.0.2.7:5060 ;branch=z9hG4bKa\r\n"
        b"FROM:<sip:201@pbx.example.com>;tag=7\r\n"
        b"to  :\r\n <sip:201@pbx.example.com>\r\n"
        b"call-id:  reg1@192.0.2.7  \r\n"
        b"cSeq:1\r\n    REGISTER\r\n"
        b"Contact: <sip:201@192.0.2.7>;expires=3600\r\n"
        b"Content-Length:0\r\n\r\n"
    )
    message = parse_request(data)
    headers = message.headers
    assert headers.top_via.host == "192.0.2.7" and headers.top_via.branch == "z9hG4bKa"
    assert headers.get("To") == "<sip:201@pbx.example.com>"
    assert headers.call_id == "reg1@192.0.2.7"
    assert headers.cseq == CSeq(1, "REGISTER")
    assert headers.contacts[0].expires == 3600


MALFORMED = [
    (b"", "empty line", 400),
    (b"INVITE sip:a@b SIP/2.0\r\n", "empty line", 400),
    (INVITE.replace(b"INVITE sip", b"INVITE  sip", 1), "request line", 400),
    (INVITE.replace(b" SIP/2.0\r\n", b" SIP/2.0 \r\n", 1), "request line", 400),
    (INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia", 1), "version", 505),
    (INVITE.replace(b"SIP/2.0\r\nVia", b"HTTP/1.1\r\nVia", 1), "request line", 400),
    (INVITE.replace(b"INVITE sip", b"INV@ITE sip", 1), "method", 400),
    (INVITE.replace(b"sip:201@192.0.2.10", b"sip:201@192.0.2.10?Subject=x", 1), "Request-URI", 400),
    (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "without ':'", 400),
    (INVITE.replace(b"Max-Forwards:", b"Max Forwards:"), "header name", 400),
    (INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"), "bare CR or LF", 400),
    (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "CSeq method", 400),
    (invite(Via=""), "no Via", 400),
    (invite(To=""), "no To", 400),
    (invite(**{"Call-ID": ""}), "no Call-ID", 400),
    (invite(CSeq=""), "no CSeq", 400),
    (invite(**{"Max-Forwards": "Max-Forwards: 300"}), "Max-Forwards", 400),
    (invite(**{"Content-Length": "Content-Length: 12x"}), "Content-Length", 400),
    (b" Via: x\r\n" + INVITE, "request line", 400),
    (RESPONSE.replace(b"200 OK", b"20 OK"), "status code", None),
    (RESPONSE.replace(b"200 OK", b"700 Huh"), "status code", None),
    (RESPONSE.replace(b"SIP/2.0 200", b"SIP/2.1 200"), "status line", None),
    (RESPONSE.replace(b"CSeq: 314159 INVITE\r\n", b""), "no CSeq", None),
]


@pytest.mark.parametrize(("data", "words", "status_hint"), MALFORMED)
def test_malformed_messages_say_why(data: bytes, words: str, status_hint: int | None) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert words in caught.value.reason, caught.value.reason
    assert caught.value.status_hint == status_hint


# ---------------------------------------------------------------------------- building


def test_make_response_copies_what_rfc3261_8_2_6_says() -> None:
    request = parse_request(
        INVITE.replace(
            b"Max-Forwards: 70\r\n",
            b"Max-Forwards: 70\r\nVia: SIP/2.0/TCP p.example.com;branch=z9hG4bK2\r\nTimestamp: 54\r\n",
        )
    )
    ringing = make_response(request, 180, to_tag="dlg1")
    assert (ringing.status, ringing.reason) == (180, "Ringing")
    assert ringing.headers.get_all("Via") == request.headers.get_all("Via")
    assert ringing.headers.get("From") == request.headers.get("From")
    assert ringing.headers.get("To") == "<sip:201@192.0.2.10>;tag=dlg1"
    assert ringing.headers.call_id == request.headers.call_id
    assert ringing.headers.cseq == request.headers.cseq
    assert "Timestamp" not in ringing.headers and "Contact" not in ringing.headers
    reparsed = parse_message(ringing.to_bytes())
    assert isinstance(reparsed, Response) and reparsed.headers.to_address.tag == "dlg1"
    trying = make_response(request, 100)
    assert trying.headers.get("To") == "<sip:201@192.0.2.10>"
    assert trying.headers.get("Timestamp") == "54"
    busy = make_response(request, 486)
    assert busy.reason == "Busy Here"
    generated = busy.headers.to_address.tag
    assert generated is not None and len(generated) >= 8
    custom = make_response(request, 599, "Custom")
    assert custom.reason == "Custom"


def test_make_response_keeps_an_existing_to_tag() -> None:
    request = parse_request(
        INVITE.replace(b"To: <sip:201@192.0.2.10>", b"To: <sip:201@192.0.2.10>;tag=old")
    )
    assert make_response(request, 200, to_tag="new").headers.to_address.tag == "old"


def test_make_response_from_the_headers_of_a_request_that_failed_to_parse() -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"))
    error = caught.value
    assert error.headers is not None and error.status_hint == 400
    answer = make_response(error.headers, error.status_hint, error.reason)
    data = answer.to_bytes()
    assert data.startswith(b"SIP/2.0 400 CSeq method")
    assert b"Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bK776asdhds;rport\r\n" in data


def test_building_a_request_from_parts_and_reading_it_back() -> None:
    headers = Headers()
    branch = new_branch()
    headers.add("Via", Via("UDP", "192.0.2.10", 5060, {"branch": branch, "rport": None}))
    headers.add("Max-Forwards", 70)
    headers.add(
        "From", NameAddr(parse_uri("sip:100@pbx.example.com"), "Front Desk", {"tag": new_tag()})
    )
    headers.add("To", NameAddr(parse_uri("sip:trunk@carrier.example.net")))
    headers.add("Call-ID", new_call_id("192.0.2.10"))
    headers.add("CSeq", CSeq(1, "INVITE"))
    headers.add("Content-Type", "application/sdp")
    request = Request(
        "INVITE", parse_uri("sip:+4930123456@carrier.example.net;user=phone"), headers, SDP
    )
    message = parse_request(request.to_bytes())
    assert message.headers.top_via.branch == branch
    assert message.headers.from_address.display_name == "Front Desk"
    assert message.headers.content_length == len(SDP)
    assert message.body == SDP


def test_generated_identifiers_are_unique_and_well_formed() -> None:
    branches = {new_branch() for _ in range(1000)}
    tags = {new_tag() for _ in range(1000)}
    call_ids = {new_call_id("pbx.example.com") for _ in range(1000)}
    assert len(branches) == len(tags) == len(call_ids) == 1000
    assert all(branch.startswith("z9hG4bK") and len(branch) >= 16 for branch in branches)
    assert all(re.fullmatch(r"[0-9a-f]{12}", tag) for tag in tags)
    assert all(call_id.endswith("@pbx.example.com") for call_id in call_ids)
    assert "@" not in new_call_id()
    for value in (next(iter(branches)), next(iter(tags))):
        assert Headers({"Via": f"SIP/2.0/UDP h;branch={value}"}).top_via.branch == value
    assert Headers({"Call-ID": next(iter(call_ids))}).call_id in call_ids


def test_every_reason_phrase_builds_a_parsable_status_line() -> None:
    for status, reason in REASON_PHRASES.items():
        response = Response(status, reason, parse_message(RESPONSE).headers)
        parsed = parse_message(response.to_bytes())
        assert isinstance(parsed, Response) and (parsed.status, parsed.reason) == (status, reason)


# ---------------------------------------------------------------------------- robustness

_FUZZ_BYTES = b':;,<>"\\ \t\r\n%@[]=/?0123456789*\x00\xff\xc3'


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buffer:
            buffer.extend(b"INVITE")
        position = rng.randrange(len(buffer))
        operation = rng.randrange(9)
        if operation == 0:
            buffer[position] = rng.randrange(256)
        elif operation == 1:
            buffer.insert(position, rng.choice(_FUZZ_BYTES))
        elif operation == 2:
            del buffer[position : position + rng.randint(1, 12)]
        elif operation == 3:
            buffer[position:position] = bytes(
                rng.choice(_FUZZ_BYTES) for _ in range(rng.randint(1, 6))
            )
        elif operation == 4:
            lines = bytes(buffer).split(b"\r\n")
            line = rng.randrange(len(lines))
            lines.insert(line, lines[rng.randrange(len(lines))])
            buffer = bytearray(b"\r\n".join(lines))
        elif operation == 5:
            del buffer[position:]
        elif operation == 6:
            digits = re.search(rb"[0-9]+", bytes(buffer[position:]))
            if digits is not None:
                start = position + digits.start()
                replacement = rng.choice([b"9" * rng.randint(1, 60), b"-1", b"0" * 30, b""])
                buffer[start : position + digits.end()] = replacement
        elif operation == 7:
            buffer[position:position] = rng.choice(
                [b"\r\n ", b"\r\n", b"\r\n\r\n", b";", b",", b"<", b'"']
            )
        else:
            buffer[position : position + 1] = bytes(buffer[position : position + 1]).swapcase()
    return bytes(buffer)


def _exercise(message: Request | Response) -> None:
    """Read every view and write the message out again: only SipParseError may happen."""
    headers = message.headers
    try:
        headers.validate()
    except SipParseError as error:
        assert error.reason
        return
    for via in headers.vias:
        str(via)
        for view in ("ttl", "rport"):
            with contextlib.suppress(SipParseError):
                getattr(via, view)
    for address in [headers.from_address, headers.to_address, *headers.contacts, *headers.routes]:
        str(address)
        for view in ("expires", "q"):
            with contextlib.suppress(SipParseError):
                getattr(address, view)
    data = message.to_bytes()
    again = parse_message(data)
    assert type(again) is type(message)
    assert again.body == message.body
    assert [name for name, _ in again.headers if name != "Content-Length"] == [
        name for name, _ in headers if name != "Content-Length"
    ]
    assert again.headers.content_length == len(message.body)
    if isinstance(message, Request):
        assert isinstance(again, Request) and again.method == message.method
        assert uri_equal(again.uri, message.uri)


def test_mutated_messages_raise_only_sip_parse_error() -> None:
    torture = Path(__file__).parent / "torture"
    samples = [INVITE, RESPONSE] + [
        (torture / f"{name}.dat").read_bytes()
        for name in (
            "wsinv",
            "intmeth",
            "esc01",
            "escnull",
            "longreq",
            "mpart01",
            "unreason",
            "inv2543",
            "semiuri",
        )
    ]
    rng = random.Random(4475)
    outcomes = {"parsed": 0, "rejected": 0}
    for _ in range(5000):
        data = _mutate(rng, rng.choice(samples))
        for stream in (False, True):
            try:
                message = parse_message(data, stream=stream)
            except SipParseError as error:
                assert error.reason
                assert error.status_hint in (None, 400, 501, 505)
                outcomes["rejected"] += 1
                continue
            outcomes["parsed"] += 1
            _exercise(message)
        with contextlib.suppress(SipParseError):
            stream_frame_length(data)
    print(f"\nfuzz: {outcomes}")
    assert outcomes["parsed"] > 500 and outcomes["rejected"] > 500


# -------------------------------------------------------------------------------- speed


def test_parsing_a_typical_invite_takes_well_under_100_microseconds() -> None:
    assert 550 <= len(INVITE) <= 700
    parse_message(INVITE)
    rounds = 2000
    parse_seconds = (
        min(timeit.repeat(lambda: parse_message(INVITE), number=rounds, repeat=5)) / rounds
    )
    message = parse_message(INVITE)
    build_seconds = min(timeit.repeat(message.to_bytes, number=rounds, repeat=5)) / rounds
    print(
        f"\nparse_message: {parse_seconds * 1e6:.1f} µs, to_bytes: {build_seconds * 1e6:.1f} µs"
        f" for a {len(INVITE)}-byte INVITE"
    )
    assert parse_seconds < 100e-6
    assert build_seconds < 100e-6
