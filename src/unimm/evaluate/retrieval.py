"""Do generations show their own caption's content? A retrieval check on the user's data.

Each held-out caption i has a real image r_i and one generation g_i. In a feature space the run
already has, the generation should sit nearer its own caption's image than other captions'
images. Per generation, the own-caption AUC is the share of other pairs j with cos(g_i, r_i) >
cos(g_i, r_j) (ties count half); its mean over i is 0.5 when the generations ignore their
captions and 1.0 when every one lands nearest its own image. Pairs whose caption is the same
text as i's are left out of i's comparison (either image is right for it). Top-1 is how often
r_i is the nearest real image of all.

The feature space, in order of preference: the run's semantic encoder (recipes with decoupled
understanding: its mean patch feature), else the image tokenizer's continuous latent (VQ
before rounding, the VAE's posterior mean), else small pixels. The result names which, since a
space that sees only colours and layout judges less than one trained against text.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from unimm.data.images import to_tensor

Features = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [-1, 1] -> (B, D)


def feature_space(model) -> tuple[Features, str]:
    """(features of a batch of images, the space's name) for a UnifiedModel."""
    parts = model.parts
    semantic = getattr(parts, "semantic", None)
    if semantic is not None:
        name = f"the run's semantic encoder ({type(semantic).__name__}, mean patch feature)"
        return (lambda x: semantic.features(x).mean(1)), name
    tok = parts.image
    if hasattr(tok, "_encode_latent"):  # VQ: the latent grid before its codes are looked up
        return (lambda x: tok._encode_latent(x)[0].flatten(1)), (
            f"the run's image tokenizer ({type(tok).__name__} latent grid)"
        )
    if hasattr(tok, "posterior"):
        return (lambda x: tok.posterior(x)[0].flatten(1)), (
            f"the run's image tokenizer ({type(tok).__name__} posterior mean)"
        )
    return (lambda x: F.adaptive_avg_pool2d(x, 8).flatten(1)), "pixels (8x8 average)"


@torch.no_grad()
def embed(features: Features, images: np.ndarray, device, batch: int = 64) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, D) unit vectors."""
    out = [features(to_tensor(images[i : i + batch], device)).float().cpu()
           for i in range(0, len(images), batch)]  # fmt: skip
    return F.normalize(torch.cat(out), dim=-1)


def own_caption_scores(gen: torch.Tensor, real: torch.Tensor, captions: list[str]) -> dict:
    """gen, real: (N, D) unit vectors of the generations and their captions' real images."""
    n = len(captions)
    if n < 2 or gen.shape != real.shape or len(real) != n:
        raise ValueError(f"need >= 2 pairs of equal counts, got {len(gen)}, {len(real)}, {n}")
    sim = gen @ real.T  # (N, N): generation i against real image j
    own = sim.diagonal()[:, None]
    text = np.array(captions, dtype=object)
    other = torch.from_numpy(text[:, None] != text[None, :])  # same caption: not a rival
    wins = ((own > sim).float() + 0.5 * (own == sim).float()) * other
    rivals = other.sum(1)
    has = rivals > 0
    if not has.any():
        raise ValueError("every caption is the same text: nothing to tell apart")
    auc = (wins.sum(1)[has] / rivals[has]).mean().item()
    top1 = (sim.argmax(1) == torch.arange(n)).float().mean().item()
    return {"own_caption_auc": auc, "top1": top1, "chance_top1": 1.0 / n, "pairs": n}


def retrieval_check(model, generated: np.ndarray, real: np.ndarray, captions: list[str]) -> dict:
    features, name = feature_space(model)
    device = model.device
    scores = own_caption_scores(
        embed(features, generated, device), embed(features, real, device), captions
    )
    return {**scores, "feature_space": name}
