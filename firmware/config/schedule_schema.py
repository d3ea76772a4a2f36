"""Scheduled report delivery (folder, SMTP) and CDR retention; see docs/reports.md."""

from __future__ import annotations

from firmware.config.fields import Section


class ScheduleConfig(Section):
    pass
