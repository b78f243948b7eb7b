"""Measure how the detector copes with degraded renders (blur, noise, JPEG).

Run: PYTHONPATH=src python -m unimm.world.robustness --n 1000
Measured at 64 px (1000 scenes, seed 0, centres within 4 px): clean 100 %, blur sigma 0.5 100 %,
1.0 99.9 %, 1.5 99.8 %, 2.0 81.1 %, noise sigma 10/20 100 %, 40 97.4 %, blur 1 + noise 20
99.9 %, JPEG q50 98.7 %. At 32 px (300 scenes, blur scaled): clean 100 %, blur 1.5 99.7 %,
noise 40 80 %, JPEG q50 63 % (chroma subsampling smears 5-9 px objects).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable

import numpy as np

from unimm.world.degrade import add_noise, gaussian_blur, jpeg
from unimm.world.detector import detect
from unimm.world.render import render
from unimm.world.scene import sample_scene, scenes_match

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def degradations(resolution: int) -> dict[str, Degrade]:
    s = resolution / 64  # blur widths are given at 64 px and scaled

    def blur(sig: float) -> Degrade:
        return lambda im, r: gaussian_blur(im, sig * s)

    def noise(sig: float) -> Degrade:
        return lambda im, r: add_noise(im, sig, r)

    return {
        "clean": lambda im, r: im,
        "blur 0.5": blur(0.5),
        "blur 1.0": blur(1.0),
        "blur 1.5": blur(1.5),
        "blur 2.0": blur(2.0),
        "noise 10": noise(10),
        "noise 20": noise(20),
        "noise 40": noise(40),
        "blur 1 + noise 20": lambda im, r: add_noise(gaussian_blur(im, s), 20, r),
        "jpeg 50": lambda im, r: jpeg(im, 50),
    }


def measure(n: int = 1000, resolution: int = 64, seed: int = 0) -> dict[str, float]:
    """Share of scenes read exactly (colour-shape multiset, centres within 4 px scaled)."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng, resolution=resolution, heldout="any") for _ in range(n)]
    images = [render(sc) for sc in scenes]
    tol = 4 * resolution / 64
    out = {}
    for name, f in degradations(resolution).items():
        r = np.random.default_rng(seed)
        ok = sum(
            scenes_match(sc, detect(f(im, r)), pos_tol=tol)
            for sc, im in zip(scenes, images, strict=True)
        )
        out[name] = ok / n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for name, acc in measure(a.n, a.resolution, a.seed).items():
        print(f"{name:20s} {acc:.3f}")


if __name__ == "__main__":
    main()
