"""JanusFlow: rectified flow inside an autoregressive LLM, with decoupled image encoders
(arXiv 2411.07975).

JanusFlow keeps the LLM's next-token loss for text and trains the same LLM to predict rectified-
flow velocities of image latents. What sets it apart from Transfusion (unimm.recipes.transfusion,
whose layout, flow objective, samplers, CFG and text decoding this recipe shares):

- decoupled encoders: images given for understanding pass through an understanding encoder
  (SigLIP in the paper; here a small ViT over 8x8-px pixel patches trained with the model) and
  an MLP aligner; images being generated pass through a separate generation encoder, and
  velocities come out of a generation decoder (ConvNeXt blocks on the latent grid in the paper
  and here), both over the continuous tokens (VAE latents or pixel patches);
- the LLM attends causally (janusflow.image_attention = "bidirectional" switches to
  Transfusion's full attention inside an image);
- representation alignment (REPA) of the LLM's features of noisy generation tokens to the
  understanding encoder's features of the clean image, as an option (janusflow.repa_weight).

The paper conditions on t through a time token in the last begin-of-image slot; here t is added
to every generation token (as in Transfusion) so the prompt's KV cache stays valid across ODE
steps.
Legend: M images, N tokens per image (h * w), d token channels, D backbone width, U und width.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimm.data.images import to_tensor
from unimm.data.sample import Sample
from unimm.data.sequence import IMAGE
from unimm.model.masks import padding_mask
from unimm.recipes.parts import Parts
from unimm.recipes.transfusion import TransfusionModel, image_pixels
from unimm.tokenizers.pixel_patches import patchify
from unimm.tokenizers.vit_blocks import Transformer as ViT


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, pointwise MLP, residual (arXiv 2201.03545); (B, C, h, w)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)  # (B, h, w, C)
        return x + self.mlp(self.norm(y)).permute(0, 3, 1, 2)


class GridMLP(nn.Module):
    """Tokens (M, N, c_in) -> Linear -> ConvNeXt blocks on the (h, w) grid -> Linear -> (M, N,
    c_out): JanusFlow's generation encoder (c_in = d, c_out = D) and decoder (D -> d)."""

    def __init__(self, c_in: int, c_out: int, width: int, grid: tuple[int, int], blocks: int):
        super().__init__()
        self.grid = grid
        self.inp = nn.Linear(c_in, width)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(width) for _ in range(blocks)))
        self.out = nn.Linear(width, c_out)

    def forward(self, x: Tensor) -> Tensor:
        M, N, _ = x.shape
        h, w = self.grid
        y = self.inp(x).transpose(1, 2).reshape(M, -1, h, w)  # (M, W, h, w)
        y = self.blocks(y).flatten(2).transpose(1, 2)  # (M, N, W)
        return self.out(y)


class UnderstandingEncoder(nn.Module):
    """Pixels (M, 3, H, W) -> features (M, N, U) on the same 8x8-px patch grid as the model's
    image slots (a small ViT, trained jointly; SigLIP's role in the paper)."""

    def __init__(self, resolution: int, grid: tuple[int, int], dim: int, layers: int) -> None:
        super().__init__()
        self.patch = resolution // grid[0]
        self.embed = nn.Linear(3 * self.patch**2, dim)
        self.pos = nn.Parameter(torch.randn(1, grid[0] * grid[1], dim) * 0.02)
        self.vit = ViT(dim, layers, n_heads=4)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.vit(self.embed(patchify(pixels, self.patch)) + self.pos)


class JanusFlowModel(TransfusionModel):
    recipe = "janusflow"

    def __init__(self, parts: Parts):
        super().__init__(parts)
        jf, dim = parts.config.janusflow, parts.config.model.dim
        grid, d = parts.image.grid, parts.image.latent_dim
        # Generation encoder/decoder replace Transfusion's linear in/out projections.
        self.image_in = GridMLP(d, dim, dim, grid, jf.gen_blocks)
        self.image_out = GridMLP(dim, d, dim, grid, jf.gen_blocks)
        nn.init.zeros_(self.image_out.out.weight)
        nn.init.zeros_(self.image_out.out.bias)
        self.und_encoder = UnderstandingEncoder(
            self.image_resolution, grid, jf.und_dim, jf.und_layers
        )
        self.und_aligner = nn.Sequential(nn.Linear(jf.und_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        if jf.repa_weight > 0:
            if jf.repa_layer >= parts.config.model.n_layers:
                raise ValueError(f"janusflow.repa_layer {jf.repa_layer} >= model.n_layers")
            self.repa_proj = nn.Sequential(
                nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, jf.und_dim)
            )

    # ----- the recipe's choices, as hooks of the shared Transfusion machinery ---------------

    def context_tokens(self, pixels: list[np.ndarray], latents: Tensor) -> Tensor:
        if not pixels:
            return latents.new_zeros(0, self.image_tokens, self.parts.config.model.dim)
        feats = self.und_encoder(to_tensor(pixels, self.device))  # (M, N, U)
        return self.und_aligner(feats) + self.image_pos()

    def attention_mask(self, image_block: Tensor, valid: Tensor) -> Tensor:
        if self.parts.config.janusflow.image_attention == "bidirectional":
            return super().attention_mask(image_block, valid)
        return padding_mask(~valid)  # causal everywhere

    def image_span_mask(self, n: int) -> Tensor:
        if self.parts.config.janusflow.image_attention == "bidirectional":
            return super().image_span_mask(n)
        return torch.ones(n, n, dtype=torch.bool, device=self.device).tril()

    # ----- training -------------------------------------------------------------------------

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        batch, x1 = self.layout(samples, random.Random(seed))
        pixels = image_pixels(samples)
        is_image = batch.modality == IMAGE
        M, N, D = x1.shape[0], self.image_tokens, self.parts.config.model.dim
        target = batch.loss_mask[is_image].view(M, N)[:, 0]  # (M,)
        xt, t, velocity = self.flow.noise(x1[target], generator)
        tokens = x1.new_zeros(M, N, D)
        if bool(target.any()):
            tokens[target] = self.image_embed(xt, t).to(tokens.dtype)
        if not bool(target.all()):
            context = [p for p, is_t in zip(pixels, target.tolist(), strict=True) if not is_t]
            tokens[~target] = self.context_tokens(context, x1[~target]).to(tokens.dtype)
        x = self.embed(batch.ids, is_image, tokens)
        mask = self.attention_mask(batch.image_block, batch.valid)

        jf = self.parts.config.janusflow
        captured: list[Tensor] = []
        hook = None
        if jf.repa_weight > 0 and bool(target.any()):
            layer = self.backbone.layers[jf.repa_layer]
            hook = layer.register_forward_hook(lambda m, i, out: captured.append(out))
        try:
            hidden = self.backbone(None, mask=mask, return_hidden=True, embeds=x)  # (B, T, D)
        finally:
            if hook is not None:
                hook.remove()
        loss_text = self.text_loss(hidden, batch)
        out = {"loss_text": loss_text.detach()}
        loss = loss_text
        if bool(target.any()):
            pred = self.image_out(hidden[is_image].view(M, N, D)[target])
            weight = self.velocity_weights(pixels, target[:, None].expand(M, N))
            weight = None if weight is None else weight.view(pred.shape[:-1])
            loss_image = self.flow.loss(pred, velocity, weight)
            loss = loss + self.parts.config.flow.image_loss_weight * loss_image
            out["loss_image"] = loss_image.detach()
        if captured:
            feats = captured[0][is_image].view(M, N, D)[target]  # noisy generation tokens
            targets = [p for p, is_t in zip(pixels, target.tolist(), strict=True) if is_t]
            with torch.no_grad():
                clean = self.und_encoder(to_tensor(targets, self.device))  # (M_t, N, U)
            cos = F.cosine_similarity(self.repa_proj(feats).float(), clean.float(), dim=-1)
            loss_repa = 1.0 - cos.mean()
            loss = loss + jf.repa_weight * loss_repa
            out["loss_repa"] = loss_repa.detach()
        out["loss"] = loss
        out["tokens"] = torch.tensor(float(batch.valid.sum()))
        return out
