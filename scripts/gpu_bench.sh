#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one short run (the `device` tool's machine: one NVIDIA GPU):
#   1. pre-flight (20 s): every Triton kernel variant compiled for this GPU's architecture, registers
#      and spills printed (scripts/check_gpu_kernels.py); if it fails, the fused runs are skipped;
#   2. CUDA tests of the fused LM and its fallback (kernels compiled, CUDA graphs) against the torch loop;
#   3. parity: fused vs torch LM at 1024x768, 5000 points, 4 and 64 hypotheses (poses, iterations, cost);
#   4. latency: network + all LM levels, median / p90 over 30 repeats (pixloc-ros bench), per LM path,
#      4 and 64 hypotheses, all iterations and with the stop rule;
#   5. the first frame of a fresh process (empty Triton cache) without and with Localizer.warm_up;
#   6. a node-like sequence of varying shapes (1-4 hypotheses, 800-5000 points) counting CUDA graph captures.
# Everything runs under one overall timeout (GPU_BENCH_BUDGET_S, default 470 s: under 8 minutes with
# the start-up), each step under its own share; one log and one JSON-lines file under OUT_DIR.
#
#   scripts/gpu_bench.sh [--cpu-smoke] [OUT_DIR]      (OUT_DIR defaults to $OUT)
#
# --cpu-smoke: the same steps with tiny sizes on the CPU (the fused path in Triton's interpreter, the
# pre-flight for sm_90): checks the script on a machine without a GPU; its figures mean nothing.
# Run from the repository root with the package importable (the venv, or PYTHONPATH=$PWD).
set -uo pipefail

smoke=0
if [[ "${1:-}" == "--cpu-smoke" ]]; then
    smoke=1
    shift
fi
out="${1:-${OUT:-}}"
if [[ -z "$out" ]]; then
    echo "usage: scripts/gpu_bench.sh [--cpu-smoke] [OUT_DIR]   (or set OUT)" >&2
    exit 2
fi
budget="${GPU_BENCH_BUDGET_S:-470}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# One overall timeout: the script re-runs itself under `timeout` once.
if [[ -z "${GPU_BENCH_INNER:-}" ]]; then
    export GPU_BENCH_INNER=1
    smoke_arg=()
    if (( smoke )); then smoke_arg=(--cpu-smoke); fi
    timeout --kill-after=10 "$budget" "$0" "${smoke_arg[@]}" "$out"
    rc=$?
    if (( rc == 124 || rc == 137 )); then
        echo "gpu_bench.sh: stopped by the overall timeout of ${budget} s" | tee -a "$out/gpu_bench.log" >&2
    fi
    exit "$rc"
fi

mkdir -p "$out"
log="$out/gpu_bench.log"
jsonl="$out/gpu_bench.jsonl"
: > "$log"
: > "$jsonl"
exec > >(tee -a "$log") 2>&1
deadline=$(( $(date +%s) + budget - 15 ))
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
python=(python3)
bench=("${python[@]}" "$here/gpu_bench.py")
smoke_flag=()
if (( smoke )); then
    smoke_flag=(--smoke)
    export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
fi

record() {  # record JSON: one line into the JSON-lines file
    printf '%s\n' "$1" >> "$jsonl"
}

step() {  # step NAME MAX_S CMD...: CMD under min(MAX_S, time left); its exit status, logged
    local name=$1 limit=$2
    shift 2
    local left=$(( deadline - $(date +%s) ))
    if (( left < limit )); then limit=$left; fi
    if (( limit < 5 )); then
        echo "== $name: skipped, out of time"
        record "{\"section\": \"step\", \"name\": \"$name\", \"skipped\": \"out of time\"}"
        return 124
    fi
    echo "== $name (at most ${limit} s)"
    local t0=$SECONDS rc=0
    timeout --kill-after=5 "$limit" "$@" || rc=$?
    echo "   $name: exit $rc after $(( SECONDS - t0 )) s"
    record "{\"section\": \"step\", \"name\": \"$name\", \"rc\": $rc, \"seconds\": $(( SECONDS - t0 ))}"
    return "$rc"
}

echo "gpu_bench.sh $(date -u +%FT%TZ) in $(pwd), out $out, budget ${budget} s$( (( smoke )) && echo ', CPU smoke run')"
git log -1 --oneline 2>/dev/null || true
if (( smoke )); then
    arch=90
else
    nvidia-smi -L || true
    arch=$("${python[@]}" -c "import torch; print('%d%d' % torch.cuda.get_device_capability())") || {
        echo "gpu_bench.sh: no CUDA device visible to torch"
        exit 1
    }
fi
"${python[@]}" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" || true

# 1. Pre-flight: compile every kernel variant for this GPU and print registers / spills.
paths=(torch fused)
if step preflight 20 "${python[@]}" "$here/check_gpu_kernels.py" --arch "$arch" --jobs 4 \
        --jsonl "$out/kernels.jsonl"; then
    sed 's/^{/{"section": "kernel", /' "$out/kernels.jsonl" >> "$jsonl"
else
    echo "   pre-flight failed: the fused runs are skipped, the torch LM is measured alone"
    paths=(torch)
fi

# 2. The suite's fused-LM tests on this device (compiled kernels, CUDA graphs).
if (( ! smoke )) && [[ " ${paths[*]} " == *" fused "* ]]; then
    step cuda-tests 120 "${python[@]}" -m pytest -q -x -p no:cacheprovider test/test_fused_lm.py \
        test/test_lm_guard.py || true
fi

# 3-6. Measurements (each appends its records to the JSON-lines file).
step parity 60 "${bench[@]}" parity --jsonl "$jsonl" --paths "${paths[@]}" "${smoke_flag[@]}" || true
step latency 180 "${bench[@]}" latency --jsonl "$jsonl" --paths "${paths[@]}" "${smoke_flag[@]}" || true
for warm in 0 1; do
    cache=$(mktemp -d)
    TRITON_CACHE_DIR="$cache" step "first-frame-warm-up-$warm" 45 "${bench[@]}" first-frame --warm-up "$warm" \
        --jsonl "$jsonl" "${smoke_flag[@]}" || true
    rm -rf "$cache"
done
step sequence 60 "${bench[@]}" sequence --jsonl "$jsonl" "${smoke_flag[@]}" || true

echo "== done: $(grep -c '' "$jsonl") records in $jsonl, log $log"
