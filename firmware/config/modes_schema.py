"""Office modes: weekly schedule, holidays, custom dates, overrides; see docs/modes.md."""

from __future__ import annotations

from firmware.config.fields import Section


class ModesConfig(Section):
    pass
