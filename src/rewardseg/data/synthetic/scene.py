"""One scene from one seed: background, objects placed on the street and drawn far to
near, post-processing (shadows, exposure, blur, noise); the per-image seed; colouring."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .background import _draw_background
from .canvas import _F, _Canvas, _Layout, _value_noise
from .objects import _bush, _car, _ignore_blob, _person, _pole, _tree
from .spec import MIN_SIZE, NUM_CLASSES, PALETTE, SPLITS, _check_int, _scene_options


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


def _count(rng: np.random.Generator, n: int, factor: float) -> int:
    """``n`` objects scaled by ``factor`` (a fractional part rounds up at random); a factor
    of 1 draws nothing, so the original scenes stay bit for bit what they were."""
    if factor == 1:
        return n
    x = n * factor
    return int(np.floor(x)) + int(rng.random() < x - np.floor(x))


def render_scene(rng_seed: int, height: int, width: int,
                 scene: Optional[Dict[str, Any]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Render one synthetic street scene (``scene``: the :data:`SCENE_KEYS` multipliers,
    missing ones 1).

    Returns ``(img, label)``: ``img`` is ``uint8`` ``(height, width, 3)`` RGB and
    ``label`` is ``uint8`` ``(height, width)`` with values in ``0..7`` plus
    :data:`IGNORE_INDEX` (255) for the occasional unlabelled blob.  The output
    depends only on the arguments.
    """
    seed = _check_int("rng_seed", rng_seed, 0)
    h = _check_int("height", height, MIN_SIZE)
    w = _check_int("width", width, MIN_SIZE)
    sc = _scene_options(scene)
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
    for _ in range(_count(rng, int(rng.integers(1, 5)), sc["poles"])):  # street lights, signs
        side = -1 if rng.random() < 0.5 else 1
        t = rng.uniform(0.08, 1.0) ** 1.2
        u = rng.uniform(0.1, 0.35) if rng.random() < 0.7 else rng.uniform(0.7, 0.95)
        objs.append(_pole(c, L, t, L.sidewalk_x(t, side, u), side, sc["pole_width"]))
    n_persons = int(rng.integers(1, 7)) if rng.random() < 0.9 else 0
    n_persons = _count(rng, n_persons, sc["persons"])
    for _ in range(n_persons):
        t = rng.uniform(0.05, 1.0) ** 1.3
        if rng.random() < 0.1:  # crossing the road
            x = L.vx + rng.uniform(-0.8, 0.8) * L.road * t
        else:
            x = L.sidewalk_x(t, -1 if rng.random() < 0.5 else 1, rng.uniform(0.15, 0.9))
        objs.append(_person(c, L, t, x, sc["person_size"]))
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
