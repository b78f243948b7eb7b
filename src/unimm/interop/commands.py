"""The CLI's Hugging Face commands: `unimm import`, `unimm export` and `unimm finetune`.

Kept out of cli.py so that the shell stays thin; cli.py only registers and dispatches them.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_interop_parsers(sub: argparse._SubParsersAction) -> None:
    from unimm.cli import _positive_int

    i = sub.add_parser(
        "import",
        help="import a Hugging Face checkpoint folder as a unimm checkpoint",
        description="Reads config.json + safetensors (sharded or not) from SRC_DIR and writes a "
        "unimm checkpoint to DEST_DIR. --kind backbone: a Llama / Qwen2 (or Chameleon / Janus "
        "language model) as a bare backbone. --kind chameleon: a ChameleonForConditionalGeneration "
        "(config.json model_type 'chameleon') as a whole chameleon-recipe checkpoint, or a "
        "Llama / Qwen2 with its tokenizer.json plus --image-tokenizer as a chameleon-recipe "
        "checkpoint to fine-tune (`unimm finetune`). --kind janus: a "
        "JanusForConditionalGeneration (Janus / Janus-Pro) as a janus-recipe checkpoint. See "
        "docs/INTEROP.md.",
    )
    i.add_argument("src", metavar="SRC_DIR", help="Hugging Face folder (or hub id, if online)")
    i.add_argument("dest", metavar="DEST_DIR")
    i.add_argument("--kind", required=True, choices=["backbone", "chameleon", "janus"])
    i.add_argument(
        "--image-tokenizer", help="unimm image tokenizer directory (--kind chameleon from an LLM)"
    )
    i.add_argument(
        "--preset", default="small", help="training settings to store (chameleon, janus)"
    )

    x = sub.add_parser(
        "export",
        help="export a checkpoint's backbone as a Hugging Face Llama (or Qwen2 / Qwen3) folder",
        description="Writes DEST_DIR so that transformers' AutoModelForCausalLM loads it: "
        "Llama; Qwen2 when the backbone has q/k/v biases, Qwen3 when it has the q/k norm (the "
        "small and reference presets do). Recipe parts outside the "
        "backbone (e.g. chameleon's 2-D image-position embedding) are not exported.",
    )
    x.add_argument("checkpoint", help="unimm checkpoint (recipe or backbone)")
    x.add_argument("dest", metavar="DEST_DIR")
    x.add_argument("--max-shard-mb", type=_positive_int, default=None, help="shard the weights")

    f = sub.add_parser(
        "finetune",
        help="continue training a checkpoint (e.g. one made by `unimm import`) on train.data",
        description="Loads the --init checkpoint, trains it on train.data (default: the scene "
        "world) with its stored train.* settings (overridable), and writes OUT/checkpoint.",
        epilog=(
            "Only train.*, data.* keys and model.max_seq_len (positions are rotary, so a longer "
            "context changes no weight) may be overridden, e.g. train.steps=200 train.lr=3e-4 "
            "train.data=folder=/data/pets."
        ),
    )
    f.add_argument("--init", required=True, help="checkpoint to start from")
    f.add_argument("--out", required=True, help="run directory")
    f.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def run_interop(args: argparse.Namespace) -> None:
    if args.command == "import":
        from unimm.interop.importer import import_hf

        dest = import_hf(args.src, args.dest, args.kind, args.image_tokenizer, args.preset)
        print(f"imported {args.src} as {args.kind}: {dest}")
    elif args.command == "export":
        from unimm.interop.backbone_checkpoint import load_backbone
        from unimm.interop.hf_llama import export_hf_llm
        from unimm.pipeline import CHECKPOINT_DIR

        src = Path(args.checkpoint)
        if not (src / "config.json").is_file() and (src / CHECKPOINT_DIR).is_dir():
            src = src / CHECKPOINT_DIR
        shard = args.max_shard_mb * 2**20 if args.max_shard_mb else None
        print(f"exported: {export_hf_llm(load_backbone(src), args.dest, shard)}")
    elif args.command == "finetune":
        from unimm.pipeline import finetune_run

        finetune_run(args.init, args.out, args.overrides)
        print(f"checkpoint: {Path(args.out) / 'checkpoint'}")
