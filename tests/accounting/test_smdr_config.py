"""`[smdr]` settings: bad values are refused with an error that says how to fix them."""

from __future__ import annotations

import pytest

from firmware.config.load import ConfigError, default_config_text, parse_config


def smdr(section: str) -> str:
    return default_config_text() + "\n[smdr]\nenabled = true\n" + section


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.errors


def test_defaults_are_off_and_documented_values() -> None:
    config = parse_config(default_config_text())
    assert not config.smdr.enabled
    assert (config.smdr.tcp_listen, config.smdr.serial.url) == ("", "")
    assert config.smdr.header_every == 60
    assert config.smdr.serial.baud == 9600


def test_a_full_section_is_accepted() -> None:
    config = parse_config(
        smdr(
            'tcp_listen = "0.0.0.0:2300"\nheader_every = 0\nclient_queue_records = 50\n'
            'stall_timeout_s = 5\n[smdr.serial]\nurl = "/dev/ttyUSB0"\nbaud = 1200\n'
            'parity = "even"\ndata_bits = 7\n[smdr.line_labels]\ncity1 = "01"\n'
        )
    )
    assert config.smdr.serial.parity == "even"
    assert config.smdr.line_labels == {"city1": "01"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('tcp_listen = "2300"', "must be host:port"),
        ('[smdr.serial]\nurl = "ttyUSB0"', "must be a device path"),
        ("[smdr.serial]\nbaud = 1234", "baud"),
        ('[smdr.line_labels]\ncity1 = "line one"', "1 to 6 printable ASCII"),
        ("header_every = -1", "header_every"),
        ('date_format = "dd.mm.yyyy"', "date_format"),
    ],
)
def test_bad_values_are_refused_with_a_hint(section: str, message: str) -> None:
    assert any(message in error for error in errors_of(smdr(section))), errors_of(smdr(section))
