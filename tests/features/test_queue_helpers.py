"""Shared by the queue tests (no tests here): an office with a queue, dialling it, who rings."""

from __future__ import annotations

import json

import numpy as np

from firmware.calls.lifecycle import LegState
from firmware.features.queue_service import FEATURE_KEY, QueueService
from tests.features.feature_tools import _loudest_window, office_with_routing

AGENTS = ("202", "203", "204")

QUEUE_DEFAULTS: dict[str, object] = {
    "name": "main",
    "kind": "queue",
    "number": "600",
    "agents": list(AGENTS),
    "strategy": "ring_all",
    "entry_prompt": "please_hold",
    "comfort_prompt": "please_hold",
    "comfort_every_s": 30,
    "agent_ring_s": 1.0,
    "wrap_up_s": 0,
    "max_wait_s": 30,
}

FEATURE_CODES = {
    "queue_login": "*45",
    "queue_logout": "*46",
    "queue_logout_main": "*47",
}


def toml_value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def queue_office(**fields: object) -> str:
    """The default office: city1 goes to the queue "main" (number 600, agents 202-204),
    with these node fields changed and the queue log-in codes *45, *46 (*47: main only)."""
    node = {**QUEUE_DEFAULTS, **fields}
    routing = "[[routing.nodes]]\n" + "".join(
        f"{key} = {toml_value(value)}\n" for key, value in node.items() if value is not None
    )
    text = office_with_routing(routing)
    codes = "".join(f'{name} = "{code}"\n' for name, code in FEATURE_CODES.items())
    return text.replace("[feature_codes]\n", "[feature_codes]\n" + codes, 1)


def queue_service(pbx) -> QueueService:
    return pbx.app.calls.features[FEATURE_KEY]


def waiting(pbx, queue: str = "main") -> int:
    """Callers waiting in `queue` (0 before the first queue call made the service)."""
    service = pbx.app.calls.features.get(FEATURE_KEY)
    return service.waiting_count(queue) if service is not None else 0


async def dial_queue(pbx, extension: str, number: str = "600"):
    phone = pbx.phone(extension)
    phone.off_hook()
    await pbx.wait_state(extension, LegState.DIALLING)
    await phone.dial(number)
    return phone


def ringing(pbx, agents: tuple[str, ...] = AGENTS) -> set[str]:
    return {agent for agent in agents if pbx.channel(agent).state == LegState.ALERTING}


async def wait_ringing(pbx, expected: set[str], timeout: float = 3.0) -> None:
    """Until exactly `expected` of the agents ring."""
    await pbx.sim.wait_until(
        lambda: ringing(pbx) == expected,
        timeout,
        f"ringing {sorted(expected)} (is {sorted(ringing(pbx))})",
    )


async def wait_shown(pbx, agent: str, number: str, timeout: float = 3.0) -> None:
    """Until `agent`'s phone rings showing the caller `number`."""
    phone = pbx.phone(agent)
    await pbx.sim.wait_until(
        lambda: phone.ringing is not None and (phone.last_caller or ("",))[0] == number,
        timeout, f"{agent} ringing with {number} shown (shows {phone.last_caller})",
    )  # fmt: skip


def prompt_start(heard: np.ndarray, prompt: np.ndarray, window_s: float = 0.4) -> tuple[float, int]:
    """(similarity, sample index in `heard` where `prompt` starts) of the best match."""
    window = int(window_s * 8000)
    reference = _loudest_window(prompt, window).astype(np.float64)
    offset = next(
        start
        for start in range(0, max(prompt.size - reference.size, 0) + 1, 80)
        if np.array_equal(prompt[start : start + reference.size], reference)
    )
    signal = heard.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(signal.size + reference.size)))
    correlation = np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(reference[::-1], size), size)
    correlation = correlation[reference.size - 1 : signal.size]
    energy = np.convolve(signal**2, np.ones(reference.size), mode="valid")
    score = correlation / np.sqrt(np.maximum(energy, 1e-9) * float(reference @ reference))
    best = int(np.argmax(score))
    return float(score[best]), best - offset
