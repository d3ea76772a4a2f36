"""Outbound routes: which trunks an outside call tries, in order, with which number."""

from __future__ import annotations

import pytest

from firmware.calls.dialplan import DialPlan, RouteKind, RoutePlan
from firmware.calls.routes import OutboundRoutes, TrunkKind
from firmware.config.load import ConfigError, default_config_text, parse_config

TRUNKS = """
[sip]
listen = "127.0.0.1:5060"

[[sip.peers]]
name = "voipco"
host = "sip.voipco.example"
registration = true
username = "2125550100"
password = "provider-secret"

[[sip.peers]]
name = "backup"
host = "192.0.2.10"

[[line_groups]]
name = "voip"
access_code = "8"
sip_peers = ["voipco", "backup"]

[[outbound_routes]]
name = "mobiles-via-provider"
patterns = ["9[1236]xxxxxxx"]
line_groups = ["city"]
via = ["voipco", "city"]
strip = 0
prepend = "+351"

[[outbound_routes]]
name = "international-backup-only"
patterns = ["00x."]
via = ["backup"]
strip = 2
prepend = "+"
"""


def config(extra: str = TRUNKS):
    return parse_config(default_config_text() + extra)


def trunks(digits: str, extension: str = "201") -> list[tuple[str, str, str]]:
    cfg = config()
    plan = DialPlan(cfg).route(cfg.extension(extension), digits)
    return [(str(a.kind), a.name, a.number) for a in OutboundRoutes(cfg).attempts(plan)]


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        # a route matches: its trunks in order, number rewritten to E.164
        ("9912345678", [("sip", "voipco", "+351912345678"), ("lines", "city", "+351912345678")]),
        ("900441234567", [("sip", "backup", "+441234567")]),
        # no route: the line group's city lines
        ("9212345678", [("lines", "city", "212345678")]),
    ],
)
def test_attempts_follow_the_first_matching_route(digits: str, expected: list[tuple[str, str, str]]) -> None:
    assert trunks(digits) == expected


def test_a_route_limited_to_a_group_does_not_apply_to_another_access_code() -> None:
    cfg = config()
    plan = RoutePlan(RouteKind.OUTSIDE, "8912345678", line_groups=("voip",), number="912345678")
    found = [(str(a.kind), a.name, a.number) for a in OutboundRoutes(cfg).attempts(plan)]
    assert found == [("lines", "voip", "912345678"), ("sip", "voipco", "912345678"), ("sip", "backup", "912345678")]


def test_emergency_tries_the_route_then_every_group() -> None:
    extra = TRUNKS + '\n[[outbound_routes]]\nname = "sos"\npatterns = ["112"]\nvia = ["backup"]\n'
    cfg = config(extra)
    plan = DialPlan(cfg).route(cfg.extension("208"), "112")
    assert plan.kind == RouteKind.EMERGENCY
    names = [(str(a.kind), a.name) for a in OutboundRoutes(cfg).attempts(plan)]
    assert names[0] == ("sip", "backup")
    assert ("lines", "city") in names and ("sip", "voipco") in names


def test_class_of_service_is_checked_before_any_route() -> None:
    """Lobby may not call mobiles: no route is even consulted (toll fraud protection)."""
    cfg = config()
    lobby = next(e for e in cfg.extensions if e.class_of_service == "lobby")
    plan = DialPlan(cfg).route(lobby, "9912345678")
    assert plan.kind == RouteKind.REJECTED


def test_unrestricted_routing_is_for_configured_numbers_only() -> None:
    cfg = config()
    plan = DialPlan(cfg).route(None, "9912345678")
    assert plan.kind == RouteKind.REJECTED
    plan = DialPlan(cfg).route(None, "9912345678", unrestricted=True)
    assert plan.kind == RouteKind.OUTSIDE and plan.number == "912345678"
    assert OutboundRoutes(cfg).attempts(plan)[0].kind == TrunkKind.SIP


def test_a_sibling_class_of_service_routes_like_an_extension_class() -> None:
    cfg = config()
    assert DialPlan(cfg).route(None, "202", class_of_service=None).kind == RouteKind.INTERNAL
    assert DialPlan(cfg).route(None, "9212345678", class_of_service=None).kind == RouteKind.REJECTED
    assert DialPlan(cfg).route(None, "9212345678", class_of_service="staff").kind == RouteKind.OUTSIDE


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\n[[outbound_routes]]\nname = "x"\npatterns = ["9x."]\nvia = ["nowhere"]\n', "neither a SIP peer nor a line group"),
        ('\n[[outbound_routes]]\nname = "x"\npatterns = ["9x."]\nline_groups = ["nope"]\nvia = ["city"]\n', "no line group named 'nope'"),
        ('\n[[sip.peers]]\nname = "city"\nhost = "192.0.2.1"\n', "also a line group's name"),
        ('\n[[sip.peers]]\nname = "p"\nhost = "192.0.2.1"\nregistration = true\n', "needs username and password"),
        ('\n[[sip.peers]]\nname = "p"\nhost = "not a host!"\n', "IP address or a host name"),
    ],
)
def test_route_and_trunk_mistakes_are_reported(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(default_config_text() + '\n[sip]\nlisten = "127.0.0.1:5060"\n' + extra)
    assert message in str(caught.value)


SIBLINGS = """
[sip]
listen = "127.0.0.1:5060"

[[sibling_sites]]
name = "porto"
extensions = ["3xx"]
host = "192.0.2.30"
password = "shared-secret"
fallback = "pstn"
fallback_number = "9223456789"
"""


def test_sibling_numbers_route_to_the_site() -> None:
    cfg = config(SIBLINGS)
    plan = DialPlan(cfg).route(cfg.extension("202"), "305")
    assert plan.kind == RouteKind.SIBLING and plan.site == "porto"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("3xx", "2xx"), "is an extension of this site"),
        (('password = "shared-secret"', 'password = "short"'), "8+ characters"),
        (('fallback_number = "9223456789"', 'fallback_number = ""'), "needs fallback_number"),
        (('name = "porto"', 'name = "office"'), "this site's own name"),
        (('host = "192.0.2.30"', 'host = "porto.example"'), "must be an IP address"),
    ],
)
def test_sibling_mistakes_are_reported(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(default_config_text() + SIBLINGS.replace(*change))
    assert message in str(caught.value)


def test_sip_only_extension_needs_a_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(default_config_text() + '\n[[extensions]]\nnumber = "250"\nname = "Softphone"\n')
    assert "needs an FXS port, a sip_password" in str(caught.value)
    cfg = parse_config(default_config_text() + '\n[[extensions]]\nnumber = "250"\nclass_of_service = "staff"\nsip_password = "long-enough-1"\n')
    assert cfg.extension("250").port is None


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        ('["9xxx"]', "overlap line group 'city' access code"),
        ('["11"]', "overlap emergency number 112"),
        ('["3x."]', "fixed-length digits"),
    ],
)
def test_a_sibling_range_may_not_shadow_emergency_or_access_codes(extensions: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(default_config_text() + SIBLINGS.replace('["3xx"]', extensions))
    assert message in str(caught.value)


def test_emergency_wins_even_over_a_shadowing_range() -> None:
    """Defence in depth: the dial plan itself puts emergency numbers first."""
    cfg = config()
    plan = DialPlan(cfg).route(cfg.extension("208"), "9112")
    assert plan.kind == RouteKind.EMERGENCY


def test_a_fallback_number_must_be_an_outside_number() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(default_config_text() + SIBLINGS.replace('"9223456789"', '"12345"'))
    assert "is not an outside number here" in str(caught.value)
    with pytest.raises(ConfigError):
        parse_config(default_config_text() + SIBLINGS.replace('"9223456789"', '"9112"'))
