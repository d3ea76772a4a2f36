"""IVR menus and DISA (direct inward system access); see docs/routing.md."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from firmware.config.fields import Name, Section
from firmware.config.node_fields import Destination, NodeBase

Key = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#"]


class MenuNode(NodeBase):
    """A greeting, then the caller's key (or, with dial-through, an extension number)."""

    kind: Literal["menu"]
    greeting: Name
    keys: dict[Key, Destination] = Field(default_factory=dict)
    dial_through: bool = True  # a caller may dial an extension number during the greeting
    # How long a key that could also start an extension number waits for a second digit,
    # and the pause that ends a dialled-through number. None: [timers] inter_digit_s.
    inter_digit_s: float | None = Field(default=None, gt=0, le=10)
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
    """An outside caller enters a PIN, hears dial tone, and dials as that user would.

    DISA exists only where an installer creates such a node (and sends a line, a DID or a
    menu key to it); the user's class of service decides what may be dialled."""

    kind: Literal["disa"]
    users: tuple[DisaUser, ...] = Field(min_length=1)
    pin_timeout_s: float = Field(default=10.0, gt=0, le=60)  # for the first PIN digit
    max_failures: int = Field(default=3, ge=1, le=10)  # wrong PINs per call, then `failed_to`
    # Wrong PINs from one source (caller number; the line or peer when it is withheld)
    # within `lockout_window_s` that lock it out for `lockout_s`.
    lockout_failures: int = Field(default=5, ge=1, le=100)
    lockout_window_s: float = Field(default=3600.0, ge=60, le=7 * 86_400)
    lockout_s: float = Field(default=3600.0, ge=60, le=7 * 86_400)
    # Wrong PINs from all sources together within the window that lock the whole node: a
    # caller changing its shown number on every try is stopped too.
    lockout_failures_all: int = Field(default=20, ge=1, le=1000)
    failed_to: Destination = ""  # "" = "goodbye" and hang up

    @model_validator(mode="after")
    def _pins_and_names_unique(self) -> DisaNode:
        """The PIN alone says who is calling, so two users may not share one."""
        pins = [user.pin for user in self.users]
        if len(set(pins)) != len(pins):
            clash = sorted(user.name for user in self.users if pins.count(user.pin) > 1)
            raise ValueError(f"users {', '.join(clash)} have the same PIN: give each their own")
        names = [user.name for user in self.users]
        if len(set(names)) != len(names):
            raise ValueError("users: each user needs a name of their own")
        return self

    def destinations(self) -> tuple[str, ...]:
        return (self.failed_to,)
