"""The qualitative panel's data (``predictions.npz``): the control's and the best
reward-tuned variant's predictions on the validation images where they disagree most."""
from __future__ import annotations

import os
from typing import Any, Dict, List

from .. import paths
from ..study import as_resolved as resolve_study

# The qualitative panel is drawn from a small file of predictions (``predictions.npz``,
# written by ``rewardseg predictions`` from the finished runs), so a recorded study draws
# it again without its checkpoints (``rewardseg.recorded``).
QUALITATIVE_IMAGES = 3      # rows of the panel
QUALITATIVE_CANDIDATES = 24  # validation images searched for the largest disagreement
IGNORE_INDEX = 255


def _last_checkpoint(run_dir: str) -> str:
    marker = paths.last_checkpoint(run_dir)
    if not os.path.isfile(marker):
        raise FileNotFoundError(f"{run_dir}: no last_checkpoint (has the run finished?)")
    with open(marker) as fh:
        path = fh.read().strip()
    if not os.path.isabs(path) and not os.path.isfile(path):
        path = os.path.join(run_dir, os.path.basename(path))
    return path


def val_pairs(cfg) -> List[tuple]:
    """(image, label map) paths of a run config's validation set, sorted. Suffixes come
    from the prepared dataset's meta.json (every data rule writes them), else from the
    config, else Cityscapes'."""
    import glob

    from ..data import load_meta

    ds = cfg.val_dataloader.dataset
    data_root, prefix = ds.data_root, ds.data_prefix
    meta = load_meta(data_root)
    img_suffix = meta.get("img_suffix") or ds.get("img_suffix", "_leftImg8bit.png")
    seg_suffix = meta.get("label_suffix") or ds.get("seg_map_suffix", "_gtFine_labelTrainIds.png")
    img_dir = os.path.join(data_root, prefix["img_path"])
    images = sorted(glob.glob(os.path.join(img_dir, "**", f"*{img_suffix}"), recursive=True))
    if not images:
        raise FileNotFoundError(f"no validation images *{img_suffix} under {img_dir}")
    return [(p, os.path.join(data_root, prefix["seg_map_path"],
                             os.path.relpath(p, img_dir)[: -len(img_suffix)] + seg_suffix))
            for p in images]



def qualitative_variants(study: dict, metrics, control: str = "control"):
    """``(shown, better)``: the control and the reward-tuned variant (a loss from
    ``vocabulary.ESTIMATORS``) with the best final mIoU against its control, and whether
    that variant beats its control (Holm). Only the control when no variant is
    reward-tuned."""
    from ..results import best_variant, variant_table
    from ..vocabulary import ESTIMATORS

    resolved = resolve_study(study)
    table = variant_table(metrics, resolved.controls, resolved.experiments)
    tuned = table[[resolved.variants[v].loss in ESTIMATORS for v in table["variant"]]]
    best = best_variant(tuned)
    if best is None and len(tuned):  # none is better: the highest Δ, and the panel says so
        best, better = str(tuned.sort_values("delta").iloc[-1]["variant"]), False
    else:
        better = best is not None
    return [control] + ([best] if best else []), better


def qualitative_predictions(study: dict, metrics, work_root: str = paths.WORK, seed: int = 0,
                            num_images: int = QUALITATIVE_IMAGES,
                            candidates: int = QUALITATIVE_CANDIDATES,
                            control: str = "control") -> Dict[str, Any]:
    """What the qualitative panel shows, as arrays (``numpy.savez``, no pickles): the
    control's and the best reward-tuned variant's predictions (seed ``seed``, their last
    checkpoints under ``work_root``) on the ``num_images`` of the first ``candidates``
    validation images where the two disagree on the most labelled pixels, with the
    images, their labels, the class names and palette."""
    import numpy as np
    from mmseg.apis import inference_model, init_model
    from PIL import Image

    import rewardseg.models  # noqa: F401

    shown, better = qualitative_variants(study, metrics, control)
    models = {}
    for variant in shown:
        run_dir = paths.run_dir(study["study"], variant, seed, root=work_root)
        models[variant] = init_model(os.path.join(run_dir, "config.py"),
                                     _last_checkpoint(run_dir), device="cpu")
    model = models[control]
    meta = model.dataset_meta or {}
    found = []  # (disagreement, index, path, gt, predictions), the most disagreeing kept
    pairs = val_pairs(model.cfg)[:candidates]
    for index, (path, gt_path) in enumerate(pairs):
        gt = np.asarray(Image.open(gt_path)).astype(np.uint8)
        preds = np.stack([inference_model(models[v], path).pred_sem_seg.data[0].cpu().numpy()
                          for v in shown]).astype(np.uint8)
        labelled = gt != IGNORE_INDEX
        differ = float((preds[0] != preds[-1])[labelled].mean()) if labelled.any() else 0.0
        found.append((-differ, index, path, gt, preds))
        found = sorted(found, key=lambda f: f[:2])[:num_images]
    root = os.path.commonpath([os.path.dirname(f[2]) for f in found]) if found else ""
    out: Dict[str, Any] = {
        "variants": np.array(shown), "better": np.array(better), "seed": np.array(seed),
        "classes": np.array(list(meta.get("classes", []))),
        "palette": np.array(meta.get("palette", []), dtype=np.uint8).reshape(-1, 3),
        "names": np.array([os.path.relpath(f[2], root) for f in found]),
        "disagreement": np.array([-f[0] for f in found]),
        "searched": np.array(len(pairs)),
    }
    for row, (_, _, path, gt, preds) in enumerate(found):
        out[f"image{row}"] = np.asarray(Image.open(path).convert("RGB"))
        out[f"label{row}"] = gt
        out[f"pred{row}"] = preds
    return out


def save_predictions(data: Dict[str, Any], path: str) -> str:
    """Write :func:`qualitative_predictions`'s arrays (compressed) whole or not at all."""
    import numpy as np

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **data)
    os.replace(tmp, path)
    return path


def load_predictions(path: str) -> Dict[str, Any]:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
