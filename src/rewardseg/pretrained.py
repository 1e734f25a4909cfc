"""ImageNet backbone weights through mmengine's own ``open-mmlab://`` mechanism.

A CE pretraining trained here starts its backbone from ``model.pretrained`` (upstream:
``open-mmlab://resnet50_v1c``). mmengine resolves the name with its model table
(``mmengine/hub/openmmlab.json``, extended by ``$MMENGINE_HOME/open_mmlab.json``) and
caches the file in torch's hub directory (``$TORCH_HOME/hub/checkpoints``). The workflow
fetches it once on the submitting machine, so compute nodes without internet access find
it in the (shared) cache. Runs that load a checkpoint anyway (tuning, released pretraining checkpoints)
skip it: see :func:`rewardseg.runconfig.build_run_config`.
"""
from __future__ import annotations

from typing import List

PREFIXES = ("open-mmlab://", "openmmlab://", "http://", "https://")


def pretrained_sources(cfg) -> List[str]:
    """The remote checkpoints a model config initialises from (``model.pretrained`` and
    any ``init_cfg`` of type Pretrained)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Pretrained" and isinstance(node.get("checkpoint"), str):
                found.append(node["checkpoint"])
            for key, value in node.items():
                if key == "pretrained" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    model = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
    walk(model)
    return [s for s in dict.fromkeys(found) if s.startswith(PREFIXES)]


def fetch_pretrained(config_path: str) -> List[str]:
    """Load every remote checkpoint of ``config_path`` through mmengine (downloading into
    its cache when missing); returns the sources fetched."""
    from mmengine.config import Config
    from mmengine.runner.checkpoint import CheckpointLoader

    import rewardseg  # noqa: F401  (compat layer)

    sources = pretrained_sources(Config.fromfile(config_path))
    for source in sources:
        CheckpointLoader.load_checkpoint(source, map_location="cpu")
    return sources
