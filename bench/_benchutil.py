"""Set-up shared by the benchmark scripts (imported by them as a sibling module)."""
from __future__ import annotations

import json
import os
import sys
from typing import Callable, Optional

import torch


def select_device(name: str, threads: int) -> Optional[torch.device]:
    """Apply ``--threads`` (0: torch's default) and return ``--device``, or ``None`` after
    saying why when CUDA is asked for but not there (the caller exits 2)."""
    if threads > 0:
        torch.set_num_threads(threads)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda given but no CUDA device is available", file=sys.stderr)
        return None
    return device


def update_json(path: str, update: Callable[[dict], None]) -> None:
    """Apply ``update`` to the JSON object in ``path`` (``{}`` when absent) and write it
    back atomically: the GPU check's parts each add theirs to one file."""
    data = {}
    if os.path.exists(path):
        with open(path) as fh:
            data = json.load(fh)
    update(data)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)
