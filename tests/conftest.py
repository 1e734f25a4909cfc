import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), OMP_NUM_THREADS="1")


def kill_after_first_checkpoint(cmd, work_dir, cwd, timeout=300):
    """Start ``cmd`` (a training run writing into ``work_dir``) in its own process group and
    SIGKILL the group once mmengine has written ``last_checkpoint`` (after the .pth: a kill
    between the two restarts from the start checkpoint, which is not what a resume test
    is about)."""
    import signal
    import time

    proc = subprocess.Popen(cmd, env=ENV, cwd=cwd, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    marker = os.path.join(str(work_dir), "last_checkpoint")
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def copy_workflow(dest):
    """What a snakemake run reads from the checkout (profiles/default: the defaults every
    run of this workflow gets)."""
    os.makedirs(dest, exist_ok=True)
    for name in ("Snakefile", "workflow", "configs", "paper", "profiles"):
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name))
        else:
            shutil.copy(src, dest)
    return str(dest)


def snakemake(cwd, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args],
                          cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(stdout):
    """Jobs per rule from the "Job stats" table snakemake prints (a dry run included)."""
    counts, in_stats = {}, False
    for line in stdout.splitlines():
        if line.startswith("Job stats"):
            in_stats = True
            continue
        parts = line.split()
        if in_stats and len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
            if parts[0] == "total":
                break
    return counts


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The whole DAG on the smoke study, once per session, in a copy of the workflow."""
    root = copy_workflow(tmp_path_factory.mktemp("smoke"))
    proc = snakemake(root, "--configfile", "configs/studies/smoke.yaml")
    with open(os.path.join(root, "console.log"), "w") as fh:  # what the user saw
        fh.write(proc.stdout + proc.stderr)
    return root




def write_label_dataset(root, n=4, h=32, w=64, classes=3, seed=0, split="train"):
    """Random images / label maps in the Cityscapes file layout."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img_dir = os.path.join(root, "leftImg8bit", split, "city")
    ann_dir = os.path.join(root, "gtFine", split, "city")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(n):
        label = rng.integers(0, classes, size=(h, w), dtype=np.uint8)
        label[: h // 4, : w // 4] = 255
        img = (rng.random((h, w, 3)) * 60).astype(np.uint8) + (label[..., None] % 255) * 50
        Image.fromarray(img.astype(np.uint8)).save(
            os.path.join(img_dir, f"city_{i:06d}_000000_leftImg8bit.png"))
        Image.fromarray(label).save(
            os.path.join(ann_dir, f"city_{i:06d}_000000_gtFine_labelTrainIds.png"))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tinydata"))
    write_label_dataset(root, split="train")
    write_label_dataset(root, n=2, seed=1, split="val")
    return root


def tiny_config(data_root, loss_decode=None, max_iters=4, ckpt_interval=2,
                aux=True, num_classes=3, batch_size=2):
    """A tiny DeepLabV3 (ResNetV1c-18 at quarter width) on ``data_root``."""
    import rewardseg  # noqa: F401
    from mmengine.config import Config

    cfg = Config.fromfile(os.path.join(REPO, "configs/mmseg/_base_/models/deeplabv3_r18-d8_small.py"))
    cfg.model.data_preprocessor.size = (32, 64)
    cfg.model.decode_head.num_classes = num_classes
    cfg.model.auxiliary_head.num_classes = num_classes
    if loss_decode is not None:
        cfg.model.decode_head.type = "RewardASPPHead"
        cfg.model.decode_head.loss_decode = loss_decode
    if not aux:
        cfg.model.auxiliary_head = None
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                dict(type="RandomFlip", prob=0.5), dict(type="PackSegInputs")]
    dataset = dict(type="BaseSegDataset", data_root=data_root,
                   metainfo=dict(classes=tuple(f"c{i}" for i in range(num_classes)),
                                 palette=[[i * 40, i * 40, i * 40] for i in range(num_classes)]),
                   img_suffix="_leftImg8bit.png", seg_map_suffix="_gtFine_labelTrainIds.png",
                   data_prefix=dict(img_path="leftImg8bit/train", seg_map_path="gtFine/train"),
                   pipeline=pipeline)
    cfg.merge_from_dict(dict(
        default_scope="mmseg",
        train_dataloader=dict(batch_size=batch_size, num_workers=0,
                              sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=dataset),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=10 ** 6),
        optim_wrapper=dict(type="OptimWrapper",
                           optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4)),
        param_scheduler=[dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=max_iters,
                              by_epoch=False)],
        default_hooks=dict(timer=dict(type="IterTimerHook"),
                           logger=dict(type="LoggerHook", interval=1, log_metric_by_epoch=False),
                           param_scheduler=dict(type="ParamSchedulerHook"),
                           checkpoint=dict(type="CheckpointHook", by_epoch=False,
                                           interval=ckpt_interval),
                           sampler_seed=dict(type="DistSamplerSeedHook")),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="gloo")),
        log_processor=dict(by_epoch=False),
        log_level="WARNING",
        randomness=dict(seed=0),
    ))
    return cfg
