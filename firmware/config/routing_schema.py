"""The call-routing graph: named nodes that inbound calls are sent to; see docs/routing.md.

A *destination* (what a line, a DID, a menu key or a node's `then` names) is either a
node name (it starts with a letter), one or more extension numbers ("201" or "201,202":
they ring together), or "" (nowhere: the caller hears the "cannot be answered now"
announcement and the call ends). Each node kind's settings live in the module of the
feature that runs it; this module is the union and the simple kinds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from firmware.config.fields import ExtensionNumber, Name, Section
from firmware.config.hunt_schema import HuntGroupNode
from firmware.config.menu_schema import DisaNode, MenuNode
from firmware.config.node_fields import Destination, NodeBase, extension_numbers, is_node_name
from firmware.config.queue_schema import QueueNode


class ExtensionNode(NodeBase):
    """Ring extensions together for `ring_s`, then go on to `then`."""

    kind: Literal["extension"]
    extensions: tuple[ExtensionNumber, ...]
    ring_s: float = Field(default=20.0, gt=0, le=600)
    then: Destination = ""

    def destinations(self) -> tuple[str, ...]:
        return (self.then,)


class ExternalNode(NodeBase):
    """An outside number (as an extension would dial it, access code included), routed with
    the installer's authority (no class of service): e.g. the manager's mobile after hours."""

    kind: Literal["external"]
    dial: Annotated[str, Field(pattern=r"^[0-9*#]{1,24}$")]
    ring_s: float = Field(default=30.0, gt=0, le=600)
    then: Destination = ""

    def destinations(self) -> tuple[str, ...]:
        return (self.then,)


class AnnouncementNode(NodeBase):
    """Play a prompt (answering the call), then go to `then`, or hang up when it is ""."""

    kind: Literal["announcement"]
    prompt: Name
    repeat: int = Field(default=1, ge=1, le=10)
    then: Destination = ""

    def destinations(self) -> tuple[str, ...]:
        return (self.then,)


class ModeSwitchNode(NodeBase):
    """Send the call on by the office mode in force (day, lunch, night, holiday, ...)."""

    kind: Literal["mode_switch"]
    modes: dict[Name, Destination]
    otherwise: Destination = ""  # modes not listed

    def destinations(self) -> tuple[str, ...]:
        return (*self.modes.values(), self.otherwise)


Node = Annotated[
    ExtensionNode
    | ExternalNode
    | AnnouncementNode
    | ModeSwitchNode
    | HuntGroupNode
    | QueueNode
    | MenuNode
    | DisaNode,
    Field(discriminator="kind"),
]


class RoutingConfig(Section):
    nodes: tuple[Node, ...] = ()
    # The prompt played when a destination is "" or a node has nowhere left to send a call.
    unanswered_prompt: Name = "cannot_answer_now"
    max_hops: int = Field(default=20, ge=2, le=100)

    def node(self, name: str) -> Node | None:
        return next((node for node in self.nodes if node.name == name), None)


__all__ = [
    "AnnouncementNode",
    "Destination",
    "ExtensionNode",
    "ExternalNode",
    "ModeSwitchNode",
    "Node",
    "NodeBase",
    "RoutingConfig",
    "extension_numbers",
    "is_node_name",
]
