"""RFC 4475 torture messages (and RFC 5118 §4.1/4.2 for IPv6) against the SIP message parser.

The messages are in tests/sip/torture/*.dat, byte for byte with CRLF line ends (see the
README there). Valid ones must parse with the properties the RFC names; invalid ones must
raise SipParseError either when parsed or, for fields parse_message leaves to the handler
(Date, Contact), when Headers.validate() parses the rest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware.sip.headers_values import AuthValue
from firmware.sip.message import (
    Request,
    Response,
    SipParseError,
    make_response,
    parse_message,
    stream_frame_length,
)
from firmware.sip.uri import AbsoluteUri, SipUri, uri_equal

TORTURE = Path(__file__).parent / "torture"


def load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def request(name: str) -> Request:
    message = parse_message(load(name))
    assert isinstance(message, Request)
    message.headers.validate()
    return message


def response(name: str) -> Response:
    message = parse_message(load(name))
    assert isinstance(message, Response)
    message.headers.validate()
    return message


def sip_uri(uri: object) -> SipUri:
    assert isinstance(uri, SipUri)
    return uri


# ------------------------------------------------------------- 3.1.1 valid messages


def test_wsinv_short_tortuous_invite_is_well_formed() -> None:
    message = request("wsinv")
    headers = message.headers
    assert message.method == "INVITE"
    uri = sip_uri(message.uri)
    assert (uri.user, uri.host, uri.params) == (
        "vivekg",
        "chair-dnrc.example.com",
        {"unknownparam": None},
    )
    to = headers.to_address
    assert to.display_name is None
    assert to.tag == "1918181833n"
    assert sip_uri(to.uri).user == "vivekg"
    sender = headers.from_address
    assert sender.display_name == 'J Rosenberg \\"'
    assert sender.tag == "98asjd8"
    assert sip_uri(sender.uri).host == "example.com"
    assert headers.max_forwards == 68
    assert headers.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert headers.content_length == 150
    assert (headers.cseq.number, headers.cseq.method) == (9, "INVITE")
    vias = headers.vias
    assert [(via.transport, via.host, via.branch) for via in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert all(via.protocol == "SIP/2.0" for via in vias)
    assert headers.get("Subject") == ""
    assert headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert headers.get("unknownheaderwithunusualvalue") == ";;,,;;,;"
    assert headers.content_type is not None and headers.content_type.mime == "application/sdp"
    (route,) = headers.routes
    assert sip_uri(route.uri).params == {
        "lr": None,
        "unknownwith": "value",
        "unknown-no-value": None,
    }
    (contact,) = headers.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert contact.q == 0.33
    assert len(message.body) == 150 and message.body.startswith(b"v=0\r\n")


def test_intmeth_wide_range_of_characters_is_well_formed() -> None:
    message = request("intmeth")
    headers = message.headers
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = sip_uri(message.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert headers.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    to = headers.to_address
    assert to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert sip_uri(to.uri).user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    sender = headers.from_address
    assert sender.display_name == "token1~` token2'+_ token3*%!.-"
    assert sender.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert sender.tag == "_token~1'+`*%!-."
    assert headers.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert headers.cseq.method == message.method
    assert headers.cseq.number == 139122385
    assert headers.max_forwards == 255
    assert headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escapes_are_expanded_in_uris_only() -> None:
    message = request("esc01")
    headers = message.headers
    uri = sip_uri(message.uri)
    assert (uri.user, uri.host) == ("sips:user@example.com", "example.net")
    assert str(uri) == "sip:sips%3Auser%40example.com@example.net"
    assert sip_uri(headers.to_address.uri).user == "user"
    assert sip_uri(headers.from_address.uri).user == "I have spaces"
    assert headers.call_id == "esc01.239409asdfakjkn23onasd0-3234"
    assert headers.content_type is not None and headers.content_type.mime == "application/sdp"
    (contact,) = headers.contacts
    contact_uri = sip_uri(contact.uri)
    assert contact_uri.user == "caller"
    # Unescaping is never recursive: "v%61lue%25%34%31" is "value%41", not "valueA".
    assert contact_uri.params == {"lr": None, "name": "value%41"}
    assert uri_equal(contact_uri, "sip:caller@host5.example.net;lr;name=value%2541")


def test_escnull_keeps_escaped_nulls_in_user_parts() -> None:
    headers = request("escnull").headers
    assert sip_uri(headers.to_address.uri).user == "null-\x00-null"
    assert sip_uri(headers.from_address.uri).user == "null-\x00-null"
    first, second = headers.contacts
    assert sip_uri(first.uri).user == "\x00"
    assert sip_uri(second.uri).user == "\x00\x00"
    assert not uri_equal(first.uri, second.uri)
    assert str(first.uri) == "sip:%00@host5.example.com"
    assert headers.content_length == 0


def test_esc02_percent_is_not_an_escape_outside_uris() -> None:
    message = request("esc02")
    headers = message.headers
    assert message.method == "RE%47IST%45R"
    assert message.method != "REGISTER"
    assert headers.to_address.display_name == "%Z%45"
    assert headers.from_address.display_name == "%Z%45"
    assert headers.top_via.branch == "z9hG4bK209%fzsnel234"
    assert headers.cseq.method == "RE%47IST%45R"
    assert [sip_uri(contact.uri).user for contact in headers.contacts] == ["alias1", "alias3"]
    assert headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_display_name_without_space_before_bracket_is_accepted() -> None:
    sender = request("lwsdisp").headers.from_address
    assert sender.display_name == "caller"
    assert sender.tag == "323"


def test_longreq_long_values_and_many_vias() -> None:
    headers = request("longreq").headers
    to = headers.to_address
    assert to.display_name == ("I have a user name of " + "extreme" * 10 + " proportion")
    to_uri = sip_uri(to.uri)
    assert to_uri.port == 6000
    assert to_uri.params["unknownparam1"] == "very" + "long" * 20 + "value"
    assert to_uri.params["long" + "paramname" + "name" * 24] == "shortvalue"
    assert to_uri.params["very" + "long" * 25 + "parameternamewithnovalue"] is None
    sender = headers.from_address
    assert sip_uri(sender.uri).user == "amazinglylongcallername" * 5
    assert sender.tag is not None and sender.tag.startswith("1298298") and len(sender.tag) > 150
    assert len(sender.params) == 3
    assert headers.call_id == "longreq.one" + "really" * 20 + "longcallid"
    vias = headers.vias
    assert len(vias) == 34
    assert [via.host for via in vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert vias[33].received == "192.0.2.5"
    assert vias[33].branch == "very" + "long" * 50 + "branchvalue"
    assert not vias[33].rfc3261_branch
    name = "Unknown-" + "Long" * 20 + "-Name"
    assert headers.get(name.lower()) == (
        "unknown-"
        + "long" * 20
        + "-value; unknown-"
        + "long" * 20
        + "-parameter-name = unknown-"
        + "long" * 20
        + "-parameter-value"
    )
    assert headers.content_length == 150


def test_dblreq_extra_octets_after_the_body_are_ignored_on_udp() -> None:
    message = request("dblreq")
    assert message.method == "REGISTER"
    assert message.body == b""
    assert message.headers.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert message.headers.cseq.method == "REGISTER"
    assert b"INVITE" not in message.to_bytes()


def test_dblreq_on_a_stream_is_two_frames() -> None:
    data = load("dblreq")
    first = stream_frame_length(data)
    assert first is not None
    register = parse_message(data[:first], stream=True)
    assert isinstance(register, Request) and register.method == "REGISTER"
    assert data[first:].startswith(b"INVITE ")


def test_semiuri_user_part_may_carry_a_semicolon() -> None:
    message = request("semiuri")
    uri = sip_uri(message.uri)
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == {}
    assert [media.mime for media in message.headers.accept] == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_every_transport_token_is_accepted() -> None:
    vias = request("transports").headers.vias
    assert [via.transport for via in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert [via.host for via in vias] == [f"t{n}.example.com" for n in range(1, 6)]


def test_mpart01_binary_body_with_nulls_is_framed_by_content_length() -> None:
    message = request("mpart01")
    headers = message.headers
    assert len(message.body) == 553
    assert b"\x00" in message.body
    assert message.body.endswith(b"--7a9cbec02ceef655--\r\n")
    content_type = headers.content_type
    assert content_type is not None and content_type.mime == "multipart/mixed"
    assert content_type.params == {"boundary": "7a9cbec02ceef655"}
    via = headers.top_via
    assert (via.host, via.port, via.has_rport, via.rport) == ("127.0.0.1", 5070, True, None)
    (route,) = headers.routes
    assert (sip_uri(route.uri).host, sip_uri(route.uri).port) == ("127.0.0.1", 5080)
    assert headers.date == datetime(2005, 10, 15, 4, 44, 56, tzinfo=UTC)
    assert headers.get("User-Agent") == "SIPimp.org/0.2.5 (curses)"


def test_unreason_reason_phrase_may_be_utf8() -> None:
    message = response("unreason")
    assert message.status == 200
    assert message.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert message.headers.to_address.tag == "2229"
    assert len(message.body) == 154


def test_noreason_empty_reason_phrase_is_accepted() -> None:
    message = response("noreason")
    assert (message.status, message.reason) == (100, "")
    assert message.headers.to_address.tag == "902jndnke3"


VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
    "semiuri", "transports", "mpart01", "unreason", "noreason",
    # 3.2 and 3.3: syntactically valid, the application decides.
    "badbranch", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "bcast",
    "zeromf", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543", "ipv6-good",
]  # fmt: skip


@pytest.mark.parametrize("name", VALID)
def test_valid_torture_messages_survive_a_round_trip(name: str) -> None:
    first = parse_message(load(name))
    second = parse_message(first.to_bytes())
    assert type(second) is type(first)
    assert second.headers.items() == [
        (header, str(len(first.body)) if header == "Content-Length" else value)
        for header, value in first.headers.items()
    ] + ([] if "Content-Length" in first.headers else [("Content-Length", str(len(first.body)))])
    assert second.body == first.body
    if isinstance(first, Request):
        assert isinstance(second, Request)
        assert (second.method, str(second.uri)) == (first.method, str(first.uri))
        assert uri_equal(second.uri, first.uri)


# ----------------------------------------------------------- 3.1.2 invalid messages

# name -> (status hint, words the reason must contain). Raised by parse_message itself.
INVALID_AT_PARSE = {
    "badinv01": (400, "Via"),
    "clerr": (400, "Content-Length"),
    "ncl": (400, "Content-Length"),
    "scalar02": (400, "CSeq"),
    "scalarlg": (None, "CSeq"),
    "quotbal": (400, "To"),
    "ltgtruri": (400, "URI"),
    "lwsruri": (400, "request line"),
    "lwsstart": (400, "request line"),
    "trws": (400, "request line"),
    "escruri": (400, "Request-URI"),
    "badaspec": (400, "To"),
    "baddn": (400, "From"),
    "badvers": (505, "version"),
    "mismatch01": (400, "CSeq method"),
    "mismatch02": (501, "CSeq method"),
    "bigcode": (None, "status code"),
    # 3.3: incomplete or contradictory header sets.
    "insuf": (400, "From"),
    "multi01": (400, "only one"),
    "mcl01": (400, "Content-Length"),
    "ipv6-bad": (400, "host"),
}
# Fields parse_message leaves to the handler: flagged by Headers.validate().
INVALID_AT_VALIDATE = {
    "baddate": "Date",
    "regbadct": "Contact",
}


@pytest.mark.parametrize(("name", "expected"), INVALID_AT_PARSE.items())
def test_invalid_torture_messages_are_rejected(name: str, expected: tuple[int | None, str]) -> None:
    status_hint, words = expected
    with pytest.raises(SipParseError) as caught:
        parse_message(load(name))
    assert caught.value.status_hint == status_hint
    assert words in caught.value.reason


@pytest.mark.parametrize(("name", "words"), INVALID_AT_VALIDATE.items())
def test_invalid_torture_fields_are_flagged_by_validate(name: str, words: str) -> None:
    message = parse_message(load(name))
    with pytest.raises(SipParseError) as caught:
        message.headers.validate()
    assert words in caught.value.reason


def test_a_rejected_request_still_offers_its_headers_for_a_400() -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(load("badinv01"))
    headers = caught.value.headers
    assert headers is not None
    assert headers.get("Call-ID") == "badinv01.0ha0isndaksdjasdf3234nas"


def test_badvers_keeps_the_headers_needed_for_a_505() -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(load("badvers"))
    assert caught.value.status_hint == 505
    assert caught.value.headers is not None
    answer = make_response(caught.value.headers, 505)
    assert answer.to_bytes().startswith(b"SIP/2.0 505 Version Not Supported\r\nVia: SIP/7.0/UDP")
    assert answer.headers.call_id == "badvers.31417@c.example.com"


def test_clerr_on_a_stream_waits_for_the_rest_of_the_body() -> None:
    assert stream_frame_length(load("clerr")) is None


def test_ncl_on_a_stream_cannot_be_framed() -> None:
    with pytest.raises(SipParseError):
        stream_frame_length(load("ncl"))


# --------------------------------------------- 3.2 / 3.3 transaction and application layer


def test_badbranch_magic_cookie_alone_is_not_an_rfc3261_branch() -> None:
    via = request("badbranch").headers.top_via
    assert via.branch == "z9hG4bK"
    assert not via.rfc3261_branch


def test_unkscm_and_novelsc_request_uris_of_unknown_schemes_parse_for_a_416() -> None:
    unknown = request("unkscm").uri
    assert unknown == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")
    novel = request("novelsc").uri
    assert novel == AbsoluteUri("soap.beep", "//192.0.2.103:3002")


def test_unksm2_unknown_schemes_in_to_from_and_contact() -> None:
    headers = request("unksm2").headers
    assert headers.to_address.uri == AbsoluteUri("isbn", "2983792873")
    assert headers.from_address.uri == AbsoluteUri("http", "//www.example.com")
    assert headers.from_address.tag == "3234233"
    assert [contact.uri for contact in headers.contacts] == [AbsoluteUri("name", "John_Smith")]


def test_bext01_unknown_extensions_are_listed_for_a_420() -> None:
    headers = request("bext01").headers
    assert headers.require == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert headers.proxy_require == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]


def test_invut_unknown_body_type_is_carried_for_a_415() -> None:
    message = request("invut")
    assert message.headers.content_type is not None
    assert message.headers.content_type.mime == "application/unknownformat"
    assert message.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def test_regaut01_unknown_authorization_scheme_is_parsed() -> None:
    assert request("regaut01").headers.authorization == [
        AuthValue("NoOneKnowsThisScheme", {"opaque-data": "here"})
    ]


def test_bcast_response_via_broadcast_address_is_parsed_for_the_caller_to_drop() -> None:
    vias = response("bcast").headers.vias
    assert vias[1].host == "255.255.255.255"


def test_zeromf_max_forwards_zero_is_a_valid_value() -> None:
    assert request("zeromf").headers.max_forwards == 0


def test_cparam01_parameter_after_addr_spec_belongs_to_the_contact() -> None:
    (contact,) = request("cparam01").headers.contacts
    assert contact.params == {"unknownparam": None}
    assert sip_uri(contact.uri).params == {}
    assert sip_uri(contact.uri).user == "+19725552222"


def test_cparam02_parameter_inside_brackets_belongs_to_the_uri() -> None:
    (contact,) = request("cparam02").headers.contacts
    assert contact.params == {}
    assert sip_uri(contact.uri).params == {"unknownparam": None}


def test_regescrt_escaped_header_in_a_bracketed_contact_is_parsed() -> None:
    (contact,) = request("regescrt").headers.contacts
    assert sip_uri(contact.uri).headers == {"Route": "<sip:sip.example.com>"}


def test_sdp01_accept_of_an_unknown_type() -> None:
    assert [media.mime for media in request("sdp01").headers.accept] == ["text/nobodyknowsthis"]


def test_inv2543_rfc2543_request_without_length_or_max_forwards() -> None:
    message = request("inv2543")
    headers = message.headers
    assert headers.max_forwards is None
    assert headers.content_length is None
    assert message.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert headers.top_via.branch is None and not headers.top_via.rfc3261_branch
    assert headers.from_address.tag is None
    # Not in <>: ";user=phone" is a parameter of the To header field, not of its URI.
    assert headers.to_address.params == {"user": "phone"}
    assert sip_uri(headers.to_address.uri).params == {}
    assert sip_uri(headers.from_address.uri).params == {"user": "phone"}
    (record_route,) = headers.record_routes
    assert sip_uri(record_route.uri).maddr == "ss1.example.com"


def test_inv2543_needs_a_content_length_on_a_stream() -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(load("inv2543"), stream=True)


def test_ipv6_references_in_request_uri_via_and_contact() -> None:
    message = request("ipv6-good")
    assert sip_uri(message.uri).host == "[2001:db8::10]"
    assert message.headers.top_via.host == "[2001:db8::9:1]"
    (contact,) = message.headers.contacts
    assert contact.display_name == "Caller"
    assert sip_uri(contact.uri).host == "[2001:db8::1]"
