"""Two offices, two appliances (separate processes, SIP on 127.0.0.1): an extension in one
calls an extension in the other by its short number, as if in the same building.

Speech is proven both ways with tones through both mixers and the SIP link; the call is
recorded on both sides with one correlation id; when the other office is unreachable the
call takes the configured fallback: its public number on a city line, then the extension
as DTMF, heard on the line.
"""

from __future__ import annotations

import json
import re
import socket
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware.media.tones import DTMF_FREQUENCIES
from tests.appliance_process import Core
from tests.conftest import office_config

TIMERS = """
[timers]
first_digit_s = 3.0
inter_digit_s = 1.0
ring_timeout_s = 15.0
lockout_tone_s = 1.0
fxo_dial_tone_wait_s = 1.5
fxo_ring_gone_s = 5.5
"""
PASSWORD = "lisbon-porto-link"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def site_config(name: str, own: str, other: str, other_port: int, port: int, rtp: int, fallback: str = "") -> str:
    """The default office renumbered to `own`xx, with the other office as a sibling."""
    text = office_config(
        f"""
[sip]
listen = "127.0.0.1:{port}"
rtp_ports = [{rtp}, {rtp + 100}]

[[sibling_sites]]
name = "{"porto" if name == "lisbon" else "lisbon"}"
extensions = ["{other}xx"]
host = "127.0.0.1"
port = {other_port}
password = "{PASSWORD}"
keepalive_s = 1.0
{fallback}
""",
        timers=TIMERS,
    )
    text = text.replace('name = "office"', f'name = "{name}"', 1)
    return re.sub(r'"20([0-9])"', rf'"{own}0\1"', text)  # extensions only, not "20:00"


class Site:
    def __init__(self, root: Path, name: str, config: str) -> None:
        self.dir = root / name
        self.dir.mkdir()
        path = self.dir / "config.toml"
        path.write_text(config)
        self.core = Core(self.dir, path)

    def sim(self, action: str, target: str = "", **fields: Any) -> dict[str, Any]:
        answer = self.core.request({"cmd": "sim", "action": action, "target": target, **fields})
        assert answer["ok"], answer
        return answer

    def phone(self, extension: str) -> dict[str, Any]:
        return self.sim("state")["sim"]["phones"][self._port(extension)]

    def _port(self, extension: str) -> str:
        number = int(extension[-1])  # x01 is on port 1, x02 on port 2, ...
        return str(number)

    def hears(self, target: str, frequencies: tuple[float, ...], timeout: float = 4.0) -> bool:
        """Does `target` hear these within `timeout`? Each look is at the last half second
        (a capture looks back in time), so a slow start on a loaded machine is waited for."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.capture(target, 0.5)
            if all(level(samples, f) > 10 * noise_floor(samples) for f in frequencies):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def capture(self, target: str, seconds: float) -> np.ndarray:
        path = self.dir / f"capture-{time.monotonic_ns()}.wav"
        self.sim("capture", target, path=str(path), seconds=seconds)
        with wave.open(str(path)) as wav:
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(float)

    def records(self, last: int = 5) -> list[dict[str, Any]]:
        return json.loads(self.core.cli("calls", "--last", str(last), "--json").stdout)

    def calls_in_progress(self) -> int:
        return len(self.core.status().get("calls", []))


def level(samples: np.ndarray, frequency: float) -> float:
    """Goertzel-like magnitude of one frequency (the test's own detector)."""
    if samples.size == 0:
        return 0.0
    t = np.arange(samples.size) / 8000.0
    return float(abs(np.dot(samples, np.exp(-2j * np.pi * frequency * t)))) / samples.size


def noise_floor(samples: np.ndarray) -> float:
    probes = (520.0, 1720.0, 2300.0, 3100.0)
    return max(max(level(samples, f) for f in probes), 1.0)


def wait_for(condition, timeout: float, what: str, site: Site | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            log = site.core.log_text() if site else ""
            raise AssertionError(f"timed out waiting for {what}\n{log}")
        time.sleep(0.05)


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    port_a, port_b = free_port(), free_port()
    fallback = 'fallback = "pstn"\nfallback_number = "9223456789"\nfallback_dtmf_delay_s = 1.0'
    lisbon = Site(tmp_path, "lisbon", site_config("lisbon", "2", "3", port_b, port_a, 32000, fallback))
    porto = Site(tmp_path, "porto", site_config("porto", "3", "2", port_a, port_b, 32200))
    try:
        lisbon.core.wait_ready()
        porto.core.wait_ready()
        yield lisbon, porto
    finally:
        lisbon.core.stop()
        porto.core.stop()


def call_across(lisbon: Site, porto: Site) -> None:
    """Extension 202 in Lisbon dials 303 in Porto, which rings there and is answered."""
    lisbon.sim("offhook", "202")
    lisbon.sim("dial", "202", digits="303")
    wait_for(lambda: porto.phone("303")["ringing"], 8.0, "303 ringing in Porto", porto)
    assert porto.phone("303")["caller"][0] == "202", "the caller's extension is shown"
    porto.sim("offhook", "303")


def test_an_extension_calls_a_sibling_extension_by_its_short_number(sites: tuple[Site, Site]) -> None:
    lisbon, porto = sites
    call_across(lisbon, porto)
    time.sleep(0.5)
    lisbon.sim("say", "202", frequency=697, ms=6000)
    assert porto.hears("303", (697.0,)), "Lisbon's voice not heard in Porto"
    porto.sim("say", "303", frequency=1209, ms=6000)
    assert lisbon.hears("202", (1209.0,)), "Porto's voice not heard in Lisbon"
    lisbon.sim("onhook", "202")  # the caller hangs up: Porto's call ends too
    wait_for(lambda: porto.calls_in_progress() == 0, 6.0, "Porto's call to end", porto)
    assert porto.phone("303")["off_hook"], "303 is still lifted (it hears busy tone until it hangs up)"
    porto.sim("onhook", "303")
    wait_for(lambda: len(porto.records()) >= 1 and len(lisbon.records()) >= 1, 5.0, "records")
    mine, theirs = lisbon.records()[0], porto.records()[0]
    assert mine["disposition"] == theirs["disposition"] == "answered"
    assert mine["correlation_id"] and mine["correlation_id"] == theirs["correlation_id"]
    assert mine["dialled"] == "303" and theirs["caller_number"] == "202"


def test_the_callee_hanging_up_ends_the_call_in_the_other_office(sites: tuple[Site, Site]) -> None:
    lisbon, porto = sites
    call_across(lisbon, porto)
    time.sleep(0.5)
    porto.sim("onhook", "303")
    wait_for(lambda: lisbon.calls_in_progress() == 0, 6.0, "Lisbon's call to end", lisbon)
    lisbon.sim("onhook", "202")
    records = lisbon.records()
    assert records[0]["disposition"] == "answered" and records[0]["hangup_side"] == "callee"


def test_an_unreachable_sibling_is_called_through_its_public_number(sites: tuple[Site, Site]) -> None:
    """Porto's appliance is gone: Lisbon dials Porto's public number on a city line and
    then the extension as DTMF, which the line carries in-band."""
    lisbon, porto = sites
    assert "sibling porto udp:127.0.0.1" in lisbon.core.cli("status").stdout
    porto.core.stop()
    wait_for(lambda: "DOWN" in lisbon.core.cli("status").stdout, 8.0, "the link shown down", lisbon)
    lisbon.sim("offhook", "202")
    lisbon.sim("dial", "202", digits="303")
    wait_for(
        lambda: "223456789" in lisbon.sim("state")["sim"]["lines"]["9"]["dialled"], 8.0, "the public number dialled", lisbon
    )
    time.sleep(1.0 + 3 * 0.16 + 0.3)  # fallback_dtmf_delay_s, then three digits
    heard = lisbon.capture("city1", 1.2)
    for digit in "303":
        low, high = DTMF_FREQUENCIES[digit]
        assert level(heard, low) > 5 * noise_floor(heard) and level(heard, high) > 5 * noise_floor(heard), digit
    lisbon.sim("onhook", "202")
    wait_for(lambda: len(lisbon.records()) >= 1, 5.0, "record")
    record = lisbon.records()[0]
    assert record["destination_kind"] == "sibling_fallback" and record["line"] == "city1"
