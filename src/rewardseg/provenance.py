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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> Dict[str, object]:
    """What a CPU run's exact numbers depend on beyond the code: the CPU kind, and the
    threads torch computes with (when torch is imported)."""
    import sys

    found: Dict[str, object] = {"cpu": cpu_model(), "logical_cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        found["torch_threads"] = torch.get_num_threads()
        found["device"] = ("cuda:" + torch.cuda.get_device_name(0)
                           if torch.cuda.is_available() else "cpu")
    return found
