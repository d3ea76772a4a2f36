"""The appliance's own scheduler for report delivery and CDR retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware.config.schema import Config


class ReportScheduler:
    """Runs due jobs (each in a subprocess, off the core's loop) and remembers the last run."""

    def __init__(self, config: Config, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir

    async def start(self) -> None:
        """Begin waiting for the next due job."""

    async def stop(self) -> None:
        """Stop waiting; a job already running finishes in its own process."""

    @property
    def status(self) -> dict[str, Any]:
        return {}
