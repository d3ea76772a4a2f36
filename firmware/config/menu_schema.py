"""IVR menus and DISA (direct inward system access)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from firmware.config.fields import Name, Section
from firmware.config.node_fields import Destination, NodeBase

Key = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#"]


class MenuNode(NodeBase):
    kind: Literal["menu"]
    greeting: Name
    keys: dict[Key, Destination] = Field(default_factory=dict)
    dial_through: bool = True  # a caller may dial an extension number during the greeting
    timeout_s: float = Field(default=5.0, gt=0, le=60)  # after the greeting, for a key
    timeout_to: Destination = ""
    invalid_prompt: Name = "invalid_option"
    max_invalid: int = Field(default=3, ge=1, le=10)  # then `invalid_to`
    invalid_to: Destination = ""

    def destinations(self) -> tuple[str, ...]:
        return (*self.keys.values(), self.timeout_to, self.invalid_to)


class DisaUser(Section):
    """One person allowed outside lines through DISA, with a PIN of their own."""

    name: Name
    pin: Annotated[str, Field(pattern=r"^[0-9]{4,12}$")]
    class_of_service: Name


class DisaNode(NodeBase):
    """An outside caller enters a PIN, hears dial tone, and dials as that user would."""

    kind: Literal["disa"]
    users: tuple[DisaUser, ...] = Field(min_length=1)
    max_failures: int = Field(default=3, ge=1, le=10)  # per call, then hang up
    lockout_failures: int = Field(default=5, ge=1, le=100)  # per source, then locked out
    lockout_s: float = Field(default=3600.0, ge=60, le=86_400)
    failed_to: Destination = ""

    def destinations(self) -> tuple[str, ...]:
        return (self.failed_to,)
