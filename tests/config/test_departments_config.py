"""Report departments name real extensions: a typo is refused with where it is."""

from __future__ import annotations

import pytest

from firmware.config.load import ConfigError, default_config_text, parse_config


def test_a_department_member_must_be_an_extension() -> None:
    text = default_config_text() + '\n[reports.departments]\nsales = ["202", "299"]\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.errors == ["reports.departments.sales: extension 299 is not in [[extensions]]"]


def test_departments_of_real_extensions_load() -> None:
    text = default_config_text() + '\n[reports.departments]\nsales = ["202", "203"]\n'
    assert parse_config(text).reports.departments == {"sales": ("202", "203")}
