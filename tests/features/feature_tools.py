"""Shared by the routing-feature tests: configs with a routing graph, prompts heard in audio."""

from __future__ import annotations

import asyncio

import numpy as np

from firmware.media.mixer import TICK_S
from tests.conftest import office_config


def office_with_routing(routing: str, city1: str = '["main"]', extra: str = "") -> str:
    """The default office with city1 sent to `city1` and the given [[routing.nodes]]."""
    text = office_config(extra)
    start = text.index('name = "city1"')
    at = text.index("incoming = ", start)
    end = text.index("\n", at)
    return text[:at] + f"incoming = {city1}" + text[end:] + "\n" + routing


def _loudest_window(samples: np.ndarray, length: int) -> np.ndarray:
    """The `length` samples of a prompt with the most energy (skips leading silence)."""
    if samples.size <= length:
        return samples
    energy = np.convolve(samples.astype(np.float64) ** 2, np.ones(length), mode="valid")
    start = int(np.argmax(energy[:: 80])) * 80
    return samples[start : start + length]


def prompt_similarity(heard: np.ndarray, prompt: np.ndarray, window_s: float = 0.4) -> float:
    """Best normalised cross-correlation of a stretch of the prompt within `heard` (0..1)."""
    reference = _loudest_window(prompt, int(window_s * 8000)).astype(np.float64)
    signal = heard.astype(np.float64)
    if signal.size < reference.size or not reference.any():
        return 0.0
    size = 1 << int(np.ceil(np.log2(signal.size + reference.size)))
    correlation = np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(reference[::-1], size), size)
    correlation = correlation[reference.size - 1 : signal.size]
    window_energy = np.convolve(signal**2, np.ones(reference.size), mode="valid")
    norm = np.sqrt(np.maximum(window_energy, 1e-9) * float(reference @ reference))
    return float(np.max(correlation / norm))


async def hears_prompt(pbx, port, name: str, since: int, timeout: float = 5.0) -> bool:
    """True once `port` heard the prompt `name` (a stretch of it, by cross-correlation)."""
    prompt = pbx.app.mixer.sounds.samples_of(f"prompt:{name}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if prompt_similarity(port.heard(since), prompt) > 0.8:
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(10 * TICK_S)
