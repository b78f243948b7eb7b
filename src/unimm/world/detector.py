"""A classical detector that reads a Scene back from an image (no learned weights).

Steps, each chosen to survive the soft edges and noise of generated images:
1. Colour: every pixel is explained as a blend of white and one palette colour,
   p ~ white + t * (colour - white). The colour with the smallest residual wins and t is its
   "ink" amount. Blur only mixes an object with the white background, which stays on that line,
   so edge pixels keep their true colour instead of snapping to a neighbouring hue.
2. Ink pixels (t >= 0.5) are grouped into 8-connected components; a component whose pixels
   split into two large colour classes (two objects bridged by blur) is split by colour.
3. Components that are too small, too elongated, or far from every palette colour are rejected.
4. Shape from angular harmonics of the ink about its centroid: the r^2-weighted 3rd harmonic
   separates the upward triangle (odd symmetry) from the mirror-symmetric shapes, and the sign
   of the 4th harmonic separates the square (corners on the diagonals) from the diamond (corners
   on the axes), with the circle near zero. These integrals change little when corners round off,
   unlike the bounding-box fill ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unimm.world.palette import BACKGROUND, BASE_RESOLUTION, COLORS
from unimm.world.scene import Obj, Scene

_NAMES = tuple(COLORS)
_WHITE = np.array(BACKGROUND, dtype=np.float32)
_DIRS = np.array([COLORS[c] for c in _NAMES], dtype=np.float32) - _WHITE  # (K, 3)
_DIR_NORM2 = (_DIRS**2).sum(1)  # (K,)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    ink_threshold: float = 0.3  # blend amount t above which a pixel belongs to an object
    min_area: float = 16.0  # px at 64 px (scaled by area); the smallest triangle has ~55
    max_residual: float = 60.0  # mean RGB distance from the white-colour line; above: no colour
    max_aspect: float = 2.0  # bounding boxes more elongated than this are not objects
    split_fraction: float = 0.25  # a second colour this common splits a component
    tri_threshold: float = 0.25  # -a3 above this: triangle (clean: 0.48-0.54, others 0)
    quad_threshold: float = 0.14  # |a4| above: square (clean -0.29) or diamond (+0.29)


@dataclass(frozen=True, slots=True)
class Component:
    """One accepted ink blob with the features the classifier used (for debugging and reports)."""

    obj: Obj
    area: int
    residual: float
    fill: float
    a3: float
    a4: float


def classify_pixels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> colour index (H, W), ink amount t (H, W), residual (H, W)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detect needs an (H, W, 3) image, got shape {image.shape}")
    d = _WHITE - image.astype(np.float32)  # (H, W, 3), distance towards ink
    neg = -_DIRS  # (K, 3), white minus colour
    t = (d @ neg.T) / _DIR_NORM2  # (H, W, K) blend amount along each colour's line
    t = np.clip(t, 0.0, 1.5)
    # residual^2 = |d|^2 - 2 t <d, n> + t^2 |n|^2 for the clipped t
    res2 = (d**2).sum(-1, keepdims=True) - 2 * t * (d @ neg.T) + t**2 * _DIR_NORM2
    k = res2.argmin(-1)  # (H, W)
    tk = np.take_along_axis(t, k[..., None], -1)[..., 0]
    rk = np.sqrt(np.maximum(np.take_along_axis(res2, k[..., None], -1)[..., 0], 0.0))
    return k, tk, rk


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected labels of a bool mask: -1 off the mask, else the smallest flat index in the
    component. Min-propagation plus pointer jumping, so it converges in a few passes."""
    h, w = mask.shape
    big = h * w
    idx = np.arange(big, dtype=np.int64).reshape(h, w)
    lab = np.where(mask, idx, big)
    while True:
        p = np.pad(lab, 1, constant_values=big)
        m = lab.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(m, p[dy : dy + h, dx : dx + w], out=m)
        m = np.where(mask, m, big)
        flat = np.append(m.ravel(), big)
        for _ in range(4):  # pointer jumping: follow each label to its own label
            m = np.where(mask, flat[m], big)
            flat = np.append(m.ravel(), big)
        if np.array_equal(m, lab):
            break
        lab = m
    return np.where(mask, lab, -1)


def shape_features(mask: np.ndarray) -> tuple[float, float, float]:
    """(fill ratio of the bbox, a3, a4) of a bool mask cropped to its object.

    a_n = sum(r^2 * trig(n * theta)) / sum(r^2) about the centroid, with theta measured
    counter-clockwise from +x and y pointing up; a3 uses sin (an upward triangle gives a3 < 0),
    a4 uses cos.
    """
    ys, xs = np.nonzero(mask)
    h = ys.max() - ys.min() + 1
    w = xs.max() - xs.min() + 1
    fill = len(xs) / float(h * w)
    # pixel centres relative to the centroid, normalised per axis so a stretched shape still
    # reads as its undistorted self
    x = (xs - xs.mean()) / w
    y = -(ys - ys.mean()) / h
    r2 = x * x + y * y
    theta = np.arctan2(y, x)
    den = r2.sum() + 1e-12
    a3 = float((r2 * np.sin(3 * theta)).sum() / den)
    a4 = float((r2 * np.cos(4 * theta)).sum() / den)
    return fill, a3, a4


def classify_shape(a3: float, a4: float, cfg: DetectorConfig) -> str:
    if -a3 > cfg.tri_threshold:
        return "triangle"
    if a4 < -cfg.quad_threshold:
        return "square"
    if a4 > cfg.quad_threshold:
        return "diamond"
    return "circle"


def _component_obj(
    mask: np.ndarray, y0: int, x0: int, color: str, cfg: DetectorConfig
) -> tuple[Obj, float, float, float]:
    ys, xs = np.nonzero(mask)
    h = int(ys.max() - ys.min() + 1)
    w = int(xs.max() - xs.min() + 1)
    fill, a3, a4 = shape_features(mask)
    shape = classify_shape(a3, a4, cfg)
    bx0, by0 = x0 + int(xs.min()), y0 + int(ys.min())
    return Obj(shape, color, bx0 + w // 2, by0 + h // 2, max(1, round((w + h) / 2))), fill, a3, a4


def detect_components(image: np.ndarray, cfg: DetectorConfig | None = None) -> list[Component]:
    cfg = cfg or DetectorConfig()
    res = image.shape[0]
    area_scale = (res / BASE_RESOLUTION) ** 2
    k, t, r = classify_pixels(image)
    ink = t >= cfg.ink_threshold
    labels = label_components(ink)
    out: list[Component] = []
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    for lab_id, n in zip(ids, counts):
        if n < cfg.min_area * area_scale:
            continue
        comp = labels == lab_id
        cls = np.bincount(k[comp], minlength=len(_NAMES))
        order = np.argsort(cls)[::-1]
        parts = [comp]
        if cls[order[1]] >= cfg.split_fraction * n:  # two objects bridged by blur: split by colour
            parts = []
            for c in order[:2]:
                sub = label_components(comp & (k == c))
                parts += [sub == s for s in np.unique(sub[sub >= 0])]
        for part in parts:
            area = int(part.sum())
            if area < cfg.min_area * area_scale:
                continue
            ys, xs = np.nonzero(part)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            if max(y1 - y0, x1 - x0) > cfg.max_aspect * min(y1 - y0, x1 - x0):
                continue
            color_idx = int(np.bincount(k[part], minlength=len(_NAMES)).argmax())
            resid = float(r[part].mean())
            if resid > cfg.max_residual:
                continue
            crop = part[y0:y1, x0:x1]
            obj, fill, a3, a4 = _component_obj(crop, int(y0), int(x0), _NAMES[color_idx], cfg)
            out.append(Component(obj, area, resid, fill, a3, a4))
    return out


def detect(image: np.ndarray, cfg: DetectorConfig | None = None) -> Scene:
    """The scene the image shows (objects in reading order of their top-left pixel)."""
    if image.dtype != np.uint8:
        raise ValueError(f"detect needs a uint8 image, got {image.dtype}")
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"detect needs a square image, got {image.shape[:2]}")
    comps = detect_components(image, cfg)
    return Scene(tuple(c.obj for c in comps), image.shape[0])
