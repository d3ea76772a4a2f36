"""Hunt groups: several members answer one number; see docs/routing.md."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from firmware.config.fields import Name
from firmware.config.node_fields import Destination, NodeBase


def _member(value: str) -> str:
    if not re.fullmatch(r"[0-9*#]{2,24}", value):
        raise ValueError(
            f"member {value!r} must be 2 to 24 of the keys 0-9 * # as an extension dials them: "
            f"'202', a sibling office's '303', or '9912345678' (access code and number)"
        )
    return value


Member = Annotated[str, AfterValidator(_member)]
"""Digits as an extension would dial them: an extension, a sibling office's extension,
or an outside number with its access code (a mobile through a line or trunk)."""


class HuntGroupNode(NodeBase):
    kind: Literal["hunt_group"]
    members: tuple[Member, ...] = Field(min_length=1)
    # simultaneous: all ring until one answers; sequential: in order, `ring_s` each, round
    # again until `timeout_s`; circular: as sequential, starting after the member who
    # answered last (kept across restarts).
    strategy: Literal["simultaneous", "sequential", "circular"] = "simultaneous"
    ring_s: float = Field(default=15.0, gt=0, le=600)  # per member (sequential, circular)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)  # the whole group
    caller_hears: Literal["ringback", "music"] = "ringback"
    music: Name = "default"  # music:NAME, with caller_hears = "music"
    then: Destination = ""  # after the timeout; "" = the "cannot be answered now" announcement
    max_members: int = Field(default=10, ge=1, le=100)

    @model_validator(mode="after")
    def _members_once(self) -> HuntGroupNode:
        seen: set[str] = set()
        for member in self.members:
            if member in seen:
                raise ValueError(f"hunt group {self.name!r}: member {member!r} is listed twice")
            seen.add(member)
        return self

    def destinations(self) -> tuple[str, ...]:
        return (self.then,)
