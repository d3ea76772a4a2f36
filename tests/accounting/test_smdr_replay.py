"""`minipbx smdr replay`: a period's records in exactly the live layout, local-time bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware.calls.cdr import CallRecord, CdrStore, Direction, Disposition, HangupSide
from firmware.cli import main
from firmware.config.load import default_config_text

HEADER = (
    b"Date     Time    Ext   CO     Dial Number                Ring Duration      Cost "
    b"Acc code     CD\r\n" + b"-" * 96 + b"\r\n"
)


def internal_call(start: datetime, caller: str) -> CallRecord:
    return CallRecord(
        start=start, answer=start + timedelta(seconds=3), end=start + timedelta(seconds=63),
        caller_number=caller, caller_name="", dialled="203", called_extension="203",
        answered_extension="203", line=None, line_group=None, direction=Direction.INTERNAL,
        disposition=Disposition.ANSWERED, hangup_side=HangupSide.CALLER,
    )  # fmt: skip


@pytest.fixture
def office(tmp_path: Path) -> tuple[Path, Path]:
    """A data dir with calls around the edges of 1 May 2024 in Lisbon (UTC+1 then)."""
    store = CdrStore(tmp_path / "cdr.sqlite3")
    for start, caller in (
        (datetime(2024, 4, 30, 22, 59, 59, tzinfo=UTC), "201"),  # 30/04 23:59 local: out
        (datetime(2024, 4, 30, 23, 0, 0, tzinfo=UTC), "202"),  # 01/05 00:00 local: in
        (datetime(2024, 5, 1, 9, 15, 0, tzinfo=UTC), "204"),  # 01/05 10:15
        (datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC), "205"),  # 01/05 13:00
        (datetime(2024, 5, 1, 23, 0, 0, tzinfo=UTC), "206"),  # 02/05 00:00 local: out
    ):
        store.write_blocking(internal_call(start, caller))
    store.close()
    config = tmp_path / "office.toml"
    config.write_text(default_config_text() + "\n[smdr]\nheader_every = 2\n", "utf-8")
    return tmp_path, config


def line(date: str, time: str, caller: str) -> bytes:
    # Typed from the docs table: internal call to 203, 3 s of ringing, 60 s of talk.
    return (
        f"{date} {time}   {caller}          203                        0'03 00:01'00".encode()
        + (b" " * 26 + b"\r\n")
    )


def test_replay_of_a_local_day_prints_its_records_with_headers_as_live(
    office, capsysbinary
) -> None:
    data_dir, config = office
    code = main(["smdr", "replay", "--from", "2024-05-01", "--to", "2024-05-01",
                 "--config", str(config), "--data-dir", str(data_dir)])  # fmt: skip
    out, err = capsysbinary.readouterr()
    assert code == 0
    assert out == (
        HEADER
        + line("01/05/24", "00:00", "202")
        + line("01/05/24", "10:15", "204")
        + HEADER
        + line("01/05/24", "13:00", "205")
    )
    assert b"3 records" in err


def test_replay_between_moments_to_a_file_without_headers(office, tmp_path: Path) -> None:
    data_dir, config = office
    target = tmp_path / "replay.txt"
    code = main(["smdr", "replay", "--from", "2024-05-01T10:15", "--to", "2024-05-01T13:00",
                 "--out", str(target), "--no-header", "--config", str(config),
                 "--data-dir", str(data_dir)])  # fmt: skip
    assert code == 0
    assert target.read_bytes() == line("01/05/24", "10:15", "204")  # --to is excluded


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2024-05-32", "2024-06-01", "is not a date"),
        ("1 May", "2024-06-01", "is not a date"),
        ("2024-06-01", "2024-05-01", "is not before"),
    ],
)
def test_bad_periods_are_refused_with_a_reason(office, capsys, start, end, message) -> None:
    data_dir, config = office
    code = main(["smdr", "replay", "--from", start, "--to", end, "--config", str(config),
                 "--data-dir", str(data_dir)])  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_data_dir_without_records_says_so(tmp_path: Path, capsys) -> None:
    code = main(["smdr", "replay", "--from", "2024-05-01", "--to", "2024-05-01",
                 "--data-dir", str(tmp_path)])  # fmt: skip
    assert code == 1
    assert "no call records" in capsys.readouterr().err
