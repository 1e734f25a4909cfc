"""What a run records about its software: package versions, git commit."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Dict, Optional

PACKAGES = ("rewardseg", "torch", "mmengine", "mmcv", "mmcv-lite", "mmsegmentation",
            "numpy", "snakemake")


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        versions["cuda"] = torch.version.cuda or "none"
    except ImportError:  # pragma: no cover
        pass
    return versions


def git_commit(path: Optional[str] = None) -> Optional[str]:
    """The commit of the repository holding ``path`` (with ``-dirty``), or None."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"],
                             cwd=path or os.getcwd(), capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
