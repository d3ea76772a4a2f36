"""The 30-extension office the accounting benchmarks use: the embedded default config grown
to 30 desk phones (201-230) and 4 city lines, with departments for the reports."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `python bench/accounting/x.py` from a checkout
    sys.path.insert(0, str(ROOT))

from firmware.config.load import default_config_text, parse_config  # noqa: E402
from firmware.config.schema import Config  # noqa: E402

EXTENSIONS = 30
LINES = ("city1", "city2", "city3", "city4")
NAMES = (
    "Reception", "Sales 1", "Sales 2", "Sales 3", "Sales 4", "Sales 5", "Accounts 1",
    "Accounts 2", "Accounts 3", "Support 1", "Support 2", "Support 3", "Support 4", "Support 5",
    "Support 6", "Warehouse 1", "Warehouse 2", "Manager", "Assistant", "Meeting room",
    "Marketing 1", "Marketing 2", "HR", "IT 1", "IT 2", "Legal", "Purchasing 1",
    "Purchasing 2", "Lobby", "Kitchen",
)  # fmt: skip
DEPARTMENTS = {
    "front": ("201", "218", "219", "220", "229", "230"),
    "sales": ("202", "203", "204", "205", "206", "221", "222"),
    "accounts": ("207", "208", "209", "227", "228", "226", "223"),
    "support": ("210", "211", "212", "213", "214", "215", "224", "225"),
    "warehouse": ("216", "217"),
}


def office_config_text() -> str:
    text = default_config_text()
    text = re.sub(r"(?m)^fxs_ports = \d+.*$", f"fxs_ports = {EXTENSIONS}", text)
    text = re.sub(r"(?m)^fxo_ports = \d+.*$", f"fxo_ports = {len(LINES)}", text)
    text = text.replace("port = 9\ngroup", f"port = {EXTENSIONS + 1}\ngroup")
    text = text.replace("port = 10\ngroup", f"port = {EXTENSIONS + 2}\ngroup")
    more_lines = "".join(
        f'\n[[lines]]\nname = "{name}"\nport = {EXTENSIONS + 3 + index}\ngroup = "city"\n'
        'incoming = ["201"]\ndisconnect = ["polarity", "loop_current", "tone"]\n'
        for index, name in enumerate(LINES[2:])
    )
    extensions = "".join(
        f'\n[[extensions]]\nnumber = "{200 + port}"\nname = "{NAMES[port - 1]}"\n'
        f'port = {port}\nclass_of_service = "manager"\n'
        for port in range(9, EXTENSIONS + 1)
    )
    departments = "\n[reports.departments]\n" + "".join(
        f"{name} = [{', '.join(repr(number).replace(chr(39), chr(34)) for number in members)}]\n"
        for name, members in DEPARTMENTS.items()
    )
    return text + more_lines + extensions + departments


def office_config() -> Config:
    return parse_config(office_config_text(), "<bench office>")
