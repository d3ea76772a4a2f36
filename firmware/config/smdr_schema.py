"""SMDR output settings (serial port and TCP listener); see docs/smdr.md."""

from __future__ import annotations

from firmware.config.fields import Section


class SmdrConfig(Section):
    enabled: bool = False
