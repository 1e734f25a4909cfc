"""Figures of a study (PNG + PDF), each readable on its own."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .report import final_table, per_class_table  # noqa: E402


def _save(fig, path_png: str, tight: bool = True, dpi: int = 130) -> List[str]:
    os.makedirs(os.path.dirname(os.path.abspath(path_png)), exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path_png, dpi=dpi)
    pdf = os.path.splitext(path_png)[0] + ".pdf"
    fig.savefig(pdf)
    plt.close(fig)
    return [path_png, pdf]


def experiment_figure(df: pd.DataFrame, variants: Sequence[str], labels: Dict[str, str],
                      start: int, title: str, out_png: str) -> List[str]:
    """mIoU vs tuning step per variant: mean and 95 % band over seeds; the control; the
    baseline's own CE trend over the same steps (dash-dotted) and its level at the start."""
    miou = df[df["class"] == "mIoU"]
    sub = miou[miou["variant"].isin(variants)].copy()
    sub["label"] = sub["variant"].map(lambda v: labels.get(v, v))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sns.lineplot(data=sub, x="step", y="IoU", hue="label", errorbar=("ci", 95), n_boot=500,
                 seed=0, ax=ax, marker="o", markersize=3)
    base = miou[miou["variant"] == "baseline"].sort_values("step")
    trend = base[base["step"] >= start]
    if len(trend):
        ax.plot(trend["step"] - start, trend["IoU"], "k-.", lw=1.2,
                label="CE baseline, own schedule (trend)")
    level = base[base["step"] == start]["IoU"]
    if len(level):
        ax.axhline(float(level.iloc[0]), color="grey", ls=":", lw=1,
                   label=f"baseline at step {start}")
    ax.set_xlabel(f"fine-tuning step (from CE checkpoint at iteration {start})")
    ax.set_ylabel("validation mIoU (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


def delta_figure(df: pd.DataFrame, labels: Dict[str, str], out_png: str) -> List[str]:
    table = final_table(df)
    table = table[table["variant"] != "control"].sort_values("delta")
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(table) + 1.5))
    y = np.arange(len(table))
    err = np.vstack([table["delta"] - table["ci_low"], table["ci_high"] - table["delta"]])
    ax.errorbar(table["delta"], y, xerr=np.nan_to_num(err), fmt="o", color="C0", capsize=3)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels([labels.get(v, v) for v in table["variant"]], fontsize=8)
    ax.set_xlabel("final Δ mIoU vs CE control (points, paired by seed, 95 % CI)")
    ax.set_title("Final mIoU difference to the control")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out_png)


def per_class_figure(df: pd.DataFrame, labels: Dict[str, str], classes: Sequence[str],
                     out_png: str) -> List[str]:
    table = per_class_table(df)
    cols = [c for c in classes if c in table.columns] + (["mIoU"] if "mIoU" in table.columns else [])
    table = table[cols].rename(index=lambda v: labels.get(v, v))
    fig, ax = plt.subplots(figsize=(1.0 * len(cols) + 3, 0.35 * len(table) + 1.5))
    sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax,
                cbar_kws={"label": "IoU (%)"}, annot_kws={"fontsize": 7})
    ax.set_xlabel("class")
    ax.set_ylabel("variant")
    ax.set_title("Final per-class IoU (%), mean over seeds")
    return _save(fig, out_png)


def variance_figure(stats: pd.DataFrame, labels: Dict[str, str], out_png: str) -> List[str]:
    sub = stats[stats["stat"] == "decode.reward_adv_sq"].copy()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if len(sub):
        sub["label"] = sub["variant"].map(lambda v: labels.get(v, v))
        sns.lineplot(data=sub, x="step", y="value", hue="label", errorbar=("ci", 95),
                     n_boot=500, seed=0, ax=ax)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no reward-loss runs", ha="center", transform=ax.transAxes)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("E[(R − b)²] per step (log scale)")
    ax.set_title("Estimator variance measure by baseline (mean over the interval)")
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


def make_report(study: dict, metrics_csv: str, stats_csv: str, fig_dir: str,
                table_dir: str) -> List[str]:
    """Every figure and table of a study from its tidy tables."""
    from .report import write_tables
    from .study import experiments, variant_fields

    df = pd.read_csv(metrics_csv)
    stats = pd.read_csv(stats_csv)
    labels = {v: variant_fields(study, v).get("label") or v for v in study["variants"]}
    classes = [c for c in df["class"].unique() if c != "mIoU"]
    written = []
    for name, variants in experiments(study).items():
        starts = {variant_fields(study, v)["start"] for v in variants}
        start = variant_fields(study, variants[-1])["start"] if len(starts) > 1 else starts.pop()
        title = f"{study['study']}: {name.replace('_', ' ')} (mean, 95 % CI over seeds)"
        written += experiment_figure(df, variants, labels, start, title,
                                     os.path.join(fig_dir, f"exp_{name}.png"))
    written += delta_figure(df, labels, os.path.join(fig_dir, "delta_vs_control.png"))
    written += per_class_figure(df, labels, classes, os.path.join(fig_dir, "per_class_iou.png"))
    written += variance_figure(stats, labels, os.path.join(fig_dir, "estimator_variance.png"))
    written += write_tables(df, table_dir, labels)
    return written


def _last_checkpoint(run_dir: str) -> str:
    marker = os.path.join(run_dir, "last_checkpoint")
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

    from .data import load_meta

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


def qualitative_figure(study: dict, metrics_csv: str, work_root: str, out_png: str,
                       num_images: int = 3, seed: int = 0, control: str = "control") -> List[str]:
    """A few val images: input, ground truth, the control's and the best variant's
    predictions (seed ``seed``), in the class palette."""
    from matplotlib.patches import Patch
    from mmseg.apis import inference_model, init_model
    from PIL import Image

    import rewardseg.models  # noqa: F401

    from .report import final_table

    table = final_table(pd.read_csv(metrics_csv))
    others = table[table["variant"] != control]
    best = others.iloc[0]["variant"] if len(others) else None
    shown = [control] + ([best] if best else [])
    labels = {v: (study["variants"][v] or {}).get("label", v) for v in study["variants"]}
    models = {}
    for variant in shown:
        run_dir = os.path.join(work_root, study["study"], variant, f"seed{seed}")
        cfg = os.path.join(run_dir, "config.py")
        models[variant] = init_model(cfg, _last_checkpoint(run_dir), device="cpu")
    model = models[control]
    meta = model.dataset_meta or {}
    classes = list(meta.get("classes", []))
    palette = np.array(meta.get("palette", []), dtype=np.uint8)
    pairs = val_pairs(model.cfg)[:num_images]

    def colour(label):
        out = np.zeros(label.shape + (3,), dtype=np.uint8)
        valid = label < len(palette)
        out[valid] = palette[label[valid]]
        return out

    cols = 2 + len(shown)
    fig, axes = plt.subplots(len(pairs), cols, figsize=(3 * cols, 2.2 * len(pairs) + 0.8),
                             squeeze=False)
    titles = ["input", "ground truth", labels.get(control, control)]
    if best:
        titles.append(f"best: {labels.get(best, best)}")
    for row, (path, gt_path) in enumerate(pairs):
        img = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(gt_path))
        preds = [inference_model(models[v], path).pred_sem_seg.data[0].cpu().numpy()
                 for v in shown]
        for col, panel in enumerate([img, colour(gt)] + [colour(p) for p in preds]):
            ax = axes[row, col]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
    handles = [Patch(color=np.array(palette[i]) / 255.0, label=name) for i, name in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=8,
               frameon=False)
    fig.suptitle(f"{study['study']}: validation predictions (seed {seed}); black = ignored")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return _save(fig, out_png, tight=False, dpi=110)
