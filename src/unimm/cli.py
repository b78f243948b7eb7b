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
        "OUT/report.md, metrics.json, image grids and a loss curve. About 10 minutes on 2 cores.",
        epilog=EPILOG_OVERRIDES,
    )
    q.add_argument("--out", default="runs/quickstart", help="run directory (default %(default)s)")
    q.add_argument("--preset", default="small", help="run preset: tiny or small (default small)")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    t = sub.add_parser(
        "train",
        help="train tokenizers and a unified model (no evaluation)",
        description="Trains the text tokenizer, the image tokenizer (or reuses one) and the "
        "unified model; the checkpoint lands in OUT/checkpoint.",
        epilog=EPILOG_OVERRIDES,
    )
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--preset", default="small", help="run preset: tiny or small (default small)")
    t.add_argument(
        "--image-tokenizer", help="reuse a trained image tokenizer directory instead of training"
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

    g = sub.add_parser("generate", help="generate images from a text prompt")
    g.add_argument("checkpoint")
    g.add_argument("prompt", help='e.g. "a red circle left of a blue square"')
    g.add_argument("-n", "--num-images", type=_positive_int, default=4)
    g.add_argument("--out", default="generated", help="output folder (default %(default)s)")
    _sampling_args(g, cfg_default=3.0)

    c = sub.add_parser(
        "chat", help="answer a question about an image, or caption it when no question is given"
    )
    c.add_argument("checkpoint")
    c.add_argument("--image", required=True, help="a PNG/JPEG of the model's resolution")
    c.add_argument("--question", "-q", help="question; omit to caption the image")
    _sampling_args(c, temperature_default=0.0)

    w = sub.add_parser(
        "world",
        help="export the scene world as PNG files + samples.jsonl",
        description="Writes N samples of the chosen split (all tasks) as images and one JSONL.",
    )
    w.add_argument("--out", required=True)
    w.add_argument("-n", "--num-samples", type=_positive_int, default=1000)
    w.add_argument("--split", choices=["train", "eval"], default="train")
    w.add_argument("--seed", type=int, default=0)

    k = sub.add_parser("config", help="print a preset's full configuration as JSON")
    k.add_argument("--preset", default="small")
    k.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


def _sampling_args(p: argparse.ArgumentParser, cfg_default=3.0, temperature_default=1.0) -> None:
    p.add_argument("--temperature", type=float, default=temperature_default)
    p.add_argument("--top-k", type=_positive_int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--cfg", type=float, default=cfg_default, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--steps", type=_positive_int, default=None, help="ODE steps (flow recipes only)"
    )


def _sampling(args: argparse.Namespace):
    from unimm.recipes.base import SamplingConfig

    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    return SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        cfg_scale=args.cfg,
        steps=args.steps,
    )


def _run(args: argparse.Namespace) -> None:
    import json

    from unimm import pipeline

    if args.command == "quickstart":
        pipeline.quickstart(args.out, args.preset, args.overrides)
    elif args.command == "train":
        pipeline.train_run(args.out, args.preset, args.overrides, args.image_tokenizer)
    elif args.command == "eval":
        model, run_dir = pipeline.load_checkpoint(args.checkpoint)
        out = Path(args.out) if args.out else run_dir
        metrics = pipeline.evaluate_run(
            model,
            out,
            args.per_task,
            args.images_per_prompt,
            args.questions,
            args.captions,
            args.seed,
            log_dir=run_dir,
        )
        print(pipeline.summary_line(metrics))
        print(f"report: {out / 'report.md'}")
    elif args.command == "generate":
        from unimm.data.images import save_image

        model, _ = pipeline.load_checkpoint(args.checkpoint)
        images = model.generate_images([args.prompt], args.num_images, args.seed, _sampling(args))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images[0]):
            path = out / f"{pipeline.slug(args.prompt)}_{args.seed}_{i}.png"
            save_image(im, path)
            print(path)
    elif args.command == "chat":
        from unimm.data.images import load_image

        model, _ = pipeline.load_checkpoint(args.checkpoint)
        question = args.question
        if question is not None and not question.strip():
            raise ValueError("empty question: omit --question to caption the image instead")
        image = load_image(args.image, model.image_resolution)
        print(model.answer([image], [question or ""], _sampling(args))[0])
    elif args.command == "world":
        from unimm.world.export import export_world

        export_world(args.out, args.num_samples, args.split, args.seed)
        print(f"wrote {args.num_samples} samples to {args.out}")
    elif args.command == "config":
        from unimm.config import to_dict
        from unimm.presets import get_run_config

        print(json.dumps(to_dict(get_run_config(args.preset, args.overrides)), indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"unimm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unimm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
