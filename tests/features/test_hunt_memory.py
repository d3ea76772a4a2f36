"""The circular hunt's memory and the order it gives, without a running core."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from firmware.config.hunt_schema import HuntGroupNode
from firmware.features.hunt import member_order
from firmware.features.hunt_memory import HuntMemory, memory_of


def node(strategy: str) -> HuntGroupNode:
    return HuntGroupNode(
        kind="hunt_group",
        name="sales",
        members=("202", "203", "204", "9912345678"),
        strategy=strategy,
    )


async def test_circular_order_starts_after_the_last_answerer_and_wraps(tmp_path: Path) -> None:
    memory = HuntMemory(tmp_path)
    assert await member_order(node("circular"), memory) == ["202", "203", "204", "9912345678"]
    await memory.remember("sales", "204")
    assert await member_order(node("circular"), memory) == ["9912345678", "202", "203", "204"]
    await memory.remember("sales", "9912345678")
    assert await member_order(node("circular"), memory) == ["202", "203", "204", "9912345678"]
    await memory.remember("sales", "205")  # a member since removed from the list: from the top
    assert await member_order(node("circular"), memory) == ["202", "203", "204", "9912345678"]


async def test_other_strategies_keep_the_configured_order(tmp_path: Path) -> None:
    memory = HuntMemory(tmp_path)
    await memory.remember("sales", "203")
    assert await member_order(node("sequential"), memory) == ["202", "203", "204", "9912345678"]


async def test_a_new_memory_on_the_same_folder_reads_the_turn_back(tmp_path: Path) -> None:
    await HuntMemory(tmp_path).remember("sales", "203")
    await HuntMemory(tmp_path).remember("support", "301")
    await HuntMemory(tmp_path).remember("sales", "204")  # replaces, one row per group
    with sqlite3.connect(tmp_path / "hunt.sqlite3") as database:
        rows = database.execute(
            "SELECT hunt_group, member FROM hunt_last_answered ORDER BY 1"
        ).fetchall()
    assert rows == [("sales", "204"), ("support", "301")]
    again = HuntMemory(tmp_path)
    assert (await again.last("sales"), await again.last("support"), await again.last("x")) == (
        "204",
        "301",
        None,
    )


async def test_a_failed_write_is_logged_and_the_turn_kept_in_memory(tmp_path: Path, caplog) -> None:
    memory = HuntMemory(tmp_path / "missing" / "folder")
    with caplog.at_level(logging.ERROR, logger="firmware.features"):
        await memory.remember("sales", "203")
    assert await memory.last("sales") == "203"
    assert any(
        "event=hunt_memory_write_failed group=sales member=203" in m for m in caplog.messages
    )


def test_the_core_keeps_one_memory(tmp_path: Path) -> None:
    features: dict[str, object] = {}
    first = memory_of(features, tmp_path)
    assert memory_of(features, tmp_path) is first and features["hunt"] is first
    assert memory_of({}, None).path is None
