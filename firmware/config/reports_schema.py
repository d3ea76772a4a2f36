"""Report settings: departments, scheduled delivery, SMTP, CDR retention; see docs/reports.md."""

from __future__ import annotations

from firmware.config.fields import Section


class ReportsConfig(Section):
    pass
