#!/usr/bin/env bash
# The GPU check: what the Cityscapes configs and `rewardseg plan` need, measured on one GPU
# in about 5 minutes (an H100/H200; allow 8 on slower cards).
#
#   bash bench/gpu_check.sh                       # writes bench/measured/<gpu>.json
#   bash bench/gpu_check.sh path/to/out.json
#   rewardseg plan --configfile configs/studies/cityscapes-r18.yaml --measured bench/measured/<gpu>.json
#
# Runs with the python on PATH (activate the project's venv first, or set PYTHON=...).
#  1. bench_reward.py --device cuda: per-image mIoU, vectorised vs the per-image loop
#     (target >= 10x on the GPU), each counting method, and the reward and every RewardLoss
#     estimator's forward + backward under torch.cuda.set_sync_debug_mode("error").
#  2. bench_step.py for the R-50-D8 and R-18-D8 Cityscapes models: s/step and peak memory at
#     2 x 512x1024 (one GPU's share of 4 x 2) and 8 x 512x1024 (the global batch on one GPU),
#     CE and each estimator of the studies, fp32 and bf16.
#  3. channels-last at 8 x 512x1024 in bf16 (CE and rloo), to decide the switch.
# Each part's numbers go into one JSON file (`steps`: one row per model, batch, precision and
# loss; `reward`: the reward bench); a part that fails is reported and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

# GPU_CHECK_DEVICE=cpu GPU_CHECK_ARGS="--height 32 --width 64 --batch 2" runs the same
# parts on the CPU at toy sizes: a dry run of the script, no numbers worth keeping.
device=${GPU_CHECK_DEVICE:-cuda}
extra=${GPU_CHECK_ARGS:-}
if [ "$device" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PYTHON (torch: $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>&1))" >&2
    exit 2
fi
gpu=$("$PYTHON" -c "import torch, platform; print(torch.cuda.get_device_name(0) if '$device' == 'cuda' else 'cpu-' + platform.machine())")
slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]\+/-/g; s/^-//; s/-$//')
out=${1:-bench/measured/$slug.json}
mkdir -p "$(dirname "$out")"
tmp="$out.partial"
rm -f "$tmp"
commit=${GPU_CHECK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
"$PYTHON" - "$tmp" "$gpu" "$commit" <<'EOF'
import datetime, json, sys, torch
path, gpu, commit = sys.argv[1:]
json.dump({"schema": "rewardseg-gpu-check/1", "device": gpu, "torch": torch.__version__,
           "cuda": torch.version.cuda, "commit": commit,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "steps": []}, open(path, "w"), indent=1)
EOF
echo "gpu_check: $gpu, torch $("$PYTHON" -c 'import torch; print(torch.__version__)'), commit $commit -> $out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

failed=()
part() {  # part NAME COMMAND...: run one part, timed; remember a failure and go on
    local name=$1 t0=$SECONDS; shift
    echo; echo "=== $name"
    if ! "$@"; then failed+=("$name"); echo "=== $name: FAILED"; fi
    echo "=== $name: $((SECONDS - t0)) s"
}
# shellcheck disable=SC2086  # $extra: word-split on purpose
step() { "$PYTHON" bench/bench_step.py --device "$device" --threads 0 --warmup 2 --rounds 3 --steps 2 --json "$tmp" "$@" $extra; }
[ "$device" = cuda ] && reward_size="--no-cpu" || reward_size="--batch 2 --height 64 --width 128 --repeats 3"

part "reward (bench_reward.py)" "$PYTHON" bench/bench_reward.py --device "$device" --repeats 15 $reward_size --json "$tmp"
part "R-50-D8 steps" step --model cityscapes --batch 2,8 --precision fp32,bf16
part "R-18-D8 steps" step --model cityscapes-r18 --batch 2,8 --precision fp32,bf16
part "R-50-D8 channels-last" step --model cityscapes --batch 8 --precision bf16 --channels-last \
    --variants "reinforce k=2 rloo logits"

mv "$tmp" "$out"
echo
echo "gpu_check: wrote $out (${SECONDS} s in all)"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check: FAILED parts: ${failed[*]}" >&2
    exit 1
fi
