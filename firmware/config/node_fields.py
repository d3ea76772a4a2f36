"""What every routing-graph node has, shared by the node kinds' schema modules."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from firmware.config.fields import DialCode, Name, Section

Destination = Annotated[
    str, Field(pattern=r"^([A-Za-z][A-Za-z0-9_-]{0,31}|[0-9]{2,4}(,[0-9]{2,4})*|)$")
]
"""A node name, extension numbers that ring together ("201,202"), or "" (nowhere)."""


class NodeBase(Section):
    name: Name
    # An internal number that reaches this node when dialled (e.g. "600" for the sales group):
    # from extensions, from sibling offices, as a transfer target.
    number: DialCode | None = None


def is_node_name(destination: str) -> bool:
    return bool(destination) and destination[0].isalpha()


def extension_numbers(destination: str) -> tuple[str, ...]:
    return tuple(part for part in destination.split(",") if part) if destination else ()
