"""A scene's background: the sky, the skyline (buildings, tree lines, distant blocks)
and the ground (verge, sidewalk, road)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from .canvas import _F, _Canvas, _Layout, _jitter, _pick, _value_noise
from .spec import BUILDING, ROAD, SIDEWALK, SKY, VEGETATION

_FACADES = [
    [150, 150, 150], [182, 172, 150], [150, 92, 72], [205, 198, 186], [112, 102, 92],
    [172, 142, 112], [92, 97, 107], [128, 120, 118], [160, 128, 100],
]


def _draw_background(c: _Canvas, L: _Layout) -> Dict[str, Any]:
    """Paint sky, skyline and ground into ``c`` (label and image); returns the skyline's
    row per column (``seg_top``)."""
    sky, sky_hor = _sky(c, L)
    top_col = _draw_skyline(c, L, sky, sky_hor)
    _draw_ground(c, L)
    return {"seg_top": top_col}


def _sky(c: _Canvas, L: _Layout) -> Tuple[np.ndarray, np.ndarray]:
    """The sky's colours ``(h, w, 3)`` (gradient, clouds) and its colour at the horizon."""
    rng, yy = c.rng, c.yy
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
    return sky, sky_hor


def _draw_skyline(c: _Canvas, L: _Layout, sky: np.ndarray, sky_hor: np.ndarray) -> np.ndarray:
    """Paint the sky and, below the skyline, building / tree-line / distant segments;
    returns the skyline's row per column."""
    rng, yy = c.rng, c.yy
    x0s, x1s, kind, dist, seg, top_col = _skyline_segments(c, L)
    n = len(x0s)
    facade = np.stack([_jitter(rng, _pick(rng, _FACADES), 14) for _ in range(n)])
    facade *= rng.uniform(0.75, 1.15, (n, 1)).astype(_F)
    veg_col = np.stack([_jitter(rng, [60, 95, 40], 14) for _ in range(n)])
    windows, win_col = _windows(c, x0s, x1s, kind, dist, seg, top_col)

    above = yy < top_col[None, :]
    is_tree = (kind[seg] == 1)[None, :]
    bld = facade[seg][None, :, :] * (0.85 + 0.3 * c.mid[..., None]) * (0.93 + 0.14 * c.fine[..., None])
    bld = np.where(windows[..., None], win_col[seg][None, :, :] * (0.8 + 0.4 * c.fine[..., None]), bld)
    trees = veg_col[seg][None, :, :] * (0.55 + 0.9 * c.fine[..., None]) * (0.8 + 0.4 * c.mid[..., None])
    bg = np.where(is_tree[..., None], trees, bld)
    # atmospheric haze: distant (near vanishing point) structures fade towards the sky
    haze = (rng.uniform(0.0, 0.45) * np.clip(1 - 3 * dist[seg], 0, 1))[None, :, None]
    bg = bg * (1 - haze) + sky_hor * haze
    c.img[:] = np.where(above[..., None], sky, bg)
    c.label[:] = np.where(above, SKY, np.where(is_tree, VEGETATION, BUILDING))
    return top_col


def _skyline_segments(c: _Canvas, L: _Layout) -> Tuple[np.ndarray, ...]:
    """The skyline's segments: their edges ``x0s, x1s``, kind (0 building, 1 trees,
    2 distant) and distance from the vanishing point; each column's segment ``seg`` and
    the skyline's row ``top_col``."""
    rng, h, w = c.rng, c.h, c.w
    xcol = c.xx[0]
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
    return x0s, x1s, kind, dist, seg, top_col


def _windows(c: _Canvas, x0s: np.ndarray, x1s: np.ndarray, kind: np.ndarray,
             dist: np.ndarray, seg: np.ndarray,
             top_col: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The building windows: a mask ``(h, w)`` (a grid per segment, most buildings have
    one) and each segment's window colour."""
    rng, w, yy, xx = c.rng, c.w, c.yy, c.xx
    n = len(x0s)
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
    return windows, win_col


def _draw_ground(c: _Canvas, L: _Layout) -> None:
    """Paint the ground below the horizon: grass verges, sidewalks (tiles, curb) and the
    road (asphalt, lane markings)."""
    rng, w, yy, xx = c.rng, c.w, c.yy, c.xx
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
