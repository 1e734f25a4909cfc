"""Numpy drawing primitives: value noise, colour jitter, shape masks, the canvas being
drawn and the street layout of a scene."""

from __future__ import annotations

from typing import Sequence

import numpy as np

_F = np.float32


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


