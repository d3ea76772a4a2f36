"""Line echo cancellation for FXO ports: what the city line sends back of what we sent.

Per 20 ms frame and per channel (docs/echo-canceller.md has the reasoning and figures):

* **Bulk delay.** The echo starts some milliseconds after we send (card buffering, codec,
  the line). A smoothed, phase-transform-weighted cross-correlation (GCC-PHAT) of the
  near end against the last ``max_bulk_delay_ms + tail_ms`` of far end finds where the echo
  begins (its onset: the whitened correlation peaks up to ~1.5 ms after it); the adaptive
  filter's window of ``tail_ms`` is then placed to start a little (``GUARD_MS``) before
  that, so the tail only has to cover the echo's dispersion. A window that already
  cancels is only moved if the move drops next to nothing of it (speech correlates with
  itself a pitch period away, and such a look once threw a converged filter away).
* **Linear canceller.** A block frequency-domain NLMS filter (overlap-save, two 80-sample
  blocks per frame, per-bin power normalisation, gradient constrained to the tail): each
  frequency adapts at its own speed, so coloured far-end speech converges about as fast as
  white noise, with a handful of FFTs per frame instead of a loop over samples.
* **Least squares while young.** From a reset or a window move, for up to 1 s of single
  talk (or until 40 dB), the background filter is the least-squares fit over every frame
  since (accumulated correlations; conjugate gradient on the Toeplitz normal equations):
  NLMS forgets the vowels it heard a second ago, the fit does not, so speech converges in
  well under a second instead of 2.5-3 s. Then NLMS goes on from it. The statistics cover
  the whole delay search range and are kept until the filter converges, so a window placed
  late re-solves from them; at most ``max_fitting`` rows of a bank solve per tick, in turns.
* **Two filters.** A background filter adapts; a foreground filter produces the output and
  is only replaced by a copy of the background when that cancels clearly better (3 dB
  under the foreground's residual and 10 dB under the near end). Most of what missed
  double talk does to the background never reaches the output, and an echo path change is
  followed as soon as the background has re-learnt it.
* **Double talk.** The Geigel detector (near-end peak above a share of the far-end peak
  of the tail, with a hangover) freezes adaptation: the share is the far peak itself until
  the path is learnt, then twice the echo path's measured peak gain (0.25-1), so a line
  with a low ERL does not take its own echo for a talker. Refined by energy: once
  converged, a residual 12 dB above the expected residual echo plus noise is near-end
  speech too and also freezes adaptation; if that lasts 0.6 s of far-end activity without
  a pause it is taken for a changed echo path and adaptation resumes.
* **Non-linear processor.** A frame whose residual is no more than the expected residual
  echo plus noise (x ``NLP_MARGIN``), while the far end talks and Geigel sees no double
  talk, is replaced by comfort noise shaped like the line's own background noise (faded
  over the frame); anything louder (near-end speech) passes untouched. The expected
  residual echo is the echo estimate's power times its learnt leakage (1 / ERLE).

Everything is vectorised over channels (``channels=`` rows), so all FXO ports of the
appliance can share one canceller and one set of numpy calls per tick; a channel whose far
end is silent gets its near end back unchanged. Inputs and output are int16, 8 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware.media.levels import dbm0_to_power, power_to_dbm0

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
MIN_TAIL_MS = 8
MAX_TAIL_MS = 128
MAX_BULK_DELAY_MS = 256
GUARD_MS = 1  # the window starts this much before the echo's onset
GEIGEL_THRESHOLD = 1.0  # until the echo path is learnt: a near peak above the far peak
GEIGEL_MIN_THRESHOLD = 0.25  # never more sensitive than a near peak 12 dB under the far
GEIGEL_HANGOVER_FRAMES = 4  # 80 ms: the end of a near-end word is not adapted on
NLP_MARGIN = 4.0  # 6 dB: residual up to 4x (expected echo + noise) is suppressed
NLP_HANGOVER_FRAMES = 2  # 40 ms after near-end speech the NLP still passes
STEP = 1.0  # normalised step of the background filter (stable with the fast-attack normaliser)
FAR_ACTIVE_DBM0 = -50.0  # far end quieter than this excites nothing worth adapting on
_FAR_ACTIVE_POWER = dbm0_to_power(FAR_ACTIVE_DBM0)
_POWER_FLOOR = dbm0_to_power(-80.0)
_NOISE_START = dbm0_to_power(-70.0)
_NOISE_RISE = 10.0 ** (3.0 / 10.0 / 50.0)  # the noise floor may rise 3 dB per second
_COPY_RATIO = 0.5  # background at least 3 dB better than foreground: copy it
_COPY_CANCELLED = 0.1  # ... and at least 10 dB under the near end
_RESET_RATIO = 8.0  # background 9 dB worse than foreground: it diverged, restart from it
_POWER_DECAY = 0.9  # per sub-block: the per-bin far-end power normalising the step
_SUB_BLOCKS = 2  # filter updates per frame: twice as fast on speech as one
_REGULARISATION = 0.01  # of the mean far-end power per bin, against empty bins
_ENERGY_SMOOTHING = 0.3
_LEAKAGE_RATE = 0.1  # per frame
_LEAKAGE_OUTLIER = 8.0  # a frame's residual share 9 dB above the learnt one is not averaged
_LEAKAGE_RISE = 1.02  # per outlying frame (0.09 dB): 4 dB per second of a changed path
_NEAR_TALK_MARGIN = 16.0  # 12 dB: a residual this far above the expected is near-end speech
_STUCK_NEAR_TALK_FRAMES = 30  # far-active frames (0.6 s) of it without a pause: a new path
_CONVERGED_DB = 12.0  # smoothed ERLE from which the echo path's peak gain is trusted
_ECHO_PEAK_DECAY = 0.995  # per frame: the learnt peak gain fades by half in ~3 s
_DELAY_SMOOTHING = 0.9  # cross-spectrum memory: 10 samples, ~0.4 s of far-end activity
_DELAY_ACCUMULATE_EVERY = 2  # frames: the cross-spectrum is sampled every 40 ms
_DELAY_EVERY_FRAMES = 6  # look for the bulk delay every 120 ms (two looks must agree)
_DELAY_MIN_FRAMES = 4  # sampled frames of far-end activity before the first look
_DELAY_TOLERANCE = 16  # samples (2 ms): looks that agree; a smaller move is not made
_DELAY_CONFIDENCE = 6.0  # peak over the correlation's rms
_DELAY_UNIQUE = 1.5  # peak over the best lag more than 2 ms away
_STEADY_CONFIDENCE = 4.0  # the same, for a peak where the previous look had it (young window)
_STEADY_UNIQUE = 1.15
_LS_FRAMES = 50  # single-talk frames (1 s) after a placement solved by least squares
_LS_DONE_DB = 40.0  # ... or until the canceller reaches this ERLE
_LS_ITERATIONS = 6  # conjugate-gradient iterations per frame, warm-started
_LS_RIDGE = 1e-5  # of the far end's energy: taps the far end never excited stay small
MAX_FITTING = 2  # rows of a bank solving their least-squares fit in the same tick
_ONSET_SPAN = 16  # samples (2 ms) before the correlation's peak searched for the onset
_ONSET_SHARE = 0.5  # of the peak: the onset's correlation
_DROPPED_SHARE = 0.25  # a cancelling window moves if the dropped taps hold < 1/4 of its residual


@dataclass(frozen=True)
class EchoSettings:
    """What a line's canceller is configured with (config: the line's echo section)."""

    tail_ms: int = 32
    max_bulk_delay_ms: int = 64
    nlp: bool = True
    comfort_noise: bool = True

    def __post_init__(self) -> None:
        if not MIN_TAIL_MS <= self.tail_ms <= MAX_TAIL_MS:
            raise ValueError(
                f"echo tail_ms {self.tail_ms} must be {MIN_TAIL_MS}-{MAX_TAIL_MS} ms"
                " (the dispersion of the line's echo after its bulk delay; 32 suits most lines)"
            )
        if not 0 <= self.max_bulk_delay_ms <= MAX_BULK_DELAY_MS:
            raise ValueError(
                f"echo max_bulk_delay_ms {self.max_bulk_delay_ms} must be 0-{MAX_BULK_DELAY_MS}"
                " ms (0 turns the delay search off: the tail then starts at the frame sent)"
            )


@dataclass(frozen=True)
class EchoState:
    """One channel's canceller as it stands, for status and tests."""

    bulk_delay_ms: float  # where the filter's window starts
    erle_db: float  # smoothed near-end over residual power while the far end talks alone
    double_talk: bool  # adaptation frozen this frame: Geigel (with hangover) or energy test
    suppressing: bool  # the NLP replaced this frame by comfort noise
    leakage: float  # learnt share of the echo estimate's power left in the residual
    noise_dbm0: float  # the near end's background noise estimate


class EchoCanceller:
    """Line echo canceller for ``channels`` lines at once (see the module docstring).

    ``process(far, near)``: ``far`` is what was sent to the line (the reference), ``near``
    what came back from it, int16 of 160 samples (one channel) or channels x 160; returns
    the near end with the echo removed, same shape, int16. Pass ``far`` no later than its
    echo can appear in ``near``: echo that precedes its reference cannot be cancelled.
    ``max_fitting`` bounds how many rows solve their least-squares fit in one call (the
    dearest work: it bounds the worst tick when several calls start together).
    """

    def __init__(
        self,
        tail_ms: int = 32,
        *,
        channels: int = 1,
        max_bulk_delay_ms: int = 64,
        nlp: bool = True,
        comfort_noise: bool = True,
        seed: int = 0,
        max_fitting: int = MAX_FITTING,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be 1 or more, got {channels}")
        if max_fitting < 1:
            raise ValueError(f"max_fitting must be 1 or more, got {max_fitting}")
        self.max_fitting = max_fitting
        self.settings = EchoSettings(tail_ms, max_bulk_delay_ms, nlp, comfort_noise)
        self.channels = channels
        self.tail = tail_ms * SAMPLE_RATE // 1000
        self.max_delay = max_bulk_delay_ms * SAMPLE_RATE // 1000
        self.frame = FRAME_SAMPLES
        self.sub_blocks = _SUB_BLOCKS
        self.block = FRAME_SAMPLES // _SUB_BLOCKS
        # a power of two holding the tail plus a frame: one window also gives the Geigel reach
        self.fft_size = 1 << (self.tail + self.frame - 2).bit_length()
        self.guard = min(GUARD_MS * SAMPLE_RATE // 1000, self.tail // 4)
        # lags the delay search covers: every start of the window plus the window itself
        self.search_lags = self.max_delay + self.tail
        self.search_size = 1 << (self.frame + self.search_lags - 2).bit_length()
        self.history = max(self.fft_size, self.search_lags + self.frame) + self.max_delay
        self._rows = np.arange(channels)[:, None]
        self._rows3 = self._rows[:, :, None]
        ends = np.arange(1, self.sub_blocks + 1) * self.block
        self._window_offsets = ends[:, None] - self.fft_size + np.arange(self.fft_size)
        self._padded_error = np.zeros((channels, self.fft_size))
        self._ramp_down = 1.0 - np.arange(1, self.frame + 1) / self.frame
        bins = self.frame // 2 + 1
        self._parseval = np.full(bins, 2.0)
        self._parseval[0] = self._parseval[-1] = 1.0
        self._parseval /= float(self.frame) ** 2
        frequencies = np.fft.rfftfreq(self.search_size, 1 / SAMPLE_RATE)
        self._search_band = ((frequencies >= 200) & (frequencies <= 3600)).astype(float)
        self._rng = np.random.default_rng(seed)
        spectrum_bins = self.fft_size // 2 + 1
        self._far = np.zeros((channels, self.history))
        self._offset = np.zeros(channels, dtype=np.int64)
        self._weights = np.zeros((2, channels, spectrum_bins), dtype=complex)
        self._far_power = np.zeros((channels, spectrum_bins))
        self._geigel_hold = np.zeros(channels, dtype=np.int64)
        self._smoothed_error = np.zeros((2, channels))
        self._smoothed_near = np.zeros(channels)
        self._smoothed_input = np.zeros(channels)
        self._smoothed_residual = np.zeros(channels)
        self._leakage = np.ones(channels)
        self._nlp_gain = np.ones(channels)
        self._nlp_hold = np.zeros(channels, dtype=np.int64)
        self._noise_spectrum = np.full((channels, bins), _NOISE_START * self.frame / 2)
        self._smoothed_spectrum = np.array(self._noise_spectrum)
        self._cross_spectrum = np.zeros((channels, self.search_size // 2 + 1), dtype=complex)
        self._search_frames = np.zeros(channels, dtype=np.int64)
        self._last_estimate = np.full(channels, -1, dtype=np.int64)
        self._last_peak = np.full(channels, -1000, dtype=np.int64)  # any look's, clear or not
        self._near_talk_frames = np.zeros(channels, dtype=np.int64)
        self._echo_peak = np.zeros(channels)
        self._ls_frames = np.zeros(channels, dtype=np.int64)
        self._ls_far = np.zeros((channels, spectrum_bins), dtype=complex)
        # the near end's correlation with the far end over the whole search range (every
        # placement's lags), so a window moved while young re-solves from what was learnt
        self._ls_cross = np.zeros((channels, self.search_size // 2 + 1), dtype=complex)
        self._ls_head = np.zeros((channels, self.history))  # the far end at a stretch's start
        self._ls_newest = np.zeros((channels, self.history))  # ... and at its newest frame
        self._ls_last = np.full(channels, -1, dtype=np.int64)  # frame it last solved in
        self._ls_taps = np.zeros((channels, self.tail))
        self._ls_prior = np.zeros((channels, self.tail))
        self._ls_open = np.zeros(channels, dtype=bool)
        self._ls_start = np.zeros((channels, self.tail - 1))
        self._frame_mask = np.zeros(self.fft_size)
        self._frame_mask[-self.frame :] = 1.0
        self._ls_size = 1 << (2 * self.tail - 1).bit_length()
        self._frames = 0
        self._double_talk = np.zeros(channels, dtype=bool)
        self._suppressing = np.zeros(channels, dtype=bool)

    # ----- the public face ---------------------------------------------------------------

    def process(self, far: np.ndarray, near: np.ndarray) -> np.ndarray:
        """One 20 ms frame of each channel: the near end with its echo cancelled (int16)."""
        far_frames = np.asarray(far)
        near_frames = np.asarray(near)
        single = far_frames.ndim == 1
        shape = (self.channels, self.frame)
        if single and self.channels != 1:
            raise ValueError(f"this canceller has {self.channels} channels: pass channels x 160")
        far_frames = far_frames.reshape(-1, far_frames.shape[-1])
        near_frames = near_frames.reshape(-1, near_frames.shape[-1])
        if far_frames.shape != shape or near_frames.shape != shape:
            raise ValueError(
                f"expected far and near frames of shape {shape}, got {np.shape(far)} and"
                f" {np.shape(near)}"
            )
        cleaned = self._process(far_frames.astype(float), near_frames.astype(float))
        output = np.clip(np.rint(cleaned), -32768, 32767).astype(np.int16)
        return output[0] if single else output

    def reset(self, channel: int | None = None) -> None:
        """Forget a channel's line (a new call on it), or every channel's."""
        rows = slice(None) if channel is None else channel
        self._far[rows] = 0.0
        self._offset[rows] = 0
        self._weights[:, rows] = 0.0
        self._far_power[rows] = 0.0
        self._geigel_hold[rows] = 0
        self._smoothed_error[:, rows] = 0.0
        self._smoothed_near[rows] = 0.0
        self._smoothed_input[rows] = 0.0
        self._smoothed_residual[rows] = 0.0
        self._leakage[rows] = 1.0
        self._nlp_gain[rows] = 1.0
        self._nlp_hold[rows] = 0
        self._noise_spectrum[rows] = _NOISE_START * self.frame / 2
        self._smoothed_spectrum[rows] = _NOISE_START * self.frame / 2
        self._cross_spectrum[rows] = 0.0
        self._search_frames[rows] = 0
        self._last_estimate[rows] = -1
        self._last_peak[rows] = -1000
        self._near_talk_frames[rows] = 0
        self._echo_peak[rows] = 0.0
        self._forget_least_squares(rows)
        self._double_talk[rows] = False
        self._suppressing[rows] = False

    def state(self, channel: int = 0) -> EchoState:
        erle = self._erle()[channel]
        noise = float(self._noise_spectrum[channel] @ self._parseval)
        return EchoState(
            bulk_delay_ms=1000.0 * int(self._offset[channel]) / SAMPLE_RATE,
            erle_db=round(float(erle), 1),
            double_talk=bool(self._double_talk[channel]),
            suppressing=bool(self._suppressing[channel]),
            leakage=float(self._leakage[channel]),
            noise_dbm0=round(float(power_to_dbm0(noise)), 1),
        )

    # ----- one frame ---------------------------------------------------------------------

    def _process(self, far: np.ndarray, near: np.ndarray) -> np.ndarray:
        frame, block, size, tail = self.frame, self.block, self.fft_size, self.tail
        history = self._far
        history[:, :-frame] = history[:, frame:]
        history[:, -frame:] = far
        # every sub-block's filter input, gathered at each channel's bulk delay at once
        first = self.history - self._offset - frame
        windows = history[self._rows3, first[:, None, None] + self._window_offsets]
        spectra = np.fft.rfft(windows)  # (channels, sub-blocks, bins)
        reach = windows[:, -1, size - frame - tail + 1 :]  # far samples the frame's echo is of
        far_power = np.einsum("cs,cs->c", reach, reach) / reach.shape[1]
        far_active = far_power > _FAR_ACTIVE_POWER
        far_peak = np.abs(reach).max(axis=1)
        geigel = np.abs(near).max(axis=1) > self._geigel_threshold() * far_peak
        self._geigel_hold = np.where(
            geigel & far_active, GEIGEL_HANGOVER_FRAMES, np.maximum(self._geigel_hold - 1, 0)
        )
        double_talk = self._geigel_hold > 0

        # the foreground does not change within a frame: its output first, for the energy test
        foreground = np.fft.irfft(self._weights[0][:, None] * spectra, size)[..., size - block :]
        foreground = foreground.reshape(self.channels, frame)
        residual = near - foreground
        residual_power = np.einsum("cs,cs->c", residual, residual) / frame
        echo_power = np.einsum("cs,cs->c", foreground, foreground) / frame
        noise_power = self._noise_spectrum @ self._parseval
        residual_echo = self._leakage * echo_power
        expected = residual_echo + noise_power
        near_talk = far_active & (residual_power > NLP_MARGIN * expected)
        # energy refinement of Geigel: once converged, a residual well above the expected one
        # is near-end speech too; if it lasts (far-active frames) it is a changed echo path
        self._near_talk_frames = np.where(
            near_talk, self._near_talk_frames + 1, np.where(far_active, 0, self._near_talk_frames)
        )
        converged = self._erle() >= _CONVERGED_DB
        suspect = far_active & converged & (residual_power > _NEAR_TALK_MARGIN * expected)
        refined = suspect & (self._near_talk_frames <= _STUCK_NEAR_TALK_FRAMES)
        single_talk = far_active & ~double_talk & ~refined
        step = np.where(single_talk, STEP, 0.0)[:, None]
        adapting = bool(single_talk.any())

        background = np.empty((self.channels, frame))
        for index in range(self.sub_blocks):
            part = slice(index * block, (index + 1) * block)
            spectrum = spectra[:, index]
            background[:, part] = np.fft.irfft(self._weights[1] * spectrum, size)[:, size - block :]
            power = self._far_power
            np.maximum(power * _POWER_DECAY, spectrum.real**2 + spectrum.imag**2, out=power)
            if adapting:
                self._adapt(spectrum, near[:, part] - background[:, part], step)
        background_error = near - background
        background_power = np.einsum("cs,cs->c", background_error, background_error) / frame
        near_power = np.einsum("cs,cs->c", near, near) / frame
        self._learn_leakage(residual_power, echo_power, single_talk)
        self._compare_filters(np.stack((residual_power, background_power)), near_power, far_active)
        self._track_erle(near_power, residual_power, single_talk)
        young = (self._ls_frames < _LS_FRAMES) & (self._erle() < _LS_DONE_DB)
        # the statistics are gathered while young and on until the filter converges, so a
        # window placed late re-solves from them; a converged row's stretch is closed
        gathering = (young | ~converged) & single_talk & ~suspect
        fitting = young & gathering
        # a frame the fit must leave out (double talk, or a residual the energy test
        # suspects): before convergence the fit starts a new stretch from where it stands;
        # after, it ends and NLMS goes on (near-end speech the detectors missed must not
        # pile up in the fit's statistics)
        broken = (young | ~converged) & far_active & ~gathering & self._ls_open
        if np.any(broken & converged):
            self._ls_frames[broken & converged] = _LS_FRAMES
        if np.any(broken & ~converged):
            rows = np.flatnonzero(broken & ~converged)
            self._restart_least_squares(rows, self._ls_taps[rows])
        if self._ls_open.any():
            closing = self._ls_open & converged & ~young
            if closing.any():
                self._restart_least_squares(np.flatnonzero(closing), 0.0)
        if gathering.any():
            self._accumulate(np.flatnonzero(gathering), windows[:, -1], spectra[:, -1], near)
        if fitting.any():
            self._least_squares(self._solvers(fitting), windows[:, -1])
        echo_peak = np.abs(foreground).max(axis=1)
        ratio = np.where(single_talk, echo_peak / np.maximum(far_peak, 1.0), 0.0)
        self._echo_peak = np.maximum(self._echo_peak * _ECHO_PEAK_DECAY, ratio)
        if self.max_delay and not self._frames % _DELAY_ACCUMULATE_EVERY:
            self._search_delay(near, single_talk)
        self._double_talk = double_talk | refined
        self._frames += 1
        audible = residual_echo > 0.25 * noise_power  # echo 6 dB under the noise is masked
        return self._non_linear(residual, far_active & ~double_talk & ~near_talk & audible)

    def _geigel_threshold(self) -> np.ndarray:
        """Half the far peak as a rule (an ERL of 6 dB or more); once the echo path is
        known, twice its measured peak gain, so a line with a high ERL hears quieter near-end
        talkers as double talk and one with a low ERL does not take its own echo for one."""
        converged = self._erle() >= _CONVERGED_DB
        learnt = np.clip(2.0 * self._echo_peak, GEIGEL_MIN_THRESHOLD, 1.0)
        return np.where(converged, learnt, GEIGEL_THRESHOLD)

    def _erle(self) -> np.ndarray:
        residual = np.maximum(self._smoothed_residual, _POWER_FLOOR)
        return 10.0 * np.log10(np.maximum(self._smoothed_near, _POWER_FLOOR) / residual)

    def _learn_leakage(
        self, error_power: np.ndarray, estimate_power: np.ndarray, single_talk: np.ndarray
    ) -> None:
        """The share of the echo estimate's power left in the residual (1 / ERLE), learnt in
        single talk. A frame far above it (near-end speech Geigel missed) is not averaged
        in; it only nudges the share up, so a changed echo path still raises it in ~1 s."""
        learning = single_talk & (estimate_power > _POWER_FLOOR)
        share = np.minimum(error_power / np.maximum(estimate_power, _POWER_FLOOR), 1.0)
        typical = share < _LEAKAGE_OUTLIER * self._leakage
        averaged = self._leakage + _LEAKAGE_RATE * (share - self._leakage)
        nudged = np.minimum(self._leakage * _LEAKAGE_RISE, 1.0)
        self._leakage = np.where(learning, np.where(typical, averaged, nudged), self._leakage)

    def _adapt(self, spectrum: np.ndarray, error: np.ndarray, step: np.ndarray) -> None:
        """One constrained NLMS step of the background filter, per-bin normalised (the
        far-end power per bin jumps up at once and decays slowly, so a syllable's onset
        never meets a stale, too small normaliser)."""
        power = self._far_power
        size = self.fft_size
        padded = self._padded_error
        padded[:, size - self.block :] = error
        regulariser = _REGULARISATION * power.mean(axis=1, keepdims=True) + size * _POWER_FLOOR
        gradient = np.conj(spectrum) * np.fft.rfft(padded) / (power + regulariser)
        impulse = np.fft.irfft(gradient, size)
        impulse[:, self.tail :] = 0.0
        self._weights[1] += step * np.fft.rfft(impulse)

    def _forget_least_squares(self, rows: slice | int | np.ndarray) -> None:
        """A new line: the fit starts over, from no filter."""
        self._ls_frames[rows] = 0
        self._ls_last[rows] = -1
        self._restart_least_squares(rows, 0.0)

    def _solvers(self, fitting: np.ndarray) -> np.ndarray:
        """The rows that solve their fit this frame: at most ``max_fitting``, those that
        solved least recently first (the solve is a bank's dearest work, ~1.2 ms of numpy
        calls here whatever the rows: eight rows at once made a tick ~3.2 ms). Every fitting
        row gathers its statistics each frame anyway, so a row's turn solves from all it
        heard: eight calls starting together took turns and all reached 25 dB within 1 s,
        where first come first served (a row holding its slot until its fit ended) kept the
        last ones waiting and NLMS-only until 1.75 s."""
        rows = np.flatnonzero(fitting)
        if rows.size > self.max_fitting:
            rows = np.sort(rows[np.argsort(self._ls_last[rows], kind="stable")][: self.max_fitting])
        self._ls_last[rows] = self._frames
        return rows

    def _restart_least_squares(
        self, rows: slice | int | np.ndarray, taps: float | np.ndarray
    ) -> None:
        """Start a new stretch of frames to fit, pulled towards ``taps`` where it knows
        nothing yet (the ridge): the statistics hold only consecutive single-talk frames."""
        self._ls_far[rows] = 0.0
        self._ls_cross[rows] = 0.0
        self._ls_open[rows] = False
        self._ls_taps[rows] = taps
        self._ls_prior[rows] = taps

    def _accumulate(
        self, rows: np.ndarray, window: np.ndarray, spectrum: np.ndarray, near: np.ndarray
    ) -> None:
        """Add a single-talk frame to the fit's statistics: the far end's autocorrelation
        over the tail's lags (at the window's placement) and its correlation with the near
        end over the whole search range, so a move keeps what was learnt."""
        size, tail, frame = self.fft_size, self.tail, self.frame
        opening = rows[~self._ls_open[rows]]
        if opening.size:  # the samples before a stretch's first frame, for its first rows
            self._ls_start[opening] = window[opening, size - frame - tail + 1 : -frame]
            self._ls_head[opening] = self._far[opening]
            self._ls_open[opening] = True
        self._ls_newest[rows] = self._far[rows]
        self._ls_far[rows] += np.conj(spectrum[rows]) * np.fft.rfft(window[rows] * self._frame_mask)
        search = self.search_size
        reach = self._far[rows, self.history - (frame + self.search_lags - 1) :]
        self._ls_cross[rows] += np.conj(np.fft.rfft(near[rows], search)) * np.fft.rfft(
            reach, search
        )

    def _targets(self, rows: np.ndarray) -> np.ndarray:
        """The near end's correlation with the far end at the lags of each row's window."""
        lags = self.search_lags
        correlation = np.fft.irfft(self._ls_cross[rows], self.search_size)[:, :lags]
        # index lags - 1 - d holds the lag d; tap j of a window at offset o is lag o + j
        picks = lags - 1 - self._offset[rows, None] - np.arange(self.tail)[None, :]
        return correlation[np.arange(rows.size)[:, None], picks]

    def _least_squares(self, rows: np.ndarray, window: np.ndarray) -> None:
        """While a window placement is young, the background filter is the least-squares
        fit over every single-talk frame since: NLMS learns speech slowly (a syllable
        excites a few harmonics, the next one others), while the fit over the frames so far
        holds what each of them taught. The normal equations (a Toeplitz matrix of the
        accumulated autocorrelation less the rows that would run past the newest sample)
        are solved by a few warm-started conjugate-gradient steps per frame with FFT
        products and a circulant preconditioner, so no matrix is ever formed."""
        size, tail, m = self.fft_size, self.tail, self._ls_size
        segment = window[rows]
        self._ls_frames[rows] += 1
        lags = np.fft.irfft(self._ls_far[rows], size)[:, :tail]
        target = self._targets(rows)
        ridge = (_LS_RIDGE * lags[:, 0] + tail * _POWER_FLOOR)[:, None]
        column = np.zeros((rows.size, m))
        column[:, :tail] = lags
        column[:, m - tail + 1 :] = lags[:, :0:-1]
        # the autocorrelation counts products of the stretch's newest samples that no row
        # holds, and misses those of the samples before its first frame that its first rows
        # hold: rows past each end (the far end zero beyond it) are subtracted and added
        ends = np.stack((self._ls_start[rows], segment[:, size - tail + 1 :]))
        transfers = np.concatenate((np.fft.rfft(column)[None], np.fft.rfft(ends, m)))
        mirrored = np.fft.rfft(ends[..., ::-1], m) * np.array([1.0, -1.0])[:, None, None]

        def product(vector: np.ndarray, rims: int = 1) -> np.ndarray:
            parts = np.fft.irfft(transfers[: rims + 1] * np.fft.rfft(vector, m), m)
            beyond = parts[1:, :, tail - 1 : 2 * tail - 2]
            rim = np.fft.irfft(np.fft.rfft(beyond, m) * mirrored[:rims], m)[..., : tail - 1]
            result = parts[0][:, :tail] + ridge * vector
            result[:, 1:] += rim.sum(axis=0)
            return result

        # T. Chan's circulant preconditioner of size tail
        k = np.arange(tail)
        wrapped = np.concatenate((lags[:, :1], lags[:, :0:-1]), axis=1)
        eigen = np.maximum(np.fft.rfft(((tail - k) * lags + k * wrapped) / tail).real, 0.0)
        eigen += ridge

        def precondition(vector: np.ndarray) -> np.ndarray:
            return np.fft.irfft(np.fft.rfft(vector) / eigen, tail)

        taps = self._ls_taps[rows]
        # the newest samples' rows change every frame: they are taken at the taps so far
        # (solving A w = p + E w_previous, A the matrix without them; E shrinks relative to
        # A as frames add up, and at the fixed point this is the least-squares solution)
        remainder = target + ridge * self._ls_prior[rows] - product(taps, rims=2)
        z = precondition(remainder)
        direction = z
        rz = np.einsum("cs,cs->c", remainder, z)[:, None]
        for _ in range(_LS_ITERATIONS):  # A and the preconditioner are positive definite
            applied = product(direction)
            alpha = rz / (np.einsum("cs,cs->c", direction, applied)[:, None] + 1e-300)
            taps += alpha * direction
            remainder -= alpha * applied
            z = precondition(remainder)
            rz_next = np.einsum("cs,cs->c", remainder, z)[:, None]
            direction = z + (rz_next / (rz + 1e-300)) * direction
            rz = rz_next
        self._ls_taps[rows] = taps
        self._weights[1, rows] = np.fft.rfft(taps, size)

    def _compare_filters(
        self, error_power: np.ndarray, near_power: np.ndarray, far_active: np.ndarray
    ) -> None:
        """Copy the background to the foreground when it cancels clearly better and takes
        out most of what came in (a filter adapting on near-end speech can briefly beat the
        foreground, never by removing 10 dB of a frame that holds speech), and restart the
        background from the foreground when it has clearly diverged."""
        smoothed = self._smoothed_error
        smoothed += _ENERGY_SMOOTHING * (error_power - smoothed)
        self._smoothed_input += _ENERGY_SMOOTHING * (near_power - self._smoothed_input)
        foreground, background = smoothed
        better = far_active & (background < _COPY_RATIO * foreground)
        better &= background < _COPY_CANCELLED * self._smoothed_input
        worse = far_active & (background > _RESET_RATIO * foreground)
        if np.any(better):
            self._weights[0, better] = self._weights[1, better]
            smoothed[0, better] = smoothed[1, better]
        if np.any(worse):
            self._weights[1, worse] = self._weights[0, worse]
            smoothed[1, worse] = smoothed[0, worse]

    def _track_erle(
        self, near_power: np.ndarray, error_power: np.ndarray, single_talk: np.ndarray
    ) -> None:
        rate = np.where(single_talk, 0.1, 0.0)
        self._smoothed_near += rate * (near_power - self._smoothed_near)
        self._smoothed_residual += rate * (error_power - self._smoothed_residual)

    # ----- bulk delay --------------------------------------------------------------------

    def _search_delay(self, near: np.ndarray, single_talk: np.ndarray) -> None:
        """Accumulate the near/far cross-spectrum over the lags the echo may come from;
        every 100 ms move a channel's window if the echo clearly starts elsewhere."""
        size, lags, frame = self.search_size, self.search_lags, self.frame
        segment = self._far[:, self.history - (frame + lags - 1) :]
        cross = np.conj(np.fft.rfft(near, size)) * np.fft.rfft(segment, size)
        weight = np.where(single_talk, 1.0, 0.0)[:, None]
        self._cross_spectrum += weight * (1 - _DELAY_SMOOTHING) * (cross - self._cross_spectrum)
        self._search_frames += single_talk
        if self._frames % _DELAY_EVERY_FRAMES:
            return
        ready = np.flatnonzero(self._search_frames >= _DELAY_MIN_FRAMES)
        if not ready.size:
            return
        accumulated = self._cross_spectrum[ready]
        magnitude = np.abs(accumulated)
        # phase transform over the band, on bins that carry signal: a sine gives no peak
        carried = magnitude > 1e-3 * magnitude.max(axis=1, keepdims=True)
        whitened = np.where(carried, accumulated / (magnitude + 1e-12), 0.0) * self._search_band
        correlation = np.abs(np.fft.irfft(whitened, size)[:, :lags])
        peaks = np.argmax(correlation, axis=1)
        heights = correlation[np.arange(ready.size), peaks]
        rms = np.sqrt(np.mean(correlation**2, axis=1))
        # unique: the best lag beats every lag more than 2 ms from it (a periodic far end,
        # a sine, correlates everywhere alike and moves nothing)
        distance = np.abs(np.arange(lags)[None, :] - peaks[:, None])
        others = np.where(distance > _DELAY_TOLERANCE, correlation, 0.0).max(axis=1)
        lag = lags - 1 - peaks  # the correlation runs from the longest lag down
        clear = heights >= np.maximum(_DELAY_CONFIDENCE * rms, _DELAY_UNIQUE * others)
        # a peak that stays where the previous look had it while the pitch aliases around it
        # move is clear enough for a window that does not cancel yet (a wrong move of a young
        # fit costs little: its statistics follow the window)
        steady = np.abs(lag - self._last_peak[ready]) <= _DELAY_TOLERANCE
        steady &= heights >= np.maximum(_STEADY_CONFIDENCE * rms, _STEADY_UNIQUE * others)
        clear |= steady & (self._erle()[ready] < _CONVERGED_DB)
        self._last_peak[ready] = lag
        for row, channel in enumerate(ready):
            if not clear[row]:
                continue  # an unclear look: the last clear one still waits for a second
            # the whitened correlation of a band-limited response peaks up to ~1.5 ms after
            # its onset (the line's group delay): the echo starts at the earliest lag within
            # 2 ms before the peak that reaches half of it
            before = correlation[row, peaks[row] + 1 : peaks[row] + 1 + _ONSET_SPAN]
            onset = np.flatnonzero(before >= _ONSET_SHARE * heights[row])
            echo_at = int(lag[row]) - (int(onset[-1]) + 1 if onset.size else 0)
            agreed = abs(echo_at - int(self._last_estimate[channel])) <= _DELAY_TOLERANCE
            self._last_estimate[channel] = echo_at
            start = min(max(echo_at - self.guard, 0), self.max_delay)
            moved = abs(start - int(self._offset[channel])) > _DELAY_TOLERANCE
            if agreed and moved and self._may_move(int(channel), start):
                self._move_window(int(channel), start)

    def _may_move(self, channel: int, start: int) -> bool:
        """A window that cancels (ERLE at least ``_CONVERGED_DB``) is only moved when the
        taps the move drops hold less than ``_DROPPED_SHARE`` of what the filter leaves
        (the residual's share, 1 / ERLE): on voiced speech GCC-PHAT also peaks a few pitch
        periods off the echo, and such a look once threw a converged filter away (a 30 ms
        echo placed at 0 ms); a look that only trims empty taps still moves it."""
        erle = self._erle()[channel]
        if erle < _CONVERGED_DB:
            return True
        taps = np.fft.irfft(self._weights[0, channel], self.fft_size)[: self.tail] ** 2
        shift = start - int(self._offset[channel])
        kept = taps[shift:].sum() if shift > 0 else taps[: max(self.tail + shift, 0)].sum()
        return bool(taps.sum() - kept <= _DROPPED_SHARE * 10.0 ** (-erle / 10.0) * taps.sum())

    def _move_window(self, channel: int, start: int) -> None:
        """Slide a channel's filters to a new bulk delay, keeping the overlapping taps."""
        shift = start - int(self._offset[channel])
        if not shift:
            return
        taps = np.fft.irfft(self._weights[:, channel], self.fft_size)[:, : self.tail]
        moved = np.zeros_like(taps)
        if 0 < shift < self.tail:
            moved[:, : self.tail - shift] = taps[:, shift:]
        elif -self.tail < shift < 0:
            moved[:, -shift:] = taps[:, : self.tail + shift]
        self._weights[:, channel] = np.fft.rfft(moved, self.fft_size)
        previous = int(self._offset[channel])
        self._offset[channel] = start
        self._smoothed_error[:, channel] = 0.0
        if self._erle()[channel] < _CONVERGED_DB:  # the fit re-solves at the new place
            self._ls_frames[channel] = 0
            if self._ls_open[channel]:
                self._shift_statistics(channel, previous, start)
                self._ls_taps[channel] = moved[1]
                self._ls_prior[channel] = moved[1]
            else:
                self._restart_least_squares(channel, moved[1])
        else:  # a converged filter trimmed of empty taps: NLMS goes on from it
            self._ls_frames[channel] = _LS_FRAMES

    def _shift_statistics(self, channel: int, previous: int, start: int) -> None:
        """Re-place a young fit's statistics at a new window: the correlation with the near
        end covers every placement already; the far end's autocorrelation is over the same
        frames' samples, now ``start - previous`` older, so it gains and loses the products
        of that many samples at the stretch's first frame and at its newest (the far end
        kept at each: ``_ls_head``, ``_ls_newest``). Frames left out within the stretch
        were far-end pauses, whose edges hold next to nothing. Before, a move started the
        fit over: a 30 ms echo read after 0.5-0.9 s of speech then took 0.4-1.1 s more."""
        tail, frame, length = self.tail, self.frame, self.history
        head, now = self._ls_head[channel], self._ls_newest[channel]

        def products(x: np.ndarray, low: int, high: int) -> np.ndarray:
            """Sum over m in [low, high) of x[m] x[m - k], k = 0..tail-1 (signed: high < low
            subtracts)."""
            if low > high:
                return -products(x, high, low)
            if low == high:
                return np.zeros(tail)
            return np.correlate(x[low - tail + 1 : high], x[low:high], "valid")[::-1]

        first = length - frame  # the stretch's first frame starts here in the head
        delta = products(head, first - start, first - previous)
        delta -= products(now, length - start, length - previous)
        padded = np.zeros(self.fft_size)
        padded[:tail] = delta
        self._ls_far[channel] += np.fft.rfft(padded)
        self._ls_start[channel] = head[first - start - tail + 1 : first - start]

    # ----- non-linear processor ----------------------------------------------------------

    def _non_linear(self, residual: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Replace frames that hold only residual echo (and noise) by comfort noise; track
        the line's background noise (minimum statistics) for the comfort noise and tests."""
        spectrum = np.fft.rfft(residual)
        magnitude = spectrum.real**2 + spectrum.imag**2
        smoothed = self._smoothed_spectrum
        smoothed += 0.3 * (magnitude - smoothed)
        noise = self._noise_spectrum
        np.copyto(noise, np.where(smoothed < noise, smoothed, noise * _NOISE_RISE))
        suppress = candidates & self.settings.nlp
        held = self._nlp_hold > 0
        self._nlp_hold = np.where(suppress, np.maximum(self._nlp_hold - 1, 0), NLP_HANGOVER_FRAMES)
        suppress &= ~held
        self._suppressing = suppress
        previous = self._nlp_gain
        self._nlp_gain = np.where(suppress, 0.0, 1.0)
        if not np.any(suppress):
            return residual
        gain = np.where(suppress[:, None], previous[:, None] * self._ramp_down, 1.0)
        output = residual * gain
        if self.settings.comfort_noise:
            phases = self._rng.uniform(0.0, 2 * np.pi, noise.shape)
            comfort = np.fft.irfft(np.sqrt(noise) * np.exp(1j * phases), self.frame)
            output += comfort * (1.0 - gain)
        return output
