"""The line card as a technology: its driver, its ports as channels, its audio endpoint.

Ports are created from config (`fxs_ports`, `fxo_ports`) and stay out of service until the
card has said, in its INVENTORY, that each port exists with the expected kind. Link loss
puts every port out of service at once (call control tears their calls down, with CDRs);
the card coming back puts them back in service.
"""

from __future__ import annotations

import logging

from firmware.calls.channel import CallerId, Channel, ChannelEvent, EventKind
from firmware.config.schema import LineCardConfig
from firmware.lines import protocol as p
from firmware.lines.audio import PortAudio
from firmware.lines.channels import AnalogueChannel, FxoChannel, FxsChannel
from firmware.lines.driver import LineCardDriver
from firmware.media.mixer import Mixer
from firmware.media.tones import TonePlan

log = logging.getLogger(__name__)


class LineCardService:
    def __init__(
        self, config: LineCardConfig, url: str, mixer: Mixer, audio: PortAudio, plan: TonePlan
    ) -> None:
        self.config = config
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

    async def start(self) -> None:
        self.mixer.add_endpoint(self.audio)
        await self.driver.start()

    async def stop(self) -> None:
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
            channel.emit(
                ChannelEvent(EventKind.RING_START if message.ringing else EventKind.RING_STOP)
            )
        elif isinstance(message, p.CallerId):
            channel.emit(
                ChannelEvent(EventKind.CALLER_ID, caller=CallerId(message.number, message.name))
            )
        elif isinstance(message, p.Polarity):
            channel.on_polarity()
        elif isinstance(message, p.LoopCurrent):
            channel.on_loop_current(message.present)
        elif isinstance(message, p.DialDone):
            channel.emit(ChannelEvent(EventKind.DIAL_DONE))
        else:
            self.messages_for_unknown_ports += 1
            log.warning("event=card_message_wrong_port_kind message=%r", message)
