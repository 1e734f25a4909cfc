"""Run specs and their mmseg configs (rewardseg.runconfig): the tuning fields reach the
optimizer and the loss."""
import json
import os

import pytest

from conftest import REPO
from rewardseg.runconfig import build_run_config, tune_spec
from rewardseg.study import check_study, load_study


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
