"""The override row and history in modes.sqlite3, read back with plain sqlite3."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mode_office import utc

from firmware.modes.override import (
    HISTORY_KEPT,
    HistoryEntry,
    ModeStoreError,
    Override,
    OverrideStore,
)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


def test_an_override_is_stored_as_utc_text_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "modes.sqlite3"
    store = OverrideStore(path)
    override = Override("night", "ext:201", utc("2026-06-05T09:00:00.1234"),
                        utc("2026-06-05T17:00:00"))  # fmt: skip
    store.save(override, previous_mode="day")
    assert rows(path, "SELECT id, mode, set_by, set_at_utc, expires_utc FROM mode_override") == [
        (1, "night", "ext:201", "2026-06-05T09:00:00.123Z", "2026-06-05T17:00:00.000Z")
    ]
    assert rows(path, "SELECT at_utc, event, mode, previous, reason, by FROM mode_history") == [
        ("2026-06-05T09:00:00.123Z", "override_set", "night", "day",
         "until 2026-06-05T17:00:00.000Z", "ext:201")
    ]  # fmt: skip
    store.close()
    again = OverrideStore(path, readonly=True)
    assert again.load() == Override("night", "ext:201", utc("2026-06-05T09:00:00.123"),
                                    utc("2026-06-05T17:00:00"))  # fmt: skip
    with pytest.raises(ModeStoreError, match="read-only"):
        again.clear(utc("2026-06-05T10:00:00"), "cli")
    again.close()


def test_a_second_override_replaces_the_first(tmp_path: Path) -> None:
    store = OverrideStore(tmp_path / "modes.sqlite3")
    store.save(Override("night", "cli", utc("2026-06-05T09:00:00")), "day")
    store.save(Override("lunch", "cli", utc("2026-06-05T09:05:00")), "night")
    assert store.load() == Override("lunch", "cli", utc("2026-06-05T09:05:00"))
    assert [entry.mode for entry in store.history()] == ["lunch", "night"]  # newest first


def test_clearing_only_the_override_one_expected(tmp_path: Path) -> None:
    store = OverrideStore(tmp_path / "modes.sqlite3")
    first = Override("night", "cli", utc("2026-06-05T09:00:00"), utc("2026-06-05T10:00:00"))
    second = Override("lunch", "ext:201", utc("2026-06-05T09:30:00"))
    store.save(first, "day")
    store.save(second, "night")
    # the expiry of `first` must not remove `second`, set meanwhile (by the CLI)
    assert store.clear(utc("2026-06-05T10:00:00"), "expiry", "override_expired", first) is None
    assert store.load() == second
    assert store.clear(utc("2026-06-05T11:00:00"), "cli:root") == second
    assert store.load() is None
    assert store.clear(utc("2026-06-05T11:00:00"), "cli:root") is None
    assert store.history(1) == [
        HistoryEntry(
            utc("2026-06-05T11:00:00"), "override_cleared", "lunch", "lunch", "", "cli:root"
        )
    ]


def test_another_connections_commit_is_noticed_once(tmp_path: Path) -> None:
    path = tmp_path / "modes.sqlite3"
    core = OverrideStore(path)
    assert core.changed()  # first look after opening: reread
    assert not core.changed()
    core.save(Override("night", "ext:201", utc("2026-06-05T09:00:00")), "day")
    assert not core.changed()  # its own writes are not news
    cli = OverrideStore(path)
    cli.clear(utc("2026-06-05T09:10:00"), "cli:root")
    cli.close()
    assert core.changed()
    assert not core.changed()
    assert core.load() is None


def test_the_history_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert HISTORY_KEPT == 1000
    monkeypatch.setattr("firmware.modes.override.HISTORY_KEPT", 10)
    store = OverrideStore(tmp_path / "modes.sqlite3")
    for minute in range(15):
        at = utc("2026-06-05T08:00:00").replace(minute=minute)
        store.add_history(HistoryEntry(at, "mode_changed", "day", "night", "schedule", ""))
    assert rows(tmp_path / "modes.sqlite3", "SELECT count(*), min(at_utc) FROM mode_history") == [
        (10, "2026-06-05T08:05:00.000Z")
    ]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "modes.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 7")
    with pytest.raises(ModeStoreError, match="schema version 7 is newer"):
        OverrideStore(path).open()
