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
from _benchutil import select_device, update_json

import rewardseg  # noqa: F401  (compat layer first)

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

NUM_CLASSES = 19
IGNORE = 255

# name -> decode-head loss (None: upstream ASPPHead + CrossEntropyLoss)
VARIANTS = {
    "ce": None,
    "weighted_ce(a=0.1)": dict(type="RewardLoss", loss="weighted_ce",
                               baseline="batch_loo", alpha=0.1),
    "reinforce k=2 rloo logits": dict(type="RewardLoss", loss="reinforce",
                                      baseline="rloo", num_samples=2, sample_at="logits"),
    "reinforce k=2 rloo label": dict(type="RewardLoss", loss="reinforce",
                                     baseline="rloo", num_samples=2, sample_at="label"),
    "reinforce k=4 rloo logits": dict(type="RewardLoss", loss="reinforce",
                                      baseline="rloo", num_samples=4, sample_at="logits"),
    "local_expectation k=1": dict(type="RewardLoss", loss="local_expectation",
                                  num_samples=1),
}
# variant -> target ratio to CE
TARGETS = {
    "weighted_ce(a=0.1)": 1.05,
    "reinforce k=2 rloo logits": 1.10,
    "reinforce k=2 rloo label": 1.10,
    "local_expectation k=1": 1.10,
}


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --model NAME -> the study model config it times (relative to the repository)
MODEL_CONFIGS = {
    "cityscapes": "configs/mmseg/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py",
    "cityscapes-r18": "configs/mmseg/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py",
    "default": "configs/mmseg/deeplabv3_r18-d8-small_synthstreet.py",
}
MODEL_NAMES = {"cityscapes": "R-50-D8", "cityscapes-r18": "R-18-D8",
               "default": "R-18-D8 quarter width (the default study's)"}
# --model -> (batch, height, width) by default: one GPU's share of upstream's 4 x 2, or
# the default study's tuning batch at its crop size
MODEL_SIZES = {"cityscapes": (2, 512, 1024), "cityscapes-r18": (2, 512, 1024),
               "default": (4, 96, 192)}
# --model cityscapes / cityscapes-r18: the estimators of the Cityscapes studies
CITYSCAPES_VARIANTS = {
    "ce": None,
    "weighted_ce(a=0.1)": VARIANTS["weighted_ce(a=0.1)"],
    "reinforce k=2 rloo logits": VARIANTS["reinforce k=2 rloo logits"],
    "reinforce second_sample": dict(type="RewardLoss", loss="reinforce",
                                    baseline="second_sample", num_samples=1),
    "reinforce greedy": dict(type="RewardLoss", loss="reinforce", baseline="greedy",
                             num_samples=1),
    "lovasz": dict(type="LovaszLoss", loss_type="multi_class", per_image=True,
                   reduction="none", loss_weight=1.0),
    "local_expectation k=1": VARIANTS["local_expectation k=1"],
}


def study_fields(loss) -> dict:
    """The study fields (loss, baseline, num_samples) of a variant's decode-head loss."""
    if loss is None:
        return dict(loss="ce", baseline=None, num_samples=None)
    if loss["type"] == "LovaszLoss":
        return dict(loss="lovasz", baseline=None, num_samples=None)
    return dict(loss=loss["loss"], baseline=loss.get("baseline"),
                num_samples=loss.get("num_samples") if loss["loss"] == "reinforce"
                else None)


def cityscapes_config(model: str, height: int, width: int):
    """A Cityscapes study's model (full width), random init, BN."""
    from mmengine.config import Config

    from rewardseg.train import prepare_config

    cfg = Config.fromfile(os.path.join(REPO, MODEL_CONFIGS[model]))
    cfg.model.pretrained = None
    if cfg.model.backbone.get("init_cfg") is not None:
        cfg.model.backbone.init_cfg = None
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


def static_bytes(model, optimizer) -> int:
    """Bytes a model holds between steps: parameters, gradients, buffers, optimizer state."""
    total = sum(p.numel() * p.element_size() * 2 for p in model.parameters())
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values()
                     if torch.is_tensor(v))
    return total


def make_batch(model, batch: int, height: int, width: int, device, classes=NUM_CLASSES):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)
    samples = []
    for _ in range(batch):
        label = torch.randint(0, classes, (1, height, width), generator=g)
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


def train_step(model, optimizer, data, precision="fp32", scaler=None):
    """One step; under bf16/fp16 like ``MixedPrecisionOptimWrapper`` (autocast around the
    forward pass, fp16 with a dynamic ``GradScaler``)."""
    optimizer.zero_grad(set_to_none=True)
    if precision == "fp32":
        losses = model(**data, mode="loss")
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        with torch.autocast(device_type=data["inputs"].device.type, dtype=dtype):
            losses = model(**data, mode="loss")
    total, _ = model.parse_losses(losses)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        optimizer.step()


def int_list(text: str):
    return [int(x) for x in text.split(",") if x]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--model", choices=["r18"] + sorted(MODEL_CONFIGS), default="r18",
                        help="r18: the small benchmark model (default); cityscapes: the "
                             "Cityscapes study's R-50-D8; cityscapes-r18: the R-18-D8 study's "
                             "(both default to batch 2 x 512 x 1024, one GPU's share of "
                             "upstream's 4xb2); default: the default study's model at its "
                             "tuning batch (4 x 96 x 192)")
    parser.add_argument("--batch", type=int_list, default=None,
                        help="images per step, or several: 2,8 (default 8 (r18), 2 (cityscapes))")
    parser.add_argument("--height", type=int, default=None, help="default 128 / 512")
    parser.add_argument("--width", type=int, default=None, help="default 256 / 1024")
    parser.add_argument("--precision", default="fp32",
                        help="fp32, bf16, fp16 or several: fp32,bf16 (autocast as in "
                             "MixedPrecisionOptimWrapper; fp16 with a GradScaler)")
    parser.add_argument("--channels-last", action="store_true",
                        help="model and inputs in channels-last memory format")
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset of the variants (default: all)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant and round")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: far steadier on a shared, "
                             "busy machine; 0 = torch's default, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE",
                        help="append the measurements to FILE's 'steps' list (JSON, created if "
                             "absent): what `rewardseg plan --measured FILE` reads")
    args = parser.parse_args(argv)
    big = args.model != "r18"
    size = MODEL_SIZES.get(args.model, (8, 128, 256))
    batches = args.batch or [size[0]]
    args.height = args.height or size[1]
    args.width = args.width or size[2]
    precisions = [p for p in args.precision.split(",") if p]
    bad = [p for p in precisions if p not in ("fp32", "bf16", "fp16")]
    if bad:
        parser.error(f"--precision: {bad[0]!r} is not one of fp32, bf16, fp16")
    variants = CITYSCAPES_VARIANTS if big else VARIANTS
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",")]
        unknown = [v for v in wanted if v not in variants]
        if unknown:
            parser.error(f"--variants: unknown {unknown[0]!r}; valid: {', '.join(variants)}")
        variants = {k: v for k, v in variants.items() if k in wanted or k == "ce"}

    device = select_device(args.device, args.threads)
    if device is None:
        return 2

    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = (cityscapes_config(args.model, args.height, args.width) if big
           else base_config(args.height, args.width))
    classes = cfg.model.decode_head.num_classes
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    if device.type == "cuda":  # as the training runs do (mmseg's env_cfg)
        torch.backends.cudnn.benchmark = bool(cfg.get("env_cfg", {}).get("cudnn_benchmark",
                                                                         False))

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
        model.to(memory_format=memory_format).train()
        models[name] = model
        optimizers[name] = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9,
                                           weight_decay=5e-4)

    model_name = (f"DeepLabV3 {MODEL_NAMES[args.model]} ({MODEL_CONFIGS[args.model]})" if big
                  else "DeepLabV3 ResNetV1c-18 (ASPP 128 ch, FCN aux 64 ch)")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"bench_step: {model_name}, {classes} classes, batch {batches} x 3 x "
          f"{args.height} x {args.width}, precision {precisions}"
          f"{', channels-last' if args.channels_last else ''}, device {device}"
          f"{f' ({gpu})' if gpu else ''}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs ({platform.machine()})")
    print(f"warm-up {args.warmup} step(s)/variant, then {args.rounds} rounds x "
          f"{args.steps} step(s)/variant, round-robin (order rotates each round)")
    sys.stdout.flush()

    rows = []
    t_start = time.perf_counter()
    for batch in batches:
        data = make_batch(models["ce"], batch, args.height, args.width, device, classes)
        data["inputs"] = data["inputs"].contiguous(memory_format=memory_format)
        fp32_median = {}
        for precision in precisions:
            scalers = {n: (torch.amp.GradScaler(device.type) if precision == "fp16" else None)
                       for n in variants}
            result = time_variants(models, optimizers, data, precision, scalers, args, device)
            print()
            print(f"batch {batch} x {args.height} x {args.width}, {precision}"
                  f"{', channels-last' if args.channels_last else ''}:")
            print_table(result, device)
            for name, r in result.items():
                if precision == "fp32":
                    fp32_median[name] = r["median"]
                rows.append(dict(
                    model_config=MODEL_CONFIGS.get(args.model), model=MODEL_NAMES.get(args.model,
                                                                                        "r18"),
                    batch_per_gpu=batch, height=args.height, width=args.width,
                    precision=precision, channels_last=bool(args.channels_last), variant=name,
                    **study_fields(variants[name]), seconds_per_step=r["median"],
                    min_seconds_per_step=r["min"], ratio_to_ce=r["median"] / result["ce"]["median"],
                    ratio_to_fp32=(r["median"] / fp32_median[name] if name in fp32_median
                                   else None),
                    peak_memory_gib=r.get("peak_gib"), device=gpu or platform.processor()
                    or platform.machine()))
            if precision != "fp32" and fp32_median:
                print("vs fp32 (median s/step ratio): " + ", ".join(
                    f"{n} {result[n]['median'] / fp32_median[n]:.2f}" for n in result
                    if n in fp32_median))
    elapsed = time.perf_counter() - t_start
    print()
    print("ratio: median s/step / CE's (PASS/MISS judged on it); min ratio: fastest step / "
          "CE's; paired: median over rounds of the per-round ratio to CE; cpu: process CPU "
          "seconds/step (all threads); peak GiB (GPU): the model's parameters, gradients, "
          "buffers and optimizer state + the step's largest transient allocation")
    print(f"total benchmark time (warm-up + timed): {elapsed:.1f} s")
    if args.json:
        write_rows(args.json, rows, gpu)
    return 0


def time_variants(models, optimizers, data, precision, scalers, args, device) -> dict:
    """Warm-up, then round-robin timing of every variant at one precision."""
    names = list(models)
    torch.manual_seed(args.seed)
    for name in names:
        for _ in range(args.warmup):
            train_step(models[name], optimizers[name], data, precision, scalers[name])
        sync(device)
    times = {name: [] for name in names}
    cpu_times = {name: [] for name in names}
    per_round = {name: [] for name in names}
    transient = {name: 0 for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            step_times = []
            for _ in range(args.steps):
                sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                t0, c0 = time.perf_counter(), time.process_time()
                train_step(models[name], optimizers[name], data, precision, scalers[name])
                sync(device)
                step_times.append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - c0)
                if device.type == "cuda":
                    transient[name] = max(transient[name],
                                          torch.cuda.max_memory_allocated(device) - base)
            times[name].extend(step_times)
            per_round[name].append(statistics.median(step_times))
    out = {}
    for name in names:
        out[name] = dict(median=statistics.median(times[name]), min=min(times[name]),
                         cpu=statistics.median(cpu_times[name]),
                         paired=statistics.median(
                             v / c for v, c in zip(per_round[name], per_round["ce"])),
                         wall_total=sum(times[name]), cpu_total=sum(cpu_times[name]))
        if device.type == "cuda":
            out[name]["peak_gib"] = (static_bytes(models[name], optimizers[name])
                                     + transient[name]) / 2 ** 30
    return out


def print_table(result: dict, device) -> None:
    ce = result["ce"]
    header = (f"{'variant':<27}{'median s/step':>14}{'ratio':>7}{'target':>8}  {'result':<6}"
              f"{'min s':>8}{'min ratio':>10}{'paired':>8}{'cpu s':>8}{'cpu ratio':>10}"
              + (f"{'peak GiB':>10}" if device.type == "cuda" else ""))
    print(header)
    print("-" * len(header))
    for name, r in result.items():
        ratio = r["median"] / ce["median"]
        target = TARGETS.get(name)
        if target is None:
            tgt, res = "-", "-"
        else:
            tgt, res = f"<={target:.2f}", "PASS" if ratio <= target else "MISS"
        print(f"{name:<27}{r['median']:>14.3f}{ratio:>7.3f}{tgt:>8}  {res:<6}"
              f"{r['min']:>8.3f}{r['min'] / ce['min']:>10.3f}{r['paired']:>8.3f}"
              f"{r['cpu']:>8.3f}{r['cpu'] / ce['cpu']:>10.3f}"
              + (f"{r['peak_gib']:>10.2f}" if "peak_gib" in r else ""))
    spread = {n: r["median"] / r["min"] for n, r in result.items()}
    noisy = [n for n in result if spread[n] > 1.1]
    if noisy:
        print("WARNING: noisy timings (median/min > 1.1 for "
              + ", ".join(f"{n}: {spread[n]:.2f}" for n in noisy)
              + "); the machine was busy. Compare the min / paired / cpu columns, or rerun "
              "(more --rounds) when idle.")
    if device.type == "cpu":
        threads = torch.get_num_threads()
        util = (sum(r["cpu_total"] for r in result.values())
                / sum(r["wall_total"] for r in result.values()) / threads)
        print(f"CPU utilisation of the {threads} torch thread(s) while timed: {util:.0%}")
        if util < 0.75:
            hint = " --threads 1 is steadier on a shared machine." if threads > 1 else ""
            print("WARNING: the thread(s) did not get their cores (busy machine): absolute "
                  "times are inflated, and the ratios too if the load changed during the "
                  "run. Rerun when idle." + hint)


def write_rows(path: str, rows: list, device_name) -> None:
    """Append ``rows`` to the ``steps`` list of the JSON file ``path``."""
    def update(data):
        data.setdefault("schema", "rewardseg-gpu-check/1")
        if device_name:
            data.setdefault("device", device_name)
        data.setdefault("torch", torch.__version__)
        data.setdefault("steps", []).extend(rows)

    update_json(path, update)


if __name__ == "__main__":
    sys.exit(main())
