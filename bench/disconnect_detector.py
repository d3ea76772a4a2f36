"""Disconnect-tone detection: false releases over hours of speech and music, and the
detection time of 1,000 tone events across 20 random tone plans (issue 6's benchmark).

Everything is generated from one seed, so a run is reproducible:

* **20 tone plans** drawn by `sim_acoustics.random_tone_plan` (families eu/uk/us in turn):
  each plan's detector listens for its busy *and* its congestion tone, as a city line does
  without a learned tone (two tones: twice the chance of talk-off).
* **talk-off**: `--hours` of far-party audio, half speech-like, half music-like (the DTMF
  benchmark's generators: glottal pulses through moving formants; melodies, chords, bass,
  vibrato, sweeps, sine pads), -35 to -10 dBm0 over a -60 dBm0 floor, generated and
  scanned 5 minutes at a time, through all 20 detectors. Every detection is a false
  release (goal 0). The same audio is also scanned with every guard relaxed (energy
  fraction 0.6, no harmonic check, ±3 % frequency, 100 ms regularity, 10 dB level spread)
  to show how much the guards hold off.
* **tone events**: `--events` (1,000), 50 per plan, busy and congestion in turn. Each is
  2-4 s of the far party speaking or playing music, then the tone for 8 s (30 % joined
  mid-cycle), detuned ±0.5 %, with line loss 0-9 dB, noise -70 to -50 dBm0, and in half the
  events the echo of the office user talking over it (speech at -25 to -15 dBm0, ERL 10-20 dB,
  delay 0-30 ms). As in the appliance, the echo events' line audio goes through the line's
  echo canceller (default tail 32 ms, the mixer's 64 ms bulk-delay range, 8 lines per
  canceller) with the office speech as its reference, then the detector; the same audio is
  also scanned without it, for comparison. The canceller has the call so far behind it:
  `--warm-up-s` (10) of the office user talking alone before the event (0: a fresh
  canceller meeting the far party's audio and the tone, the worst case). Detection time from the tone's
  start, in cycles and seconds (goal: 100 % detected, within 4 cycles); a detection before
  the tone is a false release. Missed events and the slowest are printed.
* **cost per frame** in the mixer tick (`feed`): µs per 20 ms frame on silence, speech and
  tone, one plan's two tones.

    .venv/bin/python bench/disconnect_detector.py [--hours 10] [--events 1000] [--seed 6]
                                                  [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import print_machine
from dtmf_detector import music_like, speech_like

from firmware.config.schema import LineConfig
from firmware.lines.sim_acoustics import FAMILIES, LineAcoustics, random_tone_plan
from firmware.media.disconnect import DisconnectCriteria, DisconnectToneDetector
from firmware.media.echo import EchoCanceller
from firmware.media.levels import dbm0_to_rms, rms_to_dbm0
from firmware.media.mixer import ECHO_BANK_ROWS, ECHO_MAX_BULK_DELAY_MS
from firmware.media.tones import TonePlan, ToneSpec, format_tone, render_tone

RATE = 8000
FRAME = 160
CHUNK_S = 300.0
PLANS = 20
EVENT_BATCH = 40  # tone events generated, then echo-cancelled and scanned, at a time
DEFAULT_ECHO_TAIL_MS = LineConfig.model_fields["echo_tail_ms"].default
WARM_UP_S = 10  # echo events: the office user talking alone before, as in a call so far
RELAXED = DisconnectCriteria(
    min_energy_fraction=0.6,
    max_harmonic_db=0.0,
    frequency_tolerance=0.03,
    regularity_ms=100.0,
    max_level_spread_db=10.0,
    max_burst_dip_db=20.0,
)


def _pcm(samples: np.ndarray) -> np.ndarray:
    samples = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return samples[: samples.size // FRAME * FRAME]


def _detectors(plans: list[TonePlan], criteria: DisconnectCriteria | None = None) -> list:
    return [DisconnectToneDetector([plan.busy, plan.congestion], criteria) for plan in plans]


def _releases(detector: DisconnectToneDetector, samples: np.ndarray) -> int:
    """Detections in ``samples``, restarting after each (a released line is seized again)."""
    count, position = 0, 0
    while position < samples.size:
        detector.reset()
        detection = detector.scan(samples[position:])
        if detection is None:
            return count
        count += 1
        position += (detection.frame + 1) * FRAME
    return count


# ----- talk-off -----------------------------------------------------------------------------


def talk_off(plans: list[TonePlan], hours: float, rng: np.random.Generator) -> dict[str, object]:
    strict, relaxed = _detectors(plans), _detectors(plans, RELAXED)
    totals = {"speech": 0.0, "music": 0.0}
    false_releases = {"speech": 0, "music": 0}
    relaxed_releases = {"speech": 0, "music": 0}
    by_plan = [0] * len(plans)
    generation = scanning = 0.0
    chunk = 0
    while sum(totals.values()) < hours * 3600:
        kind = "speech" if chunk % 2 == 0 else "music"
        started = time.perf_counter()
        audio = speech_like(CHUNK_S, rng) if kind == "speech" else music_like(CHUNK_S, rng)
        audio = _pcm(audio + rng.normal(0.0, dbm0_to_rms(-60.0), audio.size))
        generation += time.perf_counter() - started
        started = time.perf_counter()
        for index, (detector, loose) in enumerate(zip(strict, relaxed, strict=True)):
            found = _releases(detector, audio)
            false_releases[kind] += found
            by_plan[index] += found
            relaxed_releases[kind] += _releases(loose, audio)
        scanning += time.perf_counter() - started
        totals[kind] += CHUNK_S
        chunk += 1
    return {
        "hours": {kind: round(seconds / 3600, 2) for kind, seconds in totals.items()},
        "plans": len(plans),
        "false_releases": false_releases,
        "false_releases_by_plan": by_plan,
        "releases_with_guards_relaxed": relaxed_releases,
        "generation_s": round(generation, 1),
        "scan_s": round(scanning, 1),
        "scan_cpu_per_channel_second_us": round(
            1e6 * scanning / max(2 * sum(totals.values()) * len(plans), 1), 2
        ),
    }


# ----- tone events ----------------------------------------------------------------------------


@dataclass
class Event:
    plan: int
    tone: str
    cycle_ms: int
    start_ms: int  # where in its cycle the tone was joined
    echo: bool
    detected_s: float | None  # from the tone's start, through the appliance's chain
    early: bool  # fired before the tone: a false release
    tone_dbm0: float = 0.0  # the tone's level on the line (after line loss)
    office_dbm0: float | None = None  # the office speech sent to the line (echo events)
    erl_db: float | None = None
    echo_delay_ms: float | None = None
    raw_detected_s: float | None = None  # echo events: the same audio without the canceller
    raw_early: bool = False


@dataclass
class _EventAudio:
    """One event's line audio and, for echo events, what the office sent (the reference)."""

    event: Event
    lead_samples: int
    line: np.ndarray  # int16, whole frames
    sent: np.ndarray | None  # int16, same length: the office user's speech


def tone_events(
    plans: list[TonePlan],
    count: int,
    rng: np.random.Generator,
    dump: Path | None = None,
    warm_up_s: int = WARM_UP_S,
) -> dict[str, object]:
    """Generate the events in order (so a seed gives the same events as before the canceller
    was in the chain), a batch at a time; echo events go through the line's echo canceller
    (`ECHO_BANK_ROWS` at once, as in the mixer) before their detector. `dump`: a folder
    for the audio of missed events, and of events the canceller made a cycle slower (.npz: line, cleaned, sent, lead_samples, plan, tone)."""
    pool = {
        "speech": speech_like(120.0, rng),
        "music": music_like(120.0, rng),
        "near": speech_like(120.0, rng),
    }
    detectors = _detectors(plans)
    events: list[Event] = []
    started = time.perf_counter()
    cancel_s = 0.0
    for first in range(0, count, EVENT_BATCH):
        batch = []
        for number in range(first, min(first + EVENT_BATCH, count)):
            index = number % len(plans)
            plan = plans[index]
            tone = plan.busy if (number // len(plans)) % 2 == 0 else plan.congestion
            batch.append(_event_audio(index, tone, pool, rng, warm_up_s))
        begun = time.perf_counter()
        cleaned = _cancel_echo([audio for audio in batch if audio.sent is not None])
        cancel_s += time.perf_counter() - begun
        for audio in batch:
            detector = detectors[audio.event.plan]
            if audio.sent is not None:
                audio.event.raw_detected_s, audio.event.raw_early = _detect(
                    detector, audio.line, audio.lead_samples
                )
                line = cleaned[id(audio)]
            else:
                line = audio.line  # nothing sent: the canceller passes the line as it is
            audio.event.detected_s, audio.event.early = _detect(detector, line, audio.lead_samples)
            events.append(audio.event)
            if dump is not None and _worth_dumping(audio.event):
                np.savez(
                    dump / f"missed_{len(events) - 1}.npz",
                    line=audio.line,
                    cleaned=line,
                    sent=audio.sent if audio.sent is not None else np.zeros(0, np.int16),
                    lead_samples=audio.lead_samples,
                    plan=audio.event.plan,
                    tone=audio.event.tone,
                )
    elapsed = time.perf_counter() - started
    detected = [event for event in events if event.detected_s is not None and not event.early]
    cycles = np.array([event.detected_s * 1000 / event.cycle_ms for event in detected])
    seconds = np.array([event.detected_s for event in detected])
    missed = [event for event in events if event.detected_s is None]
    echo_events = [event for event in events if event.echo]
    raw_detected = [e for e in echo_events if e.raw_detected_s is not None and not e.raw_early]
    raw_cycles = [e.raw_detected_s * 1000 / e.cycle_ms for e in raw_detected]
    return {
        "events": len(events),
        "detected": len(detected),
        "detection_rate_percent": round(100 * len(detected) / len(events), 2),
        "false_releases_before_the_tone": sum(event.early for event in events),
        "cycles_p50_p95_max": [round(float(np.percentile(cycles, q)), 2) for q in (50, 95, 100)]
        if cycles.size
        else None,
        "seconds_p50_p95_max": [round(float(np.percentile(seconds, q)), 2) for q in (50, 95, 100)]
        if seconds.size
        else None,
        "within_4_cycles": int(np.sum(cycles <= 4.0)),
        "with_echo": _subset(echo_events, detected, cycles),
        "with_echo_no_canceller": {
            "events": len(echo_events),
            "detected": len(raw_detected),
            "false_releases_before_the_tone": sum(e.raw_early for e in echo_events),
            "within_4_cycles": int(sum(c <= 4.0 for c in raw_cycles)),
            "cycles_max": round(float(max(raw_cycles, default=0.0)), 2),
        },
        "without_echo": _subset([e for e in events if not e.echo], detected, cycles),
        "missed": [event.__dict__ for event in missed],
        "slowest": [
            event.__dict__
            for event in sorted(detected, key=lambda e: -e.detected_s * 1000 / e.cycle_ms)[:5]
        ],
        "scan_s": round(elapsed, 1),
        "echo_cancel_s": round(cancel_s, 1),
    }


def _worth_dumping(event: Event) -> bool:
    """Missed, or detected a cycle later than without the canceller."""
    if event.detected_s is None:
        return True
    if event.raw_detected_s is None or event.raw_early:
        return False
    return event.detected_s - event.raw_detected_s > event.cycle_ms / 1000


def _subset(events: list[Event], detected: list[Event], cycles: np.ndarray) -> dict[str, object]:
    chosen = [c for c, event in zip(cycles, detected, strict=True) if event in events]
    return {
        "events": len(events),
        "detected": len(chosen),
        "within_4_cycles": int(sum(c <= 4.0 for c in chosen)),
        "cycles_max": round(float(max(chosen, default=0.0)), 2),
    }


def _detect(
    detector: DisconnectToneDetector, line: np.ndarray, lead_samples: int
) -> tuple[float | None, bool]:
    """(seconds from the tone's start, fired before the tone)."""
    detector.reset()
    detection = detector.scan(line)
    if detection is None:
        return None, False
    at = (detection.frame + 1) * FRAME
    return (at - lead_samples) / RATE, at <= lead_samples


def _cancel_echo(echoing: list[_EventAudio]) -> dict[int, np.ndarray]:
    """The mixer's chain for an FXO call slot: `EchoCanceller` with the line's default tail
    (LineConfig.echo_tail_ms = 32) and the mixer's bulk-delay range, far = what was sent in
    that frame (the card plays it while the frame is recorded), a fresh canceller per call;
    events run `ECHO_BANK_ROWS` at a time as the mixer's bank does."""
    cleaned: dict[int, np.ndarray] = {}
    for first in range(0, len(echoing), ECHO_BANK_ROWS):
        group = echoing[first : first + ECHO_BANK_ROWS]
        frames = max(audio.line.size for audio in group) // FRAME
        near = np.zeros((ECHO_BANK_ROWS, frames * FRAME), dtype=np.int16)
        far = np.zeros_like(near)
        for row, audio in enumerate(group):
            assert audio.sent is not None
            near[row, : audio.line.size] = audio.line
            far[row, : audio.sent.size] = audio.sent
        canceller = EchoCanceller(
            DEFAULT_ECHO_TAIL_MS, channels=ECHO_BANK_ROWS, max_bulk_delay_ms=ECHO_MAX_BULK_DELAY_MS
        )
        out = np.empty_like(near)
        for frame in range(frames):
            part = slice(frame * FRAME, (frame + 1) * FRAME)
            out[:, part] = canceller.process(far[:, part], near[:, part])
        for row, audio in enumerate(group):
            cleaned[id(audio)] = out[row, : audio.line.size]
    return cleaned


def _event_audio(
    index: int,
    tone: ToneSpec,
    pool: dict[str, np.ndarray],
    rng: np.random.Generator,
    warm_up_s: int = WARM_UP_S,
) -> _EventAudio:
    acoustics = LineAcoustics(
        level_db=float(rng.uniform(-9.0, 0.0)),
        noise_dbm0=float(rng.uniform(-70.0, -50.0)),
        echo_delay_ms=float(rng.uniform(0.0, 30.0)),
        echo_loss_db=float(rng.uniform(10.0, 20.0)),
    )
    lead_s = float(rng.uniform(2.0, 4.0))
    kind = "speech" if rng.random() < 0.5 else "music"
    first = int(rng.integers(0, pool[kind].size - int(lead_s * RATE)))
    lead = pool[kind][first : first + int(lead_s * RATE)]
    lead = lead[: lead.size // FRAME * FRAME]
    start_ms = int(rng.integers(0, tone.cycle_ms)) if rng.random() < 0.3 else 0
    played = render_tone(tone.scaled(float(rng.uniform(0.995, 1.005))), start_ms + 8000)
    played = played[start_ms * RATE // 1000 :]
    line = np.concatenate([lead, played.astype(float)]) * 10 ** (acoustics.level_db / 20)
    lead_samples = lead.size
    burst = played[played != 0].astype(float)  # the tone's level while it sounds
    tone_dbm0 = float(rms_to_dbm0(float(np.sqrt(np.mean(burst**2))))) + acoustics.level_db
    echo = bool(rng.random() < 0.5)
    sent = None
    office_dbm0 = None
    if echo:  # the office user talking over the tone, returned by the hybrid
        near = pool["near"]
        offset = int(rng.integers(0, near.size - line.size))
        said = near[offset : offset + line.size]
        office_dbm0 = float(rng.uniform(-25.0, -15.0))
        scale = dbm0_to_rms(office_dbm0) / max(np.std(said), 1e-9)
        sent = np.clip(np.rint(said * scale), -32768, 32767).astype(np.int16)  # what was sent
        line = line + np.convolve(sent, acoustics.impulse_response())[: line.size]
    line = line + rng.normal(0.0, dbm0_to_rms(acoustics.noise_dbm0), line.size)
    pcm = _pcm(line)
    warm = warm_up_s * RATE // FRAME * FRAME
    if echo and warm:
        # The call so far: the office user talking (the same voice, just before) while the
        # far party listened. Its own generator: the events stay those of the seed.
        before = np.take(near, np.arange(offset - warm, offset), mode="wrap") * scale
        warm_sent = np.clip(np.rint(before), -32768, 32767).astype(np.int16)
        warm_line = np.convolve(warm_sent, acoustics.impulse_response())[:warm]
        noise = np.random.default_rng(offset).normal(0.0, dbm0_to_rms(acoustics.noise_dbm0), warm)
        sent = np.concatenate([warm_sent, sent])
        pcm = np.concatenate([_pcm(warm_line + noise), pcm])
        lead_samples += warm
    event = Event(
        index,
        format_tone(tone),
        tone.cycle_ms,
        start_ms,
        echo,
        None,
        False,
        tone_dbm0=round(tone_dbm0, 1),
        office_dbm0=None if office_dbm0 is None else round(office_dbm0, 1),
        erl_db=round(acoustics.echo_loss_db, 1) if echo else None,  # type: ignore[arg-type]
        echo_delay_ms=round(acoustics.echo_delay_ms, 1) if echo else None,
    )
    return _EventAudio(event, lead_samples, pcm, None if sent is None else sent[: pcm.size])


# ----- cost in the tick -----------------------------------------------------------------------


def frame_cost(plans: list[TonePlan], rng: np.random.Generator) -> dict[str, dict[str, float]]:
    detector = DisconnectToneDetector([plans[0].busy, plans[0].congestion])
    signals = {
        "silence": np.zeros(60 * RATE),
        "noise_floor": rng.normal(0.0, dbm0_to_rms(-60.0), 60 * RATE),
        "speech": speech_like(60.0, rng),
        "music": music_like(60.0, rng),
        "tone": render_tone(plans[0].busy, 60_000).astype(float),
    }
    results = {}
    for name, signal in signals.items():
        frames = _pcm(signal).reshape(-1, FRAME)
        costs = np.empty(len(frames))
        detector.reset()
        for index, frame in enumerate(frames):
            started = time.perf_counter()
            detector.feed(frame)
            costs[index] = time.perf_counter() - started
            if detector.detected:
                detector.reset()
        results[name] = {
            "mean_us": round(float(costs.mean() * 1e6), 1),
            "p99_us": round(float(np.percentile(costs, 99) * 1e6), 1),
        }
    return results


def run(
    hours: float, events: int, seed: int, dump: Path | None = None, warm_up_s: int = WARM_UP_S
) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    plans = [random_tone_plan(rng, FAMILIES[index % 3]) for index in range(PLANS)]
    return {
        "criteria": DisconnectCriteria().__dict__,
        "plans": [
            {"busy": format_tone(plan.busy), "congestion": format_tone(plan.congestion)}
            for plan in plans
        ],
        "echo_warm_up_s": warm_up_s,
        "tone_events": tone_events(plans, events, rng, dump, warm_up_s),
        "talk_off": talk_off(plans, hours, rng),
        "frame_cost": frame_cost(plans, rng),
    }


def _print(results: dict) -> None:
    print(f"criteria: {results['criteria']}")
    for number, plan in enumerate(results["plans"]):
        print(f"  plan {number:2d}: busy {plan['busy']:<36} congestion {plan['congestion']}")
    events = results["tone_events"]
    print(
        f"tone events: {events['events']}, detected {events['detected']} ="
        f" {events['detection_rate_percent']} % (goal 100 %), false releases before the tone"
        f" {events['false_releases_before_the_tone']} (goal 0); within 4 cycles:"
        f" {events['within_4_cycles']}"
    )
    print(
        f"  detection time p50/p95/max: {events['cycles_p50_p95_max']} cycles,"
        f" {events['seconds_p50_p95_max']} s from the tone's start"
    )
    for name, text in (
        ("without_echo", "on a quiet line"),
        ("with_echo", "with the office user's speech echoed over the tone, echo canceller"),
        ("with_echo_no_canceller", "the same echo events without the canceller"),
    ):
        part = events[name]
        print(
            f"  {text}: {part['detected']} of {part['events']} detected,"
            f" {part['within_4_cycles']} within 4 cycles, at most {part['cycles_max']} cycles"
        )
    print(f"  echo canceller: {events['echo_cancel_s']} s for the echo events")
    for miss in events["missed"]:
        print(f"  missed: {miss}")
    for slow in events["slowest"]:
        print(f"  slowest: {slow}")
    talk = results["talk_off"]
    print(
        f"talk-off: {talk['hours']} hours x {talk['plans']} plans (busy + congestion each):"
        f" false releases {talk['false_releases']} (goal 0); with every guard relaxed:"
        f" {talk['releases_with_guards_relaxed']}"
    )
    print(
        f"  scan {talk['scan_s']} s ({talk['scan_cpu_per_channel_second_us']} µs per"
        f" channel-second per detector, both passes), generation {talk['generation_s']} s"
    )
    print("cost per 20 ms frame in the mixer tick (feed, one plan's busy + congestion):")
    for name, cost in results["frame_cost"].items():
        print(f"  {name:12s} mean {cost['mean_us']:6.1f} µs  p99 {cost['p99_us']:6.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=10.0, help="talk-off audio")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="0.5 hour, 200 events")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dump", type=Path, help="save missed events' audio here (.npz)")
    parser.add_argument(
        "--warm-up-s",
        type=int,
        default=WARM_UP_S,
        help="echo events: seconds of the office user alone before (0: a fresh canceller)",
    )
    arguments = parser.parse_args()
    hours, events = (0.5, 200) if arguments.quick else (arguments.hours, arguments.events)
    print_machine()
    started = time.perf_counter()
    if arguments.dump is not None:
        arguments.dump.mkdir(parents=True, exist_ok=True)
    results = run(hours, events, arguments.seed, arguments.dump, arguments.warm_up_s)
    results["run_s"] = round(time.perf_counter() - started, 1)
    if arguments.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        _print(results)
        print(f"(whole run {results['run_s']} s)")


if __name__ == "__main__":
    main()
