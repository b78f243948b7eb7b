"""What one `unimm compare` trains and how it evaluates it: checked in full before anything is
written, and kept as OUT/plan.json so that `--resume` continues the same comparison rather
than mixing runs trained or scored another way."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unimm.compare.budget import Budget, parse_budget
from unimm.presets import get_run_config
from unimm.recipes.registry import recipe_class

PLAN_FILE = "plan.json"
# Keys the compare sets itself: the recipe and seed are its axes, the rest is the budget.
OWN_KEYS = (
    "recipe",
    "train.seed",
    "train.max_seconds",
    "train.max_tokens",
    "train.max_flops",
    "train.save_fractions",
)


@dataclass(frozen=True)
class EvalSizes:
    """The protocol every final checkpoint is scored with (`unimm eval`'s flags and defaults);
    edits / episodes None: scored when the recipe trained on that task, as `unimm eval` does."""

    per_task: int = 50
    images_per_prompt: int = 4
    questions: int = 500
    captions: int = 200
    edits: int | None = None
    episodes: int | None = None


@dataclass(frozen=True)
class CurveSizes:
    """The cheaper protocol of the training states saved at each 1/points of the budget, the
    points of the quality-against-compute curve (points=0: no curve)."""

    points: int = 4
    per_task: int = 10
    questions: int = 100
    captions: int = 40


@dataclass(frozen=True)
class Plan:
    recipes: tuple[str, ...]
    seeds: tuple[int, ...]
    budget: Budget
    preset: str = "small"
    overrides: tuple[str, ...] = ()
    eval: EvalSizes = field(default_factory=EvalSizes)
    curve: CurveSizes = field(default_factory=CurveSizes)
    # A trained VQ tokenizer that every recipe on discrete codes reads instead of training its
    # own (the continuous recipes still make theirs): the seeds then vary the unified model
    # alone, and the study skips one tokenizer training per discrete run.
    image_tokenizer: str | None = None

    def runs(self) -> list[tuple[str, int]]:
        """(recipe, seed) pairs, seeds of a recipe together: an interrupted compare has whole
        recipes done first."""
        return [(r, s) for r in self.recipes for s in self.seeds]

    def run_overrides(self, recipe: str, seed: int) -> list[str]:
        """`unimm train` overrides of one run: the user's come after the budget's, so that e.g.
        train.steps can still cap a run (then the report's token and FLOP counts show it)."""
        return [
            f"recipe={recipe}",
            *self.budget.overrides(),
            f"train.save_fractions={self.curve.points}",
            # the curve needs every saved state (points - 1 of them) until it is scored
            f"train.keep_checkpoints={max(self.curve.points, 1)}",
            *self.overrides,
            f"train.seed={seed}",
        ]

    def comparable(self) -> dict:
        """What must match for runs to belong in one comparison (recipes and seeds may grow)."""
        d = self.to_json()
        keys = ("budget", "preset", "overrides", "eval", "curve", "image_tokenizer")
        return {k: d.get(k) for k in keys}

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists, as plan.json holds them

    @classmethod
    def from_json(cls, d: dict) -> Plan:
        return cls(
            recipes=tuple(d["recipes"]),
            seeds=tuple(d["seeds"]),
            budget=Budget(**d["budget"]),
            preset=d["preset"],
            overrides=tuple(d["overrides"]),
            eval=EvalSizes(**d["eval"]),
            curve=CurveSizes(**d["curve"]),
            image_tokenizer=d.get("image_tokenizer"),
        )

    def image_tokenizer_for(self, recipe: str) -> str | None:
        """The shared tokenizer for a recipe on discrete codes; None: the run trains its own."""
        return self.image_tokenizer if recipe_class(recipe).image_tokenizer_kind == "vq" else None


def make_plan(
    recipes: str,
    budget: str,
    seeds: int,
    preset: str = "small",
    overrides: list[str] | None = None,
    eval_sizes: EvalSizes | None = None,
    curve: CurveSizes | None = None,
    image_tokenizer: str | None = None,
) -> Plan:
    """Parse and check everything; ValueError (one line) on the first problem."""
    names = [r.strip() for r in recipes.split(",") if r.strip()]
    if not names:
        raise ValueError("--recipes needs at least one recipe, e.g. chameleon,showo")
    if len(set(names)) != len(names):
        raise ValueError(f"--recipes names a recipe twice: {recipes}")
    for name in names:
        recipe_class(name)
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    curve = curve or CurveSizes()
    if curve.points < 0:
        raise ValueError(f"--curve-points must be >= 0, got {curve.points}")
    if image_tokenizer is not None:
        from unimm.tokenizers.vq import VQTokenizer

        image_tokenizer = str(Path(image_tokenizer).resolve())
        VQTokenizer.from_pretrained(image_tokenizer)  # a missing or corrupt file: ValueError
    overrides = list(overrides or [])
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in OWN_KEYS:
            raise ValueError(f"{key} is set by compare itself (--recipes, --seeds, --budget)")
    plan = Plan(
        recipes=tuple(names),
        seeds=tuple(range(seeds)),
        budget=parse_budget(budget),
        preset=preset,
        overrides=tuple(overrides),
        eval=eval_sizes or EvalSizes(),
        curve=curve,
        image_tokenizer=image_tokenizer,
    )
    for name in names:  # unknown preset or key, wrong type: before any run starts
        get_run_config(preset, plan.run_overrides(name, 0))
    return plan


def check_out_dir(plan: Plan, out: Path, resume: bool) -> None:
    """An existing OUT is continued only with --resume, and only by the same comparison."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not resume:
        raise ValueError(f"{out} already exists: pass --resume to continue it, or a new --out")
    saved_path = out / PLAN_FILE
    if not saved_path.is_file():
        raise ValueError(f"{out} holds no {PLAN_FILE}: it is not a compare directory")
    saved = Plan.from_json(json.loads(saved_path.read_text())).comparable()
    differ = [k for k, v in plan.comparable().items() if v != saved[k]]
    if differ:
        raise ValueError(
            f"{out} was made with other settings ({', '.join(differ)} differ from "
            f"{PLAN_FILE}): its runs would not compare with new ones"
        )
