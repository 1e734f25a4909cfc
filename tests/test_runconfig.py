"""Run specs and their mmseg configs (rewardseg.runconfig): the tuning fields reach the
optimizer and the loss."""
import json
import os

import pytest

from conftest import REPO
from rewardseg import paths
from rewardseg.runconfig import build_run_config, pretrain_spec, tune_spec
from rewardseg.study import check_study, load_study

NUM_CLASSES = 8  # the smoke study's model
WEIGHTS = [0.5, 1.0, 1.5, 2.0, 0.25, 0.75, 1.25, 0.75]


@pytest.fixture()
def study():
    return load_study(os.path.join(REPO, "configs/studies/smoke.yaml"))


def run_config(study, tmp_path, **fields):
    study["variants"]["probe"] = dict(fields)
    check_study(study)
    spec = tune_spec(study, "probe", 0, work_dir=str(tmp_path / "work"),
                     data_dir=str(tmp_path / "data"))
    os.makedirs(spec["data_root"], exist_ok=True)
    with open(os.path.join(spec["data_root"], "meta.json"), "w") as fh:
        json.dump({}, fh)
    return build_run_config(spec)


def test_default_is_the_model_configs_sgd_and_image_normalisation(study, tmp_path):
    cfg = run_config(study, tmp_path)
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == "SGD" and opt.lr == study["tuning"]["lr"] and opt.momentum == 0.9
    (loss,) = cfg.model.decode_head.loss_decode
    assert loss["type"] == "RewardLoss" and loss["normalize"] == "image"


def test_adamw_and_weight_decay(study, tmp_path):
    cfg = run_config(study, tmp_path, optimizer="adamw", lr=3e-5)
    opt = cfg.optim_wrapper.optimizer
    assert (opt["type"], opt["lr"], opt["weight_decay"]) == ("AdamW", 3e-5, 0.01)
    cfg = run_config(study, tmp_path, optimizer="sgd", weight_decay=0.0)
    assert cfg.optim_wrapper.optimizer.type == "SGD"
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.0


def test_pixel_normalisation_and_greedy_reach_the_loss(study, tmp_path):
    cfg = run_config(study, tmp_path, normalize="pixel", baseline="greedy", num_samples=1)
    (loss,) = cfg.model.decode_head.loss_decode
    assert (loss["normalize"], loss["baseline"], loss["num_samples"]) == ("pixel", "greedy", 1)


def write_data_root(root, smoothing=None):
    """meta.json, and a class-weight file for ``smoothing``: what the data rules write."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "meta.json"), "w") as fh:
        json.dump({}, fh)
    if smoothing is not None:
        with open(paths.class_weights(root, smoothing), "w") as fh:
            json.dump({"weights": WEIGHTS, "smoothing": smoothing}, fh)


def smoke_pretrain_spec(data_root):
    """The smoke pretraining's spec as it was before pretrain.class_weight_smoothing."""
    return dict(
        stage="pretrain", study="smoke", variant="pretrain", seed=0,
        model_config="configs/mmseg/deeplabv3_r18-d8-small_synthstreet.py",
        data_root=data_root, iters=8, eval_interval=4, checkpoint_interval=4, batch_size=2,
        lr=0.01, min_lr=0.0001, loss="ce", aux_head=True, class_weight_smoothing=None,
        load_from=None, precision="fp32", channels_last=False, released=None)


PLAIN_CE = [dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)]


@pytest.mark.parametrize("key", ["absent", "null"])
def test_pretraining_without_class_weights_is_unchanged(study, tmp_path, key):
    if key == "null":
        study["pretrain"]["class_weight_smoothing"] = None
        check_study(study)
    data_dir = str(tmp_path / "data")
    spec = pretrain_spec(study, data_dir=data_dir)
    expected = smoke_pretrain_spec(os.path.join(data_dir, "synthsmoke"))
    assert json.dumps(spec) == json.dumps(expected)  # same keys, same order, same values
    write_data_root(spec["data_root"])
    spec["model_config"] = os.path.join(REPO, spec["model_config"])
    cfg = build_run_config(spec)
    assert cfg.model.decode_head.type == "ASPPHead"
    assert cfg.model.decode_head.loss_decode == PLAIN_CE


def test_pretraining_class_weights_reach_the_decode_heads_ce(study, tmp_path):
    study["pretrain"]["class_weight_smoothing"] = 0.05
    check_study(study)
    spec = pretrain_spec(study, data_dir=str(tmp_path / "data"))
    assert spec["class_weight_smoothing"] == 0.05
    assert spec["class_weight"] == paths.class_weights(spec["data_root"], 0.05)
    write_data_root(spec["data_root"], 0.05)
    spec["model_config"] = os.path.join(REPO, spec["model_config"])
    cfg = build_run_config(spec)
    (loss,) = cfg.model.decode_head.loss_decode
    assert loss == dict(type="MaskedCrossEntropyLoss", use_sigmoid=False, loss_weight=1.0,
                        class_weight=WEIGHTS)
    # the auxiliary head keeps the model config's plain CE
    aux = cfg.model.auxiliary_head.loss_decode
    assert aux["type"] == "CrossEntropyLoss" and "class_weight" not in aux
    # and the tuning runs' specs do not inherit it
    tune = tune_spec(study, "control", 0, work_dir=str(tmp_path / "work"),
                     data_dir=str(tmp_path / "data"))
    assert tune["class_weight"] is None


def _model_losses(cfg, label):
    """The losses and log variables of the config's model on one random batch."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    samples = []
    for lbl in label:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=lbl[None])
        sample.set_metainfo(dict(img_shape=tuple(lbl.shape), pad_shape=tuple(lbl.shape)))
        samples.append(sample)
    inputs = torch.randn(label.shape[0], 3, *label.shape[-2:])
    losses = model.loss(inputs, samples)
    loss, log_vars = model.parse_losses(losses)
    return loss, log_vars


def _label(h=48, w=96):
    import torch

    label = torch.randint(0, NUM_CLASSES, (2, h, w))
    label[0, :8] = 255
    return label


def test_class_weighted_ce_trains_on_labels_with_ignored_pixels(study, tmp_path):
    """``loss: ce`` with class weights: both heads' losses on a batch with 255 labels (it
    failed at the first iteration with mmseg's CE)."""
    import math

    study["variants"]["probe"] = dict(loss="ce", class_weight_smoothing=0.05)
    check_study(study)
    spec = tune_spec(study, "probe", 0, work_dir=str(tmp_path / "work"),
                     data_dir=str(tmp_path / "data"))
    write_data_root(spec["data_root"], 0.05)
    spec["model_config"] = os.path.join(REPO, spec["model_config"])
    cfg = build_run_config(spec)
    assert cfg.model.decode_head.loss_decode[0]["type"] == "MaskedCrossEntropyLoss"
    loss, log_vars = _model_losses(cfg, _label())
    assert {"decode.loss_ce", "aux.loss_ce"} <= set(log_vars)
    assert math.isfinite(loss.item())


def test_reward_statistics_names_in_the_training_log(study, tmp_path):
    """What ValMetricsRecorder records (the model's log variables, verbatim) and
    results.aggregate writes to train_stats.csv's ``stat`` column."""
    for loss_name in ("reinforce", "local_expectation", "weighted_ce"):
        cfg = run_config(study, tmp_path, loss=loss_name)
        _, log_vars = _model_losses(cfg, _label())
        for stat in ("reward", "miou_train", "adv_mean", "adv_std", "adv_sq",
                     "reward_argmax", "entropy"):
            assert f"decode.reward_{stat}" in log_vars, (loss_name, stat, sorted(log_vars))
        assert "decode.reward_reward_argmax" in log_vars and "decode.reward_entropy" in log_vars
        # statistics are never summed into the loss (no 'loss' in their names)
        assert [k for k in log_vars if "loss" in k] == ["loss", "decode.loss_reward",
                                                        "aux.loss_ce"]
