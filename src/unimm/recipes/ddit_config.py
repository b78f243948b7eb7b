"""Settings of the Dual Diffusion recipe (RunConfig.ddit); apart from the recipe so the run
config can name them without importing model code. The text diffusion's answer length, steps
and semi-autoregressive blocks are MMaDA's (RunConfig.diffusion), the image flow's time
sampling, sampler and steps Transfusion's (RunConfig.flow)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class DDiTConfig:
    # The joint loss L = image_loss_weight * L_image + text_loss_weight * L_text (the paper's
    # L_image + lambda * L_text, arXiv 2501.00289 Sec. 3; lambda is not in our notes). The
    # default 5 : 1 is Transfusion's flow.image_loss_weight, so the two recipes compare at the
    # same balance; flow.image_loss_weight itself is not read by this recipe.
    image_loss_weight: float = 5.0
    text_loss_weight: float = 1.0
    # Classifier-free guidance for text: the images of a sample whose target is text are
    # dropped with this probability in training (the image side uses train.cfg_dropout on the
    # prompt's text, like every recipe), so the model also learns the image-free answer.
    text_cfg_dropout: float = 0.1
    # Guidance scale on text logits, u + s (c - u) with u = the prompt without its images;
    # 1.0 = off. SamplingConfig.text_cfg_scale (CLI --text-cfg) overrides it per call.
    text_cfg_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.image_loss_weight < 0 or self.text_loss_weight < 0:
            raise ValueError("ddit.image_loss_weight and ddit.text_loss_weight must be >= 0")
        if self.image_loss_weight == 0 and self.text_loss_weight == 0:
            raise ValueError("ddit: at least one of the loss weights must be > 0")
        if not 0.0 <= self.text_cfg_dropout < 1.0:
            raise ValueError(
                f"ddit.text_cfg_dropout must be in [0, 1), got {self.text_cfg_dropout}"
            )
        if self.text_cfg_scale < 0:
            raise ValueError(f"ddit.text_cfg_scale must be >= 0, got {self.text_cfg_scale}")
