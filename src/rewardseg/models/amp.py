"""Mixed-precision training and channels-last memory format for rewardseg runs.

``MixedPrecisionOptimWrapper`` is mmengine's ``AmpOptimWrapper`` (autocast in the
forward pass, ``GradScaler`` around backward/step, its state in the checkpoint) made to
run on any device torch autocasts on: mmengine's refuses to be built without a GPU,
and its autocast accepts only bfloat16 on a CPU. Here the device is the model's own,
bfloat16 trains without loss scaling (its exponent range is float32's) and float16 with
dynamic loss scaling. So the same config trains in bf16 on a cluster GPU and in the
CPU tests.

``ChannelsLastHook`` converts the model's 4-D weights to channels-last before training;
convolutions then keep their activations in that layout (tensor cores prefer it).

``precision_config`` applies a run's ``precision`` / ``channels_last`` to an mmengine
config. Validation stays in float32 (mmengine's ``ValLoop`` default), so the reported
mIoU does not depend on the training precision.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmseg.registry import HOOKS, OPTIM_WRAPPERS

from ..vocabulary import AMP_DTYPES, FP32, PRECISIONS


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` on the model's device (CPU included).

    Args:
        dtype: ``'bfloat16'`` or ``'float16'``.
        loss_scale: ``'dynamic'``, a float (static scale) or a dict of ``GradScaler``
            arguments; used for float16 only (bfloat16 needs no scaling).
        **kwargs: ``OptimWrapper``'s (``optimizer``, ``clip_grad``, ...).
    """

    def __init__(self, dtype: str = "bfloat16", loss_scale="dynamic", **kwargs):
        # mmengine's AmpOptimWrapper.__init__ asserts a GPU: set up its state here
        OptimWrapper.__init__(self, **kwargs)
        if dtype not in AMP_DTYPES.values():
            raise ValueError(f"MixedPrecisionOptimWrapper: dtype {dtype!r} is not one of "
                             f"{', '.join(AMP_DTYPES.values())}")
        self.cast_dtype = getattr(torch, dtype)
        self._scale_update_param = None
        enabled = self.cast_dtype == torch.float16
        options = {}
        if isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            options = dict(init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            options = dict(loss_scale)
        elif loss_scale != "dynamic":
            raise TypeError(f"loss_scale must be 'dynamic', a float or a dict, got "
                            f"{loss_scale!r}")
        self._device_type = self._optimizer_device()
        self.loss_scaler = torch.amp.GradScaler(self._device_type, enabled=enabled, **options)

    def _optimizer_device(self) -> str:
        """The parameters' device type: where the model runs and autocasts."""
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                return param.device.type
        return "cuda" if torch.cuda.is_available() else "cpu"

    @contextmanager
    def optim_context(self, model: nn.Module):
        with OptimWrapper.optim_context(self, model), \
                torch.autocast(device_type=self._device_type, dtype=self.cast_dtype):
            yield


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Put the model's 4-D parameters and buffers in channels-last memory format before
    the run (and after a checkpoint is loaded, which copies values, not layouts)."""

    priority = "VERY_HIGH"

    @staticmethod
    def _convert(runner) -> None:
        runner.model.to(memory_format=torch.channels_last)

    def before_run(self, runner) -> None:
        self._convert(runner)

    def before_train(self, runner) -> None:
        self._convert(runner)


def precision_config(cfg, precision: str = FP32, channels_last: bool = False,
                     loss_scale: Optional[object] = "dynamic"):
    """Apply a run's ``precision`` and ``channels_last`` to an mmengine config (in place;
    returned for chaining)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != FP32:
        wrapper = dict(cfg.optim_wrapper)
        if wrapper.get("type", "OptimWrapper") not in ("OptimWrapper", "AmpOptimWrapper",
                                                       "MixedPrecisionOptimWrapper"):
            raise ValueError(f"precision {precision!r} needs a plain OptimWrapper; the model "
                             f"config has {wrapper['type']!r}")
        wrapper.update(type="MixedPrecisionOptimWrapper", dtype=AMP_DTYPES[precision],
                       loss_scale=loss_scale)
        cfg.optim_wrapper = wrapper
    if channels_last:
        hooks = [h for h in cfg.get("custom_hooks") or [] if h.get("type") != "ChannelsLastHook"]
        cfg.custom_hooks = hooks + [dict(type="ChannelsLastHook")]
    return cfg
