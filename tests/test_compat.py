"""The compat layer: mmseg on mmcv-lite, upstream configs, mmengine checkpoints on torch>=2.6."""
import importlib.util
import os

import pytest
import torch

import rewardseg  # noqa: F401
from rewardseg import compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_COMPILED_OPS = importlib.util.find_spec("mmcv._ext") is not None


def test_standin_ops_only_without_compiled_ops():
    import mmcv.ops

    assert compat.USING_STANDIN_OPS == (not HAS_COMPILED_OPS)
    if compat.USING_STANDIN_OPS:
        assert "stand-in" in mmcv.ops.__doc__


@pytest.mark.skipif(HAS_COMPILED_OPS, reason="full mmcv installed: the real ops are used")
def test_standin_point_sample_and_missing_op_message():
    from mmcv.ops import PSAMask, point_sample

    feats = torch.arange(16.0).view(1, 1, 4, 4)
    points = torch.tensor([[[0.0, 0.0], [0.99, 0.99]]])
    out = point_sample(feats, points, align_corners=False)
    assert out.shape == (1, 1, 2)
    with pytest.raises(RuntimeError, match="mmcv.ops.PSAMask needs mmcv's compiled extension"):
        PSAMask("collect", (3, 3))


def test_every_mmseg_module_imports():
    from mmseg.utils import register_all_modules

    register_all_modules()
    from mmseg.registry import MODELS

    assert MODELS.get("ASPPHead") is not None
    import rewardseg.models  # noqa: F401

    assert MODELS.get("RewardASPPHead") is not None
    assert MODELS.get("RewardLoss") is not None


def _forward_backward(config_path):
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmseg.utils import register_all_modules

    from rewardseg.train import prepare_config

    register_all_modules()
    cfg = prepare_config(Config.fromfile(config_path), "/tmp/unused")
    cfg.model.pretrained = None  # no download here; the architecture is what we check
    h, w = 32, 64
    cfg.model.data_preprocessor.size = (h, w)  # upstream pads to the 512x1024 crop
    model = MODELS.build(cfg.model)
    model.train()
    inputs = torch.randint(0, 255, (2, 3, h, w), dtype=torch.uint8)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, h, w)))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=list(inputs), data_samples=samples), True)
    losses = model(**data, mode="loss")
    total, _ = model.parse_losses(losses)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert torch.isfinite(total)
    return losses


def test_upstream_deeplabv3_r50_cityscapes_config_forward_backward():
    import mmseg

    losses = _forward_backward(os.path.join(
        os.path.dirname(mmseg.__file__), ".mim", "configs", "deeplabv3",
        "deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py"))
    assert "decode.loss_ce" in losses and "aux.loss_ce" in losses


@pytest.mark.parametrize("name", ["reinforce-rloo", "weighted-ce"])
def test_reward_configs_on_upstream_model_forward_backward(name):
    path = os.path.join(
        REPO, f"configs/mmseg/rewardseg/deeplabv3_r50-d8_{name}_4xb2-40k_cityscapes-512x1024.py")
    losses = _forward_backward(path)
    assert "decode.loss_reward" in losses and "aux.loss_ce" in losses


def test_mmengine_checkpoint_with_history_buffer_loads(tmp_path):
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import _load_checkpoint, save_checkpoint

    path = str(tmp_path / "ckpt.pth")
    buf = HistoryBuffer()
    buf.update(1.0)
    save_checkpoint({"state_dict": {"w": torch.ones(2)}, "message_hub": {"buf": buf}}, path)
    # plain torch.load refuses it on torch >= 2.6 ...
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6):
        with pytest.raises(Exception):
            torch.load(path)
    # ... mmengine's loader (as patched: weights_only=True, with HistoryBuffer and the
    # numpy types it holds allowed, rewardseg.compat.CHECKPOINT_GLOBALS) reads it
    ckpt = _load_checkpoint(path, map_location="cpu")
    assert isinstance(ckpt["message_hub"]["buf"], HistoryBuffer)
    assert ckpt["message_hub"]["buf"].current() == 1.0


def test_mmseg_base_configs_resolve_without_pkg_resources():
    from mmengine.config import Config

    cfg = Config.fromfile(os.path.join(REPO, "configs/mmseg/_base_/models/deeplabv3_r18-d8_small.py"))
    assert cfg.model.backbone.depth == 18
    assert cfg.model.decode_head.type == "ASPPHead"  # from upstream's base


def test_importing_mmseg_and_loading_configs_prints_nothing(tmp_path):
    """No warning on every `rewardseg` / `snakemake` call: not mmcv-lite's missing
    MultiScaleDeformableAttention, and no pkg_resources (an older setuptools deprecates it
    on import: here a stand-in that warns the same way) from mmengine's config lookups."""
    import subprocess
    import sys

    fake = tmp_path / "pkg_resources"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import warnings\n"
        "warnings.warn('pkg_resources is deprecated as an API', UserWarning, stacklevel=2)\n")
    code = ("import rewardseg, mmseg.models\n"
            "from mmengine.config import Config\n"
            f"Config.fromfile({os.path.join(REPO, 'configs/mmseg/_base_/models/deeplabv3_r18-d8_small.py')!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "", proc.stderr[-3000:]


@pytest.mark.parametrize("first", ["import mmseg", "from mmengine.config import Config",
                                   "import mmcv"])
def test_the_compat_layer_applies_at_the_first_mm_import_and_not_before(first):
    """``import rewardseg`` and the CLI's parser import no torch; whichever of mmcv,
    mmengine or mmseg comes first afterwards finds the fixes applied, and each module is
    imported once (the same object everywhere)."""
    import subprocess
    import sys

    code = "\n".join([
        "import sys, rewardseg, rewardseg.cli",
        "rewardseg.cli.build_parser()",
        "assert 'torch' not in sys.modules and not rewardseg.compat._APPLIED",
        first,
        "import mmcv, mmcv.ops, mmengine, mmseg",
        "from mmengine.runner.checkpoint import CheckpointLoader",
        "assert rewardseg.compat._APPLIED and sys.modules['mmcv'] is mmcv",
        "assert mmcv.ops is sys.modules['mmcv.ops']",
        "assert mmcv.__spec__.origin.endswith('__init__.py')",
        "assert rewardseg.compat.USING_STANDIN_OPS == ('stand-in' in (mmcv.ops.__doc__ or ''))",
        "assert CheckpointLoader._schemes[''] is rewardseg.compat.load_from_local",
        "assert CheckpointLoader._schemes['https://'] is rewardseg.compat.load_from_http",
    ])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_config_text_is_formatted_once_and_unchanged():
    """mmengine's runner formats the config with yapf ~8 times a run; the memoised
    formatter gives yapf's own text and formats each distinct text once."""
    import mmengine.config.config as config_mod
    from mmengine.config import Config
    from yapf.yapflib.yapf_api import FormatCode

    assert getattr(config_mod.FormatCode, "rewardseg_memoised", False)
    cfg = Config(dict(model=dict(type="EncoderDecoder", num_classes=8),
                      train_cfg=dict(type="IterBasedTrainLoop", max_iters=123)))
    before = config_mod.FormatCode.cache_info()
    first = cfg.pretty_text
    second = cfg.pretty_text
    after = config_mod.FormatCode.cache_info()
    assert after.misses == before.misses + 1 and after.hits == before.hits + 1
    assert first == second and "max_iters=123" in first
    cfg.train_cfg.max_iters = 456  # a changed config is formatted anew
    assert "max_iters=456" in cfg.pretty_text
    # the same text yapf gives without the cache
    plain = Config(dict(cfg.to_dict()), format_python_code=False).pretty_text
    style = dict(based_on_style="pep8", blank_line_before_nested_class_or_def=True,
                 split_before_expression_after_opening_paren=True)
    assert cfg.pretty_text == FormatCode(plain, style_config=style)[0]
