"""`minipbx mode` as a subprocess against a temporary data folder, read back with sqlite3."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mode_office import WEEK, FakeTime, utc

from firmware.cli import main
from firmware.config.load import default_config_text, parse_config
from firmware.modes.service import ModeService

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = (
    default_config_text()
    + '\n[modes]\ncountry = "PT"\nsubdivision = "Lisboa"\n'
    + WEEK
    + """
[[modes.closed]]
from = 2026-08-03
to = 2026-08-14
name = "Summer vacation"
"""
)


@pytest.fixture
def office_dir(tmp_path: Path) -> Path:
    (tmp_path / "office.toml").write_text(CONFIG)
    return tmp_path


def minipbx(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware", "mode", *arguments,
         "--config", str(folder / "office.toml"), "--data-dir", str(folder / "data")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def in_process(
    folder: Path, capsys: pytest.CaptureFixture[str], *arguments: str
) -> subprocess.CompletedProcess[str]:
    """The same command through `firmware.cli.main`, without a new interpreter (faster)."""
    argv = ["mode", *arguments, "--config", str(folder / "office.toml"),
            "--data-dir", str(folder / "data")]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def override_rows(folder: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(folder / "data" / "modes.sqlite3") as connection:
        return connection.execute(
            "SELECT mode, set_by, set_at_utc, expires_utc FROM mode_override"
        ).fetchall()


def test_show_at_a_given_time_prints_the_day_and_what_is_coming(office_dir: Path) -> None:
    result = minipbx(office_dir, "show", "--at", "2026-06-09T17:59")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "mode day (schedule) until Tue 18:00",
        "today (Tue 2026-06-09, Europe/Lisbon): 00:00-08:30 night, 08:30-12:30 day, "
        "12:30-14:00 lunch, 14:00-18:00 day, 18:00-24:00 night",
        "closures and holidays in the next 60 days:",
        "  Wed 2026-06-10  holiday  "
        "holiday:Day of Portugal, Camões, and the Portuguese Communities",
        "  Sat 2026-06-13  holiday  holiday:Saint Anthony's Day",
        "  Mon 2026-08-03 to Sat 2026-08-08  holiday  closed:Summer vacation",
    ]
    assert not (office_dir / "data" / "modes.sqlite3").exists()  # showing creates nothing


def test_set_for_a_while_then_auto(office_dir: Path) -> None:
    before = datetime.now(UTC)
    result = minipbx(office_dir, "set", "night", "--for", "1h30m", "--by", "installer")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mode night forced by installer until ")
    ((mode, by, set_at, expires),) = override_rows(office_dir)
    assert (mode, by) == ("night", "installer")
    set_time = datetime.fromisoformat(str(set_at).replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= set_time <= datetime.now(UTC)
    expiry = datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
    assert expiry - set_time == timedelta(hours=1, minutes=30)

    shown = json.loads(minipbx(office_dir, "--json").stdout)
    assert (shown["mode"], shown["reason"], shown["until"]) == ("night", "override", expires)
    assert shown["override"]["set_by"] == "installer"

    result = minipbx(office_dir, "auto", "--by", "installer")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("override night cleared; back to automatic: mode ")
    assert override_rows(office_dir) == []
    history = json.loads(minipbx(office_dir, "show", "--json").stdout)["history"]
    assert [(h["event"], h["mode"], h["by"]) for h in history] == [
        ("override_cleared", "night", "installer"),
        ("override_set", "night", "installer"),
    ]


def test_set_until_a_local_time(office_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = in_process(office_dir, capsys, "set", "lunch", "--until", "2099-01-05T08:30")
    assert result.returncode == 2
    assert "an override lasts at most 366 days" in result.stderr
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    result = in_process(office_dir, capsys, "set", "lunch", "--until", f"{tomorrow}T08:30")
    assert result.returncode == 0, result.stderr
    (row,) = override_rows(office_dir)
    # January or July: Lisbon is UTC or UTC+1, so 08:30 local is 08:30 or 07:30 UTC
    assert row[3] in (f"{tomorrow}T08:30:00.000Z", f"{tomorrow}T07:30:00.000Z")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (
            ("set", "evening"),
            "minipbx mode: 'evening' is not a mode; modes are day, lunch, night, holiday",
        ),
        (
            ("set", "night", "--for", "2 hours"),
            "minipbx mode: --for '2 hours': write a duration like 2h, 90m, 1h30m or 3d",
        ),
        (("set", "night", "--for", "0m"), "minipbx mode: --for '0m' is no time at all"),
        (
            ("set", "night", "--until", "yesterday"),
            "minipbx mode: 'yesterday' is not an ISO time like 2026-06-08T08:30",
        ),
        (
            ("set", "night", "--until", "2001-01-01T00:00"),
            "minipbx mode: --until 2001-01-01T00:00 is already past",
        ),
    ],
)
def test_bad_requests_exit_2_and_change_nothing(
    office_dir: Path, capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...], error: str
) -> None:
    result = in_process(office_dir, capsys, *arguments)
    assert (result.returncode, result.stderr.strip()) == (2, error)
    assert not (office_dir / "data" / "modes.sqlite3").exists()


def test_holidays_of_a_year(office_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = in_process(office_dir, capsys, "holidays", "--year", "2026", "--json")
    days = json.loads(result.stdout)["days"]
    assert len(days) == 15
    assert days[8] == {"from": "2026-08-03", "to": "2026-08-14", "mode": "holiday",
                       "reason": "closed:Summer vacation"}  # fmt: skip
    assert [d["from"] for d in days if d["reason"].startswith("holiday:")][:3] == [
        "2026-01-01", "2026-04-03", "2026-04-05"]  # fmt: skip


def test_a_bad_config_file_is_reported(
    office_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (office_dir / "office.toml").write_text(CONFIG.replace('country = "PT"', 'country = "XX"'))
    result = in_process(office_dir, capsys)
    assert result.returncode == 2
    assert "modes: country: 'XX' is not a country the holidays package knows" in result.stderr


async def test_the_running_core_picks_up_the_cli(office_dir: Path) -> None:
    config = parse_config(CONFIG)
    time = FakeTime(utc("2026-06-05T08:00:00"))  # Friday 09:00 local: day
    service = ModeService(config, office_dir / "data", clock=time.clock, sleep=time.sleep, poll_s=2)
    await service.start()
    try:
        assert service.current() == "day"
        result = minipbx(office_dir, "set", "lunch")  # no expiry: in force whatever the time
        assert result.returncode == 0, result.stderr
        assert service.current() == "day"  # not before the next poll
        await time.advance(2.0)
        assert service.current() == "lunch"
        assert service.status()["override"]["set_by"].startswith("cli")
        assert minipbx(office_dir, "auto").returncode == 0
        await time.advance(2.0)
        assert service.current() == "day"
    finally:
        await service.stop()
