"""Training hyper-parameters: one dataclass, overridable from the CLI as train.key=value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from unimm.world.qa import RATIONALE_QTYPES


def _default_tasks() -> dict[str, float]:
    # Text-to-image gets the largest share: its benchmark (GenEval-scene) is the hardest.
    return {"t2i": 0.6, "vqa": 0.25, "caption": 0.15}


@dataclass(kw_only=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 48
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    # "muon": the backbone's hidden weight matrices step by Muon, the rest by AdamW
    # (unimm.train.muon); same lr and schedule. Single-process or DDP (Muon needs whole matrices).
    optimizer: Literal["adamw", "muon"] = "adamw"
    # Learning rate of the embedding tables (nn.Embedding: token ids, image codes, positions)
    # relative to train.lr. A row learns only on the steps its token appears in, so at short
    # budgets rare codes stay near their random start (modded-nanogpt trains embeddings at a far
    # higher rate than the hidden matrices). docs/LOG.md, "Quality per CPU-minute".
    embed_lr_scale: float = 1.0
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16: autocast on the training device's type
    # auto: cuda:LOCAL_RANK when torch.cuda.is_available(), else cpu (train/distributed.py)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    tasks: dict[str, float] = field(default_factory=_default_tasks)
    # Questions asked about each VQA image of the built-in world, as the turns of one
    # conversation (one per question type, at most 5). An answer is 2 of a VQA sample's ~80
    # tokens, so k questions give about k times the answer gradient for little more compute.
    vqa_questions: int = 1
    # True: each yes/no question about a VQA image of the built-in world ("is there ...?", "is
    # the ... left of ...?") is followed by its twin with the other answer (unimm.world.qa.twin),
    # so the pair differs only in what the image shows.
    vqa_yes_no_twins: bool = False
    # True: each VQA conversation about a world image also asks "where is the <colour> <shape>?"
    # (a 3 x 3 region, or "nowhere"): grounding, whose answer a lone object's place already
    # predicts, as a first step towards the yes/no questions (unimm.world.qa.where_question).
    vqa_where: bool = False
    # Question types (of color, shape, count, exists, position) whose answers in the built-in
    # world's VQA and interleaved samples first describe the image, then answer: "is there a red
    # circle?" -> "a blue circle and a red square. answer: no"; a position question's
    # description places each object ("a red circle at the top left and ..."). A yes/no answer
    # then follows from the model's own description instead of a match it cannot yet make
    # (unimm.world.qa.with_rationale). Evaluation scores the text after the last "answer:".
    # CLI: train.vqa_rationale=exists,count
    vqa_rationale: tuple[str, ...] = ()
    # True: each text-to-image sample of the built-in world first answers its caption with a
    # layout in words, every object with the 3 x 3 region it goes in ("a red circle at the top
    # left and a blue square at the right"), then draws the image; at generation time the model
    # writes its own layout first (chameleon recipe). Why: "A left of B" asks the drawing to
    # compare two places it has not drawn yet, a second-order step no budget measured has
    # learned (docs/LOG.md, "Where position is lost"); after a layout each image code only has
    # to look up whether its cell's region is named, and what goes there, and the layout itself
    # is a choice of region words given the relation word.
    t2i_plan: bool = False
    # True: the same for the images drawn from an edit instruction: each edit's target (and the
    # edited image of an interleaved sample) comes after the instruction and the target's
    # layout, and the model writes one before each edit it makes (chameleon recipe).
    edit_plan: bool = False
    # > 0: a curriculum over the built-in world's scenes. Over this many first steps the most
    # objects a scene may hold grows from 1 to 4 (equal shares of the steps per count), so the
    # model first meets lone objects, whose codes the caption names unambiguously.
    object_curriculum_steps: int = 0
    # > 0: a curriculum over the built-in world's yes/no questions. Over this many first steps
    # the share of VQA images whose yes/no questions come in an easy form falls from all to none:
    # "no" to "is there a red circle?" only where the scene has no red, "is A left of B?" only
    # about objects a third of the canvas apart. One image feature then answers them (a
    # first-order signal), where the balanced questions need the question-image match at once
    # and sit at chance until it forms (docs/LOG.md, "Why yes/no stays at chance").
    yes_no_curriculum_steps: int = 0
    cfg_dropout: float = 0.1  # drop the text condition of image targets (classifier-free guidance)
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    max_seconds: float | None = None  # stop early when the wall-clock budget is spent
    # Stop once the model has read this many training tokens (the sequence positions of its
    # batches, as trainer_state.json counts them); None = off.
    max_tokens: int | None = None
    # Stop once the training FLOPs, estimated as 6 x trained parameters x tokens (Kaplan et al.,
    # arXiv 2001.08361), reach this: a token budget that shrinks as the model grows; None = off.
    max_flops: float | None = None
    # > 0: also save a training state (and the model checkpoint) at each 1/n of the budget, the
    # budget being whichever of steps, max_seconds, max_tokens, max_flops runs out first; these
    # states are the points of a quality-against-compute curve (unimm compare).
    save_fractions: int = 0
    # Scale and faults (docs/TRAINING.md). batch_size is the global batch: it is split over
    # grad_accum micro-batches on each of the torchrun processes.
    parallel: Literal["ddp", "fsdp2"] = "ddp"  # used only when torchrun starts > 1 process
    grad_accum: int = 1
    activation_checkpointing: bool = False
    compile: bool = False
    ema_decay: float = 0.0  # > 0 keeps an exponential moving average of the weights
    keep_checkpoints: int = 3  # training-state checkpoints kept under OUT/state
    max_nonfinite: int = 5  # consecutive non-finite losses before training aborts
    tensorboard: bool = False
    # Training data (unimm.data.readers.build_source): source -> weight, sources being world,
    # folder=PATH (format detected), imagefolder=, llava=, unimm=PATH and wds=SHARDS; CLI:
    # train.data=world:0.5,folder=/data/export:0.5, or one source alone (weight 1)
    data: dict[str, float] = field(default_factory=lambda: {"world": 1.0})

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("train.steps and train.batch_size must be positive")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"train.cfg_dropout must be in [0, 1), got {self.cfg_dropout}")
        if self.grad_accum <= 0 or self.keep_checkpoints <= 0 or self.max_nonfinite <= 0:
            raise ValueError("train.grad_accum, keep_checkpoints and max_nonfinite must be > 0")
        if not 1 <= self.vqa_questions <= 5:
            raise ValueError(f"train.vqa_questions must be 1 to 5, got {self.vqa_questions}")
        if bad := [q for q in self.vqa_rationale if q not in RATIONALE_QTYPES]:
            raise ValueError(
                f"train.vqa_rationale takes question types among {list(RATIONALE_QTYPES)}, "
                f"got {bad}"
            )
        if (self.max_tokens is not None and self.max_tokens <= 0) or (
            self.max_flops is not None and self.max_flops <= 0
        ):
            raise ValueError("train.max_tokens and train.max_flops must be > 0 (or none)")
        if self.save_fractions < 0:
            raise ValueError(f"train.save_fractions must be >= 0, got {self.save_fractions}")
        for name in ("object_curriculum_steps", "yes_no_curriculum_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.embed_lr_scale <= 0:
            raise ValueError(f"train.embed_lr_scale must be > 0, got {self.embed_lr_scale}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"train.optimizer must be 'adamw' or 'muon', got {self.optimizer!r}")
        if self.optimizer == "muon" and self.parallel == "fsdp2":
            raise ValueError("train.optimizer=muon needs whole matrices: use train.parallel=ddp")
        if not self.tasks or any(w < 0 for w in self.tasks.values()):
            raise ValueError(f"train.tasks needs positive weights, got {self.tasks}")
        from unimm.world.tasks import TASKS  # here, not at the top: the world needs no config

        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:  # at config time, so a typo costs no directory and no tokenizer training
            raise ValueError(f"train.tasks: unknown task {unknown[0]!r}; expected one of {TASKS}")
