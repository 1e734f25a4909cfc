"""rewardseg: reward optimisation (score-function gradients) for semantic segmentation.

Importing the package applies the MMSegmentation compatibility layer
(:mod:`rewardseg.compat`) before anything of mmseg is imported.
"""
from . import compat as _compat

_compat.apply()

__version__ = "0.1.0"
