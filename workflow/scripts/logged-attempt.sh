#!/usr/bin/env bash
# logged-attempt.sh LOG ATTEMPTS COMMAND [ARG...]: run a training job's command, its stdout
# and stderr to LOG (the rule's log: snakemake removes it before each attempt) and appended
# to ATTEMPTS (no declared file: it keeps every attempt), after a header line naming the
# attempt, the SLURM job and the GPUs the job sees (the variables SLURM sets for them).
# File descriptor 3 (the progress lines, REWARDSEG_PROGRESS_FD) passes through untouched.
# Python's output is unbuffered, so an attempt killed (scancel, pre-emption, time limit)
# leaves everything it printed.
set -euo pipefail
log=$1
attempts=$2
shift 2
mkdir -p "$(dirname "$attempts")" "$(dirname "$log")"
n=$(( $(grep -c "^=== attempt " "$attempts" 2>/dev/null || true) + 1 ))
gpus=""
for var in CUDA_VISIBLE_DEVICES SLURM_JOB_GPUS SLURM_STEP_GPUS GPU_DEVICE_ORDINAL SLURM_GPUS_ON_NODE; do
    gpus+=" $var=${!var-unset}"
done
header="=== attempt $n, $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname), SLURM job ${SLURM_JOB_ID:-none} (requeued ${SLURM_RESTART_COUNT:-0}x),${gpus} ==="
export PYTHONUNBUFFERED=1
{ echo "$header"; "$@" 2>&1; } | tee -a "$attempts" > "$log"
