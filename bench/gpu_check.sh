#!/usr/bin/env bash
# The GPU check: one call at HEAD, about 8 minutes on one GPU (an H100 / H200), one JSON.
#
#   bash bench/gpu_check.sh                       # writes bench/measured/<gpu>.json
#   bash bench/gpu_check.sh path/to/out.json
#   bash bench/gpu_check.sh --device cpu OUT.json # the same parts at toy sizes on the CPU
#   rewardseg plan --configfile configs/studies/cityscapes-r18.yaml --measured bench/measured/<gpu>.json
#
# Runs with the python on PATH (activate the project's venv first, or set PYTHON=...).
# Parts, in this order, each under its own time limit; a part that fails or times out is
# reported (its message: the last lines of its output) and the others still run:
#  study     the GPU study on synthetic Cityscapes-format data (configs/studies/
#            gpu-synthetic.yaml, shortened: pretraining 300, tuning 100 steps; the CPU: the
#            study file's own reduced sizes) through the whole DAG in a copy of the
#            workflow; its wall time. Skipped, with that message, when the file is absent.
#  resume    the mixed-precision resume checks (pytest): bf16 / fp16 runs resumed vs
#            uninterrupted (tests/test_precision.py), and jobs SIGKILLed mid-run and
#            between a checkpoint and its validation (tests/test_resume_faults.py), with
#            deterministic algorithms on; each test's outcome and failure message.
#  gradients bench_gradients.py on the R-18-D8 and R-50-D8 Cityscapes models at 512x1024
#            (synthetic scenes; weights: a short CE warm-up on synthetic scenes from random
#            initialisation): the LR at which each estimator's update on the decode head
#            is as large as CE's ("lr_match").
#  reward    bench_reward.py: per-image mIoU, vectorised vs the per-image loop (target
#            >= 10x at 8 maps), and the reward and every RewardLoss estimator (the local
#            expectation included) under torch.cuda.set_sync_debug_mode("error").
#  steps-*   bench_step.py, s/step and peak memory, CE and each estimator incl. the local
#            expectation: R-50-D8 at 2 x 512x1024 fp32 (one GPU of the study's 4 x 2) and
#            8 x 512x1024 bf16 + channels-last; R-18-D8 at 8 x 512x1024 bf16 + channels-last
#            (its study's layout). GPU_CHECK_STEPS=full: also fp32 / bf16 at 2 and 8 images.
# The JSON (schema rewardseg-gpu-check/1): `steps` (what `rewardseg plan --measured` reads),
# `reward`, `gradients`, `resume`, `study`, and `checks`: one entry per part and per derived
# check (each host-sync check, the reward target, the local expectation's R-50 step time,
# each resume test) with status ok / failed / miss / skipped and, unless ok, its message;
# `failed` lists the failed ones. Exit status 1 when a part or check failed.
#
# Environment: GPU_CHECK_SKIP=study,steps (parts left out, recorded as skipped; `steps`,
# `gradients`: all their parts);
# GPU_CHECK_FAIL=<part> (that part fails on purpose: tests/test_gpu_check.py checks that
# its message reaches the JSON); GPU_CHECK_RESUME_K (pytest -k of the resume part);
# GPU_CHECK_COMMIT; GPU_CHECK_DEVICE (as --device).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
PYTHON=$(command -v "$PYTHON")
case $PYTHON in /*) ;; *) PYTHON="$PWD/$PYTHON" ;; esac  # the study runs in another folder
export PATH="$(dirname "$PYTHON"):$PATH"  # the workflow's jobs call `rewardseg`
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}  # deterministic cuBLAS

device=${GPU_CHECK_DEVICE:-cuda}
out=""
while [ $# -gt 0 ]; do
    case $1 in
        --device) device=$2; shift 2 ;;
        --device=*) device=${1#--device=}; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) out=$1; shift ;;
    esac
done
case $device in cuda|cpu) ;; *) echo "gpu_check: --device cuda or cpu, not $device" >&2; exit 2 ;; esac
if [ "$device" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PYTHON (torch: $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>&1)); --device cpu runs the toy sizes" >&2
    exit 2
fi
gpu=$("$PYTHON" -c "import torch, platform; print(torch.cuda.get_device_name(0) if '$device' == 'cuda' else 'cpu-' + platform.machine())")
slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]\+/-/g; s/^-//; s/-$//')
out=${out:-bench/measured/$slug.json}
mkdir -p "$(dirname "$out")"
tmp="$out.partial"
rm -f "$tmp"
logs=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
commit=${GPU_CHECK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | head -c 1)
"$PYTHON" - "$tmp" "$gpu" "$commit" "$device" "${dirty:+dirty}" <<'EOF'
import datetime, json, sys, torch
path, gpu, commit, device, dirty = sys.argv[1:]
json.dump({"schema": "rewardseg-gpu-check/1", "device": gpu, "device_type": device,
           "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
           "uncommitted_changes": bool(dirty),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "steps": [], "checks": []}, open(path, "w"), indent=1)
EOF
echo "gpu_check: $gpu ($device), torch $("$PYTHON" -c 'import torch; print(torch.__version__)'), commit $commit${dirty:+ (uncommitted changes)} -> $out"
[ "$device" = cuda ] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true; }

# record NAME STATUS SECONDS [MESSAGE]: one entry of `checks`
record() {
    "$PYTHON" - "$tmp" "$@" <<'EOF'
import json, sys
path, name, status, seconds = sys.argv[1:5]
message = sys.argv[5] if len(sys.argv) > 5 else ""
data = json.load(open(path))
entry = {"name": name, "kind": "part", "status": status, "seconds": int(seconds)}
if message:
    entry["message"] = message
data["checks"].append(entry)
json.dump(data, open(path, "w"), indent=1)
EOF
}

# part NAME LIMIT_S COMMAND...: run one part under `timeout`, its output to the console and
# to $logs/NAME.log; recorded as ok, failed (the last lines of its output) or skipped
part() {
    local name=$1 limit=$2 t0=$SECONDS rc; shift 2
    echo; echo "=== $name (limit ${limit} s)"
    case ",${GPU_CHECK_SKIP:-}," in
        *",$name,"*|*",${name%%-*},"*) echo "=== $name: skipped (GPU_CHECK_SKIP)"
                     record "$name" skipped 0 "skipped: GPU_CHECK_SKIP=${GPU_CHECK_SKIP}"; return ;;
    esac
    if [ "${GPU_CHECK_FAIL:-}" = "$name" ]; then
        set -- "$PYTHON" -c "raise SystemExit('gpu_check: injected failure of part $name (GPU_CHECK_FAIL)')"
    fi
    timeout --kill-after=10 "$limit" "$@" > >(tee "$logs/$name.log") 2>&1
    rc=$?
    sleep 0.2  # let tee finish
    if [ $rc -eq 0 ]; then
        record "$name" ok $((SECONDS - t0))
        echo "=== $name: ok, $((SECONDS - t0)) s"
    else
        local why="exit status $rc"
        [ $rc -eq 124 ] || [ $rc -eq 137 ] && why="timed out after $limit s"
        record "$name" failed $((SECONDS - t0)) "$why; last lines: $(tail -n 25 "$logs/$name.log")"
        echo "=== $name: FAILED ($why), $((SECONDS - t0)) s"
    fi
}

if [ "$device" = cuda ]; then
    study_args=(--config 'pretrain={iters: 300, checkpoint_interval: 150, eval_interval: 50}'
                'tuning={start: 150, iters: 100, eval_interval: 50}')
    resume_k=${GPU_CHECK_RESUME_K:-resumes_identically or mixed_precision}
    grad_args=(--size 512 1024 --batch 8 --steps 4 --warmup-iters 100 --warmup-size 256 512
               --warmup-batch 8 --warmup-lr 0.01)
    reward_args=(--no-cpu --repeats 15)
    step_args=(--warmup 2 --rounds 2 --steps 2)
    limits=(300 200 60 60 45)  # study, resume, gradients (each), reward, steps (each)
else
    study_args=(--config 'dataset={height: 32, width: 64, num_train: 8, num_val: 4}'
                'pretrain={iters: 4, checkpoint_interval: 2, eval_interval: 2, batch_size: 2}'
                'tuning={start: 2, iters: 2, eval_interval: 1, batch_size: 2}')
    resume_k=${GPU_CHECK_RESUME_K:-resumes_identically and bf16}
    grad_args=(--size 32 64 --batch 2 --steps 1 --warmup-iters 0)
    reward_args=(--batch 2 --height 64 --width 128 --repeats 3)
    step_args=(--warmup 1 --rounds 1 --steps 1 --height 32 --width 64 --batch 2)
    limits=(600 600 300 120 300)
fi

# ---------------------------------------------------------------- study
study_cfg=configs/studies/gpu-synthetic.yaml
if [ ! -f "$study_cfg" ]; then
    echo; echo "=== study: skipped ($study_cfg does not exist)"
    record study skipped 0 "skipped: $study_cfg does not exist at this commit"
else
    study_root="$logs/study"
    mkdir -p "$study_root"
    for f in Snakefile workflow configs paper profiles; do [ -e "$f" ] && cp -r "$f" "$study_root/"; done
    study_t0=$SECONDS
    part study "${limits[0]}" env -C "$study_root" "$PYTHON" -m snakemake --cores all \
        --configfile "$study_cfg" "${study_args[@]}"
    "$PYTHON" - "$tmp" "$study_root" "$study_cfg" $((SECONDS - study_t0)) "${study_args[@]}" <<'EOF'
import glob, json, os, sys
path, root, cfg, wall = sys.argv[1:5]
data = json.load(open(path))
status = data["checks"][-1]["status"]
figures = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "figures", "*", "*.png")))
runs = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "work", "*", "*", "seed*", "run.json")))
data["study"] = {"config": cfg, "overrides": sys.argv[5:], "status": status,
                 "wall_s": int(wall), "tune_runs": runs, "figures": len(figures),
                 "metrics_csv": any(glob.glob(os.path.join(root, "results", "*", "metrics.csv"))),
                 "slides": sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "paper", "build", "*", "*.html")))}
json.dump(data, open(path, "w"), indent=1)
EOF
fi

# ---------------------------------------------------------------- resume
part resume "${limits[1]}" "$PYTHON" -m pytest -q -p no:cacheprovider -rfE \
    tests/test_precision.py tests/test_resume_faults.py -k "$resume_k" \
    --junitxml "$logs/resume.xml"

# ---------------------------------------------------------------- gradients
for model in r18 r50; do
    case $model in r18) cfg=configs/studies/cityscapes-r18.yaml ;; r50) cfg=configs/studies/cityscapes.yaml ;; esac
    part "gradients-$model" "${limits[2]}" "$PYTHON" bench/bench_gradients.py --study "$cfg" \
        --terms cityscapes --head-only --device "$device" --threads 0 \
        --checkpoint "$logs/no-checkpoint.pth" "${grad_args[@]}" --json "$logs/gradients-$model.json"
done

# ---------------------------------------------------------------- reward
part reward "${limits[3]}" "$PYTHON" bench/bench_reward.py --device "$device" "${reward_args[@]}" --json "$tmp"

# ---------------------------------------------------------------- steps
# bench_step.py --batch given twice: the last wins (the CPU's toy batch, in step_args)
step=("$PYTHON" bench/bench_step.py --device "$device" --threads 0 --json "$tmp")
part steps-r50 "${limits[4]}" "${step[@]}" --model cityscapes --batch 2 --precision fp32 "${step_args[@]}"
part steps-r50-bf16-cl "${limits[4]}" "${step[@]}" --model cityscapes --batch 8 --precision bf16 \
    --channels-last "${step_args[@]}"
part steps-r18-bf16-cl "${limits[4]}" "${step[@]}" --model cityscapes-r18 --batch 8 --precision bf16 \
    --channels-last "${step_args[@]}"
if [ "${GPU_CHECK_STEPS:-}" = full ]; then
    part steps-r50-full "${limits[4]}" "${step[@]}" --model cityscapes --batch 2,8 --precision fp32,bf16 "${step_args[@]}"
    part steps-r18-full "${limits[4]}" "${step[@]}" --model cityscapes-r18 --batch 2,8 --precision fp32,bf16 "${step_args[@]}"
fi

# ---------------------------------------------------------------- derived checks
"$PYTHON" - "$tmp" "$logs" "$device" "$SECONDS" <<'EOF'
import glob, json, os, sys
import xml.etree.ElementTree as ET

path, logs, device, wall = sys.argv[1:]
data = json.load(open(path))
checks = data["checks"]


def check(name, status, message=""):
    entry = {"name": name, "kind": "check", "status": status}
    if message:
        entry["message"] = message
    checks.append(entry)


def part_status(name):
    return next((c["status"] for c in checks if c["name"] == name), "skipped")


# the resume tests, one check each, with pytest's failure message
xml = os.path.join(logs, "resume.xml")
data["resume"] = {"tests": {}}
if os.path.isfile(xml):
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        status = "failed" if bad is not None else "skipped" if skipped is not None else "ok"
        message = ""
        if bad is not None:
            message = (bad.get("message") or "") + "\n" + (bad.text or "")[-3000:]
        elif skipped is not None:
            message = skipped.get("message") or ""
        data["resume"]["tests"][name] = {"status": status, "seconds": float(case.get("time", 0)),
                                         **({"message": message.strip()} if message else {})}
        check(f"resume: {name}", status, message.strip())
    if not data["resume"]["tests"] and part_status("resume") != "skipped":
        check("resume: tests", "failed", "no resume test ran (pytest -k selected none)")
elif part_status("resume") != "skipped":
    check("resume: tests", "failed", "pytest wrote no report (see the resume part's message)")

# the matched learning rates
data["gradients"] = {}
for model, name in (("r18", "R-18-D8"), ("r50", "R-50-D8")):
    f = os.path.join(logs, f"gradients-{model}.json")
    if os.path.isfile(f):
        record = json.load(open(f))
        record["lr_match"] = {t: row.get("lr_match") for t, row in record["terms"].items()}
        data["gradients"][name] = record

# host syncs: every estimator and the reward
reward = data.get("reward") or {}
syncs = (reward.get("gpu") or {}).get("no_host_sync")
if device != "cuda":
    check("host sync", "skipped", "skipped: the host-sync check needs a GPU (--device cuda)")
elif syncs is None:
    check("host sync", "failed", "no host-sync results (the reward part did not finish)")
else:
    for what, result in syncs.items():
        check(f"host sync: {what}", "ok" if result == "OK" else "failed",
              "" if result == "OK" else result)

# the reward's speed-up at 8 maps (target >= 10x on a GPU)
gpu = reward.get("gpu")
if device != "cuda":
    check("reward speed-up >= 10x at 8 maps", "skipped", "skipped: a GPU target")
elif not gpu:
    check("reward speed-up >= 10x at 8 maps", "failed", "no GPU reward timing")
else:
    ok = gpu["speedup"] >= gpu.get("target", 10.0)
    check("reward speed-up >= 10x at 8 maps", "ok" if ok else "miss",
          "" if ok else f"{gpu['speedup']:.2f}x at {gpu['batch']} maps (loop {gpu['loop_ms']:.2f} ms)")

# the local expectation's step time on R-50-D8
rows = [r for r in data.get("steps", []) if r.get("loss") == "local_expectation"
        and "r50" in os.path.basename(r.get("model_config") or "")]
if part_status("steps-r50") == "skipped" and part_status("steps-r50-bf16-cl") == "skipped":
    check("local expectation step time, R-50-D8", "skipped", "skipped: the R-50 steps parts were")
elif not rows:
    check("local expectation step time, R-50-D8", "failed", "no R-50-D8 row of the local expectation in `steps`")
else:
    check("local expectation step time, R-50-D8", "ok")

data["failed"] = [c["name"] for c in checks if c["status"] == "failed"]
data["wall_s"] = int(wall)


def finite(value):  # NaN / inf (an undefined ratio) as null: strict JSON
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


json.dump(finite(data), open(path, "w"), indent=1, allow_nan=False)
print()
for c in checks:
    first = (c.get("message") or "").strip().splitlines()
    print(f"gpu_check: {c['status']:<8}{c['name']}" + (f": {first[0][:150]}" if first and c["status"] != "ok" else ""))
EOF

mv "$tmp" "$out"
echo
echo "gpu_check: wrote $out (${SECONDS} s in all; logs in $logs)"
failed=$("$PYTHON" -c "import json, sys; print(len(json.load(open(sys.argv[1]))['failed']))" "$out")
if [ "$failed" != 0 ]; then
    echo "gpu_check: $failed failed part(s) / check(s): see 'checks' in $out" >&2
    exit 1
fi
