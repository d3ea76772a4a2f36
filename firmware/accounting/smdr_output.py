"""The live SMDR stream: a serial port and a TCP listener, never slowing call handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware.config.schema import Config


class SmdrService:
    """Fed one stored CDR row per finished call by the call manager (``publish``)."""

    def __init__(self, config: Config, cdr_path: Path) -> None:
        self.config = config
        self.cdr_path = cdr_path

    async def start(self) -> None:
        """Open the configured outputs."""

    async def stop(self) -> None:
        """Close the outputs."""

    def publish(self, row: dict[str, Any]) -> None:
        """Queue one stored record for every output; never blocks."""

    @property
    def status(self) -> dict[str, Any]:
        return {}
