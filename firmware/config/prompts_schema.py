"""Announcements and music: language and where uploaded prompts live; see docs/prompts.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from firmware.config.fields import Section

PromptLanguage = Literal["en", "pt"]
MEBIBYTE = 1024 * 1024


class PromptsConfig(Section):
    """Which shipped library plays, and the limits on uploaded WAV files.

    `language` empty: Portuguese when `site.country` is "pt", English otherwise.
    `folder` empty: DATA_DIR/prompts; a relative folder is taken under DATA_DIR.
    """

    language: PromptLanguage | None = None
    folder: str = ""
    max_upload_bytes: int = Field(default=2 * MEBIBYTE, ge=64 * 1024, le=16 * MEBIBYTE)
    max_seconds: float = Field(default=300.0, gt=0, le=600)
