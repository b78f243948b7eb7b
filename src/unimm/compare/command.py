"""`unimm compare`: train recipes at one budget over several seeds and report which differences
seed noise cannot explain.

    unimm compare --recipes chameleon,showo --budget 15m --seeds 3 --out runs/cmp
    unimm compare --recipes chameleon,showo --budget 15m --seeds 3 --out runs/cmp --resume

Everything is checked before anything is written; a bad recipe, budget, preset, key or an
existing OUT without --resume is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unimm.checkpoint import write_json
from unimm.compare.budget import EXAMPLES
from unimm.compare.plan import PLAN_FILE, CurveSizes, EvalSizes, check_out_dir, make_plan


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compare",
        help="train recipes at one budget over seeds; mean ± 95 %% intervals and verdicts",
        description="Trains every (recipe, seed) pair into OUT/runs/RECIPE-sSEED at the same "
        f"budget ({EXAMPLES}: wall-clock time, training tokens or training FLOPs), evaluates "
        "each with `unimm eval`'s protocol and writes OUT/report.md and OUT/compare.json: mean ± "
        "95 % Student-t intervals over seeds, quality against compute, samples side by side, "
        "and which differences are separated at this budget. A killed compare continues with "
        "--resume; finished runs are kept.",
        epilog="KEY=VALUE overrides apply to every run (e.g. model.n_layers=4); recipe, "
        "train.seed and the budget keys are the compare's own.",
    )
    c.add_argument("--recipes", required=True, help="comma-separated, e.g. chameleon,showo")
    c.add_argument("--budget", required=True, help=f"per run, {EXAMPLES}")
    c.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per recipe (default 3)")
    c.add_argument("--out", required=True, help="compare directory")
    c.add_argument("--preset", default="small", help="run preset (default %(default)s)")
    c.add_argument("--resume", action="store_true", help="continue an interrupted compare")
    c.add_argument(
        "--image-tokenizer",
        default=None,
        help="a trained VQ tokenizer (e.g. RUN/image_tokenizer) that every recipe on discrete "
        "codes reads instead of training its own; the continuous recipes make theirs",
    )
    c.add_argument(
        "--jobs", type=int, default=1, help="runs at once, the threads split among them (1)"
    )
    ev = c.add_argument_group("evaluation of each final checkpoint (defaults: `unimm eval`)")
    d = EvalSizes()
    ev.add_argument("--per-task", type=int, default=d.per_task, help="prompts per GenEval task")
    ev.add_argument("--images-per-prompt", type=int, default=d.images_per_prompt)
    ev.add_argument("--questions", type=int, default=d.questions, help="VQA questions per split")
    ev.add_argument("--captions", type=int, default=d.captions, help="images to caption")
    ev.add_argument("--edits", type=int, default=None, help="Edit-scene samples per split")
    ev.add_argument("--episodes", type=int, default=None, help="Interleaved-scene episodes")
    cv = c.add_argument_group("quality-against-compute curve (reduced evaluation)")
    k = CurveSizes()
    cv.add_argument(
        "--curve-points",
        type=int,
        default=k.points,
        help="training states saved at each 1/N of the budget and scored (0: no curve); "
        "also how often a killed run can resume (default %(default)s)",
    )
    cv.add_argument("--curve-per-task", type=int, default=k.per_task)
    cv.add_argument("--curve-questions", type=int, default=k.questions)
    cv.add_argument("--curve-captions", type=int, default=k.captions)
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def run(args: argparse.Namespace) -> None:
    from unimm.compare.report import write_compare
    from unimm.compare.runner import run_all

    sizes = {
        "--per-task": args.per_task,
        "--images-per-prompt": args.images_per_prompt,
        "--questions": args.questions,
        "--captions": args.captions,
        "--jobs": args.jobs,
        "--curve-per-task": args.curve_per_task,
        "--curve-questions": args.curve_questions,
        "--curve-captions": args.curve_captions,
    }
    for flag, v in sizes.items():
        if v < 1:
            raise ValueError(f"{flag} must be at least 1, got {v}")
    for flag, v in (("--edits", args.edits), ("--episodes", args.episodes)):
        if v is not None and v < 0:
            raise ValueError(f"{flag} must be >= 0, got {v}")
    plan = make_plan(
        args.recipes,
        args.budget,
        args.seeds,
        args.preset,
        args.overrides,
        EvalSizes(
            args.per_task,
            args.images_per_prompt,
            args.questions,
            args.captions,
            args.edits,
            args.episodes,
        ),
        CurveSizes(
            args.curve_points, args.curve_per_task, args.curve_questions, args.curve_captions
        ),
        args.image_tokenizer,
    )
    out = Path(args.out)
    check_out_dir(plan, out, args.resume)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PLAN_FILE, plan.to_json())
    results, errors = run_all(plan, out, args.jobs, say=lambda m: print(f"[unimm] {m}", flush=True))
    report = write_compare(plan, out, results, errors)
    print(f"report: {report}  (and {out / 'compare.json'})")
    if errors:
        raise ValueError(
            f"{len(errors)} of {len(plan.runs())} runs failed ({', '.join(sorted(errors))}; "
            f"see their log.txt); the report holds the others, --resume retries them"
        )
