"""Call queues: callers wait with announcements and music for the next free agent.

See docs/routing.md ("Queues") for how a waiting caller's time is spent and how agents are
chosen; the running side is firmware/features/queue.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from firmware.config.fields import ExtensionNumber, Name
from firmware.config.node_fields import Destination, NodeBase

Key = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#"]


class QueueNode(NodeBase):
    kind: Literal["queue"]
    # The operators who answer the queue, in order (round robin follows this order).
    agents: tuple[ExtensionNumber, ...] = Field(min_length=1)
    # ring_all: every free agent rings together; longest_idle: the agent whose last queue
    # call ended longest ago; fewest_calls: the agent with the fewest queue calls today;
    # round_robin: in order, starting after the agent who answered last (kept across restarts).
    strategy: Literal["ring_all", "longest_idle", "fewest_calls", "round_robin"] = "ring_all"
    # Agents log in and out with the queue_login / queue_logout feature codes; an agent who
    # never did is logged in or out by this. A stored log-in or log-out wins, restarts too.
    agents_start_logged_in: bool = True
    max_waiting: int = Field(default=10, ge=1, le=1000)
    overflow: Destination = ""  # queue full, or waited max_wait_s
    entry_prompt: Name | None = "all_operators_busy"
    comfort_prompt: Name | None = "please_hold"
    # Seconds of music between the end of one announcement and the next comfort one.
    comfort_every_s: float = Field(default=30.0, ge=5, le=3600)
    music: Name = "default"
    announce_position: bool = False  # "you are caller number N", on entry and with comfort
    announce_wait: bool = False  # "the expected waiting time is about N minutes"
    max_wait_s: float = Field(default=300.0, gt=0, le=7200)
    leave_key: Key | None = None
    leave_to: Destination = ""
    announce_leave_key: bool = True  # "to leave the queue, press N" after the entry prompt
    # How long each agent rings before the next is tried (ring_all: they ring until one
    # answers, and agents coming free join in).
    agent_ring_s: float = Field(default=15.0, gt=0, le=600)
    wrap_up_s: float = Field(default=10.0, ge=0, le=600)  # after a queue call, before the next

    @model_validator(mode="after")
    def _consistent(self) -> QueueNode:
        repeated = sorted({agent for agent in self.agents if self.agents.count(agent) > 1})
        if repeated:
            raise ValueError(f"agents: {', '.join(repeated)} listed more than once")
        if self.leave_to and self.leave_key is None:
            raise ValueError(
                "leave_to is set but leave_key is not: set the key callers press to leave "
                '(e.g. leave_key = "1"), or remove leave_to'
            )
        return self

    def destinations(self) -> tuple[str, ...]:
        return (self.overflow, self.leave_to) if self.leave_key else (self.overflow,)
