"""The line card as a technology: its driver, its ports as channels, its audio endpoint.

Ports are created from config (`fxs_ports`, `fxo_ports`) and stay out of service until the
card has said, in its INVENTORY, that each port exists with the expected kind. Link loss
puts every port out of service at once (call control tears their calls down, with CDRs);
the card coming back puts them back in service.

Caller ID (`line_card.caller_id`): "card" leaves it to the card (RING carries the caller,
CALLER_ID messages report it); "software" gives each FXS port a spill profile and each
FXO line a receiver (`configure_lines`), profiles from `caller_id_profile` (per line:
`[[lines]] caller_id_profile`), "auto" being the site country's default.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from firmware.calls.channel import Channel, ChannelEvent, EventKind
from firmware.config.schema import LineCardConfig, LineConfig, SiteConfig
from firmware.lines import protocol as p
from firmware.lines.audio import PortAudio
from firmware.lines.caller_id import resolve_profile, site_zone
from firmware.lines.channels import AnalogueChannel, FxoChannel, FxsChannel
from firmware.lines.driver import LineCardDriver
from firmware.media.mixer import Mixer
from firmware.media.tones import TonePlan

log = logging.getLogger(__name__)


class LineCardService:
    def __init__(
        self,
        config: LineCardConfig,
        url: str,
        mixer: Mixer,
        audio: PortAudio,
        plan: TonePlan,
        site: SiteConfig | None = None,
        lines: Sequence[LineConfig] = (),
    ) -> None:
        self.config = config
        self.plan = plan
        self.audio = audio
        self.mixer = mixer
        self.driver = LineCardDriver(
            url,
            baudrate=config.baudrate,
            heartbeat_s=config.heartbeat_s,
            link_timeout_s=config.link_timeout_s,
            on_message=self._on_message,
            on_link=self._on_link,
        )
        self.channels: dict[int, AnalogueChannel] = {}
        for port in config.fxs_range:
            self.channels[port] = FxsChannel(port, mixer, audio, self.driver.send, plan)
        for port in config.fxo_range:
            self.channels[port] = FxoChannel(port, mixer, audio, self.driver.send, plan)
        self.faults: list[str] = []
        self.messages_for_unknown_ports = 0
        self.faults_seen = 0
        self.configure_lines(site, lines)

    def configure_lines(
        self, site: SiteConfig | None = None, lines: Sequence[LineConfig] = ()
    ) -> None:
        """Apply the per-line settings of `[[lines]]` and `[line_card]`: the FXO lines'
        `rx_gain_db` / `tx_gain_db` (`_configure_gains`), and the ports' caller-ID profiles
        (software mode) or none (card mode).

        Without `site`, "auto" follows the tone plan's country and the date/time field is
        UTC; `lines` carry the per-line profiles and gains. Called at start and on every
        config reload (firmware/app.py).
        """
        self._configure_gains(lines)
        software = self.config.caller_id == "software"
        country = site.country if site is not None else self.plan.country
        zone = site_zone(site.timezone) if site is not None else site_zone("UTC")
        per_line = {line.port: line.caller_id_profile for line in lines}
        default = self.config.caller_id_profile
        for port, channel in self.channels.items():
            if isinstance(channel, FxsChannel):
                profile = resolve_profile(default, country) if software else None
                channel.use_software_caller_id(profile, zone)
            elif isinstance(channel, FxoChannel):
                name = per_line.get(port) or default
                channel.use_software_caller_id(resolve_profile(name, country) if software else None)
        if software:
            log.info(
                "event=caller_id_software profile=%s lines=%s",
                resolve_profile(default, country).name,
                ",".join(
                    f"{port}:{channel.caller_id_profile.name}"
                    for port, channel in self.channels.items()
                    if isinstance(channel, FxoChannel) and channel.caller_id_profile is not None
                ),
            )

    def _configure_gains(self, lines: Sequence[LineConfig]) -> None:
        """Each FXO line's gains from its `[[lines]]` entry (a port without one: 0 dB)."""
        gains = {line.port: (line.rx_gain_db, line.tx_gain_db) for line in lines}
        for port, channel in self.channels.items():
            if isinstance(channel, FxoChannel):
                channel.set_gains(*gains.get(port, (0.0, 0.0)))

    async def start(self) -> None:
        self.mixer.add_endpoint(self.audio)
        await self.driver.start()

    async def stop(self) -> None:
        for channel in self.channels.values():
            if isinstance(channel, FxsChannel):
                await channel.async_close()
            elif isinstance(channel, FxoChannel):
                channel.close_caller_id()
        await self.driver.stop()
        self.mixer.remove_endpoint(self.audio)

    @property
    def all_channels(self) -> list[Channel]:
        return list(self.channels.values())

    # ----- link ------------------------------------------------------------------------

    def _on_link(self, up: bool, inventory: p.Inventory | None) -> None:
        if not up:
            for channel in self.channels.values():
                if channel.in_service:
                    channel.emit(ChannelEvent(EventKind.OUT_OF_SERVICE, "line card link lost"))
            return
        assert inventory is not None
        self._reset_card_outputs()  # only ports whose calls ended with the link
        card_kinds = {index + 1: kind for index, kind in enumerate(inventory.ports)}
        for port, channel in self.channels.items():
            expected = p.PortKind.FXS if isinstance(channel, FxsChannel) else p.PortKind.FXO
            actual = card_kinds.get(port)
            if actual != expected:
                reason = f"config expects port {port} to be {expected.name} but the card " + (
                    f"reports {actual.name}"
                    if actual is not None
                    else f"has only {len(card_kinds)} ports"
                )
                log.error("event=port_mismatch port=%d reason=%r", port, reason)
                self.faults.append(reason)
                if channel.in_service:
                    channel.emit(ChannelEvent(EventKind.OUT_OF_SERVICE, reason))
            elif not channel.in_service:
                channel.emit(ChannelEvent(EventKind.IN_SERVICE))

    def _reset_card_outputs(self) -> None:
        """HELLO does not reset the card, and every call ended when the link went: say so."""
        for port, channel in self.channels.items():
            if channel.in_service:
                continue  # a resync while up: calls on this port go on
            if isinstance(channel, FxsChannel):
                self.driver.send(p.RingStop(port=port))
            else:
                self.driver.send(p.HookSet(port=port, off_hook=False))

    # ----- card events -----------------------------------------------------------------

    def _on_message(self, message: p.Message) -> None:
        if isinstance(message, p.Fault):
            self.faults_seen += 1
            text = f"card fault port={message.port} code={message.code}: {message.text}"
            log.warning(
                "event=card_fault port=%d code=%d text=%r", message.port, message.code, message.text
            )
            self.faults.append(text)
            del self.faults[:-20]
            return
        channel = self.channels.get(getattr(message, "port", -1))
        if channel is None or not channel.in_service:
            self.messages_for_unknown_ports += 1
            log.warning("event=card_message_ignored message=%r", message)
            return
        if isinstance(channel, FxsChannel):
            self._fxs_event(channel, message)
        elif isinstance(channel, FxoChannel):
            self._fxo_event(channel, message)

    def _fxs_event(self, channel: FxsChannel, message: p.Message) -> None:
        if isinstance(message, p.Hook):
            channel.hook_changed(message.off_hook)
            channel.emit(
                ChannelEvent(EventKind.OFF_HOOK if message.off_hook else EventKind.ON_HOOK)
            )
        elif isinstance(message, p.Digit):
            channel.emit(ChannelEvent(EventKind.DIGIT, message.digit))
        elif isinstance(message, p.Flash):
            channel.emit(ChannelEvent(EventKind.FLASH))
        else:
            self.messages_for_unknown_ports += 1
            log.warning("event=card_message_wrong_port_kind message=%r", message)

    def _fxo_event(self, channel: FxoChannel, message: p.Message) -> None:
        if isinstance(message, p.RingDetect):
            channel.on_ring(message.ringing)
        elif isinstance(message, p.CallerId):
            channel.on_card_caller_id(message.number, message.name)
        elif isinstance(message, p.Polarity):
            channel.on_polarity()
        elif isinstance(message, p.LoopCurrent):
            channel.on_loop_current(message.present)
        elif isinstance(message, p.DialDone):
            channel.emit(ChannelEvent(EventKind.DIAL_DONE))
        else:
            self.messages_for_unknown_ports += 1
            log.warning("event=card_message_wrong_port_kind message=%r", message)
