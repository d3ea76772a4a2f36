#!/usr/bin/env bash
# Run the founders' SIPp harness (../shared/bench/sip/run.py) against a fresh appliance.
#
#   bench/sip/harness.sh NAME TEST...        e.g. bench/sip/harness.sh conc100 conc
#   CONC_LEVELS=100 CONC_HOLD_S=30 bench/sip/harness.sh conc100 conc
#   CPS_RATES="50 100" bench/sip/harness.sh cps cps
#
# Starts `minipbx run --config bench/sip/b2b.toml` with a throw-away data folder, waits for
# its SIP port, runs the harness with OUT=bench/out/NAME and PBX_PID set, then stops the
# appliance (SIGTERM, by pid) and prints the summary. Extra harness knobs pass through the
# environment (see ../shared/bench/sip/README.md). PROFILE=1 records a py-spy profile of the
# appliance into bench/out/NAME/profile.txt (py-spy must be installed in the venv).
# Loopback only; everything is bounded by the harness's own limits.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HARNESS=${HARNESS:-$ROOT/../shared/bench/sip}
NAME=${1:?name of the run (folder under bench/out)}
shift
OUT=$ROOT/bench/out/$NAME
mkdir -p "$OUT"
# Other SIPp runs on this machine (test suites) take SIPp's default media port 6000 when
# they do not pass -mp: wait (bounded) until the harness's ports are free.
for _ in $(seq 300); do
    if ! ss -lun | grep -qE '127.0.0.1:(5060|5070|5080|600[0-3]|610[0-3]) |0.0.0.0:(600[0-3]|610[0-3]) '; then break; fi
    sleep 1
done
DATA=$(mktemp -d)
"$ROOT/.venv/bin/minipbx" run --config "$ROOT/bench/sip/b2b.toml" --data-dir "$DATA" \
    --log-level "${LOG_LEVEL:-warning}" >"$OUT/pbx.log" 2>&1 &
PBX=$!
SPY=""
cleanup() {
    if [ -n "$SPY" ]; then kill -INT "$SPY" 2>/dev/null || true; wait "$SPY" 2>/dev/null || true; fi
    kill -TERM "$PBX" 2>/dev/null || true
    wait "$PBX" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 100); do
    if ss -lun | grep -q '127.0.0.1:5060 '; then break; fi
    sleep 0.1
done
echo "appliance pid $PBX, output in $OUT" >&2
if [ "${PROFILE:-0}" = 1 ]; then
    "$ROOT/.venv/bin/py-spy" record --pid "$PBX" --format raw --rate 200 ${SPY_ARGS:---gil} \
        --output "$OUT/profile.raw" >"$OUT/py-spy.log" 2>&1 &
    SPY=$!
fi
# utime and stime of the appliance (clock ticks) once a second: user vs kernel share.
( while kill -0 "$PBX" 2>/dev/null; do
    echo "$(date +%s.%N) $(cut -d' ' -f14,15 /proc/$PBX/stat 2>/dev/null)"; sleep 1
  done ) >"$OUT/pbx_times.txt" 2>/dev/null &
cd "$HARNESS"
TARGET=127.0.0.1:5060 PBX_PID=$PBX OUT=$OUT python3 ./run.py "$@"
echo "appliance RSS at the end: $(ps -o rss= -p "$PBX") KiB" | tee -a "$OUT/pbx_rss.txt"
