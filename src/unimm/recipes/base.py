"""The one interface that training, evaluation, the CLI and the server use for every recipe.

A recipe is a named choice of tokenizers, sequence layout, mask policy, backbone, objective and
sampler. Whatever the paradigm, a unified model can:
- `loss(samples)`: train on any mixture of tasks (every task is a Sample);
- `generate(prompts, modality=...)`: continue each prompt (a list of segments) with one text or
  one image segment;
- `save_pretrained(dir)` / `from_pretrained(dir)`: a self-contained checkpoint directory.
The evaluators only need the convenience wrappers below, so they never branch on the paradigm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from unimm.data.sample import Image, Sample, Segment, Text
from unimm.paradigms.rng import Seed

Modality = Literal["text", "image"]


@dataclass
class SamplingConfig:
    """Decoding settings. Defaults are the ones the quickstart evaluation uses."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float = 5.0  # image generation only; 1.0 turns guidance off
    # Guidance leaves the probability of blank background to the conditional model
    # (unimm.paradigms.guidance; docs/LOG.md: 0.12 -> 0.20 GenEval-scene); False = standard CFG.
    cfg_keep_background: bool = True
    max_new_tokens: int = 48  # text only; images always produce a whole image
    steps: int | None = None  # iterative samplers (diffusion, flow): None = the recipe's default
    # Masked-diffusion text (MMaDA): semi-autoregressive blocks over the answer, filled left to
    # right (LLaDA arXiv 2502.09992); None = the run config's diffusion.text_blocks.
    text_blocks: int | None = None
    # Masked-diffusion text with guidance on the image (D-DiT): u + s (c - u), u = the prompt
    # without its images; None = the run config's ddit.text_cfg_scale, 1.0 = off.
    text_cfg_scale: float | None = None
    # The layout a planning model (train.t2i_plan / edit_plan) writes before an image: None
    # samples it at `temperature`, 0 writes the likeliest one.
    layout_temperature: float | None = None


class UnsupportedTask(ValueError):
    """A recipe was asked for something its design cannot express (e.g. inpainting with a
    purely autoregressive model)."""


class UnifiedModel(nn.Module):
    recipe: ClassVar[str]
    # Which image tokenizer the pipeline prepares: "vq" (trained discrete codes) or
    # "continuous" (raw pixel patches or VAE latents, per RunConfig.continuous_tokenizer).
    image_tokenizer_kind: ClassVar[str] = "vq"
    # True: the pipeline also prepares a semantic encoder (unimm.tokenizers.semantic) in
    # Parts.semantic, which the recipe reads images for understanding with.
    uses_semantic_encoder: ClassVar[bool] = False

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Refuse options this recipe cannot use; the pipeline calls it before any tokenizer
        trains, so a wrong option costs no minutes. Raises ValueError."""
        cls.uses_rope_2d(config)
        cls.uses_t2i_plan(config)

    @classmethod
    def uses_t2i_plan(cls, config: Any) -> bool:
        """train.t2i_plan and edit_plan: only a recipe whose image generation writes the layout
        before the image (chameleon) can use them; elsewhere layouts would be trained and never
        written."""
        for name in ("t2i_plan", "edit_plan"):
            if getattr(config.train, name):
                raise ValueError(
                    f"train.{name} is for the chameleon recipe (it writes a layout before each "
                    f"image it draws); the {cls.recipe} recipe does not"
                )
        return False

    @classmethod
    def uses_rope_2d(cls, config: Any) -> bool:
        """model.rope_2d_pairs: only a recipe that builds (sequence, row, column) positions
        for its image tokens can use it (chameleon); elsewhere it would silently do nothing."""
        if config.model.rope_2d_pairs:
            raise ValueError(
                f"model.rope_2d_pairs is for the chameleon recipe (2-D positions of its image "
                f"codes); the {cls.recipe} recipe does not build them"
            )
        return False

    @classmethod
    def init_checkpoint(cls, config: Any) -> Path | None:
        """A trained checkpoint this run starts from (e.g. MetaQuery's pre-trained understanding
        model), whose text and image tokenizers the pipeline then reuses; None: train them."""
        return None

    @property
    def image_resolution(self) -> int:
        """Side of the square images this model reads and writes."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the weights are: recipes build their batches (ids, masks, images) here."""
        return next(self.parameters()).device

    def _apply(self, fn, recurse=True):
        # The tokenizers in `self.parts` are not submodules (they are frozen and saved apart),
        # so .to() / .cuda() would leave them behind: they follow the weights' device (only the
        # device: their dtype stays their own).
        super()._apply(fn, recurse)
        parts = getattr(self, "parts", None)
        params = list(self.parameters())
        if parts is not None and params:
            for tok in (parts.image, parts.semantic):
                if isinstance(tok, nn.Module):
                    tok.to(params[0].device)
        return self

    def loss(self, samples: list[Sample], generator: torch.Generator | None = None) -> dict:
        """Return {"loss": scalar to backprop, other scalars to log}."""
        raise NotImplementedError

    def generate(
        self,
        prompts: list[list[Segment]],
        modality: Modality,
        sampling: SamplingConfig | None = None,
        seed: Seed = 0,
    ) -> list[Segment]:
        """One text or image segment per prompt. seed: an int seeds one generator for the whole
        batch; a sequence of len(prompts) ints gives prompt i its own generator, so that its
        output does not depend on which prompts share the batch (dynamic batching in the
        server): row i equals generate([prompts[i]], ..., seed=[seed[i]]), which equals
        seed=seed[i]. A wrong length or a non-int entry raises ValueError."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> Path:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> UnifiedModel:
        raise NotImplementedError

    def inpaint(
        self,
        images: list[np.ndarray],
        prompts: list[str],
        boxes: list[tuple[int, int, int, int]],
        sampling: SamplingConfig | None = None,
        seed: int = 0,
    ) -> list[np.ndarray]:
        """Regenerate the pixels inside each box (x0, y0, x1, y1; x1/y1 exclusive) so that the
        whole image matches its prompt, keeping the rest."""
        raise UnsupportedTask(f"the {self.recipe!r} recipe cannot inpaint")

    def trained_tasks(self) -> set[str] | None:
        """The world tasks this model's training mixture held (None = unknown), so evaluation
        skips benchmarks of tasks it never learned unless asked."""
        parts = getattr(self, "parts", None)
        if parts is None:
            return None
        return {t for t, w in parts.config.train.tasks.items() if w > 0}

    @property
    def plans(self) -> bool:
        """Whether the model writes a layout before each image it draws from a text prompt
        (train.t2i_plan; only the chameleon recipe does)."""
        return False

    def max_prompt_images(self, modality: Modality) -> int:
        """How many images a prompt may hold: every recipe lays an image out as `<boi>`, its
        h*w tokens (`self.image_tokens`) and `<eoi>`, and an image to generate needs room for
        one more. A prompt with more is refused with "too many images" before any work, which
        `unimm chat` reads as "drop the oldest exchange"."""
        fit = self.parts.config.model.max_seq_len // (self.image_tokens + 2)
        return fit - 1 if modality == "image" else fit

    def describe(self) -> dict[str, Any]:
        """Parameter counts: the recipe's weights ("parameters"; recipes add
        "active_parameters" and "trained_parameters" where those differ) and the frozen parts
        it reads and writes images through, which are saved apart and not in that count."""
        n = sum(p.numel() for p in self.parameters())
        out: dict[str, Any] = {"recipe": self.recipe, "parameters": n}
        parts = getattr(self, "parts", None)
        for key, tok in (
            ("image_tokenizer", getattr(parts, "image", None)),
            ("semantic_encoder", getattr(parts, "semantic", None)),
        ):
            if isinstance(tok, nn.Module):
                # A semantic encoder counts what its features pass through (not its text tower).
                params = getattr(tok, "feature_parameters", tok.parameters)()
                out[f"{key}_parameters"] = sum(p.numel() for p in params)
        return out

    # Convenience wrappers in the shapes the evaluators call.

    @torch.no_grad()
    def generate_images(
        self,
        prompts: list[str],
        n_per_prompt: int = 1,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
        batch_size: int = 64,
    ) -> list[list[np.ndarray]]:
        flat = [[Text(p)] for p in prompts for _ in range(n_per_prompt)]
        out: list[np.ndarray] = []
        for i in range(0, len(flat), batch_size):
            segs = self.generate(flat[i : i + batch_size], "image", sampling, seed=seed + i)
            out += [s.pixels for s in segs]
        return [out[j * n_per_prompt : (j + 1) * n_per_prompt] for j in range(len(prompts))]

    @torch.no_grad()
    def answer(
        self,
        images: list[np.ndarray],
        questions: list[str],
        sampling: SamplingConfig | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        sampling = sampling or SamplingConfig(temperature=0.0)
        prompts: list[list[Segment]] = [
            [Image(im), Text(q)] if q else [Image(im)] for im, q in zip(images, questions)
        ]
        out: list[str] = []
        for i in range(0, len(prompts), batch_size):
            out += [s.text for s in self.generate(prompts[i : i + batch_size], "text", sampling)]
        return out

    def caption(
        self, images: list[np.ndarray], sampling: SamplingConfig | None = None
    ) -> list[str]:
        return self.answer(images, [""] * len(images), sampling)

    @torch.no_grad()
    def edit_images(
        self,
        images: list[np.ndarray],
        instructions: list[str],
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        batch_size: int = 64,
        validate: bool = False,
    ) -> list[np.ndarray]:
        """(image, instruction) -> edited image, one per pair. validate=True first reads each
        image with the world detector and rejects instructions that name an absent or
        ambiguous object (unimm.world.edits.InstructionError), before any generation."""
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} images but {len(instructions)} instructions")
        if validate:
            from unimm.world.detector import detect
            from unimm.world.edits import apply_instruction

            for im, ins in zip(images, instructions):
                apply_instruction(detect(im), ins)
        prompts: list[list[Segment]] = [
            [Image(im), Text(ins)] for im, ins in zip(images, instructions)
        ]
        out: list[np.ndarray] = []
        for i in range(0, len(prompts), batch_size):
            segs = self.generate(prompts[i : i + batch_size], "image", sampling, seed=seed + i)
            out += [s.pixels for s in segs]
        return out

    @torch.no_grad()
    def chat(
        self,
        turns: list,
        modality: Modality = "text",
        sampling: SamplingConfig | None = None,
        seed: int = 0,
    ) -> Segment:
        """Reply to a conversation (unimm.conversation.Turn list ending with a user turn) with
        one text or one image."""
        from unimm.conversation import conversation_prompt

        prompt = conversation_prompt(turns)
        if sampling is None and modality == "text":
            sampling = SamplingConfig(temperature=0.0)
        return self.generate([prompt], modality, sampling, seed)[0]

    @torch.no_grad()
    def interleave(
        self,
        episodes: list[list[tuple[str, Modality]]],
        images: list[np.ndarray] | None = None,
        sampling: SamplingConfig | None = None,
        text_sampling: SamplingConfig | None = None,
        seed: int = 0,
        validate: bool = True,
    ) -> list[list[Segment]]:
        """Run interleaved requests: each episode is a list of (text, modality) steps with the
        same modality pattern across the batch; step k's output is generated from everything
        before it (earlier texts and outputs) and joins the context. images: an optional
        starting image per episode. Returns every episode's outputs in order.
        validate=True first walks each episode's edit steps over the scene its earlier steps
        describe (a starting image is read by the world detector) and refuses one naming an
        absent or ambiguous object (`unimm.conversation.check_episodes`, InstructionError)."""
        from unimm.conversation import check_episodes, check_steps

        if not episodes:
            raise ValueError("no episodes given")
        for ep in episodes:
            check_steps(ep)
        pattern = [m for _, m in episodes[0]]
        if any([m for _, m in ep] != pattern for ep in episodes):
            raise ValueError("episodes of one batch must produce the same modalities in order")
        if images is not None and len(images) != len(episodes):
            raise ValueError(f"{len(images)} start images for {len(episodes)} episodes")
        if validate:
            check_episodes(episodes, images)
        text_sampling = text_sampling or SamplingConfig(temperature=0.0)
        contexts: list[list[Segment]] = [
            [Image(im)] if images is not None else [] for im in (images or episodes)
        ]
        outputs: list[list[Segment]] = [[] for _ in episodes]
        for k, modality in enumerate(pattern):
            for ctx, ep in zip(contexts, episodes):
                ctx.append(Text(ep[k][0]))
            s = sampling if modality == "image" else text_sampling
            produced = self.generate(contexts, modality, s, seed=seed + k)
            for ctx, out, seg in zip(contexts, outputs, produced):
                seg = Text(seg.text, role="assistant") if isinstance(seg, Text) else seg
                ctx.append(seg)
                out.append(seg)
        return outputs
