"""Call accounting settings: currency and VAT, tariff tables, account codes, prepaid accounts.

Owned by the tariff engine (`firmware/accounting/tariffs.py`); see docs/accounting.md.
"""

from __future__ import annotations

from firmware.config.fields import Section


class AccountingConfig(Section):
    currency: str = "EUR"
