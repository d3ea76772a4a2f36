"""Calls made on the office's phones come out priced in the accountant's report.

Real calls through the simulated line card, rated by the CDR writer as they end, then the
`minipbx report` command (a separate process, as an accountant runs it) reads them back.
Prices are the same in every band here so the expected figures do not depend on the day
the test runs. A prepaid account is drawn down by its extension's calls and refuses the
next chargeable one it cannot pay the first increment of, and every one at zero, while a
freephone number still goes through.
"""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware.accounting.prepaid import prepaid_state, topup
from firmware.calls.cdr import Disposition, open_readonly
from firmware.calls.lifecycle import LegState
from tests.conftest import office_config

ACCOUNTING = """
[accounting]
currency = "EUR"
vat_percent = "23"
country_code = "351"
international_prefix = "00"
default_tariff = "city"

[[accounting.tariffs]]
name = "city"
applies_to = ["city"]
increments = "60/60"
prefixes = [
    { prefix = "+3512", class = "local" },
    { prefix = "+3519", class = "mobile" },
    { prefix = "+351800", class = "free" },
]

[accounting.tariffs.classes.local]
connection_fee = "0.05"
per_minute = "0.02"
per_minute_offpeak = "0.02"
per_minute_weekend = "0.02"

[accounting.tariffs.classes.mobile]
connection_fee = "0.05"
per_minute = "0.10"
per_minute_offpeak = "0.10"
per_minute_weekend = "0.10"
increments = "30/6"

[accounting.tariffs.classes.free]

[[accounting.prepaid]]
name = "accounts-dept"
extensions = ["203"]
initial_balance = "0.10"
warning_level = "0.05"
"""


def accounting_office() -> str:
    """The office with its [accounting] section (the last in the file) replaced."""
    text = office_config()
    return text[: text.index("[accounting]")] + ACCOUNTING


@pytest.fixture
def pbx_config() -> str:
    return accounting_office()


async def call_out(pbx, extension: str, digits: str, talk_s: float = 0.5) -> None:
    phone = pbx.phone(extension)
    phone.off_hook()
    await pbx.wait_state(extension, LegState.DIALLING)
    await phone.dial(digits)
    await pbx.wait_state(extension, LegState.CONNECTED)
    line = next(line for line in pbx.sim.lines.values() if line.seized)
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    await asyncio.sleep(talk_s)
    phone.on_hook()
    await pbx.wait_idle()


def costs(data_dir: Path) -> list[tuple[str, str, str | None, int | None]]:
    with open_readonly(data_dir / "cdr.sqlite3") as connection:
        rows = connection.execute(
            "SELECT caller_number, external_number, dest_class, cost_e4 FROM cdr ORDER BY id"
        ).fetchall()
    return [tuple(row) for row in rows]


async def test_calls_are_priced_as_they_end_and_reported(pbx, data_dir: Path, tmp_path: Path) -> None:
    await call_out(pbx, "202", "9212345678")  # local: 0.05 + 1 min x 0.02
    await call_out(pbx, "202", "9912345678")  # mobile 30/6: 0.05 + 30 s x 0.10/min
    await call_out(pbx, "204", "9800123456")  # freephone
    assert costs(data_dir) == [
        ("202", "212345678", "local", 700),
        ("202", "912345678", "mobile", 1000),
        ("204", "800123456", "free", 0),
    ]
    config = tmp_path / "office.toml"
    config.write_text(accounting_office(), "utf-8")
    today = datetime.now(ZoneInfo("Europe/Lisbon")).date().isoformat()
    result = subprocess.run(
        [sys.executable, "-m", "firmware.cli", "report", "extension", "--from", today,
         "--to", today, "--format", "csv-comma", "--out", "-", "--config", str(config),
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout.lstrip("\ufeff"))))
    header = rows[0]
    by_extension = {row[0]: dict(zip(header, row, strict=True)) for row in rows[1:] if row}
    money = next(name for name in header if "cost" in name.lower() or "net" in name.lower())
    assert by_extension["202"][money] == "0.17"
    assert by_extension["204"][money] in ("0.00", "0")


async def refused(pbx, extension: str, digits: str) -> object:
    """`extension` dials `digits`, hears the special information tone, and no line is taken."""
    phone = pbx.phone(extension)
    phone.off_hook()
    await pbx.wait_state(extension, LegState.DIALLING)
    mark = phone.mark()
    await phone.dial(digits)
    assert await pbx.hears(phone, "special_information", since=mark)
    assert all(not line.seized for line in pbx.sim.lines.values())
    phone.on_hook()
    return await pbx.last_record()


async def test_prepaid_account_runs_down_and_blocks_chargeable_calls_only(pbx, data_dir: Path) -> None:
    database = data_dir / "cdr.sqlite3"
    await call_out(pbx, "203", "9212345678")  # 0.10 -> 0.03 (below the warning level)
    balance, warning, blocked = prepaid_state(database, "accounts-dept", pbx.app.config)
    assert (str(balance), warning, blocked) == ("0.0300", True, False)
    # 0.03 does not pay for the first minute of another (0.07): refused before dialling.
    record = await refused(pbx, "203", "9212345678")
    assert (record.disposition, record.cause) == (Disposition.REJECTED, "prepaid_insufficient")
    topup(database, pbx.app.config, "accounts-dept", Decimal("-0.03"), note="spent elsewhere")
    balance, warning, blocked = prepaid_state(database, "accounts-dept", pbx.app.config)
    assert (str(balance), blocked) == ("0.0000", True)
    record = await refused(pbx, "203", "9212345678")
    assert (record.disposition, record.cause) == (Disposition.REJECTED, "prepaid_exhausted")

    await call_out(pbx, "203", "9800123456")  # a freephone call is never refused
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert prepaid_state(database, "accounts-dept", pbx.app.config)[0] == balance
