#!/usr/bin/env bash
# Issue 14's GPU acceptance in one device call: the full-size FLUX.1 Kontext transformer with
# random bf16 weights, cocoflow (`cocoflow-worker bench-flux`) against diffusers + peft
# (`flux_pytorch.py`), interleaved in one session:
#   rollout 512² (+ one VAE decode): cocoflow, PyTorch; rollout 1024²: cocoflow, PyTorch;
#   NFT step (micro-batch 2 at 512²): cocoflow, PyTorch; then, if time is left, NFT at batch 8.
# Every JSON line goes to $OUT/flux_bench.jsonl, every log to $OUT/runs.log, the table of
# cocoflow ÷ PyTorch ratios to stdout and $OUT/summary.md.
#
# Run from the repository root with `.gpu/` (cocoflow-worker, flux_pytorch.py, flux_summary.py, this
# script) and `.whl/` (the diffusers wheel) carried:
#   bash .gpu/gpu_flux.sh
# Budget: it stops starting runs so as to end within BUDGET_S (default 420) seconds; a stage
# that would not fit is skipped and says so.
# A dry run of the control flow on a CPU (tiny model, small images):
#   FLUX_CONFIG=tiny FLUX_DEVICE=cpu FLUX_RES_LO=64 FLUX_RES_HI=128 PYTHON=.venv/bin/python \
#     OUT=/tmp/out bash bench/gpu_flux.sh
set -uo pipefail
CONFIG=${FLUX_CONFIG:-full}
DEVICE=${FLUX_DEVICE:-cuda}
RES_LO=${FLUX_RES_LO:-512}
RES_HI=${FLUX_RES_HI:-1024}
PYTHON=${PYTHON:-python3}

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/flux_bench_out}
mkdir -p "$OUT"
JSONL=$OUT/flux_bench.jsonl
LOG=$OUT/runs.log
: >"$JSONL"
: >"$LOG"
BUDGET_S=${BUDGET_S:-420}
START=$(date +%s)
now() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET_S - $(now))); }

echo "== setup (t=$(now)s)"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>&1 | tail -3
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
"$PYTHON" -c '
import torch, diffusers, peft, transformers
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
      f"device {gpu}; diffusers {diffusers.__version__} ({diffusers.__file__}); peft {peft.__version__}; "
      f"transformers {transformers.__version__}")'
TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
"$HERE/cocoflow-worker" bench-flux --help >/dev/null 2>>"$LOG" || { echo "cocoflow does not start:"; tail -5 "$LOG"; }
echo "setup done (t=$(now)s)"

# run NAME TIMEOUT_S CMD...: runs CMD with a timeout, appends its JSON lines to $JSONL (or an
# error line), its whole output to $LOG; prints the key figures and the wall time (LAST_WALL).
LAST_WALL=0
run() {
    local name=$1 limit=$2
    shift 2
    local t0 rc wall tmp
    if [ "$limit" -lt 15 ]; then
        echo "== $name SKIPPED: no time left (t=$(now)s)" | tee -a "$LOG"
        echo "{\"run\": \"$name\", \"error\": \"skipped: no time left\"}" >>"$JSONL"
        LAST_WALL=0
        return
    fi
    t0=$(date +%s)
    tmp=$(mktemp)
    echo "== $name (timeout ${limit}s, t=$(now)s): $*" | tee -a "$LOG"
    timeout -k 10 "$limit" "$@" >"$tmp" 2>>"$LOG"
    rc=$?
    wall=$(($(date +%s) - t0))
    cat "$tmp" >>"$LOG"
    grep '^{' "$tmp" >>"$JSONL"
    if [ $rc -ne 0 ]; then
        local why="exit $rc"
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then why="timeout after ${limit}s"; fi
        echo "{\"run\": \"$name\", \"error\": \"$why\"}" >>"$JSONL"
        echo "   FAILED: $why (last log lines below)"
        tail -4 "$LOG" | sed 's/^/   | /'
    fi
    grep '^{' "$tmp" | "$PYTHON" -c 'import sys, json
keep = ("images_per_s", "batch_s_median", "step_s_median", "decode_s", "peak_allocated_gib", "peak_reserved_gib")
for l in sys.stdin:
    v = json.loads(l)
    print("  ", v["impl"], v["phase"], {k: round(x, 4) if isinstance(x, float) else x for k, x in v.items() if k in keep})'
    echo "   wall ${wall}s"
    rm -f "$tmp"
    LAST_WALL=$wall
}

# the timeout of a run: at most NOMINAL, and no more than what is left minus RESERVE
limit() {
    local nominal=$1 reserve=$2 l
    l=$(($(left) - reserve))
    [ "$l" -gt "$nominal" ] && l=$nominal
    echo "$l"
}

SAME=(--config "$CONFIG" --dtype bf16 --k 12 --steps 10 --lora-rank 32 --lora-alpha 64 --json --device "$DEVICE")
RS=("$HERE/cocoflow-worker" bench-flux "${SAME[@]}")
PY=("$PYTHON" "$HERE/flux_pytorch.py" "${SAME[@]}")
R_LO=(--resolution "$RES_LO" --phase rollout,vae --rollout-warmup-steps 2 --rollout-repeats 2)
R_HI=(--resolution "$RES_HI" --phase rollout --rollout-warmup-steps 1 --rollout-repeats 1)
NFT=(--resolution "$RES_LO" --phase nft --nft-batch 2 --nft-warmup 1 --nft-repeats 3)
NFT8=(--resolution "$RES_LO" --phase nft --nft-batch 8 --nft-warmup 1 --nft-repeats 2)
NFT_RESERVE=150 # seconds kept for the NFT pair

run "cocoflow rollout $RES_LO" "$(limit 110 $((NFT_RESERVE + 100)))" "${RS[@]}" "${R_LO[@]}"
W=$LAST_WALL
run "pytorch rollout $RES_LO" "$(limit 130 $((NFT_RESERVE + 50)))" "${PY[@]}" "${R_LO[@]}"
W=$((W + LAST_WALL))
# 1024²: ~4.4× the FLOPs per step of 512², 11 steps instead of 22 (+ start-up): about 2.5× the
# 512² pair's wall time.
EST=$((W * 5 / 2 + 20))
if [ "$(left)" -gt $((EST + NFT_RESERVE)) ]; then
    run "cocoflow rollout $RES_HI" "$(limit 180 $((NFT_RESERVE + 40)))" "${RS[@]}" "${R_HI[@]}"
    run "pytorch rollout $RES_HI" "$(limit 200 "$NFT_RESERVE")" "${PY[@]}" "${R_HI[@]}"
else
    echo "== rollout ${RES_HI}² SKIPPED: $(left)s left, the pair needs ~${EST}s + ${NFT_RESERVE}s kept for NFT" | tee -a "$LOG"
    echo "{\"run\": \"rollout $RES_HI\", \"error\": \"skipped: not enough time left\"}" >>"$JSONL"
fi
run "cocoflow nft b2" "$(limit 75 40)" "${RS[@]}" "${NFT[@]}"
W=$LAST_WALL
run "pytorch nft b2" "$(limit 90 5)" "${PY[@]}" "${NFT[@]}"
W=$((W + LAST_WALL))
if [ "$(left)" -gt $((W * 2 + 30)) ]; then
    run "cocoflow nft b8" "$(limit 90 40)" "${RS[@]}" "${NFT8[@]}"
    run "pytorch nft b8" "$(limit 100 5)" "${PY[@]}" "${NFT8[@]}"
else
    echo "== nft batch 8 skipped: $(left)s left" | tee -a "$LOG"
fi

echo "== summary (t=$(now)s)"
"$PYTHON" "$HERE/flux_summary.py" "$JSONL" | tee "$OUT/summary.md"
nvidia-smi --query-gpu=memory.used,clocks.sm,power.draw,temperature.gpu --format=csv,noheader 2>/dev/null
echo "total $(now)s"
