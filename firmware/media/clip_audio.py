"""Whole caller-ID spills: what an FXS port does and plays, and finding one in FXO line audio.

Sending: ``build_spill(info, profile, ring_cadence_ms)`` gives a ``SpillPlan``, a list of
steps (ring for so long, reverse the polarity, pause, play these samples, then start the
normal ring cadence) that the FXS ringing path runs in order; the audio of each PLAY
step is ready int16 at 8 kHz in whole 20 ms frames.  Receiving: a ``ClipReceiver`` per
FXO line is fed every frame of line audio and told of rings and polarity reversals; it
answers with a ``ClipResult`` (the caller, or "unknown" and why) once, at the latest when
the ring that follows the spill starts.  ``decode_spill`` does the same on a buffer.

Profiles (``PROFILES``, chosen per country by ``profile_for_country``) fix the signalling,
when data is sent, and the timing.  The figures are the nominal values of ETSI EN 300
659-1, Telcordia GR-30 and BT SIN 227 as implemented by common line cards (ranges in
docs/caller-id.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import numpy as np

from firmware.media import fsk
from firmware.media.clip import (
    Absence,
    CallerIdInfo,
    ClipError,
    DtmfClipStyle,
    MessageFormat,
    decode_dtmf_clip,
    decode_message,
    encode_dtmf_clip,
    encode_message,
    fit_to_format,
    message_complete,
)
from firmware.media.dtmf_detect import DtmfDigit, detect_dtmf
from firmware.media.tones import ToneSpec, ToneStep, dtmf_samples, frame_samples, render_tone

SAMPLE_RATE = 8000
ALERT_TONE_HZ = (2130.0, 2750.0)  # DT-AS, the dual-tone alerting signal


class Signalling(StrEnum):
    V23 = "v23"
    BELL_202 = "bell202"
    DTMF = "dtmf"


class StartCondition(StrEnum):
    """When the data comes, which is also when a receiver listens."""

    AFTER_FIRST_RING = "after_first_ring"  # between the first and second ring
    RING_PULSE = "ring_pulse"  # after a short ring-pulse alert (RP-AS), before ringing
    POLARITY_REVERSAL = "polarity_reversal"  # after a line reversal, before ringing
    BEFORE_FIRST_RING = "before_first_ring"  # no alert: data, then ringing


@dataclass(frozen=True)
class ClipProfile:
    """One national way of sending caller ID; times in ms, levels in dBm0."""

    name: str
    signalling: Signalling
    start: StartCondition
    message_format: MessageFormat = MessageFormat.ETSI
    dtmf_style: DtmfClipStyle = DtmfClipStyle.ETSI
    before_data_ms: int = 600  # alert (ring end, pulse end, reversal, DT-AS end) to data
    after_data_ms: int = 300  # end of data to the ring that follows, at least
    ring_pulse_ms: int = 250  # RING_PULSE: length of the alerting ring
    reversal_to_alert_ms: int = 150  # POLARITY_REVERSAL with DT-AS: reversal to the tone
    alert_tone_ms: int = 0  # DT-AS length; 0: no alert tone
    alert_level_dbm0: float = -16.0  # per component of DT-AS
    fsk_level_dbm0: float = fsk.DEFAULT_LEVEL_DBM0
    seizure_bits: int = fsk.SEIZURE_BITS
    mark_bits: int = fsk.MARK_BITS
    dtmf_on_ms: int = 70
    dtmf_off_ms: int = 70
    dtmf_level_dbm0: float = -9.0  # high group; the low group 2 dB under

    @property
    def fsk_standard(self) -> fsk.FskStandard:
        if self.signalling is Signalling.DTMF:
            raise ValueError(f"profile {self.name} sends DTMF, not FSK")
        return fsk.STANDARDS[self.signalling.value]


PROFILES: dict[str, ClipProfile] = {
    profile.name: profile
    for profile in (
        # ETSI EN 300 659-1 "associated with ringing": 500-2000 ms after the first ring.
        ClipProfile("etsi", Signalling.V23, StartCondition.AFTER_FIRST_RING),
        # ETSI, ring-pulse alerting signal of 200-300 ms, data 500-800 ms after it.
        ClipProfile("etsi_rp_as", Signalling.V23, StartCondition.RING_PULSE),
        # ETSI, line reversal, >= 100 ms, DT-AS, 45-500 ms, data, 200-500 ms, ringing.
        ClipProfile(
            "etsi_dt_as",
            Signalling.V23,
            StartCondition.POLARITY_REVERSAL,
            before_data_ms=100,
            alert_tone_ms=80,
        ),
        # BT SIN 227: the same shape, tone alert 88-110 ms, data 45-75 ms after it.
        ClipProfile(
            "uk",
            Signalling.V23,
            StartCondition.POLARITY_REVERSAL,
            before_data_ms=60,
            alert_tone_ms=100,
        ),
        # Telcordia GR-30: Bell 202 MDMF >= 500 ms after the first ring, done >= 200 ms
        # before the second.
        ClipProfile(
            "bell", Signalling.BELL_202, StartCondition.AFTER_FIRST_RING, MessageFormat.BELL_MDMF
        ),
        ClipProfile(
            "bell_sdmf",
            Signalling.BELL_202,
            StartCondition.AFTER_FIRST_RING,
            MessageFormat.BELL_SDMF,
        ),
        # DTMF CLIP after a line reversal (e.g. Sweden, Finland, the Netherlands).
        ClipProfile(
            "dtmf",
            Signalling.DTMF,
            StartCondition.POLARITY_REVERSAL,
            before_data_ms=150,
            after_data_ms=350,
        ),
        # Danish DTMF CLIP, sent just before the first ring.
        ClipProfile(
            "dtmf_dk",
            Signalling.DTMF,
            StartCondition.BEFORE_FIRST_RING,
            dtmf_style=DtmfClipStyle.DANISH,
            before_data_ms=0,
            after_data_ms=350,
        ),
    )
}

# Default per tone-plan country (config site.country); any profile can be set instead.
COUNTRY_PROFILES: dict[str, str] = {"uk": "uk", "us": "bell", "dk": "dtmf_dk", "se": "dtmf"}
DEFAULT_PROFILE = "etsi"


def profile_for_country(country: str) -> ClipProfile:
    """The default profile for a country code ("us" -> "bell"; most of Europe -> "etsi")."""
    return PROFILES[COUNTRY_PROFILES.get(country.lower(), DEFAULT_PROFILE)]


def get_profile(name: str) -> ClipProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown caller-ID profile {name!r}; profiles are: {', '.join(PROFILES)}"
        ) from None


# --------------------------------------------------------------------------- sending


class StepKind(StrEnum):
    RING = "ring"  # ring the port for duration_ms, then stop ringing
    PAUSE = "pause"  # neither ring nor play for duration_ms
    PLAY = "play"  # play ``samples`` on the port (duration_ms long, on hook)
    REVERSE_POLARITY = "reverse_polarity"  # instant
    RESTORE_POLARITY = "restore_polarity"  # instant
    START_RINGING = "start_ringing"  # the normal ring cadence from its start; plan ends


class SpillStep(NamedTuple):
    """One thing to do; ``parts`` names what a PLAY step's audio holds, in ms."""

    kind: StepKind
    duration_ms: int = 0
    samples: np.ndarray | None = None
    parts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class SpillPlan:
    """The steps of one spill and what they carry (``payload``: message bytes or DTMF)."""

    profile: ClipProfile
    info: CallerIdInfo
    payload: bytes | str
    steps: tuple[SpillStep, ...] = field(repr=False)

    @property
    def duration_ms(self) -> int:
        """From the first step to the start of normal ringing."""
        return sum(step.duration_ms for step in self.steps)

    def line_audio(self) -> np.ndarray:
        """The port's audio over the whole plan (silence while ringing or pausing), int16."""
        pieces = []
        for step in self.steps:
            if step.samples is not None:
                pieces.append(step.samples)
            else:
                pieces.append(np.zeros(_samples(step.duration_ms), np.int16))
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int16)

    def line_events(self) -> list[tuple[int, str]]:
        """(sample, event) an FXO on the far end would see: ring_started, ring_stopped,
        polarity_reversed (a restore is a reversal too), in the time of ``line_audio``."""
        events: list[tuple[int, str]] = []
        position = 0
        for step in self.steps:
            length = _samples(step.duration_ms)
            if step.kind is StepKind.RING:
                events += [(position, "ring_started"), (position + length, "ring_stopped")]
            elif step.kind in (StepKind.REVERSE_POLARITY, StepKind.RESTORE_POLARITY):
                events.append((position, "polarity_reversed"))
            elif step.kind is StepKind.START_RINGING:
                events.append((position, "ring_started"))
            position += length
        return events


def build_spill(
    info: CallerIdInfo,
    profile: ClipProfile,
    ring_cadence_ms: tuple[int, ...] = (1000, 4000),
) -> SpillPlan:
    """The plan for announcing ``info`` on an FXS port rung with ``ring_cadence_ms``.

    ``info`` is fitted to what the profile can carry first (``clip.fit_to_format``; DTMF
    carries digits only), so a number is never cut: ``plan.info`` is what is sent.  After
    a first ring the data goes in the longest pause of the first cadence cycle; the pause
    after the data is stretched to fill it.
    """
    info = fit_to_format(info, profile.message_format)
    if profile.signalling is Signalling.DTMF:
        if info.number is not None and not info.number.isdigit():
            info = CallerIdInfo(number_absence=Absence.UNAVAILABLE)
        info = CallerIdInfo(info.number, number_absence=info.number_absence)
        payload: bytes | str = encode_dtmf_clip(info, profile.dtmf_style)
        data = dtmf_samples(
            payload, profile.dtmf_on_ms, profile.dtmf_off_ms, profile.dtmf_level_dbm0
        ).astype(np.float64)
        kind = "dtmf"
    else:
        payload = encode_message(info, profile.message_format)
        data = fsk.fsk_burst(
            payload,
            profile.fsk_standard,
            profile.fsk_level_dbm0,
            profile.seizure_bits,
            profile.mark_bits,
        )
        kind = "fsk"
    steps: list[SpillStep] = []
    pause_to_fill = 0
    if profile.start is StartCondition.AFTER_FIRST_RING:
        pause_to_fill = _ring_until_longest_pause(ring_cadence_ms, steps)
    elif profile.start is StartCondition.RING_PULSE:
        steps.append(SpillStep(StepKind.RING, profile.ring_pulse_ms))
    elif profile.start is StartCondition.POLARITY_REVERSAL:
        steps.append(SpillStep(StepKind.REVERSE_POLARITY))
    if profile.alert_tone_ms:
        # the tone, the gap and the data in one PLAY: their spacing is part of the standard
        steps.append(SpillStep(StepKind.PAUSE, profile.reversal_to_alert_ms))
        gap = np.zeros(_samples(profile.before_data_ms))
        steps.append(_play_step([("alert", _alert_tone(profile)), ("pause", gap), (kind, data)]))
        used = steps[-1].duration_ms
    else:
        if profile.before_data_ms:
            steps.append(SpillStep(StepKind.PAUSE, profile.before_data_ms))
        steps.append(_play_step([(kind, data)]))
        used = profile.before_data_ms + steps[-1].duration_ms
    steps.append(SpillStep(StepKind.PAUSE, max(profile.after_data_ms, pause_to_fill - used)))
    if profile.start is StartCondition.POLARITY_REVERSAL:
        steps.append(SpillStep(StepKind.RESTORE_POLARITY))
    steps.append(SpillStep(StepKind.START_RINGING))
    return SpillPlan(profile, info, payload, tuple(steps))


def _ring_until_longest_pause(cadence_ms: tuple[int, ...], steps: list[SpillStep]) -> int:
    """Add the rings and pauses of the cadence up to the ring before its longest pause."""
    if not cadence_ms or len(cadence_ms) % 2 or min(cadence_ms) <= 0:
        raise ValueError(f"ring cadence must be positive on/off pairs, got {cadence_ms!r}")
    offs = cadence_ms[1::2]
    longest = offs.index(max(offs))
    for pair in range(longest):
        steps.append(SpillStep(StepKind.RING, cadence_ms[2 * pair]))
        steps.append(SpillStep(StepKind.PAUSE, cadence_ms[2 * pair + 1]))
    steps.append(SpillStep(StepKind.RING, cadence_ms[2 * longest]))
    return offs[longest]


def _samples(milliseconds: float) -> int:
    return round(milliseconds * SAMPLE_RATE / 1000)


def _alert_tone(profile: ClipProfile) -> np.ndarray:
    spec = ToneSpec(
        (ToneStep(ALERT_TONE_HZ, profile.alert_tone_ms),),
        level_dbm0=profile.alert_level_dbm0,
        repeat=False,
    )
    return render_tone(spec, profile.alert_tone_ms).astype(np.float64)


def _play_step(parts: list[tuple[str, np.ndarray]]) -> SpillStep:
    """One PLAY step of the parts back to back, padded with silence to whole frames."""
    audio = np.concatenate([samples for _, samples in parts])
    frame = frame_samples(SAMPLE_RATE)
    audio = np.concatenate([audio, np.zeros(-audio.size % frame)])
    samples = np.clip(np.rint(audio), -32768, 32767).astype(np.int16)
    samples.flags.writeable = False
    named = tuple((name, round(1000 * part.size / SAMPLE_RATE)) for name, part in parts)
    return SpillStep(StepKind.PLAY, 1000 * samples.size // SAMPLE_RATE, samples, named)


# --------------------------------------------------------------------------- receiving


class ClipResult(NamedTuple):
    """The caller, or None ("unknown caller") and why; never a number that failed a check."""

    info: CallerIdInfo | None
    reason: str = ""

    @property
    def known(self) -> bool:
        return self.info is not None


NOTHING_HEARD = "no caller ID heard"
LINE_EVENTS = ("ring_started", "ring_stopped", "polarity_reversed")  # ClipReceiver methods
# Data comes 500 ms or more after a ring (ETSI, GR-30): a ring starting sooner after the
# first belongs to the same ring pattern, and the window opens after it instead.
CADENCE_GAP_MS = 450


def decode_spill(
    samples: np.ndarray, signalling: Signalling, sample_rate: int = SAMPLE_RATE
) -> ClipResult:
    """The caller ID in ``samples`` (line audio around one spill)."""
    if Signalling(signalling) is Signalling.DTMF:
        return _decode_dtmf(detect_dtmf(np.asarray(samples), sample_rate))
    standard = fsk.STANDARDS[Signalling(signalling).value]
    return _decode_fsk(fsk.demodulate(samples, standard, message_complete, sample_rate))


def _decode_fsk(frames: list[fsk.FskFrame]) -> ClipResult:
    found: list[CallerIdInfo] = []
    reason = NOTHING_HEARD
    for frame in frames:
        if frame.error is not None:
            reason = f"{frame.error} after {len(frame.data)} bytes"
            continue
        if frame.margin < fsk.MIN_MARGIN:
            reason = f"a bit too weak to trust (margin {frame.margin:.2f})"
            continue
        try:
            found.append(decode_message(frame.data))
        except ClipError as error:
            reason = str(error)
    if found and all(info == found[0] for info in found):
        return ClipResult(found[0])
    if found:
        return ClipResult(None, "two different caller IDs in one spill")
    return ClipResult(None, reason)


def _decode_dtmf(digits: list[DtmfDigit]) -> ClipResult:
    """Digits to a caller ID; with no checksum, timing guards against a lost or split digit.

    A spill's digits come at one steady rate: a gap of 1.5 periods or more means a digit
    was missed, a digit 0.6 periods or less after another means one was split.
    """
    if not digits:
        return ClipResult(None, NOTHING_HEARD)
    text = "".join(digit.digit for digit in digits)
    if digits[-1].end is None:
        return ClipResult(None, f"DTMF {text!r} still sounding at the end")
    starts = np.array([digit.start for digit in digits])
    if starts.size >= 3:
        periods = np.diff(starts)
        typical = float(np.median(periods))
        if periods.max() >= 1.5 * typical or periods.min() <= 0.6 * typical:
            return ClipResult(None, f"DTMF {text!r} has irregular timing (a digit lost?)")
    try:
        return ClipResult(decode_dtmf_clip(text))
    except ClipError as error:
        return ClipResult(None, str(error))


class ClipReceiver:
    """Caller ID on one FXO line: feed every frame, report rings and reversals as they come.

    The profile's start condition says where the spill is looked for:

    * AFTER_FIRST_RING and RING_PULSE: from the end of the first ring to the start of the
      next (a ring pulse is a short first ring; the bursts of a double ring less than
      ``CADENCE_GAP_MS`` apart count as one ring);
    * BEFORE_FIRST_RING: the audio (at most ``window_ms``) before the first ring;
    * POLARITY_REVERSAL: the same, and from a reversal on the spill is decoded as it
      arrives, so the caller is known before the first ring.

    A result is given once per call (``reset`` when the line is idle again): as soon as a
    whole message decodes, else when the window closes (ring start, or ``window_ms`` after
    it opened) as "unknown caller" with the reason.
    """

    def __init__(
        self, profile: ClipProfile, sample_rate: int = SAMPLE_RATE, window_ms: int = 6000
    ) -> None:
        self.profile = profile
        self.sample_rate = sample_rate
        self._limit = window_ms * sample_rate // 1000
        self._attempt_every = 200 * sample_rate // 1000
        self._cadence_gap = CADENCE_GAP_MS * sample_rate // 1000
        self.reset()

    def reset(self) -> None:
        """Forget the call: the next ring or reversal starts a new spill."""
        self.result: ClipResult | None = None
        self._pieces: list[np.ndarray] = []
        self._length = 0
        self._rings = 0
        self._open = self.profile.start in (
            StartCondition.BEFORE_FIRST_RING,
            StartCondition.POLARITY_REVERSAL,
        )
        self._eager = False
        self._untried = 0
        self._opened_for = 0

    @property
    def listening(self) -> bool:
        """True while audio is kept for a spill (the line's monitor must feed it then)."""
        return self.result is None and self._open

    def feed(self, frame: np.ndarray) -> ClipResult | None:
        """Line audio (any length); the result if the spill decoded in it."""
        if not self.listening:
            return None
        samples = np.asarray(frame, dtype=np.float64).ravel()
        self._pieces.append(samples)
        self._length += samples.size
        self._opened_for += samples.size
        self._untried += samples.size
        if not self._eager:
            self._trim()
            return None
        if self._opened_for >= self._limit:
            return self._finish()
        if self._untried >= self._attempt_every:
            self._untried = 0
            attempt = decode_spill(self._audio(), self.profile.signalling, self.sample_rate)
            if attempt.known:
                self.result = attempt
                return attempt
        return None

    def polarity_reversed(self) -> None:
        """The exchange reversed the line: a POLARITY_REVERSAL spill starts now."""
        reversal_start = self.profile.start is StartCondition.POLARITY_REVERSAL
        if self.result is None and reversal_start and not self._eager:
            self._start_window()

    def ring_started(self) -> ClipResult | None:
        """A ring began; the result if this ring closes the window."""
        self._rings += 1
        if self.result is not None:
            return None
        after_ring = self.profile.start in _AFTER_RING
        if after_ring and self._eager and self._opened_for < self._cadence_gap:
            # a double ring (UK 400/200/400 ms): data only comes after the whole pattern
            self._rings, self._open, self._eager = 1, False, False
            return None
        if self._open and (self._eager or not after_ring):
            return self._finish()
        return None

    def ring_stopped(self) -> None:
        """A ring ended: after the first one, the spill of an after-ring profile starts."""
        if self.result is None and self._rings == 1 and self.profile.start in _AFTER_RING:
            self._start_window()

    def _start_window(self) -> None:
        self._pieces, self._length = [], 0
        self._open, self._eager = True, True
        self._untried = self._opened_for = 0

    def _finish(self) -> ClipResult:
        result = decode_spill(self._audio(), self.profile.signalling, self.sample_rate)
        self.result = result
        self._pieces, self._length = [], 0
        return result

    def _audio(self) -> np.ndarray:
        if len(self._pieces) > 1:
            self._pieces = [np.concatenate(self._pieces)]
        return self._pieces[0] if self._pieces else np.zeros(0)

    def _trim(self) -> None:
        """Keep only the last ``window_ms`` while waiting for the first ring."""
        if self._length > self._limit + self._attempt_every:
            audio = self._audio()[-self._limit :]
            self._pieces, self._length = [audio], audio.size


_BEFORE_RING = (StartCondition.BEFORE_FIRST_RING, StartCondition.POLARITY_REVERSAL)
_AFTER_RING = (StartCondition.AFTER_FIRST_RING, StartCondition.RING_PULSE)


def replay(
    receiver: ClipReceiver,
    audio: np.ndarray,
    events: list[tuple[int, str]],
    frame_length: int = 160,
) -> tuple[ClipResult | None, int | None]:
    """Feed recorded line audio in frames with its events (as ``SpillPlan.line_events``).

    Returns the receiver's result and the sample at which it came (None: no result).
    An event is delivered at its sample, between the frame pieces before and after it,
    as a line driver would.  For tests, benchmarks and the simulator.
    """
    pending = sorted(events)
    unknown = {event for _, event in pending} - set(LINE_EVENTS)
    if unknown:
        raise ValueError(f"unknown line events {sorted(unknown)}; events are {LINE_EVENTS}")
    position = 0
    while position < audio.size:
        stop = min(position + frame_length, audio.size)
        while pending and pending[0][0] < stop:
            at, event = pending.pop(0)
            if at > position:
                result = receiver.feed(audio[position:at])
                position = at
                if result is not None:
                    return result, position
            result = getattr(receiver, event)()
            if result is not None:
                return result, position
        result = receiver.feed(audio[position:stop])
        position = stop
        if result is not None:
            return result, position
    for _, event in pending:
        result = getattr(receiver, event)()
        if result is not None:
            return result, audio.size
    return None, None
