"""The reward losses train a tiny DeepLabV3 through mmengine's Runner, save, resume."""
import glob
import itertools
import os

import pytest
import torch

import rewardseg  # noqa: F401
from conftest import tiny_config
from rewardseg.train import prepare_config

ESTIMATOR_CFGS = {
    "weighted_ce": [dict(type="RewardLoss", loss="weighted_ce", alpha=0.1)],
    "reinforce_rloo": [dict(type="RewardLoss", loss="reinforce", baseline="rloo",
                            num_samples=2)],
    "reinforce_ema_label": [dict(type="RewardLoss", loss="reinforce", baseline="ema",
                                 num_samples=1, sample_at="label", ce_weight=0.1)],
    "local_expectation": [dict(type="RewardLoss", loss="local_expectation",
                               num_samples=1)],
}


_RUN_IDS = itertools.count()


def run(cfg, work_dir, **kwargs):
    from mmengine.runner import Runner

    # mmengine names a run's logger and message hub after the second it starts in: give
    # every run its own, so that two runs started in the same second do not share them
    if not cfg.get("experiment_name"):
        cfg.experiment_name = f"run-{os.getpid()}-{next(_RUN_IDS)}"
    cfg = prepare_config(cfg, str(work_dir), **kwargs)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def final_state(runner):
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(ESTIMATOR_CFGS))
def test_each_estimator_trains_and_logs_its_statistics(name, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, loss_decode=ESTIMATOR_CFGS[name], max_iters=2)
    runner = run(cfg, tmp_path)
    scalars = runner.message_hub.log_scalars
    for key in ("decode.loss_reward", "decode.reward_reward", "decode.reward_adv_std",
                "decode.reward_adv_sq", "aux.loss_ce"):
        assert f"train/{key}" in scalars, sorted(scalars)
    assert os.path.isfile(tmp_path / "iter_2.pth")
    before = torch.load(tmp_path / "iter_2.pth", weights_only=False)["state_dict"]
    assert any("decode_head" in k for k in before)


def test_aux_head_can_be_switched_off(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, loss_decode=ESTIMATOR_CFGS["reinforce_rloo"],
                      max_iters=1, aux=False)
    # mmengine names its message hub after the start second: keep this run's own
    cfg.experiment_name = f"aux-off-{os.getpid()}-{id(cfg)}"
    runner = run(cfg, tmp_path)
    assert not any("aux." in k for k in runner.message_hub.log_scalars)


def test_resume_continues_identically(tiny_dataset, tmp_path):
    """4 iterations straight == 2 iterations, a new process-like Runner resuming, 2 more."""
    loss = ESTIMATOR_CFGS["reinforce_ema_label"]
    straight = run(tiny_config(tiny_dataset, loss_decode=loss, max_iters=4), tmp_path / "a")
    expected = final_state(straight)

    run(tiny_config(tiny_dataset, loss_decode=loss, max_iters=4), tmp_path / "b")
    for path in glob.glob(str(tmp_path / "b" / "iter_4.pth")):
        os.remove(path)
    with open(tmp_path / "b" / "last_checkpoint", "w") as fh:
        fh.write(str(tmp_path / "b" / "iter_2.pth"))
    resumed = run(tiny_config(tiny_dataset, loss_decode=loss, max_iters=4), tmp_path / "b",
                  resume=True)
    assert resumed.iter == 4
    got = final_state(resumed)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    # the ema baseline buffer travelled with the checkpoint
    assert bool(got["decode_head.loss_decode.0.ema_initialized"])


def test_load_from_starts_a_fresh_schedule(tiny_dataset, tmp_path):
    ce = run(tiny_config(tiny_dataset, max_iters=2), tmp_path / "ce")
    tuned = run(tiny_config(tiny_dataset, loss_decode=ESTIMATOR_CFGS["weighted_ce"],
                            max_iters=1), tmp_path / "tune",
                load_from=str(tmp_path / "ce" / "iter_2.pth"))
    assert tuned.iter == 1
    assert ce.iter == 2


def test_non_finite_loss_stops_with_the_iteration(tiny_dataset, tmp_path):
    loss = [dict(type="RewardLoss", loss="weighted_ce", loss_weight=float("nan"))]
    cfg = tiny_config(tiny_dataset, loss_decode=loss, max_iters=3, ckpt_interval=1)
    with pytest.raises(FloatingPointError, match="non-finite training loss nan at iteration 1"):
        run(cfg, tmp_path)
    assert not glob.glob(str(tmp_path / "iter_*.pth"))


def test_unknown_estimator_fails_at_build(tiny_dataset, tmp_path):
    from mmengine.runner import Runner

    loss = [dict(type="RewardLoss", loss="reinfroce")]
    cfg = prepare_config(tiny_config(tiny_dataset, loss_decode=loss), str(tmp_path))
    with pytest.raises(ValueError, match="unknown loss 'reinfroce'; valid: weighted_ce, reinforce"):
        Runner.from_cfg(cfg)


@pytest.fixture(scope="module")
def ce_start(tiny_dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("ce_start")
    run(tiny_config(tiny_dataset, max_iters=2), work)
    return str(work / "iter_2.pth")


def decode_head_change(runner, start_path):
    """Relative L2 change of the decode head's weights from the start checkpoint."""
    start = torch.load(start_path, weights_only=False)["state_dict"]
    now = runner.model.state_dict()
    keys = [k for k in start if k.startswith("decode_head.") and k.endswith(".weight")
            and start[k].dtype.is_floating_point]
    diff = sum((now[k].cpu() - start[k]).pow(2).sum() for k in keys).sqrt()
    norm = sum(start[k].pow(2).sum() for k in keys).sqrt()
    return (diff / norm).item()


def tune_from(start, dataset, work, loss):
    cfg = tiny_config(dataset, loss_decode=loss, max_iters=2, aux=False)
    cfg.optim_wrapper.optimizer.weight_decay = 0.0
    cfg.experiment_name = f"moves-{os.path.basename(str(work))}-{os.getpid()}-{id(cfg)}"
    return decode_head_change(run(cfg, work, load_from=start), start)


@pytest.fixture(scope="module")
def ce_moved(ce_start, tiny_dataset, tmp_path_factory):
    return tune_from(ce_start, tiny_dataset, tmp_path_factory.mktemp("ce_moves"), None)


@pytest.mark.parametrize("name", sorted(ESTIMATOR_CFGS))
def test_tuning_moves_the_decode_head(name, ce_start, ce_moved, tiny_dataset, tmp_path):
    """From a CE checkpoint, 2 SGD steps at LR 0.01 without weight decay and without the
    auxiliary head (only the decode head's loss drives the model): the decode head's
    weights move, by at least 0.3 times what plain CE moves them. Measured: CE 1.9e-5,
    weighted_ce 1.5e-5, reinforce rloo 6.8e-5, reinforce ema at label resolution 3.9e-3
    (its first step has baseline 0); the per-pixel-mean reinforce loss (``normalize:
    pixel``, the old default) moved it 2.3e-6, 0.12 x CE, and fails this check."""
    moved = tune_from(ce_start, tiny_dataset, tmp_path, ESTIMATOR_CFGS[name])
    assert ce_moved > 1e-6
    assert moved > 0.3 * ce_moved, (moved, ce_moved)


def test_weight_change_is_the_relative_distance_from_the_start(ce_start, tiny_dataset, tmp_path):
    """``runner.weight_change`` (recorded in every tuning run's run.json): per part of the
    model, ‖θ − θ₀‖ / ‖θ₀‖ over its parameters; BN running statistics apart."""
    from rewardseg.runner import weight_change

    cfg = tiny_config(tiny_dataset, loss_decode=None, max_iters=2, aux=False)
    cfg.experiment_name = f"weight-change-{os.getpid()}"
    runner = run(cfg, tmp_path, load_from=ce_start)
    moved = weight_change(runner.model, ce_start)
    assert {"all", "backbone", "decode_head", "decode_head.conv_seg", "bn_statistics"} <= set(moved)
    start = torch.load(ce_start, weights_only=False)["state_dict"]
    params = dict(runner.model.named_parameters())
    keys = [k for k in params if k.startswith("decode_head.")]
    diff = sum(float((params[k].detach() - start[k]).double().pow(2).sum()) for k in keys)
    norm = sum(float(start[k].double().pow(2).sum()) for k in keys)
    assert moved["decode_head"] == pytest.approx((diff / norm) ** 0.5, rel=1e-9)
    assert moved["decode_head"] > 0 and moved["bn_statistics"] > 0


def test_a_runs_checkpoints_are_read_by_their_step(tmp_path):
    """``paths.checkpoints``: a run's ``iter_<n>.pth`` by step (a torn file set aside and
    other files left out), the inverse of ``paths.checkpoint``."""
    from rewardseg import paths

    run = str(tmp_path / "run[1]")  # a folder name with glob characters
    os.makedirs(run)
    for name in ("iter_10.pth", "iter_2.pth", "iter_4.pth.torn", "last_checkpoint", "x.pth"):
        open(os.path.join(run, name), "w").close()
    assert paths.checkpoints(run) == [(2, paths.checkpoint(run, 2)),
                                      (10, paths.checkpoint(run, 10))]
    assert paths.checkpoint_step(paths.checkpoint(run, 7)) == 7
    assert paths.checkpoint_step(os.path.join(run, "iter_4.pth.torn")) is None


def test_a_training_jobs_logs_are_named_in_paths():
    """One spelling per log (tests/workflow and logged-attempt.sh read these names)."""
    from rewardseg import paths

    assert paths.run_log("s", "v", 0) == "logs/s/v/seed0.log"
    assert paths.attempts_log(paths.run_log("s", "v", 0)) == "logs/s/v/seed0.attempts.log"
    assert paths.pretrain_log("s") == "logs/s/pretrain.log"
    assert paths.attempts_log(paths.pretrain_log("s", 500)) == \
        "logs/s/pretrain_part500.attempts.log"
    assert paths.collect_log("s", "v", 1) == "logs/s/collect/v_seed1.log"
    assert paths.dataset_log("d") == "logs/data/d.log"
    assert paths.class_weights_log("d", 0.05) == "logs/data/d_class_weights_s0.05.log"
