"""The line echo canceller (issue 6) on simulated hybrids: ERLE, convergence, double talk, CPU.

Everything is generated from one seed (`firmware.media.hybrid`), so a run is reproducible:

* **single talk**: far end = white noise, pink noise or speech-like at -15 dBm0, through
  each hybrid response kind (short, medium, long, resonant) at bulk delays 0, 10 and 30 ms
  and ERL 6, 12 and 20 dB, 8 s each; tail 32 ms (the default), bulk-delay search on.
  *ERLE* is the linear canceller's (NLP off): echo power over residual-echo power (the
  output, since the line adds nothing else here), energy over a window. Reported: ERLE over
  1.0-1.5 s, the steady ERLE over 4-8 s, and the *convergence time*: the start of the first
  0.25 s window from which every 0.25 s window with echo in it, to the end, has
  ERLE >= 25 dB (speech has gaps; windows whose echo is below -60 dBm0 are skipped, and
  how many were is printed: a pause cannot count as a failure, nor hide one).
* **more talkers**: the speech case again for ``--talkers`` other seeds (other voices,
  syllables and pauses), so the speech figure is not one talker's luck.
* **with the NLP**: the same speech runs with the NLP and -70 dBm0 line noise; the level of
  the output frames after 1 s (99th percentile), i.e. what the extension hears of its echo.
* **double talk**: 3 s of far end alone, 3 s of both, 1 s of far end alone; far end
  speech at -15 dBm0, near-end speech at -20, -25 and -30 dBm0, ERL 6, 12 and 20 dB,
  several seeds. Reported: the output's SNR against the clean near-end speech during double
  talk (residual echo plus NLP damage), the share of the talker's loud frames (within 6 dB
  of its level) the NLP replaced, and the linear ERLE in the 0.5 s right after.
* **CPU**: `time.process_time()` per second of one channel's audio, for one channel per
  canceller and for 8 channels in one canceller (how the mixer should run all FXO ports),
  over 60 s and over the first second alone (the least-squares fit of a new call runs
  then: the dearest second of a call).
* **eight calls starting together**: one bank of 8 rows, eight talkers on hybrids of every
  kind and delay starting in the same tick (every row's fit wanting to run at once): the
  per-tick cost (wall clock, best of 3 runs per tick) over the first 2 s, and each row's
  convergence time, with the default ``max_fitting`` (2) and with all 8 rows fitting.

    .venv/bin/python bench/echo_canceller.py [--seconds 8] [--seed 3] [--talkers 4] [--quick]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import print_machine

from firmware.media.echo import EchoCanceller
from firmware.media.hybrid import RESPONSE_KINDS, HybridEchoPath, pink_noise, speech_like
from firmware.media.levels import dbm0_to_power, dbm0_to_rms, power_to_dbm0

RATE = 8000
GOAL_DB = 25.0
DELAYS_MS = (0, 10, 30)
ERLS_DB = (6.0, 12.0, 20.0)
WINDOW = RATE // 4
QUIET_ECHO = dbm0_to_power(-60.0)


def _int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _far(signal: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    if signal == "white":
        return _int16(rng.normal(0.0, dbm0_to_rms(-15.0), int(seconds * RATE)))
    if signal == "pink":
        return _int16(pink_noise(seconds, rng, -15.0))
    return _int16(speech_like(seconds, rng, -15.0))


def _run(canceller: EchoCanceller, far: np.ndarray, line: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            canceller.process(far[start : start + 160], line[start : start + 160])
            for start in range(0, far.size - far.size % 160, 160)
        ]
    ).astype(float)


def _erle(echo: np.ndarray, output: np.ndarray, start_s: float, stop_s: float) -> float:
    part = slice(int(start_s * RATE), int(stop_s * RATE))
    return float(10 * np.log10(np.sum(echo[part] ** 2) / max(np.sum(output[part] ** 2), 1e-9)))


def _echo_windows(echo: np.ndarray) -> np.ndarray:
    """Which 0.25 s windows hold echo worth judging (a pause's do not)."""
    count = echo.size // WINDOW
    return np.mean(echo[: count * WINDOW].reshape(count, WINDOW) ** 2, axis=1) > QUIET_ECHO


def _convergence_s(echo: np.ndarray, output: np.ndarray) -> float | None:
    count = output.size // WINDOW
    echo_power = np.mean(echo[: count * WINDOW].reshape(count, WINDOW) ** 2, axis=1)
    out_power = np.mean(output[: count * WINDOW].reshape(count, WINDOW) ** 2, axis=1)
    judged = _echo_windows(echo)
    ratio = np.maximum(echo_power, 1e-9) / np.maximum(out_power, 1e-9)
    good = ~judged | (10 * np.log10(ratio) >= GOAL_DB)
    bad = np.flatnonzero(~good)
    if not bad.size:
        return 0.0
    if bad[-1] == count - 1:
        return None
    return float((bad[-1] + 1) * WINDOW / RATE)


def single_talk(
    seconds: float, seed: int, signals: tuple[str, ...], label: str | None = None
) -> list[dict[str, object]]:
    rows = []
    for signal in signals:
        far = _far(signal, seconds, np.random.default_rng(seed))
        for kind in RESPONSE_KINDS:
            for delay in DELAYS_MS:
                for erl in ERLS_DB:
                    path = HybridEchoPath.of_kind(kind, delay_ms=delay, erl_db=erl)
                    echo = path.echo(far.astype(float))
                    canceller = EchoCanceller(32, nlp=False)
                    output = _run(canceller, far, _int16(echo))
                    rows.append(
                        {
                            "signal": label or signal,
                            "seed": seed,
                            "kind": kind,
                            "delay_ms": delay,
                            "erl_db": erl,
                            "erle_1s_db": round(_erle(echo, output, 1.0, 1.5), 1),
                            "erle_steady_db": round(_erle(echo, output, 4.0, seconds), 1),
                            "convergence_s": _convergence_s(echo, output),
                            "bulk_delay_ms": canceller.state().bulk_delay_ms,
                            "windows_skipped": int(np.sum(~_echo_windows(echo))),
                            "windows": int(_echo_windows(echo).size),
                        }
                    )
    return rows


def with_nlp(seconds: float, seed: int) -> list[dict[str, object]]:
    rows = []
    far = _far("speech", seconds, np.random.default_rng(seed))
    for kind in RESPONSE_KINDS:
        for erl in ERLS_DB:
            path = HybridEchoPath.of_kind(kind, delay_ms=10, erl_db=erl, noise_dbm0=-70.0)
            output = _run(EchoCanceller(32), far, path.receive(far))
            frames = output[RATE:].reshape(-1, 160)
            levels = power_to_dbm0(np.mean(frames**2, axis=1))
            rows.append(
                {
                    "kind": kind,
                    "erl_db": erl,
                    "output_p99_dbm0": round(float(np.percentile(levels, 99)), 1),
                    "output_p50_dbm0": round(float(np.percentile(levels, 50)), 1),
                }
            )
    return rows


def double_talk(seeds: int, seed: int) -> list[dict[str, object]]:
    rows = []
    talk = slice(3 * RATE, 6 * RATE)
    after = slice(6 * RATE, int(6.5 * RATE))
    for near_dbm0 in (-20.0, -25.0, -30.0):
        for erl in ERLS_DB:
            snrs, chopped, after_erles = [], [], []
            for run in range(seeds):
                far = _far("speech", 7.0, np.random.default_rng(seed + run))
                near = speech_like(7.0, np.random.default_rng(seed + 1000 + run), near_dbm0)
                near[: talk.start] = 0.0
                near[talk.stop :] = 0.0
                kind = RESPONSE_KINDS[run % len(RESPONSE_KINDS)]
                echo = HybridEchoPath.of_kind(kind, delay_ms=10, erl_db=erl).echo(far.astype(float))
                line = _int16(echo + near)
                output = _run(EchoCanceller(32), far, line)
                linear = _run(EchoCanceller(32, nlp=False), far, line)
                error = output[talk] - near[talk]
                snrs.append(10 * np.log10(np.sum(near[talk] ** 2) / np.sum(error**2)))
                frames_near = near[talk].reshape(-1, 160)
                frames_out = output[talk].reshape(-1, 160)
                loud = power_to_dbm0(np.mean(frames_near**2, axis=1)) > near_dbm0 - 6
                kept = np.sum(frames_out[loud] * frames_near[loud], axis=1) / np.sum(
                    frames_near[loud] ** 2, axis=1
                )
                chopped.append(float(np.mean(kept < 0.5)))
                after_erles.append(_erle(echo[after], linear[after], 0.0, 0.5))
            rows.append(
                {
                    "near_dbm0": near_dbm0,
                    "erl_db": erl,
                    "echo_minus_near_db": round(-15.0 - erl - near_dbm0, 1),
                    "runs": seeds,
                    "snr_min_db": round(float(np.min(snrs)), 1),
                    "snr_median_db": round(float(np.median(snrs)), 1),
                    "chopped_frames_percent": round(100 * float(np.mean(chopped)), 1),
                    "erle_after_min_db": round(float(np.min(after_erles)), 1),
                }
            )
    return rows


def cpu(seconds: float, seed: int) -> dict[str, float]:
    far = _far("speech", seconds, np.random.default_rng(seed))
    line = HybridEchoPath.of_kind("long", delay_ms=10, erl_db=12.0, noise_dbm0=-65.0).receive(far)
    frames = far.size // 160
    single = EchoCanceller(32)
    started = time.process_time()
    _run(single, far, line)
    one = (time.process_time() - started) / (frames * 160 / RATE)
    bank = EchoCanceller(32, channels=8)
    far_rows = np.tile(far[: frames * 160].reshape(frames, 1, 160), (1, 8, 1))
    line_rows = np.tile(line[: frames * 160].reshape(frames, 1, 160), (1, 8, 1))
    started = time.process_time()
    for index in range(frames):
        bank.process(far_rows[index], line_rows[index])
    eight = (time.process_time() - started) / (frames * 160 / RATE) / 8
    first = 50  # frames: the first second of a call, the least-squares fit running
    single_first = EchoCanceller(32)
    started = time.process_time()
    _run(single_first, far[: first * 160], line[: first * 160])
    one_first = (time.process_time() - started) / (first * 160 / RATE)
    bank_first = EchoCanceller(32, channels=8)
    started = time.process_time()
    for index in range(first):
        bank_first.process(far_rows[index], line_rows[index])
    eight_first = (time.process_time() - started) / (first * 160 / RATE) / 8
    long_tail = EchoCanceller(128)
    started = time.process_time()
    _run(long_tail, far, line)
    one_long = (time.process_time() - started) / (frames * 160 / RATE)
    return {
        "audio_seconds": frames * 160 / RATE,
        "one_channel_ms_per_channel_second": round(1000 * one, 2),
        "eight_channels_ms_per_channel_second": round(1000 * eight, 2),
        "one_channel_first_second_ms_per_channel_second": round(1000 * one_first, 2),
        "eight_channels_first_second_ms_per_channel_second": round(1000 * eight_first, 2),
        "one_channel_tail_128_ms_per_channel_second": round(1000 * one_long, 2),
    }


def bank_start(seed: int, seconds: float = 6.0) -> list[dict[str, object]]:
    fars, echoes = [], []
    for row in range(8):
        far = _far("speech", seconds, np.random.default_rng(seed + 10 * row))
        kind = RESPONSE_KINDS[row % len(RESPONSE_KINDS)]
        path = HybridEchoPath.of_kind(kind, delay_ms=DELAYS_MS[row % 3], erl_db=12.0)
        fars.append(far)
        echoes.append(path.echo(far.astype(float)))
    far_rows, echo_rows = np.stack(fars), np.stack(echoes)
    line_rows = _int16(echo_rows)
    rows = []
    for max_fitting in (2, 8):
        best = None
        for _ in range(3):
            bank = EchoCanceller(32, channels=8, nlp=False, max_fitting=max_fitting)
            ticks, outputs = [], []
            for start in range(0, far_rows.shape[1], 160):
                started = time.perf_counter()
                outputs.append(
                    bank.process(
                        far_rows[:, start : start + 160], line_rows[:, start : start + 160]
                    )
                )
                ticks.append(time.perf_counter() - started)
            best = np.array(ticks) if best is None else np.minimum(best, ticks)
        output = np.concatenate(outputs, axis=1).astype(float)
        first = 1000 * best[:100]
        rows.append(
            {
                "max_fitting": max_fitting,
                "tick_first_2s_p50_ms": round(float(np.median(first)), 2),
                "tick_first_2s_p99_ms": round(float(np.percentile(first, 99)), 2),
                "tick_first_2s_max_ms": round(float(first.max()), 2),
                "tick_after_3s_p50_ms": round(float(np.median(1000 * best[150:])), 2),
                "convergence_s": [_convergence_s(echo_rows[r], output[r]) for r in range(8)],
            }
        )
    return rows


def _print(results: dict[str, object]) -> None:
    rows = results["single_talk"]
    assert isinstance(rows, list)
    print("single talk, linear canceller (NLP off), tail 32 ms, goal ERLE >= 25 dB within 1 s")
    for signal in dict.fromkeys(row["signal"] for row in rows):
        picked = [row for row in rows if row["signal"] == signal]
        converged = [row["convergence_s"] for row in picked if row["convergence_s"] is not None]
        within = sum(1 for value in converged if value <= 1.0)
        print(
            f"  {signal}: {len(picked)} hybrids; ERLE 1.0-1.5 s min"
            f" {min(row['erle_1s_db'] for row in picked)} median"
            f" {np.median([row['erle_1s_db'] for row in picked]):.1f} dB; steady min"
            f" {min(row['erle_steady_db'] for row in picked)} median"
            f" {np.median([row['erle_steady_db'] for row in picked]):.1f} dB; converged within"
            f" 1 s: {within}/{len(picked)}, latest {max(converged) if converged else None} s,"
            f" never {len(picked) - len(converged)}; echo-free 0.25 s windows skipped"
            f" {sum(row['windows_skipped'] for row in picked)} of"
            f" {sum(row['windows'] for row in picked)}"
        )
        for row in picked:
            if row["convergence_s"] is None or row["convergence_s"] > 1.0:
                print(f"    {row}")
    print("with the NLP (speech, -70 dBm0 line noise): output level after 1 s")
    for row in results["with_nlp"]:  # type: ignore[union-attr]
        print(f"  {row}")
    print("double talk (far -15 dBm0): near-end SNR of the output, chopped frames, ERLE after")
    for row in results["double_talk"]:  # type: ignore[union-attr]
        print(f"  {row}")
    print(f"CPU: {results['cpu']}")
    print("eight calls starting together in one bank (per tick, wall clock)")
    for row in results["bank_start"]:  # type: ignore[union-attr]
        print(f"  {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--double-talk-runs", type=int, default=8)
    parser.add_argument("--talkers", type=int, default=4, help="speech from this many more seeds")
    parser.add_argument("--quick", action="store_true", help="speech and pink only, 3 runs")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    signals = ("pink", "speech") if arguments.quick else ("white", "pink", "speech")
    runs = 3 if arguments.quick else arguments.double_talk_runs
    print_machine()
    started = time.perf_counter()
    talkers = [
        row
        for offset in range(1, arguments.talkers + 1)
        for row in single_talk(
            arguments.seconds, arguments.seed + 10 * offset, ("speech",), "speech, more talkers"
        )
    ]
    results: dict[str, object] = {
        "single_talk": single_talk(arguments.seconds, arguments.seed, signals) + talkers,
        "with_nlp": with_nlp(arguments.seconds, arguments.seed + 1),
        "double_talk": double_talk(runs, arguments.seed + 2),
        "cpu": cpu(60.0, arguments.seed + 3),
        "bank_start": bank_start(arguments.seed),
    }
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    if arguments.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)
        print(f"({results['wall_seconds']} s wall)")


if __name__ == "__main__":
    main()
