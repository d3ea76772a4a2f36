"""`minipbx tariff ...` and `minipbx prepaid ...` run as subprocesses against a temp data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_rating_store import ACCOUNTING, BASE, call, costs_of, make_config, write_all

ROOT = Path(__file__).resolve().parents[2]

PREPAID = """
[[accounting.prepaid]]
name = "lobby"
extensions = ["203"]
warning_level = "1.00"
initial_balance = "1.20"
"""


def minipbx(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def write_config(folder: Path, local_price: str = "0.02", extra: str = "") -> Path:
    path = folder / "pbx.toml"
    text = BASE + ACCOUNTING.format(local_price=local_price, tier_mode="per_call") + PREPAID + extra
    path.write_text(text, "utf-8")
    return path


DECK_TARIFF = """
[[accounting.tariffs]]
name = "deck"
applies_to = ["{applies}"]
rates_csv = "rates.csv"

[accounting.tariffs.classes.national]
per_minute = "0.03"
"""


def test_tariff_check_reads_the_deck_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "rates.csv").write_text(
        "prefix;class;per_minute\n+351;national;\n+3519;mobile;0,09\n+35196;mobile;0,09\n", "utf-8"
    )
    config = write_config(tmp_path, extra=DECK_TARIFF.format(applies="city"))
    result = minipbx("tariff", "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        "tariff deck: applies to city; 3 prefixes (0 in the config, 3 from rates.csv), classes national"
        in lines
    )
    assert (
        "  note: rates.csv:3: +3519 (mobile) overrides +351 (national, rates.csv:2) for numbers starting +3519"
        in lines
    )
    assert "  note: city is priced by tariff main, listed first (the first wins)" in lines
    assert lines[-1] == "tariff check: 0 error(s), 3 note(s)"


def test_tariff_check_reports_a_bad_deck_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "rates.csv").write_text(
        "prefix;class;per_minute\n+351;national;\n+3519;mobile;cheap\n", "utf-8"
    )
    config = write_config(tmp_path, extra=DECK_TARIFF.format(applies="city"))
    result = minipbx("tariff", "check", "--config", str(config))
    assert result.returncode == 2
    assert "line 3: per_minute: 'cheap' is not an amount" in result.stderr
    # the core's own check sees it too (run from the config's folder: load_config itself does
    # not yet resolve rates_csv next to the file)
    check = minipbx("check-config", str(config), cwd=tmp_path)
    assert check.returncode == 1
    assert "line 3: per_minute: 'cheap' is not an amount" in check.stdout


def test_tariff_check_names_unknown_lines(tmp_path: Path) -> None:
    (tmp_path / "rates.csv").write_text("prefix,class\n+351,national\n", "utf-8")
    config = write_config(tmp_path, extra=DECK_TARIFF.format(applies="nowhere"))
    result = minipbx("tariff", "check", "--config", str(config), "--quiet")
    assert result.returncode == 2, "the config itself is refused (check-config says the same)"
    assert (
        "accounting.tariffs[1].applies_to: 'nowhere' is not a line group, line, SIP peer or "
        "sibling site" in result.stderr
    )


def test_tariff_price_explains_a_call(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = minipbx(
        "tariff",
        "price",
        "912345678",
        "--seconds",
        "31",
        "--at",
        "2024-05-06 11:00",
        "--config",
        str(config),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "number 912345678 (E.164 +351912345678): class mobile, tariff main, prefix row prefixes[1]",
        "answered 2024-05-06 11:00 Europe/Lisbon: peak band, 36 s billed (30/6)",
        "net 0.1100 EUR",
    ]


def test_prepaid_topup_list_and_ledger(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data = tmp_path / "data"
    common = ("--config", str(config), "--data-dir", str(data))
    listed = minipbx("prepaid", "list", *common)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split() == ["lobby", "1.20", "EUR", "1.00", "ok"]
    topped = minipbx("prepaid", "topup", "lobby", "10,50", "--note", "cash", *common)
    assert topped.returncode == 0, topped.stderr
    assert topped.stdout.strip() == "lobby: +10.50 EUR, balance 11.70 EUR"
    wrong = minipbx("prepaid", "topup", "nobody", "5", *common)
    assert wrong.returncode == 1
    assert "no prepaid account named 'nobody'" in wrong.stderr
    history = minipbx("prepaid", "ledger", "lobby", *common)
    rows = [line.split() for line in history.stdout.splitlines()[1:]]
    assert [row[1:] for row in rows] == [
        ["1.2000", "1.2000", "opening", "balance"],
        ["10.5000", "11.7000", "topup", "(cash)"],
    ]


def test_tariff_rerate_prints_changes_and_totals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    old = make_config("0.02")
    database = data / "cdr.sqlite3"
    write_all(
        database,
        [
            call("213456789", 61, answer="2024-05-06T10:00:00"),
            call("912345678", 31, answer="2024-05-07T10:00:00"),
            call("213456789", 61, answer="2024-06-03T10:00:00"),
        ],
        lambda: old,
    )
    config = write_config(tmp_path, local_price="0.04")
    result = minipbx(
        "tariff", "rerate", "--from", "2024-05-01", "--to", "2024-05-31",
        "--config", str(config), "--data-dir", str(data),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:4] == [
        "re-rated 2024-05-01 .. 2024-05-31 (Europe/Lisbon): 2 calls, 1 changed",
        "  net total before: 0.2000 EUR",
        "  net total after:  0.2400 EUR",
        "  difference:       +0.0400 EUR",
    ]
    assert costs_of(database) == [1300, 1100, 900]
    missing = minipbx("tariff", "rerate", "--from", "2024-05-01", "--to", "2024-05-31",
                      "--config", str(config), "--data-dir", str(tmp_path / "none"))  # fmt: skip
    assert missing.returncode == 1 and "no CDR database at" in missing.stderr
