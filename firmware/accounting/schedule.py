"""The appliance's own scheduler for report delivery and CDR retention.

One task on the core's loop sleeps until the next job is due, then runs due jobs one at
a time, each in a low-priority child process (`schedule_run.JobRunner`). What was done
is kept in DATA_DIR/schedule.sqlite3 (`schedule_state`), read and written in threads:

* an occurrence whose run succeeded is never run again, even after a restart;
* an occurrence missed while the appliance was off runs once at start-up (only the
  latest one: a month's report owed three times is written once, for the last month);
* a job added to the config owes nothing from before it was first seen;
* a failed run is logged and counted, and tried again `retry_minutes` later until it
  succeeds or a newer occurrence replaces it.

The sleep is capped at a minute so a wall clock set late (a board without a battery
clock getting NTP after boot) is noticed soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware.accounting.schedule_run import (
    CommandBuilder,
    Job,
    JobRunner,
    RunResult,
    jobs_from_config,
)
from firmware.accounting.schedule_state import JobState, ScheduleState, format_utc
from firmware.accounting.schedule_times import latest_due, next_due
from firmware.config.schema import Config

log = logging.getLogger(__name__)

MAX_SLEEP_S = 60.0
STATE_FILE = "schedule.sqlite3"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ReportScheduler:
    """Runs due jobs (each in a subprocess, off the core's loop) and remembers the last run."""

    def __init__(
        self,
        config: Config,
        data_dir: Path,
        *,
        config_path: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
        command_builder: CommandBuilder | None = None,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.config_path = config_path
        self.clock = clock
        self.state = ScheduleState(self.data_dir / STATE_FILE)
        self._command_builder = command_builder
        self.runner = JobRunner(config, self.data_dir, config_path, command_builder)
        self.jobs = jobs_from_config(config)
        self._states: dict[str, JobState] = {}
        self._retry_at: dict[str, datetime] = {}
        self._running: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.counters = {"runs": 0, "succeeded": 0, "failed": 0}

    async def start(self) -> None:
        """Begin waiting for the next due job (jobs owed from while it was off run first)."""
        if self._task is None and self.jobs:
            self._task = asyncio.create_task(self._loop(), name="report-scheduler")

    async def stop(self) -> None:
        """Stop waiting; a job already running finishes in its own process."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def apply_config(self, config: Config) -> None:
        """A reloaded config: new jobs and times apply from the next wake-up."""
        self.config = config
        self.runner = JobRunner(config, self.data_dir, self.config_path, self._command_builder)
        self.jobs = jobs_from_config(config)
        self._wake.set()
        if self._task is None and self.jobs:
            self._task = asyncio.create_task(self._loop(), name="report-scheduler")

    # ----- one cycle, callable with any clock (the tests drive it directly) ---------------

    async def load_state(self, now: datetime) -> None:
        names = [job.name for job in self.jobs]
        self._states = await asyncio.to_thread(self.state.ensure, names, now)

    def owed(self, job: Job, now: datetime) -> datetime | None:
        """The occurrence this job still owes at `now` (None: nothing owed, or waiting to retry)."""
        state = self._states.get(job.name)
        if state is None:
            return None
        due = latest_due(job.timing, now)
        if due <= state.done_through():
            return None
        retry_at = self._retry_at.get(job.name)
        if retry_at is not None and now < retry_at:
            return None
        return due

    async def run_due(self, now: datetime) -> list[RunResult]:
        """Run, one after the other, every job that owes an occurrence at `now`."""
        if set(self._states) != {job.name for job in self.jobs}:
            await self.load_state(now)
        results = []
        for job in list(self.jobs):
            due = self.owed(job, now)
            if due is not None:
                results.append(await self._run(job, due))
        return results

    def next_wake(self, now: datetime) -> datetime:
        """When something may next be owed: the next occurrence or retry, at most a minute."""
        moments = [next_due(job.timing, now) for job in self.jobs]
        moments += [moment for moment in self._retry_at.values() if moment > now]
        return min([*moments, now + timedelta(seconds=MAX_SLEEP_S)])

    async def _run(self, job: Job, due: datetime) -> RunResult:
        self._running = job.name
        self.counters["runs"] += 1
        try:
            result = await self.runner.run(job, due)
        finally:
            self._running = None
        finished = self.clock()
        if result.ok:
            self.counters["succeeded"] += 1
            self._retry_at.pop(job.name, None)
            state = await asyncio.to_thread(
                self.state.record_success, job.name, due, finished, result.file
            )
        else:
            self.counters["failed"] += 1
            retry = finished + timedelta(minutes=self.config.schedule.retry_minutes)
            self._retry_at[job.name] = retry
            state = await asyncio.to_thread(
                self.state.record_failure, job.name, finished, result.error
            )
            log.warning(
                "event=schedule_retry job=%s due=%s retry_at=%s failures=%d",
                job.name,
                format_utc(due),
                format_utc(retry),
                state.consecutive_failures,
            )
        self._states[job.name] = state
        return result

    async def _loop(self) -> None:
        await self.load_state(self.clock())
        while self.jobs:
            try:
                await self.run_due(self.clock())
            except Exception:  # a broken state file must not end scheduling for good
                log.exception("event=schedule_cycle_failed")
            now = self.clock()
            delay = (self.next_wake(now) - now).total_seconds() if self.jobs else MAX_SLEEP_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(delay, 0.0))
        self._task = None

    # ----- status -------------------------------------------------------------------------

    @property
    def status(self) -> dict[str, Any]:
        now = self.clock()
        jobs = {}
        for job in self.jobs:
            state = self._states.get(job.name)
            retry_at = self._retry_at.get(job.name)
            jobs[job.name] = {
                "kind": job.kind,
                "report": job.report.report if job.report is not None else None,
                "next_due": format_utc(next_due(job.timing, now)),
                "owed": None if state is None else _text(self.owed_ignoring_retry(job, now)),
                "retry_at": _text(retry_at),
                "running": self._running == job.name,
                **(state.as_json() if state is not None else {}),
            }
        return {"jobs": jobs, "running": self._running, **self.counters}

    def owed_ignoring_retry(self, job: Job, now: datetime) -> datetime | None:
        state = self._states.get(job.name)
        due = latest_due(job.timing, now)
        return None if state is None or due <= state.done_through() else due


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else format_utc(moment)
