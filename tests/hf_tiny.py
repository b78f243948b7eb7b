"""Tiny random Hugging Face Janus and Chameleon models saved to disk, shared by the interop tests
(the raw HF wrappers' and the recipe importers'): same backbone shape, the tests choose the
vocabulary, codebook and vision widths that their own checks need."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

# A 2-layer Llama with grouped-query attention: the smallest shape that still tests GQA.
LLM_DIMS = dict(
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def save_janus(
    path: Path,
    *,
    vocab: int,
    dim: int,
    image_id: int,
    codes: int,
    tie: bool,
    vision_hidden: int = 32,
    aligner_depth: int | None = None,
) -> transformers.JanusForConditionalGeneration:
    """A seeded random JanusForConditionalGeneration (16x16 images, 4x4 patches, 16 image
    tokens) saved at `path`; aligner_depth sets both aligners' depth (None: transformers')."""
    depth = {} if aligner_depth is None else {"depth": aligner_depth}
    gen_depth = {} if aligner_depth is None else {"num_hidden_layers": aligner_depth}
    cfg = transformers.JanusConfig(
        text_config=dict(model_type="llama", vocab_size=vocab, hidden_size=dim, **LLM_DIMS),
        vision_config=dict(
            hidden_size=vision_hidden,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=16,
            patch_size=4,
            projection_dim=dim,
            mlp_ratio=2.0,
            num_image_tokens=16,
            **depth,
        ),
        vq_config=dict(
            embed_dim=8,
            num_embeddings=codes,
            latent_channels=32,
            base_channels=32,
            channel_multiplier=[1, 1, 2],
            num_res_blocks=1,
            projection_dim=dim,
            image_token_embed_dim=dim,
            **gen_depth,
        ),
        image_token_id=image_id,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    model = transformers.JanusForConditionalGeneration(cfg).eval()
    model.save_pretrained(path)
    return model


def save_chameleon(
    path: Path, *, vocab: int, codes: int, vocabulary_map: dict[str, int], **config
) -> transformers.ChameleonForConditionalGeneration:
    """A seeded random ChameleonForConditionalGeneration (16x16 images, a 2-stage VQ) saved at
    `path`; its per-head norms are moved off their (1, 0) init, so that a slip in applying
    them shows in the logits. `config`: more ChameleonConfig fields (special token ids)."""
    cfg = transformers.ChameleonConfig(
        vocab_size=vocab,
        hidden_size=32,
        **LLM_DIMS,
        vocabulary_map=vocabulary_map,
        vq_config=dict(
            embed_dim=8,
            num_embeddings=codes,
            latent_channels=8,
            resolution=16,
            base_channels=32,
            channel_multiplier=[1, 2],
            num_res_blocks=1,
        ),
        **config,
    )
    torch.manual_seed(0)
    model = transformers.ChameleonForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and "vqmodel" not in name:
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def assert_reloads_identically(model, back, prompt, picture) -> None:
    """An imported model and its saved-and-reloaded copy: the same weights, the same prompt
    ids and logits for text around an image, the same image codes. prompt(model, segments)
    -> (unimm ids, HF ids), as each test file lays prompts out."""
    from unimm.data.sample import Image, Text

    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    segments = [Text("w30"), Image(picture), Text("w40")]
    ids, _ = prompt(model, segments)
    back_ids, _ = prompt(back, segments)
    with torch.no_grad():
        assert torch.equal(ids, back_ids) and torch.equal(model(ids), back(back_ids))
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(model.image_tok.encode(images), back.image_tok.encode(images))
