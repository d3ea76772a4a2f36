"""The telephony core process: wires config, mixer, line card, call control, records, API.

Start-up and shutdown happen in stages with timeouts; everything slow (opening the serial
port, SQLite, reading the config file) runs off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from firmware.accounting.rating import make_rater
from firmware.accounting.schedule import ReportScheduler
from firmware.accounting.smdr_output import SmdrService
from firmware.calls.cdr import CdrStore
from firmware.calls.control import CallManager
from firmware.config.load import ConfigError, load_config
from firmware.config.schema import Config
from firmware.lines.audio import AudioPortMap, MemoryAudio, PortAudio, PyAudioAudio
from firmware.lines.service import LineCardService
from firmware.lines.simulator import SimulatedLineCard
from firmware.media.mixer import Mixer
from firmware.media.prompt_library import (
    LibraryReport,
    async_load_prompts,
    checking_prompts,
    loaded_sounds,
    uploads_folder,
)
from firmware.media.soundbank import SoundBank
from firmware.media.tones import (
    DTMF_FREQUENCIES,
    TonePlan,
    ToneSpec,
    dtmf_samples,
    get_tone_plan,
    parse_tone,
    render_cycle,
)
from firmware.modes.service import ModeService

log = logging.getLogger(__name__)

TEST_TONE = "test_tone"  # 1004 Hz, the classic line test frequency (ITU-T O.6 band)
TEST_TONE_HZ = 1004.0

# Settings a reload cannot change while calls may be using them.
_RESTART_ONLY = ("line_card", "site", "storage", "tones", "sip", "sibling_sites", "smdr")


def default_data_dir(config: Config | None = None) -> Path:
    """Where the database and control socket live: env, then config, then a system default."""
    env = os.environ.get("MINIPBX_DATA_DIR")
    if env:
        return Path(env)
    if config is not None and config.storage.data_dir:
        return Path(config.storage.data_dir)
    if os.geteuid() == 0:
        return Path("/var/lib/minipbx")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "minipbx"


def build_sounds(plan: TonePlan, overrides: dict[str, str]) -> SoundBank:
    sounds = SoundBank()
    for name, spec in plan.tones.items():
        chosen = parse_tone(overrides[name]) if name in overrides else spec
        sounds.add(name, render_cycle(chosen), loop=chosen.repeat)
    sounds.add(TEST_TONE, render_cycle(ToneSpec.continuous((TEST_TONE_HZ,), -10.0)), loop=True)
    for digit in DTMF_FREQUENCIES:  # relayed digits played into analogue legs (Channel.send_digits)
        sounds.add(f"dtmf_{digit}", dtmf_samples(digit, on_ms=80, off_ms=80), loop=False)
    return sounds


def _sip_accounts(config: Config) -> dict[str, str | None]:
    return {e.number: e.sip_password for e in config.extensions if e.sip_password}


class Appliance:
    def __init__(
        self, config: Config, config_path: str | None = None, data_dir: Path | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.data_dir = data_dir or default_data_dir(config)
        self.started_at = time.time()
        self.plan = get_tone_plan(config.site.country)
        self.mixer = Mixer(build_sounds(self.plan, dict(config.tones)))
        self.simulator: SimulatedLineCard | None = None
        self.cdr: CdrStore | None = None
        self.calls: CallManager | None = None
        self.line_card: LineCardService | None = None
        self.api = None
        self.smdr: SmdrService | None = None
        self.modes: ModeService | None = None
        self.prompts: LibraryReport | None = None
        self.scheduler: ReportScheduler | None = None
        self.sip = None
        self.rtp = None
        self.reloads = 0
        self.reload_failures = 0
        self.last_reload_error = ""
        self._stopping = asyncio.Event()

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "control.sock"

    async def start(self, with_api: bool = True) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: self.data_dir.mkdir(parents=True, exist_ok=True))
        self.cdr = CdrStore(self.data_dir / "cdr.sqlite3", rater=make_rater(lambda: self.config))
        self.prompts = await async_load_prompts(self.mixer.sounds, self.config, self.data_dir)
        self._log_missing_prompts()
        self.modes = ModeService(self.config, self.data_dir)
        await self.modes.start()
        card = self.config.line_card
        audio: PortAudio
        if card.url == "sim":
            audio = MemoryAudio(card.port_count)
            self.simulator = SimulatedLineCard(card.fxs_ports, card.fxo_ports, audio, self.plan)
            url = await self.simulator.start()
        elif card.audio == "alsa":
            audio = PyAudioAudio(
                [AudioPortMap(a.port, a.device, a.channel) for a in card.audio_ports]
            )
            await loop.run_in_executor(None, audio.open)  # type: ignore[attr-defined]
            url = card.url
        else:
            audio = MemoryAudio(card.port_count)
            url = card.url
        self.mixer.start()
        self.calls = CallManager(self.config, self.mixer, self.cdr)
        self.calls.modes = self.modes
        self.calls.data_dir = self.data_dir
        self.smdr = SmdrService(self.config, Path(self.cdr.path))
        await self.smdr.start()
        self.calls.record_listeners.append(self.smdr.publish)
        self.scheduler = ReportScheduler(self.config, self.data_dir, config_path=self.config_path)
        await self.scheduler.start()
        self.line_card = LineCardService(
            card, url, self.mixer, audio, self.plan, site=self.config.site, lines=self.config.lines
        )
        if self.simulator is not None and card.caller_id == "software":
            self._simulate_caller_id(self.config)
        self.calls.add_channels(self.line_card.all_channels)
        await self.line_card.start()
        if self.config.sip.listen:
            from firmware.media.rtp_endpoint import RtpEndpoint, RtpPortRange
            from firmware.sip.registrar import Registrar
            from firmware.sip.service import SipService

            self.rtp = RtpEndpoint(RtpPortRange(*self.config.sip.rtp_ports))
            self.mixer.add_endpoint(self.rtp)
            registrar = Registrar.from_config(self.config, self.data_dir)
            self.sip = SipService(self.config.site.name, self.config.sip, self.mixer, registrar)
            self.sip.attach(self.calls, self.rtp)
            host, _, port = self.config.sip.listen.rpartition(":")
            await self.sip.start(host, int(port))
        if with_api:
            from firmware.api import ControlServer

            self.api = ControlServer(self)
            await self.api.start(self.socket_path)
        from firmware.sip.gc_policy import settle_after_start

        settle_after_start()  # freeze the start-up heap: full GC passes stalled the mixer
        log.info(
            "event=appliance_started site=%s data_dir=%s", self.config.site.name, self.data_dir
        )

    def _simulate_caller_id(self, config: Config) -> None:
        """The simulated exchange sends caller ID as line audio, as the config expects."""
        from firmware.lines.caller_id import resolve_profile

        assert self.simulator is not None
        country = config.site.country
        self.simulator.set_caller_id_profile(
            resolve_profile(config.line_card.caller_id_profile, country)
        )
        for line in config.lines:
            if line.caller_id_profile and line.port in self.simulator.lines:
                self.simulator.lines[line.port].caller_id_profile = resolve_profile(
                    line.caller_id_profile, country
                )

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the line card is up and its ports are in service."""
        deadline = time.monotonic() + timeout
        assert self.line_card is not None
        while not all(channel.in_service for channel in self.line_card.all_channels):
            if time.monotonic() > deadline:
                raise TimeoutError("the line card did not come up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.calls is not None:
            await self.calls.shutdown()
        if self.modes is not None:
            await self.modes.stop()
        if self.smdr is not None:
            await self.smdr.stop()
        if self.sip is not None:
            await self.sip.stop()
        if self.rtp is not None:
            await self.rtp.close()
        if self.line_card is not None:
            await self.line_card.stop()
        if self.simulator is not None:
            await self.simulator.stop()
        await self.mixer.stop()
        if self.cdr is not None:
            await asyncio.to_thread(self.cdr.close)
        log.info("event=appliance_stopped")

    def request_stop(self) -> None:
        self._stopping.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        await self._stopping.wait()

    def _log_missing_prompts(self) -> None:
        """At start a prompt the config names but the loaded library lacks is logged, not
        fatal: refusing to start would stop every call (emergency numbers too) for one
        greeting."""
        from firmware.features.graph import check_sound_names

        assert self.prompts is not None
        uploads = uploads_folder(self.config.prompts, self.data_dir)
        for problem in check_sound_names(self.config, loaded_sounds(self.prompts, uploads)):
            log.error("event=prompt_missing problem=%r", problem)

    # ----- reload --------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Validate the file, then swap numbering and routing; a bad file changes nothing."""
        if self.config_path is None:
            return {
                "ok": False,
                "error": "running on the embedded default: there is no file to reload",
            }
        try:
            with checking_prompts(self.data_dir):  # a prompt no library has refuses the file
                new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as error:
            self.reload_failures += 1
            self.last_reload_error = "; ".join(error.errors)
            log.error("event=reload_refused errors=%r", error.errors)
            return {
                "ok": False,
                "error": "config refused, the running config stays",
                "errors": error.errors,
            }
        needs_restart = [
            key for key in _RESTART_ONLY if getattr(new, key) != getattr(self.config, key)
        ]
        if _sip_accounts(new) != _sip_accounts(self.config):
            needs_restart.append("extensions.sip_password")  # the registrar's accounts
        self.config = new
        assert self.calls is not None
        self.calls.apply_config(new)
        if self.line_card is not None:
            self.line_card.configure_lines(new.site, new.lines)
        if self.modes is not None:
            await self.modes.async_apply_config(new)
        if self.scheduler is not None:
            self.scheduler.apply_config(new)
        self.prompts = await async_load_prompts(self.mixer.sounds, new, self.data_dir)
        self.reloads += 1
        log.info("event=reload_done needs_restart=%s", ",".join(needs_restart) or "-")
        return {"ok": True, "needs_restart": needs_restart}

    # ----- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        assert self.calls is not None and self.line_card is not None and self.cdr is not None
        health = self.mixer.health()
        ports = []
        for port, channel in sorted(self.line_card.channels.items()):
            ports.append(
                {
                    "port": port,
                    "kind": channel.technology,
                    "number": channel.number,
                    "name": channel.display_name,
                    "state": str(channel.state),
                    "off_hook": self.calls.is_off_hook(channel),
                }
            )
        driver = self.line_card.driver
        return {
            "site": self.config.site.name,
            "uptime_s": round(time.time() - self.started_at, 1),
            "config": self.config_path or "<embedded default>",
            "line_card": {
                "url": driver.url,
                "link": str(driver.status),
                "firmware": driver.inventory.firmware_version if driver.inventory else None,
                "last_error": driver.last_error,
                "counters": driver.counters,
                "faults": self.line_card.faults[-5:],
            },
            "ports": ports,
            "calls": self.calls.calls_summary(),
            "lines_in_use": sum(
                1
                for p in ports
                if p["kind"] == "fxo" and p["state"] not in ("idle", "out_of_service")
            ),
            "mixer": health.__dict__,
            "call_counters": self.calls.counters.__dict__,
            "cdr": self.cdr.counters,
            "sip": self.sip.status() if self.sip is not None else None,
            "modes": self.modes.status() if self.modes is not None else None,
            "prompts": None
            if self.prompts is None
            else {
                "language": self.prompts.language,
                "sounds": len(self.prompts.sounds),
                "failed": self.prompts.failures,
            },
            "smdr": self.smdr.status if self.smdr is not None else None,
            "scheduler": self.scheduler.status if self.scheduler is not None else None,
            "reloads": {
                "done": self.reloads,
                "refused": self.reload_failures,
                "last_error": self.last_reload_error,
            },
        }
