"""Ground-truth rendering: flat palette colours on white, no anti-aliasing.

Each (shape, size) mask is computed once and cached, so rendering a scene is a few array
assignments (tens of thousands of 64 px scenes per second).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from unimm.world.palette import BACKGROUND, COLORS, SHAPES
from unimm.world.scene import Scene

_EPS = 1e-6


@lru_cache(maxsize=1024)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """(size, size) bool mask of a shape filling its bounding box (pixel centres at i + 0.5).

    Every shape touches all four sides of its box, so the detector can read the exact size.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    c = np.arange(size, dtype=np.float64) + 0.5
    r = size / 2
    dx = c[None, :] - r  # (1, S)
    dy = c[:, None] - r  # (S, 1)
    if shape == "square":
        m = np.ones((size, size), dtype=bool)
    elif shape == "circle":
        m = dx**2 + dy**2 <= r**2 + _EPS
    elif shape == "diamond":
        m = np.abs(dx) + np.abs(dy) <= r + _EPS
    else:  # triangle, apex up: half width grows linearly from the top row to size/2 at the base;
        # the +0.25 keeps a pixel (or two, for even sizes) in the top row so the box stays full
        depth = c[:, None]  # distance of the row centre below the top edge, (S, 1)
        m = np.abs(dx) <= depth / 2 + 0.25 + _EPS
    m = np.broadcast_to(m, (size, size)).copy()
    m.setflags(write=False)
    return m


def render(scene: Scene) -> np.ndarray:
    """(H, W, 3) uint8 image of the scene; objects drawn in order (they never overlap)."""
    res = scene.resolution
    img = np.empty((res, res, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    for o in scene.objects:
        x0, y0, x1, y1 = o.bbox()
        m = shape_mask(o.shape, o.size)
        # clip to the canvas so a slightly out-of-bounds object (e.g. a test) still renders
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, res), min(y1, res)
        if cx0 >= cx1 or cy0 >= cy1:
            continue
        sub = m[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        img[cy0:cy1, cx0:cx1][sub] = COLORS[o.color]
    return img


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """(B, H, W, 3) uint8; all scenes must share one resolution."""
    if not scenes:
        raise ValueError("render_batch needs at least one scene")
    res = {s.resolution for s in scenes}
    if len(res) != 1:
        raise ValueError(f"render_batch needs one resolution, got {sorted(res)}")
    return np.stack([render(s) for s in scenes])
