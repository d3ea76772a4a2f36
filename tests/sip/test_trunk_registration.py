"""Trunk registration client: digest, refresh, 423, back-off, un-register (scripted registrar)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from firmware.config.schema import SipPeerConfig
from firmware.sip.auth import Accepted, DigestServer, Stale, StoredCredential
from firmware.sip.message import Request, Response, make_response
from firmware.sip.peers import Resolver
from firmware.sip.trunk_registration import RegistrationState, TrunkRegistration, TrunkRegistrations

REALM = "voip.example"
LOCAL = ("192.0.2.1", 5080)


def peer(**changes: object) -> SipPeerConfig:
    values: dict[str, object] = dict(
        name="provider", host="198.51.100.7", port=5060, registration=True,
        username="3512100", auth_username="auth3512100", password="pw-trunk", register_expires=600,
    )  # fmt: skip
    values.update(changes)
    return SipPeerConfig(**values)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedStack:
    """Answers each request with `answer(request)`; None means no answer (the 408 of Timer F)."""

    def __init__(self, answer: Callable[[Request], Response | None]) -> None:
        self.answer = answer
        self.local_address = LOCAL
        self.sent: list[tuple[Request, tuple[str, int]]] = []
        self.hang = False

    async def request(self, request: Request, destination: tuple[str, int], on_response=None, **_options: object) -> Response:
        self.sent.append((request, destination))
        if self.hang:
            await asyncio.sleep(3600)
        response = self.answer(request)
        return response if response is not None else Response(408, "Request Timeout")


class Registrar:
    """A provider's registrar: digest in `realm`, grants `grant` seconds on the contact."""

    def __init__(self, password: str = "pw-trunk", grant: int | None = 300) -> None:
        credential = StoredCredential.from_password("auth3512100", REALM, password)
        self.digest = DigestServer(REALM, lambda user: credential if user == "auth3512100" else None)
        self.grant = grant
        self.now = 0.0
        self.accepted: list[Request] = []
        self.stale_next = False

    def __call__(self, request: Request) -> Response:
        result = self.digest.verify(request.method, str(request.uri), request.headers.get_all("Authorization"), self.now)
        if isinstance(result, Accepted) and self.stale_next:
            self.stale_next = False
            result = Stale(result.username, "test")
        if not isinstance(result, Accepted):
            response = make_response(request, 401, to_tag="reg")
            for value in self.digest.challenge(self.now, stale=isinstance(result, Stale)):
                response.headers.add("WWW-Authenticate", value)
            return response
        self.accepted.append(request)
        response = make_response(request, 200, to_tag="reg")
        contact = request.headers.get("Contact")
        if self.grant is not None:
            contact = f"{contact};expires={self.grant}"
        response.headers.add("Contact", "<sip:other@203.0.113.9>;expires=7")  # another device of the AOR
        response.headers.add("Contact", contact)
        return response


def trunk(stack: ScriptedStack, config: SipPeerConfig | None = None, clock: Clock | None = None,
          resolver: Resolver | None = None, **options: object) -> TrunkRegistration:
    return TrunkRegistration(
        config or peer(), stack, resolver or Resolver(), lambda _ip: LOCAL[0], clock=clock or Clock(),
        rng=lambda: 0.5, **options,
    )  # type: ignore[arg-type]  # fmt: skip


async def test_challenge_answered_then_registered_and_refreshed_at_80_percent() -> None:
    registrar = Registrar()
    stack = ScriptedStack(registrar)
    registration = trunk(stack)
    delay = await registration.attempt()
    assert registration.state == RegistrationState.REGISTERED
    assert delay == pytest.approx(240.0)  # 80 % of the 300 s granted on our contact
    assert registration.granted_s == 300
    first, second = (request for request, _ in stack.sent)
    assert "Authorization" not in first.headers
    assert 'username="auth3512100"' in second.headers.get("Authorization")
    assert str(first.uri) == "sip:198.51.100.7"
    assert first.headers.get("To") == "<sip:3512100@198.51.100.7>"
    assert first.headers.get("Contact") == "<sip:3512100@192.0.2.1:5080>"
    assert first.headers.get("Expires") == "600"
    assert first.headers.call_id == second.headers.call_id
    assert second.headers.cseq.number == first.headers.cseq.number + 1
    assert stack.sent[0][1] == ("198.51.100.7", 5060)
    # The refresh carries credentials on the same nonce: no second challenge.
    await registration.attempt()
    assert len(stack.sent) == 3
    assert stack.sent[2][0].headers.call_id == first.headers.call_id
    assert len(registrar.accepted) == 2
    assert registration.status()["state"] == "registered"
    assert registration.status()["expires_in_s"] == 300


async def test_expiry_from_expires_header_or_what_was_asked() -> None:
    registrar = Registrar(grant=None)

    def with_header(request: Request) -> Response:
        response = registrar(request)
        if response.status == 200:
            response.headers.add("Expires", "120")
        return response

    registration = trunk(ScriptedStack(with_header))
    assert await registration.attempt() == pytest.approx(96.0)
    registration = trunk(ScriptedStack(Registrar(grant=None)), peer(register_expires=100))
    assert await registration.attempt() == pytest.approx(80.0)


async def test_domain_names_the_aor_and_request_uri_and_port_is_kept_without_it() -> None:
    stack = ScriptedStack(Registrar())
    registration = trunk(stack, peer(domain="voip.example", port=5070))
    await registration.attempt()
    request, destination = stack.sent[0]
    assert str(request.uri) == "sip:voip.example"
    assert request.headers.get("From").startswith("<sip:3512100@voip.example>;tag=")
    assert destination == ("198.51.100.7", 5070)
    stack = ScriptedStack(Registrar())
    await trunk(stack, peer(port=5070)).attempt()
    assert str(stack.sent[0][0].uri) == "sip:198.51.100.7:5070"


async def test_wrong_password_fails_after_one_answer_and_backs_off() -> None:
    stack = ScriptedStack(Registrar(password="another"))
    clock = Clock()
    registration = trunk(stack, clock=clock, backoff_base_s=30.0, backoff_max_s=1800.0)
    delay = await registration.attempt()
    assert len(stack.sent) == 2, "a refused answer to a fresh nonce is not retried"
    assert registration.state == RegistrationState.FAILED
    assert registration.last_status == 401
    assert registration.last_reason == "credentials refused"
    assert delay == pytest.approx(30.0)  # rng 0.5: the middle of the ±20 % jitter
    assert registration.status()["next_attempt_in_s"] == pytest.approx(30.0)


async def test_failures_back_off_exponentially_with_jitter_up_to_the_maximum() -> None:
    stack = ScriptedStack(lambda request: make_response(request, 403))
    draws = iter([0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    registration = TrunkRegistration(
        peer(), stack, Resolver(), lambda _ip: LOCAL[0], clock=Clock(), rng=lambda: next(draws),
        backoff_base_s=30.0, backoff_max_s=1800.0,
    )  # type: ignore[arg-type]  # fmt: skip
    delays = [await registration.attempt() for _ in range(9)]
    assert delays[0] == pytest.approx(24.0)  # 30 s, jittered -20 %
    assert delays[1] == pytest.approx(72.0)  # 60 s, +20 %
    assert delays[2:7] == pytest.approx([120.0, 240.0, 480.0, 960.0, 1800.0])
    assert delays[7:] == pytest.approx([1800.0, 1800.0])  # capped
    assert registration.last_status == 403
    assert registration.failures == 9
    assert len(stack.sent) == 9


async def test_retry_after_is_honoured_and_success_resets_the_back_off() -> None:
    registrar = Registrar()
    refusing = True

    def answer(request: Request) -> Response:
        if refusing:
            response = make_response(request, 503)
            response.headers.add("Retry-After", "90 (maintenance);duration=600")
            return response
        return registrar(request)

    registration = trunk(ScriptedStack(answer))
    assert await registration.attempt() == 90.0
    assert registration.state == RegistrationState.FAILED and registration.last_status == 503
    refusing = False
    await registration.attempt()
    assert registration.state == RegistrationState.REGISTERED
    assert registration.failures == 0


async def test_no_answer_is_a_failure() -> None:
    registration = trunk(ScriptedStack(lambda _request: None))
    await registration.attempt()
    assert registration.state == RegistrationState.FAILED
    assert registration.last_status == 408


async def test_stale_nonce_is_answered_again_without_failing() -> None:
    registrar = Registrar()
    stack = ScriptedStack(registrar)
    registration = trunk(stack)
    await registration.attempt()
    registrar.stale_next = True
    await registration.attempt()
    assert registration.state == RegistrationState.REGISTERED
    assert len(stack.sent) == 4  # challenge, credentials; refresh refused stale, credentials again
    assert len(registrar.accepted) == 2


async def test_interval_too_brief_uses_min_expires() -> None:
    registrar = Registrar(grant=None)

    def answer(request: Request) -> Response:
        if int(request.headers.get("Expires")) < 1800:
            response = make_response(request, 423)
            response.headers.add("Min-Expires", "1800")
            return response
        return registrar(request)

    stack = ScriptedStack(answer)
    registration = trunk(stack)
    delay = await registration.attempt()
    assert registration.state == RegistrationState.REGISTERED
    assert [request.headers.get("Expires") for request, _ in stack.sent] == ["600", "1800", "1800"]
    assert delay == pytest.approx(1440.0)
    await registration.attempt()
    assert stack.sent[-1][0].headers.get("Expires") == "1800", "the minimum is remembered"


async def test_423_without_a_larger_minimum_fails() -> None:
    registration = trunk(ScriptedStack(lambda request: make_response(request, 423)))
    await registration.attempt()
    assert registration.state == RegistrationState.FAILED
    assert registration.last_status == 423


async def test_host_name_is_resolved_without_blocking_and_dns_failure_is_a_failure() -> None:
    names = {"sip.voip.example": ["198.51.100.20", "198.51.100.21"]}

    async def lookup(host: str, _port: int) -> list[str]:
        await asyncio.sleep(0)
        if host not in names:
            raise OSError(-2, "Name or service not known")
        return names[host]

    stack = ScriptedStack(Registrar())
    registration = trunk(stack, peer(host="sip.voip.example"), resolver=Resolver(lookup=lookup))
    await registration.attempt()
    assert registration.state == RegistrationState.REGISTERED
    assert stack.sent[0][1] == ("198.51.100.20", 5060)
    assert str(stack.sent[0][0].uri) == "sip:sip.voip.example"
    failing = trunk(ScriptedStack(Registrar()), peer(host="gone.voip.example"), resolver=Resolver(lookup=lookup))
    delay = await failing.attempt()
    assert failing.state == RegistrationState.FAILED
    assert failing.last_status is None and failing.last_reason.startswith("dns:")
    assert delay == pytest.approx(30.0)


async def test_unregister_sends_expires_zero_and_is_bounded() -> None:
    registrar = Registrar()
    stack = ScriptedStack(registrar)
    registration = trunk(stack)
    await registration.attempt()
    await registration.unregister()
    assert stack.sent[-1][0].headers.get("Expires") == "0"
    assert registration.state == RegistrationState.UNREGISTERED
    assert registration.status()["expires_in_s"] is None
    silent = ScriptedStack(Registrar())
    registration = trunk(silent, unregister_timeout_s=0.2)
    await registration.attempt()
    silent.hang = True
    await asyncio.wait_for(registration.unregister(), 2.0)
    assert registration.state == RegistrationState.UNREGISTERED
    assert registration.last_reason == "no answer to un-register"


async def test_registrations_run_in_the_background_and_stop_unregisters() -> None:
    registrar = Registrar(grant=2)
    stack = ScriptedStack(registrar)
    manager = TrunkRegistrations(stack, Resolver(), lambda _ip: LOCAL[0])  # type: ignore[arg-type]
    manager.start((peer(), peer(name="plain", registration=False, username="", password="")))
    assert set(manager.trunks) == {"provider"}
    for _ in range(100):
        if len(registrar.accepted) >= 2:  # registered, then refreshed after 1.6 s
            break
        await asyncio.sleep(0.05)
    assert manager.is_registered("provider")
    assert not manager.is_registered("plain")
    await manager.stop()
    assert stack.sent[-1][0].headers.get("Expires") == "0"
    assert manager.status()["provider"]["state"] == "unregistered"


async def test_an_unexpected_error_is_a_failure_and_the_loop_goes_on() -> None:
    calls = 0

    async def broken(_host: str, _port: int) -> list[str]:
        nonlocal calls
        calls += 1
        raise RuntimeError("resolver bug")

    registration = trunk(ScriptedStack(Registrar()), peer(host="sip.voip.example"), resolver=Resolver(lookup=broken),
                         backoff_base_s=0.05)  # fmt: skip
    task = asyncio.create_task(registration.run())
    try:
        for _ in range(100):
            if calls >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert calls >= 2, "retried after the error"
    assert registration.state == RegistrationState.FAILED
    assert "resolver bug" in registration.last_reason


async def test_a_huge_retry_after_is_capped_at_the_longest_back_off() -> None:
    """A registrar asking for a week's pause must not park the trunk until a restart."""

    def answer(request: Request) -> Response:
        response = make_response(request, 503)
        response.headers.add("Retry-After", "604800")
        return response

    registration = TrunkRegistration(
        peer(), ScriptedStack(answer), Resolver(), lambda _ip: LOCAL[0], clock=Clock(),
        backoff_base_s=30.0, backoff_max_s=1800.0,
    )  # type: ignore[arg-type]  # fmt: skip
    assert await registration.attempt() == 1800.0
