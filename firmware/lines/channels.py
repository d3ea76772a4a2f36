"""Analogue legs: an FXS port (a desk phone) and an FXO port (a city line) as channels.

They translate between call control's verbs and the card's commands, and turn the card's
events into channel events. On an FXO line they also listen to the line audio (through a
mixer monitor) for the exchange's dial tone and for the disconnect tones that tell a line
whose far end has gone, because many exchanges give no other sign.

Caller ID in software (`line_card.caller_id = "software"`, docs/caller-id.md "Wiring"):
an FXS port runs the spill plan of its profile as a task (first ring, the FSK/DTMF audio
on its mixer slot, polarity steps, then normal ringing with no caller for the card to
send); an FXO line feeds a `ClipReceiver` from its line audio, on hook too, and reports
the caller as the same CALLER_ID event the card's own decoder gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import numpy as np

from firmware.calls.channel import CallerId, Channel, ChannelEvent, EventKind, Role
from firmware.calls.lifecycle import LegState
from firmware.lines.audio import PortAudio
from firmware.lines.caller_id import CallerIdCounters, announced_info, caller_from_result
from firmware.lines.protocol import Dial, DialMode, HookSet, Message, PolaritySet, Ring, RingStop
from firmware.media.clip_audio import (
    ClipProfile,
    ClipReceiver,
    ClipResult,
    SpillPlan,
    StepKind,
    build_spill,
)
from firmware.media.detect import ToneDetector
from firmware.media.disconnect import (
    DisconnectToneDetector,
    SilenceTimer,
    frame_power,
    silence_threshold_dbm0,
)
from firmware.media.dtmf_detect import DtmfDetector
from firmware.media.echo import MIN_TAIL_MS
from firmware.media.mixer import Mixer
from firmware.media.tones import TonePlan

log = logging.getLogger(__name__)

Sender = Callable[[Message], None]
_DIAL_TONE_FRAMES = 10  # 200 ms of steady dial tone before dialling
# A spill's first ring is one burst: RING_STOP ends it long before this silence would.
_ONE_BURST_OFF_MS = 60_000
# An idle line whose caller-ID receiver is done (or a ring is held) and that heard no
# ring or reversal for this long is ready for the next call: 10 s, longer than any
# ring cadence's silence.
_CLIP_QUIET_FRAMES = 500


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


_SPILL_CAPACITY = 8000 * 6  # samples reserved per port for caller-ID spills (6 s)


class FxsChannel(AnalogueChannel):
    """A desk phone. It cannot dial out or be seized: it rings and it is lifted.

    With a caller-ID profile (software caller ID) `alert` runs the profile's spill plan
    as a task; lifting the phone, `stop_alert` or leaving ALERTING cancels it at once: the
    spill's sound stops and a reversed polarity is put back.
    """

    technology = "fxs"
    role = Role.EXTENSION

    def __init__(
        self, port: int, mixer: Mixer, audio: PortAudio, send: Sender, plan: TonePlan
    ) -> None:
        super().__init__(port, mixer, audio, send, plan)
        self.caller_id_profile: ClipProfile | None = None  # None: the card sends caller ID
        self.timezone: tzinfo = UTC
        self.polarity_reversed = False
        self.spills_sent = 0
        self.spills_cancelled = 0
        self._spill: asyncio.Task[None] | None = None
        self._spill_playing = False
        self._spill_reversed = False

    def use_software_caller_id(self, profile: ClipProfile | None, timezone: tzinfo = UTC) -> None:
        """Announce callers with `profile` in software (None: the card's own caller ID)."""
        self.caller_id_profile = profile
        self.timezone = timezone

    @property
    def spill_running(self) -> bool:
        return self._spill is not None and not self._spill.done()

    async def alert(self, caller: CallerId) -> None:
        self._abort_spill()
        profile = self.caller_id_profile
        if profile is None:
            self._ring_with_cadence(caller.number[:32], caller.name[:32])
            return
        info = announced_info(caller, profile, datetime.now(self.timezone))
        plan = build_spill(info, profile, self.plan.ring_cadence_ms)
        self._spill = asyncio.get_running_loop().create_task(
            self._run_spill(plan), name=f"caller-id-spill-{self.port}"
        )

    async def stop_alert(self) -> None:
        self._abort_spill()
        self._send(RingStop(port=self.port))

    def hook_changed(self, off_hook: bool) -> None:
        """The card saw the hook move: a phone lifted during the spill hears none of it."""
        if off_hook:
            self._abort_spill()

    def set_state(self, new: LegState) -> None:
        if self.state == LegState.ALERTING and new != LegState.ALERTING:
            self._abort_spill()
        super().set_state(new)

    async def seize(self) -> None:
        return None

    async def release(self, cause: str = "normal") -> None:
        if self.state == LegState.ALERTING:
            await self.stop_alert()

    async def dial(self, digits: str, caller: CallerId | None = None) -> None:
        raise TypeError(f"{self.name}: a phone port cannot dial")

    def reverse_polarity(self, reversed_: bool) -> None:
        self.polarity_reversed = reversed_
        self._send(PolaritySet(port=self.port, reversed=reversed_))

    async def async_close(self) -> None:
        """Shutdown: cancel a spill and wait for its task."""
        task = self._spill
        self._abort_spill()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ----- the spill -------------------------------------------------------------------

    def _ring_with_cadence(self, caller_number: str, caller_name: str) -> None:
        cadence = self.plan.ring_cadence_ms
        pairs = tuple((cadence[i], cadence[i + 1]) for i in range(0, len(cadence), 2))
        self._send(
            Ring(
                port=self.port,
                cadence=pairs,
                caller_number=caller_number,
                caller_name=caller_name,
            )
        )

    async def _run_spill(self, plan: SpillPlan) -> None:
        """Ring, pause, play, reverse as the plan says, then ring normally (no caller for
        the card: it must not send one of its own). A failure still rings the phone."""
        try:
            for step in plan.steps:
                if step.kind is StepKind.RING:
                    self._send(
                        Ring(
                            port=self.port,
                            cadence=((step.duration_ms, _ONE_BURST_OFF_MS),),
                            caller_number="",
                            caller_name="",
                        )
                    )
                    await asyncio.sleep(step.duration_ms / 1000)
                    self._send(RingStop(port=self.port))
                elif step.kind is StepKind.PAUSE:
                    await asyncio.sleep(step.duration_ms / 1000)
                elif step.kind is StepKind.PLAY:
                    assert step.samples is not None
                    self._play_spill(step.samples)
                    await asyncio.sleep(step.duration_ms / 1000)
                elif step.kind is StepKind.REVERSE_POLARITY:
                    self._spill_polarity(reversed_=True)
                elif step.kind is StepKind.RESTORE_POLARITY:
                    self._spill_polarity(reversed_=False)
                elif step.kind is StepKind.START_RINGING:
                    break
            self._spill_playing = False
            self.spills_sent += 1
            log.debug("event=caller_id_spill_sent port=%d payload=%r", self.port, plan.payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=caller_id_spill_failed port=%d", self.port)
            self._end_spill_audio()
        self._ring_with_cadence("", "")

    def _play_spill(self, samples: np.ndarray) -> None:
        """Play on this port's slot; the name is dropped at once (the slot plays on)."""
        if self.slot is None:
            return
        sounds = self.mixer.sounds
        name = f"caller_id_port_{self.port}"
        # One region per port, reused call after call (the bank is append-only otherwise).
        sounds.rewrite(name, samples, loop=False, capacity=_SPILL_CAPACITY)
        try:
            self.mixer.play(self.slot, name)
        finally:
            sounds.discard(name)
        self._spill_playing = True

    def _spill_polarity(self, *, reversed_: bool) -> None:
        """A spill's reversal is relative to the polarity the port had before it."""
        self._spill_reversed = reversed_
        line_reversed = self.polarity_reversed != reversed_
        self._send(PolaritySet(port=self.port, reversed=line_reversed))

    def _abort_spill(self) -> None:
        """Cancel a running spill now: no spill sound left playing, polarity put back."""
        task, self._spill = self._spill, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            self.spills_cancelled += 1
            log.debug("event=caller_id_spill_cancelled port=%d", self.port)
        self._end_spill_audio()

    def _end_spill_audio(self) -> None:
        if self._spill_playing and self.slot is not None:
            self.mixer.stop_sound(self.slot)
        self._spill_playing = False
        if self._spill_reversed:
            self._spill_reversed = False
            self._send(PolaritySet(port=self.port, reversed=self.polarity_reversed))


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

    Echo: the line's call slot has the mixer's echo canceller with the line's
    `echo_tail_ms` (0: off), reset when the line is seized, so the detectors and the
    extension hear the city party without the echo of the extension's own voice.

    Gains: the line's `rx_gain_db` / `tx_gain_db` (`set_gains`, from the line's config)
    scale the call slot's audio in the mixer, after the echo canceller and the line's
    detectors (which keep hearing line levels) and before the extension; a reload applies
    at once, in a call too.
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
        self.echo_tail_ms = 32  # LineConfig's default; 0: no echo canceller
        self.rx_gain_db = 0.0  # on what the line says, then what it is sent (LineConfig)
        self.tx_gain_db = 0.0
        self.counters = SupervisionCounters()
        self.cleared_by: str | None = None
        # In-band DTMF from the city caller, decoded while a menu or DISA listens for keys.
        self._digits: DtmfDetector | None = None
        # Software caller ID: the receiver, and a mixer slot of its own while the line is
        # idle (a call's slot exists only once call control has taken the call).
        self._clip: ClipReceiver | None = None
        self.caller_id_counters = CallerIdCounters()
        self._clip_slot: int | None = None
        self._ring_held = False
        self._quiet_frames = 0

    def configure(
        self,
        *,
        disconnect: tuple[str, ...],
        answer_supervision: str,
        dial_mode: str,
        disconnect_tone: str | None = None,
        max_silence_s: float = 0.0,
        noise_floor_dbm0: float | None = None,
        echo_tail_ms: int = 32,
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
        if 0 < echo_tail_ms < MIN_TAIL_MS:
            log.warning(
                "event=echo_tail_raised line=%s echo_tail_ms=%d used_ms=%d",
                self.name,
                echo_tail_ms,
                MIN_TAIL_MS,
            )
            echo_tail_ms = MIN_TAIL_MS  # the canceller's shortest tail: it covers a shorter echo
        if echo_tail_ms != self.echo_tail_ms:
            self.echo_tail_ms = echo_tail_ms
            if self.slot is not None:
                self._enable_echo_cancel(self.slot)  # a reload during a call: at once

    def set_gains(self, rx_db: float, tx_db: float) -> None:
        """The line's receive and send gains in dB (0: untouched); a call hears them at once
        (the echo canceller is not disturbed: its reference is what the line was sent,
        gain included, and the receive gain comes after it)."""
        if (rx_db, tx_db) == (self.rx_gain_db, self.tx_gain_db):
            return
        self.rx_gain_db, self.tx_gain_db = rx_db, tx_db
        log.info("event=line_gains line=%s rx_db=%+.1f tx_db=%+.1f", self.name, rx_db, tx_db)
        if self.slot is not None:
            self.mixer.set_gain(self.slot, rx_db, tx_db)

    def _attach_audio(self, slot: int) -> None:
        super()._attach_audio(slot)
        self._enable_echo_cancel(slot)
        self.mixer.set_gain(slot, self.rx_gain_db, self.tx_gain_db)
        self.mixer.set_monitor(slot, self._listen)

    def _enable_echo_cancel(self, slot: int) -> None:
        """The call slot (never the idle caller-ID slot: nothing is sent to it)."""
        if self.echo_tail_ms:
            self.mixer.enable_echo_cancel(slot, self.echo_tail_ms)
        else:
            self.mixer.disable_echo_cancel(slot)

    def set_state(self, new: LegState) -> None:
        old = self.state
        super().set_state(new)
        if self._clip is not None and new == LegState.IDLE and old != LegState.IDLE:
            self._reset_caller_id()
        self._update_clip_slot()

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
        if self.slot is not None:
            self.mixer.reset_echo(self.slot)  # a new call: the line's echo path is learnt anew
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

    # ----- caller ID ---------------------------------------------------------------------

    def use_software_caller_id(self, profile: ClipProfile | None) -> None:
        """Decode caller ID from the line audio with `profile` (None: the card decodes it).

        The same profile again (a config reload) changes nothing: a spill being heard goes on.
        """
        if profile == self.caller_id_profile:
            return
        self._clip = ClipReceiver(profile) if profile is not None else None
        self._ring_held = False
        self._quiet_frames = 0
        self._update_clip_slot()

    @property
    def caller_id_profile(self) -> ClipProfile | None:
        return self._clip.profile if self._clip is not None else None

    def on_ring(self, ringing: bool) -> None:
        """RING_DETECT. In software caller ID, the first ring of an after-ring profile is
        held back until the spill is decoded (or its window closes), so call control,
        which starts the call at RING_START, gets the caller first and needs no longer
        wait: a Bell spill ends ~3.4 s after the first ring starts."""
        clip = self._clip
        if clip is None:
            self.emit(ChannelEvent(EventKind.RING_START if ringing else EventKind.RING_STOP))
            return
        self._quiet_frames = 0
        if not ringing:
            clip.ring_stopped()
            if not self._ring_held:
                self.emit(ChannelEvent(EventKind.RING_STOP))
            return
        result = clip.ring_started()
        if result is not None:
            held = self._ring_held
            self._caller_id_found(result)  # emits the held RING_START: this ring's
            if held:
                return
        if self.state == LegState.IDLE and clip.result is None:
            self._ring_held = True  # the spill comes after this ring
            return
        self.emit(ChannelEvent(EventKind.RING_START))

    def on_card_caller_id(self, number: str, name: str) -> None:
        """CALLER_ID from the card: ignored (counted) while decoding in software."""
        if self._clip is not None:
            self.caller_id_counters.card_messages_ignored += 1
            log.debug("event=card_caller_id_ignored line=%s", self.name)
            return
        self.emit(ChannelEvent(EventKind.CALLER_ID, caller=CallerId(number, name)))

    def _caller_id_found(self, result: ClipResult) -> None:
        caller = caller_from_result(result)
        counters = self.caller_id_counters
        if result.info is None:
            counters.unknown += 1
            counters.last_unknown_reason = result.reason
            log.warning("event=caller_id_unknown line=%s reason=%r", self.name, result.reason)
        else:
            counters.decoded += 1
            if not caller.number:
                counters.withheld += 1
            log.info("event=caller_id_decoded line=%s number=%s", self.name, caller.number or "-")
        self.emit(ChannelEvent(EventKind.CALLER_ID, caller=caller))
        if self._ring_held:
            self._ring_held = False
            self.emit(ChannelEvent(EventKind.RING_START))

    def _hear_caller_id(self, frame: np.ndarray) -> None:
        clip = self._clip
        assert clip is not None
        if clip.listening:
            result = clip.feed(frame)
            if result is not None:
                self._caller_id_found(result)
            return
        if self.state == LegState.IDLE and (clip.result is not None or self._ring_held):
            self._quiet_frames += 1
            if self._quiet_frames >= _CLIP_QUIET_FRAMES:
                log.info("event=caller_id_receiver_reset line=%s why=quiet", self.name)
                self._reset_caller_id()

    def _reset_caller_id(self) -> None:
        if self._clip is not None:
            self._clip.reset()
        if self._ring_held:
            # the exchange stopped ringing before the window closed: the call never began
            self._ring_held = False
        self._quiet_frames = 0

    def _update_clip_slot(self) -> None:
        """An idle line with software caller ID hears its line audio in a slot of its own."""
        wanted = self._clip is not None and self.state == LegState.IDLE
        if wanted and self._clip_slot is None:
            slot = self.mixer.allocate(f"{self.name}:caller-id")
            self.audio.attach(self.port, slot)
            self.mixer.set_monitor(slot, self._listen)
            self._clip_slot = slot
        elif not wanted and self._clip_slot is not None:
            slot, self._clip_slot = self._clip_slot, None
            if self.slot is None:
                self.audio.detach(self.port)
            self.mixer.release(slot)

    def close_caller_id(self) -> None:
        """Shutdown: give back the idle line's slot."""
        self.use_software_caller_id(None)

    # ----- supervision -------------------------------------------------------------------

    def on_polarity(self) -> None:
        if not self.seized and self._clip is not None:
            self._quiet_frames = 0
            self._clip.polarity_reversed()  # on hook: a caller-ID alert (reversal profiles)
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
        if self._clip is not None:
            self._hear_caller_id(frame)  # on hook too: caller ID comes before the answer
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
