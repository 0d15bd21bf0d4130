#!/usr/bin/env bash
# strata's GPU checks in one run on the device machine (see docs/gpu.md):
#   1. the CUDA tests of strata-tensor and strata-kernels (skip-free on a GPU);
#   2. weighted-sum bandwidth of every path against a device-to-device copy (f32, bf16);
#   3. nanoGPT's CPU recipe and its DenseFormer twin trained on CUDA (`strata demo`), and the
#      optimizer's share of a training step (AdamW; Muon with AdamW groups);
#   4. DenseFormer's step-time and memory overhead at 12/24/48 layers, 1x1 and 4x5, and at 12
#      layers every [model.depth] method's and bf16 autocast's (last: the longest step, so a
#      time limit cuts only its second round).
# Binaries come from `cargo xtask gpu-kit` (carried in .carry/gpu-kit). Results go to $OUT:
# results.jsonl (one JSON line per measurement, tagged by "check"), log.txt, and the demo
# runs' summaries, metrics and loss curves. `cargo xtask gpu-report DIR` turns them into
# docs/benchmarks-gpu.md. Every step has its own time limit and a failure never stops the
# rest; the script exits non-zero when any step failed. STRATA_GPU_DRY_RUN=1 runs the same
# steps on the CPU at toy sizes, to try the script and the report on a machine without a GPU.
set -u
KIT=${STRATA_GPU_KIT:-.carry/gpu-kit}
OUT=${OUT:?set OUT to the folder results go to}
RESULTS=$OUT/results.jsonl
LOG=$OUT/log.txt
FAILED=0
DEVICE=cuda SHAPE=8x1024x1024 DEPTHS="12 24 48" WIDTH=768 BLOCK=1024 DEMO_ITERS=()
OPTIMIZER_CONFIGS="nanogpt-cpu modern-cpu modern-gpu" OPTIMIZER_STEPS=20
if [ "${STRATA_GPU_DRY_RUN:-0}" = 1 ]; then
    DEVICE=cpu SHAPE=4x64x256 DEPTHS=12 WIDTH=128 BLOCK=64 DEMO_ITERS=(--iters 20)
    OPTIMIZER_CONFIGS="nanogpt-cpu modern-cpu" OPTIMIZER_STEPS=3
fi
: >"$RESULTS"
: >"$LOG"

# The torch lib folder: STRATA_TORCH_LIB_DIR, else the device machine's torch, else the
# environment `cargo xtask` caches.
torch_lib=${STRATA_TORCH_LIB_DIR:-$(ls -d /opt/torch/.venv/lib/python3*/site-packages/torch/lib \
    "${STRATA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/strata}"/torch-*/lib/python3*/site-packages/torch/lib \
    2>/dev/null | head -n1)}
if [ -z "$torch_lib" ] || [ ! -e "$torch_lib/libtorch_cpu.so" ]; then
    echo "no torch lib folder (set STRATA_TORCH_LIB_DIR): '$torch_lib'" | tee -a "$LOG"
    exit 2
fi
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ ! -x "$KIT/bin/strata" ]; then
    echo "no kit at $KIT: run \`cargo xtask gpu-kit\` and carry .carry/gpu-kit" | tee -a "$LOG"
    exit 2
fi

# The kit was built on another machine: stop at once (and say why) if its binaries cannot load
# there, e.g. a C library older than the one they were linked against.
if ! "$KIT/bin/strata" --help >/dev/null 2>>"$LOG"; then
    { echo "=== the kit's binaries do not run here:"; ldd "$KIT/bin/strata"; ldd --version | head -n1; } \
        >>"$LOG" 2>&1
    exit 3
fi

# One JSON line for results.jsonl: check name, then the given JSON object's fields.
record() { # check json
    printf '{"check": "%s", %s\n' "$1" "${2#\{}" >>"$RESULTS"
}

# Runs a step with a time limit, logging its output; records its exit status.
step() { # name limit_s command...
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*" >>"$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    record step "{\"name\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}"
    [ $rc -eq 0 ] || FAILED=1
    return $rc
}

# Runs a bench that prints JSON lines, with a time limit; records its exit status as a step
# and each line it printed under `check`.
bench() { # check name limit_s command...
    local check=$1 name=$2 limit=$3
    shift 3
    local start=$SECONDS lines rc
    lines=$(timeout "$limit" "$@" 2>>"$LOG")
    rc=$?
    record step "{\"name\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}"
    [ $rc -eq 0 ] || FAILED=1
    while IFS= read -r row; do [ -n "$row" ] && record "$check" "$row"; done <<<"$lines"
}

{
    echo "=== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    lscpu 2>/dev/null | grep -m1 'Model name'
    echo "torch lib: $torch_lib"
} >>"$LOG"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
record machine "{\"gpu\": \"${gpu:-none}\", \"torch_lib\": \"$torch_lib\"}"

# 1. Tests: every carried test binary, one at a time.
for test in "$KIT"/tests/*; do
    [ -x "$test" ] || continue
    step "test-$(basename "$test")" 300 "$test" --test-threads 1
done

# 2. Bandwidth: a stack beyond the GPU's L2 cache (13 x 8 x 1024 x 1024), both dtypes.
for dtype in f32 bf16; do
    bench bandwidth "bandwidth-$dtype" 120 "$KIT/bin/device_bandwidth" --device "$DEVICE" \
        --shape "$SHAPE" --dtype "$dtype"
done

# 3. The demo on CUDA (short, so it runs before the long overhead rounds): both runs, their
#    table and samples in the log.
demo=$(mktemp -d)
step demo 300 "$KIT/bin/strata" demo --device "$DEVICE" --out "$demo" "${DEMO_ITERS[@]}"
for run in nanogpt-cpu denseformer-cpu; do
    dir=$demo/$run
    [ -f "$dir/summary.json" ] && record demo "$(tr -d '\n' <"$dir/summary.json")"
    cp "$dir/metrics.jsonl" "$OUT/demo-$run-metrics.jsonl" 2>/dev/null
    cp "$dir/loss.png" "$OUT/demo-$run-loss.png" 2>/dev/null
done

# 3b. The optimizer's share of a step: forward + backward, clipping and the update timed
#     between device synchronisations, for the recipe (AdamW), the modern preset at the
#     recipe's size and modern-gpu (Muon on the hidden matrices, AdamW groups).
for config in $OPTIMIZER_CONFIGS; do
    bench optimizer "optimizer-$config" 120 "$KIT/bin/optimizer_share" --device "$DEVICE" \
        --config "configs/$config.toml" --steps "$OPTIMIZER_STEPS"
done

# 4. DenseFormer overhead: width 768 (12 heads), 8 x 1024 tokens, 10 steps, two rounds in
#    alternating order, one process per configuration; at 12 layers also every [model.depth]
#    method (first round only) and libtorch's bf16 autocast for the baseline and 1x1 (read
#    against f32).
overhead() { # layers args...
    local layers=$1
    shift
    local line rc
    line=$(timeout 180 "$KIT/bin/dwa_overhead" --device "$DEVICE" --layers "$layers" \
        --width "$WIDTH" --batch 8 --block "$BLOCK" --steps 10 "$@" 2>>"$LOG")
    rc=$?
    if [ $rc -eq 0 ] && [ -n "$line" ]; then
        record dwa "$line"
    else
        record step "{\"name\": \"dwa-$layers-${*// /-}\", \"rc\": $rc, \"seconds\": 0}"
        FAILED=1
    fi
}
DEPTH_METHODS="vres laurel-rw laurel-lr16 shc4 dhc4 mhc4 dmhc4 attnres attnres-b2 mudd"
for round in 1 2; do
    configs="none 1x1 4x5"
    [ $round -eq 2 ] && configs="4x5 1x1 none"
    for layers in $DEPTHS; do
        for dwa in $configs; do
            overhead "$layers" --dwa "$dwa"
        done
    done
    # One round of the depth methods keeps the script inside its device time.
    if [ $round -eq 1 ]; then
        for depth in $DEPTH_METHODS; do
            overhead 12 --depth "$depth"
        done
    fi
    for dwa in none 1x1; do
        overhead 12 --dwa "$dwa" --precision bf16_autocast
    done
done

echo "=== done, failed=$FAILED" >>"$LOG"
exit $FAILED
