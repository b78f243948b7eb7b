"""A Hugging Face `ChameleonForConditionalGeneration` as a unimm `chameleon` recipe model:
`unimm import SRC DEST --kind chameleon` (on a folder whose config.json says model_type
"chameleon"), `ChameleonModel.from_pretrained(HF_FOLDER)`.

Everything pretrained keeps its values; what maps to what:
- the language model -> the backbone (unimm.interop.hf_chameleon: the Llama map plus the
  per-head LayerNorm QK-norm);
- `model.vqmodel.*` -> the image tokenizer (unimm.interop.hf_chameleon_vq.HFChameleonVQ:
  transformers' ChameleonVQVAE, encoder and codebook; the release has no decoder);
- the vocabulary stays Chameleon's: its image codes are its own IMGIMG tokens, interleaved
  among the text ids (`chameleon.code_ids = "tokenizer"`; ChameleonModel.code_ids is
  transformers' img2bpe map), so every id keeps its embedding row and logit;
- no 2-D image-position embedding (`chameleon.image_pos_embed = False`): Chameleon has none.

Text: the folder's tokenizer.json; unimm's markers are Chameleon's own tokens where it has them
(`tokenizer_markers.json` records which: `<s>` bos, `</s>` eos, `<pad>` pad, or what
tokenizer_config.json names; `<racm3:break>` boi and `<eoss>` eoi, the tokens its processor
puts around an image); user, assistant and mask are appended as new special tokens, with new
mean-initialised rows (unimm.interop.vocab.resize_vocabulary).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from unimm.interop.hf_chameleon import _read, code_token, image_code_ids
from unimm.interop.hf_files import HFImportError, load_exact, require_model_type
from unimm.interop.unified import aliased_text_tokenizer
from unimm.interop.vocab import resize_vocabulary
from unimm.presets import RunConfig, get_run_config
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.chameleon_config import ChameleonConfig
from unimm.recipes.parts import Parts

# unimm marker -> Chameleon's token (when tokenizer_config.json names none for it).
CHAMELEON_MARKERS = {
    "<|pad|>": "<pad>",
    "<|bos|>": "<s>",
    "<|eos|>": "</s>",
    "<|boi|>": "<racm3:break>",
    "<|eoi|>": "<eoss>",
}


def _check_image_tokens(text_vocab: dict[str, int], cfg: dict, n_codes: int, where: str) -> None:
    """The tokenizer's IMGIMG ids must be config.json's vocabulary_map ones (what transformers
    maps codes by) and cover the VQ codebook exactly."""
    want = image_code_ids(cfg.get("vocabulary_map") or {})
    if not want:
        raise HFImportError(f"{where}: vocabulary_map has no IMGIMG image tokens")
    if sorted(want) != list(range(n_codes)):
        raise HFImportError(
            f"{where}: vocabulary_map has {len(want)} IMGIMG image tokens, "
            f"vq_config.num_embeddings is {n_codes}"
        )
    got = image_code_ids(text_vocab)
    for code in range(n_codes):
        if got.get(code) != want[code]:
            raise HFImportError(
                f"{where}: image token {code_token(code)} is id {got.get(code)} in "
                f"tokenizer.json but {want[code]} in vocabulary_map"
            )
    if len(got) != n_codes:
        raise HFImportError(f"{where}: tokenizer.json has {len(got)} IMGIMG tokens, not {n_codes}")


def chameleon_from_hf(
    directory: str | Path,
    run: RunConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> ChameleonModel:
    """A chameleon-recipe model holding the whole Hugging Face Chameleon checkpoint in
    `directory`.

    run: the training settings to store with it (default: the "small" preset's); its model,
    recipe, text_vocab_size and chameleon fields are replaced by the checkpoint's.
    """
    from transformers import ChameleonVQVAE, ChameleonVQVAEConfig

    from unimm.interop.hf_chameleon_vq import HFChameleonVQ
    from unimm.interop.importer import resolve_source

    directory = resolve_source(directory)
    where = str(directory / "config.json")
    require_model_type(directory, "chameleon", "ChameleonForConditionalGeneration")
    backbone, cfg, vq_state = _read(directory, dtype)
    vq_config = ChameleonVQVAEConfig(**(cfg.get("vq_config") or {}))
    text = aliased_text_tokenizer(directory, CHAMELEON_MARKERS, "the chameleon import")
    _check_image_tokens(text.get_vocab(), cfg, int(vq_config.num_embeddings), where)
    vq = ChameleonVQVAE(vq_config)
    load_exact(vq, vq_state, directory, "model.vqmodel.* tensors")
    image = HFChameleonVQ(vq.to(dtype))
    if backbone.config.vocab_size != text.vocab_size:
        backbone = resize_vocabulary(backbone, text.vocab_size)

    run = run or get_run_config("small")
    run = replace(
        run,
        recipe="chameleon",
        model=backbone.config,  # codes inside the vocabulary: no rows added for them
        text_vocab_size=text.vocab_size,
        chameleon=ChameleonConfig(image_pos_embed=False, code_ids="tokenizer"),
    )
    with torch.device("meta"):  # skip the random init of weights about to be replaced
        model = ChameleonModel(Parts(run, text, image))
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    model.load_state_dict(state, strict=True, assign=True)
    if run.model.tie_embeddings:
        model.backbone.output.weight = model.backbone.tok_embeddings.weight
    return model.eval()
