"""The registrar: REGISTER with digest auth, bindings and their expiry, the store, SIPp as a phone."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from firmware.config.load import ConfigError, parse_config
from firmware.sip.auth import DigestClient, StoredCredential, parse_auth_header
from firmware.sip.guard import AuthGuard, GuardPolicy
from firmware.sip.headers_values import parse_name_addr
from firmware.sip.message import Request, Response, parse_message
from firmware.sip.registrar import (
    Binding,
    BindingStore,
    Changes,
    Registrar,
    granted_expires,
    requested_expires,
)
from firmware.sip.service import SipService

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed")

REALM = "office"
PASSWORD = "secret-201"
SOURCE = ("192.0.2.10", 5062)
T0 = 1_800_000_000.0  # wall clock of the unit tests


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_registrar(data_dir: Path | None = None, **options: object) -> Registrar:
    credentials = {
        number: StoredCredential.from_password(number, REALM, PASSWORD) for number in ("201", "202")
    }
    return Registrar(REALM, credentials, data_dir, **options)  # type: ignore[arg-type]


def register(
    user: str = "201",
    contacts: tuple[str, ...] = ("<sip:201@192.168.1.20:5062>",),
    expires: int | None = 300,
    cseq: int = 1,
    call_id: str = "reg-1",
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    lines = [
        "REGISTER sip:pbx.example SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK" + f"{call_id}-{cseq};rport",
        f"From: <sip:{user}@pbx.example>;tag=ft",
        f"To: <sip:{user}@pbx.example>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
    ]
    lines += [f"Contact: {contact}" for contact in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += [f"{name}: {value}" for name, value in extra]
    message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def authenticated(
    registrar: Registrar,
    request_factory,
    password: str = PASSWORD,
    user: str = "201",
    now: float = T0,
    monotonic_now: float = 100.0,
    persist: bool = False,
) -> Response:
    """Challenge, answer with DigestClient, send again: the final response.

    `persist` goes through `receive` (the service's entry, with the registrar's clocks),
    which also hands the changes to the store.
    """

    def send(request: Request) -> Response | None:
        if persist:
            return registrar.receive(request, SOURCE)
        return registrar.handle(request, SOURCE, now, monotonic_now)[0]

    first = send(request_factory(cseq=1))
    assert first is not None and first.status == 401
    client = DigestClient(user, password)
    assert client.handle_challenge(401, first.headers.get_all("WWW-Authenticate"))
    credentials = client.authorization_headers("REGISTER", "sip:pbx.example")
    response = send(request_factory(cseq=2, extra=tuple(credentials)))
    assert response is not None
    return response


def contact_expires(response: Response) -> dict[str, int]:
    return {str(contact.uri): contact.expires or 0 for contact in response.headers.contacts}


# ---------------------------------------------------------------------------- expiry math


def test_contact_expires_parameter_wins_over_the_expires_header() -> None:
    contact = parse_name_addr("<sip:201@10.0.0.5>;expires=120")
    assert requested_expires(contact, 600, 3600) == 120
    assert requested_expires(parse_name_addr("<sip:201@10.0.0.5>"), 600, 3600) == 600
    assert requested_expires(parse_name_addr("<sip:201@10.0.0.5>"), None, 3600) == 3600


def test_granted_expires_removes_refuses_and_clamps() -> None:
    assert granted_expires(0, 60, 3600) == 0
    assert granted_expires(59, 60, 3600) is None
    assert granted_expires(60, 60, 3600) == 60
    assert granted_expires(86_400, 60, 3600) == 3600


def test_expires_in_rounds_up_and_never_goes_negative() -> None:
    binding = Binding("sip:201@x", "201", "sip:201@h", "h:1", T0 + 10.2, "c", 1, T0)
    assert binding.expires_in(T0) == 11
    assert binding.expires_in(T0 + 10.2) == 0
    assert binding.expires_in(T0 + 99) == 0


# ---------------------------------------------------------------------------- REGISTER


def test_register_without_credentials_is_challenged_with_sha256_then_md5() -> None:
    registrar = make_registrar()
    response, changes = registrar.handle(register(), SOURCE, T0, 100.0)
    assert response is not None and response.status == 401
    algorithms = [
        parse_auth_header(value)[0][1]["algorithm"]
        for value in response.headers.get_all("WWW-Authenticate")
    ]
    assert algorithms == ["SHA-256", "MD5"]
    assert changes == Changes()
    assert registrar.guard.counters["failures"] == 0, "no credentials is not a failure"


def test_register_with_the_right_password_binds_and_lists_the_contact() -> None:
    registrar = make_registrar(wall_clock=Clock(T0))
    response = authenticated(registrar, register)
    assert response.status == 200
    assert contact_expires(response) == {"sip:201@192.168.1.20:5062": 300}
    [binding] = registrar.contacts("201")
    assert binding.aor == "sip:201@pbx.example"
    assert binding.source == "192.0.2.10:5062", "the real source, for NAT"
    assert binding.source_address == SOURCE
    assert binding.expires_at == T0 + 300


def test_wrong_password_and_unknown_user_get_the_same_401_and_count_as_failures() -> None:
    registrar = make_registrar()
    wrong = authenticated(registrar, register, password="not-the-one")
    unknown = authenticated(registrar, lambda **kw: register(user="299", **kw), user="299")
    assert wrong.status == unknown.status == 401
    assert [name for name, _ in wrong.headers] == [name for name, _ in unknown.headers]
    assert registrar.guard.counters["failures"] == 2
    assert registrar.contacts("201") == []


def test_an_expired_nonce_is_answered_stale_true() -> None:
    registrar = make_registrar()
    first, _ = registrar.handle(register(), SOURCE, T0, 100.0)
    assert first is not None
    client = DigestClient("201", PASSWORD)
    client.handle_challenge(401, first.headers.get_all("WWW-Authenticate"))
    credentials = tuple(client.authorization_headers("REGISTER", "sip:pbx.example"))
    late, _ = registrar.handle(register(cseq=2, extra=credentials), SOURCE, T0, 100.0 + 301)
    assert late is not None and late.status == 401
    challenge = parse_auth_header(late.headers.get_all("WWW-Authenticate")[0])[0][1]
    assert challenge["stale"] == "true"
    assert registrar.guard.counters["failures"] == 0


def test_too_brief_is_423_with_min_expires_and_too_long_is_shortened() -> None:
    registrar = make_registrar()
    brief = authenticated(registrar, lambda **kw: register(expires=30, **kw))
    assert brief.status == 423
    assert brief.headers.get("Min-Expires") == "60"
    long_ = authenticated(registrar, lambda **kw: register(expires=86_400, call_id="r2", **kw))
    assert long_.status == 200
    assert contact_expires(long_) == {"sip:201@192.168.1.20:5062": 3600}


def test_several_contacts_per_extension_and_removing_one_then_all() -> None:
    registrar = make_registrar(wall_clock=Clock(T0))
    desk = "<sip:201@192.168.1.20:5062>"
    soft = "<sip:201@192.168.1.30:5070;transport=udp>;expires=120"
    both = authenticated(registrar, lambda **kw: register(contacts=(desk, soft), **kw))
    assert contact_expires(both) == {
        "sip:201@192.168.1.20:5062": 300,
        "sip:201@192.168.1.30:5070;transport=udp": 120,
    }
    assert len(registrar.contacts("201")) == 2
    one_gone = authenticated(
        registrar, lambda **kw: register(contacts=(desk,), expires=0, call_id="r2", **kw)
    )
    assert contact_expires(one_gone) == {"sip:201@192.168.1.30:5070;transport=udp": 120}
    all_gone = authenticated(
        registrar, lambda **kw: register(contacts=("*",), expires=0, call_id="r3", **kw)
    )
    assert all_gone.status == 200 and all_gone.headers.get("Contact") is None
    assert registrar.contacts("201") == []


def test_wildcard_contact_needs_expires_zero() -> None:
    registrar = make_registrar()
    response = authenticated(registrar, lambda **kw: register(contacts=("*",), **kw))
    assert response.status == 400


def test_a_phone_may_register_only_its_own_extension() -> None:
    registrar = make_registrar()
    # Authenticated as 201, but the To is 202.
    response = authenticated(registrar, lambda **kw: register(user="202", **kw), user="201")
    assert response.status == 403
    assert registrar.contacts("202") == []


def test_an_older_cseq_of_the_same_call_id_changes_nothing() -> None:
    registrar = make_registrar()
    assert authenticated(registrar, register).status == 200
    client = DigestClient("201", PASSWORD)
    first, _ = registrar.handle(register(cseq=5), SOURCE, T0, 100.0)
    assert first is not None
    client.handle_challenge(401, first.headers.get_all("WWW-Authenticate"))
    credentials = tuple(client.authorization_headers("REGISTER", "sip:pbx.example"))
    replayed, _ = registrar.handle(
        register(cseq=2, expires=0, extra=credentials), SOURCE, T0, 100.0
    )
    assert replayed is not None and replayed.status == 500
    assert len(registrar.contacts("201")) == 1


def test_a_query_without_contact_lists_the_bindings() -> None:
    registrar = make_registrar(wall_clock=Clock(T0))
    authenticated(registrar, register)
    query = authenticated(
        registrar, lambda **kw: register(contacts=(), expires=None, call_id="q", **kw), now=T0 + 100
    )
    assert query.status == 200
    assert contact_expires(query) == {"sip:201@192.168.1.20:5062": 200}


def test_a_blocked_source_gets_no_answer_at_all() -> None:
    registrar = make_registrar(
        guard=AuthGuard(GuardPolicy(max_failures=2)), monotonic_clock=Clock(100.0)
    )
    authenticated(registrar, register, password="wrong-one")
    authenticated(registrar, register, password="wrong-two")
    response, _ = registrar.handle(register(), SOURCE, T0, 100.0)
    assert response is None
    assert registrar.status()["guard"]["blocked"][0]["source"] == SOURCE[0]


# ---------------------------------------------------------------------------- store


def test_store_keeps_bindings_and_forgets_expired_ones(tmp_path: Path) -> None:
    live = Binding("sip:201@x", "201", "sip:201@h:1", "h:1", T0 + 300, "c", 2, T0)
    dead = Binding("sip:201@x", "201", "sip:201@h:2", "h:2", T0 + 10, "c", 2, T0)
    store = BindingStore(tmp_path / "registrations.sqlite3")
    store.open()
    store.apply(Changes(saved=(live, dead)))
    store.close()
    store.open()
    assert store.load(T0 + 60) == [live]
    store.apply(Changes(removed=(live,)))
    assert store.load(T0) == []
    mode = store.connection.execute("PRAGMA journal_mode").fetchone()[0]
    store.close()
    assert mode == "wal"


async def test_a_restart_keeps_bindings_and_the_purge_drops_expired_ones(tmp_path: Path) -> None:
    clock = Clock(T0)
    registrar = make_registrar(tmp_path, wall_clock=clock)
    await registrar.start()
    authenticated(registrar, lambda **kw: register(expires=60, **kw), persist=True)
    authenticated(
        registrar,
        lambda **kw: register(user="202", contacts=("<sip:202@10.0.0.2>",), call_id="b", **kw),
        user="202",
        persist=True,
    )
    await registrar.stop()

    again = make_registrar(tmp_path, wall_clock=clock)
    await again.start()
    try:
        assert [b.contact for b in again.contacts("201")] == ["sip:201@192.168.1.20:5062"]
        clock.now = T0 + 61
        assert [b.extension for b in again.purge()] == ["201"]
        assert again.contacts("201") == []
        assert len(again.contacts("202")) == 1
        await again.flush()
    finally:
        await again.stop()
    third = make_registrar(tmp_path, wall_clock=clock)
    await third.start()
    try:
        assert third.contacts("201") == [] and len(third.contacts("202")) == 1
    finally:
        await third.stop()


# ---------------------------------------------------------------------------- config


def _config_with(extension_line: str, sip: str = "") -> str:
    return f"""
[site]
name = "acme"
[line_card]
fxs_ports = 2
fxo_ports = 0
[[extensions]]
number = "201"
port = 1
{extension_line}
{sip}
"""


def test_realm_defaults_to_the_site_name_and_only_extensions_with_a_password_register() -> None:
    config = parse_config(_config_with('sip_password = "long-enough"'))
    registrar = Registrar.from_config(config, None)
    assert registrar.realm == "acme"
    assert list(registrar.accounts()) == ["201"]
    named = Registrar.from_config(
        parse_config(_config_with('sip_password = "long-enough"', '[sip]\nrealm = "pbx"')), None
    )
    assert named.realm == "pbx"


def test_a_short_sip_password_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config_with('sip_password = "short"'))
    assert any("extensions[0].sip_password" in error for error in caught.value.errors)


# ---------------------------------------------------------------------------- SIPp as the phone

SIPP_PASSWORD = "secret123"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run_sipp(
    scenario: str,
    target: tuple[str, int],
    password: str = SIPP_PASSWORD,
    expires: int = 300,
    calls: int = 1,
    timeout: float = 10.0,
    port: int | None = None,
) -> tuple[int, str]:
    """SIPp as phone 201 on 127.0.0.1; its exit code and output."""
    assert SIPP is not None
    process = await asyncio.create_subprocess_exec(
        SIPP, f"{target[0]}:{target[1]}", "-sf", str(SCENARIOS / scenario),
        "-i", "127.0.0.1", "-p", str(port or free_udp_port()), "-m", str(calls), "-r", "50",
        "-s", "201", "-au", "201", "-ap", password, "-key", "expires", str(expires),
        "-timeout", f"{timeout:g}s", "-timeout_error", "-nostdin",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout + 10)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, output.decode(errors="replace")[-3000:]


async def start_service(data_dir: Path, guard: AuthGuard | None = None) -> SipService:
    # SIPp 3.6 answers only the first challenge and knows no SHA-256: offer MD5 alone.
    registrar = Registrar(
        REALM,
        {"201": StoredCredential.from_password("201", REALM, SIPP_PASSWORD)},
        data_dir,
        guard=guard or AuthGuard(GuardPolicy(max_failures=10, trusted_networks=())),
        algorithms=("MD5",),
    )
    service = SipService("test", registrar=registrar)
    await service.start("127.0.0.1", 0)
    return service


@pytest.fixture
async def sip(tmp_path: Path) -> SipService:
    service = await start_service(tmp_path)
    try:
        yield service
    finally:
        await service.stop()


def registrations(service: SipService) -> list[dict[str, object]]:
    status = service.status()["registrar"]
    assert status is not None
    return status["registrations"]


@needs_sipp
async def test_sipp_phone_registers_with_digest_and_its_binding_is_visible(sip: SipService) -> None:
    port = free_udp_port()
    code, output = await run_sipp("register.xml", sip.stack.local_address, port=port)
    assert code == 0, output
    [entry] = registrations(sip)
    assert entry["aor"] == "sip:201@127.0.0.1"
    assert entry["contact"] == f"sip:201@127.0.0.1:{port}"
    assert entry["source"] == f"127.0.0.1:{port}"
    assert 295 <= entry["expires_in"] <= 300
    assert "REGISTER" in sip.allow


@needs_sipp
async def test_sipp_phone_with_a_wrong_password_gets_401_again(sip: SipService) -> None:
    code, output = await run_sipp(
        "register_wrong_password.xml", sip.stack.local_address, "wrong-pass"
    )
    assert code == 0, output
    assert registrations(sip) == []
    assert sip.registrar is not None
    assert sip.registrar.guard.counters["failures"] == 1


@needs_sipp
async def test_ten_wrong_passwords_block_the_source_and_then_there_is_silence(
    sip: SipService,
) -> None:
    target = sip.stack.local_address
    code, output = await run_sipp("register_wrong_password.xml", target, "wrong-pass", calls=10)
    assert code == 0, output
    guard = sip.status()["registrar"]["guard"]
    assert [entry["source"] for entry in guard["blocked"]] == ["127.0.0.1"]
    code, output = await run_sipp("register.xml", target, timeout=2)
    assert code != 0, "a blocked source must get no answer, not even with the right password"
    assert sip.stack.counters.blocked > 0
    assert registrations(sip) == []


@needs_sipp
async def test_sipp_phone_unregisters_with_expires_zero(sip: SipService) -> None:
    port = free_udp_port()
    target = sip.stack.local_address
    code, output = await run_sipp("register.xml", target, port=port)
    assert code == 0, output
    assert len(registrations(sip)) == 1
    code, output = await run_sipp("register.xml", target, expires=0, port=port)
    assert code == 0, output
    assert registrations(sip) == []


@needs_sipp
async def test_a_restarted_service_keeps_the_registration(tmp_path: Path) -> None:
    service = await start_service(tmp_path)
    try:
        code, output = await run_sipp("register.xml", service.stack.local_address)
        assert code == 0, output
    finally:
        await service.stop()
    assert (tmp_path / "registrations.sqlite3").exists()
    restarted = await start_service(tmp_path)
    try:
        [entry] = registrations(restarted)
        assert entry["aor"] == "sip:201@127.0.0.1"
        assert restarted.registrar is not None
        assert [b.extension for b in restarted.registrar.contacts("201")] == ["201"]
    finally:
        await restarted.stop()


async def test_the_appliance_status_shows_the_registrar_and_its_database(data_dir: Path) -> None:
    from conftest import office_config, start_pbx

    pbx = await start_pbx(office_config('[sip]\nlisten = "127.0.0.1:0"\n'), data_dir)
    try:
        registrar_status = pbx.app.status()["sip"]["registrar"]
        assert registrar_status["realm"] == "office", "the realm defaults to the site name"
        assert registrar_status["registrations"] == []
        assert registrar_status["guard"]["blocked"] == []
    finally:
        await pbx.app.stop()
    assert (data_dir / "registrations.sqlite3").exists()
