"""Hunt groups: several phones answer one number; see docs/routing.md."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from firmware.config.node_fields import Destination, NodeBase

Member = Annotated[str, Field(pattern=r"^[0-9*#]{2,24}$")]
"""Digits as an extension would dial them: an extension, a sibling office's extension,
or an outside number with its access code (a mobile through a line or trunk)."""


class HuntGroupNode(NodeBase):
    kind: Literal["hunt_group"]
    members: tuple[Member, ...] = Field(min_length=1)
    # simultaneous: all ring until one answers; sequential: in order, `ring_s` each;
    # circular: in order, starting after the member who answered last (kept across restarts).
    strategy: Literal["simultaneous", "sequential", "circular"] = "simultaneous"
    ring_s: float = Field(default=15.0, gt=0, le=600)  # per member (sequential, circular)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)  # the whole group
    caller_hears: Literal["ringback", "music"] = "ringback"
    music: str = "default"
    then: Destination = ""  # after the timeout; "" = the "cannot be answered now" announcement
    max_members: int = Field(default=10, ge=1, le=100)

    def destinations(self) -> tuple[str, ...]:
        return (self.then,)
