"""Semantic discrete tokens (VILA-U style): a VQ tokenizer trained with reconstruction plus a
contrastive text-alignment loss on its quantised latents (unimm.tokenizers.semantic_vq)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from unimm.tokenizers.semantic_vq import (
    ALIGNER_DIR,
    AlignConfig,
    CodeAligner,
    QuantisedEmbedder,
)
from unimm.tokenizers.vq import VQ_PRESETS, VQTokenizer

pytest.importorskip("unimm.world.detector")

from unimm.train.tokenizer_trainer import (  # noqa: E402
    probe_alignment,
    render_batch,
    train_vq,
    vq_loss,
)
from unimm.world.language import caption  # noqa: E402

GOLDEN = Path(__file__).parent / "assets" / "golden_vq_losses.json"
TINY_ALIGN = AlignConfig(dim=32, n_heads=2, text_dim=32, text_layers=1, embed_dim=32)


def _step_losses(tmp_path: Path, **kw) -> tuple[list[dict], dict]:
    """The per-step log of a seeded 12-step tiny run (the golden file's settings)."""
    entries: list[dict] = []
    m = train_vq(
        VQ_PRESETS["tiny"](),
        tmp_path,
        steps=12,
        batch_size=8,
        lr=3e-3,
        progress=False,
        eval_n=4,
        log=entries.append,
        log_every=1,
        **kw,
    )
    return [e for e in entries if "loss" in e], m


def test_align_weight_zero_is_the_plain_tokenizer_training(tmp_path) -> None:
    # Golden per-step losses of the plain trainer, written before the alignment existed
    # (regenerate only for a change meant to alter plain VQ training, and say why).
    golden = json.loads(GOLDEN.read_text())
    plain, m = _step_losses(tmp_path / "plain", align_weight=0.0)
    assert [e["loss"] for e in plain] == pytest.approx(golden, rel=1e-6, abs=0)
    assert "retrieval" not in m and not (tmp_path / "plain" / ALIGNER_DIR).exists()
    # With the alignment on: same initial tokenizer and the same images (captions draw from
    # their own seed), so the first step's reconstruction loss is the plain one exactly; after
    # that the codes move under the extra gradient and the losses part ways.
    aligned, m = _step_losses(tmp_path / "aligned", align_weight=0.5, align=TINY_ALIGN)
    recon = [e["recon_loss"] for e in aligned]
    assert recon[0] == golden[0]
    assert all(abs(a - b) > 1e-7 for a, b in zip(recon[2:], golden[2:]))
    assert aligned[0]["loss"] == pytest.approx(recon[0] + 0.5 * aligned[0]["align_loss"])


def test_alignment_loss_falls_on_a_fixed_batch_and_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    tok = VQTokenizer(VQ_PRESETS["tiny"]()).train()
    aligner = CodeAligner(TINY_ALIGN, tok.fsq.dim, 64).train()
    rng = random.Random(3)
    x, scenes = render_batch(rng, 8, 64, max_objects=3)
    texts = [caption(s, rng) for s in scenes]
    # The alignment's gradient reaches the encoder through FSQ's straight-through rounding
    # (that is what makes the codes semantic) and never the pixel decoder.
    tok.zero_grad()
    vq_loss(tok, x, aligner=aligner, texts=texts, align_weight=1.0)["align"].backward()
    assert tok.enc_in.weight.grad.abs().sum() > 0
    assert tok.dec_in.weight.grad is None
    params = [*tok.parameters(), *aligner.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    first = None
    for _ in range(40):
        out = vq_loss(tok, x, aligner=aligner, texts=texts, align_weight=1.0)
        first = out["align"].item() if first is None else first
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["align"].item() < 0.5 * first
    with pytest.raises(ValueError, match="one caption per image"):
        vq_loss(tok, x, aligner=aligner, texts=texts[:3], align_weight=1.0)


def test_semantic_tokenizer_saves_loads_and_chameleon_builds_on_it(tmp_path) -> None:
    from unimm.presets import get_run_config
    from unimm.recipes.chameleon import ChameleonModel
    from unimm.recipes.parts import Parts
    from unimm.tokenizers.text import TextTokenizer

    m = train_vq(
        VQ_PRESETS["tiny"](),
        tmp_path,
        steps=3,
        batch_size=8,
        progress=False,
        eval_n=10,
        align_weight=0.5,
        align=TINY_ALIGN,
    )
    for key in ("retrieval", "retrieval_heldout"):
        r = m[key]
        assert r["n"] == 10 and 0.0 <= r["image_to_text"] <= 1.0 and r["chance"] == 0.01
    assert {"psnr", "redetect_rate", "final_align_loss"} <= set(m) and m["align_weight"] == 0.5
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["retrieval"] == m["retrieval"]
    # The folder is an ordinary VQ tokenizer, plus the training-time aligner beside it.
    tok = VQTokenizer.from_pretrained(tmp_path)
    aligner = CodeAligner.from_pretrained(tmp_path / ALIGNER_DIR)
    assert aligner.config == TINY_ALIGN
    x, scenes = render_batch(random.Random(5), 4, 64)
    texts = [caption(s, random.Random(0)) for s in scenes]
    emb = QuantisedEmbedder(tok, aligner)
    a, b = emb.embed_images(x), emb.embed_texts(texts)
    assert a.shape == b.shape == (4, 32)
    assert torch.allclose(a.norm(dim=-1), torch.ones(4))
    # chameleon consumes it unchanged: vocabulary = text + codebook, trains and samples
    cfg = get_run_config("tiny")
    text = TextTokenizer.train(texts * 20, cfg.text_vocab_size)
    cfg = replace(cfg, vq=tok.config, model=replace(cfg.model, vocab_size=text.vocab_size + 64))
    model = ChameleonModel(Parts(cfg, text, tok.requires_grad_(False)))
    from tests.test_chameleon import samples

    assert torch.isfinite(model.train().loss(samples(4), torch.Generator())["loss"])
    imgs = model.eval().generate_images(["a red circle"], n_per_prompt=1, seed=0)
    assert imgs[0][0].shape == (64, 64, 3)


def test_probe_trains_only_the_aligner(tmp_path) -> None:
    tok = VQTokenizer(VQ_PRESETS["tiny"]())
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    m = probe_alignment(tok, steps=3, batch_size=8, align=TINY_ALIGN, eval_n=10)
    assert m["steps"] == 3 and m["retrieval"]["n"] == 10 and "retrieval_heldout" in m
    assert all(torch.equal(before[k], v) for k, v in tok.state_dict().items())


def test_bad_align_settings_raise(tmp_path) -> None:
    with pytest.raises(ValueError, match="align_weight"):
        train_vq(VQ_PRESETS["tiny"](), tmp_path, steps=1, align_weight=-1.0, progress=False)
    with pytest.raises(ValueError, match="n_heads"):
        AlignConfig(dim=30, n_heads=4)
    aligner = CodeAligner(TINY_ALIGN, 3, 64)
    with pytest.raises(ValueError, match="latents shaped"):
        aligner.embed_codes(torch.zeros(2, 16, 3))
