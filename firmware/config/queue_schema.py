"""Call queues: callers wait with announcements and music for the next free agent."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from firmware.config.fields import ExtensionNumber, Name
from firmware.config.node_fields import Destination, NodeBase


class QueueNode(NodeBase):
    kind: Literal["queue"]
    agents: tuple[ExtensionNumber, ...] = Field(min_length=1)
    strategy: Literal["ring_all", "longest_idle", "fewest_calls", "round_robin"] = "ring_all"
    max_waiting: int = Field(default=10, ge=1, le=1000)
    overflow: Destination = ""  # queue full, or waited max_wait_s
    entry_prompt: Name | None = "all_operators_busy"
    comfort_prompt: Name | None = "please_hold"
    comfort_every_s: float = Field(default=30.0, ge=5, le=3600)
    music: str = "default"
    announce_position: bool = False
    max_wait_s: float = Field(default=300.0, gt=0, le=7200)
    leave_key: Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#"] | None = None
    leave_to: Destination = ""
    agent_ring_s: float = Field(default=15.0, gt=0, le=600)
    wrap_up_s: float = Field(default=10.0, ge=0, le=600)

    def destinations(self) -> tuple[str, ...]:
        return (self.overflow, self.leave_to) if self.leave_key else (self.overflow,)
