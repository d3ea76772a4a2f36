"""The mode in force for the running core: schedule, override, change log lines.

The decision itself is pure (`schedule.py`); this shell keeps the override in memory so
`current()` answers from the event loop with no I/O, persists overrides through one
database thread, and runs one task that sleeps until the next boundary (or the next
poll of the database for the CLI's changes, every `poll_s`) and logs each change:

    event=mode_changed from=day to=night reason=schedule until=2026-06-08T07:30:00.000Z

The clock and the sleeper are parameters so tests drive time by hand.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from firmware.modes.override import DB_NAME, HistoryEntry, Override, OverrideStore, format_time
from firmware.modes.policy import may_override, phone_override_expiry
from firmware.modes.schedule import ModeDecision, ModeSchedule, decide, local_text

if TYPE_CHECKING:
    from firmware.config.schema import Config

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleeper = Callable[[float], Awaitable[None]]
ModeListener = Callable[[ModeDecision, ModeDecision], None]
"""Called on the loop with (previous, new) each time the mode changes."""

Result = TypeVar("Result")

POLL_S = 2.0
"""How often the database is asked whether the CLI changed the override."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def log_value(text: str) -> str:
    """A value for a key=value log line: bare when it is one word, quoted otherwise."""
    return text if re.fullmatch(r"[\w:.+@/-]*", text) and text else repr(text)


def _build_schedule(config: Config, now: datetime) -> ModeSchedule:
    schedule = ModeSchedule.from_config(config)
    schedule.warm(now)
    return schedule


class ModeService:
    """One per core: construct, `await start()`, ask `current()`, `await stop()`."""

    def __init__(
        self,
        config: Config,
        data_dir: str | Path,
        *,
        clock: Clock = utc_now,
        sleep: Sleeper = asyncio.sleep,
        poll_s: float = POLL_S,
    ) -> None:
        self.config = config
        self.path = Path(data_dir) / DB_NAME
        self.poll_s = poll_s
        self.listeners: list[ModeListener] = []
        self.counters = {
            "changes": 0,
            "overrides_set": 0,
            "overrides_cleared": 0,
            "overrides_expired": 0,
            "store_failures": 0,
            "check_failures": 0,
        }
        self._clock = clock
        self._sleep = sleep
        self._store = OverrideStore(self.path)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._schedule: ModeSchedule | None = None
        self._override: Override | None = None
        self._decision: ModeDecision | None = None
        self._task: asyncio.Task[None] | None = None

    # ----- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Build the schedule and read the override off the loop, then watch the clock."""
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="modes-db")
        now = self._clock()
        self._schedule = await self._in_thread(_build_schedule, self.config, now)
        self._override = await self._stored(self._store.load, default=None)
        await self._expire_if_due(now)
        self._decision = decide(self._schedule, now, self._override)
        log.info(
            "event=mode_started mode=%s reason=%s until=%s override=%s",
            self._decision.name,
            log_value(self._decision.reason),
            _time_text(self._decision.until),
            self._override.mode if self._override else "-",
        )
        self._task = asyncio.create_task(self._run(), name="mode-service")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._executor is not None:
            await self._in_thread(self._store.close)
            self._executor.shutdown(wait=False)
            self._executor = None
        log.info("event=mode_service_stopped")

    async def async_apply_config(self, config: Config) -> None:
        """A reloaded config: new schedule (built off the loop), then re-evaluate."""
        now = self._clock()
        schedule = await self._in_thread(_build_schedule, config, now)
        self.config, self._schedule = config, schedule
        await self._evaluate(now)

    # ----- questions (on the loop, no I/O) ---------------------------------------------------

    def current(self, now: datetime | None = None) -> str:
        """The mode in force now: what an inbound call routes by and its CDR records."""
        schedule = self._started()
        now = now or self._clock()
        override = self._override
        if (
            override is not None
            and override.active_at(now)
            and override.mode in schedule.modes.all_names
        ):
            return override.mode
        return schedule.mode_name_at(now)[0]

    def decision(self, now: datetime | None = None) -> ModeDecision:
        """The mode in force with its reason and the time it next changes."""
        return decide(self._started(), now or self._clock(), self._override)

    @property
    def override(self) -> Override | None:
        """The override in force, if any (an expired one not yet cleared is not)."""
        override = self._override
        return override if override is not None and override.active_at(self._clock()) else None

    def status(self) -> dict[str, Any]:
        """For `minipbx status`: mode, reason, until, the automatic mode, the override."""
        status = mode_status(self._started(), self._clock(), self._override)
        status["counters"] = dict(self.counters)
        return status

    # ----- overrides -------------------------------------------------------------------------

    async def async_set_override(
        self, mode: str, set_by: str, expires_at: datetime | None = None
    ) -> ModeDecision:
        """Force `mode` (until `expires_at`, or until cleared); persisted and logged."""
        schedule = self._started()
        if mode not in schedule.modes.all_names:
            raise ValueError(
                f"{mode!r} is not a mode; modes are {', '.join(schedule.modes.all_names)}"
            )
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ValueError(
                f"the override would expire at {format_time(expires_at)}, already past"
            )
        override = Override(mode, set_by, now, expires_at)
        previous = self.current(now)
        self._override = override
        self.counters["overrides_set"] += 1
        log.info(
            "event=mode_override_set mode=%s by=%s expires=%s",
            mode,
            log_value(set_by),
            _time_text(expires_at),
        )
        await self._stored(self._store.save, override, previous)
        return await self._evaluate(now)

    async def async_clear_override(self, by: str) -> Override | None:
        """Back to automatic; returns the override that was in force, if any."""
        self._started()
        now = self._clock()
        cleared = self.override
        self._override = None
        if cleared is not None:
            self.counters["overrides_cleared"] += 1
            log.info("event=mode_override_cleared mode=%s by=%s", cleared.mode, log_value(by))
            await self._stored(self._store.clear, now, by)
        await self._evaluate(now)
        return cleared

    async def async_phone_override(self, extension: str, mode: str | None) -> ModeDecision:
        """A mode feature code dialled at `extension`: force `mode`, or None for automatic.

        Raises PermissionError for an extension `may_override` refuses (logged), and
        ValueError for an unknown mode. The override lasts as `modes.phone_override` says.
        """
        if not may_override(self.config, extension):
            log.warning(
                "event=mode_override_refused extension=%s mode=%s", extension, mode or "auto"
            )
            raise PermissionError(f"extension {extension} may not change the office mode")
        by = f"ext:{extension}"
        if mode is None:
            await self.async_clear_override(by)
            return self.decision()
        automatic = self._started().decide(self._clock())
        return await self.async_set_override(
            mode, by, phone_override_expiry(self.config, automatic)
        )

    # ----- the watching task -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._sleep(self._delay())
            try:
                await self.async_check()
            except Exception:
                self.counters["check_failures"] += 1
                log.exception("event=mode_check_failed")

    def _delay(self) -> float:
        """Until the next boundary or the next poll, whichever is first."""
        delay = self.poll_s
        until = self._decision.until if self._decision is not None else None
        if until is not None:
            delay = min(delay, (until - self._clock()).total_seconds())
        return max(delay, 0.0)

    async def async_check(self) -> ModeDecision:
        """One look: the CLI's changes, an expired override, a boundary passed."""
        self._started()
        if await self._stored(self._store.changed, default=False):
            stored = await self._stored(self._store.load, default=self._override)
            if stored != self._override:
                self._log_stored_change(stored)
                self._override = stored
        now = self._clock()
        await self._expire_if_due(now)
        return await self._evaluate(now)

    def _log_stored_change(self, stored: Override | None) -> None:
        if stored is None:
            log.info("event=mode_override_cleared by=another_process")
            return
        log.info(
            "event=mode_override_set mode=%s by=%s expires=%s source=database",
            stored.mode,
            log_value(stored.set_by),
            _time_text(stored.expires_at),
        )

    async def _expire_if_due(self, now: datetime) -> None:
        override = self._override
        if override is None or override.active_at(now):
            return
        self._override = None
        self.counters["overrides_expired"] += 1
        log.info(
            "event=mode_override_expired mode=%s by=%s expired=%s",
            override.mode,
            log_value(override.set_by),
            _time_text(override.expires_at),
        )
        await self._stored(self._store.clear, now, "expiry", "override_expired", override)

    async def _evaluate(self, now: datetime) -> ModeDecision:
        """Take the decision at `now`; log, record and announce it if the mode changed."""
        schedule = self._started()
        decision = decide(schedule, now, self._override)
        previous = self._decision
        self._decision = decision
        if previous is None or previous.name == decision.name:
            return decision
        self.counters["changes"] += 1
        log.info(
            "event=mode_changed from=%s to=%s reason=%s until=%s",
            previous.name,
            decision.name,
            log_value(decision.reason),
            _time_text(decision.until),
        )
        entry = HistoryEntry(now, "mode_changed", decision.name, previous.name, decision.reason, "")
        await self._stored(self._store.add_history, entry)
        for listener in list(self.listeners):
            try:
                listener(previous, decision)
            except Exception:
                log.exception("event=mode_listener_failed")
        return decision

    # ----- plumbing --------------------------------------------------------------------------

    def _started(self) -> ModeSchedule:
        if self._schedule is None:
            raise RuntimeError("ModeService.start() has not run")
        return self._schedule

    async def _in_thread(self, function: Callable[..., Result], *args: Any) -> Result:
        assert self._executor is not None, "ModeService.start() has not run"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    async def _stored(self, function: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        """Run a store call in the database thread (it opens the database if needed).

        A failure is logged and counted and gives `default`; the mode keeps working from
        memory (an override then does not survive a restart) and the next call reopens.
        """
        try:
            return await self._in_thread(function, *args)
        except Exception as error:
            self.counters["store_failures"] += 1
            log.error("event=mode_store_failed path=%s error=%s", self.path, log_value(str(error)))
            await self._in_thread(self._store.close)
            return default


def _time_text(value: datetime | None) -> str:
    return "-" if value is None else format_time(value)


def mode_status(schedule: ModeSchedule, now: datetime, override: Override | None) -> dict[str, Any]:
    """The mode at `now` as plain JSON types (the core's status and `minipbx mode`)."""
    decision = decide(schedule, now, override)
    in_force = override if override is not None and decision.reason == "override" else None
    return {
        **_decision_json(decision, schedule, now),
        "automatic": _decision_json(schedule.decide(now), schedule, now),
        "override": in_force.to_json() if in_force is not None else None,
        "timezone": str(schedule.zone.key),
    }


def _decision_json(decision: ModeDecision, schedule: ModeSchedule, now: datetime) -> dict[str, Any]:
    until = decision.until
    return {
        "mode": decision.name,
        "reason": decision.reason,
        "until": None if until is None else format_time(until),
        "until_local": None if until is None else local_text(until, schedule.zone, now),
    }


def describe(status: dict[str, Any]) -> str:
    """One line for `minipbx status`: 'mode night (schedule) until Mon 08:30'."""
    text = f"mode {status['mode']} ({status['reason']})"
    if status.get("until_local"):
        text += f" until {status['until_local']}"
    override = status.get("override")
    if override:
        text += f"; forced by {override['set_by']}"
        automatic = status["automatic"]
        text += f", automatic would be {automatic['mode']} ({automatic['reason']})"
    return text
