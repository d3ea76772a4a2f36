"""Report settings (departments and the like); see docs/reports.md."""

from __future__ import annotations

from firmware.config.fields import Section


class ReportsConfig(Section):
    pass
