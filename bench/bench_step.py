"""Training-step time of each RewardLoss estimator relative to plain cross-entropy.

Model: DeepLabV3 with a full-width ResNetV1c-18 backbone (upstream's
``deeplabv3_r50-d8.py`` with depth 18, ASPP 512->128 channels, FCN aux head
256->64 channels, BN instead of SyncBN, no pretrained weights), 19 classes.
Batch: ``--batch`` x 3 x ``--height`` x ``--width`` random images, random labels in
0..18 with ~10% ignore (255) pixels; one batch, preprocessed once, shared by every
variant.

A step = ``model(**data, mode='loss')`` -> ``model.parse_losses`` -> ``backward`` ->
``SGD.step``. Every variant has its own model (same initial weights) and optimizer.
After ``--warmup`` steps per variant, the variants run round-robin for ``--rounds``
rounds of ``--steps`` timed steps each (the order rotates every round), and the table
reports the median seconds/step, its ratio to CE, and the median over rounds of the
per-round ratio (paired, robust to slow drifts of a shared machine). On the CPU it runs
with one torch thread by default (``--threads 1``): with one thread per core, other jobs
on a small shared machine make the threads wait for each other and the step times swing
by 2-4x; ``--threads 0`` keeps torch's default.

Usage::

    python bench/bench_step.py                     # CPU, defaults as specified
    python bench/bench_step.py --threads 0         # CPU, torch's default thread count
    python bench/bench_step.py --device cuda --rounds 10 --steps 10

This is a report, not a test: it prints PASS/MISS against the targets and exits 0.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
import warnings

import torch
from _benchutil import select_device

import rewardseg  # noqa: F401  (compat layer first)

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

NUM_CLASSES = 19
IGNORE = 255

# name -> decode-head loss (None: upstream ASPPHead + CrossEntropyLoss)
VARIANTS = {
    "ce": None,
    "weighted_ce(a=0.1)": dict(type="RewardLoss", estimator="weighted_ce",
                               baseline="batch_loo", alpha=0.1),
    "reinforce k=2 rloo logits": dict(type="RewardLoss", estimator="reinforce",
                                      baseline="rloo", num_samples=2, sample_at="logits"),
    "reinforce k=2 rloo label": dict(type="RewardLoss", estimator="reinforce",
                                     baseline="rloo", num_samples=2, sample_at="label"),
    "reinforce k=4 rloo logits": dict(type="RewardLoss", estimator="reinforce",
                                      baseline="rloo", num_samples=4, sample_at="logits"),
}
# variant -> target ratio to CE
TARGETS = {
    "weighted_ce(a=0.1)": 1.05,
    "reinforce k=2 rloo logits": 1.10,
    "reinforce k=2 rloo label": 1.10,
}


CITYSCAPES_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "configs", "mmseg",
                                 "deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py")
# --model cityscapes: the estimators of configs/studies/cityscapes.yaml
CITYSCAPES_VARIANTS = {
    "ce": None,
    "weighted_ce(a=0.1)": VARIANTS["weighted_ce(a=0.1)"],
    "reinforce k=2 rloo logits": VARIANTS["reinforce k=2 rloo logits"],
    "reinforce second_sample": dict(type="RewardLoss", estimator="reinforce",
                                    baseline="second_sample", num_samples=1),
    "reinforce none": dict(type="RewardLoss", estimator="reinforce", baseline="none",
                           num_samples=1),
    "reinforce ema": dict(type="RewardLoss", estimator="reinforce", baseline="ema",
                          num_samples=1),
}


def cityscapes_config(height: int, width: int):
    """The Cityscapes study's model (R-50-D8, full width), random init, BN."""
    from mmengine.config import Config

    from rewardseg.train import prepare_config

    cfg = Config.fromfile(CITYSCAPES_CONFIG)
    cfg.model.pretrained = None
    cfg.model.data_preprocessor.size = (height, width)
    return prepare_config(cfg, "/tmp/rewardseg_bench_step")


def base_config(height: int, width: int):
    import mmseg
    from mmengine.config import Config

    from rewardseg.train import prepare_config

    path = os.path.join(os.path.dirname(mmseg.__file__),
                        ".mim/configs/_base_/models/deeplabv3_r50-d8.py")
    cfg = Config.fromfile(path)
    cfg.model.pretrained = None
    cfg.model.backbone.depth = 18
    cfg.model.decode_head.in_channels = 512
    cfg.model.decode_head.channels = 128
    cfg.model.decode_head.num_classes = NUM_CLASSES
    cfg.model.auxiliary_head.in_channels = 256
    cfg.model.auxiliary_head.channels = 64
    cfg.model.auxiliary_head.num_classes = NUM_CLASSES
    cfg.model.data_preprocessor.size = (height, width)
    # SyncBN -> BN (no process group here); also imports rewardseg.models.
    cfg = prepare_config(cfg, "/tmp/rewardseg_bench_step")
    return cfg


def model_config(cfg, loss):
    model = copy.deepcopy(cfg.model)
    if loss is not None:
        model["decode_head"]["type"] = "RewardASPPHead"
        model["decode_head"]["loss_decode"] = loss
    return model


def make_batch(model, batch: int, height: int, width: int, device):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)
    samples = []
    for _ in range(batch):
        label = torch.randint(0, NUM_CLASSES, (1, height, width), generator=g)
        label[torch.rand((1, height, width), generator=g) < 0.1] = IGNORE
        s = SegDataSample(metainfo=dict(img_shape=(height, width), pad_shape=(height, width),
                                        ori_shape=(height, width)))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(inputs), data_samples=samples), True)
    return data


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, optimizer, data):
    optimizer.zero_grad(set_to_none=True)
    losses = model(**data, mode="loss")
    total, _ = model.parse_losses(losses)
    total.backward()
    optimizer.step()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--model", choices=["r18", "cityscapes"], default="r18",
                        help="r18: the small benchmark model (default); cityscapes: the "
                             "Cityscapes study's R-50-D8 (defaults to batch 2 x 512 x 1024, "
                             "one GPU's share of upstream's 4xb2)")
    parser.add_argument("--batch", type=int, default=None, help="default 8 (r18), 2 (cityscapes)")
    parser.add_argument("--height", type=int, default=None, help="default 128 / 512")
    parser.add_argument("--width", type=int, default=None, help="default 256 / 1024")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant and round")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: far steadier on a shared, "
                             "busy machine; 0 = torch's default, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    big = args.model == "cityscapes"
    args.batch = args.batch or (2 if big else 8)
    args.height = args.height or (512 if big else 128)
    args.width = args.width or (1024 if big else 256)
    variants = CITYSCAPES_VARIANTS if big else VARIANTS

    device = select_device(args.device, args.threads)
    if device is None:
        return 2

    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = (cityscapes_config if big else base_config)(args.height, args.width)

    torch.manual_seed(args.seed)
    models, optimizers = {}, {}
    init_state = None
    for name, loss in variants.items():
        torch.manual_seed(args.seed)
        model = MODELS.build(model_config(cfg, loss)).to(device)
        if init_state is None:
            init_state = copy.deepcopy(model.state_dict())
        else:
            # RewardLoss adds its own (EMA) buffers; everything else must match.
            result = model.load_state_dict(init_state, strict=False)
            bad = [k for k in result.missing_keys if ".loss_decode." not in k]
            if bad or result.unexpected_keys:
                raise RuntimeError(f"{name}: state dict mismatch: missing {bad}, "
                                   f"unexpected {result.unexpected_keys}")
        model.train()
        models[name] = model
        optimizers[name] = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9,
                                           weight_decay=5e-4)
    data = make_batch(models["ce"], args.batch, args.height, args.width, device)

    model_name = ("DeepLabV3 R-50-D8 (the Cityscapes study's model)" if big else
                  "DeepLabV3 ResNetV1c-18 (ASPP 128 ch, FCN aux 64 ch)")
    print(f"bench_step: {model_name}, "
          f"{NUM_CLASSES} classes, batch {args.batch} x 3 x {args.height} x {args.width}, "
          f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs ({platform.machine()})")
    print(f"warm-up {args.warmup} step(s)/variant, then {args.rounds} rounds x "
          f"{args.steps} step(s)/variant, round-robin (order rotates each round)")
    sys.stdout.flush()

    names = list(variants)
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    for name in names:
        for _ in range(args.warmup):
            train_step(models[name], optimizers[name], data)
        sync(device)

    times = {name: [] for name in names}
    cpu_times = {name: [] for name in names}
    per_round = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            step_times = []
            for _ in range(args.steps):
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                train_step(models[name], optimizers[name], data)
                sync(device)
                step_times.append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - c0)
            times[name].extend(step_times)
            per_round[name].append(statistics.median(step_times))
    elapsed = time.perf_counter() - t_start

    med = {n: statistics.median(times[n]) for n in names}
    low = {n: min(times[n]) for n in names}
    cpu = {n: statistics.median(cpu_times[n]) for n in names}
    print()
    header = (f"{'variant':<27}{'median s/step':>14}{'ratio':>7}{'target':>8}  {'result':<6}"
              f"{'min s':>8}{'min ratio':>10}{'paired':>8}{'cpu s':>8}{'cpu ratio':>10}")
    print(header)
    print("-" * len(header))
    for name in names:
        ratio = med[name] / med["ce"]
        paired = statistics.median(v / c for v, c in zip(per_round[name], per_round["ce"]))
        target = TARGETS.get(name)
        if target is None:
            tgt, res = "-", "-"
        else:
            tgt, res = f"<={target:.2f}", "PASS" if ratio <= target else "MISS"
        print(f"{name:<27}{med[name]:>14.3f}{ratio:>7.3f}{tgt:>8}  {res:<6}"
              f"{low[name]:>8.3f}{low[name] / low['ce']:>10.3f}{paired:>8.3f}"
              f"{cpu[name]:>8.3f}{cpu[name] / cpu['ce']:>10.3f}")
    print()
    print("ratio: median s/step / CE's (PASS/MISS judged on it); min ratio: fastest step / "
          "CE's; paired: median over rounds of the per-round ratio to CE; cpu: process CPU "
          "seconds/step (all threads)")
    spread = {n: med[n] / low[n] for n in names}
    noisy = [n for n in names if spread[n] > 1.1]
    if noisy:
        print("WARNING: noisy timings (median/min > 1.1 for "
              + ", ".join(f"{n}: {spread[n]:.2f}" for n in noisy)
              + "); the machine was busy. Compare the min / paired / cpu columns, or rerun "
              "(more --rounds) when idle.")
    if device.type == "cpu":
        threads = torch.get_num_threads()
        util = sum(map(sum, cpu_times.values())) / sum(map(sum, times.values())) / threads
        print(f"CPU utilisation of the {threads} torch thread(s) while timed: {util:.0%}")
        if util < 0.75:
            hint = " --threads 1 is steadier on a shared machine." if threads > 1 else ""
            print("WARNING: the thread(s) did not get their cores (busy machine): absolute "
                  "times are inflated, and the ratios too if the load changed during the "
                  "run. Rerun when idle." + hint)
    print(f"total benchmark time (warm-up + timed): {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
