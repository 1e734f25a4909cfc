"""The arithmetic of bench/bench_gradients.py on a tiny batch (one step, a few seconds)."""
import importlib.util
import math
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "mmseg", "deeplabv3_r18-d8-small_synthstreet.py")


def load_bench():
    # as when run as `python bench/bench_gradients.py`: its folder is on sys.path
    bench_dir = os.path.join(REPO, "bench")
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    spec = importlib.util.spec_from_file_location(
        "bench_gradients", os.path.join(REPO, "bench", "bench_gradients.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


def tiny_model_and_batch(height=32, width=64, batch=2, classes=8):
    from mmengine.config import Config
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    from rewardseg.train import prepare_config

    register_all_modules()
    cfg = Config.fromfile(CONFIG)
    cfg.model.data_preprocessor.size = (height, width)
    cfg = prepare_config(cfg, "/tmp/rewardseg_test_bench_gradients")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(batch):
        s = SegDataSample(metainfo=dict(img_shape=(height, width), pad_shape=(height, width),
                                        ori_shape=(height, width)))
        # no ignore pixels: every image has the same number of valid pixels
        s.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, height, width),
                                                    generator=g))
        samples.append(s)
    inputs = list(torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8,
                                generator=g))
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    return model, data


def test_ratios_and_normalisation(bench):
    terms = {name: bench.TERMS[name] for name in (
        "decode CE", "aux CE", "reinforce rloo4 logits image", "reinforce rloo4 logits pixel",
        "reinforce rloo4 label image", "reinforce rloo4 label pixel")}
    model, data = tiny_model_and_batch()
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    losses = bench.build_losses(terms, torch.device("cpu"))
    rows = bench.measure(model, [data], losses, list(terms), lr=0.01, adamw_lr=1e-4)
    summary = bench.summarise(rows, lr=0.01)
    ce = summary["decode CE"]
    assert ce["decode_ratio"] == 1.0 and ce["backbone_ratio"] == 1.0
    assert ce["sgd_ratio"] == 1.0 and ce["adamw_ratio"] == 1.0
    lines = bench.format_report(summary, 0.01, 1e-4)
    row = next(line for line in lines if line.startswith("decode CE "))
    assert row.split()[3] == "1.00" and row.split()[5] == "1.00"
    # the auxiliary CE trains no decode-head weight; a decode-head loss no aux-head weight
    assert rows["aux CE"]["decode"] == [0.0] and rows["decode CE"]["aux"] == [0.0]
    assert rows["aux CE"]["aux"][0] > 0
    # same seed -> same samples: 'pixel' is 'image' divided by the valid pixel count
    for res, n in (("logits", (32 // 8) * (64 // 8)), ("label", 32 * 64)):
        image = rows[f"reinforce rloo4 {res} image"]
        pixel = rows[f"reinforce rloo4 {res} pixel"]
        for g in ("backbone", "decode"):
            assert image[g][0] > 0
            assert image[g][0] / pixel[g][0] == pytest.approx(n, rel=1e-4)
        assert summary[f"reinforce rloo4 {res} pixel"]["lr_match"] == pytest.approx(
            summary[f"reinforce rloo4 {res} image"]["lr_match"] * n, rel=1e-4)
    # one step is exactly the SGD step at lr
    assert summary["decode CE"]["sgd"] == pytest.approx(
        0.01 * rows["decode CE"]["decode"][0] / _decode_norm(model), rel=1e-5)
    # nothing was updated
    after = model.state_dict()
    for k, v in before.items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, after[k]), k


def _decode_norm(model):
    return float(torch.cat([p.detach().flatten() for p in model.decode_head.parameters()])
                 .norm())


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_first_update_matches_torch_optim(bench, name):
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.zeros(50, dtype=torch.float64))
    grad = (torch.randn(50, dtype=torch.float64)
            * torch.logspace(-10, 0, 50, dtype=torch.float64))  # some |g| near Adam's eps
    start = theta.detach().clone()
    if name == "sgd":
        opt = torch.optim.SGD([theta], lr=0.1, momentum=0.9, weight_decay=0.0)
        expected = bench.sgd_first_update(grad, 0.1)
    else:
        opt = torch.optim.AdamW([theta], lr=1e-3, weight_decay=0.0, eps=bench.ADAM_EPS)
        expected = bench.adamw_first_update(grad, 1e-3)
    theta.grad = grad.clone()
    opt.step()
    assert torch.allclose(theta.detach() - start, expected, rtol=1e-6, atol=0)


def test_head_only_gives_the_same_head_gradients(bench):
    """--head-only: the backbone runs without a graph; the heads' gradients are the same."""
    terms = {name: bench.CITYSCAPES_TERMS[name] for name in (
        "decode CE", "aux CE", "reinforce rloo2 logits image", "local_expectation k=1 image")}
    model, data = tiny_model_and_batch()
    full = bench.measure(model, [data], bench.build_losses(terms, torch.device("cpu")),
                         list(terms), lr=0.01, adamw_lr=1e-4)
    head = bench.measure(model, [data], bench.build_losses(terms, torch.device("cpu")),
                         list(terms), lr=0.01, adamw_lr=1e-4, head_only=True)
    for name in terms:
        assert head[name]["backbone"] == [] and full[name]["backbone"][0] > 0
        for g in ("decode", "aux", "sgd"):
            assert head[name][g] == pytest.approx(full[name][g], rel=1e-5), (name, g)
    summary = bench.summarise(head, lr=0.01)
    assert math.isnan(summary["decode CE"]["backbone_ratio"])
    assert summary["decode CE"]["lr_match"] == pytest.approx(0.01)
    lines = bench.format_report(summary, 0.01, 1e-4)
    assert any(line.startswith("local_expectation k=1 image") for line in lines)


def test_select_terms(bench):
    assert list(bench.select_terms("cityscapes")) == list(bench.CITYSCAPES_TERMS)
    picked = bench.select_terms("reinforce ema image, weighted_ce a=1 batch_loo")
    assert list(picked) == ["decode CE", "reinforce ema image", "weighted_ce a=1 batch_loo"]
    with pytest.raises(SystemExit):
        bench.select_terms("no such term")


def test_cityscapes_model_on_synthetic_scenes(bench, tmp_path):
    """The options the Cityscapes measurement used (bench/README.md), at a tiny size: the
    R-18-D8 Cityscapes config, synthetic scenes mapped to its 19 classes, random weights
    and a short CE warm-up saved and reused as --checkpoint, the Cityscapes terms, heads
    only, a JSON summary."""
    import json

    study = os.path.join(REPO, "configs", "studies", "cityscapes-r18.yaml")
    common = ["--study", study, "--size", "32", "64", "--terms", "cityscapes", "--head-only",
              "--batch", "2", "--steps", "1", "--lr", "1e-3", "--threads", "0"]
    out = tmp_path / "random.json"
    assert bench.main(common + ["--warmup-iters", "0", "--checkpoint",
                                str(tmp_path / "absent.pth"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["size"] == [32, 64] and record["weights"]["warmup_iters"] == 0
    assert list(record["terms"]) == list(bench.CITYSCAPES_TERMS)
    assert record["terms"]["decode CE"]["lr_match"] == pytest.approx(1e-3)
    for name, row in record["terms"].items():
        if name != "aux CE":
            assert 0 < row["lr_match"] < float("inf"), name
    # the 19 Cityscapes classes: the synthetic scenes' eight by name
    from mmseg.datasets import CityscapesDataset

    mapping = bench.class_map(CityscapesDataset.METAINFO["classes"])
    assert mapping == {0: 0, 1: 1, 2: 2, 3: 10, 4: 8, 5: 13, 6: 11, 7: 5}
    # a CE warm-up on smaller scenes, saved, then measured from as a checkpoint
    saved = tmp_path / "warm.pth"
    assert bench.main(common + ["--warmup-iters", "2", "--warmup-size", "32", "32",
                                "--warmup-batch", "2", "--warmup-lr", "0.01",
                                "--checkpoint", str(tmp_path / "absent.pth"),
                                "--save-warmup", str(saved)]) == 0
    out = tmp_path / "warm.json"
    assert bench.main(common + ["--checkpoint", str(saved), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["weights"] == str(saved)
    assert record["terms"]["decode CE"]["decode_ratio"] == 1.0
