"""Analogue legs: an FXS port (a desk phone) and an FXO port (a city line) as channels.

They translate between call control's verbs and the card's commands, and turn the card's
events into channel events. On an FXO line they also listen to the line audio (through a
mixer monitor) for the exchange's dial tone and for the disconnect tones that tell a line
whose far end has gone, because many exchanges give no other sign.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from firmware.calls.channel import CallerId, Channel, ChannelEvent, EventKind, Role
from firmware.calls.lifecycle import LegState
from firmware.lines.audio import PortAudio
from firmware.lines.protocol import Dial, DialMode, HookSet, Message, PolaritySet, Ring, RingStop
from firmware.media.detect import ToneDetector
from firmware.media.disconnect import (
    DisconnectToneDetector,
    SilenceTimer,
    frame_power,
    silence_threshold_dbm0,
)
from firmware.media.dtmf_detect import DtmfDetector
from firmware.media.mixer import Mixer
from firmware.media.tones import TonePlan

log = logging.getLogger(__name__)

Sender = Callable[[Message], None]
_DIAL_TONE_FRAMES = 10  # 200 ms of steady dial tone before dialling


class AnalogueChannel(Channel):
    def __init__(
        self, port: int, mixer: Mixer, audio: PortAudio, send: Sender, plan: TonePlan
    ) -> None:
        super().__init__(f"{self.technology}:{port}", mixer)
        self.port = port
        self.audio = audio
        self._send = send
        self.plan = plan

    def _attach_audio(self, slot: int) -> None:
        self.audio.attach(self.port, slot)

    def _detach_audio(self) -> None:
        self.audio.detach(self.port)


class FxsChannel(AnalogueChannel):
    """A desk phone. It cannot dial out or be seized: it rings and it is lifted."""

    technology = "fxs"
    role = Role.EXTENSION

    async def alert(self, caller: CallerId) -> None:
        cadence = self.plan.ring_cadence_ms
        pairs = tuple((cadence[i], cadence[i + 1]) for i in range(0, len(cadence), 2))
        self._send(
            Ring(
                port=self.port,
                cadence=pairs,
                caller_number=caller.number[:32],
                caller_name=caller.name[:32],
            )
        )

    async def stop_alert(self) -> None:
        self._send(RingStop(port=self.port))

    async def seize(self) -> None:
        return None

    async def release(self, cause: str = "normal") -> None:
        if self.state == LegState.ALERTING:
            await self.stop_alert()

    async def dial(self, digits: str, caller: CallerId | None = None) -> None:
        raise TypeError(f"{self.name}: a phone port cannot dial")

    def reverse_polarity(self, reversed_: bool) -> None:
        self._send(PolaritySet(port=self.port, reversed=reversed_))


@dataclass
class SupervisionCounters:
    """How calls on a line ended from the far side (`minipbx status` shows them)."""

    polarity: int = 0
    loop_current: int = 0
    tone: int = 0
    silence: int = 0  # the last resort: released after `max_silence_s` of silence


class FxoChannel(AnalogueChannel):
    """A city line: ring detection, seizure, dialling by the card, disconnect supervision.

    Disconnect tone: the line's learned `disconnect_tone` when configured (see
    `minipbx line calibrate`), else the country's busy and congestion tones, recognised by
    `DisconnectToneDetector` in the mixer tick. Silence in both directions for
    `max_silence_s` (0: off) releases the call as a last resort, counted in `counters`.
    """

    technology = "fxo"
    role = Role.LINE
    rings_until_abandoned = True

    def __init__(
        self, port: int, mixer: Mixer, audio: PortAudio, send: Sender, plan: TonePlan
    ) -> None:
        super().__init__(port, mixer, audio, send, plan)
        self.disconnect_methods: tuple[str, ...] = ("polarity", "loop_current", "tone")
        self.answer_supervision = "none"
        self.dial_mode = DialMode.DTMF
        self.seized = False
        self.awaiting_answer = False
        self.listening_for_dial_tone = False
        self._dial_tone = ToneDetector(plan.dial)
        self._dial_tone_frames = 0
        self._disconnect_tone = DisconnectToneDetector([plan.busy, plan.congestion])
        self.disconnect_tone: str | None = None  # the learned tone in force, if any
        self._silence = SilenceTimer(0.0)
        self.counters = SupervisionCounters()
        self.cleared_by: str | None = None
        # In-band DTMF from the city caller, decoded while a menu or DISA listens for keys.
        self._digits: DtmfDetector | None = None

    def configure(
        self,
        *,
        disconnect: tuple[str, ...],
        answer_supervision: str,
        dial_mode: str,
        disconnect_tone: str | None = None,
        max_silence_s: float = 0.0,
        noise_floor_dbm0: float | None = None,
    ) -> None:
        self.disconnect_methods = disconnect
        self.answer_supervision = answer_supervision
        self.dial_mode = DialMode.PULSE if dial_mode == "pulse" else DialMode.DTMF
        if disconnect_tone != self.disconnect_tone:
            tones = [disconnect_tone] if disconnect_tone else [self.plan.busy, self.plan.congestion]
            self._disconnect_tone = DisconnectToneDetector(tones)
            self.disconnect_tone = disconnect_tone
        threshold = silence_threshold_dbm0(noise_floor_dbm0)
        if (max_silence_s, threshold) != (
            self._silence.max_silence_s,
            self._silence.threshold_dbm0,
        ):
            self._silence = SilenceTimer(max_silence_s, threshold)

    def _attach_audio(self, slot: int) -> None:
        super()._attach_audio(slot)
        self.mixer.set_monitor(slot, self._listen)

    async def alert(self, caller: CallerId) -> None:
        raise TypeError(f"{self.name}: a line is rung by the exchange, not by the appliance")

    async def stop_alert(self) -> None:
        return None

    async def seize(self) -> None:
        if self.seized:
            return  # already off hook: seizing again must not reset the supervision
        self.seized = True
        self.cleared_by = None
        self._disconnect_tone.reset()
        self._silence.reset()
        self._send(HookSet(port=self.port, off_hook=True))

    async def release(self, cause: str = "normal") -> None:
        self._digits = None
        if self.seized:
            self.seized = False
            self.awaiting_answer = False
            self.listening_for_dial_tone = False
            self._send(HookSet(port=self.port, off_hook=False))

    async def dial(self, digits: str, caller: CallerId | None = None) -> None:
        self.listening_for_dial_tone = False
        self._send(Dial(port=self.port, digits=digits, mode=self.dial_mode))

    def listen_for_digits(self, on: bool) -> None:
        """Decode the city caller's keys from the line audio (a line card reports none)."""
        self._digits = DtmfDetector() if on else None

    def listen_for_dial_tone(self) -> None:
        self._dial_tone_frames = 0
        self.listening_for_dial_tone = True

    # ----- supervision -------------------------------------------------------------------

    def on_polarity(self) -> None:
        if not self.seized:
            return
        if self.awaiting_answer and self.answer_supervision == "polarity":
            self.awaiting_answer = False
            self.emit(ChannelEvent(EventKind.ANSWERED))
        elif "polarity" in self.disconnect_methods:
            self._far_end_cleared("polarity")

    def on_loop_current(self, present: bool) -> None:
        if self.seized and not present and "loop_current" in self.disconnect_methods:
            self._far_end_cleared("loop_current")

    def _far_end_cleared(self, how: str) -> None:
        if self.cleared_by is None:
            self.cleared_by = how
            setattr(self.counters, how, getattr(self.counters, how) + 1)
            if how == "silence":
                log.warning(
                    "event=line_released_on_silence line=%s silent_s=%s",
                    self.name,
                    self._silence.max_silence_s,
                )
            else:
                log.info("event=line_far_end_cleared line=%s by=%s", self.name, how)
            self.emit(ChannelEvent(EventKind.FAR_END_CLEARED, how))

    def _listen(self, frame: np.ndarray) -> None:
        """Runs in the mixer tick with what the line said: keep it to a few Goertzel bins."""
        if not self.seized:
            return
        if self._digits is not None:
            for digit in self._digits.feed(frame):
                self.emit(ChannelEvent(EventKind.DIGIT, digit))
        if self.listening_for_dial_tone:
            if self._dial_tone.feed(frame):
                self._dial_tone_frames += 1
                if self._dial_tone_frames >= _DIAL_TONE_FRAMES:
                    self.listening_for_dial_tone = False
                    self.emit(ChannelEvent(EventKind.DIAL_TONE))
            else:
                self._dial_tone_frames = 0
            return
        if self.state not in (LegState.CONNECTED, LegState.HELD) or self.cleared_by is not None:
            return
        if "tone" in self.disconnect_methods and self._disconnect_tone.feed(frame):
            self._far_end_cleared("tone")
        elif self._silence.enabled and self.slot is not None:
            sent = self.mixer.outputs[self.slot]  # what this line was sent last tick
            if self._silence.feed(frame_power(frame), frame_power(sent)):
                self._far_end_cleared("silence")
