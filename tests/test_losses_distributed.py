"""Several processes (gloo on the CPU, started with torch.multiprocessing): the reward
losses' global-batch baselines, one RNG stream per rank, the per-rank RNG checkpoint."""
import itertools
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rewardseg  # noqa: F401
from conftest import tiny_config
from rewardseg.models import hooks as hooks_module
from rewardseg.models.hooks import RNGStateHook
from rewardseg.models.losses import RewardLoss

# ----------------------------------------------------------------- helpers
B, C, H, W = 4, 3, 6, 8  # global batch of 4 images, 3 classes
LOSSES = {
    "reinforce_batch_loo_k1": dict(loss="reinforce", baseline="batch_loo", alpha=1.0,
                                   num_samples=1),
    "reinforce_batch_loo_k2": dict(loss="reinforce", baseline="batch_loo", alpha=0.5,
                                   num_samples=2),
    "reinforce_ema": dict(loss="reinforce", baseline="ema", num_samples=2),
    "weighted_ce_batch_loo": dict(loss="weighted_ce", baseline="batch_loo", alpha=1.0),
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(fn, world, *args):
    """Run ``fn(rank, world, port, *args)`` in ``world`` gloo processes."""
    mp.spawn(fn, args=(world, free_port(), *args), nprocs=world, join=True)


def init_gloo(rank, world, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def global_inputs():
    """Logits, labels and the uniforms the sampler draws, for the 4 images and 2 steps
    (a fixed generator: the same numbers in every process)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((2, B, C, H, W), generator=g)
    labels = torch.randint(0, C, (2, B, H, W), generator=g)
    labels[:, :, :2, :2] = 255
    # the uniforms for up to 2 samples per image, per step
    uniforms = torch.rand((2, B, H, W, 2), generator=g)
    return logits, labels, uniforms


def run_losses(offset, size):
    """Each loss of ``LOSSES`` on images ``offset:offset+size`` of the global batch, for
    two steps (the ema baseline needs a second); ``torch.rand`` is replaced by the
    images' fixed uniforms, so that one process and two see the same samples."""
    logits, labels, uniforms = global_inputs()
    real_rand = torch.rand
    out = {}
    for name, kwargs in LOSSES.items():
        loss_fn = RewardLoss(**kwargs)
        steps = []
        for step in range(2):
            def fake_rand(shape, **kw):
                b, h, w, k = shape
                return uniforms[step, offset:offset + size, :, :, :k].to(kw.get("dtype"))

            torch.rand = fake_rand
            try:
                x = logits[step, offset:offset + size].clone().requires_grad_(True)
                result = loss_fn(x, labels[step, offset:offset + size])
                result.loss.backward()
            finally:
                torch.rand = real_rand
            steps.append(dict(loss=result.loss.detach(), grad=x.grad,
                              stats={k: v.detach() for k, v in result.stats.items()}))
        out[name] = steps
    return out


class HookRunner:
    """What the distributed hooks read of mmengine's Runner."""

    def __init__(self, model, iteration=0):
        self.model = model
        self.iter = iteration
        self.hooks = []


def run_hooks(rank):
    """``SyncNormStatsHook`` and ``AverageLogVarsHook`` on rank-dependent values."""
    from rewardseg.models.hooks import AverageLogVarsHook, SyncNormStatsHook

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2),
                                torch.nn.SyncBatchNorm(2))
    bn, sync = model[1], model[2]
    bn.running_mean.fill_(rank + 1.0)
    bn.running_var.fill_(3.0 * (rank + 1))
    sync.running_mean.fill_(float(rank))  # SyncBN keeps its own (equal on real runs)
    hook = SyncNormStatsHook()
    runner = HookRunner(model, iteration=3)
    hook.before_train(runner)
    hook.before_val(runner)  # already equal at this iteration (weights just loaded)
    skipped = bn.running_mean.clone()
    runner.iter = 4
    hook.before_val(runner)
    outputs = {"loss": torch.tensor(1.0 + rank), "decode.reward_reward": torch.tensor(0.5 * rank)}
    AverageLogVarsHook().after_train_iter(runner, 0, outputs=outputs)
    return dict(skipped=skipped, mean=bn.running_mean.clone(), var=bn.running_var.clone(),
                sync=sync.running_mean.clone(), outputs=outputs)


def _loss_worker(rank, world, port, out_dir):
    init_gloo(rank, world, port)
    size = B // world
    result = run_losses(rank * size, size)
    result["hooks"] = run_hooks(rank)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """What ``_loss_worker`` computed in each of 2 gloo processes."""
    out = tmp_path_factory.mktemp("two_ranks")
    spawn(_loss_worker, 2, str(out))
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_global_batch_baselines_match_one_process(two_ranks):
    """2 processes x 2 images == 1 process x 4 images, for the baselines that use the
    other images of the batch (batch_loo of both estimators; ema's update): with the same
    samples, the same per-rank loss average, gradient and statistics (float rounding)."""
    ranks = two_ranks
    one = run_losses(0, B)
    for name in LOSSES:
        for step in range(2):
            ref, parts = one[name][step], [r[name][step] for r in ranks]
            # DDP averages the ranks' gradients: the mean of the local losses is the loss
            loss = torch.stack([p["loss"] for p in parts]).mean()
            torch.testing.assert_close(loss, ref["loss"], rtol=1e-6, atol=1e-7,
                                       msg=f"{name} step {step}")
            # each rank's loss is a mean over 2 images instead of 4: gradients x 2
            grad = torch.cat([p["grad"] for p in parts]) / 2
            torch.testing.assert_close(grad, ref["grad"], rtol=1e-5, atol=1e-8,
                                       msg=f"{name} step {step}")
            for key in ("reward", "adv_mean", "adv_sq"):  # means over equal-size halves
                got = torch.stack([p["stats"][key] for p in parts]).mean()
                torch.testing.assert_close(got, ref["stats"][key], rtol=1e-5, atol=1e-7,
                                           msg=f"{name} step {step} {key}")


def test_distributed_hooks_average_over_the_ranks(two_ranks):
    """``SyncNormStatsHook`` averages plain BN statistics (not SyncBN's, and not again
    at an iteration where they are known to be equal); ``AverageLogVarsHook`` turns the
    logged values into means over the ranks."""
    for rank, got in enumerate(r["hooks"] for r in two_ranks):
        assert torch.equal(got["skipped"], torch.full((2,), rank + 1.0))
        assert torch.equal(got["mean"], torch.full((2,), 1.5))
        assert torch.equal(got["var"], torch.full((2,), 4.5))
        assert torch.equal(got["sync"], torch.full((2,), float(rank)))
        assert got["outputs"]["loss"].item() == 1.5
        assert got["outputs"]["decode.reward_reward"].item() == 0.25


def test_batch_loo_without_gathering_differs():
    """The check above has teeth: a rank that used only its own 2 images for batch_loo
    gets another loss than the 4-image batch."""
    one = run_losses(0, B)["reinforce_batch_loo_k1"][0]
    halves = [run_losses(o, 2)["reinforce_batch_loo_k1"][0] for o in (0, 2)]
    assert not torch.allclose(torch.stack([h["loss"] for h in halves]).mean(), one["loss"],
                              rtol=1e-3)


# ----------------------------------------------------------------- one stream per rank
def _stream_worker(rank, world, port, data_root, work, out_dir):
    from mmengine.runner import Runner

    from rewardseg.train import init_cpu_process_group, prepare_config

    init_gloo(rank, world, port)
    cfg = tiny_config(data_root, batch_size=2)
    cfg = prepare_config(cfg, work, seed=3, launcher="pytorch")
    init_cpu_process_group("pytorch")
    runner = Runner.from_cfg(cfg)  # seeds random, numpy, torch (Runner.set_randomness)
    uniforms = torch.rand(16)
    loader = runner.build_dataloader(cfg.train_dataloader, seed=runner.seed,
                                     diff_rank_seed=runner._randomness_cfg["diff_rank_seed"])
    indices = list(itertools.islice(iter(loader.sampler), 6))
    torch.save(dict(seed=runner.seed, uniforms=uniforms, sampler_seed=loader.sampler.seed,
                    indices=indices, randomness=dict(cfg.randomness)),
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_each_rank_draws_its_own_stream_over_the_same_data_order(tiny_dataset, tmp_path):
    """Under ``prepare_config(launcher='pytorch')`` rank r is seeded with seed + r, so the
    ranks' ``torch.rand`` (the reward losses' samples) differ; the training sampler keeps
    the run's seed on every rank, so the global batch of every step holds the images one
    process's batch of 4 holds."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from rewardseg.train import prepare_config

    spawn(_stream_worker, 2, tiny_dataset, str(tmp_path / "work"), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["randomness"]["diff_rank_seed"] for r in ranks] == [True, True]
    assert [r["seed"] for r in ranks] == [3, 4]
    assert not torch.equal(ranks[0]["uniforms"], ranks[1]["uniforms"])
    assert [r["sampler_seed"] for r in ranks] == [3, 3]
    # one process, batch 4: the sampler mmengine builds for it
    cfg = prepare_config(tiny_config(tiny_dataset, batch_size=4), str(tmp_path / "one"),
                         seed=3)
    assert not cfg.randomness.get("diff_rank_seed")
    with DefaultScope.overwrite_default_scope("mmseg"):
        one = Runner.build_dataloader(cfg.train_dataloader, seed=3)
        other = Runner.build_dataloader(cfg.train_dataloader, seed=4)
    order = list(itertools.islice(iter(one.sampler), 12))
    for step in range(3):
        global_batch = sorted(ranks[0]["indices"][2 * step:2 * step + 2]
                              + ranks[1]["indices"][2 * step:2 * step + 2])
        assert global_batch == sorted(order[4 * step:4 * step + 4]), step
    # the data order is not trivially the same for every seed
    assert list(itertools.islice(iter(other.sampler), 12)) != order


def test_single_process_config_is_unchanged(tiny_dataset, tmp_path):
    from rewardseg.train import prepare_config

    cfg = prepare_config(tiny_config(tiny_dataset), str(tmp_path), seed=3)
    assert "diff_rank_seed" not in cfg.randomness
    assert "seed" not in cfg.train_dataloader.sampler
    assert "SyncNormStatsHook" not in {h["type"] for h in cfg.custom_hooks}


# ----------------------------------------------------------------- RNGStateHook formats
class FakeRunner:
    def __init__(self, iteration):
        self.iter = iteration
        self.hooks = []


@pytest.fixture
def warnings_logged(monkeypatch):
    messages = []
    monkeypatch.setattr(hooks_module, "print_log",
                        lambda msg, **kw: messages.append(msg))
    return messages


def resume_with(saved, iteration=4):
    """Draw 4 numbers after ``RNGStateHook`` resumed from a checkpoint holding ``saved``."""
    hook = RNGStateHook()
    hook.after_load_checkpoint(FakeRunner(iteration), {"rewardseg_rng": saved})
    torch.manual_seed(12345)  # what mmengine's re-seeding would leave
    hook.before_train(FakeRunner(iteration))
    return torch.rand(4)


def test_single_process_checkpoint_keeps_one_state_and_reads_the_old_format(
        warnings_logged):
    torch.manual_seed(7)
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(FakeRunner(3), checkpoint)
    saved = checkpoint["rewardseg_rng"]
    assert saved["world_size"] == 1 and len(saved["ranks"]) == 1
    expected = torch.rand(4)
    assert torch.equal(resume_with(saved), expected)
    # the format written before several ranks were kept: a bare state dict
    assert torch.equal(resume_with(dict(saved["ranks"][0])), expected)
    assert not warnings_logged
    # a plain load_from (iteration 0) keeps this run's seed
    got = resume_with(saved, iteration=0)
    torch.manual_seed(12345)
    assert torch.equal(got, torch.rand(4))


def test_checkpoint_of_another_world_size_restarts_the_streams(warnings_logged):
    torch.manual_seed(7)
    state = RNGStateHook._state()
    two = {"world_size": 2, "ranks": [state, state]}
    got = resume_with(two)
    torch.manual_seed(12345)
    assert torch.equal(got, torch.rand(4))  # nothing restored
    assert len(warnings_logged) == 1
    assert "2 process(es) but 1 are running" in warnings_logged[0]
    assert "restart" in warnings_logged[0]
