"""A scene's objects: cars, persons, poles, trees and bushes (each draws its parameters at
once and returns a painter called later, in depth order) and the unlabelled blob."""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

from .canvas import _F, _Canvas, _Layout, _ellipse, _jitter, _pick, _rect, _round_rect
from .spec import CAR, IGNORE_INDEX, PERSON, POLE, VEGETATION

_CAR_COLOURS = [
    [215, 215, 218], [30, 30, 34], [150, 152, 158], [160, 25, 30], [30, 50, 130],
    [85, 88, 92], [120, 120, 110], [40, 90, 60], [200, 170, 60], [110, 70, 40],
]
_LEGS = [[35, 40, 70], [30, 30, 32], [90, 90, 95], [150, 130, 95], [60, 70, 110]]
_SKIN = [[230, 190, 160], [200, 150, 115], [150, 100, 70], [100, 70, 50]]
_SIGNS = [[200, 30, 30], [30, 70, 180], [230, 200, 40], [235, 235, 235], [30, 130, 60]]


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


def _person(c: _Canvas, L: _Layout, t: float, x: float,
            size: float = 1.0) -> Tuple[float, Callable]:
    rng, h = c.rng, c.h
    yb = L.y_of(t)
    ph = (4 + t * h * rng.uniform(0.20, 0.32)) * size
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


def _pole(c: _Canvas, L: _Layout, t: float, x: float, side: int,
          width: float = 1.0) -> Tuple[float, Callable]:
    rng, h, w = c.rng, c.h, c.w
    yb = L.y_of(t)
    cap = max(3, int(round(3 * w / 256 * width)))
    pw = int(np.clip(round(rng.uniform(0.8, 1.2) * (1 + 2 * t) * w / 256 * width), 1, cap))
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
