"""Running one scheduled job: the work in a low-priority child process, then the e-mail.

The report itself is written by `python -m firmware.cli report ...` (retention by
`... cdr archive ...`) in its own process, so the telephony loop never builds a
spreadsheet; it only waits for the child. The report is written under a hidden
`.partial` name and renamed when the child succeeds, so a failed run never leaves a
half-written file under the final name. The e-mail is sent from a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from firmware.accounting.schedule_mail import mail_report
from firmware.accounting.schedule_times import (
    Period,
    Timing,
    report_period,
    retention_cutoff,
)
from firmware.config.schedule_schema import RETENTION_JOB, ScheduledReportConfig
from firmware.config.schema import Config

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 1800.0
"""A child still running after this long is killed and the run counts as failed."""

EXTENSIONS = {
    "csv": ".csv",
    "csv-comma": ".csv",
    "csv-semicolon": ".csv",
    "xlsx": ".xlsx",
    "pdf": ".pdf",
}


@dataclass(frozen=True)
class Job:
    """A scheduled report, or (with `report` None) the CDR retention job."""

    name: str
    timing: Timing
    report: ScheduledReportConfig | None = None

    @property
    def kind(self) -> str:
        return "report" if self.report is not None else "retention"


def jobs_from_config(config: Config) -> list[Job]:
    """Every job the config asks for, the retention job last."""
    timezone = config.site.timezone
    jobs = [
        Job(
            report.name,
            Timing.parse(report.period, report.time, report.day, report.weekday, timezone),
            report,
        )
        for report in config.schedule.reports
    ]
    retention = config.schedule.retention
    if retention.months is not None:
        timing = Timing.parse("monthly", retention.time, retention.day, "monday", timezone)
        jobs.append(Job(RETENTION_JOB, timing))
    return jobs


@dataclass(frozen=True)
class Plan:
    """What one run does: the child's command line and where its file goes."""

    command: list[str]
    period: Period | None = None
    partial: Path | None = None  # what the child writes
    final: Path | None = None  # what it is renamed to on success


@dataclass(frozen=True)
class RunResult:
    job: str
    due: datetime
    ok: bool
    file: str = ""
    error: str = ""
    seconds: float = 0.0
    output: str = ""


CommandBuilder = Callable[[Job, datetime], Plan]


def _low_priority_prefix() -> list[str]:
    """nice and ionice (best effort, lowest level) when the host has them."""
    prefix: list[str] = []
    if shutil.which("nice"):
        prefix += ["nice", "-n", "10"]
    if shutil.which("ionice"):
        prefix += ["ionice", "-c", "2", "-n", "7"]
    return prefix


class JobRunner:
    """Plans and runs jobs for one config; shared by the scheduler and `schedule run-now`."""

    def __init__(
        self,
        config: Config,
        data_dir: Path,
        config_path: str | None = None,
        command_builder: CommandBuilder | None = None,
        timeout_s: float = JOB_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.config_path = config_path
        self.plan = command_builder or self.default_plan
        self.timeout_s = timeout_s
        self._prefix = _low_priority_prefix()

    def _cli(self, *arguments: str) -> list[str]:
        command = [sys.executable, "-m", "firmware.cli", *arguments]
        command += ["--data-dir", str(self.data_dir)]
        if self.config_path:
            command += ["--config", str(self.config_path)]
        return command

    def default_plan(self, job: Job, due: datetime) -> Plan:
        timezone = self.config.site.timezone
        if job.report is None:
            retention = self.config.schedule.retention
            assert retention.months is not None
            cutoff: date = retention_cutoff(due, retention.months, timezone)
            folder = retention.folder or str(self.data_dir / "archive")
            return Plan(
                self._cli("cdr", "archive", "--before", cutoff.isoformat(), "--folder", folder)
            )
        report = job.report
        period = report_period(report.period, due, timezone)
        folder = Path(report.folder) if report.folder else self.data_dir / "reports"
        stem = f"{job.name}-{period.label}"
        extension = EXTENSIONS[report.format]
        partial = folder / f".{stem}.partial{extension}"
        command = self._cli(
            "report",
            report.report,
            "--from",
            period.first.isoformat(),
            "--to",
            period.last.isoformat(),
            "--format",
            report.format,
            "--out",
            str(partial),
            *report.arguments,
        )
        return Plan(command, period, partial, folder / f"{stem}{extension}")

    async def run(self, job: Job, due: datetime) -> RunResult:
        """Run the job for the occurrence `due`; never raises for a failed run."""
        started = time.monotonic()
        try:
            plan = self.plan(job, due)
            output = await self._run_child(plan)
            file = await asyncio.to_thread(self._publish, plan)
            if file is not None and job.report is not None and job.report.email:
                smtp = self.config.schedule.smtp
                assert smtp is not None  # the config refuses recipients without a server
                subject = f"{self.config.site.name}: {job.name} {plan.period.label if plan.period else ''}"
                await asyncio.to_thread(mail_report, smtp, job.report.email, subject.strip(), file)
        except Exception as error:
            seconds = time.monotonic() - started
            log.error("event=schedule_job_failed job=%s due=%s error=%r", job.name, due, str(error))
            return RunResult(job.name, due, False, error=str(error), seconds=seconds)
        seconds = time.monotonic() - started
        shown = str(file) if file is not None else ""
        log.info("event=schedule_job_done job=%s file=%s seconds=%.1f", job.name, shown, seconds)
        return RunResult(job.name, due, True, file=shown, seconds=seconds, output=output)

    async def _run_child(self, plan: Plan) -> str:
        if plan.partial is not None:
            await asyncio.to_thread(plan.partial.parent.mkdir, parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            *self._prefix,
            *plan.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C meant for the core does not kill a half report
        )
        if not self._prefix:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, process.pid, 10)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(
                f"the job ran for more than {self.timeout_s:.0f} s and was killed"
            ) from None
        except asyncio.CancelledError:
            log.warning("event=schedule_job_orphaned pid=%d (the scheduler stopped)", process.pid)
            raise
        if process.returncode != 0:
            reason = (
                stderr.decode("utf-8", "replace").strip()
                or stdout.decode("utf-8", "replace").strip()
            )
            raise RuntimeError(f"exit status {process.returncode}: {reason[-1000:]}")
        return stdout.decode("utf-8", "replace").strip()

    @staticmethod
    def _publish(plan: Plan) -> Path | None:
        """Rename the child's file to its final name (it must exist and not be empty)."""
        if plan.partial is None or plan.final is None:
            return None
        if not plan.partial.is_file() or plan.partial.stat().st_size == 0:
            raise RuntimeError(f"the report command succeeded but wrote no file at {plan.partial}")
        os.replace(plan.partial, plan.final)
        return plan.final
