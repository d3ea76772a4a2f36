"""SIPp (an independent SIP implementation) as the far end of tests: one copy of the helpers.

Test modules import these as `from sipp_tools import ...` (tests/ is on sys.path, as for
conftest). Every SIPp run is bounded: it binds to 127.0.0.1, exits by itself after
`-timeout` with an error, and `finish` kills it if it outlives the test's own bound. The
fixtures are imported under another name (`uas_port_fixture`) so the test arguments that
use them do not shadow an import: pytest registers them by their `name=`.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from firmware.selftest import test_tone as make_tone
from firmware.sip.service import SipService

if TYPE_CHECKING:
    from conftest import Pbx

    from firmware.lines.simulator import SimPhone

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "sip" / "scenarios"
needs_sipp = pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is not installed")

Process = asyncio.subprocess.Process


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port on 127.0.0.1 free right now (UDP unless `kind` says TCP), for SIPp or a peer."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def host_port(address: tuple[str, int]) -> str:
    """The "host:port" text SIPp takes as its remote host."""
    return f"{address[0]}:{address[1]}"


def target(pbx: Pbx) -> str:
    """Where SIPp sends to reach the appliance's SIP stack."""
    return host_port(pbx.app.sip.stack.local_address)


async def echoed(pbx: Pbx, phone: SimPhone) -> bool:
    """Whether a 1004 Hz tone said on `phone` comes back within 2 s. Against SIPp with
    `-rtp_echo` (it returns our RTP), this proves audio passes both ways over the SIP leg."""
    mark = phone.mark()
    phone.say(make_tone(1004, 600))
    return await pbx.hears(phone, (1004.0,), since=mark, timeout=2.0)


async def start_sipp(
    *args: str,
    timeout_s: int = 20,
    transport: str | None = None,
    trace_errors: bool = False,
    cwd: Path | None = None,
) -> Process:
    """SIPp on 127.0.0.1 with `args`, ending itself with an error after `timeout_s`.

    `transport` is SIPp's `-t` ("t1": TCP, one socket); `trace_errors` puts the messages it
    found unexpected into its output; `cwd` is where relative paths in a scenario (pcaps)
    are looked up.
    """
    assert SIPP is not None
    command = [SIPP, "-i", "127.0.0.1"]
    if transport is not None:
        command += ["-t", transport]
    command += [*args, "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error"]
    if "-mp" not in args:  # SIPp's default media port 6000 is shared by every other SIPp
        command += ["-mp", str(free_port())]
    if trace_errors:
        command += ["-trace_err", "-error_file", "/dev/stderr"]
    return await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=cwd
    )


async def finish(process: Process, timeout: float = 25.0, tail: int | None = 3000) -> tuple[int, str]:
    """SIPp's exit code and output (its last `tail` characters, all of it if None); killed
    after `timeout` seconds, which should exceed its own `-timeout`."""
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    return process.returncode or 0, text if tail is None else text[-tail:]


async def stop_sipp(*processes: Process | None) -> None:
    """Kill and reap the SIPp processes still running (a test that failed before `finish`)."""
    for process in processes:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll `condition` every 20 ms; fail the test if it does not hold within `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def sip_section(rtp_ports: tuple[int, int]) -> str:
    """Config text: SIP on 127.0.0.1 (any port) with RTP on `rtp_ports`; peers may follow."""
    return f'\n[sip]\nlisten = "127.0.0.1:0"\nrtp_ports = [{rtp_ports[0]}, {rtp_ports[1]}]\n'


def sip_peer(name: str, port: int, host: str = "127.0.0.1", lines: str = "") -> str:
    """Config text: one [[sip.peers]] entry (where SIPp answers), with `lines` added to it."""
    return f'\n[[sip.peers]]\nname = "{name}"\nhost = "{host}"\nport = {port}\n{lines}'


def sip_with_provider(port: int, rtp_ports: tuple[int, int], lines: str = "") -> str:
    """Config text: `sip_section` and one peer "provider" at 127.0.0.1:`port`, with `lines`
    added to it (or sections after it)."""
    return sip_section(rtp_ports) + sip_peer("provider", port, lines=lines)


def with_voip_group(text: str, peers: list[str]) -> str:
    """The office config plus line group "voip" (access code 8) over `peers`, for staff too."""
    group = '[[line_groups]]\nname = "city"\naccess_code = "9"\n'
    voip = f'\n[[line_groups]]\nname = "voip"\naccess_code = "8"\nsip_peers = {peers!r}\n'.replace("'", '"')
    assert group in text
    return text.replace(group, group + voip).replace('line_groups = ["city"]', 'line_groups = ["city", "voip"]')


@pytest.fixture(name="uas_port")
def uas_port_fixture() -> int:
    """The UDP port of the SIPp that plays the provider; the appliance's config points there."""
    return free_port()


@pytest.fixture(name="stack_only")
async def stack_only_fixture() -> AsyncIterator[SipService]:
    """A SIP stack with nothing behind it: the client under test brings its own logic."""
    service = SipService("office")
    await service.start("127.0.0.1", 0)
    try:
        yield service
    finally:
        await service.stop()
