"""Announcements and music: language and where uploaded prompts live; see docs/prompts.md."""

from __future__ import annotations

from firmware.config.fields import Section


class PromptsConfig(Section):
    pass
