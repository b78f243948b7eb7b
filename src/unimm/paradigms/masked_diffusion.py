"""Discrete masked-diffusion paradigm: masked-token objective and a confidence-ordered sampler.

Objective (MaskGIT arXiv 2202.04200, Show-o arXiv 2408.12528, LLaDA arXiv 2502.09992): draw a
time t ~ U(0, 1) per sequence, replace a fraction of the target tokens with a mask id, and train
the model to predict the original tokens at the masked positions only. Images mask a fraction
gamma(t) = cos(pi t / 2) of their tokens and average the cross-entropy over masked tokens
(Show-o, no 1/t weight); text masks each answer token with probability p = (1 - eps) t + eps and
weighs each masked token by 1 / p, normalised by the answer length (LLaDA's unbiased estimate of
the likelihood bound).

Sampler (`MaskedDiffusionScheduler`, the scheduler interface set_timesteps / timesteps / step):
start from masked slots; at every step predict all of them, sample a candidate token for each,
then keep the most confident candidates and re-mask the rest so that the masked fraction follows
the schedule and reaches zero at the last step. MaskGIT/Show-o add Gumbel noise to the
confidence, annealed by (1 - r), so early steps explore; LLaDA commits the most confident tokens
(no noise) and can run semi-autoregressively over blocks (the caller restricts `editable`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unimm.paradigms.rng import Rng, categorical, rand

SCHEDULES = ("cosine", "linear")
REMASKING = ("low_confidence", "random")


def masked_fraction(r: Tensor | float, schedule: str = "cosine") -> Tensor:
    """Fraction of the slots still masked at progress r in [0, 1] (1 at r = 0, 0 at r = 1)."""
    r = torch.as_tensor(r, dtype=torch.float64)
    if schedule == "cosine":
        return torch.cos(r * math.pi / 2).clamp(min=0.0)
    if schedule == "linear":
        return (1.0 - r).clamp(min=0.0)
    raise ValueError(f"unknown mask schedule {schedule!r}; choose one of {SCHEDULES}")


# ----------------------------------------------------------------------------- objective


def sample_image_mask(
    slots: Tensor, schedule: str = "cosine", generator: torch.Generator | None = None
) -> Tensor:
    """Choose which image slots to mask for training. slots: (B, T) bool, True at every image
    token that is a target. Each row draws t ~ U(0, 1) and masks ceil(gamma(t) * n) of its n slots
    (at least one, so every row with slots contributes), chosen uniformly. Returns (B, T) bool."""
    B, T = slots.shape
    # Drawn on the (CPU) generator, used on the slots' device.
    t = torch.rand(B, generator=generator, dtype=torch.float64).to(slots.device)
    n = slots.sum(1)  # (B,)
    k = torch.ceil(masked_fraction(t, schedule) * n).long().clamp(min=1)
    k = torch.minimum(k, n)
    # Random ranks among the slots; the k lowest-ranked slots of each row are masked.
    noise = torch.rand(B, T, generator=generator).to(slots.device).masked_fill(~slots, 2.0)
    rank = noise.argsort(1).argsort(1)  # (B, T) rank of each position within its row
    return slots & (rank < k[:, None])


def sample_text_mask(
    slots: Tensor, eps: float = 1e-3, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """LLaDA's text masking: per row t ~ U(0, 1), p = (1 - eps) t + eps, every slot masked with
    probability p. slots: (B, T) bool. Returns (mask (B, T) bool, p (B,) float)."""
    B, T = slots.shape
    t = torch.rand(B, generator=generator).to(slots.device)
    p = (1 - eps) * t + eps
    mask = slots & (torch.rand(B, T, generator=generator).to(slots.device) < p[:, None])
    return mask, p


def masked_token_loss(
    logits: Tensor, targets: Tensor, masked: Tensor, weight: Tensor | None = None
) -> Tensor:
    """Cross-entropy at masked positions only; position t's logits predict targets[:, t] itself
    (no shift: the model fills the slot it sees masked).

    logits (B, T, V); targets (B, T) long; masked (B, T) bool. weight: None = plain mean over
    the masked positions; a (B, T) float tensor = sum of weight * CE over the masked positions
    (the caller's weights carry the normalisation, see `text_diffusion_loss`). With no masked
    position the loss is 0 and still differentiable.
    """
    if logits.shape[:-1] != targets.shape or masked.shape != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and masked "
            f"{tuple(masked.shape)} disagree on (B, T)"
        )
    picked = logits[masked].float()  # (N, V): the masked rows only
    if picked.shape[0] == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(picked, targets[masked], reduction="none")  # (N,)
    if weight is None:
        return ce.mean()
    return (ce * weight[masked]).sum()


def text_diffusion_loss(
    logits: Tensor, targets: Tensor, masked: Tensor, slots: Tensor, p: Tensor
) -> Tensor:
    """LLaDA's bound: sum over masked answer tokens of CE / p, divided by each row's answer
    length, averaged over rows that have an answer. p: (B,) masking probability per row."""
    lengths = slots.sum(1)  # (B,)
    rows = lengths > 0
    if not bool(rows.any()):
        return logits.sum() * 0.0
    per_token = 1.0 / (p[:, None] * lengths.clamp(min=1)[:, None] * rows.sum())  # (B, 1)
    weight = per_token.expand_as(slots).to(torch.float32)
    return masked_token_loss(logits, targets, masked, weight)


# ----------------------------------------------------------------------------- sampler


@dataclass
class MaskedDiffusionConfig:
    """steps: network evaluations; schedule: how fast the masked fraction falls (cosine spends
    more steps on the first, hardest tokens; linear commits the same number every step);
    temperature: for sampling candidate tokens (0 = argmax); confidence_noise: scale of the
    Gumbel noise added to log-confidences, annealed by (1 - r) (MaskGIT uses 4.5, LLaDA 0);
    remasking: "low_confidence" keeps the most confident candidates, "random" keeps random ones."""

    steps: int = 16
    schedule: str = "cosine"
    temperature: float = 1.0
    confidence_noise: float = 1.0
    remasking: str = "low_confidence"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown mask schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if self.remasking not in REMASKING:
            raise ValueError(f"unknown remasking {self.remasking!r}; choose one of {REMASKING}")
        if self.temperature < 0 or self.confidence_noise < 0:
            raise ValueError("temperature and confidence_noise must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MaskedDiffusionConfig:
        return cls(**data)


class MaskedDiffusionScheduler:
    """Iterative unmasking over a fixed set of slots.

        scheduler = MaskedDiffusionScheduler(config)
        scheduler.set_timesteps(16)
        tokens, masked = start_tokens, start_masked
        for i, _ in enumerate(scheduler.timesteps):
            logits = model(...)  # (B, N, K) over the K choices of each slot
            tokens, masked = scheduler.step(logits, tokens, masked, i, generator=g)

    The masked count of a row after step i is floor(m0 * gamma(r_i)) where m0 is the count when
    the loop began (recorded at step 0) and r_i = (i + 1) / steps: it never grows and is zero
    after the last step. Tokens outside `masked` are never changed (inpainting, prompts).
    """

    def __init__(self, config: MaskedDiffusionConfig | None = None) -> None:
        self.config = config or MaskedDiffusionConfig()
        self.set_timesteps(self.config.steps)

    def set_timesteps(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.num_steps = steps
        # Progress reached after each step; the loop runs once per entry.
        self.timesteps = [(i + 1) / steps for i in range(steps)]
        self._start: Tensor | None = None

    def remaining(self, start: Tensor, i: int) -> Tensor:
        """Masked slots per row after step i, from the count at the start. (B,) long."""
        frac = masked_fraction(self.timesteps[i], self.config.schedule)
        left = torch.floor(start.double() * frac).long()
        return torch.zeros_like(left) if i == self.num_steps - 1 else left

    def step(
        self,
        logits: Tensor,
        tokens: Tensor,
        masked: Tensor,
        i: int,
        *,
        editable: Tensor | None = None,
        generator: Rng = None,
    ) -> tuple[Tensor, Tensor]:
        """One step. logits (B, N, K) float; tokens (B, N) long in [0, K) (any value at masked
        slots); masked (B, N) bool; editable (B, N) bool or None: slots this loop is filling
        (semi-autoregressive blocks pass the current block; masked slots outside it stay masked
        and do not count). generator: one stream, or `RowGenerators` with one generator per row
        of B (unimm.paradigms.rng; pass logits after guidance, one row per prompt).
        Returns new (tokens, masked)."""
        if logits.shape[:2] != tokens.shape or masked.shape != tokens.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)}, tokens {tuple(tokens.shape)} and masked "
                f"{tuple(masked.shape)} disagree on (B, N)"
            )
        if not 0 <= i < self.num_steps:
            raise ValueError(f"step index {i} outside 0 .. {self.num_steps - 1}")
        active = masked if editable is None else masked & editable  # (B, N)
        if i == 0 or self._start is None:
            self._start = active.sum(1)
        cfg = self.config
        logits = logits.float()
        if cfg.temperature == 0:
            candidate = logits.argmax(-1)  # (B, N)
        else:
            candidate = categorical((logits / cfg.temperature).softmax(-1), generator)  # (B, N)
        logp = logits.log_softmax(-1).gather(-1, candidate[..., None]).squeeze(-1)  # (B, N)
        if cfg.remasking == "random":
            confidence = rand(logp.shape, generator, logp.dtype, logp.device).log()
        else:
            confidence = logp
        r = self.timesteps[i]
        if cfg.confidence_noise > 0 and r < 1:
            u = rand(logp.shape, generator, logp.dtype, logp.device).clamp(1e-20, 1.0)
            gumbel = -torch.log(-torch.log(u))
            confidence = confidence + cfg.confidence_noise * (1 - r) * gumbel
        # Slots that are not being filled never compete: known ones rank above everything.
        confidence = confidence.masked_fill(~active, float("inf"))
        left = torch.minimum(self.remaining(self._start, i), active.sum(1))  # (B,)
        rank = confidence.argsort(1).argsort(1)  # 0 = least confident
        still = active & (rank < left[:, None])
        filled = active & ~still
        tokens = torch.where(filled, candidate, tokens)
        return tokens, masked & ~filled


# ----------------------------------------------------------------------------- recipe options


@dataclass(kw_only=True)
class DiscreteDiffusionConfig:
    """Options of the discrete-diffusion recipes (Show-o, MMaDA), part of a run's config.

    image_schedule: training mask schedule for image tokens (and the sampler's);
    text_eps: LLaDA's minimum masking probability for text; answer_length: MMaDA's fixed answer
    block (answers are padded with <eos> to this length in training, as in LLaDA; the world's
    captions need at most 16 tokens with <eos>); image_steps / text_steps: default sampling
    steps; text_blocks: semi-autoregressive blocks for MMaDA text (1 = the whole answer at once;
    `SamplingConfig.text_blocks` overrides it per call);
    confidence_noise: Gumbel noise on image confidences (annealed), text uses none (LLaDA);
    background_weight: weight of masked image slots whose code is one a blank canvas encodes
    to, relative to object codes' 1.0, in the image term's mean (chameleon.background_weight's
    counterpart). A masked background slot is easy from its neighbours and most slots are
    background, so at 1.0 the masked loss teaches mostly the background prior (docs/LOG.md,
    "Discrete diffusion at the AR budget")."""

    image_schedule: str = "cosine"
    text_eps: float = 1e-3
    answer_length: int = 24
    image_steps: int = 16
    text_steps: int = 12
    text_blocks: int = 1
    confidence_noise: float = 1.0
    background_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.background_weight < 0:
            raise ValueError(
                f"diffusion.background_weight must be >= 0, got {self.background_weight}"
            )
        if self.image_schedule not in SCHEDULES:
            raise ValueError(f"unknown image_schedule {self.image_schedule!r}: use {SCHEDULES}")
        if self.answer_length < 2:
            raise ValueError(f"answer_length must be >= 2, got {self.answer_length}")
        if self.text_blocks < 1 or self.answer_length % self.text_blocks:
            raise ValueError(
                f"text_blocks ({self.text_blocks}) must divide answer_length ({self.answer_length})"
            )
        if self.image_steps < 1 or self.text_steps < 1:
            raise ValueError("image_steps and text_steps must be >= 1")


def unmask_in_blocks(
    logits_fn: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, int],
    blocks: int,
    steps: int,
    temperature: float,
    choices: Tensor,
    generator: Rng,
    device: torch.device | str,
) -> Tensor:
    """Semi-autoregressive masked-diffusion decoding of a (B, L) answer (LLaDA, arXiv
    2502.09992; MMaDA): L slots in `blocks` equal blocks filled left to right, each over `steps`
    confidence-ordered unmasking steps. logits_fn(answer, masked) -> (B, L, V) float logits for
    the current state (masked slots hold anything); `choices` (V,) bool: the ids allowed."""
    B, L = shape
    if blocks < 1 or L % blocks:
        raise ValueError(f"text_blocks ({blocks}) must divide the answer length ({L})")
    answer = torch.zeros((B, L), dtype=torch.long, device=device)
    masked = torch.ones((B, L), dtype=torch.bool, device=device)
    scheduler = MaskedDiffusionScheduler(
        MaskedDiffusionConfig(
            steps=steps, schedule="linear", temperature=temperature, confidence_noise=0.0
        )
    )
    width = L // blocks
    for k in range(blocks):
        editable = torch.zeros((B, L), dtype=torch.bool, device=device)
        editable[:, k * width : (k + 1) * width] = True
        for i in range(steps):
            logits = logits_fn(answer, masked).masked_fill(~choices, float("-inf"))
            answer, masked = scheduler.step(
                logits, answer, masked, i, editable=editable, generator=generator
            )
    return answer
