"""SIP digest authentication: published test vectors, then our server and client together."""

from __future__ import annotations

import pytest

from firmware.sip import auth
from firmware.sip.auth import (
    SUPPORTED_ALGORITHMS,
    Accepted,
    AuthHeaderError,
    DigestClient,
    DigestServer,
    Failed,
    NoCredentials,
    Stale,
    StoredCredential,
    digest_response,
    format_auth_header,
    ha1,
    parse_auth_header,
    quote_string,
)

REALM = "pbx.office.example"
REGISTER_URI = "sip:pbx.office.example"

# RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    "nc": "00000001",
    "qop": "auth",
    "uri": "/dir/index.html",
    "method": "GET",
}
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def rfc7616_response(algorithm: str) -> str:
    vector = RFC7616
    return digest_response(
        algorithm=algorithm,
        ha1_hex=ha1(vector["username"], vector["realm"], vector["password"], algorithm),
        nonce=vector["nonce"],
        method=vector["method"],
        uri=vector["uri"],
        qop=vector["qop"],
        nc=vector["nc"],
        cnonce=vector["cnonce"],
    )


def params_of(value: str) -> dict[str, str]:
    [(scheme, params)] = parse_auth_header(value)
    assert scheme == "Digest"
    return params


def accounts(**passwords: str) -> dict[str, StoredCredential]:
    return {
        username: StoredCredential.from_password(username, REALM, password)
        for username, password in passwords.items()
    }


def make_server(**options) -> DigestServer:
    table = accounts(alice="correct horse", bob="battery staple")
    return DigestServer(REALM, table.get, secret=b"k" * 32, **options)


def registered_client(server: DigestServer, now: float, password: str = "correct horse"):
    """A client that has taken one 401 from `server` and the headers of its first answer."""
    client = DigestClient("alice", password)
    assert client.handle_challenge(401, server.challenge(now))
    return client, client.authorization_headers("REGISTER", REGISTER_URI)


def values(headers: list[tuple[str, str]], name: str = "Authorization") -> list[str]:
    return [value for header_name, value in headers if header_name == name]


# ---------------------------------------------------------------------------- RFC vectors


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_responses(algorithm):
    assert rfc7616_response(algorithm) == RFC7616_RESPONSES[algorithm]


def test_rfc2617_example_response():
    # RFC 2617 §3.5 (the password is "Circle Of Life" there, capital O).
    response = digest_response(
        algorithm="MD5",
        ha1_hex=ha1("Mufasa", "testrealm@host.com", "Circle Of Life"),
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_example_response_without_qop():
    response = digest_response(
        algorithm="MD5",
        ha1_hex=ha1("Mufasa", "testrealm@host.com", "CircleOfLife"),
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
    )
    assert response == "1949323746fe6a43ef61f9606e7febea"


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_client_answers_the_rfc7616_challenge_like_the_rfc(algorithm):
    vector = RFC7616
    challenge = (
        f'Digest realm="{vector["realm"]}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{vector["nonce"]}", opaque="{vector["opaque"]}"'
    )
    client = DigestClient(
        vector["username"], vector["password"], make_cnonce=lambda: vector["cnonce"]
    )
    assert client.handle_challenge(401, [challenge])
    [(header_name, value)] = client.authorization_headers(vector["method"], vector["uri"])
    assert header_name == "Authorization"
    assert params_of(value) == {
        "username": "Mufasa",
        "realm": "http-auth@example.org",
        "nonce": vector["nonce"],
        "uri": "/dir/index.html",
        "response": RFC7616_RESPONSES[algorithm],
        "algorithm": algorithm,
        "cnonce": vector["cnonce"],
        "qop": "auth",
        "nc": "00000001",
        "opaque": vector["opaque"],
    }
    assert "qop=auth," in value and "nc=00000001" in value  # unquoted, as RFC 7616 writes them


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_server_computes_the_rfc7616_answer_and_calls_the_foreign_nonce_stale(algorithm):
    vector = RFC7616
    table = {
        "Mufasa": StoredCredential.from_password("Mufasa", vector["realm"], vector["password"])
    }
    server = DigestServer(vector["realm"], table.get)
    header = format_auth_header(
        "Digest",
        {
            "username": "Mufasa",
            "realm": vector["realm"],
            "uri": vector["uri"],
            "algorithm": algorithm,
            "nonce": vector["nonce"],
            "nc": vector["nc"],
            "cnonce": vector["cnonce"],
            "qop": "auth",
            "response": RFC7616_RESPONSES[algorithm],
        },
        bare=("algorithm", "nc", "qop"),
    )
    # The password is proven right; the nonce is not one this server made, so: new nonce.
    result = server.verify(vector["method"], vector["uri"], [header], now=0.0)
    assert result == Stale("Mufasa", "nonce not issued here")


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
def test_round_trip_for_each_algorithm(algorithm):
    server = make_server(algorithms=[algorithm])
    _client, headers = registered_client(server, now=10.0)
    assert params_of(values(headers)[0])["algorithm"] == algorithm
    assert server.verify("REGISTER", REGISTER_URI, values(headers), now=11.0) == Accepted(
        "alice", algorithm
    )


def test_server_offers_sha256_first_then_md5_and_client_takes_sha256():
    server = make_server()
    challenges = server.challenge(now=0.0)
    assert [params_of(value)["algorithm"] for value in challenges] == ["SHA-256", "MD5"]
    first = params_of(challenges[0])
    assert first["qop"] == "auth" and first["realm"] == REALM and first["opaque"]
    assert "stale" not in first
    assert params_of(challenges[0])["nonce"] == params_of(challenges[1])["nonce"]
    _client, headers = registered_client(server, now=0.0)
    assert server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0) == Accepted(
        "alice", "SHA-256"
    )


def test_client_takes_sha256_even_when_md5_is_listed_first():
    server = make_server()
    challenges = list(reversed(server.challenge(now=0.0)))
    client = DigestClient("alice", "correct horse")
    assert client.handle_challenge(401, challenges)
    [(_name, value)] = client.authorization_headers("REGISTER", REGISTER_URI)
    assert params_of(value)["algorithm"] == "SHA-256"


def test_client_takes_md5_when_nothing_else_is_offered():
    server = make_server(algorithms=["MD5"])
    _client, headers = registered_client(server, now=0.0)
    assert params_of(values(headers)[0])["algorithm"] == "MD5"


def test_client_ignores_algorithms_it_does_not_know():
    client = DigestClient("alice", "pw")
    assert not client.handle_challenge(401, ['Digest realm="r", nonce="n", algorithm=SHA-1-NEW'])
    assert client.authorization_headers("REGISTER", REGISTER_URI) == []


def test_later_requests_reuse_the_nonce_with_rising_nonce_count():
    server = make_server()
    client, headers = registered_client(server, now=0.0)
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(headers), now=0.5), Accepted)
    invite_uri = "sip:201@pbx.office.example"
    again = client.authorization_headers("INVITE", invite_uri)
    assert params_of(values(again)[0])["nc"] == "00000002"
    assert server.verify("INVITE", invite_uri, values(again), now=1.0) == Accepted(
        "alice", "SHA-256"
    )


def test_proxy_challenge_is_answered_with_proxy_authorization():
    server = make_server()
    client = DigestClient("alice", "correct horse")
    assert client.handle_challenge(407, server.challenge(now=0.0))
    headers = client.authorization_headers("INVITE", "sip:200@pbx.office.example")
    assert [name for name, _value in headers] == ["Proxy-Authorization"]
    assert isinstance(
        server.verify(
            "INVITE", "sip:200@pbx.office.example", values(headers, "Proxy-Authorization"), now=1.0
        ),
        Accepted,
    )


def test_client_rejects_a_status_that_is_not_a_challenge():
    with pytest.raises(ValueError):
        DigestClient("alice", "pw").handle_challenge(403, [])


def test_client_for_one_realm_ignores_other_realms():
    server = make_server()
    client = DigestClient("alice", "correct horse", realm="elsewhere")
    assert not client.handle_challenge(401, server.challenge(now=0.0))


def test_auth_int_protects_the_body():
    server = make_server(qop_options=["auth-int"])
    client = DigestClient("alice", "correct horse")
    assert client.handle_challenge(401, server.challenge(now=0.0))
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    headers = client.authorization_headers("INVITE", "sip:200@pbx.office.example", body)
    assert params_of(values(headers)[0])["qop"] == "auth-int"
    uri = "sip:200@pbx.office.example"
    tampered = server.verify("INVITE", uri, values(headers), now=1.0, body=body + b"a=x\r\n")
    assert tampered == Failed("alice", "wrong response", True)
    assert server.verify("INVITE", uri, values(headers), now=1.0, body=body) == Accepted(
        "alice", "SHA-256"
    )


def test_session_algorithms_round_trip():
    server = make_server(algorithms=["SHA-256-sess"])
    _client, headers = registered_client(server, now=0.0)
    assert params_of(values(headers)[0])["algorithm"] == "SHA-256-sess"
    assert server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0) == Accepted(
        "alice", "SHA-256-sess"
    )


# ---------------------------------------------------------------------------- stale nonces


def test_expired_nonce_is_stale_and_the_client_retries_without_asking():
    server = make_server(nonce_lifetime=300.0)
    client, headers = registered_client(server, now=0.0)
    assert server.verify("REGISTER", REGISTER_URI, values(headers), now=300.0) == Accepted(
        "alice", "SHA-256"
    )
    later = client.authorization_headers("REGISTER", REGISTER_URI)
    assert server.verify("REGISTER", REGISTER_URI, values(later), now=300.5) == Stale(
        "alice", "nonce expired"
    )
    stale_challenge = server.challenge(now=300.5, stale=True)
    assert all(params_of(value)["stale"] == "true" for value in stale_challenge)
    assert "stale=true" in stale_challenge[0]
    assert client.handle_challenge(401, stale_challenge, values(later))
    retry = client.authorization_headers("REGISTER", REGISTER_URI)
    assert params_of(values(retry)[0])["nc"] == "00000001"
    assert server.verify("REGISTER", REGISTER_URI, values(retry), now=301.0) == Accepted(
        "alice", "SHA-256"
    )


def test_wrong_password_with_an_expired_nonce_is_a_failure_not_stale():
    server = make_server()
    _client, headers = registered_client(server, now=0.0, password="guess")
    result = server.verify("REGISTER", REGISTER_URI, values(headers), now=1000.0)
    assert result == Failed("alice", "wrong response", True)


def test_nonce_from_the_future_is_stale():
    server = make_server()
    _client, headers = registered_client(server, now=100.0)
    assert server.verify("REGISTER", REGISTER_URI, values(headers), now=50.0) == Stale(
        "alice", "nonce issued in the future"
    )


def test_nonce_from_before_a_restart_is_stale():
    table = accounts(alice="correct horse")
    before = DigestServer(REALM, table.get)
    after = DigestServer(REALM, table.get)  # a new random secret
    _client, headers = registered_client(before, now=0.0)
    # The phone echoes the old opaque too: still only stale, so it retries without asking.
    assert after.verify("REGISTER", REGISTER_URI, values(headers), now=1.0) == Stale(
        "alice", "nonce not issued here"
    )


def test_nonce_forgotten_from_the_replay_table_is_stale_not_accepted():
    server = make_server(max_tracked_nonces=1)
    first_client, first = registered_client(server, now=0.0)
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(first), now=0.1), Accepted)
    _second_client, second = registered_client(server, now=1.0)
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(second), now=1.1), Accepted)
    # The first nonce was pushed out of the table; its next use cannot be checked for replay.
    again = first_client.authorization_headers("REGISTER", REGISTER_URI)
    assert server.verify("REGISTER", REGISTER_URI, values(again), now=2.0) == Stale(
        "alice", "nonce no longer tracked"
    )
    assert server.counters["nonces_forgotten"] == 1


# ---------------------------------------------------------------------------- replays


def test_replayed_nonce_count_is_rejected():
    server = make_server()
    _client, headers = registered_client(server, now=0.0)
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0), Accepted)
    assert server.verify("REGISTER", REGISTER_URI, values(headers), now=2.0) == Failed(
        "alice", "replayed nonce count", True
    )
    assert server.counters["replays"] == 1


def test_reordered_nonce_counts_are_accepted_once_each():
    server = make_server()
    client, _first = registered_client(server, now=0.0)
    answers = [client.authorization_headers("REGISTER", REGISTER_URI) for _ in range(3)]
    # nc 2, 3, 4 arrive as 4, 2, 3: each is new once, and a second copy is a replay.
    for headers in (answers[2], answers[0], answers[1]):
        assert isinstance(
            server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0), Accepted
        )
    for headers in answers:
        result = server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0)
        assert result == Failed("alice", "replayed nonce count", True)


def test_nonce_count_too_far_behind_is_a_replay():
    server = make_server()
    client, first = registered_client(server, now=0.0)
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(first), now=0.0), Accepted)
    held_back = client.authorization_headers("REGISTER", REGISTER_URI)  # nc 2, never seen
    for _ in range(auth.REPLAY_WINDOW):
        latest = client.authorization_headers("REGISTER", REGISTER_URI)
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(latest), now=1.0), Accepted)
    assert server.verify("REGISTER", REGISTER_URI, values(held_back), now=1.0) == Failed(
        "alice", "replayed nonce count", True
    )


def test_without_qop_a_reused_nonce_is_stale_and_the_client_recovers():
    server = make_server(qop_options=[])
    client, headers = registered_client(server, now=0.0)
    params = params_of(values(headers)[0])
    assert "qop" not in params and "nc" not in params and "cnonce" not in params
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0), Accepted)
    again = client.authorization_headers("REGISTER", REGISTER_URI)
    assert server.verify("REGISTER", REGISTER_URI, values(again), now=2.0) == Stale(
        "alice", "nonce reused without qop"
    )
    assert client.handle_challenge(401, server.challenge(now=2.0, stale=True), values(again))
    retry = client.authorization_headers("REGISTER", REGISTER_URI)
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(retry), now=2.5), Accepted)


def test_server_can_insist_on_qop():
    strict = make_server(allow_no_qop=False)
    lenient = make_server(qop_options=[])
    _client, headers = registered_client(lenient, now=0.0)
    result = strict.verify("REGISTER", REGISTER_URI, values(headers), now=1.0)
    assert result == Failed("alice", "qop required", True)


# ---------------------------------------------------------------------------- tampering


def _replace(value: str, name: str, new: str) -> str:
    params = params_of(value)
    assert name in params
    params[name] = new
    return format_auth_header("Digest", params, bare=("algorithm", "qop", "nc"))


@pytest.mark.parametrize(
    ("name", "new"),
    [
        ("username", "bob"),
        ("nonce", "A" * 43),
        ("cnonce", "0123456789abcdef"),
        ("nc", "00000009"),
        ("qop", "auth-int"),
        ("response", "0" * 64),
        ("algorithm", "MD5"),
        ("opaque", "0" * 32),
        ("uri", "sip:evil.example"),
    ],
)
def test_tampered_field_is_rejected(name, new):
    server = make_server()
    _client, headers = registered_client(server, now=0.0)
    tampered = _replace(values(headers)[0], name, new)
    result = server.verify("REGISTER", REGISTER_URI, [tampered], now=1.0)
    assert isinstance(result, Failed)
    # The untouched original still works: the failure consumed nothing.
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0), Accepted)


def test_credentials_for_another_request_uri_or_method_are_rejected():
    server = make_server()
    _client, headers = registered_client(server, now=0.0)
    assert server.verify("REGISTER", "sip:other.example", values(headers), now=1.0) == Failed(
        "alice", "digest uri is not the request-uri", True
    )
    assert server.verify("INVITE", REGISTER_URI, values(headers), now=1.0) == Failed(
        "alice", "wrong response", True
    )


def test_tampered_realm_is_no_credentials_for_us():
    server = make_server()
    _client, headers = registered_client(server, now=0.0)
    tampered = _replace(values(headers)[0], "realm", "other.example")
    assert server.verify("REGISTER", REGISTER_URI, [tampered], now=1.0) == NoCredentials()


def test_algorithm_not_offered_is_rejected():
    md5_only = make_server(algorithms=["MD5"])
    _client, headers = registered_client(make_server(), now=0.0)  # answers with SHA-256
    result = md5_only.verify("REGISTER", REGISTER_URI, values(headers), now=1.0)
    assert result == Failed("alice", "algorithm not offered", True)


def test_account_without_a_secret_for_the_algorithm_fails():
    table = {"alice": StoredCredential.from_password("alice", REALM, "pw", algorithms=["MD5"])}
    server = DigestServer(REALM, table.get)
    client = DigestClient("alice", "pw")
    assert client.handle_challenge(401, server.challenge(now=0.0))
    headers = client.authorization_headers("REGISTER", REGISTER_URI)
    assert server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0) == Failed(
        "alice", "no stored secret for SHA-256", True
    )


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="pbx.office.example", nonce="x", uri="sip:a", response="00"',  # no username
        'Digest username="alice", realm="pbx.office.example", nonce="x", uri="sip:a", '
        'response="00", qop=auth, cnonce="c", nc=zz',
        'Digest username="alice", realm="pbx.office.example", nonce="x", uri="sip:a", '
        'response="00", qop=auth, nc=00000001',  # no cnonce
        'Digest username="alice", realm="pbx.office.example", nonce="x", uri="sip:a", '
        'response="00", qop=auth, cnonce="c", nc=00000000',
    ],
)
def test_malformed_credentials_fail(value):
    result = make_server().verify("REGISTER", REGISTER_URI, [value], now=0.0)
    assert isinstance(result, Failed)
    assert result.reason == "malformed credentials"


def test_unparseable_header_fails_and_missing_header_asks_for_credentials():
    server = make_server()
    assert server.verify("REGISTER", REGISTER_URI, ['Digest realm="x" "junk'], now=0.0) == Failed(
        "", "malformed credentials", False
    )
    assert server.verify("REGISTER", REGISTER_URI, [], now=0.0) == NoCredentials()
    with pytest.raises(TypeError):
        server.verify("REGISTER", REGISTER_URI, 'Digest realm="x"', now=0.0)  # type: ignore[arg-type]


def test_credentials_for_our_realm_are_found_among_others():
    server = make_server()
    _client, headers = registered_client(server, now=0.0)
    other = 'Digest username="x", realm="carrier.example", nonce="n", uri="sip:a", response="00"'
    result = server.verify("REGISTER", REGISTER_URI, [other, *values(headers)], now=1.0)
    assert isinstance(result, Accepted)


# ---------------------------------------------------------------------------- unknown users


def test_unknown_user_gets_the_same_answer_and_work_as_a_wrong_password(monkeypatch):
    server = make_server()
    computed: list[str] = []
    real_digest_response = auth.digest_response

    def counting_digest_response(**kwargs):
        computed.append(kwargs["algorithm"])
        return real_digest_response(**kwargs)

    monkeypatch.setattr(auth, "digest_response", counting_digest_response)
    results = []
    for username in ("alice", "mallory"):
        client = DigestClient(username, "guess")
        assert client.handle_challenge(401, server.challenge(now=0.0))
        headers = client.authorization_headers("REGISTER", REGISTER_URI)
        computed.clear()
        results.append(server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0))
        assert computed == ["SHA-256"]  # one digest computed, known user or not
    wrong_password, unknown_user = results
    assert type(wrong_password) is type(unknown_user) is Failed
    assert (wrong_password.known_user, unknown_user.known_user) == (True, False)
    # What goes back on the wire is a fresh challenge either way: same shape.
    shape = [sorted(params_of(value)) for value in server.challenge(now=1.0)]
    assert shape == [sorted(params_of(value)) for value in server.challenge(now=1.0)]


# ---------------------------------------------------------------------------- client decisions


def test_client_gives_up_when_a_fresh_nonce_is_refused():
    server = make_server()
    client, headers = registered_client(server, now=0.0, password="wrong")
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(headers), now=1.0), Failed)
    assert not client.handle_challenge(401, server.challenge(now=1.0), values(headers))
    assert client.authorization_headers("REGISTER", REGISTER_URI) == []


def test_client_retries_once_when_a_reused_nonce_is_refused_without_stale():
    server = make_server()
    client, first = registered_client(server, now=0.0)
    assert isinstance(server.verify("REGISTER", REGISTER_URI, values(first), now=0.5), Accepted)
    reused = client.authorization_headers("REGISTER", REGISTER_URI)  # nc=2
    # A server that forgets nonces and does not say stale: one retry on a fresh nonce.
    assert client.handle_challenge(401, server.challenge(now=1.0), values(reused))
    fresh = client.authorization_headers("REGISTER", REGISTER_URI)
    assert params_of(values(fresh)[0])["nc"] == "00000001"
    assert not client.handle_challenge(401, server.challenge(now=2.0), values(fresh))


def test_client_without_qop_gives_up_after_a_refused_first_use():
    server = make_server(qop_options=[])
    client, headers = registered_client(server, now=0.0, password="wrong")
    assert not client.handle_challenge(401, server.challenge(now=1.0), values(headers))


# ---------------------------------------------------------------------------- header syntax


def test_parse_unescapes_quoted_strings_and_reads_bare_values():
    value = r'Digest username="a\"b\\c", uri=sip:100@pbx, nc=00000001 , realm = "r,1"'
    assert parse_auth_header(value) == [
        ("Digest", {"username": 'a"b\\c', "uri": "sip:100@pbx", "nc": "00000001", "realm": "r,1"})
    ]


def test_parse_reads_several_challenges_folded_into_one_value():
    value = 'Digest realm="a", nonce="1", algorithm=SHA-256, Digest realm="a", nonce="1"'
    assert [params.get("algorithm") for _scheme, params in parse_auth_header(value)] == [
        "SHA-256",
        None,
    ]


@pytest.mark.parametrize(
    "value",
    [
        'realm="a"',  # no scheme
        'Digest realm="a", realm="b"',  # a parameter twice
        'Digest realm="a" nonce="b"',  # no comma
        'Digest realm="unterminated',
        "Digest realm=",
        "Digest @",
    ],
)
def test_parse_refuses_broken_values(value):
    with pytest.raises(AuthHeaderError):
        parse_auth_header(value)


def test_format_and_parse_round_trip_with_awkward_characters():
    params = {"username": 'wei"rd\\name', "realm": "Café, Ltd", "nc": "00000001"}
    value = format_auth_header("Digest", params, bare=("nc",))
    assert parse_auth_header(value) == [("Digest", params)]


def test_format_refuses_header_injection_and_bad_tokens():
    with pytest.raises(ValueError):
        quote_string("alice\r\nVia: evil")
    with pytest.raises(ValueError):
        format_auth_header("Digest", {"algorithm": "MD5 evil"}, bare=("algorithm",))


def test_stored_credentials_need_no_password():
    stored = StoredCredential.from_password("alice", REALM, "pw", algorithms=["MD5", "sha-256"])
    assert set(stored.ha1_by_algorithm) == {"MD5", "SHA-256"}
    assert stored.ha1_for("MD5-sess") == ha1("alice", REALM, "pw", "MD5")
    assert "pw" not in repr(stored)


def test_server_refuses_impossible_configurations():
    with pytest.raises(ValueError):
        DigestServer(REALM, {}.get, algorithms=[])
    with pytest.raises(ValueError):
        DigestServer(REALM, {}.get, algorithms=["SHA-1"])
    with pytest.raises(ValueError):
        DigestServer(REALM, {}.get, qop_options=["auth-conf"])
    with pytest.raises(ValueError):
        DigestServer(REALM, {}.get, qop_options=[], allow_no_qop=False)
