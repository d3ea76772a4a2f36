"""ModeService on a fake clock: boundaries, holidays, overrides that survive restarts.

2026-06-05 is a Friday in summer time (Lisbon = UTC+1): 08:30 local is 07:30 UTC.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from mode_office import FakeTime, office, utc

from firmware.config.schema import Config
from firmware.modes.override import Override, OverrideStore
from firmware.modes.schedule import ModeDecision
from firmware.modes.service import ModeService, describe

PT = office('country = "PT"\noverride_extensions = ["201", "206"]')


def mode_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "firmware.modes.service" and record.getMessage().startswith("event=mode_")
    ]


def table(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="firmware.modes.service")


class Services:
    """Starts services on a fake clock and stops them all at the end of the test."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.running: list[ModeService] = []

    async def start(
        self, at: datetime, config: Config = PT, poll_s: float = 30.0
    ) -> tuple[ModeService, FakeTime]:
        time = FakeTime(at)
        service = ModeService(
            config, self.data_dir, clock=time.clock, sleep=time.sleep, poll_s=poll_s
        )
        await service.start()
        self.running.append(service)
        return service, time

    async def stop(self, service: ModeService) -> None:
        self.running.remove(service)
        await service.stop()


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    started = Services(tmp_path)
    yield started
    for service in list(started.running):
        await started.stop(service)


async def test_the_mode_changes_exactly_at_the_schedule_boundary(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    service, time = await services.start(utc("2026-06-05T07:29:58"))
    assert service.current() == "night"
    await time.advance(1.0)
    assert time.requested == [2.0]  # it sleeps until 08:30:00 local, not a poll later
    assert service.current(utc("2026-06-05T07:29:59")) == "night"
    assert mode_events(caplog)[-1].startswith("event=mode_started mode=night reason=schedule")
    await time.advance_to(utc("2026-06-05T07:30:00"))
    assert service.current() == "day"
    assert mode_events(caplog)[-1] == (
        "event=mode_changed from=night to=day reason=schedule until=2026-06-05T11:30:00.000Z"
    )
    assert time.requested[-1] == 30.0  # then the next poll, before lunch at 12:30
    history = table(services.data_dir / "modes.sqlite3",
                    "SELECT at_utc, event, mode, previous, reason FROM mode_history")  # fmt: skip
    assert history == [("2026-06-05T07:30:00.000Z", "mode_changed", "day", "night", "schedule")]


async def test_a_public_holiday_starts_at_local_midnight(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    service, time = await services.start(utc("2026-06-09T22:59:59"))  # Tue 23:59:59 local
    assert service.current() == "night"
    await time.advance(1.0)
    assert service.current() == "holiday"
    assert mode_events(caplog)[-1] == (
        "event=mode_changed from=night to=holiday reason='holiday:Day of Portugal, Camões, and "
        "the Portuguese Communities' until=2026-06-10T23:00:00.000Z"
    )
    assert service.decision() == ModeDecision(
        "holiday",
        "holiday:Day of Portugal, Camões, and the Portuguese Communities",
        utc("2026-06-10T23:00:00"),
    )


async def test_an_override_with_expiry_survives_a_restart_and_then_expires(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    first, _ = await services.start(utc("2026-06-05T08:00:00"))
    assert first.current() == "day"
    decision = await first.async_set_override("night", "cli:test", utc("2026-06-05T10:00:00"))
    assert decision == ModeDecision("night", "override", utc("2026-06-05T10:00:00"))
    assert first.current() == "night"
    assert mode_events(caplog)[-2:] == [
        "event=mode_override_set mode=night by=cli:test expires=2026-06-05T10:00:00.000Z",
        "event=mode_changed from=day to=night reason=override until=2026-06-05T10:00:00.000Z",
    ]
    await services.stop(first)

    second, time = await services.start(utc("2026-06-05T09:30:00"))  # a restart
    assert second.current() == "night"
    assert second.status()["override"] == {
        "mode": "night",
        "set_by": "cli:test",
        "set_at": "2026-06-05T08:00:00.000Z",
        "expires_at": "2026-06-05T10:00:00.000Z",
    }
    await time.advance_to(utc("2026-06-05T10:00:00"))
    assert second.current() == "day"
    assert mode_events(caplog)[-2:] == [
        "event=mode_override_expired mode=night by=cli:test expired=2026-06-05T10:00:00.000Z",
        "event=mode_changed from=night to=day reason=schedule until=2026-06-05T11:30:00.000Z",
    ]
    path = services.data_dir / "modes.sqlite3"
    assert table(path, "SELECT count(*) FROM mode_override") == [(0,)]
    assert table(path, "SELECT event, mode, by FROM mode_history ORDER BY id") == [
        ("override_set", "night", "cli:test"),
        ("mode_changed", "night", ""),
        ("override_expired", "night", "expiry"),
        ("mode_changed", "day", ""),
    ]


async def test_an_override_that_expired_while_stopped_is_cleared_at_start(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    store = OverrideStore(services.data_dir / "modes.sqlite3")
    store.save(Override("lunch", "ext:201", utc("2026-06-05T08:00:00"),
                        utc("2026-06-05T09:00:00")), "day")  # fmt: skip
    store.close()
    service, _ = await services.start(utc("2026-06-05T10:00:00"))
    assert service.current() == "day"
    assert service.override is None
    assert mode_events(caplog)[0] == (
        "event=mode_override_expired mode=lunch by=ext:201 expired=2026-06-05T09:00:00.000Z"
    )


async def test_a_change_made_by_the_cli_is_picked_up_at_the_next_poll(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    service, time = await services.start(utc("2026-06-05T08:00:00"), poll_s=2.0)
    cli = OverrideStore(services.data_dir / "modes.sqlite3")
    cli.save(Override("night", "cli:root", utc("2026-06-05T08:00:00")), "day")
    await time.advance(2.0)
    assert service.current() == "night"
    assert mode_events(caplog)[-2:] == [
        "event=mode_override_set mode=night by=cli:root expires=- source=database",
        "event=mode_changed from=day to=night reason=override until=-",
    ]
    cli.clear(utc("2026-06-05T08:00:03"), "cli:root")
    cli.close()
    await time.advance(2.0)
    assert service.current() == "day"
    assert mode_events(caplog)[-2:] == [
        "event=mode_override_cleared by=another_process",
        "event=mode_changed from=night to=day reason=schedule until=2026-06-05T11:30:00.000Z",
    ]


async def test_a_phone_override_lasts_until_the_schedule_next_changes(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    service, time = await services.start(utc("2026-06-05T16:00:00"))  # Fri 17:00 local
    with pytest.raises(PermissionError, match="extension 202 may not change the office mode"):
        await service.async_phone_override("202", "night")
    assert mode_events(caplog)[-1] == "event=mode_override_refused extension=202 mode=night"
    decision = await service.async_phone_override("206", "night")
    # the receptionist leaves early: night until 18:00 local, then the schedule (night)
    assert decision == ModeDecision("night", "override", utc("2026-06-05T17:00:00"))
    assert describe(service.status()) == (
        "mode night (override) until Fri 18:00; forced by ext:206, automatic would be day "
        "(schedule)"
    )
    await time.advance_to(utc("2026-06-05T17:00:00"))
    assert service.decision() == ModeDecision("night", "schedule", utc("2026-06-06T08:00:00"))
    assert "event=mode_override_expired mode=night by=ext:206" in mode_events(caplog)[-1]
    # back to automatic from a phone while an override is in force
    await service.async_phone_override("201", "day")
    assert service.current() == "day"
    await service.async_phone_override("201", None)
    assert service.current() == "night"
    assert mode_events(caplog)[-2:] == [
        "event=mode_override_cleared mode=day by=ext:201",
        "event=mode_changed from=day to=night reason=schedule until=2026-06-06T08:00:00.000Z",
    ]


async def test_a_phone_override_until_cancelled(services: Services) -> None:
    config = office('override_extensions = ["201"]\nphone_override = "until_cancelled"')
    service, _ = await services.start(utc("2026-06-05T16:00:00"), config)
    decision = await service.async_phone_override("201", "lunch")
    assert decision == ModeDecision("lunch", "override", None)


async def test_bad_override_requests_change_nothing(services: Services) -> None:
    service, _ = await services.start(utc("2026-06-05T08:00:00"))
    with pytest.raises(ValueError, match="'party' is not a mode; modes are day, lunch"):
        await service.async_set_override("party", "cli")
    with pytest.raises(ValueError, match="already past"):
        await service.async_set_override("night", "cli", utc("2026-06-05T08:00:00"))
    assert service.override is None and service.current() == "day"
    assert table(services.data_dir / "modes.sqlite3", "SELECT count(*) FROM mode_override") == [
        (0,)
    ]


async def test_the_repeated_autumn_hour_is_followed_on_the_wall_clock(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    small_hours = '[[modes.schedule]]\ndays = "sun"\nfrom = "01:30"\nto = "03:00"\nmode = "lunch"'
    config = office("", small_hours)
    _, time = await services.start(utc("2026-10-25T00:00:00"), config, poll_s=60.0)
    await time.advance_to(utc("2026-10-25T04:00:00"))
    assert [line.split(" until=")[0] for line in mode_events(caplog)[1:]] == [
        "event=mode_changed from=night to=lunch reason=schedule",  # 01:30 summer time
        "event=mode_changed from=lunch to=night reason=schedule",  # back to 01:00 winter time
        "event=mode_changed from=night to=lunch reason=schedule",  # 01:30 again
        "event=mode_changed from=lunch to=night reason=schedule",  # 03:00
    ]
    assert table(services.data_dir / "modes.sqlite3", "SELECT at_utc FROM mode_history") == [
        ("2026-10-25T00:30:00.000Z",),
        ("2026-10-25T01:00:00.000Z",),
        ("2026-10-25T01:30:00.000Z",),
        ("2026-10-25T03:00:00.000Z",),
    ]
    assert min(time.requested) > 0


async def test_a_boundary_in_the_skipped_spring_hour_does_not_spin(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    small_hours = '[[modes.schedule]]\ndays = "sun"\nfrom = "01:30"\nto = "02:30"\nmode = "lunch"'
    service, time = await services.start(utc("2026-03-29T00:59:58"), office("", small_hours))
    await time.advance_to(utc("2026-03-29T02:00:00"))
    # 01:30-02:30 local shrinks to 02:00-02:30 summer time: 01:00-01:30 UTC
    assert time.requested[:3] == [2.0, 30.0, 30.0]
    assert table(services.data_dir / "modes.sqlite3", "SELECT at_utc, mode FROM mode_history") == [
        ("2026-03-29T01:00:00.000Z", "lunch"),
        ("2026-03-29T01:30:00.000Z", "night"),
    ]
    assert service.current() == "night"


async def test_a_reload_with_another_schedule_applies_at_once(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = await services.start(utc("2026-06-05T08:00:00"))
    changes: list[tuple[str, str]] = []
    service.listeners.append(lambda previous, new: changes.append((previous.name, new.name)))
    await service.async_apply_config(office('country = "PT"', schedule=""))
    assert service.current() == "day"
    assert changes == []
    await service.async_apply_config(office('country = "PT"\ndefault = "lunch"', schedule=""))
    assert service.current() == "lunch"
    assert changes == [("day", "lunch")]
    assert mode_events(caplog)[-1] == (  # until Portugal Day, which is holiday mode
        "event=mode_changed from=day to=lunch reason=schedule until=2026-06-09T23:00:00.000Z"
    )


async def test_an_unusable_database_does_not_stop_the_modes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    time = FakeTime(utc("2026-06-05T08:00:00"))
    service = ModeService(PT, blocker, clock=time.clock, sleep=time.sleep)
    await service.start()
    try:
        assert service.current() == "day"
        await service.async_set_override("night", "cli")
        assert service.current() == "night"  # in memory; it will not survive a restart
        assert service.status()["counters"]["store_failures"] >= 2
        assert any(line.startswith("event=mode_store_failed") for line in mode_events(caplog))
    finally:
        await service.stop()


async def test_asking_before_start_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="start"):
        ModeService(PT, tmp_path).current()
