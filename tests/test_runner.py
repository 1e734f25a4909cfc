"""The reward losses train a tiny DeepLabV3 through mmengine's Runner, save, resume."""
import glob
import os

import pytest
import torch

import rewardseg  # noqa: F401
from conftest import tiny_config
from rewardseg.train import prepare_config

ESTIMATOR_CFGS = {
    "weighted_ce": [dict(type="RewardLoss", estimator="weighted_ce", alpha=0.1)],
    "reinforce_rloo": [dict(type="RewardLoss", estimator="reinforce", baseline="rloo",
                            num_samples=2)],
    "reinforce_ema_label": [dict(type="RewardLoss", estimator="reinforce", baseline="ema",
                                 num_samples=1, sample_at="label", ce_weight=0.1)],
}


def run(cfg, work_dir, **kwargs):
    from mmengine.runner import Runner

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
    loss = [dict(type="RewardLoss", estimator="weighted_ce", loss_weight=float("nan"))]
    cfg = tiny_config(tiny_dataset, loss_decode=loss, max_iters=3, ckpt_interval=1)
    with pytest.raises(FloatingPointError, match="non-finite training loss nan at iteration 1"):
        run(cfg, tmp_path)
    assert not glob.glob(str(tmp_path / "iter_*.pth"))


def test_unknown_estimator_fails_at_build(tiny_dataset, tmp_path):
    from mmengine.runner import Runner

    loss = [dict(type="RewardLoss", estimator="reinfroce")]
    cfg = prepare_config(tiny_config(tiny_dataset, loss_decode=loss), str(tmp_path))
    with pytest.raises(ValueError, match="unknown estimator 'reinfroce'; valid: weighted_ce, reinforce"):
        Runner.from_cfg(cfg)
