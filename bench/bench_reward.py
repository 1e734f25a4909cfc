"""Per-image mIoU reward: vectorised ``per_image_miou`` vs the original per-image loop.

Batch: ``--batch`` x ``--height`` x ``--width`` label maps, ``--classes`` classes
(default 8 x 512 x 1024 x 19, a Cityscapes crop). The ground truth is random with ~10%
ignore (255) pixels; the predictions are the argmax of random logits biased towards the
ground truth (so that IoUs are neither ~0 nor ~1). The argmax is computed once, outside
the timed region, and both implementations get the same predicted label maps; its own
time is reported for reference.

* ``loop``: written like the original study's code, i.e. mmseg's
  ``IoUMetric.intersect_and_union`` per image (boolean-mask indexing, three
  ``torch.histc``), ``.cpu()``, then the per-image ``nanmean`` of the IoUs.
* ``vectorised``: :func:`rewardseg.rewards.per_image_miou`, one bincount/scatter over
  the batch's per-image confusion matrices.

Both must agree (``allclose``, NaN == NaN); each is timed ``--repeats`` times, the two
alternating, and the median is reported. The CPU runs with one torch thread unless
``--threads`` says otherwise (0: torch's default), which is far steadier on a busy shared
machine. With ``--device cuda`` (if a GPU exists) the same is timed on the GPU, and
the vectorised reward plus a ``RewardLoss`` forward/backward (reinforce rloo k=2
sampled at the logits and at the labels, weighted_ce) run inside
``torch.cuda.set_sync_debug_mode("error")`` to show that reward and loss never sync
with the host.

Usage::

    python bench/bench_reward.py                  # CPU
    python bench/bench_reward.py --device cuda    # CPU and GPU + the sync check

A report, not a test: it prints PASS/MISS against the target (>= 2x on CPU) and exits 0.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

import rewardseg  # noqa: F401  (compat layer first)
from _benchutil import update_json
from rewardseg import rewards
from rewardseg.rewards import per_image_miou

IGNORE = 255
CPU_TARGET = 2.0
GPU_TARGET = 10.0
# GPU: bins spread over this many copies (rewards.CUDA_SLOTS is the default)
SLOTS = (1, 8, 32, 128)


def reference_miou(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                   ignore_index: int = IGNORE) -> torch.Tensor:
    """Per-image mIoU, one image at a time, as in the original study's code."""
    values = []
    for pred_label, label in zip(pred, gt):
        # mmseg IoUMetric.intersect_and_union
        mask = label != ignore_index
        pred_label = pred_label[mask]
        label = label[mask]
        intersect = pred_label[pred_label == label]
        area_intersect = torch.histc(intersect.float(), bins=num_classes, min=0,
                                     max=num_classes - 1).cpu()
        area_pred_label = torch.histc(pred_label.float(), bins=num_classes, min=0,
                                      max=num_classes - 1).cpu()
        area_label = torch.histc(label.float(), bins=num_classes, min=0,
                                 max=num_classes - 1).cpu()
        area_union = area_pred_label + area_label - area_intersect
        iou = (area_intersect / area_union).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN image -> NaN
            values.append(np.nanmean(iou))
    return torch.tensor(values, dtype=torch.float32)


def make_inputs(batch, classes, height, width, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    gt = torch.randint(0, classes, (batch, height, width), generator=g)
    gt[torch.rand((batch, height, width), generator=g) < 0.1] = IGNORE
    logits = torch.randn((batch, classes, height, width), generator=g)
    # bias towards the ground truth: ~half the valid pixels are right
    logits.scatter_add_(1, gt.clamp(max=classes - 1)[:, None],
                        torch.full((batch, 1, height, width), 2.0))
    return logits.to(device), gt.to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fns, device, repeats, warmup=1):
    """Median and min seconds of each function; the functions alternate every repeat
    (order rotating), so that a noisy shared machine slows them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(device)
    times = [[] for _ in fns]
    for r in range(repeats):
        order = list(range(len(fns)))
        order = order[r % len(fns):] + order[:r % len(fns)]
        for i in order:
            sync(device)
            t0 = time.perf_counter()
            fns[i]()
            sync(device)
            times[i].append(time.perf_counter() - t0)
    return [(statistics.median(t), min(t), t) for t in times]


def bench_device(device, args, target=None, methods=(None,)):
    """Time the loop and ``per_image_miou`` with each number of bin copies in ``methods``
    (``slots``; None: the device's default); returns a dict for the JSON report."""
    default = rewards.CUDA_SLOTS if device.type == "cuda" else 1
    methods = [default if m is None else m for m in methods]
    logits, gt = make_inputs(args.batch, args.classes, args.height, args.width, device)
    ((t_argmax, t_argmax_min, _),) = timeit([lambda: logits.argmax(dim=1)], device,
                                            args.repeats)
    pred = logits.argmax(dim=1)
    del logits

    ref = reference_miou(pred, gt, args.classes)
    for method in methods:
        vec = per_image_miou(pred, gt, args.classes, IGNORE, slots=method)
        ok = torch.allclose(vec.cpu(), ref, rtol=1e-5, atol=1e-6, equal_nan=True)
        max_diff = (vec.cpu().double() - ref.double()).abs().max().item()
        print(f"[{device}] allclose(slots={method}, loop): {ok} (max |diff| {max_diff:.2e})")
        assert ok, f"per_image_miou(slots={method}) disagrees with the per-image loop"
    print(f"[{device}] per-image mIoU: " + " ".join(f"{v:.4f}" for v in vec.cpu().tolist()))

    fns = [lambda: reference_miou(pred, gt, args.classes)]
    fns += [lambda m=m: per_image_miou(pred, gt, args.classes, IGNORE, slots=m)
            for m in methods]
    timed = timeit(fns, device, args.repeats)
    t_loop, t_loop_min, loop_all = timed[0]
    print()
    print(f"{'[' + str(device) + ']':<8}{'what':<44}{'median ms':>10}{'min ms':>10}"
          f"{'loop/this':>10}{'paired':>8}")
    print(f"{'':<8}{'argmax of logits (for reference)':<44}"
          f"{t_argmax * 1e3:>10.2f}{t_argmax_min * 1e3:>10.2f}")
    print(f"{'':<8}{'loop: histc per image + .cpu + nanmean':<44}"
          f"{t_loop * 1e3:>10.2f}{t_loop_min * 1e3:>10.2f}")
    report = dict(device=str(device), batch=args.batch, height=args.height, width=args.width,
                  classes=args.classes, loop_ms=t_loop * 1e3, default_slots=default,
                  methods={})
    for method, (t_vec, t_vec_min, vec_all) in zip(methods, timed[1:]):
        paired = statistics.median(a / b for a, b in zip(loop_all, vec_all))
        mark = " (default)" if method == default else ""
        print(f"{'':<8}{f'vectorised: per_image_miou slots={method}' + mark:<44}"
              f"{t_vec * 1e3:>10.2f}{t_vec_min * 1e3:>10.2f}{t_loop / t_vec:>10.2f}"
              f"{paired:>8.2f}")
        report["methods"][str(method)] = dict(median_ms=t_vec * 1e3, min_ms=t_vec_min * 1e3,
                                         speedup=t_loop / t_vec, paired_speedup=paired)
    ratio = report["methods"][str(default)]["speedup"]
    line = (f"[{device}] speed-up loop/vectorised (slots={default}): {ratio:.2f}x (ratio of "
            "medians)")
    if target is not None:
        line += f"  target >= {target:.1f}x: {'PASS' if ratio >= target else 'MISS'}"
        report["target"] = target
        report["pass"] = ratio >= target
    print(line)
    print()
    report["speedup"] = ratio
    return report


def sync_free_check(device, args):
    """Reward + RewardLoss forward/backward under sync debug mode "error"."""
    from rewardseg.models.losses import RewardLoss

    b, c, h, w = args.batch, args.classes, args.height, args.width
    g = torch.Generator(device="cpu").manual_seed(1)
    label = torch.randint(0, c, (b, h, w), generator=g)
    label[torch.rand((b, h, w), generator=g) < 0.1] = IGNORE
    label = label.to(device)
    # the decode head's raw logits are at 1/8 of the label resolution
    logits0 = torch.randn((b, c, h // 8, w // 8), generator=g).to(device)
    pred = torch.randint(0, c, (b, h, w), generator=g).to(device)

    checks = [("per_image_miou slots=1", 1),
              (f"per_image_miou slots={rewards.CUDA_SLOTS} (default)", None),
              ("RewardLoss reinforce rloo k=2 sample_at=logits",
               dict(loss="reinforce", baseline="rloo", num_samples=2,
                    sample_at="logits")),
              ("RewardLoss reinforce rloo k=2 sample_at=label",
               dict(loss="reinforce", baseline="rloo", num_samples=2,
                    sample_at="label")),
              ("RewardLoss reinforce rloo k=2 sample_at=logits normalize=pixel",
               dict(loss="reinforce", baseline="rloo", num_samples=2,
                    sample_at="logits", normalize="pixel")),
              ("RewardLoss reinforce greedy k=1 sample_at=logits",
               dict(loss="reinforce", baseline="greedy", num_samples=1)),
              ("RewardLoss reinforce batch_loo k=1 sample_at=logits",
               dict(loss="reinforce", baseline="batch_loo", num_samples=1, alpha=1.0)),
              ("RewardLoss reinforce ema k=1 sample_at=logits",
               dict(loss="reinforce", baseline="ema", num_samples=1)),
              ("RewardLoss weighted_ce alpha=0.1",
               dict(loss="weighted_ce", baseline="batch_loo", alpha=0.1)),
              ("RewardLoss local_expectation k=1 sample_at=logits",
               dict(loss="local_expectation", num_samples=1))]

    def run(kwargs, loss_mod):
        if loss_mod is None:
            return per_image_miou(pred, label, c, IGNORE, slots=kwargs)
        logits = logits0.clone().requires_grad_(True)
        out = loss_mod(logits, label, ignore_index=IGNORE)
        out.loss.backward()
        return logits.grad

    results = {}
    for name, kwargs in checks:
        loss_mod = (None if kwargs is None or isinstance(kwargs, int)
                    else RewardLoss(**kwargs).to(device).train())
        run(kwargs, loss_mod)  # warm-up outside the check (lazy CUDA/library init)
        torch.cuda.synchronize(device)
        try:
            torch.cuda.set_sync_debug_mode("error")
            try:
                run(kwargs, loss_mod)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize(device)
            print(f"[{device}] no host sync: {name}: OK")
            results[name] = "OK"
        except RuntimeError as err:
            print(f"[{device}] no host sync: {name}: ERROR: {err}")
            results[name] = f"ERROR: {str(err).splitlines()[0]}"
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu",
                        help="cpu (default); cuda[:i] additionally benchmarks the GPU "
                             "and checks the reward and losses for host syncs")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-cpu", action="store_true",
                        help="skip the CPU timing (with --device cuda: the GPU part only)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the numbers to FILE (key 'reward'; merged into "
                             "FILE if it exists, as bench/gpu_check.sh does)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: far steadier on a shared, "
                             "busy machine; 0 = torch's default, one per core)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"bench_reward: batch {args.batch} x {args.height} x {args.width}, "
          f"{args.classes} classes, {args.repeats} repeats (median), torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs "
          f"({platform.machine()})")
    print()
    report = {}
    if not args.no_cpu:
        report["cpu"] = bench_device(torch.device("cpu"), args, target=CPU_TARGET)

    device = torch.device(args.device)
    if device.type != "cuda":
        print("CUDA part skipped (run with --device cuda on a machine with a GPU)")
    elif not torch.cuda.is_available():
        print(f"CUDA part skipped: --device {args.device} given but no GPU is available "
              f"(torch {torch.__version__}, cuda {torch.version.cuda})")
    else:
        print(f"GPU: {torch.cuda.get_device_name(device)}")
        report["gpu"] = bench_device(device, args, target=GPU_TARGET, methods=SLOTS)
        # the reward of a reinforce step: k = 2 sampled maps per image
        twice = argparse.Namespace(**dict(vars(args), batch=2 * args.batch))
        print(f"[{device}] the same with {twice.batch} maps (k = 2 samples per image):")
        report["gpu_k2"] = bench_device(device, twice, methods=SLOTS)
        report["gpu"]["no_host_sync"] = sync_free_check(device, args)
    if args.json:
        update_json(args.json, lambda data: data.update(reward=report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
