"""The report scheduler: what is owed after a restart or a power cut, failures and retries,
the child process it runs, and what `status` shows. A fake report command stands in for
`minipbx report` (it writes the file the real one would)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware.accounting.schedule import ReportScheduler
from firmware.accounting.schedule_run import Job, JobRunner, Plan, jobs_from_config
from firmware.accounting.schedule_state import ScheduleState
from firmware.accounting.schedule_times import report_period
from firmware.config.load import default_config_text, parse_config
from firmware.config.schema import Config

SCHEDULE = """
[schedule]
retry_minutes = 60

[[schedule.reports]]
name = "monthly-costs"
report = "extension"
format = "csv"
period = "monthly"
day = 1
time = "06:00"
folder = "{folder}"
"""

# What the fake report command does: append a line to runs.log (so runs can be counted),
# fail with a message while fail.flag exists, else write the report file it was given.
FAKE_REPORT = """
import os, pathlib, sys
out, label, log = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
with log.open("a") as f:
    f.write(f"{label} nice={os.nice(0)}\\n")
if (log.parent / "fail.flag").exists():
    sys.exit("the report database is locked")
if not (log.parent / "empty.flag").exists():
    out.write_text(f"report for {label}\\n")
"""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    def __init__(self, now: str) -> None:
        self.now = utc(now)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def config(tmp_path: Path) -> Config:
    text = default_config_text() + SCHEDULE.format(folder=tmp_path / "reports")
    return parse_config(text, "<test>")


def fake_plan(tmp_path: Path, config: Config):
    runner = JobRunner(config, tmp_path / "data")

    def plan(job: Job, due: datetime) -> Plan:
        real = runner.default_plan(job, due)
        assert real.period is not None and real.partial is not None
        command = [sys.executable, "-c", FAKE_REPORT, str(real.partial), real.period.label]
        return Plan([*command, str(tmp_path / "runs.log")], real.period, real.partial, real.final)

    return plan


def make_scheduler(config: Config, tmp_path: Path, clock: Clock) -> ReportScheduler:
    return ReportScheduler(
        config, tmp_path / "data", clock=clock, command_builder=fake_plan(tmp_path, config)
    )


def runs(tmp_path: Path) -> list[str]:
    log = tmp_path / "runs.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


async def test_a_run_missed_while_off_runs_once_at_start_up(config: Config, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    # The job has existed since September; the appliance was off on 1 October and 1 November.
    ScheduleState(tmp_path / "data" / "schedule.sqlite3").ensure(
        ["monthly-costs"], utc("2026-09-15T00:00:00")
    )
    clock = Clock("2026-11-15T12:00:00")
    scheduler = make_scheduler(config, tmp_path, clock)

    results = await scheduler.run_due(clock())

    assert [(r.due, r.ok) for r in results] == [(utc("2026-11-01T06:00:00"), True)]
    assert runs(tmp_path) == ["2026-10"]  # once, for the month before the latest due date
    report = tmp_path / "reports" / "monthly-costs-2026-10.csv"
    assert report.read_text() == "report for 2026-10\n"
    assert list((tmp_path / "reports").glob(".*")) == []
    assert await scheduler.run_due(clock()) == []

    # A restart the next day owes nothing; the next run is 1 December at 06:00 (UTC+0).
    clock.now = utc("2026-11-16T08:00:00")
    restarted = make_scheduler(config, tmp_path, clock)
    assert await restarted.run_due(clock()) == []
    assert restarted.next_wake(utc("2026-12-01T05:59:30")) == utc("2026-12-01T06:00:00")
    clock.now = utc("2026-12-01T05:59:59")
    assert await restarted.run_due(clock()) == []
    clock.now = utc("2026-12-01T06:00:00")
    assert [r.ok for r in await restarted.run_due(clock())] == [True]
    assert runs(tmp_path) == ["2026-10", "2026-11"]


async def test_a_new_job_owes_nothing_from_before_it_was_configured(
    config: Config, tmp_path: Path
) -> None:
    clock = Clock("2026-11-15T12:00:00")
    scheduler = make_scheduler(config, tmp_path, clock)
    assert await scheduler.run_due(clock()) == []
    clock.now = utc("2026-12-01T06:00:30")
    assert [r.ok for r in await scheduler.run_due(clock())] == [True]
    assert runs(tmp_path) == ["2026-11"]


async def test_a_failed_run_is_counted_shown_and_retried_later(
    config: Config, tmp_path: Path
) -> None:
    clock = Clock("2026-11-20T00:00:00")
    scheduler = make_scheduler(config, tmp_path, clock)
    await scheduler.run_due(clock())  # first seen: owes nothing yet
    (tmp_path / "fail.flag").touch()

    clock.now = utc("2026-12-01T06:00:00")
    [failed] = await scheduler.run_due(clock())
    assert not failed.ok
    assert "exit status 1: the report database is locked" in failed.error
    shown = scheduler.status
    job = shown["jobs"]["monthly-costs"]
    assert (shown["failed"], shown["succeeded"]) == (1, 0)
    assert (job["failures"], job["consecutive_failures"]) == (1, 1)
    assert "the report database is locked" in job["last_error"]
    assert job["retry_at"] == "2026-12-01T07:00:00.000Z"
    assert job["owed"] == "2026-12-01T06:00:00.000Z"
    assert not (tmp_path / "reports" / "monthly-costs-2026-11.csv").exists()

    clock.now = utc("2026-12-01T06:59:00")
    assert await scheduler.run_due(clock()) == []  # waiting to retry
    assert scheduler.next_wake(clock()) == utc("2026-12-01T07:00:00")
    (tmp_path / "fail.flag").unlink()
    clock.now = utc("2026-12-01T07:00:00")
    [retried] = await scheduler.run_due(clock())
    assert retried.ok and retried.due == utc("2026-12-01T06:00:00")
    job = scheduler.status["jobs"]["monthly-costs"]
    assert (job["failures"], job["consecutive_failures"], job["last_error"]) == (1, 0, "")
    assert job["last_file"] == str(tmp_path / "reports" / "monthly-costs-2026-11.csv")
    assert runs(tmp_path) == ["2026-11", "2026-11"]


async def test_a_report_command_that_writes_no_file_is_a_failure(
    config: Config, tmp_path: Path
) -> None:
    clock = Clock("2026-11-20T00:00:00")
    scheduler = make_scheduler(config, tmp_path, clock)
    await scheduler.run_due(clock())
    (tmp_path / "empty.flag").touch()
    clock.now = utc("2026-12-01T06:00:00")
    [result] = await scheduler.run_due(clock())
    assert not result.ok and "wrote no file" in result.error


async def test_the_job_runs_in_a_child_process_at_low_priority(
    config: Config, tmp_path: Path
) -> None:
    runner = JobRunner(config, tmp_path / "data", command_builder=fake_plan(tmp_path, config))
    [job] = jobs_from_config(config)
    result = await runner.run(job, utc("2026-12-01T06:00:00"))
    assert result.ok
    line = (tmp_path / "runs.log").read_text().split()
    assert line[1] == f"nice={min(os.nice(0) + 10, 19)}"


async def test_the_loop_catches_up_at_start_and_stops_cleanly(
    config: Config, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    ScheduleState(tmp_path / "data" / "schedule.sqlite3").ensure(
        ["monthly-costs"], utc("2026-10-15T00:00:00")
    )
    scheduler = make_scheduler(config, tmp_path, Clock("2026-11-02T00:00:00"))
    await scheduler.start()
    try:
        for _ in range(200):
            if scheduler.status["succeeded"]:
                break
            await asyncio.sleep(0.05)
        assert scheduler.status["succeeded"] == 1
    finally:
        await scheduler.stop()
    assert runs(tmp_path) == ["2026-10"]
    assert scheduler._task is None


def test_the_real_command_asks_minipbx_report_for_the_previous_month(
    config: Config, tmp_path: Path
) -> None:
    runner = JobRunner(config, tmp_path / "data", "/etc/minipbx.toml")
    [job] = jobs_from_config(config)
    plan = runner.default_plan(job, utc("2026-12-01T06:00:00"))
    folder = tmp_path / "reports"
    assert plan.command == [
        sys.executable, "-m", "firmware.cli", "report", "extension",
        "--from", "2026-11-01", "--to", "2026-11-30", "--format", "csv",
        "--out", str(folder / ".monthly-costs-2026-11.partial.csv"),
        "--data-dir", str(tmp_path / "data"), "--config", "/etc/minipbx.toml",
    ]  # fmt: skip
    assert plan.final == folder / "monthly-costs-2026-11.csv"
    assert plan.period == report_period("monthly", utc("2026-12-01T06:00:00"), "Europe/Lisbon")


def test_the_retention_job_archives_whole_months(tmp_path: Path) -> None:
    text = default_config_text() + '\n[schedule.retention]\nmonths = 24\nfolder = "/srv/old"\n'
    config = parse_config(text, "<test>")
    [job] = jobs_from_config(config)
    assert (job.name, job.kind) == ("retention", "retention")
    plan = JobRunner(config, tmp_path).default_plan(job, utc("2026-11-01T03:30:00"))
    start = plan.command.index("firmware.cli") + 1
    assert plan.command[start:] == [
        "cdr", "archive", "--before", "2024-11-01", "--folder", "/srv/old",
        "--data-dir", str(tmp_path),
    ]  # fmt: skip


def test_status_lists_the_next_run(config: Config, tmp_path: Path) -> None:
    scheduler = make_scheduler(config, tmp_path, Clock("2026-07-10T00:00:00"))
    job = scheduler.status["jobs"]["monthly-costs"]
    assert job["next_due"] == "2026-08-01T05:00:00.000Z"  # 06:00 in Lisbon's summer
    assert (job["kind"], job["running"]) == ("report", False)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[[schedule.reports]]\nname = "a"\nreport = "extension"\nemail = ["x@y.pt"]\n',
            "no [schedule.smtp] section",
        ),
        (
            '[[schedule.reports]]\nname = "a"\nreport = "extension"\n'
            '[[schedule.reports]]\nname = "a"\nreport = "class"\n',
            "report names must be unique: a repeated",
        ),
        (
            '[[schedule.reports]]\nname = "retention"\nreport = "extension"\n',
            "reserved for CDR retention",
        ),
        (
            '[[schedule.reports]]\nname = "a"\nreport = "extension"\nday = 31\n',
            "less than or equal to 28",
        ),
        ('[[schedule.reports]]\nname = "a"\nreport = "costs"\n', "'costs' is not a report kind"),
        (
            '[[schedule.reports]]\nname = "a"\nreport = "extension"\ntime = "6:00"\n',
            "must be HH:MM",
        ),
        (
            '[[schedule.reports]]\nname = "a"\nreport = "extension"\nemail = ["nobody"]\n',
            "look like",
        ),
        ('[schedule.smtp]\nhost = "h"\nfrom = "a@b.pt"\nsender = "c@d.pt"\n', "sender"),
    ],
)
def test_config_errors_say_what_to_fix(extra: str, message: str) -> None:
    from firmware.config.load import ConfigError

    with pytest.raises(ConfigError) as raised:
        parse_config(default_config_text() + "\n" + extra, "<test>")
    assert message in "\n".join(raised.value.errors)


def test_a_late_start_after_the_due_minute_still_runs(config: Config, tmp_path: Path) -> None:
    """The due time is owed until done: a run at 06:00:30 still covers the 06:00 occurrence."""
    scheduler = make_scheduler(config, tmp_path, Clock("2026-11-20T00:00:00"))
    [job] = scheduler.jobs
    asyncio.run(scheduler.load_state(utc("2026-11-20T00:00:00")))
    assert scheduler.owed(job, utc("2026-12-01T06:00:30")) == utc("2026-12-01T06:00:00")
    assert scheduler.owed(job, utc("2026-12-01T05:59:59")) is None
    assert scheduler.owed(job, utc("2026-12-01T06:00:00") - timedelta(days=10)) is None


async def test_the_real_report_command_writes_the_scheduled_file(tmp_path: Path) -> None:
    """No fake: the child is `python -m firmware.cli report extension ...` on a real database."""
    import csv

    from firmware.calls.cdr import CallRecord, CdrStore

    data = tmp_path / "data"
    data.mkdir()
    store = CdrStore(data / "cdr.sqlite3")
    start = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
    for caller, talk_s in (("202", 120), ("202", 30), ("203", 60)):
        store.write_blocking(
            CallRecord(
                start=start,
                answer=start + timedelta(seconds=5),
                end=start + timedelta(seconds=5 + talk_s),
                caller_number=caller,
                caller_name="",
                dialled="204",
                called_extension="204",
                answered_extension="204",
                line=None,
                line_group=None,
                direction="internal",
                disposition="answered",
                hangup_side="caller",
                destination_kind="internal",
            )
        )
    store.write_blocking(  # in December: outside the reported month
        CallRecord(
            start=datetime(2026, 12, 1, 9, tzinfo=UTC),
            answer=None,
            end=datetime(2026, 12, 1, 9, 0, 20, tzinfo=UTC),
            caller_number="202",
            caller_name="",
            dialled="204",
            called_extension="204",
            answered_extension=None,
            line=None,
            line_group=None,
            direction="internal",
            disposition="no_answer",
            hangup_side="system",
        )
    )
    store.close()
    text = default_config_text() + SCHEDULE.format(folder=tmp_path / "reports")
    config = parse_config(text.replace('format = "csv"', 'format = "csv-comma"'), "<test>")
    now = utc("2026-11-20T00:00:00")
    scheduler = ReportScheduler(config, data, clock=lambda: now)
    await scheduler.run_due(now)
    now = utc("2026-12-01T06:00:00")
    [result] = await scheduler.run_due(now)
    assert result.ok, result.error
    with open(tmp_path / "reports" / "monthly-costs-2026-11.csv", encoding="utf-8") as file:
        rows = {row[0]: row for row in csv.reader(file)}
    header = rows["Extension"]
    calls, talk = header.index("Calls"), header.index("Talk time (s)")
    assert (rows["202"][calls], rows["202"][talk]) == ("2", "150")
    assert (rows["203"][calls], rows["203"][talk]) == ("1", "60")
    assert rows["Total"][calls] == "3"


def test_schedule_commands_list_and_run_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import sqlite3

    from firmware.accounting import cli_schedule
    from firmware.calls.cdr import _migrate

    data = tmp_path / "data"
    data.mkdir()
    connection = sqlite3.connect(data / "cdr.sqlite3", isolation_level=None)
    _migrate(connection)  # an empty database at the current schema
    connection.close()
    config_file = tmp_path / "office.toml"
    config_file.write_text(default_config_text() + SCHEDULE.format(folder=tmp_path / "reports"))

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="minipbx")
        cli_schedule.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args([*argv, "--config", str(config_file), "--data-dir", str(data)])
        return int(args.func(args))

    assert run("schedule", "list") == 0
    assert capsys.readouterr().out.startswith("monthly-costs: extension monthly csv; next ")
    assert run("schedule", "run-now", "weekly") == 2
    assert "no scheduled job 'weekly' (jobs: monthly-costs)" in capsys.readouterr().err
    assert run("schedule", "run-now", "monthly-costs") == 0
    assert "monthly-costs: done in" in capsys.readouterr().out
    [written] = (tmp_path / "reports").glob("monthly-costs-*.csv")
    assert written.read_text(encoding="utf-8-sig").splitlines()[-1].startswith("Total")
