"""Brute-force protection for SIP authentication: block sources that keep failing.

Sans-I/O: the owner reports every failed authentication (`record_failure`, unknown users
included: `auth.Failed` whatever its reason) and asks `is_blocked` before handling a
message from a source; what to do with a blocked source (drop silently, or answer 403) is
the owner's choice. A stale nonce or a request without credentials is not a failure.

Memory stays bounded whatever an attacker does: every table is capped and evicts its least
recently used entries, and blocks live in their own table so a flood of new addresses
cannot push a blocked one out.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_GUARD_COUNTER_NAMES = (
    "failures",  # failures recorded against untrusted sources
    "trusted_failures",  # failures from trusted networks: counted, never blocked
    "blocks",  # blocks started
    "drops",  # is_blocked() answers that were True
    "unblocks",  # blocks lifted by hand
    "evictions",  # sources forgotten to keep the tables bounded
)
_MAX_ESCALATION_STEPS = 64


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """When a source is blocked and for how long; the defaults suit an office appliance."""

    max_failures: int = 10  # this many failures ...
    window_s: float = 60.0  # ... within this many seconds block the source
    block_s: float = 900.0  # the first block
    escalation_factor: float = 2.0  # each repeat offence multiplies the block by this
    max_block_s: float = 86_400.0
    forget_offences_after_s: float = 86_400.0  # a clean source starts again from block_s
    max_tracked: int = 10_000  # sources per table
    # IPv6 sources are counted per prefix: one host owns a whole /64 and can walk it.
    ipv6_prefix_length: int = 64
    trusted_networks: tuple[str, ...] = ()  # e.g. the office LAN: never blocked

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if self.window_s <= 0 or self.block_s <= 0:
            raise ValueError("window_s and block_s must be positive")
        if self.escalation_factor < 1:
            raise ValueError("escalation_factor must be at least 1")
        if self.max_block_s < self.block_s:
            raise ValueError("max_block_s must be at least block_s")
        if self.max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        if not 1 <= self.ipv6_prefix_length <= 128:
            raise ValueError("ipv6_prefix_length must be 1..128")
        for network in self.trusted_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as error:
                raise ValueError(f"trusted network {network!r}: {error}") from None


@dataclass(frozen=True, slots=True)
class Block:
    """A source that is being dropped until `until` (same clock as `now`)."""

    source: str
    until: float
    offence: int  # 1 for the first block, 2 for the next within forget_offences_after_s, ...
    duration_s: float


@lru_cache(maxsize=4096)
def _ipv6_source(address: str, prefix_length: int) -> str:
    """The key of an IPv6 address: its prefix, or the IPv4 address it maps."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a test name, a unix socket): keep as it is
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        parsed = parsed.__class__(parsed.packed)  # drop a %scope
        network = ipaddress.IPv6Network((parsed, prefix_length), strict=False)
        return str(network)
    return str(parsed)


class AuthGuard:
    """Counts authentication failures per source and blocks the persistent ones.

    `address` is the source IP as the transport reports it; `now` is monotonic seconds.
    """

    def __init__(self, policy: GuardPolicy | None = None) -> None:
        self.policy = policy if policy is not None else GuardPolicy()
        self._trusted = tuple(
            ipaddress.ip_network(network, strict=False) for network in self.policy.trusted_networks
        )
        # Failure times in the window, per source, least recently failed first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocks: dict[str, Block] = {}
        # Offence number and the time the last block ended, for escalation.
        self._offences: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._counters = dict.fromkeys(_GUARD_COUNTER_NAMES, 0)

    def source_key(self, address: str) -> str:
        """What the guard counts by: the address, or for IPv6 its prefix."""
        if ":" in address:
            return _ipv6_source(address, self.policy.ipv6_prefix_length)
        return address

    def is_blocked(self, address: str, now: float) -> bool:
        """True while the source is blocked. Cheap: called for every message received."""
        if not self._blocks or not self._block_running(self.source_key(address), now):
            return False
        self._counters["drops"] += 1
        return True

    def record_failure(self, address: str, now: float) -> Block | None:
        """Count one failed authentication; the new `Block` if this one starts it."""
        if self._is_trusted(address):
            self._counters["trusted_failures"] += 1
            return None
        self._counters["failures"] += 1
        key = self.source_key(address)
        if self._block_running(key, now):
            return None  # reported late, by a request already in progress
        failures = self._failures.pop(key, None)
        if failures is None:
            failures = deque(maxlen=self.policy.max_failures)
        failures.append(now)
        horizon = now - self.policy.window_s
        while failures[0] <= horizon:
            failures.popleft()
        if len(failures) < self.policy.max_failures:
            self._failures[key] = failures
            while len(self._failures) > self.policy.max_tracked:
                self._failures.popitem(last=False)
                self._counters["evictions"] += 1
            return None
        return self._block(key, now)

    def unblock(self, address: str) -> bool:
        """Lift a block by hand (an admin who let a phone lock itself out); True if there was one.

        The offence history stays, so a source that goes on failing is blocked longer.
        """
        key = self.source_key(address)
        self._failures.pop(key, None)
        if self._blocks.pop(key, None) is None:
            return False
        self._counters["unblocks"] += 1
        return True

    def purge(self, now: float) -> None:
        """Forget what no longer matters (ended blocks, old failures); call now and then."""
        for key in [key for key, block in self._blocks.items() if now >= block.until]:
            del self._blocks[key]
        horizon = now - self.policy.window_s
        for key in [key for key, failures in self._failures.items() if failures[-1] <= horizon]:
            del self._failures[key]
        forget_before = now - self.policy.forget_offences_after_s
        for key in [key for key, (_n, ended) in self._offences.items() if ended < forget_before]:
            del self._offences[key]

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def snapshot(self, now: float, limit: int = 50) -> dict[str, Any]:
        """For `minipbx status`: who is blocked and for how long, who is failing."""
        blocks = sorted(
            (block for block in self._blocks.values() if now < block.until),
            key=lambda block: block.until,
            reverse=True,
        )
        horizon = now - self.policy.window_s
        failing = sorted(
            (
                (key, sum(1 for moment in failures if moment > horizon))
                for key, failures in self._failures.items()
            ),
            key=lambda item: item[1],
            reverse=True,
        )
        return {
            "blocked": [
                {
                    "source": block.source,
                    "remaining_s": round(block.until - now, 1),
                    "offence": block.offence,
                    "duration_s": block.duration_s,
                }
                for block in blocks[:limit]
            ],
            "blocked_total": len(blocks),
            "failing": [
                {"source": key, "failures": count} for key, count in failing[:limit] if count
            ],
            "tracked": len(self._failures),
            "counters": self.counters,
        }

    def _block_running(self, key: str, now: float) -> bool:
        block = self._blocks.get(key)
        if block is None:
            return False
        if now >= block.until:
            del self._blocks[key]
            return False
        return True

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        return any(parsed in network for network in self._trusted)

    def _block(self, key: str, now: float) -> Block:
        policy = self.policy
        offence = 1
        previous = self._offences.pop(key, None)
        if previous is not None and now - previous[1] <= policy.forget_offences_after_s:
            offence = previous[0] + 1
        # The exponent is capped so a source that offends for years cannot overflow a float.
        growth = policy.escalation_factor ** min(offence - 1, _MAX_ESCALATION_STEPS)
        duration = min(policy.block_s * growth, policy.max_block_s)
        block = Block(source=key, until=now + duration, offence=offence, duration_s=duration)
        self._offences[key] = (offence, block.until)
        while len(self._offences) > policy.max_tracked:
            self._offences.popitem(last=False)
        if len(self._blocks) >= policy.max_tracked:
            self._make_room_for_block(now)
        self._blocks[key] = block
        self._counters["blocks"] += 1
        return block

    def _make_room_for_block(self, now: float) -> None:
        """Drop ended blocks; if all are running, the one that ends first."""
        self.purge(now)
        if len(self._blocks) >= self.policy.max_tracked:
            first_to_end = min(self._blocks.values(), key=lambda block: block.until)
            del self._blocks[first_to_end.source]
            self._counters["evictions"] += 1
