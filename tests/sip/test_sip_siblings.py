"""Sibling links: digest checks of a sibling's INVITEs, its peer identity, correlation ids."""

from __future__ import annotations

from firmware.config.schema import SiblingSiteConfig
from firmware.sip.auth import DigestClient
from firmware.sip.message import Request, parse_message
from firmware.sip.siblings import (
    CORRELATION_HEADER,
    SiblingAuthenticator,
    correlation_of,
    sibling_name,
    sibling_peer,
)

BRANCH = SiblingSiteConfig(name="branch", extensions=("3xx",), host="192.0.2.30", port=5070, password="shared-secret-1",
                           codecs=("PCMA",))  # fmt: skip
LAB = SiblingSiteConfig(name="lab", extensions=("4xx",), host="192.0.2.30", port=5080, password="another-secret")
NO_LINK = SiblingSiteConfig(name="old", extensions=("5xx",))


def invite(extra: str = "") -> Request:
    text = (
        "INVITE sip:201@192.0.2.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.30:5070;branch=z9hG4bK-sib-1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:301@branch>;tag=a1\r\nTo: <sip:201@hq>\r\n"
        "Call-ID: sib-call-1\r\nCSeq: 1 INVITE\r\n" + extra + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def answered(request: Request, challenge: list[str], username: str, password: str) -> Request:
    client = DigestClient(username, password)
    assert client.handle_challenge(401, challenge)
    for name, value in client.authorization_headers("INVITE", str(request.uri)):
        request.headers.add(name, value)
    return request


def authenticator() -> SiblingAuthenticator:
    return SiblingAuthenticator("hq", lambda: (BRANCH, LAB, NO_LINK))


def test_invite_without_credentials_is_challenged_in_our_site_realm() -> None:
    auth = authenticator()
    response = auth.check(invite(), ("192.0.2.30", 5070), BRANCH)
    assert response is not None and response.status == 401
    challenges = response.headers.get_all("WWW-Authenticate")
    assert challenges and all('realm="hq"' in value for value in challenges)
    assert auth.counters["challenged"] == 1


def test_the_sibling_answering_with_its_name_and_the_shared_password_is_accepted() -> None:
    auth = authenticator()
    challenge = auth.check(invite(), ("192.0.2.30", 5070), BRANCH)
    assert challenge is not None
    request = answered(invite(), challenge.headers.get_all("WWW-Authenticate"), "branch", "shared-secret-1")
    assert auth.check(request, ("192.0.2.30", 5070), BRANCH) is None
    assert auth.counters["accepted"] == 1


def test_wrong_password_gets_403_and_is_counted() -> None:
    auth = authenticator()
    challenge = auth.check(invite(), ("192.0.2.30", 5070), BRANCH)
    assert challenge is not None
    request = answered(invite(), challenge.headers.get_all("WWW-Authenticate"), "branch", "not-the-secret")
    response = auth.check(request, ("192.0.2.30", 5070), BRANCH)
    assert response is not None and response.status == 403
    assert auth.counters["refused"] == 1
    assert auth.status()["refused_by_site"] == {"branch": 1}


def test_another_sites_credentials_from_this_address_get_403() -> None:
    """lab shares branch's host: its (right) credentials do not make it branch."""
    auth = authenticator()
    challenge = auth.check(invite(), ("192.0.2.30", 5070), BRANCH)
    assert challenge is not None
    request = answered(invite(), challenge.headers.get_all("WWW-Authenticate"), "lab", "another-secret")
    response = auth.check(request, ("192.0.2.30", 5070), BRANCH)
    assert response is not None and response.status == 403


def test_a_nonce_from_before_a_restart_is_stale_not_refused() -> None:
    before = authenticator()
    challenge = before.check(invite(), ("192.0.2.30", 5070), BRANCH)
    assert challenge is not None
    request = answered(invite(), challenge.headers.get_all("WWW-Authenticate"), "branch", "shared-secret-1")
    after = authenticator()  # a new nonce secret, as after a restart
    response = after.check(request, ("192.0.2.30", 5070), BRANCH)
    assert response is not None and response.status == 401
    assert any("stale=true" in value for value in response.headers.get_all("WWW-Authenticate"))


def test_sibling_is_found_by_address_and_port_first() -> None:
    auth = authenticator()
    assert auth.sibling_for(("192.0.2.30", 5080), exact=True) is LAB
    assert auth.sibling_for(("192.0.2.30", 5070), exact=True) is BRANCH
    assert auth.sibling_for(("192.0.2.30", 40000), exact=True) is None
    assert auth.sibling_for(("192.0.2.30", 40000), exact=False) is BRANCH
    assert auth.sibling_for(("192.0.2.99", 5070), exact=False) is None
    assert auth.by_name("old") is None, "a sibling without a link (no host) takes no calls"


def test_sibling_peer_carries_its_address_codecs_and_our_credentials() -> None:
    peer = sibling_peer(BRANCH, "hq")
    assert peer.name == "sibling:branch"
    assert (peer.host, peer.port, peer.codecs) == ("192.0.2.30", 5070, ("PCMA",))
    assert (peer.username, peer.password) == ("hq", "shared-secret-1")
    assert peer.outbound_strip == 0 and peer.outbound_prepend == "" and peer.caller_id == ""
    assert sibling_name(peer.name) == "branch"
    assert sibling_name("provider") is None


def test_correlation_id_is_taken_from_the_invite_or_made_new() -> None:
    assert correlation_of(invite(f"{CORRELATION_HEADER}: 5f0c2a9e41d34b7b9d2c\r\n")) == "5f0c2a9e41d34b7b9d2c"
    made = correlation_of(invite())
    assert len(made) == 32 and int(made, 16) >= 0
    assert correlation_of(invite()) != made
    garbage = correlation_of(invite(f"{CORRELATION_HEADER}: <script>\r\n"))
    assert len(garbage) == 32 and garbage != "<script>"
