"""One run of `unimm compare`: train a (recipe, seed) pair for the budget with the pipeline
`unimm train` uses, score it with `unimm eval`'s protocol, score the training states saved
along the budget with a cheaper one, time image generation on fixed prompts, and write
RUN/result.json last. A run with result.json is finished; any other is resumed, each step
skipped when its output is already there:

    trained.json          training ended (else: resume from RUN/state, or restart the run)
    metrics.json          the full evaluation (unimm.pipeline.evaluate_run)
    curve/step-N/         the reduced evaluation of the training state saved at step N
    samples.png           fixed prompts, GRID_IMAGES images each (also the images/s timing)
    result.json           everything the report needs; RUN/state is deleted after it
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from unimm.checkpoint import load_tensors, read_json, write_json
from unimm.compare.plan import Plan
from unimm.data.images import save_image
from unimm.evaluate.report import REPORT_SCALE, image_grid
from unimm.pipeline import evaluate_run, load_checkpoint, train_run
from unimm.recipes.base import UnifiedModel
from unimm.train import state as st
from unimm.world.geneval import geneval_prompts

RESULT = "result.json"
TRAINED = "trained.json"
SAMPLES = "samples.png"
CURVE_DIR = "curve"
LOG = "log.txt"
GRID_IMAGES = 4  # images per sample prompt
QUALITY = (
    "geneval_in",
    "geneval_heldout",
    "vqa_eval",
    "vqa_heldout",
    "caption_eval",
    "edit_eval",
    "edit_heldout",
    "interleaved_eval",
    "interleaved_heldout",
)


def sample_prompts() -> list[str]:
    """One in-distribution GenEval-scene prompt per task, the same for every run."""
    return [p.text for p in geneval_prompts("in", per_task=1, seed=0)]


def quality(metrics: dict) -> dict[str, float]:
    """The headline scores of a metrics.json, GenEval-scene per task too ("geneval_in/counting")."""
    out: dict[str, float] = {}
    for key in QUALITY:
        res = metrics.get(key)
        if not isinstance(res, dict) or "overall" not in res:
            continue  # a task the recipe did not train on is not scored
        out[key] = float(res["overall"])
        if key.startswith("geneval"):
            out |= {f"{key}/{task}": float(v) for task, v in res["tasks"].items()}
    return out


def run_one(plan: Plan, recipe: str, seed: int, run_dir: Path) -> dict:
    t0 = time.perf_counter()
    if not (run_dir / TRAINED).is_file():
        _train(plan, recipe, seed, run_dir)
    model, _ = load_checkpoint(run_dir)
    trained = read_json(run_dir / "trainer_state.json")
    scores = quality(_full_evaluation(plan, model, run_dir))
    images_per_s = _samples(model, run_dir)
    # 6 x active trained parameters x tokens (unimm.train.schedule.flop_parameters)
    n = trained.get("flop_parameters", trained["trained_parameters"])
    described = model.describe()
    final = {
        "step": trained["step"],
        "seconds": trained["seconds"],
        "tokens": trained["tokens"],
        "flops": 6 * n * trained["tokens"],
        "metrics": scores,
    }
    curve = [*_curve(plan, model, run_dir, n), final]  # the states' weights replace the model's
    result = {
        "run": run_dir.name,
        "recipe": recipe,
        "seed": seed,
        "metrics": {
            **scores,
            "images_per_s": images_per_s,
            "train_tokens_per_s": trained["tokens"] / trained["seconds"],
            "train_seconds": trained["seconds"],
            "train_tokens": trained["tokens"],
            "train_flops": final["flops"],
            "train_steps": trained["step"],
            "parameters": described["parameters"],
            "active_parameters": described.get("active_parameters", described["parameters"]),
            "trained_parameters": described.get("trained_parameters", described["parameters"]),
        },
        "curve": curve,
        "samples": SAMPLES,
        "sample_prompts": sample_prompts(),
        "seconds": time.perf_counter() - t0,  # this attempt's share: training, evaluations
    }
    write_json(run_dir / RESULT, result)
    # The states served resume and the curve; a finished run needs neither (each is 3x the model).
    shutil.rmtree(run_dir / st.STATE_DIR, ignore_errors=True)
    return result


def _train(plan: Plan, recipe: str, seed: int, run_dir: Path) -> None:
    resume = st.latest_good_state(run_dir) is not None
    leftovers = [c for c in run_dir.iterdir() if c.name != LOG] if run_dir.is_dir() else []
    if not resume and leftovers:
        # Stopped before its first saved state (while training a tokenizer, say): nothing the
        # trainer can resume from, and a tokenizer cut off mid-write must not be reused.
        print("[unimm] compare: no training state to resume from: restarting this run")
        for child in leftovers:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    overrides = plan.run_overrides(recipe, seed)
    train_run(run_dir, plan.preset, overrides, plan.image_tokenizer_for(recipe), resume=resume)
    write_json(run_dir / TRAINED, read_json(run_dir / "trainer_state.json"))


def _full_evaluation(plan: Plan, model: UnifiedModel, run_dir: Path) -> dict:
    try:  # scored before the interruption (write_report writes metrics.json last)
        return read_json(run_dir / "metrics.json")
    except ValueError:
        pass
    e = plan.eval
    evaluate_run(
        model,
        run_dir,
        per_task=e.per_task,
        images_per_prompt=e.images_per_prompt,
        questions=e.questions,
        captions=e.captions,
        edits=e.edits,
        episodes=e.episodes,
        diagnostics=False,
    )
    return read_json(run_dir / "metrics.json")


def _samples(model: UnifiedModel, run_dir: Path) -> float:
    """Draw the sample prompts into RUN/samples.png (a row per prompt); returns images/s of
    that one batch of len(prompts) x GRID_IMAGES images, after a warm-up call."""
    prompts = sample_prompts()
    model.generate_images(prompts[:1], 1, seed=0)  # first-call allocations are not speed
    t0 = time.perf_counter()
    images = model.generate_images(prompts, GRID_IMAGES, seed=0)
    seconds = time.perf_counter() - t0
    grid = image_grid([im for row in images for im in row], GRID_IMAGES, scale=REPORT_SCALE)
    save_image(grid, run_dir / SAMPLES)
    return len(prompts) * GRID_IMAGES / seconds


def _curve(plan: Plan, model: UnifiedModel, run_dir: Path, n_flop: int) -> list[dict]:
    """Score the training states saved at fractions of the budget, oldest first."""
    points = []
    for state_dir in st.list_states(run_dir):
        out = run_dir / CURVE_DIR / state_dir.name
        try:
            metrics = read_json(out / "metrics.json")
            meta = read_json(out / "state.json")
        except ValueError:  # not scored yet
            try:
                meta = st.verify_state(state_dir)
            except st.CorruptCheckpoint as err:
                print(f"[unimm] compare: curve point {state_dir.name} skipped: {err}")
                continue
            model.load_state_dict(load_tensors(state_dir / "model.safetensors"))
            c = plan.curve
            evaluate_run(
                model,
                out,
                per_task=c.per_task,
                images_per_prompt=1,
                questions=c.questions,
                captions=c.captions,
                edits=0,
                episodes=0,
                diagnostics=False,
            )
            metrics = read_json(out / "metrics.json")
            write_json(out / "state.json", {k: meta[k] for k in ("step", "seconds", "tokens")})
        points.append(
            {
                "step": meta["step"],
                "seconds": meta["seconds"],
                "tokens": meta["tokens"],
                "flops": 6 * n_flop * meta["tokens"],
                "metrics": quality(metrics),
            }
        )
    return points
