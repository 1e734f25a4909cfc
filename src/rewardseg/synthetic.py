"""Procedurally generated synthetic street-scene segmentation dataset.

Every image is rendered from a single integer seed with numpy only (PIL is used
just to write PNGs), so a dataset is reproducible bit for bit from
``(seed, split, index)`` and needs no download.

Scenes are deliberately *not* trivially separable: per-class textures, building
windows, lane markings, per-image lighting (gain, contrast, white balance,
gradients, soft shadows), haze, colour jitter that makes e.g. grey cars, grey
buildings, overcast skies and pavements overlap in colour, Gaussian noise and
optional blur.  Class frequencies are imbalanced like a real street scene:
road / building / sky are large, person and pole are small, thin and rare.

Label convention (``trainId``)::

    0 road  1 sidewalk  2 building  3 sky  4 vegetation  5 car  6 person  7 pole
    255 ignore (a small "unlabelled object" blob in roughly 20% of images)

On-disk layout written by :func:`generate_dataset` follows the Cityscapes
convention that ``mmseg.datasets.CityscapesDataset`` scans::

    OUT/leftImg8bit/{train,val}/synth/synth_{i:05d}_000000_leftImg8bit.png
    OUT/gtFine/{train,val}/synth/synth_{i:05d}_000000_gtFine_labelTrainIds.png
    OUT/meta.json

Command line::

    python -m rewardseg.synthetic OUT --num-train 200 --num-val 50 \
        --height 128 --width 256 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "CLASSES",
    "PALETTE",
    "NUM_CLASSES",
    "IGNORE_INDEX",
    "IMG_SUFFIX",
    "SEG_MAP_SUFFIX",
    "SPLITS",
    "MIN_SIZE",
    "render_scene",
    "image_seed",
    "colorize",
    "generate_dataset",
    "main",
]

CLASSES: Tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "sky",
    "vegetation",
    "car",
    "person",
    "pole",
)
# Cityscapes colours for the same classes.
PALETTE: List[List[int]] = [
    [128, 64, 128],
    [244, 35, 232],
    [70, 70, 70],
    [70, 130, 180],
    [107, 142, 35],
    [0, 0, 142],
    [220, 20, 60],
    [153, 153, 153],
]
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255
IMG_SUFFIX = "_leftImg8bit.png"
SEG_MAP_SUFFIX = "_gtFine_labelTrainIds.png"
SPLITS: Tuple[str, ...] = ("train", "val")
CITY = "synth"
MIN_SIZE = 16

ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, CAR, PERSON, POLE = range(NUM_CLASSES)

_F = np.float32


# --------------------------------------------------------------------------- #
# argument validation
# --------------------------------------------------------------------------- #
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(value)}")
    return int(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


# --------------------------------------------------------------------------- #
# small numpy drawing helpers
# --------------------------------------------------------------------------- #
def _value_noise(rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Smooth value noise in [0, 1] of shape (h, w) (bilinear + smoothstep)."""
    cy, cx = max(1, int(cells_y)), max(1, int(cells_x))
    grid = rng.random((cy + 1, cx + 1), dtype=_F)
    ys = np.linspace(0.0, cy, h, dtype=_F)
    xs = np.linspace(0.0, cx, w, dtype=_F)
    y0 = np.minimum(ys.astype(np.int64), cy - 1)
    x0 = np.minimum(xs.astype(np.int64), cx - 1)
    fy = ys - y0
    fx = xs - x0
    fy = (fy * fy * (3 - 2 * fy))[:, None]
    fx = (fx * fx * (3 - 2 * fx))[None, :]
    yi, xi = y0[:, None], x0[None, :]
    top = grid[yi, xi] * (1 - fx) + grid[yi, xi + 1] * fx
    bot = grid[yi + 1, xi] * (1 - fx) + grid[yi + 1, xi + 1] * fx
    return (top * (1 - fy) + bot * fy).astype(_F)


def _jitter(rng: np.random.Generator, rgb: Sequence[float], sigma: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, _F) + rng.normal(0.0, sigma, 3).astype(_F), 0, 255)


def _pick(rng: np.random.Generator, options: Sequence[Sequence[float]]) -> np.ndarray:
    return np.asarray(options[int(rng.integers(len(options)))], _F)


class _Canvas:
    """Image + label being drawn, plus shared per-image noise fields."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng = rng
        self.h = h
        self.w = w
        self.img = np.zeros((h, w, 3), _F)
        self.label = np.zeros((h, w), np.uint8)
        self.yy = np.arange(h, dtype=_F)[:, None]
        self.xx = np.arange(w, dtype=_F)[None, :]
        self.fine = rng.random((h, w), dtype=_F)  # per-pixel texture noise
        self.mid = _value_noise(rng, h, w, max(2, h // 6), max(2, w // 6))
        self.low = _value_noise(rng, h, w, 3, 5)

    def window(self, y0: float, y1: float, x0: float, x1: float):
        """Integer bounding box clipped to the image, with local coordinates."""
        iy0, iy1 = max(0, int(np.floor(y0))), min(self.h, int(np.ceil(y1)) + 1)
        ix0, ix1 = max(0, int(np.floor(x0))), min(self.w, int(np.ceil(x1)) + 1)
        if iy1 <= iy0 or ix1 <= ix0:
            return None
        sy, sx = slice(iy0, iy1), slice(ix0, ix1)
        return sy, sx, self.yy[sy], self.xx[:, sx]

    def paint(self, win, mask: np.ndarray, cls: int, colour: np.ndarray) -> None:
        sy, sx, _, _ = win
        if not mask.any():
            return
        self.label[sy, sx][mask] = cls
        region = self.img[sy, sx]
        region[mask] = colour if colour.ndim == 1 else colour[mask]

    def texture(self, win, base: np.ndarray, fine_amp: float, mid_amp: float = 0.0) -> np.ndarray:
        sy, sx, _, _ = win
        gain = 1.0 + fine_amp * (self.fine[sy, sx] - 0.5) + mid_amp * (self.mid[sy, sx] - 0.5)
        return base[None, None, :] * gain[..., None]


def _rect(Y, X, cx, cy, hw, hh):
    # at least one pixel wide/high so thin objects never vanish
    return (np.abs(X - cx) <= max(hw, 0.5)) & (np.abs(Y - cy) <= max(hh, 0.5))


def _ellipse(Y, X, cx, cy, rx, ry):
    rx, ry = max(rx, 0.75), max(ry, 0.75)
    return ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1.0


def _round_rect(Y, X, cx, cy, hw, hh, r):
    r = max(0.0, min(r, hw, hh))
    dx = np.maximum(np.abs(X - cx) - (hw - r), 0.0)
    dy = np.maximum(np.abs(Y - cy) - (hh - r), 0.0)
    return dx * dx + dy * dy <= r * r + 0.25


# --------------------------------------------------------------------------- #
# scene rendering
# --------------------------------------------------------------------------- #
_FACADES = [
    [150, 150, 150], [182, 172, 150], [150, 92, 72], [205, 198, 186], [112, 102, 92],
    [172, 142, 112], [92, 97, 107], [128, 120, 118], [160, 128, 100],
]
_CAR_COLOURS = [
    [215, 215, 218], [30, 30, 34], [150, 152, 158], [160, 25, 30], [30, 50, 130],
    [85, 88, 92], [120, 120, 110], [40, 90, 60], [200, 170, 60], [110, 70, 40],
]
_LEGS = [[35, 40, 70], [30, 30, 32], [90, 90, 95], [150, 130, 95], [60, 70, 110]]
_SKIN = [[230, 190, 160], [200, 150, 115], [150, 100, 70], [100, 70, 50]]
_SIGNS = [[200, 30, 30], [30, 70, 180], [230, 200, 40], [235, 235, 235], [30, 130, 60]]


class _Layout:
    """Scene geometry: horizon, vanishing point and ground widths (all per image)."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.h, self.w = h, w
        self.yh = h * rng.uniform(0.34, 0.48)  # horizon row
        self.vx = w * rng.uniform(0.30, 0.70)  # vanishing point column
        self.tden = max(h - 1 - self.yh, 1.0)
        self.road = w * rng.uniform(0.40, 0.70)  # road half width at the bottom row
        self.side = (w * rng.uniform(0.15, 0.45), w * rng.uniform(0.15, 0.45))  # left/right
        self.verge = tuple(
            w * rng.uniform(0.05, 0.20) if rng.random() < 0.4 else 0.0 for _ in range(2)
        )

    def y_of(self, t: float) -> float:
        return self.yh + t * self.tden

    def sidewalk_x(self, t: float, side: int, u: float) -> float:
        """x on the left (side=-1) or right (+1) sidewalk; u=0 at the curb, 1 outside."""
        s = self.side[0 if side < 0 else 1]
        return self.vx + side * (self.road + u * s) * t


def _draw_background(c: _Canvas, L: _Layout) -> Dict[str, Any]:
    rng, h, w, yy, xx = c.rng, c.h, c.w, c.yy, c.xx
    xcol = xx[0]

    # ---- sky -------------------------------------------------------------
    overcast = rng.random() < 0.25
    if overcast:
        g = rng.uniform(150, 215)
        sky_top = _jitter(rng, [g - 8, g, g + 10], 8)
        sky_hor = _jitter(rng, [g + 15, g + 18, g + 20], 8)
    else:
        sky_top = _jitter(rng, [60, 115, 195], 15)
        sky_hor = _jitter(rng, [175, 198, 225], 12)
    s = np.clip(yy / max(L.yh, 1.0), 0, 1)[..., None]  # (h,1,1)
    sky = sky_top * (1 - s) + sky_hor * s
    clouds = np.clip((c.low - rng.uniform(0.35, 0.75)) * 4.0, 0, 1) * rng.uniform(0.3, 0.9)
    cloud_col = _jitter(rng, [228, 230, 235], 10)
    sky = sky * (1 - clouds[..., None]) + cloud_col * clouds[..., None]
    sky = sky * (1 + 0.04 * (c.fine[..., None] - 0.5))

    # ---- skyline: building / tree-line / distant segments ------------------
    edges = [0.0]
    while edges[-1] < w:
        edges.append(edges[-1] + w * rng.uniform(0.05, 0.20))
    e = np.asarray(edges, _F)
    x0s, x1s = e[:-1], e[1:]
    n = len(x0s)
    xc = (x0s + x1s) / 2
    dist = np.abs(xc - L.vx) / w  # 0 near the vanishing point, ~0.7 at edges
    kind = rng.choice(3, size=n, p=[0.66, 0.24, 0.10])  # 0 building, 1 trees, 2 distant
    top = L.yh - h * (rng.uniform(0.08, 0.30, n) + dist * rng.uniform(0.3, 1.2, n))
    top = np.where(kind == 2, L.yh - h * rng.uniform(0.02, 0.10, n), top)
    top = np.where(kind == 1, L.yh - h * rng.uniform(0.08, 0.28, n), top)
    slope = rng.uniform(0.0, 0.35, n)
    seg = np.minimum(np.searchsorted(x1s, xcol, side="right"), n - 1)
    top_col = top[seg] - slope[seg] * (np.abs(xcol - L.vx) - dist[seg] * w)
    bumps = _value_noise(rng, 1, w, 1, max(2, w // 10))[0]
    top_col = np.where(kind[seg] == 1, top_col - (bumps - 0.5) * h * 0.12, top_col)

    facade = np.stack([_jitter(rng, _pick(rng, _FACADES), 14) for _ in range(n)])
    facade *= rng.uniform(0.75, 1.15, (n, 1)).astype(_F)
    veg_col = np.stack([_jitter(rng, [60, 95, 40], 14) for _ in range(n)])
    has_win = (rng.random(n) < 0.85) & (kind == 0)
    px = np.maximum(2.5, w * rng.uniform(0.018, 0.040, n) * (0.5 + 1.2 * dist))
    py = px * rng.uniform(0.9, 1.6, n)
    pw = px * rng.uniform(0.35, 0.65, n)
    ph = py * rng.uniform(0.35, 0.60, n)
    win_col = np.stack(
        [
            _jitter(rng, [35, 40, 52], 10)
            if rng.random() < 0.6
            else _jitter(rng, [125, 145, 165], 15)
            for _ in range(n)
        ]
    )

    above = yy < top_col[None, :]
    is_tree = (kind[seg] == 1)[None, :]
    lx = xx - x0s[seg][None, :]
    rx = x1s[seg][None, :] - xx
    dy = yy - top_col[None, :]
    spx, spy = px[seg][None, :], py[seg][None, :]
    windows = (
        has_win[seg][None, :]
        & (lx % spx < pw[seg][None, :])
        & (dy % spy < ph[seg][None, :])
        & (dy > 0.6 * spy)
        & (lx > 0.3 * spx)
        & (rx > 0.3 * spx)
    )
    bld = facade[seg][None, :, :] * (0.85 + 0.3 * c.mid[..., None]) * (0.93 + 0.14 * c.fine[..., None])
    bld = np.where(windows[..., None], win_col[seg][None, :, :] * (0.8 + 0.4 * c.fine[..., None]), bld)
    trees = veg_col[seg][None, :, :] * (0.55 + 0.9 * c.fine[..., None]) * (0.8 + 0.4 * c.mid[..., None])
    bg = np.where(is_tree[..., None], trees, bld)
    # atmospheric haze: distant (near vanishing point) structures fade towards the sky
    haze = (rng.uniform(0.0, 0.45) * np.clip(1 - 3 * dist[seg], 0, 1))[None, :, None]
    bg = bg * (1 - haze) + sky_hor * haze
    c.img[:] = np.where(above[..., None], sky, bg)
    c.label[:] = np.where(above, SKY, np.where(is_tree, VEGETATION, BUILDING))

    # ---- ground: verge, sidewalk, road -------------------------------------
    t = (yy - L.yh) / L.tden  # (h,1)
    ground = t > 0
    d = np.abs(xx - L.vx)
    right = xx >= L.vx
    side_w = np.where(right, L.side[1], L.side[0])
    verge_w = np.where(right, L.verge[1], L.verge[0])
    road_m = ground & (d <= L.road * t)
    walk_m = ground & (d <= (L.road + side_w) * t) & ~road_m
    verge_m = ground & (d <= (L.road + side_w + verge_w) * t) & ~road_m & ~walk_m

    depth = 1.0 / (np.maximum(t, 0) + 0.06)  # ~ distance along the street

    grass = _jitter(rng, [80, 115, 45], 14)
    gtex = grass * (0.6 + 0.8 * c.fine[..., None]) * (0.8 + 0.4 * c.mid[..., None])
    c.img[verge_m] = gtex[verge_m]
    c.label[verge_m] = VEGETATION

    walk = _jitter(rng, _pick(rng, [[150, 148, 145], [175, 165, 150], [160, 130, 125], [125, 125, 130]]), 12)
    tiles = (depth * rng.uniform(2.0, 5.0)) % 1.0 < 0.12
    curb = ground & (d > L.road * t) & (d <= L.road * t + 0.02 * w * t + 0.6)
    wtex = walk * (0.9 + 0.2 * c.fine[..., None]) * (0.85 + 0.3 * c.mid[..., None])
    wtex = np.where(tiles[..., None], wtex * 0.8, wtex)
    wtex = np.where(curb[..., None], wtex * 1.2 + 10, wtex)
    c.img[walk_m] = np.broadcast_to(wtex, c.img.shape)[walk_m]
    c.label[walk_m] = SIDEWALK

    g = rng.uniform(55, 115)
    asphalt = _jitter(rng, [g, g, g + 4], 6)
    rtex = asphalt * (0.9 + 0.2 * c.fine[..., None]) * (0.75 + 0.5 * c.low[..., None])
    mark_col = _jitter(rng, [215, 215, 205] if rng.random() < 0.8 else [220, 190, 60], 10)
    lane_off = rng.uniform(-0.25, 0.25) * L.road
    lw = np.maximum(0.55, 0.012 * w * t)
    dash = (depth * rng.uniform(1.2, 3.0)) % 1.0 < 0.5
    marks = ground & dash & (np.abs(xx - (L.vx + lane_off * t)) <= lw)
    if rng.random() < 0.5:
        marks = marks | (ground & (d <= L.road * t - 0.02 * w * t) & (d > L.road * t - 0.02 * w * t - 2 * lw))
    rtex = np.where(marks[..., None], mark_col * (0.85 + 0.2 * c.fine[..., None]), rtex)
    c.img[road_m] = np.broadcast_to(rtex, c.img.shape)[road_m]
    c.label[road_m] = ROAD
    return {"seg_top": top_col}


def _car(c: _Canvas, L: _Layout, t: float, parked: bool, side: int) -> Tuple[float, Callable]:
    rng, w = c.rng, c.w
    yb = L.y_of(t)
    if parked:
        cw = t * w * rng.uniform(0.40, 0.60) + 4
        ch = t * w * rng.uniform(0.17, 0.23) + 2.5
        xc = L.vx + side * (L.road * t - 0.25 * cw)
    else:
        cw = t * w * rng.uniform(0.18, 0.27) + 3
        ch = cw * rng.uniform(0.70, 0.90)
        xc = L.vx + rng.uniform(-0.75, 0.75) * L.road * t
    body = _jitter(rng, _pick(rng, _CAR_COLOURS), 14)
    glass = _jitter(rng, [45, 55, 65], 10)
    tyre = _jitter(rng, [25, 25, 28], 5)
    cab_top = rng.uniform(0.55, 0.75)
    cab_off = rng.uniform(-0.1, 0.1) * cw if parked else 0.0

    def draw() -> None:
        win = c.window(yb - ch, yb + 0.1 * ch + 1, xc - 0.6 * cw, xc + 0.6 * cw)
        if win is None:
            return
        sy, sx, Y, X = win
        shadow = _ellipse(Y, X, xc, yb, 0.58 * cw, 0.07 * ch + 0.8)
        c.img[sy, sx][shadow] *= 0.55
        ytop, ycb = yb - ch, yb - 0.58 * ch
        frac = np.clip((Y - ytop) / max(ycb - ytop, 1e-3), 0, 1)
        half = 0.5 * cw * (cab_top + (0.95 - cab_top) * frac)
        cabin = (np.abs(X - xc - cab_off) <= half) & (Y >= ytop) & (Y <= ycb + 0.5)
        hull = _round_rect(Y, X, xc, yb - 0.36 * ch, 0.5 * cw, 0.25 * ch, 0.18 * min(cw, ch))
        glass_m = cabin & (np.abs(X - xc - cab_off) <= half - 0.07 * cw) & (Y >= ytop + 0.12 * ch) & (Y <= ycb - 0.03 * ch)
        if parked:
            wheels = _ellipse(Y, X, xc - 0.3 * cw, yb - 0.11 * ch, 0.1 * cw, 0.13 * ch) | _ellipse(
                Y, X, xc + 0.3 * cw, yb - 0.11 * ch, 0.1 * cw, 0.13 * ch
            )
        else:
            wheels = _rect(Y, X, xc - 0.37 * cw, yb - 0.07 * ch, 0.09 * cw, 0.07 * ch) | _rect(
                Y, X, xc + 0.37 * cw, yb - 0.07 * ch, 0.09 * cw, 0.07 * ch
            )
        shade = (1.15 - 0.35 * np.clip((Y - ytop) / max(ch, 1.0), 0, 1)) * np.ones_like(X)
        col = body[None, None, :] * shade[..., None] * (0.95 + 0.1 * c.fine[sy, sx][..., None])
        col = np.where(glass_m[..., None], glass[None, None, :] * (0.8 + 0.5 * c.mid[sy, sx][..., None]), col)
        if not parked:  # tail lights
            lights = _rect(Y, X, xc - 0.38 * cw, yb - 0.45 * ch, 0.07 * cw, 0.04 * ch) | _rect(
                Y, X, xc + 0.38 * cw, yb - 0.45 * ch, 0.07 * cw, 0.04 * ch
            )
            col = np.where(lights[..., None], np.asarray([190, 30, 25], _F), col)
        col = np.where(wheels[..., None], tyre, col)
        c.paint(win, cabin | hull | wheels, CAR, col)

    return yb, draw


def _person(c: _Canvas, L: _Layout, t: float, x: float) -> Tuple[float, Callable]:
    rng, h = c.rng, c.h
    yb = L.y_of(t)
    ph = 4 + t * h * rng.uniform(0.20, 0.32)
    pw = ph * rng.uniform(0.22, 0.32)
    torso = _jitter(rng, rng.uniform(20, 235, 3), 5)
    legs = _jitter(rng, _pick(rng, _LEGS), 10)
    skin = _jitter(rng, _pick(rng, _SKIN), 8)
    stride = rng.uniform(0.0, 0.12) * ph

    def draw() -> None:
        win = c.window(yb - ph, yb, x - pw, x + pw)
        if win is None:
            return
        sy, sx, Y, X = win
        top = yb - ph
        head = _ellipse(Y, X, x, top + 0.08 * ph, 0.07 * ph, 0.085 * ph)
        body = _ellipse(Y, X, x, top + 0.36 * ph, 0.5 * pw, 0.22 * ph)
        arms = _rect(Y, X, x, top + 0.36 * ph, 0.55 * pw, 0.17 * ph) & (np.abs(X - x) > 0.3 * pw)
        lc = top + 0.76 * ph
        leg_l = _rect(Y, X, x - 0.2 * pw - stride * (Y - lc) / ph, lc, 0.14 * pw, 0.24 * ph)
        leg_r = _rect(Y, X, x + 0.2 * pw + stride * (Y - lc) / ph, lc, 0.14 * pw, 0.24 * ph)
        legs_m = leg_l | leg_r
        col = np.broadcast_to(torso * 1.0, Y.shape[:1] + X.shape[1:] + (3,)).copy()
        col[legs_m] = legs
        col[head] = skin
        col *= (0.9 + 0.2 * c.fine[sy, sx])[..., None]
        c.paint(win, head | body | arms | legs_m, PERSON, col)

    return yb, draw


def _pole(c: _Canvas, L: _Layout, t: float, x: float, side: int) -> Tuple[float, Callable]:
    rng, h, w = c.rng, c.h, c.w
    yb = L.y_of(t)
    cap = max(3, int(round(3 * w / 256)))
    pw = int(np.clip(round(rng.uniform(0.8, 1.2) * (1 + 2 * t) * w / 256), 1, cap))
    top = yb - (0.08 * h + t * h * rng.uniform(0.5, 0.9))
    x0 = int(np.floor(x))
    metal = _jitter(rng, _pick(rng, [[120, 122, 125], [75, 78, 80], [160, 160, 150], [60, 80, 60]]), 10)
    sign = rng.random() < 0.55
    round_sign = rng.random() < 0.4
    ss = max(2.0, t * h * rng.uniform(0.05, 0.09) + 1.5)
    sign_col = _jitter(rng, _pick(rng, _SIGNS), 12)
    sign_y = top + ss * rng.uniform(0.6, 2.5)
    lamp = (not sign) and rng.random() < 0.5
    arm = t * w * rng.uniform(0.04, 0.09) + 2

    def draw() -> None:
        win = c.window(top - ss, yb, x0 - arm - ss, x0 + pw + arm + ss)
        if win is None:
            return
        sy, sx, Y, X = win
        shaft = (X >= x0) & (X < x0 + pw) & (Y >= top) & (Y <= yb)
        col = np.broadcast_to(metal, Y.shape[:1] + X.shape[1:] + (3,)).copy()
        col *= (0.85 + 0.3 * c.fine[sy, sx])[..., None]
        m = shaft
        if sign:
            cx = x0 + pw / 2
            sm = _ellipse(Y, X, cx, sign_y, ss, ss) if round_sign else _rect(Y, X, cx, sign_y, ss, 0.8 * ss)
            col[sm] = sign_col
            m = m | sm
        if lamp:
            ax = x0 - side * arm / 2  # arm points towards the road
            am = _rect(Y, X, ax, top, arm / 2, max(0.5, (pw - 1) / 2))
            head = _rect(Y, X, x0 - side * arm, top + 1, max(1.0, pw), 1.0)
            m = m | am | head
        c.paint(win, m, POLE, col)

    return yb, draw


def _tree(c: _Canvas, L: _Layout, t: float, x: float) -> Tuple[float, Callable]:
    rng, h, w = c.rng, c.h, c.w
    yb = L.y_of(t)
    th = t * h * rng.uniform(0.12, 0.28) + 2
    tw = max(0.5, t * w * rng.uniform(0.004, 0.01))
    R = t * h * rng.uniform(0.14, 0.28) + 3
    cy = yb - th - 0.6 * R
    k = int(rng.integers(3, 6))
    blobs = [(x + rng.uniform(-0.5, 0.5) * R, cy + rng.uniform(-0.4, 0.3) * R, R * rng.uniform(0.5, 0.9)) for _ in range(k)]
    leaf = _jitter(rng, [65, 100, 40], 14)
    bark = _jitter(rng, [85, 65, 45], 10)

    def draw() -> None:
        win = c.window(cy - 1.4 * R, yb, x - 1.5 * R, x + 1.5 * R)
        if win is None:
            return
        sy, sx, Y, X = win
        trunk = _rect(Y, X, x, yb - th / 2 - 0.3 * R, tw, th / 2 + 0.3 * R)
        crown = np.zeros(trunk.shape, bool)
        for bx, by, br in blobs:
            crown |= _ellipse(Y, X, bx, by, br, br * 0.9)
        col = c.texture(win, leaf, 0.9, 0.5)
        col = np.where((trunk & ~crown)[..., None], bark, col)
        c.paint(win, crown | trunk, VEGETATION, col)

    return yb, draw


def _bush(c: _Canvas, L: _Layout, t: float, x: float) -> Tuple[float, Callable]:
    rng, w = c.rng, c.w
    yb = L.y_of(t)
    rx = t * w * rng.uniform(0.03, 0.08) + 2
    ry = rx * rng.uniform(0.4, 0.7)
    leaf = _jitter(rng, [70, 110, 45], 16)

    def draw() -> None:
        win = c.window(yb - 2 * ry, yb, x - rx, x + rx)
        if win is None:
            return
        _, _, Y, X = win
        m = _ellipse(Y, X, x, yb - 0.8 * ry, rx, ry)
        c.paint(win, m, VEGETATION, c.texture(win, leaf, 1.0, 0.4))

    return yb, draw


def _ignore_blob(c: _Canvas, L: _Layout) -> None:
    rng, h, w = c.rng, c.h, c.w
    r = min(h, w) * rng.uniform(0.03, 0.07) + 1
    cx = rng.uniform(0.05, 0.95) * w
    cy = rng.uniform(max(L.yh - 0.1 * h, 0), h - r)
    col = _jitter(rng, rng.uniform(30, 220, 3), 5)
    win = c.window(cy - r, cy + r, cx - 1.4 * r, cx + 1.4 * r)
    if win is None:
        return
    _, _, Y, X = win
    m = _ellipse(Y, X, cx, cy, r * rng.uniform(0.8, 1.4), r)
    c.paint(win, m, IGNORE_INDEX, c.texture(win, col, 0.5, 0.3))


def _blur(img: np.ndarray) -> np.ndarray:
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    v = (p[:-2] + 2 * p[1:-1] + p[2:]) * 0.25
    return (v[:, :-2] + 2 * v[:, 1:-1] + v[:, 2:]) * 0.25


def _post_process(c: _Canvas) -> np.ndarray:
    rng, h, w = c.rng, c.h, c.w
    img = c.img
    # soft cast shadows (buildings / trees) over the lower part of the scene
    if rng.random() < 0.5:
        sh = _value_noise(rng, h, w, 2, 4)
        shadow = np.clip((sh - rng.uniform(0.4, 0.6)) * 6, 0, 1) * rng.uniform(0.25, 0.5)
        img *= (1 - shadow)[..., None]
    # exposure, white balance and contrast
    img *= rng.uniform(0.65, 1.30) * rng.uniform(0.88, 1.12, 3).astype(_F)
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.75, 1.2) + mean
    # illumination gradient in a random direction
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(ang) * (c.xx / max(w - 1, 1) - 0.5) + np.sin(ang) * (c.yy / max(h - 1, 1) - 0.5)
    img *= (1 + rng.uniform(0.0, 0.5) * ramp)[..., None]
    u = rng.random()
    if u < 0.3:
        img = _blur(img)
    elif u < 0.4:
        img = _blur(_blur(img))
    img += rng.standard_normal(img.shape, dtype=_F) * rng.uniform(2.0, 9.0)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_scene(rng_seed: int, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render one synthetic street scene.

    Returns ``(img, label)``: ``img`` is ``uint8`` ``(height, width, 3)`` RGB and
    ``label`` is ``uint8`` ``(height, width)`` with values in ``0..7`` plus
    :data:`IGNORE_INDEX` (255) for the occasional unlabelled blob.  The output
    depends only on the arguments.
    """
    seed = _check_int("rng_seed", rng_seed, 0)
    h = _check_int("height", height, MIN_SIZE)
    w = _check_int("width", width, MIN_SIZE)
    rng = np.random.default_rng(seed)
    c = _Canvas(rng, h, w)
    L = _Layout(rng, h, w)
    _draw_background(c, L)

    objs: List[Tuple[float, Callable]] = []
    for _ in range(int(rng.integers(0, 5))):  # trees on the outer sidewalk / verge
        side = -1 if rng.random() < 0.5 else 1
        t = rng.uniform(0.05, 0.9)
        objs.append(_tree(c, L, t, L.sidewalk_x(t, side, rng.uniform(0.6, 1.2))))
    for _ in range(int(rng.integers(0, 4))):  # bushes along the facades
        side = -1 if rng.random() < 0.5 else 1
        t = rng.uniform(0.05, 0.9)
        objs.append(_bush(c, L, t, L.sidewalk_x(t, side, rng.uniform(0.85, 1.1))))
    for _ in range(int(rng.integers(1, 5))):  # poles (street lights, signs)
        side = -1 if rng.random() < 0.5 else 1
        t = rng.uniform(0.08, 1.0) ** 1.2
        u = rng.uniform(0.1, 0.35) if rng.random() < 0.7 else rng.uniform(0.7, 0.95)
        objs.append(_pole(c, L, t, L.sidewalk_x(t, side, u), side))
    n_persons = int(rng.integers(1, 7)) if rng.random() < 0.9 else 0
    for _ in range(n_persons):
        t = rng.uniform(0.05, 1.0) ** 1.3
        if rng.random() < 0.1:  # crossing the road
            x = L.vx + rng.uniform(-0.8, 0.8) * L.road * t
        else:
            x = L.sidewalk_x(t, -1 if rng.random() < 0.5 else 1, rng.uniform(0.15, 0.9))
        objs.append(_person(c, L, t, x))
    for _ in range(int(rng.integers(1, 6))):
        t = rng.uniform(0.06, 1.0) ** 1.2
        parked = rng.random() < 0.4
        objs.append(_car(c, L, t, parked, -1 if rng.random() < 0.5 else 1))

    # painter's algorithm: far (small y of the ground contact) to near
    for _, draw in sorted(objs, key=lambda o: o[0]):
        draw()
    if rng.random() < 0.2:
        _ignore_blob(c, L)
    img = _post_process(c)
    return img, c.label


def image_seed(seed: int, split: str, index: int) -> int:
    """Per-image seed derived from ``(seed, split, index)`` (stable across runs)."""
    seed = _check_int("seed", seed, 0)
    index = _check_int("index", index, 0)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    state = np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def colorize(label: np.ndarray) -> np.ndarray:
    """Map a trainId label map to RGB with :data:`PALETTE` (ignore -> black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:NUM_CLASSES] = np.asarray(PALETTE, np.uint8)
    return lut[np.asarray(label, np.uint8)]


# --------------------------------------------------------------------------- #
# dataset writer
# --------------------------------------------------------------------------- #
def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def generate_dataset(
    out_dir: Union[str, "os.PathLike[str]"],
    num_train: int,
    num_val: int,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Render and write a Cityscapes-layout synthetic dataset to ``out_dir``.

    Files are written into ``<out_dir>.tmp-<pid>`` and renamed into place only
    when everything (including ``meta.json``) has been written, so an
    interrupted run never leaves a complete-looking ``out_dir``.  Raises
    :class:`FileExistsError` if ``out_dir`` exists, unless ``overwrite=True``.
    Returns the metadata dict that is also stored as ``out_dir/meta.json``.
    """
    if not isinstance(out_dir, (str, os.PathLike)) or str(out_dir) == "":
        raise ValueError(f"out_dir must be a non-empty path, got {out_dir!r}")
    num_train = _check_int("num_train", num_train, 1)
    num_val = _check_int("num_val", num_val, 1)
    height = _check_int("height", height, MIN_SIZE)
    width = _check_int("width", width, MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    progress = _check_bool("progress", progress)
    overwrite = _check_bool("overwrite", overwrite)

    from PIL import Image
    from tqdm import tqdm

    final = Path(os.path.abspath(os.fspath(out_dir)))
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"out_dir {str(final)!r} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
    _remove(tmp)

    counts = {"train": num_train, "val": num_val}
    hist = np.zeros(256, np.int64)
    present = np.zeros(256, np.int64)
    t0 = time.perf_counter()
    try:
        with tqdm(total=num_train + num_val, desc=f"synth -> {final.name}", unit="img",
                  disable=not progress, dynamic_ncols=True) as bar:
            for split in SPLITS:
                img_dir = tmp / "leftImg8bit" / split / CITY
                ann_dir = tmp / "gtFine" / split / CITY
                img_dir.mkdir(parents=True)
                ann_dir.mkdir(parents=True)
                for i in range(counts[split]):
                    img, label = render_scene(image_seed(seed, split, i), height, width)
                    stem = f"{CITY}_{i:05d}_000000"
                    Image.fromarray(img).save(img_dir / f"{stem}{IMG_SUFFIX}", compress_level=1)
                    Image.fromarray(label).save(ann_dir / f"{stem}{SEG_MAP_SUFFIX}", compress_level=1)
                    if split == "train":
                        bc = np.bincount(label.ravel(), minlength=256)
                        hist += bc
                        present += bc > 0
                    bar.update(1)
        total = float(hist.sum())
        meta: Dict[str, Any] = {
            "generator": "rewardseg.synthetic",
            "format_version": 1,
            "classes": list(CLASSES),
            "palette": [list(p) for p in PALETTE],
            "ignore_index": IGNORE_INDEX,
            "img_suffix": IMG_SUFFIX,
            "seg_map_suffix": SEG_MAP_SUFFIX,
            "splits": {s: {"count": counts[s], "img_dir": f"leftImg8bit/{s}", "ann_dir": f"gtFine/{s}"} for s in SPLITS},
            "num_train": num_train,
            "num_val": num_val,
            "height": height,
            "width": width,
            "seed": seed,
            "img_suffix": IMG_SUFFIX,
            "label_suffix": SEG_MAP_SUFFIX,
            "train_labels": "gtFine/train",
            # fraction of all train pixels per class (+ ignore): sums to 1
            "train_class_pixel_frequency": {n: float(hist[k] / total) for k, n in enumerate(CLASSES)},
            "train_ignore_pixel_frequency": float(hist[IGNORE_INDEX] / total),
            # fraction of train images in which the class occurs at all
            "train_class_image_frequency": {n: float(present[k] / num_train) for k, n in enumerate(CLASSES)},
        }
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        if final.exists() or final.is_symlink():
            if not overwrite:
                raise FileExistsError(
                    f"out_dir {str(final)!r} appeared while generating; pass overwrite=True to replace it"
                )
            old = final.parent / f"{final.name}.old-{os.getpid()}"
            _remove(old)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta["root"] = str(final)
    meta["seconds"] = time.perf_counter() - t0
    return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rewardseg.synthetic",
        description="Generate the synthetic street-scene segmentation dataset (Cityscapes layout).",
    )
    p.add_argument("out", help="output directory (must not exist unless --overwrite)")
    p.add_argument("--num-train", type=int, default=200)
    p.add_argument("--num-val", type=int, default=50)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    a = p.parse_args(argv)
    try:
        meta = generate_dataset(a.out, a.num_train, a.num_val, height=a.height, width=a.width,
                                seed=a.seed, progress=not a.no_progress, overwrite=a.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    freq = ", ".join(f"{k}={v:.3f}" for k, v in meta["train_class_pixel_frequency"].items())
    print(f"wrote {meta['num_train']} train + {meta['num_val']} val images "
          f"({meta['height']}x{meta['width']}) to {meta['root']} in {meta['seconds']:.1f}s")
    print(f"train pixel frequencies: {freq}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
