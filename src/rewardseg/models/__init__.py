"""MMSegmentation modules of rewardseg; load them with
``custom_imports = dict(imports=['rewardseg.models'], allow_failed_imports=False)``."""
import rewardseg  # noqa: F401  (compat layer first)

from .amp import ChannelsLastHook, MixedPrecisionOptimWrapper, precision_config
from .datasets import PreparedDataset
from .heads import (RewardASPPHead, RewardDepthwiseSeparableASPPHead, RewardFCNHead,
                    RewardHeadMixin)
from .hooks import NonFiniteLossHook, RNGStateHook, ValMetricsRecorder
from .losses import BASELINES, ESTIMATORS, RewardLoss, load_class_weight
from .metrics import PerClassIoUMetric

__all__ = ["ChannelsLastHook", "MixedPrecisionOptimWrapper", "precision_config", "PerClassIoUMetric", "PreparedDataset", "ValMetricsRecorder", "RewardASPPHead", "RewardDepthwiseSeparableASPPHead", "RewardFCNHead",
           "RewardHeadMixin", "NonFiniteLossHook", "RNGStateHook", "RewardLoss",
           "BASELINES", "ESTIMATORS", "load_class_weight"]
