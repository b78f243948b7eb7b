"""A classical detector that reads a Scene back from an image (no learned weights).

Steps, each chosen to survive the soft edges and noise of generated images:
1. Colour: every pixel is explained as a blend of white and one palette colour,
   p ~ white + t * (colour - white). The colour with the smallest residual wins and t is its
   "ink" amount. Blur only mixes an object with the white background, which stays on that line,
   so edge pixels keep their true colour instead of snapping to a neighbouring hue.
2. Ink pixels (t >= 0.5) are grouped into 8-connected components; a component whose pixels
   split into two large colour classes (two objects bridged by blur) is split by colour.
3. Components that are too small, too elongated, far from every palette colour, or of no
   dominant colour (noise) are rejected.
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
    ink_threshold: float = 0.5  # blend amount t above which a pixel belongs to an object
    min_area: float = 16.0  # px at 64 px (scaled by area); the smallest triangle has ~55
    max_residual: float = 60.0  # mean RGB distance from the white-colour line; above: no colour
    max_aspect: float = 2.0  # bounding boxes more elongated than this are not objects
    split_fraction: float = 0.25  # a second colour this common splits a component
    min_purity: float = 0.6  # share of a component's pixels in its majority colour (noise: ~1/6)
    tri_threshold: float = 0.25  # -a3 above this: triangle (clean: 0.48-0.54, others 0)
    quad_threshold: float = 0.14  # |a4| above: square (clean -0.29) or diamond (+0.29)
    # soft 4th-order cumulant, consulted only when the mask's a4 looks round: clean circle
    # |c4| < 0.002, diamond +0.0044, square -0.0167; blur leaves cumulants unchanged
    soft_diamond: float = 0.003
    soft_square: float = -0.009
    halo_threshold: float = 0.2  # faint pixels around a component that count as its soft ink


@dataclass(frozen=True, slots=True)
class Component:
    """One accepted ink blob with the features the classifier used (for debugging and reports)."""

    obj: Obj
    area: int
    residual: float
    fill: float
    a3: float
    a4: float
    soft_c4: float


def classify_pixels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> colour index (H, W), its ink amount t (H, W), residual (H, W), and
    the ink amount along every colour's line (H, W, K)."""
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
    return k, tk, rk, t


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


def soft_cumulants(weights: np.ndarray, w: int, h: int) -> tuple[float, float]:
    """(Im m3, Re c4) of a soft ink map, coordinates scaled by the object's box (w, h).

    With z = x + i y about the weighted centroid, m3 = E[z^3] and c4 = E[z^4] - 3 E[z^2]^2 are
    cumulants, and an isotropic Gaussian blur has none of order 3 or 4, so both are unchanged by
    blur (up to the box normalisation): the corners a threshold erodes still count here.
    """
    yy, xx = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    total = weights.sum() + 1e-12
    cx = (weights * xx).sum() / total
    cy = (weights * yy).sum() / total
    z = (xx - cx) / w - 1j * (yy - cy) / h
    m2 = (weights * z**2).sum() / total
    m3 = (weights * z**3).sum() / total
    m4 = (weights * z**4).sum() / total
    return float(m3.imag), float((m4 - 3 * m2**2).real)


def classify_shape(
    a3: float, a4: float, soft_c4: float, cfg: DetectorConfig, size_px: float = 10.0
) -> str:
    """size_px: the object's box side in pixels; pixelation makes small circles look faceted
    (a 7 px circle is nearly an octagon), so the soft thresholds widen below 10 px."""
    if -a3 > cfg.tri_threshold:
        return "triangle"
    if a4 < -cfg.quad_threshold:
        return "square"
    if a4 > cfg.quad_threshold:
        return "diamond"
    # the thresholded mask looks round: blur may have eroded a diamond's tips or a square's
    # corners, so ask the blur-invariant soft cumulant
    widen = max(1.0, 10.0 / max(size_px, 1e-6))
    if soft_c4 > cfg.soft_diamond * widen:
        return "diamond"
    if soft_c4 < cfg.soft_square * widen:
        return "square"
    return "circle"


def _soft_weights(
    part: np.ndarray,
    box: tuple[int, int, int, int],
    color_idx: int,
    k: np.ndarray,
    t_all: np.ndarray,
    other_ink: np.ndarray,
    cfg: DetectorConfig,
) -> np.ndarray:
    """The component's ink amounts plus its faint halo of the same colour, in a padded box."""
    y0, y1, x0, x1 = box
    res = part.shape[0]
    pad = max(2, round(3 * res / BASE_RESOLUTION))
    Y0, Y1, X0, X1 = max(0, y0 - pad), min(res, y1 + pad), max(0, x0 - pad), min(res, x1 + pad)
    t = np.clip(t_all[Y0:Y1, X0:X1, color_idx], 0.0, 1.0)
    own = part[Y0:Y1, X0:X1]
    halo = (k[Y0:Y1, X0:X1] == color_idx) & ~other_ink[Y0:Y1, X0:X1] & (t >= cfg.halo_threshold)
    return np.where(own | halo, t, 0.0)


def detect_components(image: np.ndarray, cfg: DetectorConfig | None = None) -> list[Component]:
    cfg = cfg or DetectorConfig()
    res = image.shape[0]
    area_scale = (res / BASE_RESOLUTION) ** 2
    k, t, r, t_all = classify_pixels(image)
    ink = t >= cfg.ink_threshold
    labels = label_components(ink)
    out: list[Component] = []
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    for lab_id, n in zip(ids, counts, strict=True):
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
            votes = np.bincount(k[part], minlength=len(_NAMES))
            color_idx = int(votes.argmax())
            resid = float(r[part].mean())
            if resid > cfg.max_residual or votes[color_idx] < cfg.min_purity * area:
                continue
            h, w = int(y1 - y0), int(x1 - x0)
            fill, a3, a4 = shape_features(part[y0:y1, x0:x1])
            soft = _soft_weights(part, (y0, y1, x0, x1), color_idx, k, t_all, ink & ~part, cfg)
            _, c4 = soft_cumulants(soft, w, h)
            size = max(1, round((w + h) / 2))
            shape = classify_shape(a3, a4, c4, cfg, size)
            obj = Obj(shape, _NAMES[color_idx], int(x0) + w // 2, int(y0) + h // 2, size)
            out.append(Component(obj, area, resid, fill, a3, a4, c4))
    return out


def detect(image: np.ndarray, cfg: DetectorConfig | None = None) -> Scene:
    """The scene the image shows (objects in reading order of their top-left pixel)."""
    if image.dtype != np.uint8:
        raise ValueError(f"detect needs a uint8 image, got {image.dtype}")
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"detect needs a square image, got {image.shape[:2]}")
    comps = detect_components(image, cfg)
    return Scene(tuple(c.obj for c in comps), image.shape[0])
