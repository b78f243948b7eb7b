"""`unimm import SRC DEST --kind KIND`: turn a Hugging Face folder into a unimm checkpoint.

Kinds:
    backbone   Llama / Qwen2 (or the language model of Chameleon / Janus) -> a bare backbone
               checkpoint (unimm.interop.backbone_checkpoint).
    chameleon  told apart by SRC's config.json model_type:
               "chameleon" (a ChameleonForConditionalGeneration) -> a chameleon-recipe
               checkpoint holding the whole model, its VQ encoder as the image tokenizer and its
               own vocabulary (unimm.interop.hf_chameleon_recipe); no --image-tokenizer;
               "llama" / "qwen2" plus a unimm image tokenizer (--image-tokenizer) -> a
               chameleon-recipe checkpoint ready to train (vocabulary grown by the codebook).
    janus      a JanusForConditionalGeneration folder (Janus / Janus-Pro) -> a janus-recipe
               checkpoint: LLM, SigLIP, VQ model, aligners, generation head
               (unimm.interop.hf_janus_recipe).

SRC may also be a hub id ("org/name") where the network allows: it is downloaded with
huggingface_hub (safetensors and JSON files only) and imported from the local copy.
"""

from __future__ import annotations

from pathlib import Path

from unimm.interop.hf_files import HFImportError

IMPORT_KINDS = ("backbone", "chameleon", "janus")


def resolve_source(src: str | Path) -> Path:
    """A local folder as is; otherwise a hub id fetched into the local HF cache."""
    path = Path(src)
    if path.exists():
        return path
    text = str(src)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise HFImportError(f"{src} is not a folder (nor a hub id like 'org/name')")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.model"]))
    except Exception as e:  # offline, unknown repo, gated: all end the same way for the user
        raise HFImportError(
            f"{src} is not a local folder and could not be downloaded: {e}"
        ) from None


def import_hf(
    src: str | Path,
    dest: str | Path,
    kind: str,
    image_tokenizer: str | Path | None = None,
    preset: str = "small",
) -> Path:
    """Import `src` as `kind` into checkpoint directory `dest` (written atomically)."""
    if kind not in IMPORT_KINDS:
        raise HFImportError(f"unknown import kind {kind!r} (choose from {', '.join(IMPORT_KINDS)})")
    src = resolve_source(src)
    if kind == "backbone":
        from unimm.interop.backbone_checkpoint import load_backbone, save_backbone

        return save_backbone(load_backbone(src), dest)
    if kind == "janus":
        from unimm.interop.hf_janus_recipe import janus_from_hf
        from unimm.presets import get_run_config

        if image_tokenizer is not None:
            raise HFImportError(
                "--kind janus takes no --image-tokenizer: Janus brings its VQ model"
            )
        return janus_from_hf(src, get_run_config(preset)).save_pretrained(dest)
    from unimm.interop.hf_files import read_hf_config
    from unimm.interop.unified import chameleon_from_hf_source

    if read_hf_config(src)["model_type"] == "janus":
        raise HFImportError(
            f"{src} is a Hugging Face Janus: import it with --kind janus (the janus recipe "
            "holds its SigLIP, VQ model and generation head)"
        )
    if read_hf_config(src)["model_type"] == "chameleon":
        return chameleon_from_hf_source(src, image_tokenizer, preset).save_pretrained(dest)
    if image_tokenizer is None:
        raise HFImportError(
            "--kind chameleon needs --image-tokenizer DIR (a unimm image tokenizer, e.g. "
            "RUN/image_tokenizer from `unimm train`)"
        )
    return chameleon_from_hf_source(src, image_tokenizer, preset).save_pretrained(dest)
