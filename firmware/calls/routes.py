"""Outbound routing: which trunks an outside call tries, in which order, with which number.

A pure function of (config, route plan), like the dial plan: call control walks the list
and skips what is busy or down. Without a matching `[[outbound_routes]]` entry the line
group dialled keeps its old meaning: its city lines, then its SIP peers (failover).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from firmware.calls.dialplan import RouteKind, RoutePlan
from firmware.calls.digitmap import DigitMap
from firmware.config.schema import Config, OutboundRouteConfig


class TrunkKind(StrEnum):
    LINES = "lines"  # any free city line of a line group
    SIP = "sip"  # a SIP peer (provider or PBX)


@dataclass(frozen=True)
class Attempt:
    kind: TrunkKind
    name: str  # the line group or the SIP peer
    number: str  # what to send (the route's rewriting applied; a peer applies its own after)
    group: str  # the line group recorded in the CDR
    route: str = ""  # the outbound route that chose it ("" = the line group's default)


def _rewrite(route: OutboundRouteConfig | None, number: str) -> str:
    if route is None:
        return number
    return route.prepend + number[route.strip :]


class OutboundRoutes:
    """Built once per config (a reload swaps it); `attempts` is a table-driven unit test."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._maps = [(route, DigitMap(list(route.patterns))) for route in config.outbound_routes]

    def route_for(self, plan: RoutePlan) -> OutboundRouteConfig | None:
        entry = plan.line_groups[0] if plan.line_groups else ""
        for route, digit_map in self._maps:
            if route.line_groups and entry not in route.line_groups:
                continue
            if digit_map.match(plan.number).pattern is not None:  # complete, or "x." open-ended
                return route
        return None

    def _group_trunks(self, group_name: str, number: str, route: str) -> list[Attempt]:
        group = self.config.line_group(group_name)
        if group is None:
            return []
        trunks = [Attempt(TrunkKind.LINES, group.name, number, group.name, route)]
        trunks += [Attempt(TrunkKind.SIP, peer, number, group.name, route) for peer in group.sip_peers]
        return trunks

    def attempts(self, plan: RoutePlan) -> list[Attempt]:
        """Trunks to try for an outside (or emergency) plan, best first, no duplicates."""
        route = self.route_for(plan)
        found: list[Attempt] = []
        if route is not None:
            number = _rewrite(route, plan.number)
            entry = plan.line_groups[0] if plan.line_groups else ""
            for name in route.via:
                if self.config.line_group(name) is not None:
                    found += self._group_trunks(name, number, route.name)
                else:
                    found.append(Attempt(TrunkKind.SIP, name, number, entry, route.name))
        if route is None or plan.kind == RouteKind.EMERGENCY:  # an emergency call tries everything
            for group in plan.line_groups:
                found += self._group_trunks(group, plan.number, "")
        unique: list[Attempt] = []
        for attempt in found:
            if all((a.kind, a.name) != (attempt.kind, attempt.name) for a in unique):
                unique.append(attempt)
        return unique
