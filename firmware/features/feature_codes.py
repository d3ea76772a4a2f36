"""Feature codes an extension dials (``*61`` night mode, queue log-in, ...): who handles which.

A feature module registers a handler for a feature *name* (the key of `[feature_codes]` in
config, or a prefix of it such as ``mode_``); call control looks the dialled code's name up
here. A handler gets a `NodeContext` for the dialling phone and the feature's name, and
ends the call itself (confirmation beeps, or a refusal tone): it never returns normally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from firmware.features.context import NodeContext

FeatureHandler = Callable[[NodeContext, str], Awaitable[None]]

_HANDLERS: dict[str, FeatureHandler] = {}


def register(name_or_prefix: str, handler: FeatureHandler) -> None:
    """`name_or_prefix` ending in "_" matches every feature name that starts with it."""
    _HANDLERS[name_or_prefix] = handler


def handler_for(feature: str) -> FeatureHandler | None:
    if feature in _HANDLERS:
        return _HANDLERS[feature]
    prefixes = [p for p in _HANDLERS if p.endswith("_") and feature.startswith(p)]
    return _HANDLERS[max(prefixes, key=len)] if prefixes else None
