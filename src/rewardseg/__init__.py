"""rewardseg: reward optimisation (score-function gradients) for semantic segmentation.

Importing the package arranges for the MMSegmentation compatibility layer
(:mod:`rewardseg.compat`) to be applied before anything of mmcv, mmengine or mmseg is
imported (at their first import, so that ``import rewardseg`` itself imports no torch).
"""
from . import compat as _compat

_compat.install_import_hook()

__version__ = "0.1.0"
