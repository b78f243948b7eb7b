"""Teacher-forced image-token loss and accuracy, split into object tokens and background tokens.

A scene is mostly white: at 64 px with 8 px patches about four in five image tokens are
background. The training loss averages over all of them, so a model can lower it by getting
the background right while the few tokens that carry the objects stay wrong. This diagnostic
scores eval-split text-to-image samples with the training objective and splits the per-token
cross-entropy and argmax accuracy by whether the target token's patch holds any object pixel
in the ground-truth render (a "background" patch is all white).

Which recipes: the discrete-token ones.
- next-token (chameleon, janus): the logits of `train_logits`, no condition dropout;
- masked tokens (showo, mmada): MASK_RATIO of each image's tokens masked (the same slots for
  every model, from a fixed seed), the cross-entropy taken at the masked slots as in training.
Continuous recipes (transfusion and its kin: flow or diffusion over latents) have no per-token
cross-entropy; they get {"applicable": False, "reason": ...}.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unimm.data.sample import Image, Sample
from unimm.data.sequence import IMAGE, collate
from unimm.evaluate.common import chunks
from unimm.evaluate.understanding import eval_samples
from unimm.world.palette import BACKGROUND
from unimm.world.tasks import with_layout

if TYPE_CHECKING:
    from unimm.recipes.base import UnifiedModel
    from unimm.recipes.chameleon import ChameleonModel
    from unimm.recipes.showo import ShowoModel

MASK_RATIO = 0.5  # masked recipes: fraction of each image's tokens masked


def object_patches(images: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, h * w) bool in raster order: True where the token's patch holds
    any pixel that is not the background colour."""
    N, H, W, _ = images.shape
    h, w = grid
    ph, pw = H // h, W // w
    fg = (images != np.asarray(BACKGROUND, dtype=np.uint8)).any(-1)  # (N, H, W)
    fg = fg.reshape(N, h, ph, w, pw).any(axis=(2, 4))  # (N, h, w)
    return fg.reshape(N, h * w)


def _slot_objects(slots: Tensor, objects: Tensor) -> Tensor:
    """(B, T) bool: whether each target image slot's patch holds an object. slots: (B, T) bool,
    each row's h * w target image slots in raster order; objects: (B, h * w) bool."""
    n = objects.shape[1]
    if not bool((slots.sum(1) == n).all()):
        raise ValueError(f"every sample needs exactly one target image of {n} tokens")
    raster = (slots.long().cumsum(1) - 1).clamp(0, n - 1)  # (B, T) index within the image
    return objects.gather(1, raster) & slots


def next_token_image_logits(
    model: ChameleonModel, samples: list[Sample]
) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher-forced logits of the target image tokens of `samples` (no condition dropout):
    (picked (K, V), their targets (K,), slots (B, T) bool), the K target image slots in
    row-major order, so a batch of one-image samples lays each sample's codes out in a row."""
    seqs = model.build(samples)  # no rng: no condition dropout
    batch = collate(seqs, model.text_tok.pad_id, device=model.device)
    slots = batch.loss_mask & (batch.modality == IMAGE)  # (B, T)
    targets = batch.ids[:, 1:]
    logits = model.train_logits(batch.ids[:, :-1], targets)  # (B, T-1, V)
    return logits[slots[:, 1:]].float(), targets[slots[:, 1:]], slots


def _next_token_scores(
    model: ChameleonModel, samples: list[Sample], objects: Tensor, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per target image token: (cross-entropy, argmax correct, is object), teacher forced
    (deterministic: `seed` is for the masked scorer's signature)."""
    picked, want, slots = next_token_image_logits(model, samples)
    is_object = _slot_objects(slots, objects)
    ce = F.cross_entropy(picked, want, reduction="none")
    return ce, picked.argmax(-1) == want, is_object[:, 1:][slots[:, 1:]]


def _masked_token_scores(
    model: ShowoModel, samples: list[Sample], objects: Tensor, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """As `_next_token_scores`, at the masked slots of a MASK_RATIO masking drawn from `seed`."""
    seqs = model.build(samples)
    batch = collate(seqs, model.text_tok.pad_id, device=model.device)
    slots = batch.loss_mask & (batch.modality == IMAGE)
    is_object = _slot_objects(slots, objects)
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(slots.shape, generator=g).to(slots.device).masked_fill(~slots, 2.0)
    rank = noise.argsort(1).argsort(1)  # (B, T) rank of each slot within its row
    k = math.ceil(MASK_RATIO * objects.shape[1])
    masked = slots & (rank < k)
    inputs = batch.ids.masked_fill(masked, model.mask_id)
    logits = model(inputs, mask=model.attention_mask(inputs, ~batch.valid))  # (B, T, V)
    picked, want = logits[masked].float(), batch.ids[masked]
    ce = F.cross_entropy(picked, want, reduction="none")
    return ce, picked.argmax(-1) == want, is_object[masked]


def has_next_token_images(model: UnifiedModel) -> bool:
    """Whether the model predicts image tokens one by one (chameleon, janus): its teacher-forced
    image likelihood is exact (`next_token_image_logits`)."""
    return _scorer(model)[0] is _next_token_scores


def _scorer(model: UnifiedModel):
    from unimm.recipes.chameleon import ChameleonModel  # the report imports this module
    from unimm.recipes.showo import ShowoModel

    if isinstance(model, ShowoModel):  # showo and mmada: check before their base class
        return _masked_token_scores, f"masked tokens ({MASK_RATIO:.0%} of each image masked)"
    if isinstance(model, ChameleonModel):
        return _next_token_scores, "next token"
    return None, None


def _group(ce: Tensor, correct: Tensor) -> dict:
    n = int(ce.numel())
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "tokens": 0}
    return {"loss": float(ce.mean()), "accuracy": float(correct.float().mean()), "tokens": n}


@torch.no_grad()
def image_token_scores(
    model: UnifiedModel, samples: list[Sample], seed: int = 0, batch_size: int = 16
) -> dict:
    """Loss, accuracy and token count of the target image tokens of text-to-image `samples`
    (each a text, then its target image), for object tokens, background tokens and all."""
    score, _ = _scorer(model)
    if score is None:
        raise ValueError(f"the {model.recipe} recipe has no per-token image cross-entropy")
    ces, oks, objs = [], [], []
    for k, batch in enumerate(chunks(samples, batch_size)):
        pixels = np.stack([s.pixels for x in batch for s in x.segments if isinstance(s, Image)])
        objects = torch.from_numpy(object_patches(pixels, model.image_tok.grid)).to(model.device)
        ce, ok, obj = score(model, list(batch), objects, seed + k)
        ces.append(ce.cpu())
        oks.append(ok.cpu())
        objs.append(obj.cpu())
    ce, ok, obj = torch.cat(ces), torch.cat(oks), torch.cat(objs)
    return {
        "n_samples": len(samples),
        "object": _group(ce[obj], ok[obj]),
        "background": _group(ce[~obj], ok[~obj]),
        "all": _group(ce, ok),
    }


def image_token_loss(
    model: UnifiedModel, n: int = 64, seed: int = 0, batch_size: int = 16, split: str = "eval"
) -> dict:
    """`image_token_scores` on n text-to-image samples of the world's eval split (or its
    held-out split), or why the recipe has no such loss (module docstring)."""
    _, objective = _scorer(model)
    if objective is None:
        return {
            "benchmark": "image_token_loss",
            "applicable": False,
            "reason": f"the {model.recipe} recipe generates continuous image tokens "
            "(flow / diffusion): there is no per-token cross-entropy",
        }
    samples = eval_samples("t2i", split, n, seed)
    if model.plans:  # scored as it trained: the true layout before the image
        samples = [with_layout(s) for s in samples]
    return {
        "benchmark": "image_token_loss",
        "applicable": True,
        "objective": objective,
        "split": split,
        **image_token_scores(model, samples, seed, batch_size),
    }


def token_loss_md(res: dict) -> list[str]:
    if not res["applicable"]:
        return [f"Image-token loss by patch: not applicable ({res['reason']}).", ""]
    lines = [
        f"Teacher-forced image-token loss ({res['objective']}; {res['n_samples']} "
        f"{res['split']}-split text-to-image samples), by whether the token's patch holds "
        "object pixels:",
        "",
        "| tokens | loss | accuracy | count |",
        "|---|---|---|---|",
    ]
    for name in ("object", "background", "all"):
        g = res[name]
        lines.append(f"| {name} | {g['loss']:.3f} | {g['accuracy']:.3f} | {g['tokens']} |")
    return lines + [""]
