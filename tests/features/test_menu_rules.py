"""Menu rules without a call: what keyed digits mean, what may be dialled through, config."""

from __future__ import annotations

import pytest

from firmware.config.load import ConfigError, parse_config
from firmware.config.menu_schema import MenuNode
from firmware.features.menu import Choice, Decision, decide, dial_through_numbers
from tests.features.feature_tools import office_with_routing

KEYS = {"1", "2", "0", "#"}
NUMBERS = {"201", "202", "203", "600", "6000", "0"}


@pytest.mark.parametrize(
    ("digits", "final", "expected"),
    [
        ("1", False, Decision(Choice.KEY, "1")),  # no number starts with 1: at once
        ("2", False, Decision(Choice.WAIT)),  # 2 may start 201-203: wait
        ("2", True, Decision(Choice.KEY, "2")),  # nothing followed: the key
        ("20", False, Decision(Choice.WAIT)),
        ("20", True, Decision(Choice.INVALID, "20")),  # an incomplete number
        ("203", False, Decision(Choice.NUMBER, "203")),  # complete, nothing longer
        ("204", False, Decision(Choice.INVALID, "204")),  # no such number
        ("600", False, Decision(Choice.WAIT)),  # 6000 exists too
        ("600", True, Decision(Choice.NUMBER, "600")),
        ("6000", False, Decision(Choice.NUMBER, "6000")),
        ("0", False, Decision(Choice.KEY, "0")),  # key and number alike: the key wins
        ("#", False, Decision(Choice.KEY, "#")),
        ("5", False, Decision(Choice.INVALID, "5")),
        ("*", False, Decision(Choice.INVALID, "*")),
    ],
)
def test_what_keyed_digits_mean(digits: str, final: bool, expected: Decision) -> None:
    assert decide(digits, KEYS, NUMBERS, final=final) == expected


def test_without_dial_through_every_key_selects_at_once() -> None:
    assert decide("2", KEYS, set(), final=False) == Decision(Choice.KEY, "2")
    assert decide("3", KEYS, set(), final=False) == Decision(Choice.INVALID, "3")


ROUTING = """
[[routing.nodes]]
name = "main"
kind = "menu"
number = "600"
greeting = "enter_extension"
keys = { "1" = "sales" }

[[routing.nodes]]
name = "sales"
kind = "extension"
number = "610"
extensions = ["202"]
"""


def test_dial_through_reaches_extensions_and_other_nodes_numbers() -> None:
    config = parse_config(office_with_routing(ROUTING), "<test>")
    main = config.routing.node("main")
    assert isinstance(main, MenuNode)
    numbers = dial_through_numbers(config, main)
    assert numbers == {
        **{str(n): str(n) for n in range(201, 209)},
        "610": "sales",  # the menu's own number is left out
    }
    closed = main.model_copy(update={"dial_through": False})
    assert dial_through_numbers(config, closed) == {}


def test_a_menu_key_must_be_a_phone_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(office_with_routing(ROUTING.replace('"1" = "sales"', '"A" = "sales"')), "<t>")
    assert any("routing.nodes" in error and "keys" in error for error in caught.value.errors)


def test_a_menu_key_naming_no_node_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(office_with_routing(ROUTING.replace('"1" = "sales"', '"1" = "sails"')), "<t>")
    assert "routing.nodes[0] (main): no routing node named 'sails'" in caught.value.errors
