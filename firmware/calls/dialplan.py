"""Numbering and routing as pure functions of (caller, dialled digits, config).

`DialPlan.match` tells digit collection whether a number is complete; `DialPlan.route`
decides what a complete number means for this caller. Neither touches a channel or the
clock, so every numbering rule and class-of-service decision is a table-driven unit test.
Outside lines are reached only when the caller's class of service names both the line
group and the destination kind: toll fraud protection by construction. Emergency numbers
are the one exception, on any line, from any extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from firmware.calls.digitmap import DigitMap, DigitMatch
from firmware.config.schema import Config, ExtensionConfig


class RouteKind(StrEnum):
    INTERNAL = "internal"
    OUTSIDE = "outside"
    EMERGENCY = "emergency"
    FEATURE = "feature"
    SIBLING = "sibling"
    NODE = "node"  # a routing-graph node with a number (hunt group, queue, menu...)
    REJECTED = "rejected"  # known number, not allowed for this caller
    INVALID = "invalid"  # no such number


@dataclass(frozen=True)
class RoutePlan:
    kind: RouteKind
    dialled: str
    extension: str | None = None
    line_groups: tuple[str, ...] = ()
    number: str = ""  # what to send on the line
    destination_kind: str = ""
    feature: str | None = None
    site: str | None = None
    target: str = ""  # a routing node's name (RouteKind.NODE)
    reason: str = ""


@dataclass(frozen=True)
class _Meaning:
    kind: RouteKind
    target: str = ""  # extension, feature name, site name, or line group
    destination_kind: str = ""
    prefix_length: int = 0


class DialPlan:
    """Built once per config; immutable, so a reload swaps it atomically."""

    def __init__(self, config: Config) -> None:
        self.config = config
        patterns: list[str] = []
        meanings: dict[str, _Meaning] = {}

        def add(pattern: str, meaning: _Meaning) -> None:
            if pattern not in meanings:
                patterns.append(pattern)
                meanings[pattern] = meaning

        numbering = config.numbering
        # Emergency first: whatever else a config gets wrong, 112 (and 9112) stays emergency.
        for number in numbering.emergency:
            add(number, _Meaning(RouteKind.EMERGENCY, destination_kind="emergency"))
        for group in config.line_groups:
            for number in numbering.emergency:
                code = group.access_code
                add(code + number, _Meaning(RouteKind.EMERGENCY, group.name, "emergency", len(code)))
        for extension in config.extensions:
            add(extension.number, _Meaning(RouteKind.INTERNAL, extension.number))
        if numbering.operator_code and numbering.operator:
            add(numbering.operator_code, _Meaning(RouteKind.INTERNAL, numbering.operator))
        for name, code in config.feature_codes.items():
            add(code, _Meaning(RouteKind.FEATURE, name))
        for node in config.routing.nodes:
            if node.number:
                add(node.number, _Meaning(RouteKind.NODE, node.name, "internal"))
        for site in config.sibling_sites:
            for pattern in site.extensions:
                add(pattern, _Meaning(RouteKind.SIBLING, site.name, "internal"))
        for group in config.line_groups:
            code = group.access_code
            for kind, kind_patterns in numbering.destination_kinds.items():
                for pattern in kind_patterns:
                    add(code + pattern, _Meaning(RouteKind.OUTSIDE, group.name, kind, len(code)))
        self._meanings = meanings
        self.digit_map = DigitMap(patterns)

    def match(self, digits: str) -> DigitMatch:
        return self.digit_map.match(digits)

    def route(
        self,
        caller: ExtensionConfig | None,
        digits: str,
        *,
        class_of_service: str | None = None,
        unrestricted: bool = False,
    ) -> RoutePlan:
        """What `digits` means for `caller` (None: a caller with no class of service).

        `class_of_service` names the class for a caller that is not an extension (a sibling
        office); `unrestricted` is for numbers the installer configured (a sibling's public
        number as fallback), never for anything a caller dialled.
        """
        found = self.digit_map.match(digits)
        if found.pattern is None:
            return RoutePlan(RouteKind.INVALID, digits, reason="no_such_number")
        meaning = self._meanings[found.pattern]
        all_groups = tuple(group.name for group in self.config.line_groups)
        if meaning.kind == RouteKind.INTERNAL:
            return RoutePlan(
                RouteKind.INTERNAL, digits, extension=meaning.target, destination_kind="internal"
            )
        if meaning.kind == RouteKind.EMERGENCY:
            preferred = (meaning.target,) if meaning.target else ()
            groups = preferred + tuple(g for g in all_groups if g not in preferred)
            return RoutePlan(
                RouteKind.EMERGENCY,
                digits,
                line_groups=groups,
                number=digits[meaning.prefix_length :],
                destination_kind="emergency",
            )
        if meaning.kind == RouteKind.FEATURE:
            return RoutePlan(RouteKind.FEATURE, digits, feature=meaning.target)
        if meaning.kind == RouteKind.NODE:
            return RoutePlan(RouteKind.NODE, digits, target=meaning.target, destination_kind="internal")
        if meaning.kind == RouteKind.SIBLING:
            return RoutePlan(
                RouteKind.SIBLING, digits, site=meaning.target, destination_kind="internal"
            )
        cos_name = caller.class_of_service if caller else class_of_service
        cos = self.config.classes_of_service.get(cos_name) if cos_name else None
        number = digits[meaning.prefix_length :]
        if unrestricted:
            return RoutePlan(
                RouteKind.OUTSIDE,
                digits,
                line_groups=(meaning.target,),
                number=number,
                destination_kind=meaning.destination_kind,
            )
        if cos is None or meaning.target not in cos.line_groups:
            return RoutePlan(
                RouteKind.REJECTED,
                digits,
                number=number,
                destination_kind=meaning.destination_kind,
                reason=f"cos:line_group:{meaning.target}",
            )
        if meaning.destination_kind not in cos.allow:
            return RoutePlan(
                RouteKind.REJECTED,
                digits,
                number=number,
                destination_kind=meaning.destination_kind,
                reason=f"cos:{meaning.destination_kind}",
            )
        return RoutePlan(
            RouteKind.OUTSIDE,
            digits,
            line_groups=(meaning.target,),
            number=number,
            destination_kind=meaning.destination_kind,
        )
