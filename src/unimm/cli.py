"""`unimm <command>`: a thin shell over the Python API (unimm.pipeline, unimm.recipes, ...).

Every command prints one clear line and exits non-zero on bad input (missing or corrupt
checkpoint, unknown preset or config key, wrongly sized image, empty prompt).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG_OVERRIDES = (
    "Config overrides are key.sub=value pairs, e.g. train.steps=200 model.n_layers=4 "
    "train.tasks=t2i:0.7,vqa:0.3; `unimm config --preset small` prints every key."
)


def _positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unimm",
        description="Train, evaluate and use unified multimodal (understand + generate) models.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser(
        "quickstart",
        help="train a small unified model from scratch on the scene world and report on it",
        description="Trains the text and image tokenizers and a small unified model on the "
        "built-in scene world, evaluates it (GenEval-scene, VQA-scene, caption-scene) and writes "
        "OUT/report.md, metrics.json, image grids and a loss curve. About 12.5 minutes on 2 cores.",
        epilog=EPILOG_OVERRIDES,
    )
    q.add_argument("--out", default="runs/quickstart", help="run directory (default %(default)s)")
    q.add_argument(
        "--preset",
        default="small",
        help="run preset: tiny, small (the quickstart) or reference (default small)",
    )
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    t = sub.add_parser(
        "train",
        help="train tokenizers and a unified model (no evaluation)",
        description="Trains the text tokenizer, the image tokenizer (or reuses one) and the "
        "unified model; the checkpoint lands in OUT/checkpoint.",
        epilog=EPILOG_OVERRIDES,
    )
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument(
        "--preset",
        default="small",
        help="run preset: tiny, small (the quickstart) or reference (default small)",
    )
    t.add_argument(
        "--image-tokenizer", help="reuse a trained image tokenizer directory instead of training"
    )
    t.add_argument(
        "--semantic-encoder",
        help="reuse a trained semantic encoder directory, or use a Hugging Face SigLIP / CLIP "
        "folder (recipes that use one, e.g. janus)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest good training-state checkpoint in OUT/state",
    )
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    e = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on the scene-world benchmarks",
        description="GenEval-scene (in-distribution and held-out compositions), VQA-scene and "
        "caption-scene; writes OUT/report.md and OUT/metrics.json.",
    )
    e.add_argument("checkpoint", help="checkpoint directory (or a run directory holding one)")
    e.add_argument("--out", help="where to write the report (default: the run directory)")
    e.add_argument("--per-task", type=_positive_int, default=50, help="prompts per GenEval task")
    e.add_argument("--images-per-prompt", type=_positive_int, default=4)
    e.add_argument("--questions", type=_positive_int, default=500, help="VQA questions per split")
    e.add_argument("--captions", type=_positive_int, default=200, help="images to caption")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--steps", type=_positive_int, default=None, help="sampling steps (iterative samplers)"
    )
    e.add_argument(
        "--text-blocks",
        type=_positive_int,
        default=None,
        help="semi-autoregressive blocks of masked-diffusion text (mmada, ddit)",
    )
    e.add_argument(
        "--text-cfg",
        type=float,
        default=None,
        help="guidance scale of masked-diffusion text on the image (ddit; 1 = off); default: "
        "the run's ddit.text_cfg_scale",
    )
    e.add_argument(
        "--cfg",
        type=float,
        default=5.0,
        help="classifier-free guidance scale for the generated images (default %(default)s)",
    )
    e.add_argument(
        "--standard-cfg",
        action="store_true",
        help="guide the background's probability too (default: background-preserving guidance)",
    )
    e.add_argument(
        "--layout-temperature",
        type=float,
        default=None,
        help="models trained with train.t2i_plan / edit_plan: the temperature of the layouts "
        "written before images (0: the likeliest); default: the images' temperature, 1",
    )
    e.add_argument(
        "--edits",
        type=int,
        default=None,
        help="Edit-scene samples per split (default 200 if the model trained on edits, else 0)",
    )
    e.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="Interleaved-scene episodes per split (default 100 if trained on them, else 0)",
    )
    e.add_argument(
        "--ema",
        action="store_true",
        help="evaluate the moving average of the weights (runs trained with train.ema_decay > 0); "
        "the report goes to RUN/ema unless --out says otherwise",
    )
    e.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="skip the tokenizer ceiling and the object/background image-token loss",
    )
    ed = sub.add_parser(
        "eval-data",
        help="score a run on held-out samples of your own data",
        description="Reads the first -n samples of SOURCE (a train.data entry, e.g. "
        "folder=/data/pets_val) and reports the image tokenizer's reconstruction (PSNR, SSIM), "
        "caption and VQA exact match and token F1, and for generated images PSNR / SSIM to the "
        "real one and a nearest-training-image memorisation check; writes OUT/user_data.json.",
    )
    ed.add_argument("checkpoint", help="checkpoint directory (or a run directory holding one)")
    ed.add_argument("source", help="held-out data: folder=PATH, wds=SHARDS, llava=FILE, ...")
    ed.add_argument("-n", type=_positive_int, default=200, help="samples to score")
    ed.add_argument("--pool", type=_positive_int, default=1000, help="training images to search")
    ed.add_argument("--out", help="where to write user_data.json (default: the run directory)")
    ed.add_argument("--seed", type=int, default=0)
    es = sub.add_parser(
        "eval-spread",
        help="mean ± std of the headline metrics over runs that differ in train.seed",
        description="Reads RUN/metrics.json of each run (written by `unimm eval`) and prints a "
        "markdown table of GenEval-scene, VQA-scene and Caption-scene (and the other headline "
        "metrics every run has): mean ± sample std and each run's value. Lists any config "
        "difference besides train.seed.",
    )
    es.add_argument("runs", nargs="+", metavar="RUN", help="run directory or metrics.json")
    es.add_argument("--out", help="also write the table to this markdown file")

    g = sub.add_parser("generate", help="generate images from a text prompt")
    g.add_argument("checkpoint")
    g.add_argument("prompt", help='e.g. "a red circle left of a blue square"')
    g.add_argument("-n", "--num-images", type=_positive_int, default=4)
    g.add_argument("--out", default="generated", help="output folder (default %(default)s)")
    g.add_argument("--ema", action="store_true", help="sample from the run's averaged weights")
    g.add_argument(
        "--layout",
        help="for a model trained with train.t2i_plan: where things go, in its own words (e.g. "
        '"a red circle at the top left and a blue square at the right"), instead of the layout '
        "it would write",
    )
    _sampling_args(g, cfg_default=5.0)

    c = sub.add_parser(
        "chat",
        help="answer a question about images (one-shot) or talk with images (interactive)",
        description="One-shot: --image [--image ...] and -q: answer the question about the "
        "images (in order); one --image without -q captions it. Interactive (no --image, no "
        "-q): a multi-turn conversation in the "
        "terminal; type text to talk, '/image PATH' to show the model an image with your next "
        "message, '/draw TEXT' to have it reply with an image (saved under --out), '/reset' to "
        "start over, '/quit' to leave.",
    )
    c.add_argument("checkpoint")
    c.add_argument(
        "--image",
        action="append",
        help="a PNG/JPEG of the model's resolution; repeat for several images",
    )
    c.add_argument("--question", "-q", help="question; omit to caption the image")
    c.add_argument("--out", default="chat_images", help="where /draw saves images")
    _sampling_args(c, temperature_default=0.0)

    d = sub.add_parser(
        "edit",
        help="edit an image by an instruction",
        description="(image, instruction) -> edited image, e.g. "
        '`unimm edit in.png "make the circle green" -o out.png`. The instruction is first '
        "checked against what the world detector sees in the image, so an instruction naming "
        "an absent or ambiguous object is refused before any generation (--no-check skips it).",
    )
    d.add_argument("image", help="a PNG/JPEG of the model's resolution")
    d.add_argument("instruction", help="make/add/remove/move, e.g. 'move the red circle up'")
    d.add_argument(
        "--checkpoint", default="runs/quickstart", help="checkpoint or run (default %(default)s)"
    )
    d.add_argument("-o", "--out", default="edited.png", help="output PNG (default %(default)s)")
    d.add_argument("--no-check", action="store_true", help="skip the detector's check")
    _sampling_args(d, cfg_default=5.0)

    v = sub.add_parser(
        "interleave",
        help="one request -> text and images in order, each conditioned on what came before",
        description="Splits a request such as 'draw a red square, then add a blue circle, then "
        "tell me how many squares there are' into steps (draw = an image from a caption, "
        "make/add/remove/move = an edit of the latest image, anything else = a question) and "
        "runs them in order; images are saved under --out, text is printed. Each edit is "
        "first checked against the scene the steps before it describe (or the detector's "
        "reading of --image), so 'draw a red square, then remove the blue circle' is refused "
        "before any generation (--no-check skips it).",
    )
    v.add_argument("checkpoint")
    v.add_argument("request")
    v.add_argument("--image", help="a starting image for the first step to work on")
    v.add_argument("--out", default="interleaved", help="output folder (default %(default)s)")
    v.add_argument("--no-check", action="store_true", help="skip the check of the edit steps")
    _sampling_args(v, cfg_default=5.0)

    i = sub.add_parser(
        "inpaint",
        help="regenerate a box of an image so that the image matches a prompt",
        description="Masks the image tokens under the box and fills them by masked diffusion, "
        "conditioned on the prompt and the rest of the image (recipes with an iterative image "
        "sampler: showo, mmada; others say they cannot).",
    )
    i.add_argument("checkpoint")
    i.add_argument("image", help="a PNG/JPEG of the model's resolution")
    i.add_argument("prompt", help="the whole target image, e.g. 'a red circle above a blue square'")
    i.add_argument(
        "--box",
        type=int,
        nargs=4,
        required=True,
        metavar=("X0", "Y0", "X1", "Y1"),
        help="pixel box to regenerate (X1, Y1 exclusive)",
    )
    i.add_argument("-o", "--out", default="inpainted.png", help="output PNG (default %(default)s)")
    _sampling_args(i, cfg_default=5.0)

    w = sub.add_parser(
        "world",
        help="export the scene world as PNG files + samples.jsonl",
        description="Writes N samples of the chosen split (all tasks) as images and one JSONL.",
    )
    w.add_argument("--out", required=True)
    w.add_argument("-n", "--num-samples", type=_positive_int, default=1000)
    w.add_argument("--split", choices=["train", "eval"], default="train")
    w.add_argument("--seed", type=int, default=0)

    from unimm.compare.command import add_parser as add_compare_parser
    from unimm.data.check import add_parser as add_data_parser
    from unimm.interop.commands import add_interop_parsers

    add_compare_parser(sub)
    add_data_parser(sub)
    add_interop_parsers(sub)
    pl = sub.add_parser(
        "plot",
        help="draw a run's loss (and evaluation) curves to PNG",
        description="Reads RUN/train_log.jsonl (and RUN/eval_log.jsonl when present) and writes "
        "loss_curve.png (and eval_curve.png).",
    )
    pl.add_argument("run", help="run directory")
    pl.add_argument("--out", help="folder for the PNGs (default: the run directory)")
    v = sub.add_parser("serve", help="serve a checkpoint over an OpenAI-compatible HTTP API")
    v.add_argument("checkpoint", nargs="?", default="runs/quickstart")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--api-key", help="require Authorization: Bearer KEY on /v1/ routes")
    _serve_limit_args(v)

    k = sub.add_parser("config", help="print a preset's full configuration as JSON")
    k.add_argument("--preset", default="small")
    k.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


# unimm serve's limit flags: (flag, ServeConfig field, type, help). One table drives both the
# parser and the config, so a new limit is one line.
_SERVE_FLAGS = [
    ("--max-batch", "max_batch", "int", "rows per model call"),
    ("--batch-window", "batch_window_s", float, "seconds the first request of a batch waits"),
    ("--max-queue", "max_queue", "int", "waiting requests before 429"),
    ("--queue-timeout", "queue_timeout_s", float, "seconds unstarted before 503"),
    ("--max-n", "max_n", "int", "images per request"),
    ("--max-prompt-chars", "max_prompt_chars", "int", None),
    ("--max-image-bytes", "max_image_bytes", "int", None),
    ("--max-tokens", "max_tokens", "int", None),
]


def _serve_limit_args(p: argparse.ArgumentParser) -> None:
    from unimm.serve.config import ServeConfig

    d = ServeConfig()
    g = p.add_argument_group("limits and batching (docs/SERVING.md)")
    g.add_argument(
        "--allow-image-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="allow image_url to name files under DIR (repeatable; default: none)",
    )
    for flag, field, kind, help_text in _SERVE_FLAGS:
        kind = _positive_int if kind == "int" else kind
        g.add_argument(flag, dest=field, type=kind, default=getattr(d, field), help=help_text)


def _serve_config(args: argparse.Namespace):
    from unimm.serve.config import ServeConfig

    limits = {field: getattr(args, field) for _, field, _, _ in _SERVE_FLAGS}
    return ServeConfig(api_key=args.api_key, image_dirs=tuple(args.allow_image_dir), **limits)


def _sampling_args(p: argparse.ArgumentParser, cfg_default=5.0, temperature_default=1.0) -> None:
    p.add_argument("--temperature", type=float, default=temperature_default)
    p.add_argument("--top-k", type=_positive_int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--cfg", type=float, default=cfg_default, help="classifier-free guidance scale")
    p.add_argument(
        "--standard-cfg",
        action="store_true",
        help="guide the background's probability too (default: the conditional model decides "
        "it, see unimm.paradigms.guidance)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--layout-temperature",
        type=float,
        default=None,
        help="models trained with train.t2i_plan / edit_plan: the temperature of the layout "
        "written before each image (0: the likeliest); default: --temperature",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="steps of iterative samplers (masked diffusion, flow); default: the recipe's",
    )
    p.add_argument(
        "--text-blocks",
        type=_positive_int,
        default=None,
        help="masked-diffusion text (mmada, ddit): fill the answer in this many "
        "semi-autoregressive blocks, left to right; default: the run's diffusion.text_blocks",
    )
    p.add_argument(
        "--text-cfg",
        type=float,
        default=None,
        help="guidance scale of masked-diffusion text on the image (ddit; 1 = off); default: "
        "the run's ddit.text_cfg_scale",
    )


def _warn_untrained(model, task: str) -> None:
    """A model asked for a task its training mixture never held still answers (the layout is
    the same), but the user should know why the result is poor."""
    tasks = model.trained_tasks()
    if tasks is not None and task not in tasks:
        print(
            f"unimm: warning: this model never trained on {task!r} (its tasks: "
            f"{', '.join(sorted(tasks))}); train with train.tasks=...,{task}:0.15 for real results",
            file=sys.stderr,
        )


def _non_negative(value: float | None, flag: str) -> float | None:
    if value is not None and value < 0:
        raise ValueError(f"{flag} must be >= 0, got {value}")
    return value


def _sampling(args: argparse.Namespace):
    from unimm.recipes.base import SamplingConfig

    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    _non_negative(args.temperature, "--temperature")
    _non_negative(args.layout_temperature, "--layout-temperature")
    return SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        cfg_scale=args.cfg,
        cfg_keep_background=not args.standard_cfg,
        steps=args.steps,
        text_blocks=args.text_blocks,
        text_cfg_scale=args.text_cfg,
        layout_temperature=args.layout_temperature,
    )


def _run(args: argparse.Namespace) -> None:
    import json

    from unimm import pipeline

    if args.command == "quickstart":
        pipeline.quickstart(args.out, args.preset, args.overrides)
    elif args.command == "train":
        pipeline.train_run(
            args.out,
            args.preset,
            args.overrides,
            args.image_tokenizer,
            resume=args.resume,
            semantic_encoder=args.semantic_encoder,
        )
    elif args.command == "eval":
        from unimm.recipes.base import SamplingConfig

        model, run_dir = pipeline.load_checkpoint(args.checkpoint, ema=args.ema)
        out = Path(args.out) if args.out else run_dir / "ema" if args.ema else run_dir
        metrics = pipeline.evaluate_run(
            model,
            out,
            args.per_task,
            args.images_per_prompt,
            args.questions,
            args.captions,
            args.seed,
            sampling=SamplingConfig(
                steps=args.steps,
                text_blocks=args.text_blocks,
                text_cfg_scale=args.text_cfg,
                cfg_scale=args.cfg,
                cfg_keep_background=not args.standard_cfg,
                layout_temperature=_non_negative(args.layout_temperature, "--layout-temperature"),
            ),
            log_dir=run_dir,
            edits=args.edits,
            episodes=args.episodes,
            diagnostics=not args.no_diagnostics,
        )
        print(pipeline.summary_line(metrics))
        print(f"report: {out / 'report.md'}")
    elif args.command == "generate":
        from unimm.data.images import save_image

        model, _ = pipeline.load_checkpoint(args.checkpoint, ema=args.ema)
        layouts, images = pipeline.generate_with_layouts(
            model, args.prompt, args.num_images, args.seed, _sampling(args), args.layout
        )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            path = out / f"{pipeline.slug(args.prompt)}_{args.seed}_{i}.png"
            save_image(im, path)
            print(path if layouts is None else f"{path}  (layout: {layouts[i]})")
    elif args.command == "chat":
        from unimm.data.images import load_image

        model, _ = pipeline.load_checkpoint(args.checkpoint)
        question = args.question
        if question is not None and not question.strip():
            raise ValueError("empty question: omit --question to caption the image instead")
        if args.image is None and question is None:
            from unimm.chat_repl import chat_loop

            chat_loop(model, _sampling(args), Path(args.out))
            return
        if args.image is None:
            raise ValueError("--question needs --image (or run without both to chat)")
        images = [load_image(path, model.image_resolution) for path in args.image]
        if question is None and len(images) > 1:
            raise ValueError(f"{len(images)} images need a question (-q); one is captioned")
        if question is None:
            print(model.caption(images, _sampling(args))[0])
            return
        from unimm.conversation import Turn

        print(model.chat([Turn("user", [*images, question])], "text", _sampling(args)).text)
    elif args.command == "edit":
        from unimm.data.images import load_image, save_image

        model, _ = pipeline.load_checkpoint(args.checkpoint)
        if not args.instruction.strip():
            raise ValueError("empty instruction")
        image = load_image(args.image, model.image_resolution)
        _warn_untrained(model, "edit")
        out = model.edit_images(
            [image], [args.instruction], _sampling(args), args.seed, validate=not args.no_check
        )
        save_image(out[0], args.out)
        print(args.out)
    elif args.command == "interleave":
        from unimm.conversation import check_episodes, plan_request
        from unimm.data.images import load_image, save_image
        from unimm.data.sample import Image

        model, _ = pipeline.load_checkpoint(args.checkpoint)
        steps = plan_request(args.request)
        start = None if args.image is None else [load_image(args.image, model.image_resolution)]
        if not args.no_check:  # a refusal is the one line printed, before the warning
            check_episodes([steps], start)
        if sum(m == "image" for _, m in steps) > 1:
            _warn_untrained(model, "interleaved")
        (outputs,) = model.interleave(
            [steps], start, _sampling(args), seed=args.seed, validate=False
        )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for k, ((text, _), seg) in enumerate(zip(steps, outputs)):
            if isinstance(seg, Image):
                path = out / f"step{k + 1}_{pipeline.slug(text)}.png"
                save_image(seg.pixels, path)
                print(f"[{k + 1}] {text} -> {path}")
            else:
                print(f"[{k + 1}] {text} -> {seg.text}")
    elif args.command == "inpaint":
        from unimm.data.images import load_image, save_image

        model, _ = pipeline.load_checkpoint(args.checkpoint)
        image = load_image(args.image, model.image_resolution)
        out = model.inpaint([image], [args.prompt], [tuple(args.box)], _sampling(args), args.seed)
        save_image(out[0], args.out)
        print(args.out)
    elif args.command == "world":
        from unimm.world.export import export_world

        export_world(args.out, args.num_samples, args.split, args.seed)
        print(f"wrote {args.num_samples} samples to {args.out}")
    elif args.command == "compare":
        from unimm.compare.command import run

        run(args)
    elif args.command == "data":
        from unimm.data.check import run

        run(args)
    elif args.command in ("import", "export", "finetune"):
        from unimm.interop.commands import run_interop

        run_interop(args)
    elif args.command == "eval-data":
        from unimm.evaluate.user_data import evaluate_user_data, format_results

        model, run_dir = pipeline.load_checkpoint(args.checkpoint)
        out = Path(args.out) if args.out else run_dir
        r = evaluate_user_data(model, args.source, args.n, args.pool, args.seed, out=out)
        print(format_results(r))
        print(f"report: {out / 'user_data.json'}")
    elif args.command == "eval-spread":
        from unimm.evaluate.spread import spread_md

        table = spread_md(args.runs)
        print(table, end="")
        if args.out:
            Path(args.out).write_text(table)
    elif args.command == "plot":
        from unimm.evaluate.plot import plot_run

        for path in plot_run(args.run, args.out):
            print(path)
    elif args.command == "serve":
        import uvicorn

        from unimm.serve.app import create_app

        config = _serve_config(args)  # bad limits fail before the model loads
        model, _ = pipeline.load_checkpoint(args.checkpoint)
        uvicorn.run(create_app(model, config=config), host=args.host, port=args.port)
    elif args.command == "config":
        from unimm.config import to_dict
        from unimm.presets import get_run_config

        print(json.dumps(to_dict(get_run_config(args.preset, args.overrides)), indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        # InstructionError, ConfigError and UnsupportedTask are ValueErrors too
        print(f"unimm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unimm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
