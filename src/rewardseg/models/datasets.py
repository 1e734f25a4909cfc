"""Dataset and metric registrations for the studies."""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np
from mmengine.hooks import Hook
from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import DATASETS, HOOKS, METRICS

from ..data import synthetic
from ..data.easyportrait import CLASS_SETTINGS

FACE_PARSING = CLASS_SETTINGS["face_parsing"]


@DATASETS.register_module()
class SynthStreetDataset(BaseSegDataset):
    """The procedurally generated street scenes of :mod:`rewardseg.data.synthetic`
    (Cityscapes file layout, 8 classes, own trainIds: no Cityscapes label remapping)."""

    METAINFO = dict(classes=tuple(synthetic.CLASSES), palette=[list(p) for p in synthetic.PALETTE])

    def __init__(self, img_suffix=synthetic.IMG_SUFFIX, seg_map_suffix=synthetic.SEG_MAP_SUFFIX,
                 reduce_zero_label=False, **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class EasyPortraitDataset(BaseSegDataset):
    """EasyPortrait as prepared by ``rewardseg prepare easyportrait``: face parsing (8
    classes, person merged into background); pass ``metainfo`` with the two portrait
    classes for the portrait setting. Images ``.jpg``, label maps ``.png``."""

    METAINFO = dict(classes=tuple(FACE_PARSING[0]), palette=[list(c) for c in FACE_PARSING[1]])

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=False,
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class MapillaryCityscapesDataset(BaseSegDataset):
    """Mapillary Vistas with labels mapped to the 19 Cityscapes train ids by
    ``rewardseg prepare mapillary`` (images ``.jpg``, label maps ``.png``)."""

    METAINFO = dict(CityscapesDataset.METAINFO)

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=False,
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class PreparedDataset(BaseSegDataset):
    """Any dataset written by ``rewardseg prepare``: classes, palette and file suffixes
    come from its ``meta.json``, so a new dataset source needs no dataset class of its own
    (``dataset_type = 'PreparedDataset'`` in its mmseg config). Label maps hold the train
    ids already (no zero-label reduction)."""

    def __init__(self, data_root: str = "", metainfo=None, img_suffix=None,
                 seg_map_suffix=None, **kwargs):
        from ..data import load_meta

        meta = load_meta(data_root)
        if not meta:
            raise FileNotFoundError(f"{os.path.join(data_root, 'meta.json')} does not exist: "
                                    "prepare the dataset first (rewardseg prepare)")
        info = dict(classes=tuple(meta["classes"]), palette=[list(c) for c in meta["palette"]])
        info.update(metainfo or {})
        super().__init__(data_root=data_root, metainfo=info,
                         img_suffix=img_suffix or meta["img_suffix"],
                         seg_map_suffix=seg_map_suffix or meta["label_suffix"],
                         reduce_zero_label=False, **kwargs)


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """IoUMetric that also returns every class's IoU (``IoU.<class>``, in %), and the mIoU
    unrounded: the mean over classes present in prediction or ground truth of
    ``100 · intersection / union`` from the summed confusion counts (mmseg rounds it to
    0.01, which turns differences between runs into rounding steps)."""

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        results = tuple(zip(*results))
        intersect = sum(results[0]).double()
        union = sum(results[1]).double()
        iou = (intersect / union).numpy() * 100.0
        for name, value in zip(self.dataset_meta["classes"], iou):
            metrics[f"IoU.{name}"] = float(value) if np.isfinite(value) else float("nan")
        metrics["mIoU"] = float(np.nanmean(iou))
        return metrics


PROGRESS_FD = "REWARDSEG_PROGRESS_FD"


def report_progress(line: str) -> None:
    """One line on the console of the workflow (file descriptor ``$REWARDSEG_PROGRESS_FD``,
    which the training rules point at snakemake's stderr while the job's own output goes
    to its log); nothing when unset or closed."""
    fd = os.environ.get(PROGRESS_FD)
    if not fd:
        return
    try:
        os.write(int(fd), (line + "\n").encode())
    except (OSError, ValueError):
        pass


@HOOKS.register_module()
class ValMetricsRecorder(Hook):
    """Append every validation result, with its training iteration, to a JSON-lines file
    (default ``<work_dir>/val_metrics.jsonl``); also records the training statistics
    logged since the previous validation (mean of each scalar).

    The statistics not yet recorded travel in every checkpoint
    (``checkpoint['rewardseg_val_train'] = {'step': n, 'train': {key: [float, ...]}}``:
    plain lists, which the weights-only loader accepts), so a resumed run records the
    same means as an uninterrupted one. At a step that both checkpoints and validates,
    mmengine saves the checkpoint first (``CheckpointHook.after_train_iter``, after this
    hook's) and validates after the iteration's hooks: the checkpoint holds exactly what
    that validation records. On resume they are restored unless the validation of the
    checkpoint's step is already in the file (it recorded them)."""

    priority = "LOW"
    KEY = "rewardseg_val_train"

    def __init__(self, filename: str = "val_metrics.jsonl", step=None):
        self.filename = filename
        self.step = step  # fixed step (evaluating a released checkpoint outside training)
        self._train: Dict[str, List[float]] = {}
        self._loaded = None  # the checkpoint's pending statistics, until before_train

    def _recorded_steps(self, runner):
        path = os.path.join(runner.work_dir, self.filename)
        if not os.path.isfile(path):
            return set()
        with open(path) as fh:
            return {json.loads(line)["step"] for line in fh if line.strip()}

    @staticmethod
    def _val_due(runner, step: int) -> bool:
        loop = runner.train_loop
        return runner.val_loop is not None and step >= loop.val_begin and (
            step % loop.val_interval == 0 or step == loop.max_iters)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[self.KEY] = {
            "step": int(checkpoint.get("meta", {}).get("iter", runner.iter)),
            "train": {str(k): [float(x) for x in v] for k, v in self._train.items()}}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get(self.KEY)

    def before_train(self, runner):
        """Restore the statistics a resumed checkpoint holds; and, for a run killed
        between saving a checkpoint and validating it (it resumes at a step whose
        validation never happened), run that validation now, so no point of the curve
        (nor its training statistics) is lost."""
        saved, self._loaded = self._loaded, None
        step = runner.iter
        if step == 0:  # a fresh run, or a plain load_from (a start checkpoint)
            return
        recorded = self._recorded_steps(runner)
        due = self._val_due(runner, step)
        if isinstance(saved, dict) and saved.get("step") == step \
                and not (due and step in recorded):
            self._train = {k: list(v) for k, v in (saved.get("train") or {}).items()}
        if due and step not in recorded:
            runner.val_loop.run()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for key, value in (outputs or {}).items():
            value = value.detach() if hasattr(value, "detach") else value
            self._train.setdefault(key, []).append(float(value))

    def after_val_epoch(self, runner, metrics=None):
        record = {"step": int(runner.iter if self.step is None else self.step),
                  "metrics": {k: float(v) for k, v in (metrics or {}).items()},
                  "train": {k: float(np.mean(v)) for k, v in self._train.items()}}
        self._train = {}
        if runner.rank != 0:
            return
        path = os.path.join(runner.work_dir, self.filename)
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        total = getattr(runner.train_loop, "max_iters", None) if self.step is None else None
        miou = record["metrics"].get("mIoU", float("nan"))
        report_progress(f"{os.path.relpath(runner.work_dir)}: step {record['step']}"
                        + (f"/{total}" if total else "") + f", val mIoU {miou:.2f}")
